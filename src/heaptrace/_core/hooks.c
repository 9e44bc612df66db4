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
 * countdown runs out inside it.  Sampled tracing installs a set of hooks of
 * its own (see "the sampled hooks" below): a block that is not sampled costs
 * a few loads and compares and a tail call when it is allocated, and one
 * load of a filter when it is freed, with no table work, no atomic
 * read-modify-write and no write of the reentrancy flag.  Whatever they
 * cannot settle so, they hand to the exact hooks, which take the decision
 * after the wrapped allocator returned, with the reentrancy flag still set,
 * so that pymalloc passing a large request on to the RAW hooks never counts
 * the same bytes twice.  Both sets keep every rule above: the sampled fast
 * path is taken only with the flag clear (never for a nested call or a
 * probe) and only while sampled recording is on, and is a pure pass-through
 * otherwise.
 */
#include "tracer.h"     /* first: Python.h sets the feature macros */
#include "hooks.h"
#include "sampling.h"
#include "traces.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
/* The hooks of exact tracing are also the slow paths of the sampled ones:
 * kept out of line so that a sampled hook's fast path stays a leaf. */
#define HT_NOINLINE __attribute__((noinline))

/* Per thread, in one struct so that the sampled fast path reads a single
 * cache line (each field is only ever touched by its own thread):
 *   reentrant  set while a hook is running on this thread, including while
 *              it calls the allocator it wraps: pymalloc passes large
 *              requests on to the (hooked) RAW allocator, and that nested
 *              call must not record the block a second time.  HT_PROBING
 *              while ht_hooks_reached() probes the chains;
 *   probe_hits the domains whose hooks a probe reached (bit = index in
 *              domain_of[]);
 *   left       sampling: bytes left before the next sample point (at least
 *              1 once seeded; 0 in a thread that never sampled);
 *   seen       sampling: the sample_epoch the generator was seeded in (0:
 *              never);
 *   key        seen and reentrant read as one word, for the sampled hooks'
 *              fast path (gate_key);
 *   state      sampling: the generator's state. */
union seen_reentrant {
    struct {
        uint32_t seen;
        uint32_t reentrant;
    };
    uint64_t key;
};
struct hook_thread {
    uint64_t left;
    union seen_reentrant u;
    uint64_t state;
    unsigned probe_hits;
};
static _Thread_local struct hook_thread me __attribute__((tls_model("initial-exec")));
#define HT_PROBING 2

/* The allocators the hooks wrap: one row per installation generation,
 * one column per domain (RAW, MEM, OBJ).  A hook's ctx points at its
 * cell.  Each install that puts hooks on a domain writes a cell of the next
 * row, never the cell the installed hooks read, so a thread still inside
 * hooks of an earlier installation (they may be chained under another
 * tool's hooks, called without the GIL) always reads a consistent pair of
 * function and ctx.  Beside the allocator, a cell holds its pass limit:
 * the largest request the sampled hooks hand to it without setting the
 * reentrancy flag, because the allocator serves it without calling the RAW
 * domain's hooks (found by a probe at install; see "the sampled hooks";
 * atomic, relaxed, because the probe writes it after the hooks are in
 * place, and RAW hooks read it without the GIL).  Written with the GIL
 * held; read by the hooks. */
enum { DOM_RAW, DOM_MEM, DOM_OBJ, NDOM };
#define NGEN 8
struct wrapped {
    PyMemAllocatorEx a;     /* first: a hook's ctx is also a pointer to it */
    _Atomic size_t pass_limit;
};
static struct wrapped orig[NGEN][NDOM];
/* The row the next installation writes.  GIL. */
static int next_gen;
static const PyMemAllocatorDomain domain_of[NDOM] = {
    PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ
};

