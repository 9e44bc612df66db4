/* nstack.c: capture and interning of native call paths (see nstack.h).
 *
 * Capture: glibc's backtrace(), which walks the DWARF call frame
 * information through libgcc_s's unwinder, so libraries built without
 * frame pointers are followed too.  It is called once by
 * ht_nstack_prepare, outside any hook, so that the dlopen of libgcc_s and
 * the unwinder's own first-use allocations happen there.  Inside a hook
 * the unwinder may still take the dynamic loader's lock (to find the
 * object of an address), which is why capture happens before the raw lock
 * is taken.  Frames inside heaptrace's own object (the hook and what it
 * calls) are dropped from the innermost end.
 *
 * Interning: two open-addressing tables, both protected by the tracer's
 * raw lock (tracer.h) and fed from libc memory (alloc.h):
 *   - stacks: address arrays by value -> stack id (dense from 0; stack 0 is
 *     the empty one);
 *   - pairs: (traceback id, stack id) -> native trace id (dense from 0;
 *     pair 0 is (HT_TB_UNKNOWN, 0)).
 */
#define _GNU_SOURCE 1
#include "nstack.h"
#include "intern.h"
#include "alloc.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#  define HT_NSTACK_CACHE 1
#  include <unwind.h>
#else
#  define HT_NSTACK_CACHE 0
#endif

/* ---- capture ------------------------------------------------------------- */

/* heaptrace's own object, [own_lo, own_hi): written by ht_nstack_prepare
 * with the GIL held before native frames are switched on (the switch is
 * written under the raw lock, which orders it); read-only afterwards. */
static uintptr_t own_lo, own_hi;

/* Frames of heaptrace itself that may precede the caller's (the hook,
 * record(), this function, backtrace's own frame). */
#define OWN_SLACK 8

typedef struct {
    uintptr_t base;
    uintptr_t lo, hi;
} own_range;

static int
find_own(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    own_range *r = data;
    if ((uintptr_t)info->dlpi_addr != r->base) {
        return 0;
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) {
            continue;
        }
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        uintptr_t hi = lo + ph->p_memsz;
        if (r->lo == 0 || lo < r->lo) {
            r->lo = lo;
        }
        if (hi > r->hi) {
            r->hi = hi;
        }
    }
    return 1;
}

#if HT_NSTACK_CACHE
/* The last call path each thread captured, and where on its stack each of
 * its return addresses is stored.  Unwinding from the call frame
 * information is what native frames cost (about 100 ns a frame), and a C
 * loop calls malloc again and again from the same place: if the capture
 * starts at the same stack address and every remembered slot still holds
 * the same return address, the path is the same (each frame's layout
 * follows from its code address, so by induction from the innermost frame
 * the frames, their call sites and their slots are the same), and the
 * addresses are reused without unwinding.  x86-64 only, where the return
 * address into a frame sits just below the canonical frame address of the
 * frame it called.
 *
 * Per thread, through a pointer in initial-exec TLS (8 bytes: the static
 * TLS left for dlopen'ed objects is small), to a block from libc freed by
 * a thread-exit destructor (pthread key, whose values need no allocation
 * for the first keys of a process). */
#define HT_NSTACK_WALK (HT_NSTACK_MAX + OWN_SLACK)
typedef struct {
    uintptr_t start;                    /* frame address of the capture */
    int n;                              /* addresses in ip */
    uintptr_t ip[HT_NSTACK_WALK];
    uintptr_t slot[HT_NSTACK_WALK];     /* where ip[k] is stored */
} ncache;
static _Thread_local ncache *tcache __attribute__((tls_model("initial-exec")));
static pthread_key_t cache_key;         /* written once by ht_nstack_prepare */
static int cache_ok;                    /* ditto: the key exists */

static void
cache_free(void *p)
{
    free(p);
}

#endif

