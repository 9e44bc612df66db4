/* test_format.c: standalone tests of the snapshot file format (format.c)
 * and of the ht_snap helpers (snapdata.c).
 *
 * Two kinds of checks.  Round trips: snapshots built here (empty, one trace,
 * edge values, many random ones, realistic big ones) must come back from
 * encode + decode exactly equal.  Hostile input: every prefix of a file,
 * every single-bit flip (with the checksums left stale and with them
 * recomputed, so the structural checks behind the CRC get exercised too),
 * spliced files, hand-made sections and headers that lie, random bytes and
 * failing allocations must each give a clean error: the right status, a
 * zeroed snapshot, no leak, no sanitizer report, and no allocation larger
 * than the input justifies.
 *
 * Build with format.c and snapdata.c, -DHT_FORMAT_ALLOC_HOOK, and ideally
 * -fsanitize=address,undefined (see the Makefile).  Run without arguments
 * for the test suite; `--measure N [out.bin]` prints the size of a realistic
 * N-trace snapshot instead (and writes it and a plain dump for comparison).
 * Exits 0 only if every check passed.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format.h"
#include "snapdata.h"

/* ------------------------------------------------------------ framework */

static long n_pass, n_fail;

#define CHECK(cond, ...) do {                                            \
        if (cond) {                                                      \
            n_pass++;                                                    \
        } else {                                                         \
            n_fail++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                \
            fputc('\n', stderr);                                         \
        }                                                                \
    } while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void)       /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static uint64_t rnd_below(uint64_t n)
{
    return n == 0 ? 0 : rnd() % n;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        fprintf(stderr, "test: out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------ snapshot builder */

/* Allocate the arrays of *s for the given counts (contents left to fill). */
static void snap_alloc(ht_snap *s, uint32_t nstrings, uint64_t blob,
                       uint32_t nframes, uint32_t ntb, uint32_t nentries,
                       uint64_t ntraces)
{
    memset(s, 0, sizeof(*s));
    s->nstrings = nstrings;
    s->str_off = xmalloc((nstrings + 1) * sizeof(uint64_t));
    s->str_off[0] = 0;
    s->str_blob = xmalloc(blob);
    s->nframes = nframes;
    s->frame_file = xmalloc(nframes * sizeof(uint32_t));
    s->frame_line = xmalloc(nframes * sizeof(uint32_t));
    s->ntracebacks = ntb;
    s->tb_off = xmalloc((ntb + 1) * sizeof(uint32_t));
    s->tb_off[0] = 0;
    s->tb_frames = xmalloc(nentries * sizeof(uint32_t));
    s->tb_total = xmalloc(ntb * sizeof(int32_t));
    s->ntraces = ntraces;
    s->tr_domain = xmalloc(ntraces * sizeof(uint32_t));
    s->tr_size = xmalloc(ntraces * sizeof(uint64_t));
    s->tr_tb = xmalloc(ntraces * sizeof(uint32_t));
}

/* Snapshot from a list of strings and compact descriptions of the rest. */
static void snap_build(ht_snap *s, int32_t limit, const char *const *strs,
                       uint32_t nstr, const uint32_t (*frames)[2], uint32_t nfr,
                       const uint32_t *tb_lens, const uint32_t *tb_entries,
                       const int32_t *tb_total, uint32_t ntb,
                       const uint32_t *dom, const uint64_t *size,
                       const uint32_t *tb, uint64_t ntr)
{
    uint64_t blob = 0;
    uint32_t nentries = 0;
    for (uint32_t i = 0; i < nstr; i++) {
        blob += strlen(strs[i]);
    }
    for (uint32_t i = 0; i < ntb; i++) {
        nentries += tb_lens[i];
    }
    snap_alloc(s, nstr, blob, nfr, ntb, nentries, ntr);
    s->traceback_limit = limit;
    for (uint32_t i = 0; i < nstr; i++) {
        size_t n = strlen(strs[i]);
        memcpy(s->str_blob + s->str_off[i], strs[i], n);
        s->str_off[i + 1] = s->str_off[i] + n;
    }
    for (uint32_t i = 0; i < nfr; i++) {
        s->frame_file[i] = frames[i][0];
        s->frame_line[i] = frames[i][1];
    }
    for (uint32_t i = 0; i < ntb; i++) {
        s->tb_off[i + 1] = s->tb_off[i] + tb_lens[i];
        s->tb_total[i] = tb_total[i];
    }
    if (nentries > 0) {
        memcpy(s->tb_frames, tb_entries, nentries * sizeof(uint32_t));
    }
    for (uint64_t i = 0; i < ntr; i++) {
        s->tr_domain[i] = dom[i];
        s->tr_size[i] = size[i];
        s->tr_tb[i] = tb[i];
    }
}

/* The edge-value snapshot: empty and non-ASCII strings, a lone surrogate,
 * extreme lines, an empty traceback, total_nframe -1 / 65535 / INT32_MAX,
 * sizes 0 / 2^32 / 2^64-1, domain 2^32-1. */
static void snap_edge(ht_snap *s)
{
    static const char *const strs[] = {
        "", "a.py", "/usr/lib/python3.11/json/decoder.py",
        "/tmp/caf\xc3\xa9/\xe6\x97\xa5\xe6\x9c\xac/\xf0\x9f\x90\x8d.py",
        "bad\xed\xa0\x80surrogate.py", "<unknown>",
    };
    static const uint32_t frames[][2] = {
        {0, 0}, {1, 1}, {2, UINT32_MAX}, {3, 42}, {4, 7}, {5, 0}, {1, 2},
    };
    static const uint32_t tb_lens[] = {1, 0, 3, 2, 1, 1};
    static const uint32_t tb_entries[] = {5, 1, 2, 3, 4, 6, 0, 6};
    static const int32_t tb_total[] = {1, -1, 65535, 2, INT32_MAX, 0};
    static const uint32_t dom[] = {0, 0, UINT32_MAX, 0, 1, 0, 0};
    static const uint64_t size[] = {
        0, 1, 4294967296u, UINT64_MAX, 127, 128, 16384,
    };
    static const uint32_t tb[] = {0, 1, 2, 3, 4, 5, 0};
    snap_build(s, 65535, strs, 6, frames, 7, tb_lens, tb_entries, tb_total, 6,
               dom, size, tb, 7);
}

/* Give s native frames (format version 2): three frames (one without a
 * function), three stacks (empty, two and three frames), trace i using
 * stack i % 3.  s needs at least two strings. */
static void snap_add_native(ht_snap *s)
{
    static const uint32_t func[] = {1, 0, 2};
    static const uint32_t lib[] = {1, 1, 0};
    static const uint64_t off[] = {0x1140, UINT64_MAX, 0};
    static const uint32_t stoff[] = {0, 0, 2, 5};
    static const uint32_t stfr[] = {0, 1, 2, 1, 0};
    s->nnframes = 3;
    s->nf_func = xmalloc(sizeof(func));
    s->nf_lib = xmalloc(sizeof(lib));
    s->nf_off = xmalloc(sizeof(off));
    memcpy(s->nf_func, func, sizeof(func));
    memcpy(s->nf_lib, lib, sizeof(lib));
    memcpy(s->nf_off, off, sizeof(off));
    s->nnstacks = 3;
    s->ns_off = xmalloc(sizeof(stoff));
    s->ns_frames = xmalloc(sizeof(stfr));
    memcpy(s->ns_off, stoff, sizeof(stoff));
    memcpy(s->ns_frames, stfr, sizeof(stfr));
    s->tr_nstack = xmalloc((s->ntraces ? s->ntraces : 1) * sizeof(uint32_t));
    for (uint64_t i = 0; i < s->ntraces; i++) {
        s->tr_nstack[i] = (uint32_t)(i % 3);
    }
}

/* A random snapshot; `shape` varies how the columns look so that every
 * column coding (raw, delta, runs) gets chosen somewhere. */
static void snap_random(ht_snap *s, int shape)
{
    uint32_t nstr = (uint32_t)rnd_below(12) + (shape == 0 ? 0 : 1);
    uint32_t nfr = nstr == 0 ? 0 : (uint32_t)rnd_below(30);
    uint32_t ntb = nfr == 0 ? (uint32_t)rnd_below(3) : (uint32_t)rnd_below(40);
    uint64_t ntr = ntb == 0 ? 0 : rnd_below(shape == 3 ? 3000 : 300);
    uint32_t *lens = xmalloc(ntb * sizeof(uint32_t));
    uint32_t nentries = 0;
    for (uint32_t i = 0; i < ntb; i++) {
        lens[i] = nfr == 0 ? 0 : (uint32_t)rnd_below(rnd_below(4) ? 4 : 40);
        nentries += lens[i];
    }
    uint64_t blob = 0;
    uint32_t *slen = xmalloc(nstr * sizeof(uint32_t));
    for (uint32_t i = 0; i < nstr; i++) {
        slen[i] = (uint32_t)rnd_below(rnd_below(8) ? 20 : 300);
        blob += slen[i];
    }
    snap_alloc(s, nstr, blob, nfr, ntb, nentries, ntr);
    s->traceback_limit = (int32_t)(uint32_t)rnd();
    for (uint32_t i = 0; i < nstr; i++) {
        char *p = s->str_blob + s->str_off[i];
        uint32_t k = 0;
        while (k < slen[i]) {   /* valid UTF-8 of 1-4 byte sequences */
            uint32_t room = slen[i] - k, kind = (uint32_t)rnd_below(8);
            if (kind >= 3 || room < 2) {
                p[k++] = (char)(0x20 + rnd_below(0x5F));
            } else if (kind == 0 || room < 3) {
                p[k++] = (char)(0xC2 + rnd_below(30));
                p[k++] = (char)(0x80 + rnd_below(64));
            } else if (kind == 1 || room < 4) {
                p[k++] = (char)(0xE1 + rnd_below(15));   /* incl. ED */
                p[k++] = (char)(0x80 + rnd_below(64));
                p[k++] = (char)(0x80 + rnd_below(64));
            } else {
                p[k++] = (char)(0xF1 + rnd_below(3));
                p[k++] = (char)(0x80 + rnd_below(64));
                p[k++] = (char)(0x80 + rnd_below(64));
                p[k++] = (char)(0x80 + rnd_below(64));
            }
        }
        s->str_off[i + 1] = s->str_off[i] + slen[i];
    }
    for (uint32_t i = 0; i < nfr; i++) {
        s->frame_file[i] = shape == 2 ? i * nstr / nfr : (uint32_t)rnd_below(nstr);
        s->frame_line[i] = rnd_below(10) == 0 ? (uint32_t)rnd()
                           : (uint32_t)rnd_below(5000);
    }
    for (uint32_t i = 0; i < ntb; i++) {
        s->tb_off[i + 1] = s->tb_off[i] + lens[i];
        uint32_t pick = (uint32_t)rnd_below(6);
        s->tb_total[i] = pick == 0 ? -1 : pick == 1 ? 65535
            : pick == 2 ? (int32_t)rnd_below((uint64_t)INT32_MAX + 1)
            : (int32_t)(lens[i] + (pick == 3 ? (uint32_t)rnd_below(5) : 0));
    }
    for (uint32_t k = 0; k < nentries; k++) {
        s->tb_frames[k] = (uint32_t)rnd_below(nfr);
    }
    for (uint64_t i = 0; i < ntr; i++) {
        uint64_t r = rnd();
        s->tr_domain[i] = shape == 1 ? (uint32_t)r : rnd_below(50) == 0
            ? (rnd_below(2) ? UINT32_MAX : (uint32_t)rnd_below(5)) : 0;
        switch (rnd_below(6)) {
        case 0: s->tr_size[i] = 0; break;
        case 1: s->tr_size[i] = r; break;
        case 2: s->tr_size[i] = ((uint64_t)1 << 32) + rnd_below(1000); break;
        default: s->tr_size[i] = rnd_below(4096); break;
        }
        s->tr_tb[i] = shape == 3 ? (uint32_t)(i * ntb / ntr)
                                 : (uint32_t)rnd_below(ntb);
        if (shape == 3) {
            s->tr_size[i] = 8 * (i / 7);      /* sorted: delta pays */
        }
    }
    free(lens);
    free(slen);
}

struct pair {
    uint32_t tb;
    uint64_t size;
};

static int pair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    if (x->tb != y->tb) {
        return x->tb < y->tb ? -1 : 1;
    }
    return x->size < y->size ? -1 : x->size > y->size;
}

/* Realistic snapshot of a Python program: a few thousand file names sharing
 * prefixes, allocation sites hit with a skewed (Zipf-like) frequency, each
 * site allocating mostly one typical size, domain 0 everywhere, traceback
 * ids in arbitrary order (as a hash table hands them out).  If `sorted`,
 * traces are ordered by traceback id then size. */
static void snap_realistic(ht_snap *s, uint64_t ntr, uint32_t depth,
                           int sorted)
{
    uint32_t nfiles = 2000, nfr = 40000, ntb = 30000;
    uint64_t blob = 0;
    char name[128];
    for (uint32_t i = 0; i < nfiles; i++) {
        blob += (uint64_t)snprintf(name, sizeof(name),
                                   "/usr/lib/python3.11/site-packages/pkg%u/"
                                   "module_%u.py", i / 40, i);
    }
    snap_alloc(s, nfiles, blob, nfr, ntb, ntb * depth, ntr);
    s->traceback_limit = (int32_t)depth;
    for (uint32_t i = 0; i < nfiles; i++) {
        int n = snprintf(name, sizeof(name), "/usr/lib/python3.11/"
                         "site-packages/pkg%u/module_%u.py", i / 40, i);
        memcpy(s->str_blob + s->str_off[i], name, (size_t)n);
        s->str_off[i + 1] = s->str_off[i] + (uint64_t)n;
    }
    for (uint32_t i = 0; i < nfr; i++) {
        s->frame_file[i] = (uint32_t)(rnd_below(nfiles) * rnd_below(nfiles)
                                      / nfiles);
        s->frame_line[i] = 1 + (uint32_t)rnd_below(3000);
    }
    uint64_t *typical = xmalloc(ntb * sizeof(uint64_t));
    for (uint32_t i = 0; i < ntb; i++) {
        s->tb_off[i + 1] = s->tb_off[i] + depth;
        s->tb_total[i] = (int32_t)(depth + (rnd_below(4) == 0 ? rnd_below(30)
                                                               : 0));
        for (uint32_t k = 0; k < depth; k++) {
            s->tb_frames[i * depth + k] = (uint32_t)rnd_below(nfr);
        }
        uint64_t r = rnd_below(100);
        typical[i] = r < 70 ? 16 + 8 * rnd_below(15)
                   : r < 95 ? 128 + rnd_below(4000) : 4096 + rnd_below(1 << 20);
    }
    /* site ranks: rank r is hit with weight ~ 1/(r+1); ids are a random
     * permutation of ranks */
    uint32_t *perm = xmalloc(ntb * sizeof(uint32_t));
    for (uint32_t i = 0; i < ntb; i++) {
        perm[i] = i;
    }
    for (uint32_t i = ntb - 1; i > 0; i--) {
        uint32_t j = (uint32_t)rnd_below(i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (uint64_t i = 0; i < ntr; i++) {
        /* inverse CDF of a density ~ 1/x on [1, ntb]: x = ntb^u */
        double u = (double)(rnd() >> 11) / 9007199254740992.0;
        uint32_t rank = (uint32_t)pow((double)ntb, u) - 1;
        if (rank >= ntb) {
            rank = ntb - 1;
        }
        uint32_t id = perm[rank];
        s->tr_domain[i] = 0;
        s->tr_tb[i] = id;
        s->tr_size[i] = rnd_below(5) != 0 ? typical[id]
                        : 16 + 8 * rnd_below(64);
    }
    if (sorted) {
        struct pair *v = xmalloc(ntr * sizeof(struct pair));
        for (uint64_t i = 0; i < ntr; i++) {
            v[i].tb = s->tr_tb[i];
            v[i].size = s->tr_size[i];
        }
        qsort(v, ntr, sizeof(struct pair), pair_cmp);
        for (uint64_t i = 0; i < ntr; i++) {
            s->tr_tb[i] = v[i].tb;
            s->tr_size[i] = v[i].size;
        }
        free(v);
    }
    free(perm);
    free(typical);
}

/* ntb one-frame tracebacks, ntr traces mostly using a few with large ids,
 * interleaved with the others: the writer stores a traceback rank map for
 * it (given ntb >= 200 and ntr >= 5 * ntb). */
static void snap_skewed(ht_snap *s, uint32_t ntb, uint32_t ntr)
{
    snap_alloc(s, 1, 4, 1, ntb, ntb, ntr);
    memcpy(s->str_blob, "x.py", 4);
    s->str_off[1] = 4;
    s->frame_file[0] = 0;
    s->frame_line[0] = 1;
    for (uint32_t i = 0; i < ntb; i++) {
        s->tb_off[i + 1] = i + 1;
        s->tb_frames[i] = 0;
        s->tb_total[i] = 1;
    }
    for (uint32_t i = 0; i < ntr; i++) {
        s->tr_domain[i] = 0;
        s->tr_size[i] = i % 100;
        s->tr_tb[i] = i % 4 == 0 ? i % ntb
                    : i % 2 ? ntb - 1 : 3 * ntb / 4 + i % 8;
    }
}

/* ------------------------------------------------------ decode harness */

static const ht_snap zero_snap;

/* Decode with every contract check of ht_format_decode: a valid status;
 * on failure a zeroed snapshot, NULL meta and a message; on success a
 * snapshot that validates; and in both cases no allocation beyond what the
 * input length justifies. */
static ht_format_status decode_checked(const uint8_t *buf, size_t len,
                                       ht_snap *out, uint8_t **meta,
                                       size_t *meta_len, char *err,
                                       size_t errlen)
{
    uint8_t *m = (uint8_t *)"sentinel";
    size_t ml = 12345;
    ht_format_alloc_max = 0;
    ht_format_alloc_total = 0;
    err[0] = 0;
    ht_format_status st = ht_format_decode(buf, len, out, &m, &ml, err,
                                           errlen);
    CHECK(st >= HT_FORMAT_OK && st <= HT_FORMAT_NO_MEMORY, "status %d", st);
    CHECK(ht_format_alloc_max <= 8 * len + 16,
          "largest allocation %zu for a %zu-byte input", ht_format_alloc_max,
          len);
    CHECK(ht_format_alloc_total <= 16 * len + 64,
          "allocated %zu bytes for a %zu-byte input", ht_format_alloc_total,
          len);
    if (st == HT_FORMAT_OK) {
        char verr[200];
        CHECK(ht_snap_validate(out, verr, sizeof(verr)) == 0, "%s", verr);
        CHECK(m != NULL && m[ml] == 0, "meta not NUL-terminated");
        CHECK(out->str_off != NULL && out->tb_off != NULL,
              "offset tables missing");
    } else {
        CHECK(memcmp(out, &zero_snap, sizeof(*out)) == 0,
              "snapshot not zeroed after %s", ht_format_status_name(st));
        CHECK(m == NULL && ml == 0, "meta not reset after an error");
        CHECK(err[0] != 0, "no message for %s", ht_format_status_name(st));
    }
    if (meta != NULL) {
        *meta = m;
        *meta_len = ml;
    } else {
        free(m);
    }
    return st;
}

/* Encode, decode, compare; then re-encode and expect the same bytes. */
static void roundtrip(const ht_snap *s, const uint8_t *meta, size_t meta_len,
                      const char *label, size_t *file_len)
{
    uint8_t *buf = NULL, *buf2 = NULL, *m = NULL;
    size_t len = 0, len2 = 0, ml = 0;
    char err[256];
    ht_snap d;
    char verr[200];
    CHECK(ht_snap_validate(s, verr, sizeof(verr)) == 0, "%s: input: %s",
          label, verr);
    CHECK(ht_format_encode(s, meta, meta_len, &buf, &len) == 0, "%s", label);
    if (buf == NULL) {
        return;
    }
    if (file_len != NULL) {
        *file_len = len;
    }
    ht_format_status st = decode_checked(buf, len, &d, &m, &ml, err,
                                         sizeof(err));
    CHECK(st == HT_FORMAT_OK, "%s: %s: %s", label, ht_format_status_name(st),
          err);
    if (st == HT_FORMAT_OK) {
        CHECK(ht_snap_equal(s, &d), "%s: decoded snapshot differs", label);
        CHECK(ml == meta_len && (meta_len == 0 || memcmp(m, meta, ml) == 0),
              "%s: meta differs", label);
        CHECK(ht_format_encode(&d, m, ml, &buf2, &len2) == 0, "%s", label);
        CHECK(len2 == len && memcmp(buf, buf2, len) == 0,
              "%s: re-encoding gives different bytes", label);
        free(buf2);
    }
    ht_snap_free(&d);
    free(m);
    free(buf);
}

/* Recompute both checksums of a file in place (when it is long enough to
 * have them), so that the decoder's structural checks get to run. */
static void fix_crc(uint8_t *buf, size_t len)
{
    if (len >= HT_FORMAT_HEADER_SIZE) {
        uint32_t c = ht_crc32c(0, buf, HT_FORMAT_HEADER_CRC_OFFSET);
        for (int i = 0; i < 4; i++) {
            buf[HT_FORMAT_HEADER_CRC_OFFSET + i] = (uint8_t)(c >> (8 * i));
        }
    }
    if (len >= HT_FORMAT_HEADER_SIZE + HT_FORMAT_TRAILER_SIZE) {
        size_t body = len - HT_FORMAT_HEADER_SIZE - HT_FORMAT_TRAILER_SIZE;
        uint32_t c = ht_crc32c(0, buf + HT_FORMAT_HEADER_SIZE, body);
        for (int i = 0; i < 4; i++) {
            buf[len - 4 + i] = (uint8_t)(c >> (8 * i));
        }
    }
}

static long outcome[HT_FORMAT_NO_MEMORY + 1];
static long hostile_inputs;

/* Feed one hostile input; a success must round-trip like any snapshot. */
static ht_format_status hostile(const uint8_t *buf, size_t len)
{
    ht_snap d;
    char err[256];
    uint8_t *m;
    size_t ml;
    hostile_inputs++;
    ht_format_status st = decode_checked(buf, len, &d, &m, &ml, err,
                                         sizeof(err));
    if (st >= HT_FORMAT_OK && st <= HT_FORMAT_NO_MEMORY) {
        outcome[st]++;
    }
    if (st == HT_FORMAT_OK) {
        roundtrip(&d, m, ml, "hostile input accepted", NULL);
    }
    ht_snap_free(&d);
    free(m);
    return st;
}

/* Same input with its checksums recomputed. */
static ht_format_status hostile_fixed(const uint8_t *buf, size_t len)
{
    uint8_t *copy = xmalloc(len);
    if (len > 0) {
        memcpy(copy, buf, len);
    }
    fix_crc(copy, len);
    ht_format_status st = hostile(copy, len);
    free(copy);
    return st;
}

/* Whether a valid file carries a traceback rank map: its decode then makes
 * a 12th allocation (the map) besides the 10 arrays and the meta copy. */
static int uses_rank_map(const uint8_t *buf, size_t len)
{
    ht_snap d;
    uint8_t *m = NULL;
    ht_format_alloc_fail_after = 11;
    ht_format_status st = ht_format_decode(buf, len, &d, &m, NULL, NULL, 0);
    ht_format_alloc_fail_after = -1;
    ht_snap_free(&d);
    free(m);
    return st == HT_FORMAT_NO_MEMORY;
}

static void encode_or_die(const ht_snap *s, const char *meta, uint8_t **buf,
                          size_t *len)
{
    if (ht_format_encode(s, (const uint8_t *)meta, meta ? strlen(meta) : 0,
                         buf, len) != 0) {
        fprintf(stderr, "test: encode failed\n");
        exit(2);
    }
}

/* ------------------------------------------------------------- tests */

static void test_crc(void)
{
    CHECK(ht_crc32c(0, "123456789", 9) == 0xE3069283u, "check value %08x",
          ht_crc32c(0, "123456789", 9));
    CHECK(ht_crc32c(0, NULL, 0) == 0, "empty");
    /* incremental == one shot */
    CHECK(ht_crc32c(ht_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u,
          "incremental");
    CHECK(ht_crc32c_portable(0, "123456789", 9) == 0xE3069283u,
          "portable check value %08x", ht_crc32c_portable(0, "123456789", 9));
    /* The instruction-based version (when the CPU has it) and the table
     * agree at every length and alignment, including the tail bytes. */
    static uint8_t buf[4096 + 16];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++) {
        for (size_t n = 0; n <= 40; n++) {
            CHECK(ht_crc32c(7, buf + off, n) == ht_crc32c_portable(7, buf + off, n),
                  "fast and portable CRC differ at offset %zu length %zu", off, n);
        }
        CHECK(ht_crc32c(0, buf + off, 4096) == ht_crc32c_portable(0, buf + off, 4096),
              "fast and portable CRC differ on 4096 bytes at offset %zu", off);
    }
}

static void test_roundtrips(void)
{
    ht_snap s;
    size_t len;

    memset(&s, 0, sizeof(s));
    roundtrip(&s, NULL, 0, "zeroed snapshot", &len);
    printf("  empty snapshot: %zu bytes\n", len);

    snap_edge(&s);
    snap_add_native(&s);
    roundtrip(&s, NULL, 0, "native frames", &len);
    printf("  edge snapshot with native frames: %zu bytes\n", len);
    s.tr_nstack[1] = 3;
    CHECK(ht_snap_validate(&s, NULL, 0) != 0, "stack id out of range accepted");
    s.tr_nstack[1] = 1;
    s.nf_lib[0] = s.nstrings;
    CHECK(ht_snap_validate(&s, NULL, 0) != 0, "library id out of range accepted");
    s.nf_lib[0] = 1;
    s.ns_frames[4] = 3;
    CHECK(ht_snap_validate(&s, NULL, 0) != 0, "frame id out of range accepted");
    ht_snap_free(&s);

    snap_alloc(&s, 0, 0, 0, 0, 0, 0);
    roundtrip(&s, (const uint8_t *)"{}", 2, "empty snapshot, built", NULL);
    ht_snap_free(&s);
    CHECK(memcmp(&s, &zero_snap, sizeof(s)) == 0, "ht_snap_free zeroes");

    {
        static const char *const strs[] = {"<unknown>"};
        static const uint32_t frames[][2] = {{0, 0}};
        static const uint32_t lens[] = {1}, ent[] = {0}, dom[] = {0}, tb[] = {0};
        static const int32_t tot[] = {1};
        static const uint64_t size[] = {32};
        snap_build(&s, 1, strs, 1, frames, 1, lens, ent, tot, 1, dom, size,
                   tb, 1);
        roundtrip(&s, NULL, 0, "one trace", &len);
        printf("  one-trace snapshot: %zu bytes\n", len);
        ht_snap_free(&s);
    }

    snap_edge(&s);
    static const uint8_t meta[] = "{\"k\": \"v\\u00e9\", \"nul\": \"\0\"}";
    roundtrip(&s, meta, sizeof(meta), "edge values", &len);
    s.traceback_limit = INT32_MIN;
    roundtrip(&s, NULL, 0, "limit INT32_MIN", NULL);
    s.traceback_limit = -1;
    roundtrip(&s, NULL, 0, "limit -1", NULL);
    ht_snap_free(&s);

    {
        uint8_t *buf;
        snap_skewed(&s, 300, 2000);
        roundtrip(&s, NULL, 0, "skewed tracebacks (rank map)", &len);
        encode_or_die(&s, NULL, &buf, &len);
        CHECK(uses_rank_map(buf, len), "rank map not used");
        free(buf);
        ht_snap_free(&s);
        snap_edge(&s);
        encode_or_die(&s, NULL, &buf, &len);
        CHECK(!uses_rank_map(buf, len), "rank map used for 6 tracebacks");
        free(buf);
        ht_snap_free(&s);
    }

    for (int i = 0; i < 400; i++) {
        char label[64];
        uint8_t rmeta[64];
        size_t rlen = (size_t)rnd_below(sizeof(rmeta));
        for (size_t k = 0; k < rlen; k++) {
            rmeta[k] = (uint8_t)rnd();
        }
        snprintf(label, sizeof(label), "random snapshot %d", i);
        snap_random(&s, i % 4);
        roundtrip(&s, rmeta, rlen, label, NULL);
        ht_snap_free(&s);
    }

    /* Long columns choose their coding from a sample (64 values in every
     * 1,024).  Data that looks like one long run in the sample but is
     * anything else between the samples must still round-trip, and cost no
     * more than its plain coding would have made it out of bounds. */
    {
        uint64_t n = 200000;
        static const char *const one[] = {"x.py"};
        static const uint32_t fr[][2] = {{0, 1}};
        static const uint32_t tlen[] = {1}, tent[] = {0};
        static const int32_t ttot[] = {1};
        uint32_t *dom = xmalloc(n * sizeof(uint32_t));
        uint64_t *size = xmalloc(n * sizeof(uint64_t));
        uint32_t *tbs = xmalloc(n * sizeof(uint32_t));
        for (uint64_t i = 0; i < n; i++) {
            int sampled = i % 1024 < 64;
            dom[i] = sampled ? 0 : (uint32_t)rnd();
            size[i] = sampled ? 7 : rnd() >> (rnd() % 64);
            tbs[i] = 0;
        }
        snap_build(&s, 1, one, 1, fr, 1, tlen, tent, ttot, 1, dom, size, tbs, n);
        roundtrip(&s, NULL, 0, "sample looks like runs, the rest is random", &len);
        CHECK(len < n * 16 + 4096, "adversarial file too large: %zu bytes", len);
        ht_snap_free(&s);
        free(dom);
        free(size);
        free(tbs);
    }

    /* realistic, big, timed */
    for (int sorted = 0; sorted <= 1; sorted++) {
        uint64_t n = 300000;
        uint8_t *buf;
        snap_realistic(&s, n, 1, sorted);
        clock_t t0 = clock();
        encode_or_die(&s, NULL, &buf, &len);
        clock_t t1 = clock();
        ht_snap d;
        char err[256];
        ht_format_status st = ht_format_decode(buf, len, &d, NULL, NULL, err,
                                               sizeof(err));
        clock_t t2 = clock();
        CHECK(st == HT_FORMAT_OK && ht_snap_equal(&s, &d), "realistic: %s",
              err);
        printf("  realistic %" PRIu64 " traces%s: %zu bytes, %.2f bytes/trace,"
               " encode %.0f ms, decode %.0f ms (this build)\n", n,
               sorted ? " sorted by traceback" : "", len, (double)len / n,
               1000.0 * (double)(t1 - t0) / CLOCKS_PER_SEC,
               1000.0 * (double)(t2 - t1) / CLOCKS_PER_SEC);
        ht_snap_free(&d);
        ht_snap_free(&s);
        free(buf);
    }
}

/* Every strict prefix of a file is TRUNCATED (or, for the empty one, too). */
static void test_prefixes(void)
{
    ht_snap s;
    uint8_t *buf;
    size_t len;
    snap_edge(&s);
    encode_or_die(&s, "{\"a\": 1}", &buf, &len);
    ht_snap_free(&s);
    long before = n_fail;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = xmalloc(n);   /* exact size, so ASan sees overreads */
        memcpy(copy, buf, n);
        CHECK(hostile(copy, n) == HT_FORMAT_TRUNCATED, "prefix of %zu bytes",
              n);
        free(copy);
    }
    CHECK(hostile(buf, len) == HT_FORMAT_OK, "whole file");
    printf("  %zu prefixes: all TRUNCATED%s\n", len,
           n_fail == before ? "" : " (NOT)");
    free(buf);
    /* the same with a native-frame section */
    snap_edge(&s);
    snap_add_native(&s);
    encode_or_die(&s, NULL, &buf, &len);
    ht_snap_free(&s);
    before = n_fail;
    for (size_t n = 0; n < len; n++) {
        uint8_t *copy = xmalloc(n);
        memcpy(copy, buf, n);
        CHECK(hostile(copy, n) == HT_FORMAT_TRUNCATED, "native prefix of %zu "
              "bytes", n);
        free(copy);
    }
    CHECK(hostile(buf, len) == HT_FORMAT_OK, "whole native file");
    printf("  %zu prefixes of a file with native frames: all TRUNCATED%s\n",
           len, n_fail == before ? "" : " (NOT)");
    free(buf);
}

static void flips(const uint8_t *buf, size_t len, long *fixed_ok)
{
    uint8_t *copy = xmalloc(len);
    for (size_t bit = 0; bit < 8 * len; bit++) {
        memcpy(copy, buf, len);
        copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        ht_format_status st = hostile(copy, len);
        CHECK(st != HT_FORMAT_OK, "bit flip %zu accepted", bit);
        CHECK(st == HT_FORMAT_CORRUPT || bit < 8 * 12,
              "bit flip %zu: %s", bit, ht_format_status_name(st));
        fix_crc(copy, len);
        if (hostile(copy, len) == HT_FORMAT_OK) {
            (*fixed_ok)++;
        }
    }
    /* whole-byte substitutions behind valid checksums */
    static const uint8_t vals[] = {0x00, 0x01, 0x7F, 0x80, 0xFF};
    for (size_t i = 0; i < len; i++) {
        for (size_t v = 0; v < sizeof(vals); v++) {
            memcpy(copy, buf, len);
            copy[i] = vals[v];
            fix_crc(copy, len);
            if (hostile(copy, len) == HT_FORMAT_OK) {
                (*fixed_ok)++;
            }
        }
    }
    free(copy);
}

static void test_bitflips(void)
{
    ht_snap s;
    uint8_t *buf;
    size_t len, total_bits = 0;
    long fixed_ok = 0;
    snap_edge(&s);
    encode_or_die(&s, "{\"a\": 1}", &buf, &len);
    ht_snap_free(&s);
    flips(buf, len, &fixed_ok);
    total_bits += 8 * len;
    free(buf);
    snap_edge(&s);
    snap_add_native(&s);
    encode_or_die(&s, NULL, &buf, &len);
    ht_snap_free(&s);
    flips(buf, len, &fixed_ok);
    total_bits += 8 * len;
    free(buf);
    snap_skewed(&s, 200, 1000);
    encode_or_die(&s, NULL, &buf, &len);
    ht_snap_free(&s);
    CHECK(uses_rank_map(buf, len), "bit-flip file without a rank map");
    flips(buf, len, &fixed_ok);
    total_bits += 8 * len;
    free(buf);
    for (int shape = 0; shape < 4; shape++) {
        do {
            snap_random(&s, shape);
            if (s.ntraces > 40 || s.nstrings > 6) {
                ht_snap_free(&s);   /* keep the files small */
                continue;
            }
            break;
        } while (1);
        encode_or_die(&s, NULL, &buf, &len);
        ht_snap_free(&s);
        flips(buf, len, &fixed_ok);
        total_bits += 8 * len;
        free(buf);
    }
    printf("  %zu single-bit flips: all rejected; with checksums recomputed "
           "(plus byte substitutions) %ld decoded to other valid snapshots, "
           "the rest rejected\n", total_bits, fixed_ok);
}

static void test_splices(void)
{
    ht_snap s;
    uint8_t *a, *b;
    size_t la, lb;
    snap_edge(&s);
    encode_or_die(&s, "meta-a", &a, &la);
    ht_snap_free(&s);
    snap_random(&s, 3);
    encode_or_die(&s, NULL, &b, &lb);
    ht_snap_free(&s);
    uint8_t *buf = xmalloc(la + lb);
    long n = 0;
    for (size_t i = 0; i <= la; i += 3) {
        for (size_t j = 0; j <= lb; j += (lb / 60) + 1) {
            size_t len = i + (lb - j);
            memcpy(buf, a, i);
            memcpy(buf + i, b + j, lb - j);
            if (i != la || j != 0) {
                CHECK(hostile(buf, len) != HT_FORMAT_OK || (i == 0 && j == 0),
                      "splice %zu/%zu accepted with stale checksums", i, j);
            }
            hostile_fixed(buf, len);
            /* and the other way round */
            size_t lb2 = i < lb ? i : lb;
            memcpy(buf, b, lb2);
            memcpy(buf + lb2, a + (j < la ? j : la), la - (j < la ? j : la));
            hostile_fixed(buf, lb2 + la - (j < la ? j : la));
            n += 3;
        }
    }
    printf("  %ld spliced files: no crash, every result clean\n", n);
    free(buf);
    free(a);
    free(b);
}

/* Assemble a file from hand-written sections with correct checksums. */
static size_t craft(uint8_t *out, uint32_t nstr, uint32_t nfr, uint32_t ntb,
                    uint64_t ntr, const uint8_t *const sec[5],
                    const size_t seclen[5])
{
    uint8_t *p = out;
    memcpy(p, HT_FORMAT_MAGIC, 8);
    p += 8;
    uint64_t fields32[] = {1, 0, 10, nstr, nfr, ntb};
    for (int f = 0; f < 6; f++) {
        for (int i = 0; i < 4; i++) {
            *p++ = (uint8_t)(fields32[f] >> (8 * i));
        }
    }
    for (int i = 0; i < 8; i++) {
        *p++ = (uint8_t)(ntr >> (8 * i));
    }
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 8; i++) {
            *p++ = (uint8_t)((uint64_t)seclen[k] >> (8 * i));
        }
    }
    p += 4;
    for (int k = 0; k < 5; k++) {
        if (seclen[k] > 0) {
            memcpy(p, sec[k], seclen[k]);
        }
        p += seclen[k];
    }
    p += 4;
    fix_crc(out, (size_t)(p - out));
    return (size_t)(p - out);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

#define SEC(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

typedef struct {
    const char *what;
    int which;             /* section replaced (1..4) */
    const uint8_t *bytes;
    size_t len;
    ht_format_status want;
    const char *msg;       /* expected substring of the message */
} bad_section;

static void expect(const uint8_t *buf, size_t len, ht_format_status want,
                   const char *msg, const char *what)
{
    ht_snap d;
    char err[256];
    ht_format_status st = decode_checked(buf, len, &d, NULL, NULL, err,
                                         sizeof(err));
    CHECK(st == want && (msg == NULL || strstr(err, msg) != NULL),
          "%s: got %s \"%s\", want %s \"%s\"", what,
          ht_format_status_name(st), err, ht_format_status_name(want),
          msg ? msg : "");
    ht_snap_free(&d);
}

static void test_crafted(void)
{
    /* A valid reference file: one string, frame, traceback, two traces. */
    const uint8_t meta[] = {'{', '}'};
    const uint8_t strings[] = {0, 4, 'a', '.', 'p', 'y'};
    const uint8_t frames[] = {0, 0, 0, 5};
    const uint8_t tbs[] = {0, 1, 0, 0, 0, 0};
    const uint8_t traces[] = {2, 0, 1, 0, 10, 20, 0, 0, 2, 0, 1};
    const uint8_t *sec[5] = {meta, strings, frames, tbs, traces};
    size_t seclen[5] = {2, 6, 4, 6, 11};
    uint8_t buf[512];
    size_t len = craft(buf, 1, 1, 1, 2, sec, seclen);
    {
        ht_snap d;
        char err[256];
        uint8_t *m;
        size_t ml;
        ht_format_status st = decode_checked(buf, len, &d, &m, &ml, err,
                                             sizeof(err));
        CHECK(st == HT_FORMAT_OK, "reference: %s", err);
        if (st == HT_FORMAT_OK) {
            CHECK(d.nstrings == 1 && d.str_off[1] == 4 &&
                  memcmp(d.str_blob, "a.py", 4) == 0 && d.frame_line[0] == 5 &&
                  d.tb_total[0] == 1 && d.ntraces == 2 && d.tr_size[1] == 20 &&
                  d.traceback_limit == 10 && ml == 2, "reference content");
        }
        ht_snap_free(&d);
        free(m);
    }

    const bad_section bad[] = {
        {"non-minimal varint", 1, SEC(0, 0x84, 0x00, 'a', '.', 'p', 'y'),
         HT_FORMAT_CORRUPT, "non-minimal"},
        {"string longer than its section", 1, SEC(0, 50, 'a', '.', 'p', 'y'),
         HT_FORMAT_CORRUPT, "string 0 needs 50 bytes"},
        {"string section with spare bytes", 1,
         SEC(0, 4, 'a', '.', 'p', 'y', 'x'), HT_FORMAT_CORRUPT,
         "strings take 4 bytes but 5 remain"},
        {"invalid UTF-8", 1, SEC(0, 4, 'a', 0xFF, 'p', 'y'), HT_FORMAT_CORRUPT,
         "string 0 is not valid UTF-8"},
        {"overlong UTF-8", 1, SEC(0, 4, 'a', 0xC0, 0x80, 'y'),
         HT_FORMAT_CORRUPT, "not valid UTF-8"},
        {"unknown column coding", 2, SEC(3, 0, 0, 5), HT_FORMAT_CORRUPT,
         "invalid coding 3"},
        {"runs where a row must pay a byte", 2, SEC(0, 0, 2, 5, 0),
         HT_FORMAT_CORRUPT, "line column has invalid coding 2"},
        {"frame refers to a missing string", 2, SEC(0, 1, 0, 5),
         HT_FORMAT_CORRUPT, "frame 0 refers to string 1 but there are 1 "
         "strings"},
        {"line over 32 bits", 2, SEC(0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10),
         HT_FORMAT_CORRUPT, "more than 32 bits"},
        {"frame section ends early", 2, SEC(0, 0, 0), HT_FORMAT_CORRUPT,
         "line column ends inside value 0 of 1"},
        {"frame section ends before a column", 2, SEC(0, 0),
         HT_FORMAT_CORRUPT, "ends before the line column"},
        {"traceback refers to a missing frame", 3, SEC(0, 1, 0, 0, 0, 3),
         HT_FORMAT_CORRUPT, "traceback 0 refers to frame 3 but there are 1 "
         "frames"},
        {"traceback claims many frames", 3, SEC(0, 0xE8, 0x07, 0, 0, 0, 0),
         HT_FORMAT_TOO_LARGE, "traceback 0 claims 1000 frames"},
        {"total_nframe below -1", 3, SEC(0, 1, 0, 5, 0, 0), HT_FORMAT_CORRUPT,
         "invalid total_nframe"},
        {"total_nframe above INT32_MAX", 3,
         SEC(0, 1, 0, 0xFE, 0xFF, 0xFF, 0xFF, 0x0F, 0, 0), HT_FORMAT_CORRUPT,
         "invalid total_nframe"},
        {"varint over 64 bits", 4,
         SEC(2, 0, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
             0x02, 20, 0, 0, 2, 0, 1), HT_FORMAT_CORRUPT,
         "does not fit in 64 bits"},
        {"run longer than the column", 4, SEC(2, 0, 2, 0, 10, 20, 0, 0, 2, 0, 1),
         HT_FORMAT_CORRUPT, "run longer than the 2 values that remain"},
        {"size column coded as runs", 4, SEC(2, 0, 1, 2, 10, 1, 0, 0, 2, 0, 1),
         HT_FORMAT_CORRUPT, "size column has invalid coding 2"},
        {"domain over 32 bits", 4,
         SEC(2, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 0, 10, 20, 0, 0, 2, 0, 1),
         HT_FORMAT_CORRUPT, "more than 32 bits"},
        {"trace refers to a missing traceback", 4,
         SEC(2, 0, 1, 0, 10, 20, 0, 0, 0, 0, 1), HT_FORMAT_CORRUPT,
         "trace 1 refers to traceback 1 but there are 1 tracebacks"},
        {"spare bytes at the end of a section", 4,
         SEC(2, 0, 1, 0, 10, 20, 0, 0, 2, 0, 1, 0), HT_FORMAT_CORRUPT,
         "trace table has 1 unexpected bytes at its end"},
        {"traceback map of the wrong length", 4,
         SEC(2, 0, 1, 0, 10, 20, 2, 0, 0, 0, 2, 0, 1), HT_FORMAT_CORRUPT,
         "traceback map has 2 entries, expected 0 or 1"},
        {"traceback map past the section", 4, SEC(2, 0, 1, 0, 10, 20, 1),
         HT_FORMAT_TOO_LARGE, "traceback map has 1 entries but only 0 bytes"},
        {"traceback map entry out of range", 4,
         SEC(2, 0, 1, 0, 10, 20, 1, 0, 5, 2, 0, 1), HT_FORMAT_CORRUPT,
         "traceback map entry 0 refers to traceback 5 but there are 1"},
        {"traceback rank out of range", 4,
         SEC(2, 0, 1, 0, 10, 20, 1, 0, 0, 0, 0, 1), HT_FORMAT_CORRUPT,
         "trace 1 refers to traceback rank 1 but there are 1"},
        {"traceback map coded as runs", 4,
         SEC(2, 0, 1, 0, 10, 20, 1, 2, 0, 0, 2, 0, 1), HT_FORMAT_CORRUPT,
         "traceback map has invalid coding 2"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const uint8_t *sec2[5] = {meta, strings, frames, tbs, traces};
        size_t len2[5] = {2, 6, 4, 6, 11};
        sec2[bad[i].which] = bad[i].bytes;
        len2[bad[i].which] = bad[i].len;
        len = craft(buf, 1, 1, 1, 2, sec2, len2);
        expect(buf, len, bad[i].want, bad[i].msg, bad[i].what);
    }

    {
        const uint8_t *sec2[5] = {meta, strings, frames, tbs,
                                  (const uint8_t[]){2, 0, 1, 0, 10, 20, 1, 0,
                                                    0, 2, 0, 1}};
        size_t len2[5] = {2, 6, 4, 6, 12};
        len = craft(buf, 1, 1, 1, 2, sec2, len2);
        expect(buf, len, HT_FORMAT_OK, NULL, "traceback map");
    }

    /* delta coding wraps modulo 2^64: 0 - 1 is 2^64 - 1 */
    {
        const uint8_t *sec2[5] = {meta, strings, frames, tbs,
                                  (const uint8_t[]){2, 0, 1, 1, 1, 1, 0, 0, 2, 0, 1}};
        size_t len2[5] = {2, 6, 4, 6, 11};
        ht_snap d;
        char err[256];
        len = craft(buf, 1, 1, 1, 2, sec2, len2);
        ht_format_status st = decode_checked(buf, len, &d, NULL, NULL, err,
                                             sizeof(err));
        CHECK(st == HT_FORMAT_OK && d.tr_size[0] == UINT64_MAX &&
              d.tr_size[1] == UINT64_MAX - 1, "delta wrap: %s", err);
        ht_snap_free(&d);
    }

    /* headers that lie */
    len = craft(buf, 1, 1, 1, 2, sec, seclen);
    uint8_t h[512];
    memcpy(h, buf, len);
    put64(h + 32, (uint64_t)1 << 40);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_TOO_LARGE, "header claims 1099511627776 traces "
           "but the trace table holds only 11 bytes", "2^40 traces");
    memcpy(h, buf, len);
    put32(h + 20, UINT32_MAX);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_TOO_LARGE, "4294967295 strings", "2^32-1 strings");
    expect(h, 20, HT_FORMAT_TRUNCATED, "header needs 84 bytes, 20 remain",
           "20-byte file");
    memcpy(h, buf, len);
    put64(h + 72, (uint64_t)1 << 63);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_TRUNCATED, "trace table needs 9223372036854775808 "
           "bytes, 15 remain", "huge trace section");
    memcpy(h, buf, len);
    for (int k = 0; k < 5; k++) {
        put64(h + 40 + 8 * k, UINT64_MAX / 3);   /* sum wraps past 2^64 */
    }
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_TRUNCATED, "meta section needs", "wrapping sum");
    memcpy(h, buf, len);
    put64(h + 48, 7);           /* strings one byte longer, frames shorter */
    put64(h + 56, 3);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_CORRUPT, "string table", "shifted sections");

    /* magic, version, flags, checksums, length */
    memcpy(h, buf, len);
    h[0] = 0x80;
    expect(h, len, HT_FORMAT_NOT_A_SNAPSHOT, "pickle", "pickle");
    expect((const uint8_t *)"hello", 5, HT_FORMAT_NOT_A_SNAPSHOT, "magic",
           "text");
    expect(buf, 0, HT_FORMAT_TRUNCATED, "empty file", "empty");
    expect(buf, 3, HT_FORMAT_TRUNCATED, "header needs 84 bytes, 3 remain",
           "magic prefix");
    memcpy(h, buf, len);
    put32(h + 8, 3);
    expect(h, len, HT_FORMAT_UNSUPPORTED_VERSION, "format version 3 is not "
           "supported", "version 3");
    expect(h, 12, HT_FORMAT_UNSUPPORTED_VERSION, "version 3", "short v3");
    memcpy(h, buf, len);
    put32(h + 12, 2);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_UNSUPPORTED_VERSION, "unknown flags 0x2",
           "flags");
    /* version 1 has no native-frame flag */
    memcpy(h, buf, len);
    put32(h + 8, 1);
    put32(h + 12, 1);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_UNSUPPORTED_VERSION, "unknown flags 0x1 in a "
           "version 1 file", "v1 flags");
    /* the native flag without its section */
    memcpy(h, buf, len);
    put32(h + 8, 2);
    put32(h + 12, 1);
    fix_crc(h, len);
    expect(h, len, HT_FORMAT_TRUNCATED, "native frame section", "native flag");
    memcpy(h, buf, len);
    h[20] ^= 1;
    expect(h, len, HT_FORMAT_CORRUPT, "header checksum mismatch", "header");
    memcpy(h, buf, len);
    h[len - 6] ^= 1;
    expect(h, len, HT_FORMAT_CORRUPT, "checksum mismatch (stored", "body");
    memcpy(h, buf, len);
    h[len] = 0;
    expect(h, len + 1, HT_FORMAT_CORRUPT, "1 unexpected bytes after the end",
           "trailing byte");
    expect(buf, len - 3, HT_FORMAT_TRUNCATED, "checksum needs 4 bytes, 1 "
           "remain", "short checksum");
    expect(buf, len - 8, HT_FORMAT_TRUNCATED, "trace table needs 11 bytes, 7 "
           "remain", "short trace table");
}

