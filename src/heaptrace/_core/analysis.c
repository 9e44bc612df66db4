/* analysis.c: group, compare and filter frozen snapshots (see analysis.h).
 *
 * The idea: never look at a trace more than once.  A first pass over the
 * traces sums size and count per traceback id; everything after that works
 * on tracebacks (thousands) instead of traces (millions).
 *
 * Values are compared through integer keys.  The file names of the
 * snapshot(s) involved are sorted once by their UTF-8 bytes (memcmp order is
 * code point order, lone surrogates included) and each gets a rank, equal
 * names the same rank, so that a frame becomes the 64-bit key
 * rank << 32 | lineno whose integer order is the order of the Python tuple
 * (filename, lineno).  Two snapshots analysed together (compare_to) share
 * one ranking, so keys also match across them.  A traceback is the sequence
 * of its frame keys; groups live in one hash table keyed by those values,
 * holding a total for each snapshot, which makes the comparison a single
 * pass too.  Groups are finally sorted with a merge sort that takes a
 * context (qsort cannot).
 *
 * Filtering decides each Filter once per traceback (pattern matches come
 * precomputed per string id), then each trace costs one lookup per filter.
 */
#include "analysis.h"
#include "snapdata.h"

#include <string.h>

#include "alloc.h"
#include "sampling.h"

/* ---- small helpers ---------------------------------------------------------- */

static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static size_t
pow2_at_least(size_t n)
{
    size_t cap = 16;
    while (cap < n) {
        cap <<= 1;
    }
    return cap;
}

/* ---- u64 map ------------------------------------------------------------------ */

int
ht_u64map_get(const ht_u64map *m, uint64_t key, uint32_t *val)
{
    if (m->cap == 0) {
        return 0;
    }
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->vals[i] == UINT32_MAX) {
            return 0;
        }
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return 1;
        }
    }
}

static void
u64map_insert_raw(uint64_t *keys, uint32_t *vals, size_t cap, uint64_t key,
                  uint32_t val, int *added)
{
    size_t mask = cap - 1;
    for (size_t i = (size_t)mix64(key) & mask;; i = (i + 1) & mask) {
        if (vals[i] == UINT32_MAX) {
            keys[i] = key;
            vals[i] = val;
            *added = 1;
            return;
        }
        if (keys[i] == key) {
            vals[i] = val;
            *added = 0;
            return;
        }
    }
}

int
ht_u64map_put(ht_u64map *m, uint64_t key, uint32_t val)
{
    int added;
    if ((m->len + 1) * 2 > m->cap) {
        size_t cap = pow2_at_least((m->len + 1) * 2);
        uint64_t *keys = ht_malloc(cap * sizeof(*keys));
        uint32_t *vals = ht_malloc(cap * sizeof(*vals));
        if (keys == NULL || vals == NULL) {
            free(keys);
            free(vals);
            return HT_AN_NOMEM;
        }
        memset(vals, 0xff, cap * sizeof(*vals));
        for (size_t i = 0; i < m->cap; i++) {
            if (m->vals[i] != UINT32_MAX) {
                u64map_insert_raw(keys, vals, cap, m->keys[i], m->vals[i], &added);
            }
        }
        free(m->keys);
        free(m->vals);
        m->keys = keys;
        m->vals = vals;
        m->cap = cap;
    }
    u64map_insert_raw(m->keys, m->vals, m->cap, key, val, &added);
    m->len += (size_t)added;
    return 0;
}

