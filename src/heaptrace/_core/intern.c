/* intern.c: traceback capture and interning.
 *
 * The standard module turns every frame of every allocation into a
 * (filename, line number) pair on the spot, and computing a line number means
 * decoding the code object's line table: that is most of its cost at high
 * nframe.  Here an allocation only records, per frame, the code object and
 * the instruction offset, which are two loads from the frame.  The sequence
 * is hashed and interned; only a new traceback takes references to its code
 * objects, which keeps them (and so the offsets' meaning) alive.  Line
 * numbers are computed when a traceback is first asked for, once per
 * distinct (code, offset), and cached.
 *
 * A traceback table is an append-only array of records, an arena of frames
 * and an open-addressing index of record ids.  Nothing is ever removed until
 * ht_intern_clear, so ids stay valid and records never move in meaning
 * (their storage may be reallocated: never keep a pointer into a table
 * across anything that can allocate a Python object, because that can run
 * the hooks, which append).
 *
 * Threads that do not hold the GIL cannot take references, so they use a
 * second table of resolved frames (file name id, line number), with file
 * names copied into heaptrace's own memory; see intern.h.
 */
#include "intern.h"
#include "alloc.h"

#include <stdlib.h>
#include <string.h>
#include <pthread.h>

/* ---- tables --------------------------------------------------------------- */

typedef struct {
    PyCodeObject *code;   /* strong reference while interned; NULL: unknown */
    int64_t lasti;
} ht_rawframe;

typedef struct {
    uint32_t file;        /* id in det_strings */
    uint32_t lineno;
} ht_resframe;

typedef struct {
    uint64_t hash;
    uint32_t off;         /* first frame in the arena */
    uint16_t nframe;
    uint16_t total;
} ht_tbrec;

typedef struct {
    size_t esize;         /* sizeof one frame */
    ht_tbrec *recs;
    uint32_t nrecs, caprecs;
    unsigned char *arena;
    size_t narena, caparena;   /* in frames */
    uint32_t *index;      /* record id + 1, 0 = empty */
    size_t imask;
} ht_tbtab;

typedef struct {
    uint64_t hash;
    int kind;             /* PyUnicode kind of data */
    size_t len;           /* in code points */
    void *data;           /* malloc'ed copy; never moves until cleared */
} ht_detstr;

/* Protected by the GIL. */
static ht_tbtab gil_tab = { sizeof(ht_rawframe), 0, 0, 0, 0, 0, 0, 0, 0 };
static ht_rawframe *gil_buf;          /* capture buffer, max_nframe frames */
static PyObject **gil_cache;          /* frames tuple per GIL id, or NULL */
static uint32_t gil_cache_len;
static PyObject **det_cache;          /* frames tuple per detached id */
static uint32_t det_cache_len;
static PyObject **detstr_cache;       /* str per detached string id */
static uint32_t detstr_cache_len;
static PyObject *unknown_filename;    /* "<unknown>" */
static PyObject *unknown_frame;       /* ("<unknown>", 0) */

/* (code, lasti) -> location key, resolved once: a dense number (0, 1, 2,
 * ... in order of resolution) that names the location until the memo is
 * cleared; key_frame[key] is the location's (filename, lineno) tuple, owned.
 * All protected by the GIL. */
typedef struct {
    PyCodeObject *code;
    int64_t lasti;
    uint32_t key1;        /* key + 1; 0: empty slot */
} ht_memo;
static ht_memo *memo;
static size_t memo_mask, memo_used;
static PyObject **key_frame;
static size_t cap_key_frame;
/* Location key of each frame of gil_tab's arena, filled in as tracebacks
 * are resolved (UINT32_MAX: not yet); covers the first narena_keys frames.
 * Snapshots then turn a traceback into locations without hashing.  GIL. */
static uint32_t *arena_keys;
static size_t narena_keys;

/* Protected by the raw lock (tracer.c); max_nframe is written under both the
 * GIL and the raw lock, so either is enough to read it. */
static ht_tbtab det_tab = { sizeof(ht_resframe), 0, 0, 0, 0, 0, 0, 0, 0 };
static ht_resframe *det_buf;
static ht_detstr *det_strings;
static uint32_t ndet_strings, capdet_strings;
static uint32_t *det_str_index;
static size_t det_str_imask;
static int max_nframe = 1;

/* ---- hashing -------------------------------------------------------------- */

static inline uint64_t
mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
    return h;
}

/* Fold one frame into a traceback hash.  The per-frame product does not
 * depend on h, so for deep tracebacks the multiplies overlap and the serial
 * chain is only a rotate and a xor per frame; finish() mixes thoroughly once
 * at the end.  Equality is always checked in full, so this only has to
 * spread keys over the index. */
static inline uint64_t
combine(uint64_t h, uint64_t a, uint64_t b)
{
    uint64_t v = a + b * 0x9E3779B97F4A7C15ULL;
    return ((h << 7) | (h >> 57)) ^ v;
}

static inline uint64_t
finish(uint64_t h, unsigned total)
{
    h = mix(h, total);
    h = mix(h, h >> 29);
    return h;
}

/* ---- generic traceback table --------------------------------------------- */

/* Keys are whole 8-byte words; most are one or two frames long, where a
 * call to memcmp costs more than the comparison. */