/* The domain index of a hook's ctx. */
static inline unsigned
domain_index(void *ctx)
{
    return (unsigned)(((struct wrapped *)ctx - &orig[0][0]) % NDOM);
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
    if (me.u.reentrant) {
        if (me.u.reentrant == HT_PROBING) {
            me.probe_hits |= 1u << domain_index(ctx);
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
 * seen differs seeds its generator again.  Written with the GIL held
 * (release, after sample_seed/sample_seeded); read by every sampling hook. */
static _Atomic uint32_t sample_epoch;
/* The seed given to start(), if any.  Written with the GIL held before the
 * epoch changes; read after an acquire load of the epoch. */
static uint64_t sample_seed;
static int sample_seeded;
/* Threads seeded so far in this epoch (each gets its own stream).  Atomic. */
static _Atomic uint64_t sample_threads;

/* The gate of the sampled hooks' fast path: sample_epoch while the hooks
 * record with a sampling interval, 0 otherwise (exact, or not recording).
 * A sampled hook takes its fast path only when its thread's seen equals the
 * gate, so a thread seeded in this epoch; a thread that never sampled has
 * seen == 0 but also left == 0, which no request is below.  Written with
 * the GIL held (ht_hooks_sampling, ht_hooks_record, fork child); read by
 * every sampled hook (relaxed: a hook that sees the old gate during start()
 * or stop() counts or records one block more or less, as above). */
static _Atomic uint32_t sample_gate;

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
    me.state += 0x9e3779b97f4a7c15u;
    return mix64(me.state);
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
               ^ mix64((uint64_t)getpid()) ^ (uint64_t)(uintptr_t)&me.left;
    }
    me.state = mix64(base ^ mix64(ordinal + 1));
    me.u.seen = epoch;
    me.left = draw_distance(n);
    if (me.left > size) {
        me.left -= size;
        return 0;
    }
    me.left = draw_distance(n);
    return 1;
}

/* Open the sampled hooks' fast path for the current epoch when the hooks
 * record with an interval; close it otherwise.  GIL held. */
static void
update_gate(void)
{
    uint32_t gate = 0;
    if (is_recording()
        && atomic_load_explicit(&sample_interval, memory_order_relaxed) != 0) {
        gate = atomic_load_explicit(&sample_epoch, memory_order_relaxed);
    }
    atomic_store_explicit(&sample_gate, gate, memory_order_relaxed);
}

/* Move to a new epoch (never 0, the epoch a thread that never sampled has
 * seen): every thread seeds its generator again.  GIL held (or the only
 * thread of a fork child). */
static void
new_epoch(void)
{
    uint32_t e = atomic_load_explicit(&sample_epoch, memory_order_relaxed) + 1;
    atomic_store_explicit(&sample_epoch, e ? e : 1, memory_order_release);
    update_gate();
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
    if (__builtin_expect(me.u.seen
                         != atomic_load_explicit(&sample_epoch, memory_order_relaxed), 0)) {
        return sample_first(size, n);
    }
    if (me.left > size) {
        me.left -= size;
        return 0;
    }
    me.left = draw_distance(n);
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
    new_epoch();
}

void
ht_hooks_sampling_forked(void)
{
    new_epoch();
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

HT_NOINLINE static void *
gil_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
        return a->malloc(a->ctx, size);
    }
    me.u.reentrant = 1;
    void *ptr = a->malloc(a->ctx, size);
    if (ptr != NULL && sample_hit(size) && record_gil_side(ptr, size) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    me.u.reentrant = 0;
    return ptr;
}

HT_NOINLINE static void *
gil_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
        return a->calloc(a->ctx, nelem, elsize);
    }
    me.u.reentrant = 1;
    void *ptr = a->calloc(a->ctx, nelem, elsize);
    if (ptr != NULL && sample_hit(nelem * elsize)
        && record_gil_side(ptr, nelem * elsize) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    me.u.reentrant = 0;
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
    return me.u.reentrant == 1 && is_recording();
}

HT_NOINLINE static void *
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
    me.u.reentrant = 1;
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
    me.u.reentrant = 0;
    return ptr2;
}

HT_NOINLINE static void
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
    me.u.reentrant = 1;
    if (ptr != NULL) {
        forget_gil_side(ptr);
    }
    a->free(a->ctx, ptr);
    me.u.reentrant = 0;
}