static void test_random_bytes(void)
{
    uint8_t buf[600];
    long n = 0;
    for (int i = 0; i < 30000; i++) {
        size_t len = (size_t)rnd_below(sizeof(buf));
        for (size_t k = 0; k < len; k++) {
            buf[k] = (uint8_t)rnd();
        }
        hostile(buf, len);
        /* a plausible header: magic, version 1, no flags, small counts and
         * section lengths that add up, then random sections */
        if (len >= HT_FORMAT_HEADER_SIZE + HT_FORMAT_TRAILER_SIZE) {
            size_t body = len - HT_FORMAT_HEADER_SIZE - HT_FORMAT_TRAILER_SIZE;
            memcpy(buf, HT_FORMAT_MAGIC, 8);
            put32(buf + 8, 1);
            put32(buf + 12, 0);
            for (int f = 0; f < 3; f++) {
                put32(buf + 20 + 4 * f, (uint32_t)rnd_below(6));
            }
            put64(buf + 32, rnd_below(20));
            size_t rest = body;
            for (int k = 0; k < 5; k++) {
                size_t part = k == 4 ? rest : (size_t)rnd_below(rest + 1);
                put64(buf + 40 + 8 * k, part);
                rest -= part;
            }
            hostile_fixed(buf, len);
            n++;
        }
    }
    printf("  30000 random buffers and %ld random bodies behind valid headers:"
           " all clean\n", n);
}

