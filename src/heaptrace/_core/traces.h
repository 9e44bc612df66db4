/* traces.h: the live trace table, pointer -> (size, traceback id).
 *
 * One table holds the blocks of one (domain, allocator family).  It does no
 * locking of its own: each table's owner says what protects it (see
 * tracer.c).  Memory comes straight from libc, never from a Python
 * allocator, so the table can be used inside the allocation hooks.
 */
#ifndef HT_TRACES_H
#define HT_TRACES_H

#include <stddef.h>
#include <stdint.h>

/* A slot.  ptr == 0 means empty; ptr == HT_TOMBSTONE marks a slot of the
 * table being drained by an incremental resize.  16 bytes: sizes of 4 GiB and
 * more are stored in a small side list and marked with HT_SIZE_BIG. */
typedef struct {
    uintptr_t ptr;
    uint32_t size;
    uint32_t tb;
} ht_trace;

#define HT_SIZE_BIG UINT32_MAX
#define HT_BIG_MAX 64

typedef struct {
    uintptr_t ptr;
    size_t size;
} ht_big;

typedef struct ht_table {
    ht_trace *slots;       /* capacity mask + 1 slots, or NULL when empty */
    size_t mask;
    size_t used;           /* live entries in slots */
    /* Incremental resize: while old != NULL, entries of old are moved to
     * slots a few at a time; both are searched until it is empty. */
    ht_trace *old;
    size_t old_mask;
    size_t old_used;       /* live (not tombstone) entries in old */
    size_t migrate_pos;    /* slots of old below this have been moved */
    ht_big big[HT_BIG_MAX];
    size_t nbig;
    size_t bytes;          /* total payload size of the live entries */
} ht_table;

/* A trace as read back: size in full. */
typedef struct {
    uintptr_t ptr;
    size_t size;
    uint32_t tb;
} ht_trace_out;

/* Initialise an empty table.  Never fails (no memory is taken yet). */
void ht_table_init(ht_table *t);

/* Release all memory of the table and leave it empty.  Never fails. */
void ht_table_clear(ht_table *t);

/* Record ptr with size and traceback id, replacing any entry for ptr.
 * Returns 0, or -1 if the table could not grow (out of memory): then the
 * table is unchanged.  *old_size receives the size of a replaced entry, or
 * (size_t)-1 if ptr was new. */
int ht_table_put(ht_table *t, uintptr_t ptr, size_t size, uint32_t tb,
                 size_t *old_size);

/* Remove ptr.  Returns 1 and stores its size in *size if it was present,
 * 0 if not.  Never fails and never allocates. */
int ht_table_remove(ht_table *t, uintptr_t ptr, size_t *size);

/* Look ptr up.  Returns 1 and fills *out, or 0. */
int ht_table_get(const ht_table *t, uintptr_t ptr, ht_trace_out *out);

/* Number of live entries. */
static inline size_t ht_table_len(const ht_table *t) { return t->used + t->old_used; }

/* Copy every entry into out (room for ht_table_len entries).  Returns the
 * number written. */
size_t ht_table_export(const ht_table *t, ht_trace_out *out);

/* Bytes of memory the table itself uses. */
size_t ht_table_memory(const ht_table *t);

#endif /* HT_TRACES_H */