/* ---- RAW: any thread, GIL or not ------------------------------------------- */

HT_NOINLINE static void *
raw_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
        return a->malloc(a->ctx, size);
    }
    me.u.reentrant = 1;
    void *ptr = a->malloc(a->ctx, size);
    if (ptr != NULL && sample_hit(size) && ht_tracer_add_raw(ptr, size, 0) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    me.u.reentrant = 0;
    return ptr;
}

HT_NOINLINE static void *
raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
        return a->calloc(a->ctx, nelem, elsize);
    }
    me.u.reentrant = 1;
    void *ptr = a->calloc(a->ctx, nelem, elsize);
    if (ptr != NULL && sample_hit(nelem * elsize)
        && ht_tracer_add_raw(ptr, nelem * elsize, 0) < 0) {
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    me.u.reentrant = 0;
    return ptr;
}

HT_NOINLINE static void *
raw_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    if (passing(ctx)) {
        return a->realloc(a->ctx, ptr, size);
    }
    me.u.reentrant = 1;
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
    me.u.reentrant = 0;
    return ptr2;
}

HT_NOINLINE static void
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
    me.u.reentrant = 1;
    if (ptr != NULL) {
        ht_tracer_remove_raw(ptr);
    }
    a->free(a->ctx, ptr);
    me.u.reentrant = 0;
}

/* ---- the sampled hooks ------------------------------------------------------
 *
 * Installed instead of the hooks above when tracing starts with a sampling
 * interval.  Each one first tries a fast path that settles the common case
 * of sampled tracing with no tracer work at all, and otherwise hands the
 * call, untouched, to the hook above for its domain; so they are correct
 * whatever the mode (left in a chain under another tool, they may see exact
 * tracing, or none), only fast in their own.
 *
 * Allocation: when the gate is open for this thread (sampled recording,
 * generator seeded in this epoch), no hook is running on it (a nested call
 * or a probe) and its countdown is beyond the request, the countdown goes
 * down by the request and the wrapped allocator is called as a tail call:
 * a load of the gate and a few of one thread-local cache line.  The flag
 * that keeps a nested call from counting the same bytes again is not set,
 * so this is done only for requests up to the cell's pass limit, that the
 * wrapped allocator serves without calling the RAW hooks: pymalloc serves
 * requests up to 512 bytes from its pools and passes larger ones on to the
 * RAW domain; the debug hooks pass even small ones on.  At install, a probe
 * asks each wrapped MEM/OBJ allocator for 512 bytes, with the probing flag
 * set: if the RAW hooks note it, the limit is 0, otherwise 512.  The RAW
 * domain wraps the C allocator, which never calls back: no limit there
 * unless its probe was noted too.  Resizing in MEM/OBJ sets the flag
 * around the call (pymalloc resizes a block it does not own through the
 * RAW domain, whatever the size).
 *
 * Free: a block in a region that the filter says holds no sampled block
 * (traces.h) needs nothing of the tracer: the free is a tail call after one
 * load of the filter, not even of the gate, because the filter is pinned at
 * 255 while exact tracing records.  (The wrapped free never calls a hook
 * with a traced block, so no flag is needed.) */

/* What pymalloc serves from its pools (its SMALL_REQUEST_THRESHOLD): the
 * request the pass-limit probe makes. */
#define HT_PASS_PROBE 512

/* The pass limit of the cell a sampled hook wraps. */
static inline size_t
pass_limit(struct wrapped *w)
{
    return atomic_load_explicit(&w->pass_limit, memory_order_relaxed);
}

/* Whether the calling thread's countdown passes over a request of size
 * bytes with no tracer work: gate open for it, no hook running on it. */
static inline int
skips(size_t size)
{
    union seen_reentrant open = { .seen = atomic_load_explicit(&sample_gate,
                                                              memory_order_relaxed),
                                  .reentrant = 0 };
    /* seen == gate and reentrant == 0, in one comparison */
    return likely(me.left > size) && likely(me.u.key == open.key);
}

