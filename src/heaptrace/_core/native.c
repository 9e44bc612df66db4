/* native.c: the malloc family and anonymous mmap of C extensions and the
 * libraries they load, traced in the NATIVE domain.
 *
 * How.  got.c rewrites the dynamic-linking slots (GOT) through which each
 * loaded shared object calls malloc, free, mmap, ... so that the calls come
 * here first, and does the same for every object loaded later (its dlopen
 * hook).  Left alone: the interpreter (libpython, or the program when
 * Python is linked statically), whose allocations PEP 445 already traces
 * (hooks.c) and must not be counted twice; the C library and the dynamic
 * linker, whose calls among their own functions are not the program's
 * requests; whatever defines malloc (the C library, or a sanitizer's
 * runtime); and heaptrace itself, so that the tracer's own memory never
 * enters a hook.
 *
 * Invariants of the hooks (they run inside any C code of the process, on
 * any thread, with or without the GIL, and cannot fail the allocation):
 *   - The real function is always called, and its result returned, whether
 *     or not the block could be recorded: a native caller has no way to
 *     handle an allocation that a tracer made fail.  A block that cannot
 *     be recorded is counted (ht_tracer_native_lost).
 *   - No Python: no exception, no object, no GIL.  The traceback of the
 *     calling thread is read by tracer.c under its raw lock, through the
 *     path its GIL state allows (the detached walk when the GIL was
 *     released, as ctypes and most extensions do around heavy work).
 *   - No allocation through a redirected function: the tracer's tables take
 *     their memory from heaptrace's own (never redirected) calls to libc.
 *   - A per-thread guard (busy) makes a hook entered from a hook's own work
 *     a plain pass-through.
 *   - Locks: only tracer.c's raw lock, taken and released inside one call
 *     and never held while the real function runs.  The raw lock is never
 *     held while calling anything that could reach a hook, so a hook cannot
 *     wait on itself; got.c's lock is never taken here.
 *   - A trace is taken out before its block is freed or moved (so no other
 *     thread can be handed the address while the old trace is in the
 *     table), and put back if the real call fails.
 *   - After stop() the slots are put back, but a thread may have read a
 *     slot just before: the hooks stay callable forever and pass calls
 *     straight through while native recording is off.
 *   - Native frames (native_frames=True): the call path is captured
 *     (nstack.c) before the raw lock is taken, because the unwinder may
 *     take the dynamic loader's lock; busy is set meanwhile, so an
 *     allocation the unwinder makes passes straight through.
 *   - dlopen: objects loaded while native tracing is on are redirected by
 *     got.c before its dlopen returns; their constructors may already have
 *     allocated (not seen).  fork: the child inherits the redirected slots
 *     and goes on tracing (tracer.c's fork handlers keep the raw lock
 *     usable).  exec: the new image has none of this.
 *   - Blocks allocated before start() and freed while tracing are not in
 *     the table: their free finds nothing to remove.  Blocks allocated
 *     while tracing and freed after stop() are in no table by then
 *     (stop() clears them).
 */
#define _GNU_SOURCE 1
#include "tracer.h"         /* first: Python.h before the system headers */
#include "native.h"
#include "got.h"
#include "hooks.h"
#include "nstack.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__GLIBC__)
#  include <gnu/libc-version.h>
#endif

/* The real functions: set by ht_got_install (under got.c's lock) before
 * any slot points to a hook, always to the same values (the definitions
 * the dynamic linker finds), so the hooks may read them at any time. */
static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void *(*real_reallocarray)(void *, size_t, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);
static void *(*real_valloc)(size_t);
static void *(*real_pvalloc)(size_t);
static char *(*real_strdup)(const char *);
static char *(*real_strndup)(const char *, size_t);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);
static int (*real_munmap)(void *, size_t);

/* Per thread: set while a hook records, so that anything the recording
 * reaches passes through. */
static _Thread_local int busy __attribute__((tls_model("initial-exec")));

static inline int
recording(void)
{
    return !busy && ht_tracer_native_on();
}

static void
record(void *ptr, size_t size)
{
    if (!ht_hooks_sample(size)) {
        return;     /* sampled tracing, and this block is not in the sample */
    }
    int saved = errno;
    busy = 1;
    uintptr_t ips[HT_NSTACK_MAX];
    int n = -1;
    if (ht_tracer_native_frames_on()) {
        n = ht_nstack_capture(ips);
    }
    (void)ht_tracer_add_native(ptr, size, ips, n);
    busy = 0;
    errno = saved;
}

/* Take the trace of a block about to be freed or moved out of the table. */
static int
take(void *ptr, size_t *size, uint32_t *tb)
{
    int saved = errno;
    busy = 1;
    int found = ht_tracer_take_native(ptr, size, tb);
    busy = 0;
    errno = saved;
    return found;
}

static void
put_back(void *ptr, size_t size, uint32_t tb)
{
    int saved = errno;
    busy = 1;
    ht_tracer_put_back_native(ptr, size, tb);
    busy = 0;
    errno = saved;
}

