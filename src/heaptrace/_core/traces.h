/* traces.h: the live trace table, address -> (size, traceback id).
 *
 * One table holds the blocks of one (domain, allocator family).  It does no
 * locking of its own: each table's owner says what protects it (tracer.h).
 * Memory comes straight from libc (alloc.h), never from a Python allocator,
 * so the table can be used inside the allocation hooks.
 */
#ifndef HT_TRACES_H
#define HT_TRACES_H

#include <stddef.h>
#include <stdint.h>

#define HT_REGION_SHIFT 14                    /* 16 KiB regions */
#define HT_RECENT 8                           /* entries of ht_table.recent */

/* A slot of a region page: 8 bytes.  key = (offset in region) + 1, 0 for
 * empty; size = the block size, or HT_SIZE_BIG when the real size (128 KiB
 * or more) is in the table's side map of big blocks. */
typedef struct {
    uint32_t key_size;     /* key in the low 15 bits, size in the high 17 */
    uint32_t tb;
} ht_slot;

#define HT_KEY_BITS 15
#define HT_SIZE_BIG ((1u << (32 - HT_KEY_BITS)) - 1)

/* The live blocks of one 16 KiB address region: a small open-addressing
 * table keyed by offset, grown by doubling (at most 2048 slots, so a resize
 * is bounded work). */
typedef struct ht_page {
    uintptr_t region;      /* address >> HT_REGION_SHIFT */
    uint32_t mask;         /* capacity - 1 */
    uint32_t used;
    /* While used == 0 the page is dormant: kept for the pool to refill,
     * linked in its table's list of dormant pages, newest first. */
    struct ht_page *newer, *older;
    ht_slot slots[];
} ht_page;

/* Region map: region -> page, open addressing, key region + 1. */
typedef struct {
    uintptr_t region1;     /* region + 1, 0 = empty */
    ht_page *page;
} ht_region;

/* Side map of big blocks: address -> size. */
typedef struct {
    uintptr_t ptr;
    size_t size;           /* 0 = empty (a big block has 128 KiB or more) */
} ht_bigslot;

typedef struct ht_table {
    ht_region *regions;    /* NULL until the first put */
    size_t rmask;
    size_t nregions;
    ht_bigslot *big;
    size_t bmask;
    size_t nbig;
    /* Pages used recently, by region number modulo HT_RECENT: allocations
     * alternate between the pools of a few size classes, and most
     * operations find their page here without touching the region map. */
    ht_page *recent[8];
    ht_page *dormant;      /* newest dormant page */
    ht_page *dormant_tail; /* oldest dormant page, evicted first */
    size_t ndormant;
    size_t count;          /* live blocks */
    size_t bytes;          /* sum of their sizes, each weighted by
                            * ht_sample_bytes (sampling.h) */
    uint64_t interval;     /* sampling interval that weights bytes, 0 when
                            * exact; set by the owner while the table is
                            * empty, kept by ht_table_clear */
    size_t page_bytes;     /* memory held by pages */
} ht_table;

/* A trace as read back. */
typedef struct {
    uintptr_t ptr;
    size_t size;
    uint32_t tb;
} ht_trace_out;

/* The filter of sampled tracing: one saturating counter per slot, a slot
 * standing for every 256-byte granule of the address space whose number
 * modulo the number of slots is its index, counting the blocks starting in
 * those granules held by tables with a sampling interval.  A free of a
 * block whose slot is 0 needs no table lookup: that is the cost of freeing
 * a block that was not sampled.  (Fine granules keep a sampled block from
 * sending the frees of its neighbours to the lookup; slots are shared once
 * the heap spans more than 16 MiB, and then a free is sent to the lookup
 * with a chance of about (sampled blocks) / 65536.)  Counters change with
 * relaxed atomics (the tables of the GIL and of the raw lock both count);
 * a counter that reaches 255 stays there.  Zeroed by ht_sample_filter_clear
 * when every sampled table is cleared at once; pinned at 255 while exact
 * tracing records (ht_sample_filter_pin). */
#include <stdatomic.h>
#define HT_FILTER_BITS 16
#define HT_FILTER_SHIFT 8
extern _Atomic unsigned char ht_sample_filter[1u << HT_FILTER_BITS];

static inline size_t
ht_filter_slot(uintptr_t ptr)
{
    /* The low bits of the granule number: a shift and a mask on the free
     * path.  Granules 16 MiB apart share a slot, which only costs lookups. */
    return (size_t)((ptr >> HT_FILTER_SHIFT) & ((1u << HT_FILTER_BITS) - 1));
}

/* Whether a table with a sampling interval may hold a block at ptr (0: it
 * certainly does not).  Any thread.  Never fails. */
static inline int
ht_sample_maybe_traced(const void *ptr)
{
    return atomic_load_explicit(&ht_sample_filter[ht_filter_slot((uintptr_t)ptr)],
                                memory_order_relaxed) != 0;
}

/* Zero the filter (or set it to 255 everywhere while pinned): only when no
 * table with a sampling interval holds a block.  GIL held.  Never fails. */
void ht_sample_filter_clear(void);

/* Pin every counter at 255 (on), or zero them all (off): while exact
 * tracing records, every block may be traced, so that a free that consults
 * only the filter (the sampled hooks', see hooks.c) never skips a traced
 * block.  Exact tables do not count in the filter, so the pinned values
 * stay.  GIL held.  Never fails. */
void ht_sample_filter_pin(int on);

/* Initialise an empty table.  Never fails (no memory is taken yet). */
void ht_table_init(ht_table *t);

/* Release all memory of the table and leave it empty (its interval is
 * kept).  Never fails. */
void ht_table_clear(ht_table *t);

/* Record ptr with size and traceback id, replacing any entry for ptr.
 * Returns 0, or -1 when memory is short: then the table is unchanged.
 * *old_size receives the size of a replaced entry, or (size_t)-1. */
int ht_table_put(ht_table *t, uintptr_t ptr, size_t size, uint32_t tb,
                 size_t *old_size);

/* Remove ptr.  Returns 1 and stores its size in *size if it was present,
 * 0 if not.  Never fails. */
int ht_table_remove(ht_table *t, uintptr_t ptr, size_t *size);

/* Look ptr up.  Returns 1 and fills *out, or 0. */
int ht_table_get(const ht_table *t, uintptr_t ptr, ht_trace_out *out);

/* Number of live entries. */
static inline size_t ht_table_len(const ht_table *t) { return t->count; }

/* Append every entry to three columns (room for ht_table_len entries
 * each): domain (the given one), size and traceback id.  Returns the number
 * written.  Never fails. */
size_t ht_table_export(const ht_table *t, uint32_t domain, uint32_t *domains,
                       uint64_t *sizes, uint32_t *tbs);

/* Bytes of memory the table itself uses. */
size_t ht_table_memory(const ht_table *t);

#endif /* HT_TRACES_H */