void
ht_u64map_free(ht_u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- merge sort of uint32 indices with a context -------------------------- */

typedef int (*idx_cmp)(uint32_t a, uint32_t b, void *ctx);

/* Stable bottom-up merge sort of idx[0..n).  Returns 0 or HT_AN_NOMEM. */
static int
sort_idx(uint32_t *idx, size_t n, idx_cmp cmp, void *ctx)
{
    if (n < 2) {
        return 0;
    }
    uint32_t *tmp = ht_malloc(n * sizeof(*tmp));
    if (tmp == NULL) {
        return HT_AN_NOMEM;
    }
    uint32_t *src = idx, *dst = tmp;
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                dst[k++] = cmp(src[j], src[i], ctx) < 0 ? src[j++] : src[i++];
            }
            while (i < mid) {
                dst[k++] = src[i++];
            }
            while (j < hi) {
                dst[k++] = src[j++];
            }
        }
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != idx) {
        memcpy(idx, src, n * sizeof(*idx));
    }
    free(tmp);
    return 0;
}

/* ---- keys shared by one or two snapshots ----------------------------------- */

typedef struct keyctx {
    const ht_snap *s[2];
    int n;
    uint32_t *srank[2];   /* per string id: rank of its text */
    uint64_t *fkey[2];    /* per frame id: srank << 32 | lineno */
} keyctx;

static void
keyctx_free(keyctx *k)
{
    for (int w = 0; w < 2; w++) {
        free(k->srank[w]);
        free(k->fkey[w]);
        k->srank[w] = NULL;
        k->fkey[w] = NULL;
    }
}

/* Bytes of string id.  Never NULL: a snapshot whose strings are all empty
 * may have no blob at all, and memcmp must not see a NULL pointer even for
 * zero bytes. */
static const char *
str_at(const ht_snap *s, uint32_t id, size_t *len)
{
    *len = (size_t)(s->str_off[id + 1] - s->str_off[id]);
    return *len > 0 ? s->str_blob + s->str_off[id] : "";
}

/* Combined string index i: strings of s[0] first, then those of s[1]. */
static int
cmp_strings(uint32_t a, uint32_t b, void *vctx)
{
    const keyctx *k = vctx;
    uint32_t n0 = k->s[0]->nstrings;
    size_t la, lb;
    const char *pa = a < n0 ? str_at(k->s[0], a, &la) : str_at(k->s[1], a - n0, &la);
    const char *pb = b < n0 ? str_at(k->s[0], b, &lb) : str_at(k->s[1], b - n0, &lb);
    size_t common = la < lb ? la : lb;
    int c = common > 0 ? memcmp(pa, pb, common) : 0;
    if (c != 0) {
        return c;
    }
    return la < lb ? -1 : la > lb;
}

static int
keyctx_init(keyctx *k, const ht_snap *a, const ht_snap *b)
{
    memset(k, 0, sizeof(*k));
    k->s[0] = a;
    k->s[1] = b;
    k->n = b != NULL ? 2 : 1;
    uint64_t total = a->nstrings + (b != NULL ? (uint64_t)b->nstrings : 0);
    if (total >= UINT32_MAX) {
        return HT_AN_INVALID;
    }
    uint32_t *order = ht_malloc((total ? total : 1) * sizeof(*order));
    if (order == NULL) {
        return HT_AN_NOMEM;
    }
    for (uint32_t i = 0; i < total; i++) {
        order[i] = i;
    }
    int rc = sort_idx(order, total, cmp_strings, k);
    for (int w = 0; rc == 0 && w < k->n; w++) {
        const ht_snap *s = k->s[w];
        k->srank[w] = ht_malloc((s->nstrings ? s->nstrings : 1) * sizeof(uint32_t));
        k->fkey[w] = ht_malloc((s->nframes ? s->nframes : 1) * sizeof(uint64_t));
        if (k->srank[w] == NULL || k->fkey[w] == NULL) {
            rc = HT_AN_NOMEM;
        }
    }
    if (rc == 0) {
        uint32_t n0 = a->nstrings, rank = 0;
        for (uint32_t i = 0; i < total; i++) {
            if (i > 0 && cmp_strings(order[i - 1], order[i], k) != 0) {
                rank++;
            }
            uint32_t id = order[i];
            if (id < n0) {
                k->srank[0][id] = rank;
            }
            else {
                k->srank[1][id - n0] = rank;
            }
        }
        for (int w = 0; w < k->n; w++) {
            const ht_snap *s = k->s[w];
            for (uint32_t f = 0; f < s->nframes; f++) {
                k->fkey[w][f] = ((uint64_t)k->srank[w][s->frame_file[f]] << 32)
                                | s->frame_line[f];
            }
        }
    }
    free(order);
    if (rc != 0) {
        keyctx_free(k);
    }
    return rc;
}