int
ht_nstack_prepare(void)
{
    static int done;
    if (done) {
        return 0;
    }
    Dl_info info;
    if (dladdr((void *)&ht_nstack_capture, &info) == 0) {
        return -1;
    }
    /* dli_fbase is where the object starts; dlpi_addr its load bias.  For
     * a shared object whose first segment is at address 0 they agree; the
     * segments' own extent is what matters, so compare both ways. */
    own_range r = {(uintptr_t)info.dli_fbase, 0, 0};
    dl_iterate_phdr(find_own, &r);
    if (r.hi == 0) {
        /* Not found by bias: fall back to the function's neighbourhood
         * (the object's first byte to the function itself, plus the code
         * after it up to 1 MiB). */
        r.lo = (uintptr_t)info.dli_fbase;
        r.hi = (uintptr_t)&ht_nstack_capture + ((uintptr_t)1 << 20);
    }
    void *warm[4];
    if (backtrace(warm, 4) <= 0) {
        return -1;
    }
    own_lo = r.lo;
    own_hi = r.hi;
#if HT_NSTACK_CACHE
    cache_ok = pthread_key_create(&cache_key, cache_free) == 0;
#endif
    done = 1;
    return 0;
}

/* Keep the caller's addresses: drop everything up to heaptrace's outermost
 * frame among the first few (the hook, record(), this function; and a
 * frame of a runtime that intercepts backtrace(), such as a sanitizer's,
 * before them). */
static int
keep_callers(const uintptr_t *buf, int n, uintptr_t *ips)
{
    int skip = 0;
    for (int i = 0; i < n && i < OWN_SLACK; i++) {
        if (buf[i] >= own_lo && buf[i] < own_hi) {
            skip = i + 1;
        }
    }
    int k = 0;
    for (int i = skip; i < n && k < HT_NSTACK_MAX; i++) {
        ips[k++] = buf[i];
    }
    return k;
}

#if HT_NSTACK_CACHE
typedef struct {
    ncache *c;
    int n;
} walk_state;

static _Unwind_Reason_Code
on_frame(struct _Unwind_Context *ctx, void *data)
{
    walk_state *w = data;
    if (w->n >= HT_NSTACK_WALK) {
        return _URC_END_OF_STACK;
    }
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);
    if (ip == 0) {
        return _URC_END_OF_STACK;
    }
    uintptr_t cfa = (uintptr_t)_Unwind_GetCFA(ctx);
    if (cfa < 8) {
        return _URC_END_OF_STACK;
    }
    /* backtrace() reports return addresses; so do we.  (The context's CFA
     * is that of the frame just left: the return address into this frame
     * is stored just below it.) */
    w->c->ip[w->n] = ip;
    w->c->slot[w->n] = cfa - 8;
    w->n++;
    return _URC_NO_REASON;
}

static int
cache_valid(const ncache *c, uintptr_t start)
{
    if (c->start != start || c->n == 0) {
        return 0;
    }
    for (int k = 0; k < c->n; k++) {
        if (c->slot[k] <= start) {
            /* A frame of the unwinder itself, below this function's: gone
             * by now, and the same code each time (its addresses are
             * heaptrace's, dropped from every path). */
            continue;
        }
        if (*(const uintptr_t *)c->slot[k] != c->ip[k]) {
            return 0;
        }
    }
    return 1;
}

int
ht_nstack_capture(uintptr_t *ips)
{
    ncache *c = tcache;
    if (c == NULL && cache_ok) {
        c = calloc(1, sizeof(*c));
        if (c != NULL && pthread_setspecific(cache_key, c) != 0) {
            free(c);
            c = NULL;
        }
        tcache = c;
    }
    if (c == NULL) {
        uintptr_t buf[HT_NSTACK_WALK];
        int n = backtrace((void **)buf, HT_NSTACK_WALK);
        return keep_callers(buf, n, ips);
    }
    uintptr_t start = (uintptr_t)__builtin_frame_address(0);
    if (!cache_valid(c, start)) {
        walk_state w = {c, 0};
        _Unwind_Backtrace(on_frame, &w);
        c->n = w.n;
        c->start = start;
    }
    return keep_callers(c->ip, c->n, ips);
}
#else
int
ht_nstack_capture(uintptr_t *ips)
{
    uintptr_t buf[HT_NSTACK_MAX + OWN_SLACK];
    int n = backtrace((void **)buf, HT_NSTACK_MAX + OWN_SLACK);
    return keep_callers(buf, n, ips);
}
#endif

/* ---- interning (raw lock) ------------------------------------------------ */

static uintptr_t *ips_arena;     /* every stack's addresses, back to back */
static size_t ips_len, ips_cap;
static uint32_t *stack_off;      /* nstacks + 1 offsets into ips_arena */
static uint32_t nstacks, stack_cap;
static uint32_t *stack_slots;    /* hash -> stack id + 1 (0 = empty) */
static uint32_t stack_mask;      /* slots - 1, 0 before setup */