static inline int
same_key(const void *a, const void *b, size_t nbytes)
{
    if (nbytes <= 32) {
        const uint64_t *x = a, *y = b;
        for (size_t i = 0; i < nbytes / 8; i++) {
            if (x[i] != y[i]) {
                return 0;
            }
        }
        return 1;
    }
    return memcmp(a, b, nbytes) == 0;
}

static int
tab_grow_index(ht_tbtab *t)
{
    size_t cap = t->index ? (t->imask + 1) * 2 : 256;
    uint32_t *idx = ht_calloc(cap, sizeof(uint32_t));
    if (idx == NULL) {
        return -1;
    }
    size_t mask = cap - 1;
    for (uint32_t id = 0; id < t->nrecs; id++) {
        size_t i = t->recs[id].hash & mask;
        while (idx[i] != 0) {
            i = (i + 1) & mask;
        }
        idx[i] = id + 1;
    }
    free(t->index);
    t->index = idx;
    t->imask = mask;
    return 0;
}

/* Find or add the traceback (key, n, total).  *added tells whether it is new.
 * Returns the id, or (uint32_t)-1 when memory is short (nothing changed). */
static uint32_t
tab_intern(ht_tbtab *t, const void *key, uint16_t n, uint16_t total,
           uint64_t hash, int *added)
{
    *added = 0;
    size_t kbytes = (size_t)n * t->esize;
    if (t->index != NULL) {
        size_t i = hash & t->imask;
        uint32_t slot;
        while ((slot = t->index[i]) != 0) {
            const ht_tbrec *r = &t->recs[slot - 1];
            if (r->hash == hash && r->nframe == n && r->total == total
                && same_key(t->arena + (size_t)r->off * t->esize, key, kbytes)) {
                return slot - 1;
            }
            i = (i + 1) & t->imask;
        }
    }
    /* New traceback: make room everywhere before changing anything. */
    if (t->nrecs >= 0x7FFFFFF0u) {
        return (uint32_t)-1;
    }
    if (t->nrecs == t->caprecs) {
        uint32_t ncap = t->caprecs ? t->caprecs * 2 : 256;
        ht_tbrec *r = ht_realloc(t->recs, (size_t)ncap * sizeof(ht_tbrec));
        if (r == NULL) {
            return (uint32_t)-1;
        }
        t->recs = r;
        t->caprecs = ncap;
    }
    if (t->narena + n > t->caparena) {
        size_t ncap = t->caparena ? t->caparena * 2 : 1024;
        while (ncap < t->narena + n) {
            ncap *= 2;
        }
        if (ncap > UINT32_MAX) {
            return (uint32_t)-1;
        }
        unsigned char *a = ht_realloc(t->arena, ncap * t->esize);
        if (a == NULL) {
            return (uint32_t)-1;
        }
        t->arena = a;
        t->caparena = ncap;
    }
    if (t->index == NULL || (size_t)(t->nrecs + 1) * 2 > t->imask + 1) {
        if (tab_grow_index(t) < 0) {
            return (uint32_t)-1;
        }
    }
    uint32_t id = t->nrecs++;
    ht_tbrec *r = &t->recs[id];
    r->hash = hash;
    r->off = (uint32_t)t->narena;
    r->nframe = n;
    r->total = total;
    if (kbytes > 0) {   /* no frames yet: the arena may still be NULL */
        memcpy(t->arena + t->narena * t->esize, key, kbytes);
    }
    t->narena += n;
    size_t i = hash & t->imask;
    while (t->index[i] != 0) {
        i = (i + 1) & t->imask;
    }
    t->index[i] = id + 1;
    *added = 1;
    return id;
}

static void
tab_free(ht_tbtab *t)
{
    free(t->recs);
    free(t->arena);
    free(t->index);
    size_t esize = t->esize;
    memset(t, 0, sizeof(*t));
    t->esize = esize;
}

static size_t
tab_memory(const ht_tbtab *t)
{
    return (size_t)t->caprecs * sizeof(ht_tbrec) + t->caparena * t->esize
           + (t->index ? (t->imask + 1) * sizeof(uint32_t) : 0);
}

/* ---- setup ---------------------------------------------------------------- */

static PyObject *frame_tuple(PyObject *filename, int lineno);

int
ht_intern_init_once(void)
{
    if (unknown_filename == NULL) {
        unknown_filename = PyUnicode_InternFromString("<unknown>");
        if (unknown_filename == NULL) {
            return -1;
        }
    }
    if (unknown_frame == NULL) {
        unknown_frame = frame_tuple(unknown_filename, 0);
        if (unknown_frame == NULL) {
            return -1;
        }
    }
    return 0;
}

int
ht_intern_setup(int nframe)
{
    ht_rawframe *gb = ht_calloc((size_t)nframe, sizeof(ht_rawframe));
    ht_resframe *db = ht_calloc((size_t)nframe, sizeof(ht_resframe));
    if (gb == NULL || db == NULL) {
        free(gb);
        free(db);
        return -1;
    }
    free(gil_buf);
    free(det_buf);
    gil_buf = gb;
    det_buf = db;
    max_nframe = nframe;
    /* Id 0 of the GIL table is the unknown traceback. */
    if (gil_tab.nrecs == 0) {
        ht_rawframe unknown = { NULL, 0 };
        int added;
        uint64_t h = finish(mix(0, 0), 1);
        if (tab_intern(&gil_tab, &unknown, 1, 1, h, &added) != HT_TB_UNKNOWN) {
            return -1;
        }
    }
    return 0;
}

