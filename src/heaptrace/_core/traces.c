/* traces.c: the live trace table.
 *
 * What makes a trace table fast is where its entries land.  A hash table
 * keyed by a well-mixed hash of the block address scatters neighbouring
 * blocks over the whole table, so once the table outgrows the caches every
 * allocation and every free pays a cache miss on it, even though the
 * allocator itself stays in cache (pymalloc hands out neighbouring addresses
 * one after the other, from 16 KiB pools).  Laying the table out by address
 * region instead keeps that locality:
 *
 *   region map:  (address >> 14)  ->  page          (open addressing)
 *   page:        offset in region ->  (size, tb)    (open addressing, 8 B/slot)
 *
 * A page holds the live blocks of one 16 KiB region (one pymalloc pool),
 * sized to how many there are: 8 to 2048 slots, grown by doubling, so
 * growing is bounded work inside a hook.  A block's home slot is its offset
 * scaled linearly onto the page, so blocks keep their address order and a
 * pool's consecutive blocks use consecutive slots: allocations and frees in
 * one pool touch the same few cache lines, in an order the hardware
 * prefetcher follows.  The pages used last are remembered, so most
 * operations skip the region map entirely; the region map has one entry per live
 * region, about a hundred times fewer than blocks, so it stays cached.
 *
 * Linear scaling piles blocks onto few home slots when they crowd into part
 * of a region (a pool still being filled from its start).  A page therefore
 * grows not only at 3/4 load but also when an insertion lands more than
 * HT_PAGE_PROBE slots from home.  At 2048 slots every 8-byte offset has a
 * home of its own, so probe sequences are bounded in every case.
 *
 * A slot packs the offset key (15 bits) and the size (17 bits) into one word
 * and the traceback id into another.  Blocks of 128 KiB and more are rare;
 * their size lives in a side map of big blocks.
 *
 * Pools empty and refill all the time, so a page whose last block goes is
 * kept (dormant) rather than freed, up to HT_DORMANT_MAX of them, oldest
 * evicted first; and a region's first page is sized from its first block's
 * size class, so a pool being filled grows its page once at most.
 *
 * Invariants: a region has a page iff it has a live block or its page is
 * one of the dormant ones (used == 0, linked in the dormant list); a page's
 * used counts its non-empty slots and stays at or below 3/4 of its
 * capacity; count and bytes are the number and total size of live blocks;
 * every entry of recent is NULL or a page in the region map; a slot whose size is HT_SIZE_BIG has an entry
 * in the big map and every big-map entry belongs to such a slot.
 */
#include "traces.h"
#include "alloc.h"
#include "sampling.h"

#include <string.h>

#define HT_REGION_MASK ((uintptr_t)(1u << HT_REGION_SHIFT) - 1)
#define HT_PAGE_MIN 8
#define HT_PAGE_MAX 2048     /* one slot per 8 bytes of region: no collisions */
#define HT_PAGE_PROBE 4      /* longer probes than this make a page grow */
#define HT_DORMANT_MAX 64    /* empty pages kept for their pool to refill */

/* ---- address maps (region map and big map) ---------------------------------- */

/* The region map is an open-addressing table of (region + 1, page) pairs
 * with linear probing and backward-shift deletion (a region number is an
 * address shifted right, so region + 1 never wraps to the empty key 0). */

static inline size_t
map_home(uintptr_t key, size_t mask)
{
    uint64_t x = (uint64_t)key * 0x9E3779B97F4A7C15ULL;
    return (size_t)((x ^ (x >> 29)) & mask);
}

static size_t
map_find(const ht_region *m, size_t mask, uintptr_t key1)
{
    size_t i = map_home(key1, mask);
    for (;;) {
        if (m[i].region1 == key1) {
            return i;
        }
        if (m[i].region1 == 0) {
            return (size_t)-1;
        }
        i = (i + 1) & mask;
    }
}

static void
map_place(ht_region *m, size_t mask, ht_region e)
{
    size_t i = map_home(e.region1, mask);
    while (m[i].region1 != 0) {
        i = (i + 1) & mask;
    }
    m[i] = e;
}

