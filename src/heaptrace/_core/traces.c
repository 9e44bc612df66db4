/* traces.c: the live trace table.
 *
 * An open-addressing table with linear probing, keyed by block address.
 *
 * Where a key lands is the idea that makes it fast.  A well-mixed hash of the
 * address scatters neighbouring blocks over the whole table, so every
 * allocation and every free pays a cache miss on the table even though the
 * allocator itself (pymalloc hands out neighbouring addresses one after the
 * other) stays in cache.  Here the address is split: the 16 KiB region it
 * lies in is hashed to pick a starting slot, and the offset inside the region
 * (in 16-byte units) is added to it.  Blocks of one pymalloc pool therefore
 * occupy one contiguous run of slots, and consecutive allocations touch
 * consecutive slots.  Different regions start at random places, so runs
 * interleave and linear probing absorbs the overlaps.
 *
 * Growing never stops the program for a full rehash: a resize allocates the
 * doubled array and then moves a few old slots on every later operation
 * (HT_MIGRATE_STEP), searching both arrays until the old one is drained.
 * Entries leave the old array as tombstones, because backward-shift deletion
 * would move entries behind the migration cursor; the new array uses
 * backward-shift deletion and never holds tombstones.  The arithmetic in
 * ht_table_put guarantees a migration ends long before the new array needs
 * to grow again.
 *
 * Invariants: an address is in at most one of the two arrays; used and
 * old_used count live entries; bytes is the sum of the live sizes; an entry
 * whose size field is HT_SIZE_BIG has its real size in big[].
 */
#include "traces.h"

#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define HT_TOMBSTONE ((uintptr_t)1)
#define HT_MIN_SLOTS 1024            /* 16 KiB: one page-ish of slots */
#define HT_MIGRATE_STEP 16           /* old slots moved per operation */
#define HT_REGION_SHIFT 14           /* 16 KiB regions */
#define HT_UNIT_SHIFT 4              /* 16-byte allocation granule */

static inline size_t
ht_home(uintptr_t ptr, size_t mask)
{
    uint64_t region = (uint64_t)(ptr >> HT_REGION_SHIFT);
    region *= 0x9E3779B97F4A7C15ULL;
    region ^= region >> 29;
    return (size_t)((region + (ptr >> HT_UNIT_SHIFT)) & mask);
}

/* ---- big sizes ---------------------------------------------------------- */

static size_t
big_find(const ht_table *t, uintptr_t ptr)
{
    for (size_t i = 0; i < t->nbig; i++) {
        if (t->big[i].ptr == ptr) {
            return i;
        }
    }
    return (size_t)-1;
}

static size_t
big_take(ht_table *t, uintptr_t ptr)
{
    size_t i = big_find(t, ptr);
    if (i == (size_t)-1) {
        return 0;   /* cannot happen while the invariants hold */
    }
    size_t size = t->big[i].size;
    t->big[i] = t->big[--t->nbig];
    return size;
}

static inline size_t
slot_size(const ht_table *t, const ht_trace *s)
{
    if (s->size != HT_SIZE_BIG) {
        return s->size;
    }
    size_t i = big_find(t, s->ptr);
    return i == (size_t)-1 ? 0 : t->big[i].size;
}

/* ---- probing ------------------------------------------------------------ */

/* Index of ptr in the array, or (size_t)-1.  Skips tombstones. */
static size_t
probe_find(const ht_trace *slots, size_t mask, uintptr_t ptr)
{
    size_t i = ht_home(ptr, mask);
    for (;;) {
        uintptr_t k = slots[i].ptr;
        if (k == ptr) {
            return i;
        }
        if (k == 0) {
            return (size_t)-1;
        }
        i = (i + 1) & mask;
    }
}

/* Insert an entry known to be absent into an array with room. */
static void
probe_insert_new(ht_trace *slots, size_t mask, ht_trace e)
{
    size_t i = ht_home(e.ptr, mask);
    while (slots[i].ptr != 0) {
        i = (i + 1) & mask;
    }
    slots[i] = e;
}

