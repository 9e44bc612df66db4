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
 *
 * Sampling (sampling.h).  With a sampling interval, each thread counts down
 * the bytes left to its next sample point, drawn from an exponential
 * distribution by a per-thread generator; a block is recorded only when the
 * countdown runs out inside it.  The common case is a load, a compare and
 * a subtraction: a block that is not sampled costs no table work when it is
 * allocated, and one table lookup that misses when it is freed.  The
 * decision is taken after the wrapped allocator returned, with the
 * reentrancy flag still set, so that pymalloc passing a large request on to
 * the RAW hooks never counts the same bytes twice.
 */
#include "tracer.h"     /* first: Python.h sets the feature macros */
#include "hooks.h"
#include "sampling.h"
#include "traces.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

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

/* ---- sampling ------------------------------------------------------------- */

/* The sampling interval in bytes, 0 when every block is recorded.  Written
 * with the GIL held by ht_hooks_sampling; read by every hook (relaxed: a
 * hook that sees the old value during start() records one block more or
 * less, before any snapshot can be taken). */
static _Atomic uint64_t sample_interval;
/* Changes whenever the settings change, and in a fork child: a thread whose
 * sample_seen differs seeds its generator again.  Written with the GIL held
 * (release, after sample_seed/sample_seeded); read by every sampling hook. */
static _Atomic uint32_t sample_epoch;
/* The seed given to start(), if any.  Written with the GIL held before the
 * epoch changes; read after an acquire load of the epoch. */
static uint64_t sample_seed;
static int sample_seeded;
/* Threads seeded so far in this epoch (each gets its own stream).  Atomic. */
static _Atomic uint64_t sample_threads;

/* Per thread: bytes left before the next sample point (at least 1), the
 * epoch the generator was seeded in, and the generator's state. */
static _Thread_local uint64_t sample_left __attribute__((tls_model("initial-exec")));
static _Thread_local uint32_t sample_seen __attribute__((tls_model("initial-exec")));
static _Thread_local uint64_t sample_state __attribute__((tls_model("initial-exec")));

/* splitmix64: the generator, and the mixer of seeds. */
static inline uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static inline uint64_t
next_random(void)
{
    sample_state += 0x9e3779b97f4a7c15u;
    return mix64(sample_state);
}

/* Distance in bytes to the next sample point: ceil of an exponential
 * variable of mean n, at least 1.  u is uniform in (0, 1]; log() does not
 * allocate. */
static uint64_t
draw_distance(uint64_t n)
{
    double u = (double)((next_random() >> 11) + 1) * 0x1p-53;
    double d = ceil(-log(u) * (double)n);
    return d < 1.0 ? 1 : (uint64_t)d;
}

/* First sampling call of a thread in this epoch: seed, draw, decide. */
static int
sample_first(size_t size, uint64_t n)
{
    uint32_t epoch = atomic_load_explicit(&sample_epoch, memory_order_acquire);
    uint64_t ordinal = atomic_fetch_add_explicit(&sample_threads, 1,
                                                 memory_order_relaxed);
    uint64_t base = sample_seed;
    if (!sample_seeded) {
        struct timespec now;
        (void)clock_gettime(CLOCK_MONOTONIC, &now);
        base = mix64((uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 30))
               ^ mix64((uint64_t)getpid()) ^ (uint64_t)(uintptr_t)&sample_left;
    }
    sample_state = mix64(base ^ mix64(ordinal + 1));
    sample_seen = epoch;
    sample_left = draw_distance(n);
    if (sample_left > size) {
        sample_left -= size;
        return 0;
    }
    sample_left = draw_distance(n);
    return 1;
}

/* Whether the block of size bytes just allocated by this thread is to be
 * recorded: always when exact; with an interval, when the thread's countdown
 * runs out inside it. */
static inline int
sample_hit(size_t size)
{
    uint64_t n = atomic_load_explicit(&sample_interval, memory_order_relaxed);
    if (n == 0) {
        return 1;
    }
    if (__builtin_expect(sample_seen
                         != atomic_load_explicit(&sample_epoch, memory_order_relaxed), 0)) {
        return sample_first(size, n);
    }
    if (sample_left > size) {
        sample_left -= size;
        return 0;
    }
    sample_left = draw_distance(n);
    return 1;
}

/* Whether, when sampling, the block at ptr is certainly not traced (then
 * freeing it needs nothing of the tracer: not even the reentrancy flag,
 * since the wrapped free never calls back into a hook with a traced
 * block).  Exact tracing: always 0. */
static inline int
sampled_out(void *ptr)
{
    return atomic_load_explicit(&sample_interval, memory_order_relaxed) != 0
           && !ht_sample_maybe_traced(ptr);
}

int
ht_hooks_sample(size_t size)
{
    return sample_hit(size);
}

void
ht_hooks_sampling(uint64_t interval, int seeded, uint64_t seed)
{
    sample_seed = seed;
    sample_seeded = seeded;
    atomic_store_explicit(&sample_threads, 0, memory_order_relaxed);
    atomic_store_explicit(&sample_interval, interval, memory_order_relaxed);
    /* Never 0, the epoch a thread that never sampled has seen. */
    uint32_t e = atomic_load_explicit(&sample_epoch, memory_order_relaxed) + 1;
    atomic_store_explicit(&sample_epoch, e ? e : 1, memory_order_release);
}

void
ht_hooks_sampling_forked(void)
{
    uint32_t e = atomic_load_explicit(&sample_epoch, memory_order_relaxed) + 1;
    atomic_store_explicit(&sample_epoch, e ? e : 1, memory_order_release);
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
    if (ptr != NULL && sample_hit(size) && record_gil_side(ptr, size) < 0) {
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
    if (ptr != NULL && sample_hit(nelem * elsize)
        && record_gil_side(ptr, nelem * elsize) < 0) {
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
        if (sample_hit(size) && record_gil_side(ptr2, size) < 0) {
            a->free(a->ctx, ptr2);
            ptr2 = NULL;
        }
    }
    else if (!sample_hit(size)) {
        /* Sampled tracing: the new block is not sampled; the old one's
         * trace (if it was) goes. */
        if (!sampled_out(ptr)) {
            forget_gil_side(ptr);
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
    if (sampled_out(ptr)) {
        a->free(a->ctx, ptr);
        return;
    }
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
    if (ptr != NULL && sample_hit(size) && ht_tracer_add_raw(ptr, size, 0) < 0) {
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
    if (ptr != NULL && sample_hit(nelem * elsize)
        && ht_tracer_add_raw(ptr, nelem * elsize, 0) < 0) {
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
    int had = ptr != NULL && !sampled_out(ptr)
              && ht_tracer_take_raw(ptr, &old_size, &old_tb);
    void *ptr2 = a->realloc(a->ctx, ptr, size);
    if (ptr2 == NULL) {
        if (had) {
            ht_tracer_put_back_raw(ptr, old_size, old_tb);
        }
    }
    else if (sample_hit(size) && ht_tracer_add_raw(ptr2, size, 0) < 0
             && ptr == NULL) {
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
    if (sampled_out(ptr)) {
        a->free(a->ctx, ptr);
        return;
    }
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
