/* tracer.c: trace tables, counters, start/stop/clear and export.
 *
 * See tracer.h for what protects what.  The fast path is ht_tracer_add_gil
 * and ht_tracer_remove_gil: no lock, one interned-traceback lookup and one
 * table operation.
 */
#include "tracer.h"
#include "traces.h"
#include "intern.h"
#include "hooks.h"
#include "alloc.h"
#include "pytrack.h"
#include "native.h"
#include "nstack.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

pthread_mutex_t ht_raw_lock = PTHREAD_MUTEX_INITIALIZER;

/* Written with the GIL and the raw lock held; read with either held, or
 * (an atomic load) by a RAW hook before it takes the lock. */
static _Atomic int tracing;
static int nframe_limit = 1;            /* GIL + raw lock to write */
/* The sampling interval of the traces in the tables (0: exact) and the
 * seed start() passes on to the hooks: set with the GIL and the raw lock
 * held while not tracing; read with either held. */
static uint64_t sampling_interval;
static int sampling_seeded;
static uint64_t sampling_seed;

static ht_table gil_traces;             /* GIL */
static ht_table raw_traces;             /* raw lock */

typedef struct {
    unsigned int domain;
    ht_table table;
} ht_domain_table;
static ht_domain_table *domains;        /* raw lock */
static size_t ndomains;                 /* raw lock */

/* Traced bytes in gil_traces (written under the GIL) and in the tables of
 * the raw lock (written under it); the peak is a max over their sum. */
static _Atomic size_t mem_gil;
static _Atomic size_t mem_raw;
static _Atomic size_t mem_peak;

/* Set once a MEM/OBJ block went to the raw table (outside the main
 * interpreter); from then on, a MEM/OBJ free that misses the GIL table also
 * looks in the raw table. */
static _Atomic int foreign_seen;

static uint64_t generation;             /* GIL */

/* Set while native tracing is on (ht_tracer_native): blocks of the NATIVE
 * domain may then be freed through Python's RAW allocator (PyMem_RawFree
 * is free) or reported with PyTraceMalloc_Track, and must leave the native
 * table.  Written with the GIL and the raw lock held; read under either. */
static _Atomic int native_on;
/* Native blocks that could not be recorded (the table could not grow):
 * the allocation went ahead untraced.  Raw lock. */
static size_t native_lost;
/* Set while native frames are on (start(native=True, native_frames=True)):
 * the native table then holds native trace ids of nstack.c (a traceback id
 * and a C call path) where the other tables hold traceback ids.  Written
 * with the GIL and the raw lock held, only while the native table is
 * empty; read under either, or (an atomic load) by a hook deciding whether
 * to capture its call path before it takes the raw lock. */
static _Atomic int native_frames;

/* ---- counters -------------------------------------------------------------- */

static inline void
bump_peak(size_t total)
{
    size_t peak = atomic_load_explicit(&mem_peak, memory_order_relaxed);
    while (total > peak
           && !atomic_compare_exchange_weak_explicit(&mem_peak, &peak, total,
                                                     memory_order_relaxed,
                                                     memory_order_relaxed)) {
    }
}

static inline void
set_mem_gil(void)
{
    size_t v = gil_traces.bytes;
    atomic_store_explicit(&mem_gil, v, memory_order_relaxed);
    bump_peak(v + atomic_load_explicit(&mem_raw, memory_order_relaxed));
}

/* Raw lock held. */
static void
set_mem_raw(void)
{
    size_t v = raw_traces.bytes;
    for (size_t i = 0; i < ndomains; i++) {
        v += domains[i].table.bytes;
    }
    atomic_store_explicit(&mem_raw, v, memory_order_relaxed);
    bump_peak(v + atomic_load_explicit(&mem_gil, memory_order_relaxed));
}

/* ---- hooks side ----------------------------------------------------------- */