/* Backward-shift deletion of slot i in an array without tombstones. */
static void
shift_delete(ht_trace *slots, size_t mask, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].ptr == 0) {
            break;
        }
        size_t home = ht_home(slots[j].ptr, mask);
        /* Move slots[j] into the hole at i unless its home lies cyclically
         * in (i, j], in which case it must stay where its probe finds it. */
        int stays = (i <= j) ? (i < home && home <= j)
                             : (i < home || home <= j);
        if (!stays) {
            slots[i] = slots[j];
            i = j;
        }
    }
    slots[i].ptr = 0;
}

/* ---- incremental resize ------------------------------------------------- */

static void
migrate_step(ht_table *t, size_t nslots)
{
    if (t->old == NULL) {
        return;
    }
    size_t end = t->migrate_pos + nslots;
    if (end > t->old_mask + 1) {
        end = t->old_mask + 1;
    }
    for (size_t i = t->migrate_pos; i < end; i++) {
        ht_trace e = t->old[i];
        if (e.ptr != 0 && e.ptr != HT_TOMBSTONE) {
            probe_insert_new(t->slots, t->mask, e);
            t->used++;
            t->old_used--;
            t->old[i].ptr = HT_TOMBSTONE;
        }
    }
    t->migrate_pos = end;
    if (end == t->old_mask + 1) {
        free(t->old);
        t->old = NULL;
        t->old_mask = 0;
        t->old_used = 0;
        t->migrate_pos = 0;
    }
}

/* Make room for one more entry.  Returns 0, or -1 with nothing changed. */
static int
reserve_one(ht_table *t)
{
    if (t->slots == NULL) {
        t->slots = ht_calloc(HT_MIN_SLOTS, sizeof(ht_trace));
        if (t->slots == NULL) {
            return -1;
        }
        t->mask = HT_MIN_SLOTS - 1;
        return 0;
    }
    size_t cap = t->mask + 1;
    size_t live = t->used + t->old_used;
    /* Keep the load under 70%: long runs are what slow linear probing. */
    if ((live + 1) * 10 <= cap * 7) {
        return 0;
    }
    if (t->old != NULL) {
        /* Cannot happen by the arithmetic above (a migration of C slots
         * ends after C / HT_MIGRATE_STEP operations, while the new array
         * of 2C slots only fills after 0.7C more), but be safe. */
        migrate_step(t, t->old_mask + 1);
    }
    size_t ncap = cap * 2;
    if (ncap < cap || ncap > SIZE_MAX / sizeof(ht_trace)) {
        return -1;
    }
    ht_trace *fresh = ht_calloc(ncap, sizeof(ht_trace));
    if (fresh == NULL) {
        return -1;
    }
    t->old = t->slots;
    t->old_mask = t->mask;
    t->old_used = t->used;
    t->migrate_pos = 0;
    t->slots = fresh;
    t->mask = ncap - 1;
    t->used = 0;
    return 0;
}

/* ---- public API ----------------------------------------------------------- */

void
ht_table_init(ht_table *t)
{
    memset(t, 0, sizeof(*t));
}

void
ht_table_clear(ht_table *t)
{
    free(t->slots);
    free(t->old);
    ht_table_init(t);
}