/* Make room for one more entry: 0, or -1 with nothing changed. */
static int
map_reserve(ht_region **m, size_t *mask, size_t n)
{
    size_t cap = *m ? *mask + 1 : 0;
    if (*m != NULL && (n + 1) * 2 <= cap) {
        return 0;
    }
    size_t ncap = cap ? cap * 2 : 64;
    ht_region *fresh = ht_calloc(ncap, sizeof(ht_region));
    if (fresh == NULL) {
        return -1;
    }
    for (size_t i = 0; i < cap; i++) {
        if ((*m)[i].region1 != 0) {
            map_place(fresh, ncap - 1, (*m)[i]);
        }
    }
    free(*m);
    *m = fresh;
    *mask = ncap - 1;
    return 0;
}

static void
map_delete(ht_region *m, size_t mask, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m[j].region1 == 0) {
            break;
        }
        size_t home = map_home(m[j].region1, mask);
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            m[i] = m[j];
            i = j;
        }
    }
    m[i].region1 = 0;
    m[i].page = NULL;
}

/* ---- big blocks --------------------------------------------------------------- */

/* The side map of big blocks is keyed by the address itself (any value,
 * the top of the address space included, as user domains may track any
 * integer); a slot is empty when its size is 0, which no big block has. */

static size_t
big_find(const ht_table *t, uintptr_t ptr)
{
    if (t->big == NULL) {
        return (size_t)-1;
    }
    size_t i = map_home(ptr, t->bmask);
    for (;;) {
        if (t->big[i].size == 0) {
            return (size_t)-1;
        }
        if (t->big[i].ptr == ptr) {
            return i;
        }
        i = (i + 1) & t->bmask;
    }
}

static void
big_place(ht_bigslot *m, size_t mask, ht_bigslot e)
{
    size_t i = map_home(e.ptr, mask);
    while (m[i].size != 0) {
        i = (i + 1) & mask;
    }
    m[i] = e;
}

static size_t
big_size(const ht_table *t, uintptr_t ptr)
{
    size_t i = big_find(t, ptr);
    return i == (size_t)-1 ? 0 : t->big[i].size;
}

static void
big_drop(ht_table *t, uintptr_t ptr)
{
    size_t i = big_find(t, ptr);
    if (i == (size_t)-1) {
        return;
    }
    /* Backward-shift deletion, as map_delete. */
    ht_bigslot *m = t->big;
    size_t mask = t->bmask;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m[j].size == 0) {
            break;
        }
        size_t home = map_home(m[j].ptr, mask);
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            m[i] = m[j];
            i = j;
        }
    }
    m[i].ptr = 0;
    m[i].size = 0;
    t->nbig--;
}

/* Store (or overwrite) the size (> 0) of a big block.  0, or -1 with
 * nothing changed. */
static int
big_set(ht_table *t, uintptr_t ptr, size_t size)
{
    size_t i = big_find(t, ptr);
    if (i != (size_t)-1) {
        t->big[i].size = size;
        return 0;
    }
    size_t cap = t->big ? t->bmask + 1 : 0;
    if (t->big == NULL || (t->nbig + 1) * 2 > cap) {
        size_t ncap = cap ? cap * 2 : 64;
        ht_bigslot *fresh = ht_calloc(ncap, sizeof(ht_bigslot));
        if (fresh == NULL) {
            return -1;
        }
        for (size_t k = 0; k < cap; k++) {
            if (t->big[k].size != 0) {
                big_place(fresh, ncap - 1, t->big[k]);
            }
        }
        free(t->big);
        t->big = fresh;
        t->bmask = ncap - 1;
    }
    ht_bigslot e = { ptr, size };
    big_place(t->big, t->bmask, e);
    t->nbig++;
    return 0;
}

/* ---- pages ------------------------------------------------------------------- */

static inline uint32_t
slot_key(const ht_slot *s)
{
    return s->key_size & ((1u << HT_KEY_BITS) - 1);
}

static inline uint32_t
slot_small_size(const ht_slot *s)
{
    return s->key_size >> HT_KEY_BITS;
}

static inline size_t
page_home(uint32_t key, uint32_t mask)
{
    /* Scale the offset linearly onto the page: blocks keep their address
     * order, so a pool's consecutive blocks use consecutive slots. */
    return (size_t)(((uint64_t)(key - 1) * (mask + 1)) >> HT_REGION_SHIFT);
}

/* Index of key's slot, or of the empty slot where its probe ends. */
static inline size_t
page_probe(const ht_page *p, uint32_t key)
{
    size_t i = page_home(key, p->mask);
    for (;;) {
        uint32_t k = slot_key(&p->slots[i]);
        if (k == key || k == 0) {
            return i;
        }
        i = (i + 1) & p->mask;
    }
}