/* ---- capture with the GIL --------------------------------------------------- */

/* total_nframe of a walk that recorded n frames and stands on a frame not
 * yet counted if `more`: counts the rest of the chain, stopping where the
 * standard module's count stops, and ends the walk. */
static inline unsigned
count_rest(ht_walk *w, int more, int n)
{
    if (!more) {
        ht_walk_end(w);
        return (unsigned)n;
    }
    return ht_walk_count(w, (unsigned)n, HT_MAX_NFRAME);
}

#ifdef HT_FRAME_LINKS
/* ---- the chain memo: total_nframe without a dependent walk ----------------
 *
 * total_nframe needs the length of the whole frame chain, and following the
 * chain is a series of dependent loads: at 50 frames that is most of the
 * cost of an allocation.  But between two allocations of a thread, the
 * bottom of its chain rarely changes.  So each thread's chain below the
 * recorded frames is remembered (addresses only, with an index by address),
 * and a capture walks down only until it reaches a remembered address.
 * From there it checks that the chain in memory still is the remembered
 * one, link by link: each frame's previous must be the remembered frame
 * below it, and the bottom frame's previous must be NULL.  The loads of
 * that check come from the remembered array, not from each other, so they
 * run in parallel; and a remembered frame is only dereferenced once the
 * link to it has been found in memory, so a frame that has since died is
 * never touched.  The result is exact: every link counted is a link of the
 * chain as it is now, and every frame's weight is read from the frame as it
 * is now.  The frames walked before reaching the remembered part replace
 * its top, so the next capture from the same place finds its first frame
 * at once.  When the check fails or nothing remembered is reached, the
 * chain is walked as before and remembered afresh.
 *
 * Positions count from the bottom of the chain (0: the outermost frame), so
 * replacing the top leaves the rest in place.  The index is a lossy
 * direct-mapped cache from address to position: every hit is confirmed
 * against the array, so a stale or overwritten entry only costs a step.
 *
 * Protected by the GIL (only the GIL capture path uses it). */
#define HT_CHAIN_MAX 256          /* longer chains are not remembered */
#define HT_CHAIN_INDEX 1024       /* power of two */
#define HT_CHAIN_SLOTS 4          /* threads remembered at once */
#define HT_CHAIN_SKIP 16          /* frames walked before the memo is used */
#define HT_CHAIN_DEEP 16          /* ... unless this many were remembered */

typedef struct {
    const PyThreadState *ts;      /* whose chain; NULL: none */
    uint32_t n;                   /* frames remembered, frame[0 .. n) */
    void *frame[HT_CHAIN_MAX];    /* frame[0] the outermost */
    uint16_t index[HT_CHAIN_INDEX];   /* position + 1 by address; 0: none */
} ht_chain;

static ht_chain chains[HT_CHAIN_SLOTS];
static void *chain_scratch[HT_CHAIN_MAX];