int
ht_tracer_add_gil(PyThreadState *ts, void *ptr, size_t size)
{
    uint32_t tb = ht_intern_capture_gil(ts);
    size_t old;
    if (ht_table_put(&gil_traces, (uintptr_t)ptr, size, tb, &old) < 0) {
        return -1;
    }
    set_mem_gil();
    return 0;
}

static void remove_raw_locked(void *ptr);

void
ht_tracer_remove_gil(void *ptr)
{
    size_t size;
    if (ht_table_remove(&gil_traces, (uintptr_t)ptr, &size)) {
        atomic_store_explicit(&mem_gil, gil_traces.bytes, memory_order_relaxed);
        return;
    }
    if (atomic_load_explicit(&foreign_seen, memory_order_relaxed)) {
        pthread_mutex_lock(&ht_raw_lock);
        remove_raw_locked(ptr);
        pthread_mutex_unlock(&ht_raw_lock);
    }
}

/* Capture the caller's traceback by whichever path its GIL state allows.
 * Raw lock held. */
static uint32_t
capture_any(void)
{
    PyThreadState *ts = ht_compat_gil_tstate();
    if (ts != NULL) {
        return ht_intern_capture_gil(ts);
    }
    return ht_intern_capture_detached(PyGILState_GetThisThreadState());
}

