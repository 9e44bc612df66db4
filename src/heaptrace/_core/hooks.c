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
 *
 * Living beside other allocator tools.  PEP 445 hooks form a chain that
 * every tool edits on its own: a tool saves what is installed, installs
 * itself, and at its end puts back what it saved.  When two tools (say the
 * standard tracemalloc and heaptrace) start and stop in different orders,
 * a tool's saved allocator can be gone (torn down), and blindly restoring
 * it crashes the next allocation; or a tool can put heaptrace's hooks back
 * after heaptrace stopped.  So heaptrace never assumes where its hooks are:
 *   - it finds out with a probe: one call of each domain's current
 *     allocator with the probing flag set; its hooks, wherever they are
 *     reached in the chain, note it and pass the call through;
 *   - hooks that are in place but not recording are a pure pass-through
 *     (another tool may have chained on top of them, or put them back);
 *   - install puts hooks only on the domains the probe did not reach, so
 *     heaptrace never takes its own hooks for the allocators to wrap;
 *   - uninstall takes hooks out only where they are on top of the chain:
 *     where another tool chained on top of them, they stay, passing calls
 *     through, because that tool will call them (and may put them back);
 *     where they are not reached at all, there is nothing to undo;
 *   - a tracer whose hooks were taken out from under it (the other tool
 *     stopped and put back what it had saved before heaptrace started)
 *     notices at its next API call and stops with a warning (tracer.c).
 */
#include "hooks.h"
#include "tracer.h"

#include <stdatomic.h>

/* Per thread: set while a hook is running on this thread, including while it
 * calls the allocator it wraps: pymalloc passes large requests on to the
 * (hooked) RAW allocator, and that nested call must not record the block a
 * second time.  HT_PROBING while ht_hooks_reached() probes the chains. */
static _Thread_local int reentrant __attribute__((tls_model("initial-exec")));
#define HT_PROBING 2

/* Per thread: the domains whose hooks a probe reached (bit = index in
 * domain_of[]). */
static _Thread_local unsigned probe_hits __attribute__((tls_model("initial-exec")));

/* The allocators the hooks wrap: one row per installation generation,
 * one column per domain (RAW, MEM, OBJ).  A hook's ctx points at its
 * cell.  Each install that puts hooks on a domain writes a cell of the next
 * row, never the cell the installed hooks read, so a thread still inside
 * hooks of an earlier installation (they may be chained under another
 * tool's hooks, called without the GIL) always reads a consistent pair of
 * function and ctx.  Written with the GIL held; read by the hooks. */
enum { DOM_RAW, DOM_MEM, DOM_OBJ, NDOM };
#define NGEN 8
static PyMemAllocatorEx orig[NGEN][NDOM];
/* The row the next installation writes.  GIL. */
static int next_gen;
static const PyMemAllocatorDomain domain_of[NDOM] = {
    PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ
};

/* The domain index of a hook's ctx. */
static inline unsigned
domain_index(void *ctx)
{
    return (unsigned)(((PyMemAllocatorEx *)ctx - &orig[0][0]) % NDOM);
}

/* Whether the hooks record or only pass calls through.  Written with the
 * GIL held; atomic because the RAW hooks read it without the GIL (they
 * check the tracer's own flag again under the raw lock). */
static _Atomic int recording;

static inline int
is_recording(void)
{
    return atomic_load_explicit(&recording, memory_order_relaxed);
}

/* Whether a hook must only pass the call through: nested in a hook, a
 * probe (noted), or not recording. */