static inline size_t
page_find(const ht_page *p, uint32_t key)
{
    size_t i = page_probe(p, key);
    return slot_key(&p->slots[i]) == key ? i : (size_t)-1;
}

/* Place a slot known to be absent; returns how far it landed from home. */
static size_t
page_place(ht_page *p, ht_slot s)
{
    size_t home = page_home(slot_key(&s), p->mask);
    size_t i = home;
    while (slot_key(&p->slots[i]) != 0) {
        i = (i + 1) & p->mask;
    }
    p->slots[i] = s;
    return (i - home) & p->mask;
}

static void
page_delete(ht_page *p, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & p->mask;
        uint32_t k = slot_key(&p->slots[j]);
        if (k == 0) {
            break;
        }
        size_t home = page_home(k, p->mask);
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            p->slots[i] = p->slots[j];
            i = j;
        }
    }
    p->slots[i].key_size = 0;
    p->slots[i].tb = 0;
}

static inline size_t
page_bytes(uint32_t cap)
{
    return sizeof(ht_page) + (size_t)cap * sizeof(ht_slot);
}

/* Capacity of a new page for a region whose first block has this size.  A
 * block pymalloc serves (512 bytes or less) says the region is a pool of
 * blocks of that size class: start with room for half a pool, so that a pool
 * being filled grows its page once or not at all. */
static uint32_t
initial_capacity(size_t size)
{
    if (size == 0 || size > 512) {
        return HT_PAGE_MIN;
    }
    size_t blocks = ((size_t)1 << HT_REGION_SHIFT) / ((size + 15) & ~(size_t)15);
    uint32_t cap = HT_PAGE_MIN;
    while ((size_t)cap * 3 / 4 < blocks / 2 && cap < HT_PAGE_MAX) {
        cap *= 2;
    }
    return cap;
}

static ht_page *
page_new(ht_table *t, uintptr_t region, uint32_t cap)
{
    ht_page *p = ht_calloc(1, page_bytes(cap));
    if (p == NULL) {
        return NULL;
    }
    p->region = region;
    p->mask = cap - 1;
    p->used = 0;
    p->newer = p->older = NULL;
    t->page_bytes += page_bytes(cap);
    return p;
}

static void
page_free(ht_table *t, ht_page *p)
{
    t->page_bytes -= page_bytes(p->mask + 1);
    free(p);
}

/* ---- dormant pages ------------------------------------------------------------ */

static void
dormant_unlink(ht_table *t, ht_page *p)
{
    if (p->newer != NULL) {
        p->newer->older = p->older;
    }
    else {
        t->dormant = p->older;
    }
    if (p->older != NULL) {
        p->older->newer = p->newer;
    }
    else {
        t->dormant_tail = p->newer;
    }
    p->newer = p->older = NULL;
    t->ndormant--;
}

/* Forget a region and free its page. */
static void
region_drop(ht_table *t, ht_page *p, size_t index)
{
    if (index == (size_t)-1) {
        index = map_find(t->regions, t->rmask, p->region + 1);
    }
    map_delete(t->regions, t->rmask, index);
    t->nregions--;
    if (t->recent[p->region % HT_RECENT] == p) {
        t->recent[p->region % HT_RECENT] = NULL;
    }
    page_free(t, p);
}

/* A page just became empty: keep it, newest first, and evict the oldest
 * dormant page beyond HT_DORMANT_MAX.  Pools empty and refill all the time;
 * rebuilding their pages would cost a rehash at every doubling. */
static void
dormant_push(ht_table *t, ht_page *p)
{
    p->older = t->dormant;
    p->newer = NULL;
    if (t->dormant != NULL) {
        t->dormant->newer = p;
    }
    else {
        t->dormant_tail = p;
    }
    t->dormant = p;
    t->ndormant++;
    if (t->ndormant > HT_DORMANT_MAX) {
        ht_page *victim = t->dormant_tail;
        dormant_unlink(t, victim);
        region_drop(t, victim, (size_t)-1);
    }
}

/* The page of a region, or NULL; *index is its slot in the region map, or
 * (size_t)-1 when it came from the recent pages. */
static inline ht_page *
find_page(ht_table *t, uintptr_t region, size_t *index)
{
    ht_page *last = t->recent[region % HT_RECENT];
    if (last != NULL && last->region == region) {
        *index = (size_t)-1;
        return last;
    }
    if (t->regions == NULL) {
        return NULL;
    }
    size_t i = map_find(t->regions, t->rmask, region + 1);
    if (i == (size_t)-1) {
        return NULL;
    }
    *index = i;
    t->recent[region % HT_RECENT] = t->regions[i].page;
    return t->regions[i].page;
}

