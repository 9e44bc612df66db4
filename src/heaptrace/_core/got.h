/* got.h: redirect calls between shared objects by rewriting their GOT slots.
 *
 * A call from one shared object to a function of another goes through a
 * slot of the caller's global offset table, filled by the dynamic linker
 * (R_X86_64_JUMP_SLOT for calls through the PLT, R_X86_64_GLOB_DAT for
 * calls and address-takes through the GOT; R_AARCH64_* on arm64).  This
 * engine finds those slots by symbol name in every loaded object and stores
 * a replacement function's address in them, remembering each slot's value so
 * that it can be put back exactly.  It needs no LD_PRELOAD and works in a
 * running process.  Linux with glibc, x86-64 and aarch64 only; elsewhere
 * ht_got_install fails with a clear message and changes nothing.
 *
 * Invariants (read these before touching got.c):
 *
 *   - What runs in a hook.  The replacement functions belong to the client
 *     (pytrack.c, ...), not to this engine; the one hook of the engine
 *     itself is on dlopen, and it calls the real dlopen, then patches the
 *     objects that appeared.  A replacement may be entered at any moment
 *     after ht_got_install starts, and also after ht_got_uninstall returns
 *     (a thread may have read the slot just before it was restored), so it
 *     must stay callable for the life of the process and must check for
 *     itself whether it is meant to be active, forwarding to *original when
 *     not.
 *   - Locks.  One mutex (got_lock) serialises every patch and unpatch pass
 *     and guards the engine's tables.  Lock order: got_lock, then the
 *     dynamic linker's locks (a pass pins objects with dlopen(RTLD_NOLOAD)
 *     and lists them with dl_iterate_phdr).  No pass touches Python, takes
 *     the GIL or the tracer's locks, so a thread may hold the GIL (or not)
 *     when it calls in.  The dlopen hook never blocks on got_lock: a nested
 *     dlopen (from a library constructor) skips the pass, and a dlopen that
 *     finds got_lock busy leaves a request that the holder serves before it
 *     lets go.  Slot writes are single aligned pointer stores, so a thread
 *     calling through a slot sees either the old or the new function.
 *   - Which objects.  Every object dl_iterate_phdr lists, except the vDSO,
 *     the objects holding one of a set's skip addresses (heaptrace's own
 *     extension, whose calls must reach the real functions), and objects
 *     that are not completely loaded: each object is pinned with
 *     dlopen(RTLD_NOLOAD) first, which waits for a dlopen in progress on
 *     another thread, and keeps the object mapped while its slots are
 *     written.  A slot still holding a link-time value (not yet relocated)
 *     is left alone.
 *   - Protection.  A slot under GNU_RELRO (made read-only by the dynamic
 *     linker) or in a segment without write permission is made writable for
 *     the store with mprotect and given back the protection the dynamic
 *     linker gave it.
 *   - Restoring.  A slot is put back only if it still holds the
 *     replacement; if something else rewrote it since, it is left as is.
 *     A lazily bound slot is put back to its PLT stub, so the dynamic linker
 *     binds it again on the next call.  A lazy binding on another thread in
 *     the instant a slot is patched can overwrite the replacement; the slot
 *     then keeps calling the real function (never a wrong one).
 *   - dlopen.  While any set is installed, dlopen is redirected in every
 *     object too; each outermost dlopen patches the new objects before it
 *     returns to its caller, so an extension's PyInit sees patched slots.
 *     Since the real dlopen is then called from heaptrace, a bare name
 *     ("libfoo.so") that the dynamic linker cannot find is looked for again
 *     in the caller's own search path (its DT_RPATH/DT_RUNPATH), so that
 *     $ORIGIN-relative loading keeps working (the object is then loaded by
 *     its path, so a later lookup by the bare name finds it through its
 *     DT_SONAME only, as for any library loaded by path).  Objects that a
 *     dlopen outside every patched slot loads (a pointer from dlsym, libc's
 *     own dlopen) are patched at the next pass: the next patched dlopen, or
 *     ht_got_patch_new.
 *   - fork.  got_lock is held across fork() (pthread_atfork), so the child
 *     starts with it free; the child inherits the patched slots and the
 *     engine's records of them, and goes on as the parent would.  exec
 *     replaces the image: nothing is left behind.
 */
#ifndef HT_GOT_H
#define HT_GOT_H

#include <stddef.h>

/* One function to redirect. */
typedef struct {
    const char *symbol;     /* name in the dynamic symbol table */
    void *replacement;      /* stored into every slot of that symbol */
    void **original;        /* set by ht_got_install to the definition the
                             * dynamic linker finds for symbol
                             * (dlsym(RTLD_DEFAULT)), NULL if none: what the
                             * replacement forwards to */
} ht_got_hook;

/* A client's set of hooks.  Zero-initialise it (HT_GOT_SET_INIT); the
 * fields after the first three are the engine's.  Every field is protected
 * by got_lock (got.c) once the set has been passed to ht_got_install. */
typedef struct ht_got_set {
    ht_got_hook *hooks;
    size_t nhooks;
    const void *const *skip;  /* addresses inside objects not to patch */
    size_t nskip;
    /* engine-private */
    int installed;
    struct ht_got_record *records;   /* one per patched slot */
    size_t nrecords, caprecords;
    char error[160];                 /* last failure, "" if none */
} ht_got_set;

#define HT_GOT_SET_INIT(hooks, nhooks, skip, nskip) \
    { (hooks), (nhooks), (skip), (nskip), 0, NULL, 0, 0, {0} }

/* Resolve the originals of set's hooks and patch every loaded object, and
 * every object loaded later until ht_got_uninstall.  Returns the number of
 * slots patched (0 is not an error: no object calls those functions), or
 * -1 with set->error saying why: unsupported platform, a symbol another
 * installed set already redirects, out of memory, or an mprotect that
 * failed.  On -1, slots patched before the failure are put back and the set
 * is not installed.  Installing an installed set patches new objects only. */
int ht_got_install(ht_got_set *set);

/* Put back every slot of set that still holds its replacement, and stop
 * patching new objects for it.  Returns the number of slots put back, or -1
 * with set->error set if some slot could not be made writable (the others
 * are still put back, and the set is uninstalled regardless).  Not
 * installed: returns 0. */
int ht_got_uninstall(ht_got_set *set);

/* Patch, for every installed set, the objects loaded since the last pass
 * (the dlopen hook calls this; so may a client that knows an object was
 * loaded some other way).  Returns the number of slots newly patched, or -1
 * if one could not be written (then reported in that set's error). */
int ht_got_patch_new(void);

/* Number of slots currently patched for set (records of objects unloaded
 * since included), and a copy of its last error ("" if none) into err.
 * Never fails. */
size_t ht_got_status(ht_got_set *set, char *err, size_t errlen);

/* Register the fork handlers.  0, or -1 if pthread_atfork failed.  Call
 * once, before any install. */
int ht_got_init_once(void);

#endif /* HT_GOT_H */