/* ---- the group table ---------------------------------------------------------- */

typedef struct gtable {
    const keyctx *k;
    int key_type;
    ht_group *g;
    uint64_t *gkey;       /* single-frame kinds: the frame key (or EMPTY_KEY) */
    uint64_t *ghash;
    size_t n, cap;
    uint32_t *slots;      /* group indices, UINT32_MAX free */
    size_t scap;
} gtable;

#define EMPTY_KEY UINT64_MAX

static void
gtable_free(gtable *t)
{
    free(t->g);
    free(t->gkey);
    free(t->ghash);
    free(t->slots);
    t->g = NULL;
    t->gkey = t->ghash = NULL;
    t->slots = NULL;
}

static int
tb_equal(const keyctx *k, int wa, uint32_t ta, int wb, uint32_t tb)
{
    const ht_snap *sa = k->s[wa], *sb = k->s[wb];
    uint32_t la = sa->tb_off[ta + 1] - sa->tb_off[ta];
    uint32_t lb = sb->tb_off[tb + 1] - sb->tb_off[tb];
    if (la != lb) {
        return 0;
    }
    const uint32_t *fa = sa->tb_frames + sa->tb_off[ta];
    const uint32_t *fb = sb->tb_frames + sb->tb_off[tb];
    for (uint32_t i = 0; i < la; i++) {
        if (k->fkey[wa][fa[i]] != k->fkey[wb][fb[i]]) {
            return 0;
        }
    }
    return 1;
}

static uint64_t
tb_hash(const keyctx *k, int w, uint32_t tb)
{
    const ht_snap *s = k->s[w];
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = s->tb_off[tb]; i < s->tb_off[tb + 1]; i++) {
        h = mix64(h ^ k->fkey[w][s->tb_frames[i]]);
    }
    return h;
}

static int
gtable_grow(gtable *t)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        ht_group *g = ht_realloc(t->g, cap * sizeof(*g));
        if (g == NULL) {
            return HT_AN_NOMEM;
        }
        t->g = g;
        uint64_t *gk = ht_realloc(t->gkey, cap * sizeof(*gk));
        if (gk == NULL) {
            return HT_AN_NOMEM;
        }
        t->gkey = gk;
        uint64_t *gh = ht_realloc(t->ghash, cap * sizeof(*gh));
        if (gh == NULL) {
            return HT_AN_NOMEM;
        }
        t->ghash = gh;
        t->cap = cap;
    }
    if ((t->n + 1) * 2 > t->scap) {
        size_t scap = pow2_at_least((t->n + 1) * 2);
        uint32_t *slots = ht_malloc(scap * sizeof(*slots));
        if (slots == NULL) {
            return HT_AN_NOMEM;
        }
        memset(slots, 0xff, scap * sizeof(*slots));
        for (size_t i = 0; i < t->n; i++) {
            size_t j = (size_t)t->ghash[i] & (scap - 1);
            while (slots[j] != UINT32_MAX) {
                j = (j + 1) & (scap - 1);
            }
            slots[j] = (uint32_t)i;
        }
        free(t->slots);
        t->slots = slots;
        t->scap = scap;
    }
    return 0;
}

/* Add (size, count) of snapshot w to the group whose value is either the
 * single frame key `key` (rep names it) or, for HT_KEY_TRACEBACK, traceback
 * `rep` of snapshot w. */