static inline int
passing(void *ctx)
{
    if (reentrant) {
        if (reentrant == HT_PROBING) {
            probe_hits |= 1u << domain_index(ctx);
        }
        return 1;
    }
    return !is_recording();
}

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
    if (passing(ctx)) {
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
    if (passing(ctx)) {
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

/* Forget the trace of a MEM/OBJ block being freed (or moved).  Only a
 * caller holding the main interpreter's GIL may touch the table that GIL
 * protects; an interpreter with a GIL of its own (3.12+) has its own
 * obmalloc state, so its blocks were recorded in the raw table (by
 * record_gil_side) and are looked for only there, under the raw lock. */
static inline void
forget_gil_side(void *ptr)
{
    if (ht_compat_holds_main_gil()) {
        ht_tracer_remove_gil(ptr);
    }
    else {
        ht_tracer_remove_raw(ptr);
    }
}

/* A block the tracer may hold a trace of, resized or freed by a call nested
 * in a hook (the tracer's own work, done with the flag set): its old trace
 * must still go. */
static inline int
nested_while_recording(void)
{
    return reentrant == 1 && is_recording();
}

static void *
gil_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (nested_while_recording()) {
        void *moved = a->realloc(a->ctx, ptr, size);
        if (moved != NULL && ptr != NULL && moved != ptr) {
            forget_gil_side(ptr);
        }
        return moved;
    }
    if (passing(ctx)) {
        return a->realloc(a->ctx, ptr, size);
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
            forget_gil_side(ptr);
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
    if (nested_while_recording()) {
        if (ptr != NULL) {
            forget_gil_side(ptr);
        }
        a->free(a->ctx, ptr);
        return;
    }
    if (passing(ctx)) {
        a->free(a->ctx, ptr);
        return;
    }
    reentrant = 1;
    if (ptr != NULL) {
        forget_gil_side(ptr);
    }
    a->free(a->ctx, ptr);
    reentrant = 0;
}

/* ---- RAW: any thread, GIL or not ------------------------------------------- */

static void *
raw_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
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
    if (passing(ctx)) {
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
    if (passing(ctx)) {
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
    if (passing(ctx)) {
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

static PyMemAllocatorEx
hooks_for(int d, PyMemAllocatorEx *wrapped)
{
    PyMemAllocatorEx a;
    if (d == DOM_RAW) {
        a.malloc = raw_malloc;
        a.calloc = raw_calloc;
        a.realloc = raw_realloc;
        a.free = raw_free;
    }
    else {
        a.malloc = gil_malloc;
        a.calloc = gil_calloc;
        a.realloc = gil_realloc;
        a.free = gil_free;
    }
    a.ctx = wrapped;
    return a;
}

/* Whether an allocator is heaptrace's hooks for domain d. */
static int
is_ours(const PyMemAllocatorEx *a, int d)
{
    const PyMemAllocatorEx *first = &orig[0][0];
    const PyMemAllocatorEx *cell = a->ctx;
    return (a->malloc == raw_malloc || a->malloc == gil_malloc)
           && cell >= first && cell < first + NGEN * NDOM
           && (int)domain_index(a->ctx) == d;
}

unsigned
ht_hooks_reached(void)
{
    int saved = reentrant;
    probe_hits = 0;
    reentrant = HT_PROBING;
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx a;
        PyMem_GetAllocator(domain_of[d], &a);
        void *p = a.malloc(a.ctx, 1);
        if (p != NULL) {
            a.free(a.ctx, p);
        }
    }
    reentrant = saved;
    return probe_hits;
}

void
ht_hooks_install(void)
{
    unsigned reached = ht_hooks_reached();
    int gen = next_gen;
    int used = 0;
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domain_of[d], &current);
        /* (Hooks on top of the chain are always reached; the second test
         * is the guard against ever wrapping ourselves.) */
        if ((reached & (1u << d)) || is_ours(&current, d)) {
            continue;
        }
        orig[gen][d] = current;
        PyMemAllocatorEx mine = hooks_for(d, &orig[gen][d]);
        PyMem_SetAllocator(domain_of[d], &mine);
        used = 1;
    }
    if (used) {
        next_gen = (gen + 1) % NGEN;
    }
}

void
ht_hooks_record(int on)
{
    atomic_store(&recording, on);
}

void
ht_hooks_uninstall(void)
{
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domain_of[d], &current);
        if (is_ours(&current, d)) {
            PyMemAllocatorEx *wrapped = current.ctx;
            PyMem_SetAllocator(domain_of[d], wrapped);
        }
    }
}