static inline size_t
chain_home(const void *f)
{
    return (size_t)(((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ULL) >> 54)
           & (HT_CHAIN_INDEX - 1);
}

/* Put walked[0 .. nwalked) (newest first) on top of the remembered
 * frame[0 .. base), which then become the whole chain. */
static void
chain_stack(ht_chain *c, uint32_t base, void *const *walked, uint32_t nwalked)
{
    for (uint32_t k = 0; k < nwalked; k++) {
        uint32_t pos = base + nwalked - 1 - k;
        c->frame[pos] = walked[k];
        c->index[chain_home(walked[k])] = (uint16_t)(pos + 1);
    }
    c->n = base + nwalked;
}

/* Position of frame f in c's chain, or -1. */
static inline int
chain_find(const ht_chain *c, const void *f)
{
    uint32_t pos = c->index[chain_home(f)];
    return pos != 0 && pos <= c->n && c->frame[pos - 1] == f ? (int)pos - 1 : -1;
}

/* The weight of the remembered frames from position top down to the
 * bottom, if the chain in memory from frame[top] (a live frame) still is
 * the remembered one; -1 if it is not. */
static inline __attribute__((always_inline)) long
chain_verify(const ht_chain *c, uint32_t top, int exact)
{
    void *const *fr = c->frame;
    unsigned long add = 0;
    const void *g = fr[top];
    for (uint32_t k = top; k > 0; k--) {
        const void *below = fr[k - 1];
        add += ht_frame_weight(g, exact);
        if (ht_frame_previous(g) != below) {
            return -1;
        }
        g = below;
    }
    add += ht_frame_weight(g, exact);
    return ht_frame_previous(g) == NULL ? (long)add : -1;
}

/* total_nframe for a thread that has counted `counted` frames and stands
 * on frame f, not yet counted (f != NULL). */
static inline __attribute__((always_inline)) unsigned
count_chain_as(PyThreadState *ts, void *f, unsigned counted, int exact)
{
    ht_chain *c = &chains[((uintptr_t)ts >> 4) % HT_CHAIN_SLOTS];
    /* Short chains are cheaper to walk than to look up: unless the thread's
     * chain was long last time, the memo starts HT_CHAIN_SKIP frames down. */
    if (c->ts != ts || c->n < HT_CHAIN_DEEP) {
        for (int k = 0; k < HT_CHAIN_SKIP; k++) {
            counted += ht_frame_weight(f, exact);
            f = ht_frame_previous(f);
            if (f == NULL) {
                return counted > HT_MAX_NFRAME ? HT_MAX_NFRAME : counted;
            }
        }
    }
    uint32_t seen = 0;
    if (c->ts == ts) {
        for (; f != NULL && seen < HT_CHAIN_MAX; f = ht_frame_previous(f)) {
            int j = chain_find(c, f);
            if (j >= 0) {
                long add = chain_verify(c, (uint32_t)j, exact);
                if (add >= 0) {
                    if (seen > 0 && (uint32_t)j + 1 + seen <= HT_CHAIN_MAX) {
                        chain_stack(c, (uint32_t)j + 1, chain_scratch, seen);
                    }
                    unsigned long total = counted + (unsigned long)add;
                    return total > HT_MAX_NFRAME ? HT_MAX_NFRAME : (unsigned)total;
                }
                break;
            }
            chain_scratch[seen++] = f;
            counted += ht_frame_weight(f, exact);
        }
    }
    /* Walk (the rest of) the chain, and remember it if it fits. */
    for (; f != NULL && counted < HT_MAX_NFRAME; f = ht_frame_previous(f)) {
        if (seen < HT_CHAIN_MAX) {
            chain_scratch[seen] = f;
        }
        seen++;
        counted += ht_frame_weight(f, exact);
    }
    if (f == NULL && seen <= HT_CHAIN_MAX) {
        c->ts = ts;
        chain_stack(c, 0, chain_scratch, seen);
    }
    return counted > HT_MAX_NFRAME ? HT_MAX_NFRAME : counted;
}

/* (exact is almost always 0: a copy of the walk for each value, so that
 * the common one costs nothing per frame.) */
static unsigned
count_chain(PyThreadState *ts, void *f, unsigned counted, int exact)
{
    return exact ? count_chain_as(ts, f, counted, 1) : count_chain_as(ts, f, counted, 0);
}
#endif

/* The common case, nframe=1, skips the traceback table: a small
 * direct-mapped cache from (code, offset, total_nframe) to the id.  Entries
 * stay valid until ht_intern_clear, because an interned traceback keeps its
 * code object alive (so a code pointer cannot be reused meanwhile).  GIL. */
typedef struct {
    PyCodeObject *code;
    int64_t lasti;
    uint32_t total;
    uint32_t id;
} ht_one;
#define HT_ONE_SIZE 256
static ht_one one_cache[HT_ONE_SIZE];

uint32_t
ht_intern_capture_gil(PyThreadState *ts)
{
    ht_walk w;
    int more = ht_walk_start(&w, ts);
    if (!more) {
        ht_walk_end(&w);
        return HT_TB_UNKNOWN;
    }
    ht_rawframe *buf = gil_buf;
    int limit = max_nframe;
    int n = 0;
    uint64_t h = 0;
    while (more && n < limit) {
        PyCodeObject *code = ht_walk_code(&w);
        int64_t lasti = ht_walk_lasti(&w);
        buf[n].code = code;
        buf[n].lasti = lasti;
        h = combine(h, (uint64_t)(uintptr_t)code, (uint64_t)lasti);
        n++;
        more = ht_walk_next(&w);
    }
#ifdef HT_FRAME_LINKS
    unsigned total = more ? count_chain(ts, ht_walk_frame(&w), (unsigned)n, ht_walk_is_exact(&w)) : (unsigned)n;
    ht_walk_end(&w);
#else
    unsigned total = count_rest(&w, more, n);
#endif
    ht_one *one = NULL;
    if (n == 1) {
        size_t slot = (size_t)((((uintptr_t)buf[0].code >> 4) ^ (uint64_t)buf[0].lasti
                                ^ ((uint64_t)total << 7)) & (HT_ONE_SIZE - 1));
        one = &one_cache[slot];
        if (one->code == buf[0].code && one->lasti == buf[0].lasti && one->total == total) {
            return one->id;
        }
    }
    int added;
    uint32_t id = tab_intern(&gil_tab, buf, (uint16_t)n, (uint16_t)total,
                             finish(h, total), &added);
    if (id == (uint32_t)-1) {
        return HT_TB_UNKNOWN;
    }
    if (added) {
        for (int i = 0; i < n; i++) {
            Py_INCREF(buf[i].code);
        }
    }
    if (one != NULL) {
        one->code = buf[0].code;
        one->lasti = buf[0].lasti;
        one->total = total;
        one->id = id;
    }
    return id;
}

/* ---- capture without the GIL ---------------------------------------------- */

static uint32_t
detstr_intern(PyObject *s)
{
    /* Called without the GIL: read only the immutable payload of s, which
     * the caller's own frame keeps alive. */
    int kind = PyUnicode_KIND(s);
    size_t len = (size_t)PyUnicode_GET_LENGTH(s);
    const void *data = PyUnicode_DATA(s);
    size_t nbytes = len * (size_t)kind;
    uint64_t h = (uint64_t)kind * 0x100000001b3ULL;
    const unsigned char *p = data;
    for (size_t i = 0; i < nbytes; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    h = mix(h, len);
    if (det_str_index != NULL) {
        size_t i = h & det_str_imask;
        uint32_t slot;
        while ((slot = det_str_index[i]) != 0) {
            const ht_detstr *e = &det_strings[slot - 1];
            if (e->hash == h && e->kind == kind && e->len == len
                && memcmp(e->data, data, nbytes) == 0) {
                return slot - 1;
            }
            i = (i + 1) & det_str_imask;
        }
    }
    if (ndet_strings == capdet_strings) {
        uint32_t ncap = capdet_strings ? capdet_strings * 2 : 64;
        ht_detstr *a = ht_realloc(det_strings, (size_t)ncap * sizeof(ht_detstr));
        if (a == NULL) {
            return (uint32_t)-1;
        }
        det_strings = a;
        capdet_strings = ncap;
    }
    if (det_str_index == NULL || (size_t)(ndet_strings + 1) * 2 > det_str_imask + 1) {
        size_t cap = det_str_index ? (det_str_imask + 1) * 2 : 128;
        uint32_t *idx = ht_calloc(cap, sizeof(uint32_t));
        if (idx == NULL) {
            return (uint32_t)-1;
        }
        for (uint32_t id = 0; id < ndet_strings; id++) {
            size_t i = det_strings[id].hash & (cap - 1);
            while (idx[i] != 0) {
                i = (i + 1) & (cap - 1);
            }
            idx[i] = id + 1;
        }
        free(det_str_index);
        det_str_index = idx;
        det_str_imask = cap - 1;
    }
    void *copy = ht_malloc(nbytes ? nbytes : 1);
    if (copy == NULL) {
        return (uint32_t)-1;
    }
    memcpy(copy, data, nbytes);
    uint32_t id = ndet_strings++;
    det_strings[id].hash = h;
    det_strings[id].kind = kind;
    det_strings[id].len = len;
    det_strings[id].data = copy;
    size_t i = h & det_str_imask;
    while (det_str_index[i] != 0) {
        i = (i + 1) & det_str_imask;
    }
    det_str_index[i] = id + 1;
    return id;
}

/* Frames already resolved by a detached capture: (code, offset) -> (file
 * id, line), direct-mapped.  A thread in C code with the GIL released
 * (ctypes, an extension's heavy loop) calls malloc many times from the same
 * Python line; computing the line means scanning the code's line table,
 * so it is done once per entry.  A code object freed and another made at
 * its address would have to match its line table, file name object, first
 * line and offset too to be mistaken for it.  Raw lock; emptied by
 * ht_intern_clear. */
#define HT_DETLINES 512
typedef struct {
    const PyCodeObject *code;
    const void *linetable;
    const void *filename;
    int firstlineno;
    int lasti;
    uint32_t file;
    uint32_t line;
} ht_detline;
static ht_detline det_lines[HT_DETLINES];

static uint32_t unknown_detstr = (uint32_t)-1;

static uint32_t
detstr_unknown(void)
{
    if (unknown_detstr == (uint32_t)-1) {
        unknown_detstr = detstr_intern(unknown_filename);
    }
    return unknown_detstr;
}

uint32_t
ht_intern_capture_detached(PyThreadState *ts)
{
    ht_walk w;
    if (ts == NULL || !HT_WALK_DETACHED) {
        return HT_TB_UNKNOWN;
    }
    if (!ht_walk_start(&w, ts)) {
        ht_walk_end(&w);
        return HT_TB_UNKNOWN;
    }
    int limit = max_nframe;
    int n = 0;
    uint64_t h = 0;
    int more = 1;
    while (more && n < limit) {
        PyCodeObject *code = ht_walk_code(&w);
        int lasti = ht_walk_lasti(&w);
        ht_detline *c = &det_lines[(((uintptr_t)code >> 4) ^ (uintptr_t)lasti * 0x9E37u)
                                   & (HT_DETLINES - 1)];
        uint32_t file;
        int line;
        if (c->code == code && c->lasti == lasti && c->linetable == (void *)code->co_linetable
            && c->filename == (void *)code->co_filename
            && c->firstlineno == code->co_firstlineno) {
            file = c->file;
            line = (int)c->line;
        }
        else {
            line = PyCode_Addr2Line(code, lasti * (int)sizeof(_Py_CODEUNIT));
            PyObject *name = code->co_filename;
            file = (name != NULL && PyUnicode_Check(name))
                   ? detstr_intern(name) : detstr_unknown();
            if (file == (uint32_t)-1) {
                ht_walk_end(&w);
                return HT_TB_UNKNOWN;
            }
            c->code = code;
            c->lasti = lasti;
            c->linetable = code->co_linetable;
            c->filename = code->co_filename;
            c->firstlineno = code->co_firstlineno;
            c->file = file;
            c->line = line < 0 ? 0 : (uint32_t)line;
        }
        det_buf[n].file = file;
        det_buf[n].lineno = line < 0 ? 0 : (uint32_t)line;
        h = combine(h, file, det_buf[n].lineno);
        n++;
        more = ht_walk_next(&w);
    }
    unsigned total = count_rest(&w, more, n);
    int added;
    uint32_t id = tab_intern(&det_tab, det_buf, (uint16_t)n, (uint16_t)total,
                             finish(h, total), &added);
    if (id == (uint32_t)-1) {
        return HT_TB_UNKNOWN;
    }
    return id | HT_TB_DETACHED;
}

/* ---- resolution (GIL held) ------------------------------------------------ */

static PyObject *
frame_tuple(PyObject *filename, int lineno)
{
    PyObject *line = PyLong_FromLong(lineno);
    if (line == NULL) {
        return NULL;
    }
    PyObject *t = PyTuple_Pack(2, filename, line);
    Py_DECREF(line);
    return t;
}

static int
memo_grow(void)
{
    size_t cap = memo ? (memo_mask + 1) * 2 : 1024;
    ht_memo *m = ht_calloc(cap, sizeof(ht_memo));
    if (m == NULL) {
        return -1;
    }
    if (memo != NULL) {
        for (size_t i = 0; i <= memo_mask; i++) {
            if (memo[i].key1 == 0) {
                continue;
            }
            size_t j = mix((uint64_t)(uintptr_t)memo[i].code, (uint64_t)memo[i].lasti) & (cap - 1);
            while (m[j].key1 != 0) {
                j = (j + 1) & (cap - 1);
            }
            m[j] = memo[i];
        }
    }
    free(memo);
    memo = m;
    memo_mask = cap - 1;
    return 0;
}

/* The (filename, lineno) tuple of a raw frame with a code object, borrowed
 * from the memo (valid until ht_intern_clear), and its key; NULL with an
 * exception set. */
static PyObject *
memo_frame(PyCodeObject *code, int64_t lasti, uint32_t *key)
{
    if (memo != NULL) {
        size_t j = mix((uint64_t)(uintptr_t)code, (uint64_t)lasti) & memo_mask;
        for (; memo[j].key1 != 0; j = (j + 1) & memo_mask) {
            if (memo[j].code == code && memo[j].lasti == lasti) {
                *key = memo[j].key1 - 1;
                return key_frame[*key];
            }
        }
    }
    int line = PyCode_Addr2Line(code, (int)lasti * (int)sizeof(_Py_CODEUNIT));
    PyObject *name = code->co_filename;
    if (name == NULL || !PyUnicode_Check(name)) {
        name = unknown_filename;
    }
    /* The name is held across the allocations below: the callers keep
     * automatic collection off (so no finalizer can clear the tables and
     * release the code object meanwhile), and this reference is the second
     * line of defence. */
    Py_INCREF(name);
    PyObject *frame = frame_tuple(name, line < 0 ? 0 : line);
    Py_DECREF(name);
    if (frame == NULL) {
        return NULL;
    }
    /* Creating the tuple may have run the hooks, but they never touch the
     * memo, so it is safe to insert now. */
    if (memo_used >= UINT32_MAX - 1
        || ((memo == NULL || (memo_used + 1) * 2 > memo_mask + 1) && memo_grow() < 0)) {
        Py_DECREF(frame);
        PyErr_NoMemory();
        return NULL;
    }
    size_t j = mix((uint64_t)(uintptr_t)code, (uint64_t)lasti) & memo_mask;
    while (memo[j].key1 != 0) {
        j = (j + 1) & memo_mask;
    }
    if (memo_used >= cap_key_frame) {
        size_t cap = cap_key_frame ? cap_key_frame * 2 : 1024;
        PyObject **kf = ht_realloc(key_frame, cap * sizeof(PyObject *));
        if (kf == NULL) {
            Py_DECREF(frame);
            PyErr_NoMemory();
            return NULL;
        }
        key_frame = kf;
        cap_key_frame = cap;
    }
    memo[j].code = code;
    memo[j].lasti = lasti;
    memo[j].key1 = (uint32_t)memo_used + 1;
    key_frame[memo_used] = frame;
    *key = (uint32_t)memo_used++;
    return frame;
}

/* (filename, lineno) of a raw frame: a new reference, or NULL + exception. */
static PyObject *
resolve_raw(PyCodeObject *code, int64_t lasti)
{
    if (code == NULL) {
        return Py_NewRef(unknown_frame);
    }
    uint32_t key;
    PyObject *frame = memo_frame(code, lasti, &key);
    return frame == NULL ? NULL : Py_NewRef(frame);
}

/* ---- reading the tables from Python-facing code ------------------------------
 *
 * Resolving a traceback makes Python objects (frame tuples, file names).  On
 * 3.11 a collection can run inside such an allocation, and a finalizer may
 * then call clear_traces() or stop(), which frees every table being read
 * here.  So every entry point that resolves keeps automatic collection off
 * while it reads (nothing made here can form a cycle), and re-reads table
 * storage after each allocation.  (3.12 and newer only collect between
 * bytecodes, never inside an allocation.) */

static int locations(uint32_t tb, uint32_t *keys, size_t cap, size_t *n);

int
ht_intern_locations(uint32_t tb, uint32_t *keys, size_t cap, size_t *n)
{
    int gc_was_on = PyGC_Disable();
    int rc = locations(tb, keys, cap, n);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return rc;
}

static int
locations(uint32_t tb, uint32_t *keys, size_t cap, size_t *n)
{
    if ((tb & HT_TB_DETACHED) || tb >= gil_tab.nrecs) {
        PyErr_SetString(PyExc_RuntimeError, "unknown traceback id");
        return -1;
    }
    uint16_t nf = gil_tab.recs[tb].nframe;
    uint32_t off = gil_tab.recs[tb].off;
    *n = nf;
    if (nf > cap) {
        return 1;
    }
    if (narena_keys < gil_tab.narena) {
        size_t want = gil_tab.caparena;
        uint32_t *k = ht_realloc(arena_keys, want * sizeof(uint32_t));
        if (k == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(k + narena_keys, 0xFF, (want - narena_keys) * sizeof(uint32_t));
        arena_keys = k;
        narena_keys = want;
    }
    for (uint16_t i = 0; i < nf; i++) {
        uint32_t key = arena_keys[off + i];
        if (key == UINT32_MAX) {
            /* Re-read the arena every time: allocating may have moved it. */
            const ht_rawframe *rf = (const ht_rawframe *)gil_tab.arena + off + i;
            if (rf->code != NULL) {
                if (memo_frame(rf->code, rf->lasti, &key) == NULL) {
                    return -1;
                }
                arena_keys[off + i] = key;
            }
        }
        keys[i] = key;
    }
    return 0;
}

PyObject *
ht_intern_location_frame(uint32_t key)
{
    return key < memo_used ? key_frame[key] : unknown_frame;
}

/* Grow a cache array of Python references to hold index id. */
static int
cache_reserve(PyObject ***cache, uint32_t *len, uint32_t id)
{
    if (id < *len) {
        return 0;
    }
    uint32_t n = *len ? *len : 256;
    while (n <= id) {
        n *= 2;
    }
    PyObject **c = ht_realloc(*cache, (size_t)n * sizeof(PyObject *));
    if (c == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(c + *len, 0, (size_t)(n - *len) * sizeof(PyObject *));
    *cache = c;
    *len = n;
    return 0;
}

static PyObject *
frames_gil(uint32_t id)
{
    if (id >= gil_tab.nrecs) {
        PyErr_SetString(PyExc_RuntimeError, "unknown traceback id");
        return NULL;
    }
    if (id < gil_cache_len && gil_cache[id] != NULL) {
        return Py_NewRef(gil_cache[id]);
    }
    uint16_t n = gil_tab.recs[id].nframe;
    uint32_t off = gil_tab.recs[id].off;
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        return NULL;
    }
    for (uint16_t i = 0; i < n; i++) {
        /* Re-read the arena every time: allocating may have moved it. */
        const ht_rawframe *rf = (const ht_rawframe *)gil_tab.arena + off + i;
        PyObject *frame = resolve_raw(rf->code, rf->lasti);
        if (frame == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, frame);
    }
    if (cache_reserve(&gil_cache, &gil_cache_len, id) < 0) {
        Py_DECREF(tuple);
        return NULL;
    }
    gil_cache[id] = Py_NewRef(tuple);
    return tuple;
}

extern pthread_mutex_t ht_raw_lock;

static PyObject *
detstr_object(uint32_t sid)
{
    if (sid < detstr_cache_len && detstr_cache[sid] != NULL) {
        return Py_NewRef(detstr_cache[sid]);
    }
    pthread_mutex_lock(&ht_raw_lock);
    int kind = det_strings[sid].kind;
    size_t len = det_strings[sid].len;
    const void *data = det_strings[sid].data;   /* stable until cleared */
    pthread_mutex_unlock(&ht_raw_lock);
    PyObject *s = PyUnicode_FromKindAndData(kind, data, (Py_ssize_t)len);
    if (s == NULL) {
        return NULL;
    }
    if (cache_reserve(&detstr_cache, &detstr_cache_len, sid) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    detstr_cache[sid] = Py_NewRef(s);
    return s;
}

static PyObject *
frames_detached(uint32_t id)
{
    if (id < det_cache_len && det_cache[id] != NULL) {
        return Py_NewRef(det_cache[id]);
    }
    /* Copy the record out under the lock; build Python objects outside. */
    pthread_mutex_lock(&ht_raw_lock);
    if (id >= det_tab.nrecs) {
        pthread_mutex_unlock(&ht_raw_lock);
        PyErr_SetString(PyExc_RuntimeError, "unknown traceback id");
        return NULL;
    }
    uint16_t n = det_tab.recs[id].nframe;
    ht_resframe *frames = malloc((size_t)(n ? n : 1) * sizeof(ht_resframe));
    if (frames != NULL && n > 0) {  /* the arena may be NULL when n == 0 */
        memcpy(frames, det_tab.arena + (size_t)det_tab.recs[id].off * sizeof(ht_resframe),
               (size_t)n * sizeof(ht_resframe));
    }
    pthread_mutex_unlock(&ht_raw_lock);
    if (frames == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) {
        free(frames);
        return NULL;
    }
    for (uint16_t i = 0; i < n; i++) {
        PyObject *name = detstr_object(frames[i].file);
        PyObject *frame = name ? frame_tuple(name, (int)frames[i].lineno) : NULL;
        Py_XDECREF(name);
        if (frame == NULL) {
            free(frames);
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, frame);
    }
    free(frames);
    if (cache_reserve(&det_cache, &det_cache_len, id) < 0) {
        Py_DECREF(tuple);
        return NULL;
    }
    det_cache[id] = Py_NewRef(tuple);
    return tuple;
}

static PyObject *frames(uint32_t tb);

PyObject *
ht_intern_frames(uint32_t tb)
{
    int gc_was_on = PyGC_Disable();
    PyObject *result = frames(tb);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return result;
}

static PyObject *
frames(uint32_t tb)
{
    if (tb == HT_TB_UNKNOWN) {
        PyObject *frame = frame_tuple(unknown_filename, 0);
        if (frame == NULL) {
            return NULL;
        }
        PyObject *tuple = PyTuple_Pack(1, frame);
        Py_DECREF(frame);
        return tuple;
    }
    if (tb & HT_TB_DETACHED) {
        return frames_detached(tb & ~HT_TB_DETACHED);
    }
    return frames_gil(tb);
}

void
ht_intern_counts(uint32_t *ngil, uint32_t *ndetached)
{
    *ngil = gil_tab.nrecs;
    pthread_mutex_lock(&ht_raw_lock);
    *ndetached = det_tab.nrecs;
    pthread_mutex_unlock(&ht_raw_lock);
}

int
ht_intern_total(uint32_t tb)
{
    if (tb == HT_TB_UNKNOWN) {
        return 1;
    }
    if (tb & HT_TB_DETACHED) {
        uint32_t id = tb & ~HT_TB_DETACHED;
        pthread_mutex_lock(&ht_raw_lock);
        int total = id < det_tab.nrecs ? det_tab.recs[id].total : 0;
        pthread_mutex_unlock(&ht_raw_lock);
        return total;
    }
    return tb < gil_tab.nrecs ? gil_tab.recs[tb].total : 0;
}

/* ---- clearing --------------------------------------------------------------- */

static void
garbage_add(ht_garbage *g, size_t *cap, PyObject *obj)
{
    if (obj == NULL) {
        return;
    }
    if (g->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        PyObject **items = realloc(g->items, ncap * sizeof(PyObject *));
        if (items == NULL) {
            return;   /* leak the reference rather than release it here */
        }
        g->items = items;
        *cap = ncap;
    }
    g->items[g->n++] = obj;
}

void
ht_intern_clear(ht_garbage *garbage)
{
    size_t cap = 0;
    garbage->items = NULL;
    garbage->n = 0;
    for (uint32_t id = 0; id < gil_tab.nrecs; id++) {
        const ht_rawframe *rf = (const ht_rawframe *)gil_tab.arena + gil_tab.recs[id].off;
        for (uint16_t i = 0; i < gil_tab.recs[id].nframe; i++) {
            garbage_add(garbage, &cap, (PyObject *)rf[i].code);
        }
    }
    for (uint32_t i = 0; i < gil_cache_len; i++) {
        garbage_add(garbage, &cap, gil_cache[i]);
    }
    for (uint32_t i = 0; i < det_cache_len; i++) {
        garbage_add(garbage, &cap, det_cache[i]);
    }
    for (uint32_t i = 0; i < detstr_cache_len; i++) {
        garbage_add(garbage, &cap, detstr_cache[i]);
    }
    for (size_t k = 0; k < memo_used; k++) {
        garbage_add(garbage, &cap, key_frame[k]);
    }
    memset(one_cache, 0, sizeof(one_cache));
    memset(det_lines, 0, sizeof(det_lines));
    free(gil_cache);
    free(det_cache);
    free(detstr_cache);
    free(memo);
    free(key_frame);
    free(arena_keys);
    key_frame = NULL;
    arena_keys = NULL;
    cap_key_frame = narena_keys = 0;
    gil_cache = det_cache = detstr_cache = NULL;
    gil_cache_len = det_cache_len = detstr_cache_len = 0;
    memo = NULL;
    memo_mask = memo_used = 0;
    tab_free(&gil_tab);
    tab_free(&det_tab);
    for (uint32_t i = 0; i < ndet_strings; i++) {
        free(det_strings[i].data);
    }
    free(det_strings);
    free(det_str_index);
    det_strings = NULL;
    det_str_index = NULL;
    ndet_strings = capdet_strings = 0;
    det_str_imask = 0;
    unknown_detstr = (uint32_t)-1;
    /* Id 0 again the unknown traceback; its key needs no memory beyond the
     * first allocation of the table, and if that fails, capture falls back
     * to id 0 anyway, which frames_gil rejects until setup succeeds. */
    ht_rawframe unknown = { NULL, 0 };
    int added;
    (void)tab_intern(&gil_tab, &unknown, 1, 1, finish(mix(0, 0), 1), &added);
}

void
ht_garbage_release(ht_garbage *garbage)
{
    for (size_t i = 0; i < garbage->n; i++) {
        Py_DECREF(garbage->items[i]);
    }
    free(garbage->items);
    garbage->items = NULL;
    garbage->n = 0;
}

size_t
ht_intern_memory(void)
{
    size_t n = tab_memory(&gil_tab) + tab_memory(&det_tab);
    n += (size_t)capdet_strings * sizeof(ht_detstr);
    n += det_str_index ? (det_str_imask + 1) * sizeof(uint32_t) : 0;
    n += memo ? (memo_mask + 1) * sizeof(ht_memo) : 0;
    n += cap_key_frame * sizeof(PyObject *) + narena_keys * sizeof(uint32_t);
    n += ((size_t)gil_cache_len + det_cache_len + detstr_cache_len) * sizeof(PyObject *);
    n += (size_t)max_nframe * (sizeof(ht_rawframe) + sizeof(ht_resframe));
    return n;
}