static void test_validate(void)
{
    ht_snap s;
    char err[256];
    memset(&s, 0, sizeof(s));
    CHECK(ht_snap_validate(&s, err, sizeof(err)) == 0, "zeroed: %s", err);
    CHECK(ht_snap_validate(NULL, err, sizeof(err)) == -1, "NULL");
    ht_snap_free(NULL);
    ht_snap_free(&s);

    /* partially built: some arrays set, others NULL */
    s.str_off = xmalloc(16);
    s.tr_size = xmalloc(8);
    s.nstrings = 1;
    s.ntraces = 1;
    ht_snap_free(&s);
    CHECK(memcmp(&s, &zero_snap, sizeof(s)) == 0, "partial free zeroes");

    struct {
        const char *what, *msg;
    } cases[] = {
        {"str_off[0]", "str_off[0] is 1"},
        {"decreasing str_off", "string 2 ends at offset"},
        {"bad UTF-8: lone continuation", "string 1 is not valid UTF-8 (bad "
         "byte 0x80 at offset 0"},
        {"bad UTF-8: overlong E0", "not valid UTF-8"},
        {"bad UTF-8: above U+10FFFF", "not valid UTF-8"},
        {"bad UTF-8: cut sequence", "string 3 is not valid UTF-8"},
        {"frame_file", "frame 2 refers to string 6 but there are 6 strings"},
        {"tb_off[0]", "tb_off[0] is 1"},
        {"decreasing tb_off", "traceback 2 ends at entry"},
        {"tb_frames", "traceback 2 (entry 1) refers to frame 7 but there are 7 "
         "frames"},
        {"tb_total", "traceback 0 has total_nframe -2"},
        {"tr_tb", "trace 4 refers to traceback 6 but there are 6 tracebacks"},
        {"NULL frames", "frame arrays are NULL"},
        {"NULL blob", "str_blob is NULL"},
        {"NULL traces", "trace arrays are NULL"},
        {"NULL tb_off", "tb_off is NULL"},
        {"NULL str_off", "str_off is NULL but there are 6 strings"},
        {"NULL tb_total", "tb_total is NULL"},
        {"NULL tb_frames", "tb_frames is NULL"},
        {"too many traces", "traces do not fit in memory"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snap_edge(&s);
        void *saved = NULL;
        switch (i) {
        case 0: s.str_off[0] = 1; break;
        case 1: s.str_off[2] = s.str_off[3] + 1; break;
        case 2: s.str_blob[s.str_off[1]] = (char)0x80; break;
        case 3: memcpy(s.str_blob + s.str_off[2], "\xe0\x80\x80", 3); break;
        case 4: memcpy(s.str_blob + s.str_off[2], "\xf4\x90\x80\x80", 4); break;
        case 5: s.str_blob[s.str_off[4] - 1] = (char)0xE6; break;
        case 6: s.frame_file[2] = 6; break;
        case 7: s.tb_off[0] = 1; break;
        case 8: s.tb_off[3] = 0; break;
        case 9: s.tb_frames[s.tb_off[2] + 1] = 7; break;
        case 10: s.tb_total[0] = -2; break;
        case 11: s.tr_tb[4] = 6; break;
        case 12: saved = s.frame_line; s.frame_line = NULL; break;
        case 13: saved = s.str_blob; s.str_blob = NULL; break;
        case 14: saved = s.tr_tb; s.tr_tb = NULL; break;
        case 15: saved = s.tb_off; s.tb_off = NULL; break;
        case 16: saved = s.str_off; s.str_off = NULL; break;
        case 17: saved = s.tb_total; s.tb_total = NULL; break;
        case 18: saved = s.tb_frames; s.tb_frames = NULL; break;
        case 19: s.ntraces = UINT64_MAX; break;
        }
        err[0] = 0;
        int rc = ht_snap_validate(&s, err, sizeof(err));
        CHECK(rc == -1 && strstr(err, cases[i].msg) != NULL,
              "%s: rc %d \"%s\"", cases[i].what, rc, err);
        free(saved);
        s.ntraces = 7;
        ht_snap_free(&s);
    }

    /* ht_snap_equal notices a change in any table */
    ht_snap a, b;
    snap_edge(&a);
    for (int i = 0; i < 12; i++) {
        snap_edge(&b);
        CHECK(ht_snap_equal(&a, &b), "equal copies");
        switch (i) {
        case 0: b.traceback_limit++; break;
        case 1: b.nstrings--; break;
        case 2: b.str_off[2]++; b.str_off[3]++; break;
        case 3: b.str_blob[3] = 'b'; break;
        case 4: b.frame_file[1] = 2; break;
        case 5: b.frame_line[1]++; break;
        case 6: b.tb_off[1] = 0; break;
        case 7: b.tb_frames[0] = 4; break;
        case 8: b.tb_total[0] = 3; break;
        case 9: b.tr_domain[0] = 1; break;
        case 10: b.tr_size[0] = 1; break;
        case 11: b.tr_tb[0] = 1; break;
        }
        CHECK(!ht_snap_equal(&a, &b), "change %d not noticed", i);
        if (i == 1) {
            b.nstrings++;
        }
        ht_snap_free(&b);
    }
    ht_snap_free(&a);

    CHECK(strcmp(ht_format_status_name(HT_FORMAT_OK), "OK") == 0 &&
          strcmp(ht_format_status_name(HT_FORMAT_TOO_LARGE), "TOO_LARGE") == 0
          && strcmp(ht_format_status_name(HT_FORMAT_NO_MEMORY), "NO_MEMORY")
          == 0 && strcmp(ht_format_status_name(-1), "UNKNOWN") == 0 &&
          strcmp(ht_format_status_name(7), "UNKNOWN") == 0, "status names");
    /* short error buffers are fine */
    snap_edge(&s);
    s.tr_tb[0] = 99;
    CHECK(ht_snap_validate(&s, err, 5) == -1 && strlen(err) == 4, "errlen 5");
    CHECK(ht_snap_validate(&s, NULL, 0) == -1, "no err buffer");
    ht_snap_free(&s);
}

static void oom_case(ht_snap *s, long want_enc, long want_dec,
                     const char *what)
{
    uint8_t *buf, *out = (uint8_t *)"untouched";
    size_t len, out_len = 77;
    char err[256];
    ht_snap d;
    long k;
    for (k = 0; k <= 100; k++) {
        ht_format_alloc_fail_after = k;
        int rc = ht_format_encode(s, (const uint8_t *)"meta", 4, &out,
                                  &out_len);
        ht_format_alloc_fail_after = -1;
        if (rc == 0) {
            free(out);
            break;
        }
        CHECK(rc == -1 && out_len == 77 && strcmp((char *)out, "untouched")
              == 0, "%s: encode with allocation %ld failing", what, k);
    }
    CHECK(k == want_enc, "%s: encode makes %ld allocations, expected %ld",
          what, k, want_enc);
    encode_or_die(s, "meta", &buf, &len);
    for (k = 0; k <= 100; k++) {
        ht_format_alloc_fail_after = k;
        ht_format_status st = decode_checked(buf, len, &d, NULL, NULL, err,
                                             sizeof(err));
        ht_format_alloc_fail_after = -1;
        ht_snap_free(&d);
        if (st == HT_FORMAT_OK) {
            break;
        }
        CHECK(st == HT_FORMAT_NO_MEMORY && strstr(err, "out of memory"),
              "%s: allocation %ld failing: %s %s", what, k,
              ht_format_status_name(st), err);
    }
    CHECK(k == want_dec, "%s: decode makes %ld allocations, expected %ld",
          what, k, want_dec);
    printf("  %s: allocation failure at each of the %ld allocations of "
           "encode and %ld of decode: clean failure, nothing leaked\n", what,
           want_enc, k);
    free(buf);
}

static void test_oom(void)
{
    ht_snap s;
    snap_edge(&s);
    oom_case(&s, 4, 11, "edge snapshot");
    ht_snap_free(&s);
    snap_skewed(&s, 300, 2000);
    oom_case(&s, 4, 12, "snapshot with a traceback map");
    ht_snap_free(&s);
    memset(&s, 0, sizeof(s));
    oom_case(&s, 1, 3, "empty snapshot");
}

/* --------------------------------------------------- measurement mode */

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

/* Plain dump read by compare_pickle.py: u32 counts, then arrays, all LE
 * native (this is a test aid, not a format). */
static void write_raw(const char *path, const ht_snap *s)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    uint64_t counts[5] = {s->nstrings, s->nframes, s->ntracebacks, s->ntraces,
                          (uint64_t)(int64_t)s->traceback_limit};
    fwrite(counts, 8, 5, f);
    fwrite(s->str_off, 8, s->nstrings + 1, f);
    fwrite(s->str_blob, 1, s->str_off[s->nstrings], f);
    fwrite(s->frame_file, 4, s->nframes, f);
    fwrite(s->frame_line, 4, s->nframes, f);
    fwrite(s->tb_off, 4, s->ntracebacks + 1, f);
    fwrite(s->tb_frames, 4, s->tb_off[s->ntracebacks], f);
    fwrite(s->tb_total, 4, s->ntracebacks, f);
    fwrite(s->tr_domain, 4, s->ntraces, f);
    fwrite(s->tr_size, 8, s->ntraces, f);
    fwrite(s->tr_tb, 4, s->ntraces, f);
    if (fclose(f) != 0) {
        exit(2);
    }
}