/* ---- the hooks ---------------------------------------------------------- */

static void *
hook_malloc(size_t size)
{
    void *p = real_malloc(size);
    if (p != NULL && recording()) {
        record(p, size);
    }
    return p;
}

static void *
hook_calloc(size_t n, size_t size)
{
    void *p = real_calloc(n, size);
    if (p != NULL && recording()) {
        record(p, n * size);    /* (no overflow: calloc succeeded) */
    }
    return p;
}

static void
hook_free(void *ptr)
{
    if (ptr != NULL && recording()) {
        int saved = errno;
        busy = 1;
        ht_tracer_remove_native(ptr);
        busy = 0;
        errno = saved;
    }
    real_free(ptr);
}

/* realloc and reallocarray: the old block's trace comes out first; a
 * failed call leaves the old block (and gets its trace back), except that
 * a request of 0 bytes frees it. */
static void *
moved(void *ptr, void *p, size_t size, int had, size_t old, uint32_t tb)
{
    if (p != NULL) {
        record(p, size);
    }
    else if (had && size != 0) {
        put_back(ptr, old, tb);
    }
    return p;
}

static void *
hook_realloc(void *ptr, size_t size)
{
    if (!recording()) {
        return real_realloc(ptr, size);
    }
    size_t old = 0;
    uint32_t tb = 0;
    int had = ptr != NULL && take(ptr, &old, &tb);
    return moved(ptr, real_realloc(ptr, size), size, had, old, tb);
}

static void *
hook_reallocarray(void *ptr, size_t n, size_t size)
{
    if (!recording()) {
        return real_reallocarray(ptr, n, size);
    }
    size_t bytes;
    if (__builtin_mul_overflow(n, size, &bytes)) {
        return real_reallocarray(ptr, n, size);     /* fails with ENOMEM */
    }
    size_t old = 0;
    uint32_t tb = 0;
    int had = ptr != NULL && take(ptr, &old, &tb);
    return moved(ptr, real_reallocarray(ptr, n, size), bytes, had, old, tb);
}

static int
hook_posix_memalign(void **out, size_t align, size_t size)
{
    int rc = real_posix_memalign(out, align, size);
    if (rc == 0 && *out != NULL && recording()) {
        record(*out, size);
    }
    return rc;
}

static void *
hook_aligned_alloc(size_t align, size_t size)
{
    void *p = real_aligned_alloc(align, size);
    if (p != NULL && recording()) {
        record(p, size);
    }
    return p;
}

static void *
hook_memalign(size_t align, size_t size)
{
    void *p = real_memalign(align, size);
    if (p != NULL && recording()) {
        record(p, size);
    }
    return p;
}

static void *
hook_valloc(size_t size)
{
    void *p = real_valloc(size);
    if (p != NULL && recording()) {
        record(p, size);
    }
    return p;
}

static void *
hook_pvalloc(size_t size)
{
    void *p = real_pvalloc(size);
    if (p != NULL && recording()) {
        /* pvalloc rounds the request up to whole pages (one at least). */
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t whole = size == 0 ? page : (size + page - 1) / page * page;
        record(p, whole);
    }
    return p;
}

static char *
hook_strdup(const char *s)
{
    char *p = real_strdup(s);
    if (p != NULL && recording()) {
        record(p, strlen(p) + 1);
    }
    return p;
}

static char *
hook_strndup(const char *s, size_t n)
{
    char *p = real_strndup(s, n);
    if (p != NULL && recording()) {
        record(p, strlen(p) + 1);
    }
    return p;
}

/* Anonymous mappings only: a file mapping is not memory the program
 * allocated. */
static void *
mapped(void *p, size_t len, int flags)
{
    if (p != MAP_FAILED && (flags & MAP_ANONYMOUS) && len != 0 && recording()) {
        record(p, len);
    }
    return p;
}

static void *
hook_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mapped(real_mmap(addr, len, prot, flags, fd, off), len, flags);
}

static void *
hook_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return mapped(real_mmap64(addr, len, prot, flags, fd, off), len, flags);
}

/* munmap of a traced mapping, from its start: the whole of it, or its
 * head (the tail stays traced, at its new start).  An unmapping that
 * starts inside a mapping is not followed (the mapping keeps its size). */
static int
hook_munmap(void *addr, size_t len)
{
    if (!recording()) {
        return real_munmap(addr, len);
    }
    size_t size = 0;
    uint32_t tb = 0;
    int had = take(addr, &size, &tb);
    int rc = real_munmap(addr, len);
    if (had) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t gone = (len + page - 1) / page * page;
        if (rc != 0) {
            put_back(addr, size, tb);
        }
        else if (gone < size) {
            put_back((char *)addr + gone, size - gone, tb);
        }
    }
    return rc;
}

/* ---- installation --------------------------------------------------------- */