/* Whether a free or resize of ptr needs nothing of the tracer: no sampled
 * table holds a block in its region.  While the hooks do not record, the
 * filter is all 0 (no table holds anything); while exact tracing records,
 * it is pinned at 255 (ht_sample_filter_pin), so this is never true then. */
static inline int
untraced(void *ptr)
{
    return likely(!ht_sample_maybe_traced(ptr));
}

static void *
smp_gil_malloc(void *ctx, size_t size)
{
    struct wrapped *w = ctx;
    if (likely(size <= pass_limit(w)) && skips(size)) {
        me.left -= size;
        return w->a.malloc(w->a.ctx, size);
    }
    return gil_malloc(ctx, size);
}

static void *
smp_gil_calloc(void *ctx, size_t nelem, size_t elsize)
{
    struct wrapped *w = ctx;
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size)
        && likely(size <= pass_limit(w)) && skips(size)) {
        me.left -= size;
        return w->a.calloc(w->a.ctx, nelem, elsize);
    }
    return gil_calloc(ctx, nelem, elsize);
}

static void *
smp_gil_realloc(void *ctx, void *ptr, size_t size)
{
    struct wrapped *w = ctx;
    if (skips(size) && (ptr == NULL || untraced(ptr))) {
        me.left -= size;
        me.u.reentrant = 1;
        void *ptr2 = w->a.realloc(w->a.ctx, ptr, size);
        me.u.reentrant = 0;
        return ptr2;
    }
    return gil_realloc(ctx, ptr, size);
}

static void
smp_gil_free(void *ctx, void *ptr)
{
    struct wrapped *w = ctx;
    if (untraced(ptr)) {
        w->a.free(w->a.ctx, ptr);
        return;
    }
    gil_free(ctx, ptr);
}

static void *
smp_raw_malloc(void *ctx, size_t size)
{
    struct wrapped *w = ctx;
    if (likely(size <= pass_limit(w)) && skips(size)) {
        me.left -= size;
        return w->a.malloc(w->a.ctx, size);
    }
    return raw_malloc(ctx, size);
}

static void *
smp_raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    struct wrapped *w = ctx;
    size_t size;
    if (!__builtin_mul_overflow(nelem, elsize, &size)
        && likely(size <= pass_limit(w)) && skips(size)) {
        me.left -= size;
        return w->a.calloc(w->a.ctx, nelem, elsize);
    }
    return raw_calloc(ctx, nelem, elsize);
}

static void *
smp_raw_realloc(void *ctx, void *ptr, size_t size)
{
    struct wrapped *w = ctx;
    if (likely(size <= pass_limit(w)) && skips(size)
        && (ptr == NULL || untraced(ptr))) {
        me.left -= size;
        return w->a.realloc(w->a.ctx, ptr, size);
    }
    return raw_realloc(ctx, ptr, size);
}

static void
smp_raw_free(void *ctx, void *ptr)
{
    struct wrapped *w = ctx;
    if (untraced(ptr)) {
        w->a.free(w->a.ctx, ptr);
        return;
    }
    raw_free(ctx, ptr);
}

/* ---- install ---------------------------------------------------------------- */

/* The hooks for domain d wrapping the allocator of cell w: the sampled set
 * when the interval is set, the exact one otherwise. */
static PyMemAllocatorEx
hooks_for(int d, struct wrapped *w)
{
    int sampled = atomic_load_explicit(&sample_interval, memory_order_relaxed) != 0;
    PyMemAllocatorEx a;
    if (d == DOM_RAW) {
        a.malloc = sampled ? smp_raw_malloc : raw_malloc;
        a.calloc = sampled ? smp_raw_calloc : raw_calloc;
        a.realloc = sampled ? smp_raw_realloc : raw_realloc;
        a.free = sampled ? smp_raw_free : raw_free;
    }
    else {
        a.malloc = sampled ? smp_gil_malloc : gil_malloc;
        a.calloc = sampled ? smp_gil_calloc : gil_calloc;
        a.realloc = sampled ? smp_gil_realloc : gil_realloc;
        a.free = sampled ? smp_gil_free : gil_free;
    }
    a.ctx = w;
    return a;
}