static int measure(uint64_t n, const char *dir)
{
    static const uint32_t depths[] = {1, 10};
    for (int di = 0; di < 2; di++) {
        for (int sorted = 0; sorted <= 1; sorted++) {
            ht_snap s;
            uint8_t *buf;
            size_t len;
            snap_realistic(&s, n, depths[di], sorted);
            clock_t t0 = clock();
            encode_or_die(&s, NULL, &buf, &len);
            clock_t t1 = clock();
            ht_snap d;
            char err[256];
            ht_format_status st = ht_format_decode(buf, len, &d, NULL, NULL,
                                                   err, sizeof(err));
            clock_t t2 = clock();
            if (st != HT_FORMAT_OK || !ht_snap_equal(&s, &d)) {
                fprintf(stderr, "round trip failed: %s\n", err);
                return 1;
            }
            printf("depth %2u %-9s %" PRIu64 " traces: %zu bytes = %.3f "
                   "bytes/trace (encode %.0f ms, decode %.0f ms)\n",
                   depths[di], sorted ? "sorted" : "unsorted", n, len,
                   (double)len / (double)n,
                   1000.0 * (double)(t1 - t0) / CLOCKS_PER_SEC,
                   1000.0 * (double)(t2 - t1) / CLOCKS_PER_SEC);
            if (dir != NULL) {
                char path[1024];
                snprintf(path, sizeof(path), "%s/depth%u_%s.htsnap", dir,
                         depths[di], sorted ? "sorted" : "unsorted");
                write_file(path, buf, len);
                snprintf(path, sizeof(path), "%s/depth%u_%s.raw", dir,
                         depths[di], sorted ? "sorted" : "unsorted");
                write_raw(path, &s);
            }
            ht_snap_free(&d);
            ht_snap_free(&s);
            free(buf);
        }
    }
    return 0;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
        | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Version 2: a sampled snapshot records its interval; an exact one is still
 * written as version 1. */
static void test_sampled(void)
{
    static const char *const strs[] = {"a.py"};
    static const uint32_t frames[][2] = {{0, 7}};
    static const uint32_t lens[] = {1}, ent[] = {0}, dom[] = {0, 0}, tb[] = {0, 0};
    static const int32_t tot[] = {1};
    static const uint64_t size[] = {32, 1 << 20};
    ht_snap s;
    uint8_t *buf = NULL;
    size_t len = 0;
    snap_build(&s, 1, strs, 1, frames, 1, lens, ent, tot, 1, dom, size, tb, 2);
    encode_or_die(&s, NULL, &buf, &len);
    CHECK(get32(buf + 8) == 1, "exact snapshot written as version %u",
          (unsigned)get32(buf + 8));
    free(buf);
    s.sampling_interval = 512 * 1024;
    roundtrip(&s, NULL, 0, "sampled snapshot", NULL);
    encode_or_die(&s, NULL, &buf, &len);
    CHECK(get32(buf + 8) == 2, "sampled snapshot written as version %u",
          (unsigned)get32(buf + 8));
    free(buf);
    /* The interval opens the trace section, after the other four. */
    s.sampling_interval = 1;
    encode_or_die(&s, NULL, &buf, &len);
    size_t at = 84;
    for (int k = 0; k < 4; k++) {
        at += (size_t)get64(buf + 40 + 8 * k);
    }
    CHECK(buf[at] == 1, "interval varint at the start of the trace section");
    /* 0 is an exact snapshot (version 2 for its native frames, say). */
    buf[at] = 0;
    fix_crc(buf, len);
    expect(buf, len, HT_FORMAT_OK, NULL, "interval 0");
    free(buf);
    /* One past the largest interval. */
    s.sampling_interval = HT_FORMAT_MAX_INTERVAL;
    encode_or_die(&s, NULL, &buf, &len);
    CHECK(buf[at] == 0x80, "interval 2^40 as a varint");
    buf[at] = 0x81;
    fix_crc(buf, len);
    expect(buf, len, HT_FORMAT_CORRUPT, "is out of range", "interval 2^40 + 1");
    free(buf);
    ht_snap_free(&s);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--measure") == 0) {
        return measure(strtoull(argv[2], NULL, 10), argc >= 4 ? argv[3] : NULL);
    }
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"crc", test_crc},
        {"validate", test_validate},
        {"roundtrips", test_roundtrips},
        {"crafted", test_crafted},
        {"prefixes", test_prefixes},
        {"bitflips", test_bitflips},
        {"splices", test_splices},
        {"random_bytes", test_random_bytes},
        {"oom", test_oom},
        {"sampled", test_sampled},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        long before = n_fail;
        printf("%s\n", tests[i].name);
        fflush(stdout);
        tests[i].fn();
        printf("%s %s\n", n_fail == before ? "ok" : "FAILED", tests[i].name);
        fflush(stdout);
    }
    printf("hostile inputs: %ld (OK %ld, NOT_A_SNAPSHOT %ld, "
           "UNSUPPORTED_VERSION %ld, TRUNCATED %ld, CORRUPT %ld, TOO_LARGE %ld,"
           " NO_MEMORY %ld)\n", hostile_inputs, outcome[0], outcome[1],
           outcome[2], outcome[3], outcome[4], outcome[5], outcome[6]);
    printf("test_format: %ld passed, %ld failed\n", n_pass, n_fail);
    return n_fail == 0 ? 0 : 1;
}