static int
gtable_add(gtable *t, int w, uint64_t key, uint32_t rep, uint64_t size,
           uint64_t count)
{
    int whole = t->key_type == HT_KEY_TRACEBACK;
    uint64_t h = whole ? tb_hash(t->k, w, rep) : mix64(key);
    size_t j = 0;
    uint32_t gi = UINT32_MAX;
    if (t->scap) {
        for (j = (size_t)h & (t->scap - 1); t->slots[j] != UINT32_MAX;
             j = (j + 1) & (t->scap - 1)) {
            uint32_t c = t->slots[j];
            if (t->ghash[c] != h) {
                continue;
            }
            if (whole ? tb_equal(t->k, (int)t->g[c].snap, t->g[c].rep, w, rep)
                      : t->gkey[c] == key) {
                gi = c;
                break;
            }
        }
    }
    if (gi == UINT32_MAX) {
        if (t->n >= UINT32_MAX - 1) {
            return HT_AN_INVALID;
        }
        int rc = gtable_grow(t);
        if (rc != 0) {
            return rc;
        }
        for (j = (size_t)h & (t->scap - 1); t->slots[j] != UINT32_MAX;
             j = (j + 1) & (t->scap - 1)) {
        }
        gi = (uint32_t)t->n++;
        t->slots[j] = gi;
        ht_group *g = &t->g[gi];
        memset(g, 0, sizeof(*g));
        g->snap = (uint32_t)w;
        g->rep = rep;
        t->gkey[gi] = key;
        t->ghash[gi] = h;
    }
    ht_group *g = &t->g[gi];
    if (__builtin_add_overflow(g->size[w], size, &g->size[w])
        || __builtin_add_overflow(g->count[w], count, &g->count[w])) {
        return HT_AN_OVERFLOW;
    }
    return 0;
}

/* The estimated bytes and blocks of each traceback of a sampled snapshot,
 * into tbsize/tbcount (zeroed, one entry per traceback). */
static int
add_estimates(const ht_snap *s, uint64_t *tbsize, uint64_t *tbcount)
{
    double *blocks = ht_calloc(s->ntracebacks ? s->ntracebacks : 1, sizeof(double));
    if (blocks == NULL) {
        return HT_AN_NOMEM;
    }
    uint64_t n = s->sampling_interval;
    for (uint64_t i = 0; i < s->ntraces; i++) {
        uint32_t tb = s->tr_tb[i];
        uint64_t size = s->tr_size[i];
        if (size > (uint64_t)INT64_MAX
            || __builtin_add_overflow(tbsize[tb], ht_sample_bytes(size, n), &tbsize[tb])) {
            free(blocks);
            return HT_AN_OVERFLOW;
        }
        blocks[tb] += ht_sample_blocks(size, n);
    }
    for (uint32_t tb = 0; tb < s->ntracebacks; tb++) {
        if (blocks[tb] > 0.0) {
            /* At least one block wherever a trace is. */
            double r = nearbyint(blocks[tb]);
            if (r >= 0x1p63) {
                free(blocks);
                return HT_AN_OVERFLOW;
            }
            tbcount[tb] = r < 1.0 ? 1 : (uint64_t)r;
        }
    }
    free(blocks);
    return 0;
}