int
ht_tracer_add_raw(void *ptr, size_t size, int foreign)
{
    int rc = 0;
    pthread_mutex_lock(&ht_raw_lock);
    if (atomic_load_explicit(&tracing, memory_order_relaxed)) {
        if (foreign) {
            atomic_store_explicit(&foreign_seen, 1, memory_order_relaxed);
        }
#if HT_WALK_DETACHED
        uint32_t tb = capture_any();
#else
        /* The public-API build reads frames by making frame objects, that
         * is by allocating through every tool's hooks; another tool (the
         * standard tracemalloc) calls the RAW allocator with its own lock
         * held, and its hooks would then wait on that lock forever.  So
         * RAW blocks are recorded without a traceback there. */
        uint32_t tb = HT_TB_UNKNOWN;
#endif
        size_t old;
        rc = ht_table_put(&raw_traces, (uintptr_t)ptr, size, tb, &old);
        if (rc == 0) {
            set_mem_raw();
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return rc;
}

static ht_table *domain_table(unsigned int domain, int create);

/* Forget a block's native trace, if any.  Raw lock held. */
static void
drop_native_locked(uintptr_t ptr)
{
    if (!atomic_load_explicit(&native_on, memory_order_relaxed)) {
        return;
    }
    ht_table *t = domain_table(HT_NATIVE_DOMAIN, 0);
    size_t size;
    if (t != NULL && ht_table_remove(t, ptr, &size)) {
        set_mem_raw();
    }
}

static void
remove_raw_locked(void *ptr)
{
    size_t size;
    if (ht_table_remove(&raw_traces, (uintptr_t)ptr, &size)) {
        set_mem_raw();
        return;
    }
    /* (A block that C code took with malloc, handed to PyMem_RawFree.) */
    drop_native_locked((uintptr_t)ptr);
}

void
ht_tracer_remove_raw(void *ptr)
{
    pthread_mutex_lock(&ht_raw_lock);
    remove_raw_locked(ptr);
    pthread_mutex_unlock(&ht_raw_lock);
}

void
ht_tracer_realloc_gil(PyThreadState *ts, void *old, void *ptr, size_t size)
{
    if (old != ptr) {
        ht_tracer_remove_gil(old);
    }
    /* A failed put leaves the block untraced; see tracer.h. */
    (void)ht_tracer_add_gil(ts, ptr, size);
}

int
ht_tracer_take_raw(void *ptr, size_t *size, uint32_t *tb)
{
    ht_trace_out out;
    int found = 0;
    pthread_mutex_lock(&ht_raw_lock);
    if (ht_table_get(&raw_traces, (uintptr_t)ptr, &out)) {
        size_t removed;
        ht_table_remove(&raw_traces, (uintptr_t)ptr, &removed);
        set_mem_raw();
        *size = out.size;
        *tb = out.tb;
        found = 1;
    }
    else {
        drop_native_locked((uintptr_t)ptr);
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return found;
}

void
ht_tracer_put_back_raw(void *ptr, size_t size, uint32_t tb)
{
    pthread_mutex_lock(&ht_raw_lock);
    size_t old;
    if (atomic_load_explicit(&tracing, memory_order_relaxed)
        && ht_table_put(&raw_traces, (uintptr_t)ptr, size, tb, &old) == 0) {
        set_mem_raw();
    }
    pthread_mutex_unlock(&ht_raw_lock);
}

/* ---- user domains ----------------------------------------------------------- */

/* The table of a domain, created on demand when create is set.  Raw lock
 * held.  NULL if absent (or out of memory). */
static ht_table *
domain_table(unsigned int domain, int create)
{
    if (domain == 0) {
        return &raw_traces;
    }
    for (size_t i = 0; i < ndomains; i++) {
        if (domains[i].domain == domain) {
            return &domains[i].table;
        }
    }
    if (!create) {
        return NULL;
    }
    ht_domain_table *d = ht_realloc(domains, (ndomains + 1) * sizeof(*d));
    if (d == NULL) {
        return NULL;
    }
    domains = d;
    d[ndomains].domain = domain;
    ht_table_init(&d[ndomains].table);
    d[ndomains].table.interval = sampling_interval;
    return &d[ndomains++].table;
}

/* Domain 0 is one table in the standard module; heaptrace keeps the blocks
 * of the MEM/OBJ domains (GIL) apart from those of RAW (raw lock).  Tracking
 * or untracking an address of domain 0 must act on whichever holds it, so
 * it takes the GIL first, as the standard module's PyTraceMalloc_Track does
 * (lock order: GIL, then raw lock).  With the main GIL held, a tracked
 * block goes to the GIL table, where a later free of that address finds
 * it; an address the RAW table held is dropped from there. */
static int
track_locked(unsigned int domain, uintptr_t ptr, size_t size)
{
    ht_table *t = domain_table(domain, 1);
    if (t == NULL) {
        return -1;
    }
    uint32_t tb = capture_any();
    if (domain == HT_NATIVE_DOMAIN
        && atomic_load_explicit(&native_frames, memory_order_relaxed)) {
        tb = ht_nstack_intern(tb, NULL, 0);
    }
    size_t old;
    if (ht_table_put(t, ptr, size, tb, &old) < 0) {
        return -1;
    }
    if (domain != HT_NATIVE_DOMAIN) {
        /* Reported memory that came from malloc (NumPy's data): counted
         * once, in the domain it was reported in. */
        drop_native_locked(ptr);
    }
    set_mem_raw();
    return 0;
}

static void
untrack_locked(unsigned int domain, uintptr_t ptr)
{
    ht_table *t = domain_table(domain, 0);
    size_t size;
    if (t != NULL && ht_table_remove(t, ptr, &size)) {
        set_mem_raw();
    }
}

int
ht_tracer_track(unsigned int domain, uintptr_t ptr, size_t size)
{
    if (!atomic_load_explicit(&tracing, memory_order_relaxed)) {
        return -2;
    }
    if (!ht_hooks_sample(size)) {
        /* Sampled tracing, and this block is not in the sample: it still
         * replaces any trace of its address. */
        return ht_tracer_untrack(domain, ptr);
    }
    PyGILState_STATE gil = 0;
    PyThreadState *ts = NULL;
    if (domain == 0) {
        gil = PyGILState_Ensure();
        ts = ht_compat_holder_tstate();
    }
    int rc = -2;
    pthread_mutex_lock(&ht_raw_lock);
    if (atomic_load_explicit(&tracing, memory_order_relaxed)) {
        if (ts != NULL) {
            untrack_locked(0, ptr);
            drop_native_locked(ptr);
            rc = 0;
        }
        else {
            rc = track_locked(domain, ptr, size);
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
    if (ts != NULL && rc == 0) {
        /* (Tracing cannot stop meanwhile: stop() needs the GIL.) */
        rc = ht_tracer_add_gil(ts, (void *)ptr, size);
    }
    if (domain == 0) {
        PyGILState_Release(gil);
    }
    return rc;
}

int
ht_tracer_untrack(unsigned int domain, uintptr_t ptr)
{
    if (!atomic_load_explicit(&tracing, memory_order_relaxed)) {
        return -2;
    }
    PyGILState_STATE gil = 0;
    int rc = -2;
    if (domain == 0) {
        gil = PyGILState_Ensure();
        if (ht_compat_holder_tstate() != NULL
            && atomic_load_explicit(&tracing, memory_order_relaxed)) {
            size_t size;
            if (ht_table_remove(&gil_traces, ptr, &size)) {
                set_mem_gil();
            }
        }
    }
    pthread_mutex_lock(&ht_raw_lock);
    if (atomic_load_explicit(&tracing, memory_order_relaxed)) {
        untrack_locked(domain, ptr);
        rc = 0;
    }
    pthread_mutex_unlock(&ht_raw_lock);
    if (domain == 0) {
        PyGILState_Release(gil);
    }
    return rc;
}

/* ---- native blocks (native.c) ---------------------------------------------- */

int
ht_tracer_add_native(void *ptr, size_t size, const uintptr_t *ips, int nips)
{
    int rc = 0;
    pthread_mutex_lock(&ht_raw_lock);
    if (atomic_load_explicit(&native_on, memory_order_relaxed)) {
        rc = -1;
        ht_table *t = domain_table(HT_NATIVE_DOMAIN, 1);
        if (t != NULL) {
            uint32_t tb = capture_any();
            if (atomic_load_explicit(&native_frames, memory_order_relaxed)) {
                tb = ht_nstack_intern(tb, ips, nips < 0 ? 0 : nips);
            }
            size_t old;
            rc = ht_table_put(t, (uintptr_t)ptr, size, tb, &old);
        }
        if (rc == 0) {
            set_mem_raw();
        }
        else {
            native_lost++;
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return rc;
}

int
ht_tracer_take_native(void *ptr, size_t *size, uint32_t *tb)
{
    ht_trace_out out;
    int found = 0;
    pthread_mutex_lock(&ht_raw_lock);
    ht_table *t = domain_table(HT_NATIVE_DOMAIN, 0);
    if (t != NULL && ht_table_get(t, (uintptr_t)ptr, &out)) {
        size_t removed;
        ht_table_remove(t, (uintptr_t)ptr, &removed);
        set_mem_raw();
        *size = out.size;
        *tb = out.tb;
        found = 1;
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return found;
}

void
ht_tracer_remove_native(void *ptr)
{
    pthread_mutex_lock(&ht_raw_lock);
    ht_table *t = domain_table(HT_NATIVE_DOMAIN, 0);
    size_t size;
    if (t != NULL && ht_table_remove(t, (uintptr_t)ptr, &size)) {
        set_mem_raw();
    }
    pthread_mutex_unlock(&ht_raw_lock);
}

void
ht_tracer_put_back_native(void *ptr, size_t size, uint32_t tb)
{
    pthread_mutex_lock(&ht_raw_lock);
    if (atomic_load_explicit(&native_on, memory_order_relaxed)) {
        ht_table *t = domain_table(HT_NATIVE_DOMAIN, 1);
        size_t old;
        if (t != NULL && ht_table_put(t, (uintptr_t)ptr, size, tb, &old) == 0) {
            set_mem_raw();
        }
        else {
            native_lost++;
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
}

void
ht_tracer_native(int on)
{
    pthread_mutex_lock(&ht_raw_lock);
    atomic_store(&native_on, on && atomic_load(&tracing));
    pthread_mutex_unlock(&ht_raw_lock);
}

int
ht_tracer_native_frames(int on)
{
    int rc = 0;
    pthread_mutex_lock(&ht_raw_lock);
    ht_table *t = domain_table(HT_NATIVE_DOMAIN, 0);
    int was = atomic_load(&native_frames);
    if (on && !was) {
        if (t != NULL && ht_table_len(t) != 0) {
            rc = -2;
        }
        else if (ht_nstack_setup() < 0) {
            rc = -1;
        }
        else {
            atomic_store(&native_frames, 1);
        }
    }
    else if (!on && was) {
        if (t != NULL && ht_table_len(t) != 0) {
            rc = -2;
        }
        else {
            atomic_store(&native_frames, 0);
            ht_nstack_clear();
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return rc;
}

int
ht_tracer_native_frames_on(void)
{
    return atomic_load_explicit(&native_frames, memory_order_relaxed);
}

int
ht_tracer_native_on(void)
{
    return atomic_load(&native_on);
}

size_t
ht_tracer_native_lost(void)
{
    pthread_mutex_lock(&ht_raw_lock);
    size_t n = native_lost;
    pthread_mutex_unlock(&ht_raw_lock);
    return n;
}

/* ---- lifecycle ------------------------------------------------------------- */

/* Forget every trace and traceback.  GIL held.  The references the intern
 * tables held are released after the raw lock is dropped, because freeing a
 * code object runs the hooks. */
static void
clear_all(void)
{
    ht_garbage garbage;
    pthread_mutex_lock(&ht_raw_lock);
    ht_table_clear(&gil_traces);
    ht_table_clear(&raw_traces);
    for (size_t i = 0; i < ndomains; i++) {
        ht_table_clear(&domains[i].table);
    }
    free(domains);
    domains = NULL;
    ndomains = 0;
    ht_sample_filter_clear();
    ht_intern_clear(&garbage);
    if (atomic_load(&native_frames) && ht_nstack_setup() < 0) {
        /* No room for even the first stack and pair: frames go, the
         * native blocks stay traced (with plain traceback ids). */
        atomic_store(&native_frames, 0);
    }
    native_lost = 0;
    atomic_store(&mem_gil, 0);
    atomic_store(&mem_raw, 0);
    atomic_store(&mem_peak, 0);
    generation++;
    pthread_mutex_unlock(&ht_raw_lock);
    ht_garbage_release(&garbage);
}

int
ht_tracer_start(int nframe)
{
    if (atomic_load(&tracing)) {
        return 0;
    }
    pthread_mutex_lock(&ht_raw_lock);
    int rc = ht_intern_setup(nframe);
    if (rc == 0) {
        nframe_limit = nframe;
        gil_traces.interval = raw_traces.interval = sampling_interval;
        atomic_store(&tracing, 1);
    }
    pthread_mutex_unlock(&ht_raw_lock);
    if (rc < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ht_hooks_sampling(sampling_interval, sampling_seeded, sampling_seed);
    ht_hooks_install();
    ht_hooks_record(1);
    (void)ht_pytrack_install();     /* best effort: see _pytrack_status() */
    return 0;
}

int
ht_tracer_set_sampling(uint64_t interval, int seeded, uint64_t seed)
{
    if (atomic_load(&tracing)) {
        return -1;
    }
    pthread_mutex_lock(&ht_raw_lock);
    sampling_interval = interval;
    sampling_seeded = seeded;
    sampling_seed = seed;
    pthread_mutex_unlock(&ht_raw_lock);
    return 0;
}

uint64_t
ht_tracer_sampling_interval(void)
{
    return sampling_interval;
}

void
ht_tracer_stop(void)
{
    if (!atomic_load(&tracing)) {
        return;
    }
    ht_hooks_record(0);
    ht_hooks_uninstall();
    ht_pytrack_uninstall();
    ht_native_stop();
    pthread_mutex_lock(&ht_raw_lock);
    atomic_store(&tracing, 0);
    atomic_store(&native_on, 0);
    atomic_store(&native_frames, 0);
    ht_nstack_clear();
    pthread_mutex_unlock(&ht_raw_lock);
    clear_all();
}

int
ht_tracer_check(void)
{
    if (!atomic_load(&tracing)) {
        return 0;
    }
    /* CPython itself swaps the RAW allocator for the default one for a
     * moment while it makes or deletes an interpreter (another thread may
     * be doing so, under a GIL of its own): look again a few times, for up
     * to about 10 ms, before concluding that the hooks are gone. */
    for (int attempt = 0; attempt < 50; attempt++) {
        if (ht_hooks_reached() == HT_HOOKS_ALL) {
            return 0;
        }
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    /* Another tool took the hooks out (it put back allocators it saved
     * before heaptrace started): nothing is seen any more. */
    ht_tracer_stop();
    return PyErr_WarnEx(PyExc_RuntimeWarning,
                        "heaptrace stopped tracing: another tool (such as "
                        "tracemalloc.stop()) removed its allocator hooks",
                        1);
}

int
ht_tracer_is_tracing(void)
{
    return atomic_load(&tracing);
}

int
ht_tracer_nframe(void)
{
    return nframe_limit;
}

void
ht_tracer_clear(void)
{
    if (!atomic_load(&tracing)) {
        return;
    }
    clear_all();
}

void
ht_tracer_traced_memory(size_t *current, size_t *peak)
{
    if (!atomic_load(&tracing)) {
        *current = *peak = 0;
        return;
    }
    pthread_mutex_lock(&ht_raw_lock);
    *current = atomic_load(&mem_gil) + atomic_load(&mem_raw);
    *peak = atomic_load(&mem_peak);
    pthread_mutex_unlock(&ht_raw_lock);
    if (*peak < *current) {
        *peak = *current;
    }
}

void
ht_tracer_reset_peak(void)
{
    if (!atomic_load(&tracing)) {
        return;
    }
    pthread_mutex_lock(&ht_raw_lock);
    atomic_store(&mem_peak, atomic_load(&mem_gil) + atomic_load(&mem_raw));
    pthread_mutex_unlock(&ht_raw_lock);
}

size_t
ht_tracer_self_memory(void)
{
    pthread_mutex_lock(&ht_raw_lock);
    size_t n = ht_table_memory(&gil_traces) + ht_table_memory(&raw_traces);
    for (size_t i = 0; i < ndomains; i++) {
        n += ht_table_memory(&domains[i].table) + sizeof(ht_domain_table);
    }
    n += ht_intern_memory() + ht_nstack_memory();
    pthread_mutex_unlock(&ht_raw_lock);
    return n;
}

uint64_t
ht_tracer_generation(void)
{
    return generation;
}

int
ht_tracer_get_gil(uintptr_t ptr, size_t *size, uint32_t *tb)
{
    ht_trace_out out;
    if (!atomic_load(&tracing) || !ht_table_get(&gil_traces, ptr, &out)) {
        return 0;
    }
    *size = out.size;
    *tb = out.tb;
    return 1;
}

void
ht_tracer_retrace_gil(PyThreadState *ts, uintptr_t ptr)
{
    ht_trace_out out;
    if (!atomic_load_explicit(&tracing, memory_order_relaxed)
        || !ht_table_get(&gil_traces, ptr, &out)) {
        return;
    }
    uint32_t tb = ht_intern_capture_gil(ts);
    size_t old;
    /* Same address and size: the put replaces the slot and cannot grow. */
    (void)ht_table_put(&gil_traces, ptr, out.size, tb, &old);
}

int
ht_tracer_lookup(unsigned int domain, uintptr_t ptr, uint32_t *tb)
{
    ht_trace_out out;
    if (!atomic_load(&tracing)) {
        return 0;
    }
    if (domain == 0 && ht_table_get(&gil_traces, ptr, &out)) {
        *tb = out.tb;
        return 1;
    }
    int found = 0;
    pthread_mutex_lock(&ht_raw_lock);
    ht_table *t = domain_table(domain, 0);
    if (t != NULL && ht_table_get(t, ptr, &out)) {
        *tb = out.tb;
        if (domain == HT_NATIVE_DOMAIN
            && atomic_load_explicit(&native_frames, memory_order_relaxed)) {
            uint32_t stack;
            ht_nstack_pair(out.tb, tb, &stack);
        }
        found = 1;
    }
    pthread_mutex_unlock(&ht_raw_lock);
    return found;
}

void
ht_export_free(ht_export *e)
{
    free(e->domain);
    free(e->size);
    free(e->tb);
    free(e->nstack);
    memset(e, 0, sizeof(*e));
}

int
ht_tracer_export(ht_export *out)
{
    memset(out, 0, sizeof(*out));
    /* Nothing below allocates through Python, so the GIL table cannot change
     * while it is copied; the raw lock freezes the others.  Not tracing (a
     * stop() may have come from another thread just now): no traces, as
     * the standard module's _get_traces() then says. */
    pthread_mutex_lock(&ht_raw_lock);
    int on = atomic_load(&tracing);
    size_t total = 0;
    if (on) {
        total = ht_table_len(&gil_traces) + ht_table_len(&raw_traces);
        for (size_t i = 0; i < ndomains; i++) {
            total += ht_table_len(&domains[i].table);
        }
    }
    size_t rows = total ? total : 1;
    out->domain = ht_malloc(rows * sizeof(uint32_t));
    out->size = ht_malloc(rows * sizeof(uint64_t));
    out->tb = ht_malloc(rows * sizeof(uint32_t));
    int frames = on && atomic_load(&native_frames);
    if (frames) {
        out->nstack = ht_calloc(rows, sizeof(uint32_t));
    }
    if (out->domain == NULL || out->size == NULL || out->tb == NULL
        || (frames && out->nstack == NULL)) {
        pthread_mutex_unlock(&ht_raw_lock);
        ht_export_free(out);
        PyErr_NoMemory();
        return -1;
    }
    size_t k = 0;
    if (on) {
        k = ht_table_export(&gil_traces, 0, out->domain, out->size, out->tb);
        k += ht_table_export(&raw_traces, 0, out->domain + k, out->size + k, out->tb + k);
        for (size_t i = 0; i < ndomains; i++) {
            size_t first = k;
            k += ht_table_export(&domains[i].table, domains[i].domain,
                                 out->domain + k, out->size + k, out->tb + k);
            if (frames && domains[i].domain == HT_NATIVE_DOMAIN) {
                /* Native trace ids back to (traceback id, stack id). */
                for (size_t j = first; j < k; j++) {
                    ht_nstack_pair(out->tb[j], &out->tb[j], &out->nstack[j]);
                }
            }
        }
    }
    pthread_mutex_unlock(&ht_raw_lock);
    out->n = k;
    return 0;
}

/* ---- fork ------------------------------------------------------------------ */

/* Hold the raw lock across fork() so that the child does not inherit it
 * locked by a thread that does not exist there; the forking thread holds the
 * GIL, so the GIL tables are consistent too.  The child goes on tracing. */
static void fork_prepare(void) { pthread_mutex_lock(&ht_raw_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&ht_raw_lock); }
static void
fork_child(void)
{
    pthread_mutex_unlock(&ht_raw_lock);
    ht_hooks_sampling_forked();
}

int
ht_tracer_init_once(void)
{
    static int done;
    if (done) {
        return 0;
    }
    if (pthread_atfork(fork_prepare, fork_parent, fork_child) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "heaptrace: pthread_atfork failed");
        return -1;
    }
    ht_table_init(&gil_traces);
    ht_table_init(&raw_traces);
    done = 1;
    return 0;
}