static ht_got_hook hooks[] = {
    {"malloc", (void *)hook_malloc, (void **)&real_malloc},
    {"calloc", (void *)hook_calloc, (void **)&real_calloc},
    {"realloc", (void *)hook_realloc, (void **)&real_realloc},
    {"reallocarray", (void *)hook_reallocarray, (void **)&real_reallocarray},
    {"free", (void *)hook_free, (void **)&real_free},
    {"posix_memalign", (void *)hook_posix_memalign, (void **)&real_posix_memalign},
    {"aligned_alloc", (void *)hook_aligned_alloc, (void **)&real_aligned_alloc},
    {"memalign", (void *)hook_memalign, (void **)&real_memalign},
    {"valloc", (void *)hook_valloc, (void **)&real_valloc},
    {"pvalloc", (void *)hook_pvalloc, (void **)&real_pvalloc},
    {"strdup", (void *)hook_strdup, (void **)&real_strdup},
    {"strndup", (void *)hook_strndup, (void **)&real_strndup},
    {"mmap", (void *)hook_mmap, (void **)&real_mmap},
    {"mmap64", (void *)hook_mmap64, (void **)&real_mmap64},
    {"munmap", (void *)hook_munmap, (void **)&real_munmap},
};
#define NHOOKS (sizeof(hooks) / sizeof(hooks[0]))

/* Addresses inside the objects left alone (see the top of this file).
 * Filled by ht_native_start, GIL held, before the set is installed;
 * read by got.c under its lock. */
#define MAX_SKIP 8
static const void *skip[MAX_SKIP];
static ht_got_set set = HT_GOT_SET_INIT(hooks, NHOOKS, skip, 0);

static int
first_object(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            *(const void **)data = (const void *)(info->dlpi_addr
                                                  + info->dlpi_phdr[i].p_vaddr);
            return 1;
        }
    }
    return 1;
}

static void
add_skip(const void *addr)
{
    if (addr != NULL && set.nskip < MAX_SKIP) {
        skip[set.nskip++] = addr;
    }
}

static void
fill_skip(void)
{
    set.nskip = 0;
    add_skip((const void *)hooks);                       /* heaptrace */
    add_skip((const void *)&PyMem_RawMalloc);            /* the interpreter */
    const void *program = NULL;
    dl_iterate_phdr(first_object, &program);             /* the program */
    add_skip(program);
    add_skip(dlsym(RTLD_DEFAULT, "malloc"));             /* malloc's home */
#if defined(__GLIBC__)
    add_skip((const void *)&gnu_get_libc_version);       /* the C library */
#endif
    add_skip(dlsym(RTLD_DEFAULT, "_dl_find_object"));    /* the dynamic linker */
    add_skip(dlsym(RTLD_DEFAULT, "__tls_get_addr"));
}

int
ht_native_start(int frames, char *err, size_t errlen)
{
    if (ht_tracer_native_on()) {
        if (frames && !ht_tracer_native_frames_on()) {
            snprintf(err, errlen, "native tracing is already on without "
                     "native frames: call stop() first");
            return -1;
        }
        /* Already on: patch objects loaded some other way since. */
        (void)ht_got_patch_new();
        return 0;
    }
    if (!HT_WALK_DETACHED) {
        /* Native blocks come mostly from threads that released the GIL,
         * whose tracebacks only the frame shims can read. */
        snprintf(err, errlen, "native tracing needs the frame shims of a known "
                 "CPython version (3.11 to 3.13); this build uses the public-API "
                 "fallback");
        return -1;
    }
    if (frames && ht_nstack_prepare() < 0) {
        snprintf(err, errlen, "native frames: this C library cannot unwind "
                 "the stack (backtrace() found no frames)");
        return -1;
    }
    int rc = ht_tracer_native_frames(frames);
    if (rc < 0) {
        snprintf(err, errlen, rc == -1 ? "native frames: out of memory"
                 : "native frames: blocks were tracked in NATIVE_DOMAIN "
                   "before; call stop() first");
        return -1;
    }
    if (ht_got_init_once() < 0) {
        snprintf(err, errlen, "native tracing: cannot register fork handlers");
        return -1;
    }
    fill_skip();
    /* Only the functions this C library has (pvalloc, say, may be gone):
     * a slot of a function without a definition is left alone. */
    size_t n = 0;
    for (size_t i = 0; i < NHOOKS; i++) {
        if (dlsym(RTLD_DEFAULT, hooks[i].symbol) != NULL) {
            ht_got_hook h = hooks[i];
            hooks[i] = hooks[n];
            hooks[n++] = h;
        }
    }
    set.nhooks = n;
    ht_tracer_native(1);
    if (ht_got_install(&set) < 0) {
        ht_tracer_native(0);
        (void)ht_tracer_native_frames(0);
        snprintf(err, errlen, "native tracing: %s", set.error);
        return -1;
    }
    return 0;
}

void
ht_native_stop(void)
{
    ht_tracer_native(0);
    (void)ht_got_uninstall(&set);
}

size_t
ht_native_slots(void)
{
    char err[8];
    return ht_got_status(&set, err, sizeof(err));
}
