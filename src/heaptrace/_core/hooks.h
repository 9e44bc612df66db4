/* hooks.h: the PEP 445 allocator hooks. */
#ifndef HT_HOOKS_H
#define HT_HOOKS_H

/* Install the hooks on the RAW, MEM and OBJ domains, chained to whatever
 * allocators are in place now.  GIL held.  Never fails. */
void ht_hooks_install(void);

/* Put back the allocators that were in place at install time.  GIL held.
 * Never fails. */
void ht_hooks_uninstall(void);

#endif /* HT_HOOKS_H */