int
ht_table_put(ht_table *t, uintptr_t ptr, size_t size, uint32_t tb,
             size_t *old_size)
{
    *old_size = (size_t)-1;
    migrate_step(t, HT_MIGRATE_STEP);

    int big = size >= HT_SIZE_BIG;
    /* An entry for ptr may already exist (a free the tracer never saw):
     * replace it in place. */
    if (t->slots != NULL) {
        size_t i = probe_find(t->slots, t->mask, ptr);
        if (i != (size_t)-1) {
            ht_trace *s = &t->slots[i];
            if (big && s->size != HT_SIZE_BIG && t->nbig == HT_BIG_MAX) {
                return -1;
            }
            size_t prev = s->size == HT_SIZE_BIG ? big_take(t, ptr) : s->size;
            *old_size = prev;
            t->bytes -= prev;
            if (big) {
                t->big[t->nbig].ptr = ptr;
                t->big[t->nbig].size = size;
                t->nbig++;
            }
            s->size = big ? HT_SIZE_BIG : (uint32_t)size;
            s->tb = tb;
            t->bytes += size;
            return 0;
        }
    }
    if (big && t->nbig == HT_BIG_MAX) {
        return -1;
    }
    if (reserve_one(t) < 0) {
        return -1;
    }
    if (t->old != NULL) {
        size_t i = probe_find(t->old, t->old_mask, ptr);
        if (i != (size_t)-1) {
            size_t prev = slot_size(t, &t->old[i]);
            if (t->old[i].size == HT_SIZE_BIG) {
                big_take(t, ptr);
            }
            *old_size = prev;
            t->bytes -= prev;
            t->old[i].ptr = HT_TOMBSTONE;
            t->old_used--;
        }
    }
    if (big) {
        t->big[t->nbig].ptr = ptr;
        t->big[t->nbig].size = size;
        t->nbig++;
    }
    ht_trace e = { ptr, big ? HT_SIZE_BIG : (uint32_t)size, tb };
    probe_insert_new(t->slots, t->mask, e);
    t->used++;
    t->bytes += size;
    return 0;
}

int
ht_table_remove(ht_table *t, uintptr_t ptr, size_t *size)
{
    if (t->slots == NULL) {
        return 0;
    }
    migrate_step(t, HT_MIGRATE_STEP);
    size_t i = probe_find(t->slots, t->mask, ptr);
    if (i != (size_t)-1) {
        size_t s = t->slots[i].size == HT_SIZE_BIG ? big_take(t, ptr)
                                                   : t->slots[i].size;
        shift_delete(t->slots, t->mask, i);
        t->used--;
        t->bytes -= s;
        *size = s;
        return 1;
    }
    if (t->old != NULL) {
        i = probe_find(t->old, t->old_mask, ptr);
        if (i != (size_t)-1) {
            size_t s = t->old[i].size == HT_SIZE_BIG ? big_take(t, ptr)
                                                     : t->old[i].size;
            t->old[i].ptr = HT_TOMBSTONE;
            t->old_used--;
            t->bytes -= s;
            *size = s;
            return 1;
        }
    }
    return 0;
}

int
ht_table_get(const ht_table *t, uintptr_t ptr, ht_trace_out *out)
{
    if (t->slots == NULL) {
        return 0;
    }
    const ht_trace *s = NULL;
    size_t i = probe_find(t->slots, t->mask, ptr);
    if (i != (size_t)-1) {
        s = &t->slots[i];
    }
    else if (t->old != NULL) {
        i = probe_find(t->old, t->old_mask, ptr);
        if (i != (size_t)-1) {
            s = &t->old[i];
        }
    }
    if (s == NULL) {
        return 0;
    }
    out->ptr = ptr;
    out->size = slot_size(t, s);
    out->tb = s->tb;
    return 1;
}

static size_t
export_array(const ht_table *t, const ht_trace *slots, size_t mask,
             ht_trace_out *out)
{
    size_t n = 0;
    for (size_t i = 0; i <= mask; i++) {
        const ht_trace *s = &slots[i];
        if (s->ptr == 0 || s->ptr == HT_TOMBSTONE) {
            continue;
        }
        out[n].ptr = s->ptr;
        out[n].size = slot_size(t, s);
        out[n].tb = s->tb;
        n++;
    }
    return n;
}

size_t
ht_table_export(const ht_table *t, ht_trace_out *out)
{
    size_t n = 0;
    if (t->slots != NULL) {
        n += export_array(t, t->slots, t->mask, out);
    }
    if (t->old != NULL) {
        n += export_array(t, t->old, t->old_mask, out + n);
    }
    return n;
}

size_t
ht_table_memory(const ht_table *t)
{
    size_t n = 0;
    if (t->slots != NULL) {
        n += (t->mask + 1) * sizeof(ht_trace);
    }
    if (t->old != NULL) {
        n += (t->old_mask + 1) * sizeof(ht_trace);
    }
    return n;
}