/* Sum the traces of snapshot w into the table. */
static int
gtable_add_snap(gtable *t, int w, int cumulative)
{
    const ht_snap *s = t->k->s[w];
    const uint64_t *fkey = t->k->fkey[w];
    const uint32_t *srank = t->k->srank[w];
    int rc = 0;
    uint64_t *tbsize = ht_calloc(s->ntracebacks ? s->ntracebacks : 1, sizeof(uint64_t));
    uint64_t *tbcount = ht_calloc(s->ntracebacks ? s->ntracebacks : 1, sizeof(uint64_t));
    if (tbsize == NULL || tbcount == NULL) {
        rc = HT_AN_NOMEM;
        goto done;
    }
    if (s->sampling_interval != 0) {
        /* Sampled: each trace stands for the bytes and blocks sampling.h
         * gives; the blocks are summed as reals and rounded per traceback. */
        rc = add_estimates(s, tbsize, tbcount);
        if (rc != 0) {
            goto done;
        }
    }
    else for (uint64_t i = 0; i < s->ntraces; i++) {
        uint32_t tb = s->tr_tb[i];
        if (__builtin_add_overflow(tbsize[tb], s->tr_size[i], &tbsize[tb])) {
            rc = HT_AN_OVERFLOW;
            goto done;
        }
        tbcount[tb]++;
    }
    for (uint32_t tb = 0; tb < s->ntracebacks && rc == 0; tb++) {
        if (tbcount[tb] == 0) {
            continue;
        }
        uint32_t lo = s->tb_off[tb], hi = s->tb_off[tb + 1];
        if (t->key_type == HT_KEY_TRACEBACK) {
            rc = gtable_add(t, w, 0, tb, tbsize[tb], tbcount[tb]);
        }
        else if (cumulative) {
            for (uint32_t i = lo; i < hi && rc == 0; i++) {
                uint32_t f = s->tb_frames[i];
                if (t->key_type == HT_KEY_LINENO) {
                    rc = gtable_add(t, w, fkey[f], f, tbsize[tb], tbcount[tb]);
                }
                else {
                    uint32_t file = s->frame_file[f];
                    rc = gtable_add(t, w, (uint64_t)srank[file] << 32, file,
                                    tbsize[tb], tbcount[tb]);
                }
            }
        }
        else if (lo == hi) {
            if (t->key_type == HT_KEY_FILENAME) {
                rc = HT_AN_EMPTY;
            }
            else {
                rc = gtable_add(t, w, EMPTY_KEY, HT_REP_EMPTY, tbsize[tb], tbcount[tb]);
            }
        }
        else {
            uint32_t f = s->tb_frames[lo];
            if (t->key_type == HT_KEY_LINENO) {
                rc = gtable_add(t, w, fkey[f], f, tbsize[tb], tbcount[tb]);
            }
            else {
                uint32_t file = s->frame_file[f];
                rc = gtable_add(t, w, (uint64_t)srank[file] << 32, file,
                                tbsize[tb], tbcount[tb]);
            }
        }
    }
done:
    free(tbsize);
    free(tbcount);
    return rc;
}

/* ---- ordering ------------------------------------------------------------------ */

/* Compare the tracebacks of groups a and b as Python compares the tuples
 * Traceback._frames (oldest frame first). */
static int
group_tb_cmp(const gtable *t, uint32_t a, uint32_t b)
{
    if (t->key_type != HT_KEY_TRACEBACK) {
        /* A single frame, or the empty tuple (EMPTY_KEY, sorted first). */
        uint64_t ka = t->gkey[a], kb = t->gkey[b];
        if (ka == kb) {
            return 0;
        }
        if (ka == EMPTY_KEY) {
            return -1;
        }
        if (kb == EMPTY_KEY) {
            return 1;
        }
        return ka < kb ? -1 : 1;
    }
    const keyctx *k = t->k;
    int wa = (int)t->g[a].snap, wb = (int)t->g[b].snap;
    const ht_snap *sa = k->s[wa], *sb = k->s[wb];
    uint32_t ta = t->g[a].rep, tb = t->g[b].rep;
    uint32_t la = sa->tb_off[ta + 1] - sa->tb_off[ta];
    uint32_t lb = sb->tb_off[tb + 1] - sb->tb_off[tb];
    const uint32_t *fa = sa->tb_frames + sa->tb_off[ta];
    const uint32_t *fb = sb->tb_frames + sb->tb_off[tb];
    uint32_t n = la < lb ? la : lb;
    for (uint32_t i = 1; i <= n; i++) {
        uint64_t ka = k->fkey[wa][fa[la - i]], kb = k->fkey[wb][fb[lb - i]];
        if (ka != kb) {
            return ka < kb ? -1 : 1;
        }
    }
    return la < lb ? -1 : la > lb;
}

#define CMP3(x, y) ((x) < (y) ? -1 : (x) > (y))

