/* hooks.c: the PEP 445 allocator hooks.
 *
 * The hooks wrap the allocators that were in place when tracing started
 * (the default ones, or another tool's), so they compose with anything
 * already installed.  Rules they keep:
 *   - never allocate through a traced allocator (the tracer's tables use
 *     libc, see alloc.h), never raise, never do work that grows with the
 *     size of the program (the trace table resizes incrementally);
 *   - a thread-local flag turns a nested call into a plain pass-through, so
 *     that nothing the tracer calls can recurse into it;
 *   - MEM and OBJ are called with the GIL held and use the lock-free path;
 *     RAW may be called without the GIL and goes through the raw lock;
 *   - if a block cannot be recorded, the allocation fails (the block is
 *     freed and NULL returned), exactly as the standard module does.
 * A trace is removed before its block is freed, so that no other thread can
 * be handed the same address while the old trace is still in the table.
 */
#include "hooks.h"
#include "tracer.h"

/* Per thread: set while a hook is running on this thread, including while it
 * calls the allocator it wraps: pymalloc passes large requests on to the
 * (hooked) RAW allocator, and that nested call must not record the block a
 * second time. */
static _Thread_local int reentrant __attribute__((tls_model("initial-exec")));

/* The allocators in place at install time.  Written with the GIL held while
 * the hooks are not installed; read by the hooks through their ctx. */
static PyMemAllocatorEx orig_raw, orig_mem, orig_obj;

/* ---- MEM and OBJ: GIL held ------------------------------------------------ */

static int
record_gil_side(void *ptr, size_t size)
{
    PyThreadState *ts = ht_compat_holder_tstate();
    if (ts != NULL) {
        return ht_tracer_add_gil(ts, ptr, size);
    }
    return ht_tracer_add_raw(ptr, size, 1);
}

static void *
gil_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        return a->malloc(a->ctx, size);
    }
    reentrant = 1;
    void *ptr = a->malloc(a->ctx, size);
    if (ptr != NULL && record_gil_side(ptr, size) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    reentrant = 0;
    return ptr;
}

static void *
gil_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        return a->calloc(a->ctx, nelem, elsize);
    }
    reentrant = 1;
    void *ptr = a->calloc(a->ctx, nelem, elsize);
    if (ptr != NULL && record_gil_side(ptr, nelem * elsize) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    reentrant = 0;
    return ptr;
}

static void *
gil_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        void *moved = a->realloc(a->ctx, ptr, size);
        if (moved != NULL && ptr != NULL && moved != ptr) {
            ht_tracer_remove_gil(ptr);
        }
        return moved;
    }
    reentrant = 1;
    void *ptr2 = a->realloc(a->ctx, ptr, size);
    if (ptr2 == NULL) {
        /* the old block and its trace are untouched */
    }
    else if (ptr == NULL) {
        if (record_gil_side(ptr2, size) < 0) {
            a->free(a->ctx, ptr2);
            ptr2 = NULL;
        }
    }
    else {
        PyThreadState *ts = ht_compat_holder_tstate();
        if (ts != NULL) {
            ht_tracer_realloc_gil(ts, ptr, ptr2, size);
        }
        else {
            ht_tracer_remove_raw(ptr);
            (void)ht_tracer_add_raw(ptr2, size, 1);
        }
    }
    reentrant = 0;
    return ptr2;
}

static void
gil_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        if (ptr != NULL) {
            ht_tracer_remove_gil(ptr);
        }
        a->free(a->ctx, ptr);
        return;
    }
    reentrant = 1;
    if (ptr != NULL) {
        ht_tracer_remove_gil(ptr);
    }
    a->free(a->ctx, ptr);
    reentrant = 0;
}

/* ---- RAW: any thread, GIL or not ------------------------------------------- */

static void *
raw_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        return a->malloc(a->ctx, size);
    }
    reentrant = 1;
    void *ptr = a->malloc(a->ctx, size);
    if (ptr != NULL && ht_tracer_add_raw(ptr, size, 0) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    reentrant = 0;
    return ptr;
}

static void *
raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        return a->calloc(a->ctx, nelem, elsize);
    }
    reentrant = 1;
    void *ptr = a->calloc(a->ctx, nelem, elsize);
    if (ptr != NULL && ht_tracer_add_raw(ptr, nelem * elsize, 0) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    reentrant = 0;
    return ptr;
}

static void *
raw_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        return a->realloc(a->ctx, ptr, size);
    }
    reentrant = 1;
    size_t old_size = 0;
    uint32_t old_tb = 0;
    int had = ptr != NULL && ht_tracer_take_raw(ptr, &old_size, &old_tb);
    void *ptr2 = a->realloc(a->ctx, ptr, size);
    if (ptr2 == NULL) {
        if (had) {
            ht_tracer_put_back_raw(ptr, old_size, old_tb);
        }
    }
    else if (ht_tracer_add_raw(ptr2, size, 0) < 0 && ptr == NULL) {
        a->free(a->ctx, ptr2);
        ptr2 = NULL;
    }
    reentrant = 0;
    return ptr2;
}

static void
raw_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *a = ctx;
    if (reentrant) {
        a->free(a->ctx, ptr);
        return;
    }
    reentrant = 1;
    if (ptr != NULL) {
        ht_tracer_remove_raw(ptr);
    }
    a->free(a->ctx, ptr);
    reentrant = 0;
}

/* ---- install ---------------------------------------------------------------- */

void
ht_hooks_install(void)
{
    PyMemAllocatorEx alloc;

    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &orig_raw);
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);

    alloc.malloc = raw_malloc;
    alloc.calloc = raw_calloc;
    alloc.realloc = raw_realloc;
    alloc.free = raw_free;
    alloc.ctx = &orig_raw;
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &alloc);

    alloc.malloc = gil_malloc;
    alloc.calloc = gil_calloc;
    alloc.realloc = gil_realloc;
    alloc.free = gil_free;
    alloc.ctx = &orig_mem;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &alloc);
    alloc.ctx = &orig_obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &alloc);
}

void
ht_hooks_uninstall(void)
{
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &orig_raw);
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
}