static uint32_t *pair_tb, *pair_stack;
static uint32_t npairs, pair_cap;
static uint32_t *pair_slots;     /* hash -> pair id + 1 (0 = empty) */
static uint32_t pair_mask;

static uint64_t
hash_ips(const uintptr_t *ips, int n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
    for (int i = 0; i < n; i++) {
        h = (h ^ (uint64_t)ips[i]) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

static uint64_t
hash_pair(uint32_t tb, uint32_t stack)
{
    uint64_t h = ((uint64_t)tb << 32 | stack) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 31);
}

static int
stack_equal(uint32_t id, const uintptr_t *ips, int n)
{
    uint32_t lo = stack_off[id], hi = stack_off[id + 1];
    return hi - lo == (uint32_t)n
           && (n == 0 || memcmp(ips_arena + lo, ips, (size_t)n * sizeof(*ips)) == 0);
}

/* Rebuild a slot table of twice the size.  -1 when out of memory (the old
 * one stays). */
static int
rehash_stacks(void)
{
    uint32_t mask = stack_mask ? stack_mask * 2 + 1 : 255;
    uint32_t *slots = ht_calloc((size_t)mask + 1, sizeof(uint32_t));
    if (slots == NULL) {
        return -1;
    }
    for (uint32_t id = 0; id < nstacks; id++) {
        uint32_t lo = stack_off[id];
        uint64_t h = hash_ips(ips_arena + lo, (int)(stack_off[id + 1] - lo));
        uint32_t i = (uint32_t)h & mask;
        while (slots[i] != 0) {
            i = (i + 1) & mask;
        }
        slots[i] = id + 1;
    }
    free(stack_slots);
    stack_slots = slots;
    stack_mask = mask;
    return 0;
}

static int
rehash_pairs(void)
{
    uint32_t mask = pair_mask ? pair_mask * 2 + 1 : 255;
    uint32_t *slots = ht_calloc((size_t)mask + 1, sizeof(uint32_t));
    if (slots == NULL) {
        return -1;
    }
    for (uint32_t id = 0; id < npairs; id++) {
        uint32_t i = (uint32_t)hash_pair(pair_tb[id], pair_stack[id]) & mask;
        while (slots[i] != 0) {
            i = (i + 1) & mask;
        }
        slots[i] = id + 1;
    }
    free(pair_slots);
    pair_slots = slots;
    pair_mask = mask;
    return 0;
}

/* Stack id of ips[0..n), or 0 (the empty stack) when it cannot be stored. */
static uint32_t
intern_stack(const uintptr_t *ips, int n)
{
    if (n <= 0 || stack_slots == NULL) {
        return 0;
    }
    uint64_t h = hash_ips(ips, n);
    uint32_t i = (uint32_t)h & stack_mask;
    for (; stack_slots[i] != 0; i = (i + 1) & stack_mask) {
        if (stack_equal(stack_slots[i] - 1, ips, n)) {
            return stack_slots[i] - 1;
        }
    }
    if ((nstacks + 1) * 4u >= (stack_mask + 1) * 3u) {    /* load 3/4 */
        if (stack_mask >= (UINT32_MAX >> 2) || rehash_stacks() < 0) {
            return 0;
        }
        i = (uint32_t)h & stack_mask;
        while (stack_slots[i] != 0) {
            i = (i + 1) & stack_mask;
        }
    }
    size_t cap = stack_cap;
    if (ips_len + (size_t)n > UINT32_MAX
        || ht_grow((void **)&ips_arena, &ips_cap, ips_len + (size_t)n, sizeof(uintptr_t)) < 0
        || ht_grow((void **)&stack_off, &cap, (size_t)nstacks + 2, sizeof(uint32_t)) < 0) {
        return 0;
    }
    stack_cap = (uint32_t)cap;
    memcpy(ips_arena + ips_len, ips, (size_t)n * sizeof(*ips));
    ips_len += (size_t)n;
    uint32_t id = nstacks++;
    stack_off[nstacks] = (uint32_t)ips_len;
    stack_slots[i] = id + 1;
    return id;
}

static uint32_t
intern_pair(uint32_t tb, uint32_t stack)
{
    if (pair_slots == NULL) {
        return 0;
    }
    uint64_t h = hash_pair(tb, stack);
    uint32_t i = (uint32_t)h & pair_mask;
    for (; pair_slots[i] != 0; i = (i + 1) & pair_mask) {
        uint32_t id = pair_slots[i] - 1;
        if (pair_tb[id] == tb && pair_stack[id] == stack) {
            return id;
        }
    }
    if ((npairs + 1) * 4u >= (pair_mask + 1) * 3u) {
        if (pair_mask >= (UINT32_MAX >> 2) || rehash_pairs() < 0) {
            return 0;
        }
        i = (uint32_t)h & pair_mask;
        while (pair_slots[i] != 0) {
            i = (i + 1) & pair_mask;
        }
    }
    size_t cap_tb = pair_cap, cap_stack = pair_cap;
    if (ht_grow((void **)&pair_tb, &cap_tb, (size_t)npairs + 1, sizeof(uint32_t)) < 0
        || ht_grow((void **)&pair_stack, &cap_stack, (size_t)npairs + 1, sizeof(uint32_t)) < 0) {
        /* (Whichever grew keeps its larger size; the smaller is the cap.) */
        pair_cap = (uint32_t)(cap_tb < cap_stack ? cap_tb : cap_stack);
        return 0;
    }
    pair_cap = (uint32_t)cap_tb;
    uint32_t id = npairs++;
    pair_tb[id] = tb;
    pair_stack[id] = stack;
    pair_slots[i] = id + 1;
    return id;
}

void
ht_nstack_clear(void)
{
    free(ips_arena);
    free(stack_off);
    free(stack_slots);
    free(pair_tb);
    free(pair_stack);
    free(pair_slots);
    ips_arena = NULL;
    stack_off = NULL;
    stack_slots = pair_slots = NULL;
    pair_tb = pair_stack = NULL;
    ips_len = ips_cap = 0;
    nstacks = stack_cap = npairs = pair_cap = 0;
    stack_mask = pair_mask = 0;
}

int
ht_nstack_setup(void)
{
    ht_nstack_clear();
    size_t cap = 0;
    if (rehash_stacks() < 0 || rehash_pairs() < 0
        || ht_grow((void **)&stack_off, &cap, 2, sizeof(uint32_t)) < 0) {
        ht_nstack_clear();
        return -1;
    }
    stack_cap = (uint32_t)cap;
    /* Stack 0: the empty one (never in the slot table: intern_stack
     * answers 0 for n == 0 before looking). */
    stack_off[0] = stack_off[1] = 0;
    nstacks = 1;
    if (intern_pair(HT_TB_UNKNOWN, 0) != 0 || npairs != 1) {
        ht_nstack_clear();
        return -1;
    }
    return 0;
}

uint32_t
ht_nstack_intern(uint32_t tb, const uintptr_t *ips, int n)
{
    return intern_pair(tb, intern_stack(ips, n));
}

void
ht_nstack_pair(uint32_t id, uint32_t *tb, uint32_t *stack)
{
    if (id < npairs) {
        *tb = pair_tb[id];
        *stack = pair_stack[id];
    }
    else {
        *tb = HT_TB_UNKNOWN;
        *stack = 0;
    }
}

uint32_t
ht_nstack_count(void)
{
    return nstacks;
}

int
ht_nstack_get(uint32_t id, uintptr_t *ips)
{
    if (id >= nstacks) {
        return 0;
    }
    uint32_t lo = stack_off[id], hi = stack_off[id + 1];
    uint32_t n = hi - lo > HT_NSTACK_MAX ? HT_NSTACK_MAX : hi - lo;
    if (n > 0) {
        memcpy(ips, ips_arena + lo, (size_t)n * sizeof(*ips));
    }
    return (int)n;
}

size_t
ht_nstack_memory(void)
{
    return ips_cap * sizeof(uintptr_t)
        + (size_t)stack_cap * sizeof(uint32_t)
        + (stack_slots ? ((size_t)stack_mask + 1) * sizeof(uint32_t) : 0)
        + (size_t)pair_cap * 2 * sizeof(uint32_t)
        + (pair_slots ? ((size_t)pair_mask + 1) * sizeof(uint32_t) : 0);
}