/* Descending (size, count, traceback). */
static int
cmp_stat(uint32_t a, uint32_t b, void *vctx)
{
    const gtable *t = vctx;
    const ht_group *ga = &t->g[a], *gb = &t->g[b];
    int c = CMP3(gb->size[0], ga->size[0]);
    if (c == 0) {
        c = CMP3(gb->count[0], ga->count[0]);
    }
    return c != 0 ? c : group_tb_cmp(t, b, a);
}

static uint64_t
absdiff(uint64_t x, uint64_t y)
{
    return x > y ? x - y : y - x;
}

/* Descending (abs(size_diff), size, abs(count_diff), count, traceback). */
static int
cmp_diff(uint32_t a, uint32_t b, void *vctx)
{
    const gtable *t = vctx;
    const ht_group *ga = &t->g[a], *gb = &t->g[b];
    int c = CMP3(absdiff(gb->size[0], gb->size[1]), absdiff(ga->size[0], ga->size[1]));
    if (c == 0) {
        c = CMP3(gb->size[0], ga->size[0]);
    }
    if (c == 0) {
        c = CMP3(absdiff(gb->count[0], gb->count[1]), absdiff(ga->count[0], ga->count[1]));
    }
    if (c == 0) {
        c = CMP3(gb->count[0], ga->count[0]);
    }
    return c != 0 ? c : group_tb_cmp(t, b, a);
}

/* ---- statistics and compare_to ------------------------------------------------ */

static int
run_grouping(const ht_snap *a, const ht_snap *b, int key_type, int cumulative,
             ht_groups *out)
{
    memset(out, 0, sizeof(*out));
    if (key_type < HT_KEY_TRACEBACK || key_type > HT_KEY_FILENAME
        || (cumulative && key_type == HT_KEY_TRACEBACK)) {
        return HT_AN_INVALID;
    }
    keyctx k;
    int rc = keyctx_init(&k, a, b);
    if (rc != 0) {
        return rc;
    }
    gtable t;
    memset(&t, 0, sizeof(t));
    t.k = &k;
    t.key_type = key_type;
    uint32_t *order = NULL;
    for (int w = 0; w < k.n && rc == 0; w++) {
        rc = gtable_add_snap(&t, w, cumulative);
    }
    for (size_t i = 0; i < t.n && rc == 0; i++) {
        for (int w = 0; w < 2; w++) {
            if (t.g[i].size[w] > INT64_MAX || t.g[i].count[w] > INT64_MAX) {
                rc = HT_AN_OVERFLOW;
            }
        }
    }
    if (rc == 0) {
        order = ht_malloc((t.n ? t.n : 1) * sizeof(*order));
        out->groups = ht_malloc((t.n ? t.n : 1) * sizeof(ht_group));
        if (order == NULL || out->groups == NULL) {
            rc = HT_AN_NOMEM;
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < t.n; i++) {
            order[i] = (uint32_t)i;
        }
        rc = sort_idx(order, t.n, b != NULL ? cmp_diff : cmp_stat, &t);
    }
    if (rc == 0) {
        for (size_t i = 0; i < t.n; i++) {
            out->groups[i] = t.g[order[i]];
        }
        out->ngroups = t.n;
    }
    else {
        ht_groups_free(out);
    }
    free(order);
    gtable_free(&t);
    keyctx_free(&k);
    return rc;
}

void
ht_groups_free(ht_groups *g)
{
    free(g->groups);
    g->groups = NULL;
    g->ngroups = 0;
}

int
ht_statistics(const ht_snap *s, int key_type, int cumulative, ht_groups *out)
{
    return run_grouping(s, NULL, key_type, cumulative, out);
}

int
ht_compare(const ht_snap *new_s, const ht_snap *old_s, int key_type,
           int cumulative, ht_groups *out)
{
    return run_grouping(new_s, old_s, key_type, cumulative, out);
}

/* ---- filtering ------------------------------------------------------------------ */

