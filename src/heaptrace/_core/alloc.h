/* alloc.h: heaptrace's own memory.
 *
 * Every table of the tracer lives in memory taken straight from libc, never
 * through a Python allocator: the hooks sit inside those allocators, so using
 * them would recurse, and the tracer's memory must not show up in its own
 * traces.  All of it goes through these wrappers so that the out-of-memory
 * tests can make the tracer's tables fail to grow: a build with
 * HT_FAULT_INJECTION defined has a countdown (set from Python with
 * heaptrace._core._fail_allocations) after which every wrapper returns NULL.
 */
#ifndef HT_ALLOC_H
#define HT_ALLOC_H

#include <stdlib.h>

#ifdef HT_FAULT_INJECTION
#include <stdatomic.h>
/* Number of allocations left before they start failing; negative: never.
 * Atomic because hooks of every thread consult it. */
extern _Atomic long ht_fault_countdown;

static inline int
ht_fault_now(void)
{
    long left = atomic_load_explicit(&ht_fault_countdown, memory_order_relaxed);
    if (left < 0) {
        return 0;
    }
    if (left == 0) {
        return 1;
    }
    atomic_fetch_sub_explicit(&ht_fault_countdown, 1, memory_order_relaxed);
    return 0;
}
#else
static inline int ht_fault_now(void) { return 0; }
#endif

/* Like malloc/calloc/realloc; NULL on failure (real or injected), in which
 * case nothing was allocated and, for ht_realloc, p is untouched. */
static inline void *
ht_malloc(size_t n)
{
    return ht_fault_now() ? NULL : malloc(n);
}

static inline void *
ht_calloc(size_t n, size_t size)
{
    return ht_fault_now() ? NULL : calloc(n, size);
}

static inline void *
ht_realloc(void *p, size_t n)
{
    return ht_fault_now() ? NULL : realloc(p, n);
}

/* Make room for need elements of esize bytes in the array *arr of *cap
 * elements, doubling (from 64).  0, or -1 when out of memory (or the size
 * would overflow), with *arr and *cap untouched. */
static inline int
ht_grow(void **arr, size_t *cap, size_t need, size_t esize)
{
    if (need <= *cap) {
        return 0;
    }
    size_t n = *cap ? *cap : 64;
    while (n < need) {
        if (n > ((size_t)-1 / 2) / esize) {
            return -1;
        }
        n *= 2;
    }
    if (n > (size_t)-1 / esize) {
        return -1;
    }
    void *p = ht_realloc(*arr, n * esize);
    if (p == NULL) {
        return -1;
    }
    *arr = p;
    *cap = n;
    return 0;
}

#endif /* HT_ALLOC_H */