/* Whether an allocator is heaptrace's hooks (either set) for domain d. */
static int
is_ours(const PyMemAllocatorEx *a, int d)
{
    const struct wrapped *first = &orig[0][0];
    const struct wrapped *cell = a->ctx;
    return (a->malloc == raw_malloc || a->malloc == gil_malloc
            || a->malloc == smp_raw_malloc || a->malloc == smp_gil_malloc)
           && cell >= first && cell < first + NGEN * NDOM
           && (int)domain_index(a->ctx) == d;
}

/* The pass limit of cell w (see "the sampled hooks"): whether a request of
 * HT_PASS_PROBE bytes to its allocator reaches heaptrace's RAW hooks.  An
 * allocation that fails probes nothing and gives a limit of 0.  GIL held. */
static size_t
pass_limit_of(int d, struct wrapped *w)
{
    uint32_t saved = me.u.reentrant;
    me.probe_hits = 0;
    me.u.reentrant = HT_PROBING;
    void *p = w->a.malloc(w->a.ctx, HT_PASS_PROBE);
    if (p != NULL) {
        w->a.free(w->a.ctx, p);
    }
    me.u.reentrant = saved;
    if (p == NULL || (me.probe_hits & (1u << DOM_RAW))) {
        return 0;
    }
    return d == DOM_RAW ? SIZE_MAX : HT_PASS_PROBE;
}

unsigned
ht_hooks_reached(void)
{
    uint32_t saved = me.u.reentrant;
    me.probe_hits = 0;
    me.u.reentrant = HT_PROBING;
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx a;
        PyMem_GetAllocator(domain_of[d], &a);
        void *p = a.malloc(a.ctx, 1);
        if (p != NULL) {
            a.free(a.ctx, p);
        }
    }
    me.u.reentrant = saved;
    return me.probe_hits;
}

void
ht_hooks_install(void)
{
    unsigned reached = ht_hooks_reached();
    int gen = next_gen;
    unsigned used = 0;
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domain_of[d], &current);
        /* (Hooks on top of the chain are always reached; the second test
         * is the guard against ever wrapping ourselves.) */
        if ((reached & (1u << d)) || is_ours(&current, d)) {
            continue;
        }
        orig[gen][d].a = current;
        atomic_store_explicit(&orig[gen][d].pass_limit, 0, memory_order_relaxed);
        PyMemAllocatorEx mine = hooks_for(d, &orig[gen][d]);
        PyMem_SetAllocator(domain_of[d], &mine);
        used |= 1u << d;
    }
    /* After every domain has its hooks, so that the RAW ones can note the
     * probes of the others. */
    for (int d = 0; d < NDOM; d++) {
        if (used & (1u << d)) {
            atomic_store_explicit(&orig[gen][d].pass_limit,
                                  pass_limit_of(d, &orig[gen][d]),
                                  memory_order_relaxed);
        }
    }
    if (used) {
        next_gen = (gen + 1) % NGEN;
    }
}

void
ht_hooks_record(int on)
{
    atomic_store(&recording, on);
    update_gate();
    /* The sampled hooks' free consults only the filter: while exact tracing
     * records, it must send every free on to the exact path. */
    ht_sample_filter_pin(on
                         && atomic_load_explicit(&sample_interval,
                                                 memory_order_relaxed) == 0);
}

void
ht_hooks_uninstall(void)
{
    for (int d = 0; d < NDOM; d++) {
        PyMemAllocatorEx current;
        PyMem_GetAllocator(domain_of[d], &current);
        if (is_ours(&current, d)) {
            struct wrapped *w = current.ctx;
            PyMem_SetAllocator(domain_of[d], &w->a);
        }
    }
}