static int
dup_array(void **dst, const void *src, size_t bytes)
{
    *dst = NULL;
    if (src == NULL || bytes == 0) {
        return 0;
    }
    *dst = ht_malloc(bytes);
    if (*dst == NULL) {
        return HT_AN_NOMEM;
    }
    memcpy(*dst, src, bytes);
    return 0;
}

int
ht_snap_copy_tables(const ht_snap *s, ht_snap *out)
{
    memset(out, 0, sizeof(*out));
    out->traceback_limit = s->traceback_limit;
    out->sampling_interval = s->sampling_interval;
    out->nstrings = s->nstrings;
    out->nframes = s->nframes;
    out->ntracebacks = s->ntracebacks;
    size_t blob = s->str_off != NULL ? (size_t)s->str_off[s->nstrings] : 0;
    size_t tbf = s->tb_off != NULL ? (size_t)s->tb_off[s->ntracebacks] : 0;
    if (dup_array((void **)&out->str_off, s->str_off,
                  s->str_off ? (s->nstrings + (size_t)1) * sizeof(uint64_t) : 0)
        || dup_array((void **)&out->str_blob, s->str_blob, blob)
        || dup_array((void **)&out->frame_file, s->frame_file, s->nframes * sizeof(uint32_t))
        || dup_array((void **)&out->frame_line, s->frame_line, s->nframes * sizeof(uint32_t))
        || dup_array((void **)&out->tb_off, s->tb_off,
                     s->tb_off ? (s->ntracebacks + (size_t)1) * sizeof(uint32_t) : 0)
        || dup_array((void **)&out->tb_frames, s->tb_frames, tbf * sizeof(uint32_t))
        || dup_array((void **)&out->tb_total, s->tb_total, s->ntracebacks * sizeof(int32_t))) {
        ht_snap_free(out);
        return HT_AN_NOMEM;
    }
    /* Native frames: the frame and stack tables (tr_nstack goes with the
     * traces). */
    out->nnframes = s->nnframes;
    out->nnstacks = s->nnstacks;
    size_t nsf = s->ns_off != NULL ? (size_t)s->ns_off[s->nnstacks] : 0;
    if (dup_array((void **)&out->nf_func, s->nf_func, s->nnframes * sizeof(uint32_t))
        || dup_array((void **)&out->nf_lib, s->nf_lib, s->nnframes * sizeof(uint32_t))
        || dup_array((void **)&out->nf_off, s->nf_off, s->nnframes * sizeof(uint64_t))
        || dup_array((void **)&out->ns_off, s->ns_off,
                     s->ns_off ? (s->nnstacks + (size_t)1) * sizeof(uint32_t) : 0)
        || dup_array((void **)&out->ns_frames, s->ns_frames, nsf * sizeof(uint32_t))) {
        ht_snap_free(out);
        return HT_AN_NOMEM;
    }
    return 0;
}

static int
domain_in(const ht_filter *f, uint32_t domain)
{
    for (size_t i = 0; i < f->ndomains; i++) {
        if (f->domains[i] == domain) {
            return 1;
        }
    }
    return 0;
}

/* Per-traceback verdict of Filter f (its _match_traceback): 0, 1, or 2 when
 * the traceback is empty and the most recent frame would be read. */
static void
filter_tracebacks(const ht_snap *s, const ht_filter *f, unsigned char *verdict)
{
    for (uint32_t tb = 0; tb < s->ntracebacks; tb++) {
        uint32_t lo = s->tb_off[tb], hi = s->tb_off[tb + 1];
        if (!f->all_frames) {
            if (lo == hi) {
                verdict[tb] = 2;
                continue;
            }
            hi = lo + 1;
        }
        int any = 0;
        for (uint32_t i = lo; i < hi && !any; i++) {
            uint32_t fr = s->tb_frames[i];
            any = f->str_match[s->frame_file[fr]]
                  && (!f->has_lineno || s->frame_line[fr] == f->lineno);
        }
        verdict[tb] = (unsigned char)(f->inclusive ? any : !any);
    }
}