/* Double a page's capacity.  Returns the new page (the old one is freed and
 * the region map updated), or NULL with nothing changed. */
static ht_page *
page_grow(ht_table *t, ht_page *p)
{
    ht_page *q = page_new(t, p->region, (p->mask + 1) * 2);
    if (q == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i <= p->mask; i++) {
        if (slot_key(&p->slots[i]) != 0) {
            page_place(q, p->slots[i]);
        }
    }
    q->used = p->used;
    size_t i = map_find(t->regions, t->rmask, p->region + 1);
    t->regions[i].page = q;
    if (t->recent[p->region % HT_RECENT] == p) {
        t->recent[p->region % HT_RECENT] = q;
    }
    page_free(t, p);
    return q;
}

/* ---- public API ---------------------------------------------------------------- */

void
ht_table_init(ht_table *t)
{
    memset(t, 0, sizeof(*t));
}

void
ht_table_clear(ht_table *t)
{
    if (t->regions != NULL) {
        for (size_t i = 0; i <= t->rmask; i++) {
            if (t->regions[i].region1 != 0) {
                free(t->regions[i].page);
            }
        }
    }
    free(t->regions);
    free(t->big);
    uint64_t interval = t->interval;
    ht_table_init(t);
    t->interval = interval;
}

_Atomic unsigned char ht_sample_filter[1u << HT_FILTER_BITS];

/* Whether the filter is pinned at 255 everywhere (exact tracing).  Written
 * with the GIL held (ht_sample_filter_pin); read by ht_sample_filter_clear,
 * which runs with the GIL held too. */
static int filter_pinned;

static void
filter_fill(unsigned char v)
{
    for (size_t i = 0; i < (1u << HT_FILTER_BITS); i++) {
        atomic_store_explicit(&ht_sample_filter[i], v, memory_order_relaxed);
    }
}

void
ht_sample_filter_clear(void)
{
    filter_fill(filter_pinned ? 255 : 0);
}

void
ht_sample_filter_pin(int on)
{
    filter_pinned = on;
    filter_fill(on ? 255 : 0);
}

static void
filter_add(uintptr_t ptr, int delta)
{
    _Atomic unsigned char *c = &ht_sample_filter[ht_filter_slot(ptr)];
    unsigned char v = atomic_load_explicit(c, memory_order_relaxed);
    while (v != 255 && !(delta < 0 && v == 0)
           && !atomic_compare_exchange_weak_explicit(c, &v, (unsigned char)(v + delta),
                                                     memory_order_relaxed,
                                                     memory_order_relaxed)) {
    }
}

int
ht_table_put(ht_table *t, uintptr_t ptr, size_t size, uint32_t tb,
             size_t *old_size)
{
    uintptr_t region = ptr >> HT_REGION_SHIFT;
    uint32_t key = (uint32_t)(ptr & HT_REGION_MASK) + 1;
    int big = size >= HT_SIZE_BIG;
    ht_slot s = { key | ((big ? HT_SIZE_BIG : (uint32_t)size) << HT_KEY_BITS), tb };
    size_t index;
    *old_size = (size_t)-1;

    ht_page *p = find_page(t, region, &index);
    size_t at = (size_t)-1;   /* where to insert, when known */
    if (p != NULL) {
        size_t i = page_probe(p, key);
        if (slot_key(&p->slots[i]) == key) {
            /* Replace: a free the tracer never saw, or a resize in place. */
            ht_slot *cur = &p->slots[i];
            /* Read the old size before big_set overwrites a big one. */
            size_t prev = slot_small_size(cur);
            int was_big = prev == HT_SIZE_BIG;
            if (was_big) {
                prev = big_size(t, ptr);
            }
            if (big && big_set(t, ptr, size) < 0) {
                return -1;
            }
            if (was_big && !big) {
                big_drop(t, ptr);
            }
            *old_size = prev;
            *cur = s;
            t->bytes += ht_sample_bytes(size, t->interval)
                        - ht_sample_bytes(prev, t->interval);
            return 0;
        }
        if ((p->used + 1) * 4 > (p->mask + 1) * 3) {
            p = page_grow(t, p);
            if (p == NULL) {
                return -1;
            }
        }
        else {
            at = i;
        }
        if (big && big_set(t, ptr, size) < 0) {
            return -1;
        }
        if (p->used == 0) {
            dormant_unlink(t, p);
        }
    }
    else {
        if (map_reserve(&t->regions, &t->rmask, t->nregions) < 0) {
            return -1;
        }
        p = page_new(t, region, initial_capacity(size));
        if (p == NULL) {
            return -1;
        }
        if (big && big_set(t, ptr, size) < 0) {
            page_free(t, p);
            return -1;
        }
        ht_region e = { region + 1, p };
        map_place(t->regions, t->rmask, e);
        t->nregions++;
        t->recent[region % HT_RECENT] = p;
    }
    size_t distance;
    if (at != (size_t)-1) {
        p->slots[at] = s;
        distance = (at - page_home(key, p->mask)) & p->mask;
    }
    else {
        distance = page_place(p, s);
    }
    p->used++;
    t->count++;
    t->bytes += ht_sample_bytes(size, t->interval);
    if (t->interval != 0) {
        filter_add(ptr, 1);
    }
    /* Blocks crowded into part of a region (a pool still being filled) pile
     * up on few home slots: give the page more resolution.  Failing to grow
     * only costs speed. */
    if (distance > HT_PAGE_PROBE && p->mask + 1 < HT_PAGE_MAX) {
        (void)page_grow(t, p);
    }
    return 0;
}