/* Filter._match / DomainFilter._match on trace i: 0, 1 or -1 (empty). */
static int
filter_match(const ht_snap *s, const ht_filter *f, const unsigned char *verdict,
             uint64_t i)
{
    uint32_t domain = s->tr_domain[i];
    if (f->is_domain) {
        return domain_in(f, domain) ? f->inclusive : !f->inclusive;
    }
    int res = verdict[s->tr_tb[i]];
    if (res == 2) {
        return -1;
    }
    if (!f->has_domain) {
        return res;
    }
    if (f->inclusive) {
        return res && domain_in(f, domain);
    }
    return res || !domain_in(f, domain);
}

int
ht_filter_snap(const ht_snap *s, const ht_filter *filters, size_t nfilters,
               ht_snap *out)
{
    int rc = ht_snap_copy_tables(s, out);
    if (rc != 0) {
        return rc;
    }
    unsigned char *verdicts = NULL;
    unsigned char *keep = NULL;
    size_t ntb = s->ntracebacks ? s->ntracebacks : 1;
    uint64_t kept = 0;
    if (nfilters > 0) {
        verdicts = ht_malloc(nfilters * ntb);
        keep = ht_malloc(s->ntraces ? s->ntraces : 1);
        if (verdicts == NULL || keep == NULL) {
            rc = HT_AN_NOMEM;
            goto done;
        }
        int has_include = 0;
        for (size_t j = 0; j < nfilters; j++) {
            has_include |= filters[j].inclusive;
            if (!filters[j].is_domain) {
                filter_tracebacks(s, &filters[j], verdicts + j * ntb);
            }
        }
        for (uint64_t i = 0; i < s->ntraces; i++) {
            int ok = !has_include;
            for (size_t j = 0; j < nfilters && !ok; j++) {
                if (!filters[j].inclusive) {
                    continue;
                }
                int r = filter_match(s, &filters[j], verdicts + j * ntb, i);
                if (r < 0) {
                    rc = HT_AN_EMPTY;
                    goto done;
                }
                ok = r;
            }
            for (size_t j = 0; j < nfilters && ok; j++) {
                if (filters[j].inclusive) {
                    continue;
                }
                int r = filter_match(s, &filters[j], verdicts + j * ntb, i);
                if (r < 0) {
                    rc = HT_AN_EMPTY;
                    goto done;
                }
                ok = r;
            }
            keep[i] = (unsigned char)ok;
            kept += (uint64_t)ok;
        }
    }
    else {
        kept = s->ntraces;
    }
    out->ntraces = kept;
    if (kept > 0) {
        out->tr_domain = ht_malloc(kept * sizeof(uint32_t));
        out->tr_size = ht_malloc(kept * sizeof(uint64_t));
        out->tr_tb = ht_malloc(kept * sizeof(uint32_t));
        if (out->tr_domain == NULL || out->tr_size == NULL || out->tr_tb == NULL) {
            rc = HT_AN_NOMEM;
            goto done;
        }
        if (s->tr_nstack != NULL) {
            out->tr_nstack = ht_malloc(kept * sizeof(uint32_t));
            if (out->tr_nstack == NULL) {
                rc = HT_AN_NOMEM;
                goto done;
            }
        }
        uint64_t k = 0;
        for (uint64_t i = 0; i < s->ntraces; i++) {
            if (keep == NULL || keep[i]) {
                out->tr_domain[k] = s->tr_domain[i];
                out->tr_size[k] = s->tr_size[i];
                out->tr_tb[k] = s->tr_tb[i];
                if (out->tr_nstack != NULL) {
                    out->tr_nstack[k] = s->tr_nstack[i];
                }
                k++;
            }
        }
    }
done:
    free(verdicts);
    free(keep);
    if (rc != 0) {
        ht_snap_free(out);
    }
    return rc;
}