int
ht_table_remove(ht_table *t, uintptr_t ptr, size_t *size)
{
    uintptr_t region = ptr >> HT_REGION_SHIFT;
    uint32_t key = (uint32_t)(ptr & HT_REGION_MASK) + 1;
    size_t index;
    ht_page *p = find_page(t, region, &index);
    if (p == NULL) {
        return 0;
    }
    size_t i = page_find(p, key);
    if (i == (size_t)-1) {
        return 0;
    }
    size_t s = slot_small_size(&p->slots[i]);
    if (s == HT_SIZE_BIG) {
        s = big_size(t, ptr);
        big_drop(t, ptr);
    }
    page_delete(p, i);
    p->used--;
    t->count--;
    t->bytes -= ht_sample_bytes(s, t->interval);
    if (t->interval != 0) {
        filter_add(ptr, -1);
    }
    *size = s;
    if (p->used == 0) {
        dormant_push(t, p);
    }
    return 1;
}

int
ht_table_get(const ht_table *t, uintptr_t ptr, ht_trace_out *out)
{
    uintptr_t region = ptr >> HT_REGION_SHIFT;
    uint32_t key = (uint32_t)(ptr & HT_REGION_MASK) + 1;
    if (t->regions == NULL) {
        return 0;
    }
    size_t r = map_find(t->regions, t->rmask, region + 1);
    if (r == (size_t)-1) {
        return 0;
    }
    const ht_page *p = t->regions[r].page;
    size_t i = page_find(p, key);
    if (i == (size_t)-1) {
        return 0;
    }
    size_t s = slot_small_size(&p->slots[i]);
    out->ptr = ptr;
    out->size = s == HT_SIZE_BIG ? big_size(t, ptr) : s;
    out->tb = p->slots[i].tb;
    return 1;
}

size_t
ht_table_export(const ht_table *t, uint32_t domain, uint32_t *domains,
                uint64_t *sizes, uint32_t *tbs)
{
    size_t n = 0;
    if (t->regions == NULL) {
        return 0;
    }
    for (size_t r = 0; r <= t->rmask; r++) {
        const ht_page *p = t->regions[r].page;
        if (t->regions[r].region1 == 0 || p->used == 0) {
            continue;
        }
        uintptr_t base = p->region << HT_REGION_SHIFT;
        for (uint32_t i = 0; i <= p->mask; i++) {
            const ht_slot *s = &p->slots[i];
            uint32_t key = slot_key(s);
            if (key == 0) {
                continue;
            }
            size_t size = slot_small_size(s);
            domains[n] = domain;
            sizes[n] = size == HT_SIZE_BIG ? big_size(t, base + key - 1) : size;
            tbs[n] = s->tb;
            n++;
        }
    }
    return n;
}

size_t
ht_table_memory(const ht_table *t)
{
    size_t n = t->page_bytes;
    if (t->regions != NULL) {
        n += (t->rmask + 1) * sizeof(ht_region);
    }
    if (t->big != NULL) {
        n += (t->bmask + 1) * sizeof(ht_bigslot);
    }
    return n;
}
