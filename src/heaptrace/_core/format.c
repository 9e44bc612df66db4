/* format.c: encoder and hostile-input-proof decoder of heaptrace snapshot
 * files (specification: docs/format.md).
 *
 * Layout: an 84-byte little-endian header (magic, version, flags,
 * traceback_limit, the four table counts, the byte length of each of the
 * five sections, CRC-32C of the header), then the sections meta, strings,
 * frames, tracebacks, traces, then a CRC-32C of the sections.
 *
 * Every integer inside a section belongs to a "column": a method byte
 * followed by the column's values as LEB128 varints, coded either plainly
 * (RAW), as zigzag differences from the previous value (DELTA), or as
 * (value, repeat count - 1) pairs (RUNS).  The writer measures the three
 * (on a sample, for long columns) and keeps the smallest, so the
 * nearly-always-zero domains cost a few
 * bytes in all, and traces handed over sorted by traceback shrink further.
 *
 * The reader's safety rests on one rule: in every table, one column may not
 * use RUNS, so each entry costs at least one byte of its section.  A count
 * larger than the section's byte length is therefore rejected before any
 * allocation, which bounds memory to a small multiple of the file size and
 * time to linear in it.  All offsets are checked against the bytes left
 * before they are used, every id against the table it points into, varints
 * must be minimal and fit 64 bits, and the result is run through
 * ht_snap_validate before it is returned.
 *
 * Version 2 adds one optional part, kept apart in the "native frames"
 * functions below: when the snapshot has native frames, flags bit 0 is set
 * and the body goes on after the trace table with an 8-byte length and the
 * native-frame section.  Version 1 files (no such part) still load.
 */
#include "format.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "snapdata.h"

/* ---------------------------------------------------------------- CRC-32C */

/* Table of the reflected CRC-32C polynomial 0x82F63B78, one entry per byte
 * value (generated once by shifting each byte through the polynomial). */
static const uint32_t crc_table[256] = {
    0x00000000u, 0xf26b8303u, 0xe13b70f7u, 0x1350f3f4u, 0xc79a971fu, 0x35f1141cu,
    0x26a1e7e8u, 0xd4ca64ebu, 0x8ad958cfu, 0x78b2dbccu, 0x6be22838u, 0x9989ab3bu,
    0x4d43cfd0u, 0xbf284cd3u, 0xac78bf27u, 0x5e133c24u, 0x105ec76fu, 0xe235446cu,
    0xf165b798u, 0x030e349bu, 0xd7c45070u, 0x25afd373u, 0x36ff2087u, 0xc494a384u,
    0x9a879fa0u, 0x68ec1ca3u, 0x7bbcef57u, 0x89d76c54u, 0x5d1d08bfu, 0xaf768bbcu,
    0xbc267848u, 0x4e4dfb4bu, 0x20bd8edeu, 0xd2d60dddu, 0xc186fe29u, 0x33ed7d2au,
    0xe72719c1u, 0x154c9ac2u, 0x061c6936u, 0xf477ea35u, 0xaa64d611u, 0x580f5512u,
    0x4b5fa6e6u, 0xb93425e5u, 0x6dfe410eu, 0x9f95c20du, 0x8cc531f9u, 0x7eaeb2fau,
    0x30e349b1u, 0xc288cab2u, 0xd1d83946u, 0x23b3ba45u, 0xf779deaeu, 0x05125dadu,
    0x1642ae59u, 0xe4292d5au, 0xba3a117eu, 0x4851927du, 0x5b016189u, 0xa96ae28au,
    0x7da08661u, 0x8fcb0562u, 0x9c9bf696u, 0x6ef07595u, 0x417b1dbcu, 0xb3109ebfu,
    0xa0406d4bu, 0x522bee48u, 0x86e18aa3u, 0x748a09a0u, 0x67dafa54u, 0x95b17957u,
    0xcba24573u, 0x39c9c670u, 0x2a993584u, 0xd8f2b687u, 0x0c38d26cu, 0xfe53516fu,
    0xed03a29bu, 0x1f682198u, 0x5125dad3u, 0xa34e59d0u, 0xb01eaa24u, 0x42752927u,
    0x96bf4dccu, 0x64d4cecfu, 0x77843d3bu, 0x85efbe38u, 0xdbfc821cu, 0x2997011fu,
    0x3ac7f2ebu, 0xc8ac71e8u, 0x1c661503u, 0xee0d9600u, 0xfd5d65f4u, 0x0f36e6f7u,
    0x61c69362u, 0x93ad1061u, 0x80fde395u, 0x72966096u, 0xa65c047du, 0x5437877eu,
    0x4767748au, 0xb50cf789u, 0xeb1fcbadu, 0x197448aeu, 0x0a24bb5au, 0xf84f3859u,
    0x2c855cb2u, 0xdeeedfb1u, 0xcdbe2c45u, 0x3fd5af46u, 0x7198540du, 0x83f3d70eu,
    0x90a324fau, 0x62c8a7f9u, 0xb602c312u, 0x44694011u, 0x5739b3e5u, 0xa55230e6u,
    0xfb410cc2u, 0x092a8fc1u, 0x1a7a7c35u, 0xe811ff36u, 0x3cdb9bddu, 0xceb018deu,
    0xdde0eb2au, 0x2f8b6829u, 0x82f63b78u, 0x709db87bu, 0x63cd4b8fu, 0x91a6c88cu,
    0x456cac67u, 0xb7072f64u, 0xa457dc90u, 0x563c5f93u, 0x082f63b7u, 0xfa44e0b4u,
    0xe9141340u, 0x1b7f9043u, 0xcfb5f4a8u, 0x3dde77abu, 0x2e8e845fu, 0xdce5075cu,
    0x92a8fc17u, 0x60c37f14u, 0x73938ce0u, 0x81f80fe3u, 0x55326b08u, 0xa759e80bu,
    0xb4091bffu, 0x466298fcu, 0x1871a4d8u, 0xea1a27dbu, 0xf94ad42fu, 0x0b21572cu,
    0xdfeb33c7u, 0x2d80b0c4u, 0x3ed04330u, 0xccbbc033u, 0xa24bb5a6u, 0x502036a5u,
    0x4370c551u, 0xb11b4652u, 0x65d122b9u, 0x97baa1bau, 0x84ea524eu, 0x7681d14du,
    0x2892ed69u, 0xdaf96e6au, 0xc9a99d9eu, 0x3bc21e9du, 0xef087a76u, 0x1d63f975u,
    0x0e330a81u, 0xfc588982u, 0xb21572c9u, 0x407ef1cau, 0x532e023eu, 0xa145813du,
    0x758fe5d6u, 0x87e466d5u, 0x94b49521u, 0x66df1622u, 0x38cc2a06u, 0xcaa7a905u,
    0xd9f75af1u, 0x2b9cd9f2u, 0xff56bd19u, 0x0d3d3e1au, 0x1e6dcdeeu, 0xec064eedu,
    0xc38d26c4u, 0x31e6a5c7u, 0x22b65633u, 0xd0ddd530u, 0x0417b1dbu, 0xf67c32d8u,
    0xe52cc12cu, 0x1747422fu, 0x49547e0bu, 0xbb3ffd08u, 0xa86f0efcu, 0x5a048dffu,
    0x8ecee914u, 0x7ca56a17u, 0x6ff599e3u, 0x9d9e1ae0u, 0xd3d3e1abu, 0x21b862a8u,
    0x32e8915cu, 0xc083125fu, 0x144976b4u, 0xe622f5b7u, 0xf5720643u, 0x07198540u,
    0x590ab964u, 0xab613a67u, 0xb831c993u, 0x4a5a4a90u, 0x9e902e7bu, 0x6cfbad78u,
    0x7fab5e8cu, 0x8dc0dd8fu, 0xe330a81au, 0x115b2b19u, 0x020bd8edu, 0xf0605beeu,
    0x24aa3f05u, 0xd6c1bc06u, 0xc5914ff2u, 0x37faccf1u, 0x69e9f0d5u, 0x9b8273d6u,
    0x88d28022u, 0x7ab90321u, 0xae7367cau, 0x5c18e4c9u, 0x4f48173du, 0xbd23943eu,
    0xf36e6f75u, 0x0105ec76u, 0x12551f82u, 0xe03e9c81u, 0x34f4f86au, 0xc69f7b69u,
    0xd5cf889du, 0x27a40b9eu, 0x79b737bau, 0x8bdcb4b9u, 0x988c474du, 0x6ae7c44eu,
    0xbe2da0a5u, 0x4c4623a6u, 0x5f16d052u, 0xad7d5351u,
};

uint32_t ht_crc32c_portable(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc = crc_table[(crc ^ b[i]) & 0xFFu] ^ (crc >> 8);
    }
    return ~crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE4.2 has an instruction for exactly this polynomial: eight bytes per
 * instruction instead of one table lookup per byte (a snapshot file of a
 * million traces is checksummed in a fraction of a millisecond). */
__attribute__((target("sse4.2")))
static uint32_t crc_sse42(uint32_t crc, const uint8_t *b, size_t n)
{
    uint64_t c = crc;
    for (; n >= 8; n -= 8, b += 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--, b++) {
        c32 = __builtin_ia32_crc32qi(c32, *b);
    }
    return c32;
}
#define HT_HAVE_CRC_SSE42 1
#endif

uint32_t ht_crc32c(uint32_t crc, const void *p, size_t n)
{
    const uint8_t *b = (const uint8_t *)p;
#ifdef HT_HAVE_CRC_SSE42
    if (__builtin_cpu_supports("sse4.2")) {
        return ~crc_sse42(~crc, b, n);
    }
#endif
    return ht_crc32c_portable(crc, b, n);
}

/* ------------------------------------------------------------- allocation */

#ifdef HT_FORMAT_ALLOC_HOOK
long ht_format_alloc_fail_after = -1;
size_t ht_format_alloc_max = 0;
size_t ht_format_alloc_total = 0;

static void *fmt_malloc(size_t n)
{
    if (n > ht_format_alloc_max) {
        ht_format_alloc_max = n;
    }
    if (ht_format_alloc_fail_after == 0) {
        return NULL;
    }
    if (ht_format_alloc_fail_after > 0) {
        ht_format_alloc_fail_after--;
    }
    ht_format_alloc_total += n;
    return malloc(n);
}
#else
/* ht_malloc is malloc, made to fail on demand in the extension's
 * fault-injection build (HT_FAULT_INJECTION, see alloc.h). */
#define fmt_malloc ht_malloc
#endif

/* ------------------------------------------------------- shared constants */

enum { SEC_META, SEC_STRINGS, SEC_FRAMES, SEC_TRACEBACKS, SEC_TRACES, NSEC };

static const char *const sec_name[NSEC] = {
    "meta section", "string table", "frame table", "traceback table",
    "trace table",
};

/* Column coding methods (the byte that opens every column). */
enum { COL_RAW = 0, COL_DELTA = 1, COL_RUNS = 2 };

/* Header field offsets. */
enum {
    H_VERSION = 8, H_FLAGS = 12, H_LIMIT = 16, H_NSTRINGS = 20,
    H_NFRAMES = 24, H_NTRACEBACKS = 28, H_NTRACES = 32, H_SECLEN = 40,
};

static uint64_t zz_enc(uint64_t d) { return (d << 1) ^ (0 - (d >> 63)); }
static uint64_t zz_dec(uint64_t z) { return (z >> 1) ^ (0 - (z & 1)); }

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
        | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
    return p + 4;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    return put_u32(p + 4, (uint32_t)(v >> 32));
}

/* ---------------------------------------------------------------- encoder */

static inline size_t varint_len(uint64_t v)
{
    /* 7 bits per byte: ceil(significant bits / 7), at least one byte. */
    unsigned bits = 64 - (unsigned)__builtin_clzll(v | 1);
    return (bits + 6) / 7;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Where the values of a column come from. */
enum { SRC_U32, SRC_U64, SRC_STRLEN, SRC_TBLEN, SRC_TBTOTAL, SRC_TBRANK };

typedef struct {
    const ht_snap *s;
    int kind;
    const void *arr;     /* SRC_U32 / SRC_U64; SRC_TBRANK: id -> rank */
    uint64_t n;          /* number of values */
    int allow_runs;      /* 0 for the column that pays for the table's rows */
    int method;          /* chosen by enc_choose */
    uint64_t size;       /* encoded bytes, method byte included */
} enc_col;

static uint64_t enc_get(const enc_col *c, uint64_t i)
{
    const ht_snap *s = c->s;
    switch (c->kind) {
    case SRC_U32:
        return ((const uint32_t *)c->arr)[i];
    case SRC_U64:
        return ((const uint64_t *)c->arr)[i];
    case SRC_STRLEN:
        return s->str_off[i + 1] - s->str_off[i];
    case SRC_TBLEN:
        return (uint64_t)(s->tb_off[i + 1] - s->tb_off[i]);
    case SRC_TBRANK:
        return ((const uint32_t *)c->arr)[s->tr_tb[i]];
    default: {  /* SRC_TBTOTAL: total_nframe minus the frame count */
        uint64_t total = (uint64_t)(int64_t)s->tb_total[i];
        return zz_enc(total - (uint64_t)(s->tb_off[i + 1] - s->tb_off[i]));
    }
    }
}

/* Bytes of the RUNS coding of values get(c, lo) .. get(c, hi - 1). */
static inline __attribute__((always_inline)) uint64_t
enc_runs_size(const enc_col *c, uint64_t (*get)(const enc_col *, uint64_t),
              uint64_t lo, uint64_t hi)
{
    uint64_t size = 0, run_val = 0, run_len = 0;
    for (uint64_t i = lo; i < hi; i++) {
        uint64_t v = get(c, i);
        if (run_len > 0 && v == run_val) {
            run_len++;
            continue;
        }
        if (run_len > 0) {
            size += varint_len(run_val) + varint_len(run_len - 1);
        }
        run_val = v;
        run_len = 1;
    }
    if (run_len > 0) {
        size += varint_len(run_val) + varint_len(run_len - 1);
    }
    return size;
}

/* Add the sizes of the three codings of values get(c, lo) .. get(c, hi - 1),
 * the first one coded as following `prev`.  Inlined into one loop per
 * source kind, so that the big trace columns are scanned without a switch
 * per value. */
typedef struct {
    uint64_t raw, delta, runs;
} enc_sizes;

static inline __attribute__((always_inline)) void
enc_measure(const enc_col *c, uint64_t (*get)(const enc_col *, uint64_t),
            uint64_t lo, uint64_t hi, uint64_t prev, enc_sizes *z)
{
    for (uint64_t i = lo; i < hi; i++) {
        uint64_t v = get(c, i);
        z->raw += varint_len(v);
        z->delta += varint_len(zz_enc(v - prev));
        prev = v;
    }
    z->runs += enc_runs_size(c, get, lo, hi);
}

/* Exact size of one coding of the whole column, method byte included. */
static inline __attribute__((always_inline)) uint64_t
enc_size(const enc_col *c, uint64_t (*get)(const enc_col *, uint64_t), int method)
{
    uint64_t size = 1;
    if (method == COL_RAW) {
        for (uint64_t i = 0; i < c->n; i++) {
            size += varint_len(get(c, i));
        }
    } else if (method == COL_DELTA) {
        uint64_t prev = 0;
        for (uint64_t i = 0; i < c->n; i++) {
            uint64_t v = get(c, i);
            size += varint_len(zz_enc(v - prev));
            prev = v;
        }
    } else {
        size += enc_runs_size(c, get, 0, c->n);
    }
    return size;
}

/* Columns longer than this choose their coding from a sample: blocks of
 * ENC_BLOCK consecutive values, one every ENC_STRIDE values (so runs and
 * differences are seen as they are), then measure only the chosen coding.
 * The choice is deterministic; a wrong guess only costs file size. */
#define ENC_EXACT 65536
#define ENC_BLOCK 64
#define ENC_STRIDE 1024

static inline __attribute__((always_inline)) void
enc_choose_with(enc_col *c, uint64_t (*get)(const enc_col *, uint64_t))
{
    enc_sizes z = {1, 1, 1};
    int exact = c->n <= ENC_EXACT;
    if (exact) {
        enc_measure(c, get, 0, c->n, 0, &z);
    } else {
        for (uint64_t lo = 0; lo < c->n; lo += ENC_STRIDE) {
            uint64_t hi = lo + ENC_BLOCK < c->n ? lo + ENC_BLOCK : c->n;
            enc_measure(c, get, lo, hi, lo > 0 ? get(c, lo - 1) : 0, &z);
        }
    }
    c->method = COL_RAW;
    c->size = z.raw;
    if (z.delta < c->size) {
        c->method = COL_DELTA;
        c->size = z.delta;
    }
    if (c->allow_runs && z.runs < c->size) {
        c->method = COL_RUNS;
        c->size = z.runs;
    }
    if (!exact) {
        c->size = enc_size(c, get, c->method);
    }
}

static inline __attribute__((always_inline)) uint8_t *
enc_emit(uint8_t *p, const enc_col *c, uint64_t (*get)(const enc_col *, uint64_t))
{
    *p++ = (uint8_t)c->method;
    if (c->method == COL_RAW) {
        for (uint64_t i = 0; i < c->n; i++) {
            p = put_varint(p, get(c, i));
        }
    } else if (c->method == COL_DELTA) {
        uint64_t prev = 0;
        for (uint64_t i = 0; i < c->n; i++) {
            uint64_t v = get(c, i);
            p = put_varint(p, zz_enc(v - prev));
            prev = v;
        }
    } else {
        uint64_t run_val = 0, run_len = 0;
        for (uint64_t i = 0; i < c->n; i++) {
            uint64_t v = get(c, i);
            if (run_len > 0 && v == run_val) {
                run_len++;
                continue;
            }
            if (run_len > 0) {
                p = put_varint(p, run_val);
                p = put_varint(p, run_len - 1);
            }
            run_val = v;
            run_len = 1;
        }
        if (run_len > 0) {
            p = put_varint(p, run_val);
            p = put_varint(p, run_len - 1);
        }
    }
    return p;
}

static uint64_t get_u32col(const enc_col *c, uint64_t i)
{
    return ((const uint32_t *)c->arr)[i];
}

static uint64_t get_u64col(const enc_col *c, uint64_t i)
{
    return ((const uint64_t *)c->arr)[i];
}

static uint64_t get_rank(const enc_col *c, uint64_t i)
{
    return ((const uint32_t *)c->arr)[c->s->tr_tb[i]];
}

/* Choose the column's coding (the smallest, RAW on ties, from a sample
 * when the column is long) and set its exact encoded size. */
static void enc_choose(enc_col *c)
{
    switch (c->kind) {
    case SRC_U32:
        enc_choose_with(c, get_u32col);
        break;
    case SRC_U64:
        enc_choose_with(c, get_u64col);
        break;
    case SRC_TBRANK:
        enc_choose_with(c, get_rank);
        break;
    default:
        enc_choose_with(c, enc_get);
        break;
    }
}

static uint8_t *enc_write(uint8_t *p, const enc_col *c)
{
    switch (c->kind) {
    case SRC_U32:
        return enc_emit(p, c, get_u32col);
    case SRC_U64:
        return enc_emit(p, c, get_u64col);
    case SRC_TBRANK:
        return enc_emit(p, c, get_rank);
    default:
        return enc_emit(p, c, enc_get);
    }
}

/* The ten columns in file order. */
enum {
    C_STRLEN, C_FRFILE, C_FRLINE, C_TBLEN, C_TBTOTAL, C_TBFRAMES,
    C_DOMAIN, C_SIZE, C_TBMAP, C_TB, NCOL
};

typedef struct {
    uint64_t count;
    uint32_t id;
} tb_freq;

static int tb_freq_cmp(const void *a, const void *b)
{
    const tb_freq *x = a, *y = b;
    if (x->count != y->count) {
        return x->count > y->count ? -1 : 1;     /* most used first */
    }
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Rank the tracebacks by how many traces use them: order[rank] = id and
 * rank_of[id] = rank, ties broken by id.  -1 when out of memory (nothing
 * left allocated). */
static int rank_tracebacks(const ht_snap *s, uint32_t **order,
                           uint32_t **rank_of)
{
    size_t n = s->ntracebacks;
    if (n > SIZE_MAX / sizeof(tb_freq)) {     /* only on 32-bit targets */
        return -1;
    }
    tb_freq *f = fmt_malloc(n * sizeof(*f));
    *order = fmt_malloc(n * sizeof(uint32_t));
    *rank_of = fmt_malloc(n * sizeof(uint32_t));
    if (f == NULL || *order == NULL || *rank_of == NULL) {
        /* free(NULL) is fine: whichever succeeded is released */
        free(f);
        free(*order);
        free(*rank_of);
        *order = *rank_of = NULL;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        f[i].count = 0;
        f[i].id = (uint32_t)i;
    }
    for (uint64_t i = 0; i < s->ntraces; i++) {
        f[s->tr_tb[i]].count++;
    }
    qsort(f, n, sizeof(*f), tb_freq_cmp);
    for (size_t r = 0; r < n; r++) {
        (*order)[r] = f[r].id;
        (*rank_of)[f[r].id] = (uint32_t)r;
    }
    free(f);
    return 0;
}

/* ---- native frames (version 2, flag HT_FORMAT_FLAG_NATIVE) ---- */

/* The native-frame section's columns, in file order. */
enum { N_FUNC, N_LIB, N_OFF, N_STLEN, N_STFRAMES, N_TRSTACK, NNCOL };

typedef struct {
    int present;
    uint32_t *lengths;         /* frames per stack (malloc'ed) */
    enc_col col[NNCOL];
    uint64_t len;              /* bytes of the section */
} native_enc;

/* Plan the native-frame section of s (absent when s has none).  0, or -1
 * when out of memory (nothing allocated). */
static int native_plan(const ht_snap *s, native_enc *n)
{
    memset(n, 0, sizeof(*n));
    if (s->nnstacks == 0) {
        return 0;
    }
    n->present = 1;
    n->lengths = fmt_malloc((size_t)s->nnstacks * sizeof(uint32_t));
    if (n->lengths == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < s->nnstacks; i++) {
        n->lengths[i] = s->ns_off[i + 1] - s->ns_off[i];
    }
    uint64_t nentries = s->ns_off[s->nnstacks];
    enc_col col[NNCOL] = {
        [N_FUNC] = {s, SRC_U32, s->nf_func, s->nnframes, 1, 0, 0},
        [N_LIB] = {s, SRC_U32, s->nf_lib, s->nnframes, 1, 0, 0},
        [N_OFF] = {s, SRC_U64, s->nf_off, s->nnframes, 0, 0, 0},
        [N_STLEN] = {s, SRC_U32, n->lengths, s->nnstacks, 0, 0, 0},
        [N_STFRAMES] = {s, SRC_U32, s->ns_frames, nentries, 0, 0, 0},
        [N_TRSTACK] = {s, SRC_U32, s->tr_nstack, s->ntraces, 0, 0, 0},
    };
    n->len = varint_len(s->nnframes) + varint_len(s->nnstacks);
    for (int k = 0; k < NNCOL; k++) {
        enc_choose(&col[k]);
        n->len += col[k].size;
        n->col[k] = col[k];
    }
    return 0;
}

static uint8_t *native_write(uint8_t *p, const native_enc *n)
{
    p = put_varint(p, n->col[N_OFF].n);          /* nnframes */
    p = put_varint(p, n->col[N_STLEN].n);        /* nnstacks */
    for (int k = 0; k < NNCOL; k++) {
        p = enc_write(p, &n->col[k]);
    }
    return p;
}

int ht_format_encode(const ht_snap *s, const uint8_t *meta, size_t meta_len,
                     uint8_t **out, size_t *out_len)
{
    uint64_t nentries = s->tb_off == NULL ? 0 : s->tb_off[s->ntracebacks];
    uint64_t blob_len = s->str_off == NULL ? 0 : s->str_off[s->nstrings];
    enc_col col[NCOL] = {
        [C_STRLEN] = {s, SRC_STRLEN, NULL, s->nstrings, 0, 0, 0},
        [C_FRFILE] = {s, SRC_U32, s->frame_file, s->nframes, 1, 0, 0},
        [C_FRLINE] = {s, SRC_U32, s->frame_line, s->nframes, 0, 0, 0},
        [C_TBLEN] = {s, SRC_TBLEN, NULL, s->ntracebacks, 0, 0, 0},
        [C_TBTOTAL] = {s, SRC_TBTOTAL, NULL, s->ntracebacks, 1, 0, 0},
        [C_TBFRAMES] = {s, SRC_U32, s->tb_frames, nentries, 0, 0, 0},
        [C_DOMAIN] = {s, SRC_U32, s->tr_domain, s->ntraces, 1, 0, 0},
        [C_SIZE] = {s, SRC_U64, s->tr_size, s->ntraces, 0, 0, 0},
        [C_TBMAP] = {s, SRC_U32, NULL, 0, 0, 0, 0},
        [C_TB] = {s, SRC_U32, s->tr_tb, s->ntraces, 1, 0, 0},
    };
    uint32_t *order = NULL, *rank_of = NULL;
    uint64_t map_n = 0;
    /* first column of each section */
    static const int first_col[NSEC + 1] = {
        C_STRLEN, C_STRLEN, C_FRFILE, C_TBLEN, C_DOMAIN, NCOL
    };
    uint64_t sec_len[NSEC];

    for (int k = 0; k < NCOL; k++) {
        enc_choose(&col[k]);
    }
    /* Traceback ids in the order of a hash table walk cost 2-3 bytes per
     * trace; ranks by frequency cost ~1.5 on skewed data.  Use the rank map
     * (rank -> id, stored once) when it makes the file smaller. */
    if (s->ntraces > 0 && s->ntracebacks > 1) {
        if (rank_tracebacks(s, &order, &rank_of) != 0) {
            return -1;
        }
        enc_col map = {s, SRC_U32, order, s->ntracebacks, 0, 0, 0};
        enc_col ranked = {s, SRC_TBRANK, rank_of, s->ntraces, 1, 0, 0};
        enc_choose(&map);
        enc_choose(&ranked);
        if (varint_len(s->ntracebacks) + map.size + ranked.size <
            varint_len(0) + col[C_TBMAP].size + col[C_TB].size) {
            col[C_TBMAP] = map;
            col[C_TB] = ranked;
            map_n = s->ntracebacks;
        }
    }
    sec_len[SEC_META] = meta_len;
    /* Version 1 when exact and without native frames, so that such files
     * stay readable by readers of version 1; version 2 opens the trace
     * section with the sampling interval (0: exact) and may carry the
     * native-frame section (flags bit 0). */
    int version2 = s->sampling_interval != 0 || s->nnstacks != 0;
    for (int k = SEC_STRINGS; k < NSEC; k++) {
        sec_len[k] = k == SEC_STRINGS ? blob_len
                   : k == SEC_TRACES ? varint_len(map_n) : 0;
        if (k == SEC_TRACES && version2) {
            sec_len[k] += varint_len(s->sampling_interval);
        }
        for (int c = first_col[k]; c < first_col[k + 1]; c++) {
            sec_len[k] += col[c].size;
        }
    }
    /* Each term is bounded by the memory the snapshot already occupies, so
     * the 64-bit sum cannot wrap; size_t may be narrower. */
    uint64_t total = HT_FORMAT_HEADER_SIZE + HT_FORMAT_TRAILER_SIZE;
    for (int k = 0; k < NSEC; k++) {
        total += sec_len[k];
    }
    native_enc nat;
    if (native_plan(s, &nat) < 0) {
        free(order);
        free(rank_of);
        return -1;
    }
    if (nat.present) {
        total += 12 + nat.len;
    }
    uint8_t *buf = total > SIZE_MAX ? NULL : fmt_malloc((size_t)total);
    if (buf == NULL) {
        free(order);
        free(rank_of);
        free(nat.lengths);
        return -1;
    }

    uint8_t *p = buf;
    memcpy(p, HT_FORMAT_MAGIC, HT_FORMAT_MAGIC_LEN);
    p = put_u32(p + HT_FORMAT_MAGIC_LEN,
                version2 ? HT_FORMAT_VERSION : HT_FORMAT_VERSION_EXACT);
    p = put_u32(p, nat.present ? HT_FORMAT_FLAG_NATIVE : 0);     /* flags */
    p = put_u32(p, (uint32_t)s->traceback_limit);
    p = put_u32(p, s->nstrings);
    p = put_u32(p, s->nframes);
    p = put_u32(p, s->ntracebacks);
    p = put_u64(p, s->ntraces);
    for (int k = 0; k < NSEC; k++) {
        p = put_u64(p, sec_len[k]);
    }
    p = put_u32(p, ht_crc32c(0, buf, HT_FORMAT_HEADER_CRC_OFFSET));

    uint8_t *body = p;
    if (meta_len > 0) {
        memcpy(p, meta, meta_len);
        p += meta_len;
    }
    p = enc_write(p, &col[C_STRLEN]);
    if (blob_len > 0) {
        memcpy(p, s->str_blob, (size_t)blob_len);
        p += blob_len;
    }
    for (int c = C_FRFILE; c < NCOL; c++) {
        if (c == first_col[SEC_TRACES] && version2) {
            p = put_varint(p, s->sampling_interval);
        }
        if (c == C_TBMAP) {
            p = put_varint(p, map_n);
        }
        p = enc_write(p, &col[c]);
    }
    if (nat.present) {
        uint8_t *at = p;
        p = put_u64(p, nat.len);
        p = put_u32(p, ht_crc32c(0, at, 8));
        p = native_write(p, &nat);
    }
    free(nat.lengths);
    p = put_u32(p, ht_crc32c(0, body, (size_t)(p - body)));
    free(order);
    free(rank_of);

    *out = buf;
    *out_len = (size_t)total;
    return 0;
}

/* ---------------------------------------------------------------- decoder */

typedef struct {
    const uint8_t *p, *end;    /* unread bytes of the current section */
    const char *sec;           /* its name, for messages */
    uint32_t version;          /* the file's format version */
    char *err;
    size_t errlen;
} dec_t;

typedef struct {
    const char *name;          /* e.g. "size column", for messages */
    int method;
    uint64_t n, i;             /* values in the column, values read */
    uint64_t prev;             /* DELTA: last value; RUNS: current value */
    uint64_t run_left;         /* RUNS: values left in the current run */
} dec_col;

static ht_format_status dfail(dec_t *d, ht_format_status st,
                              const char *fmt, ...)
{
    if (d->err != NULL && d->errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, d->errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static size_t left(const dec_t *d)
{
    return (size_t)(d->end - d->p);
}

/* Read one minimal LEB128 varint of at most 64 bits: the general case. */
static ht_format_status get_varint_slow(dec_t *d, const dec_col *c, uint64_t *v)
{
    uint64_t x = 0;
    const uint8_t *p = d->p;
    for (unsigned k = 0;; k++) {
        if (p == d->end) {
            return dfail(d, HT_FORMAT_CORRUPT, "%s: %s ends inside value %"
                         PRIu64 " of %" PRIu64 " (the section is too short)",
                         d->sec, c->name, c->i, c->n);
        }
        uint8_t b = *p++;
        if (k == 9 && b > 1) {
            return dfail(d, HT_FORMAT_CORRUPT, "%s: %s value %" PRIu64
                         " does not fit in 64 bits", d->sec, c->name, c->i);
        }
        x |= (uint64_t)(b & 0x7F) << (7 * k);
        if (b < 0x80) {
            if (b == 0 && k > 0) {
                return dfail(d, HT_FORMAT_CORRUPT, "%s: %s value %" PRIu64
                             " is a non-minimal varint", d->sec, c->name,
                             c->i);
            }
            break;
        }
    }
    d->p = p;
    *v = x;
    return HT_FORMAT_OK;
}

/* Decode a minimal varint of one to three bytes at p (at least three bytes
 * readable); returns the byte after it, or NULL for anything else (longer,
 * non-minimal), which the caller leaves to the checked path. */
static inline const uint8_t *fast_varint(const uint8_t *p, uint64_t *x)
{
    if (p[0] < 0x80) {
        *x = p[0];
        return p + 1;
    }
    if (p[1] < 0x80) {
        *x = (uint64_t)(p[0] & 0x7F) | ((uint64_t)p[1] << 7);
        return p[1] != 0 ? p + 2 : NULL;
    }
    if (p[2] < 0x80 && p[2] != 0) {
        *x = (uint64_t)(p[0] & 0x7F) | ((uint64_t)(p[1] & 0x7F) << 7)
            | ((uint64_t)p[2] << 14);
        return p + 3;
    }
    return NULL;
}

/* Read one minimal LEB128 varint of at most 64 bits.  Most values of a
 * snapshot take one to three bytes: those are decoded inline, everything
 * else (and every error) by get_varint_slow. */
static inline ht_format_status get_varint(dec_t *d, const dec_col *c, uint64_t *v)
{
    if (d->end - d->p >= 3) {
        const uint8_t *q = fast_varint(d->p, v);
        if (q != NULL) {
            d->p = q;
            return HT_FORMAT_OK;
        }
    }
    return get_varint_slow(d, c, v);
}

static ht_format_status col_begin(dec_t *d, dec_col *c, const char *name,
                                  uint64_t n, int allow_runs)
{
    memset(c, 0, sizeof(*c));
    c->name = name;
    c->n = n;
    if (d->p == d->end) {
        return dfail(d, HT_FORMAT_CORRUPT, "%s ends before the %s", d->sec,
                     name);
    }
    c->method = *d->p++;
    if (c->method > COL_RUNS || (c->method == COL_RUNS && !allow_runs)) {
        return dfail(d, HT_FORMAT_CORRUPT, "%s: %s has invalid coding %d",
                     d->sec, name, c->method);
    }
    return HT_FORMAT_OK;
}

/* Next value of a column; the caller reads exactly c->n of them. */
static inline ht_format_status col_next(dec_t *d, dec_col *c, uint64_t *v)
{
    ht_format_status st;
    uint64_t x = 0;
    if (c->method == COL_RUNS) {
        if (c->run_left == 0) {
            uint64_t extra = 0;
            if ((st = get_varint(d, c, &c->prev)) != HT_FORMAT_OK ||
                (st = get_varint(d, c, &extra)) != HT_FORMAT_OK) {
                return st;
            }
            if (extra >= c->n - c->i) {
                return dfail(d, HT_FORMAT_CORRUPT, "%s: %s has a run "
                             "longer than the %" PRIu64 " values that remain "
                             "(at value %" PRIu64 ")", d->sec, c->name,
                             c->n - c->i, c->i);
            }
            c->run_left = extra + 1;
        }
        c->run_left--;
        *v = c->prev;
    } else {
        if ((st = get_varint(d, c, &x)) != HT_FORMAT_OK) {
            return st;
        }
        if (c->method == COL_DELTA) {
            c->prev += zz_dec(x);
            x = c->prev;
        }
        *v = x;
    }
    c->i++;
    return HT_FORMAT_OK;
}

/* Next value of a column that must fit in 32 bits and, when `table` (what
 * the value indexes) is non-NULL, be below `limit` (the table's size). */
static inline ht_format_status col_next_u32(dec_t *d, dec_col *c, uint32_t *v,
                                     uint64_t limit, const char *row,
                                     const char *table)
{
    uint64_t x = 0;   /* set by col_next; initialised for -O3's flow analysis */
    ht_format_status st = col_next(d, c, &x);
    if (st != HT_FORMAT_OK) {
        return st;
    }
    if (table == NULL) {
        limit = (uint64_t)UINT32_MAX + 1;
    }
    if (x >= limit) {
        if (table == NULL) {
            return dfail(d, HT_FORMAT_CORRUPT, "%s: %s %" PRIu64 " has %s %"
                         PRIu64 ", more than 32 bits", d->sec, row, c->i - 1,
                         c->name, x);
        }
        return dfail(d, HT_FORMAT_CORRUPT, "%s %" PRIu64 " refers to %s %"
                     PRIu64 " but there are %" PRIu64 " %ss", row, c->i - 1,
                     table, x, limit, table);
    }
    *v = (uint32_t)x;
    return HT_FORMAT_OK;
}

/* Read the rest of a column (values c->i .. c->n - 1) into out: uint64_t
 * values when wide, else uint32_t values checked as col_next_u32 checks
 * them (limit, row and table as there).  The common cases run in tight
 * loops: a run is filled in one go, and short varints of RAW and DELTA
 * columns are decoded inline.  Anything else, errors included, goes
 * through col_next / col_next_u32, so the checks and messages are theirs. */
static inline __attribute__((always_inline)) ht_format_status
col_read(dec_t *d, dec_col *c, void *out, int wide, uint64_t limit,
         const char *row, const char *table)
{
    ht_format_status st;
    uint64_t lim = wide ? UINT64_MAX : table != NULL ? limit
                 : (uint64_t)UINT32_MAX + 1;
    while (c->i < c->n) {
        if (c->method == COL_RUNS) {
            if (c->run_left > 0) {
                /* The run's value was checked when the run began, and the
                 * run does not go past the column's end. */
                for (uint64_t k = c->i; k < c->i + c->run_left; k++) {
                    if (wide) {
                        ((uint64_t *)out)[k] = c->prev;
                    } else {
                        ((uint32_t *)out)[k] = (uint32_t)c->prev;
                    }
                }
                c->i += c->run_left;
                c->run_left = 0;
                continue;
            }
        } else {
            const uint8_t *p = d->p;
            uint64_t i = c->i, prev = c->prev;
            int delta = c->method == COL_DELTA;
            while (i < c->n && d->end - p >= 3) {
                uint64_t x;
                const uint8_t *q = fast_varint(p, &x);
                if (q == NULL) {
                    break;
                }
                if (delta) {
                    x = prev + zz_dec(x);
                }
                if (x >= lim) {
                    break;
                }
                prev = x;
                if (wide) {
                    ((uint64_t *)out)[i] = x;
                } else {
                    ((uint32_t *)out)[i] = (uint32_t)x;
                }
                i++;
                p = q;
            }
            d->p = p;
            c->i = i;
            if (delta) {
                c->prev = prev;
            }
            if (i == c->n) {
                break;
            }
        }
        st = wide ? col_next(d, c, (uint64_t *)out + c->i)
                  : col_next_u32(d, c, (uint32_t *)out + c->i, limit, row, table);
        if (st != HT_FORMAT_OK) {
            return st;
        }
    }
    return HT_FORMAT_OK;
}

/* The section must be used up exactly. */
static ht_format_status sec_end(dec_t *d)
{
    if (d->p != d->end) {
        return dfail(d, HT_FORMAT_CORRUPT, "%s has %zu unexpected bytes at "
                     "its end", d->sec, left(d));
    }
    return HT_FORMAT_OK;
}

/* malloc count * elem bytes (NULL, and success, when count is 0). */
static ht_format_status alloc_array(dec_t *d, void **dst, uint64_t count,
                                    size_t elem)
{
    *dst = NULL;
    if (count > 0) {
        if (count > SIZE_MAX / elem ||
            (*dst = fmt_malloc((size_t)count * elem)) == NULL) {
            return dfail(d, HT_FORMAT_NO_MEMORY, "out of memory allocating %"
                         PRIu64 " entries for the %s", count, d->sec);
        }
    }
    return HT_FORMAT_OK;
}

#define TRY(expr) do { if ((st = (expr)) != HT_FORMAT_OK) return st; } while (0)

/* field = malloc'd array of count entries, or return the failure. */
#define ALLOC(field, count) do {                                          \
        void *p_;                                                         \
        TRY(alloc_array(d, &p_, (count), sizeof(*(field))));              \
        (field) = p_;                                                     \
    } while (0)

static ht_format_status dec_strings(dec_t *d, ht_snap *s)
{
    ht_format_status st;
    dec_col c;
    uint64_t off = 0, x = 0;
    TRY(col_begin(d, &c, "length column", s->nstrings, 0));
    ALLOC(s->str_off, (uint64_t)s->nstrings + 1);
    s->str_off[0] = 0;
    for (uint32_t i = 0; i < s->nstrings; i++) {
        TRY(col_next(d, &c, &x));
        /* off <= section length, so the sum cannot wrap */
        if (x > left(d) || off + x > left(d)) {
            return dfail(d, HT_FORMAT_CORRUPT, "string %" PRIu32 " needs %"
                         PRIu64 " bytes but only %zu bytes of the string "
                         "table remain", i, x, left(d));
        }
        off += x;
        s->str_off[i + 1] = off;
    }
    if (off != left(d)) {
        return dfail(d, HT_FORMAT_CORRUPT, "string table: strings take %"
                     PRIu64 " bytes but %zu remain", off, left(d));
    }
    ALLOC(s->str_blob, off);
    if (off > 0) {
        memcpy(s->str_blob, d->p, (size_t)off);
        d->p += off;
    }
    return sec_end(d);
}

static ht_format_status dec_frames(dec_t *d, ht_snap *s)
{
    ht_format_status st;
    dec_col c;
    ALLOC(s->frame_file, s->nframes);
    ALLOC(s->frame_line, s->nframes);
    TRY(col_begin(d, &c, "file column", s->nframes, 1));
    for (uint32_t i = 0; i < s->nframes; i++) {
        TRY(col_next_u32(d, &c, &s->frame_file[i], s->nstrings, "frame",
                         "string"));
    }
    TRY(col_begin(d, &c, "line column", s->nframes, 0));
    for (uint32_t i = 0; i < s->nframes; i++) {
        TRY(col_next_u32(d, &c, &s->frame_line[i], 0, "frame", NULL));
    }
    return sec_end(d);
}

static ht_format_status dec_tracebacks(dec_t *d, ht_snap *s)
{
    ht_format_status st;
    dec_col c;
    uint64_t x = 0, nentries = 0;
    uint32_t n = s->ntracebacks;
    ALLOC(s->tb_off, (uint64_t)n + 1);
    ALLOC(s->tb_total, n);
    s->tb_off[0] = 0;
    TRY(col_begin(d, &c, "length column", n, 0));
    for (uint32_t i = 0; i < n; i++) {
        TRY(col_next(d, &c, &x));
        /* every frame entry takes at least one byte of this section */
        if (x > left(d) || nentries + x > left(d)) {
            return dfail(d, HT_FORMAT_TOO_LARGE, "traceback %" PRIu32 " claims %"
                         PRIu64 " frames but only %zu bytes of the traceback "
                         "table remain", i, x, left(d));
        }
        nentries += x;
        if (nentries > UINT32_MAX) {
            return dfail(d, HT_FORMAT_TOO_LARGE, "tracebacks hold more than "
                         "2^32-1 frames");
        }
        s->tb_off[i + 1] = (uint32_t)nentries;
    }
    TRY(col_begin(d, &c, "total_nframe column", n, 1));
    for (uint32_t i = 0; i < n; i++) {
        TRY(col_next(d, &c, &x));
        /* total_nframe = frame count + zigzag-decoded difference, computed
         * modulo 2^64; it must land in [-1, INT32_MAX]. */
        uint64_t t = (uint64_t)(s->tb_off[i + 1] - s->tb_off[i]) + zz_dec(x);
        if (t + 1 > (uint64_t)INT32_MAX + 1) {
            return dfail(d, HT_FORMAT_CORRUPT, "traceback %" PRIu32 " has an "
                         "invalid total_nframe", i);
        }
        s->tb_total[i] = t == UINT64_MAX ? -1 : (int32_t)t;
    }
    if (nentries + 1 > left(d)) {
        return dfail(d, HT_FORMAT_TOO_LARGE, "tracebacks hold %" PRIu64
                     " frames but only %zu bytes of the traceback table "
                     "remain", nentries, left(d));
    }
    ALLOC(s->tb_frames, nentries);
    TRY(col_begin(d, &c, "frame column", nentries, 0));
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t k = s->tb_off[i]; k < s->tb_off[i + 1]; k++) {
            TRY(col_next(d, &c, &x));
            if (x >= s->nframes) {
                return dfail(d, HT_FORMAT_CORRUPT, "traceback %" PRIu32
                             " refers to frame %" PRIu64 " but there are %"
                             PRIu32 " frames", i, x, s->nframes);
            }
            s->tb_frames[k] = (uint32_t)x;
        }
    }
    return sec_end(d);
}

static ht_format_status dec_traces_map(dec_t *d, ht_snap *s, uint32_t **map)
{
    ht_format_status st;
    dec_col c;
    uint64_t n = s->ntraces, m;
    if (d->version >= 2) {
        uint64_t interval;
        c.name = "sampling interval";
        c.n = 1;
        c.i = 0;
        TRY(get_varint(d, &c, &interval));
        if (interval > HT_FORMAT_MAX_INTERVAL) {
            return dfail(d, HT_FORMAT_CORRUPT, "%s: sampling interval %" PRIu64
                         " is out of range (0 to %" PRIu64 ")", d->sec,
                         interval, (uint64_t)HT_FORMAT_MAX_INTERVAL);
        }
        s->sampling_interval = interval;
    }
    ALLOC(s->tr_domain, n);
    ALLOC(s->tr_size, n);
    ALLOC(s->tr_tb, n);
    TRY(col_begin(d, &c, "domain column", n, 1));
    TRY(col_read(d, &c, s->tr_domain, 0, 0, "trace", NULL));
    TRY(col_begin(d, &c, "size column", n, 0));
    TRY(col_read(d, &c, s->tr_size, 1, 0, NULL, NULL));
    /* optional rank map: the traceback column then holds ranks */
    c.name = "traceback map length";
    c.n = 1;
    c.i = 0;
    TRY(get_varint(d, &c, &m));
    if (m != 0 && m != s->ntracebacks) {
        return dfail(d, HT_FORMAT_CORRUPT, "%s: traceback map has %" PRIu64
                     " entries, expected 0 or %" PRIu32, d->sec, m,
                     s->ntracebacks);
    }
    if (m > left(d)) {      /* each entry takes a byte: bounds the malloc */
        return dfail(d, HT_FORMAT_TOO_LARGE, "%s: traceback map has %" PRIu64
                     " entries but only %zu bytes remain", d->sec, m, left(d));
    }
    ALLOC(*map, m);
    TRY(col_begin(d, &c, "traceback map", m, 0));
    for (uint64_t i = 0; i < m; i++) {
        TRY(col_next_u32(d, &c, &(*map)[i], s->ntracebacks, "traceback map "
                         "entry", "traceback"));
    }
    TRY(col_begin(d, &c, "traceback column", n, 1));
    TRY(col_read(d, &c, s->tr_tb, 0, m != 0 ? m : s->ntracebacks, "trace",
                 m != 0 ? "traceback rank" : "traceback"));
    if (m != 0) {
        for (uint64_t i = 0; i < n; i++) {
            s->tr_tb[i] = (*map)[s->tr_tb[i]];
        }
    }
    return sec_end(d);
}

static ht_format_status dec_traces(dec_t *d, ht_snap *s)
{
    uint32_t *map = NULL;
    ht_format_status st = dec_traces_map(d, s, &map);
    free(map);
    return st;
}

/* The native-frame section (version 2 with HT_FORMAT_FLAG_NATIVE). */
static ht_format_status dec_native(dec_t *d, ht_snap *s)
{
    ht_format_status st;
    dec_col c;
    uint64_t nf, ns, x = 0, nentries = 0;
    c.name = "native frame count";
    c.n = 1;
    c.i = 0;
    TRY(get_varint(d, &c, &nf));
    c.name = "native stack count";
    TRY(get_varint(d, &c, &ns));
    /* Each frame and each stack costs a byte of a no-RUNS column. */
    if (nf > left(d) || ns > left(d) || nf + ns > left(d)) {
        return dfail(d, HT_FORMAT_TOO_LARGE, "%s claims %" PRIu64 " frames "
                     "and %" PRIu64 " stacks but only %zu bytes remain",
                     d->sec, nf, ns, left(d));
    }
    if (ns == 0) {
        return dfail(d, HT_FORMAT_CORRUPT, "%s has no stacks", d->sec);
    }
    if (nf > UINT32_MAX || ns >= UINT32_MAX) {
        return dfail(d, HT_FORMAT_TOO_LARGE, "%s has more than 2^32-1 frames "
                     "or stacks", d->sec);
    }
    /* The trace stack column may not use RUNS either: a byte per trace,
     * so its array stays within the memory bound of docs/format.md. */
    if (s->ntraces > left(d) - nf - ns) {
        return dfail(d, HT_FORMAT_TOO_LARGE, "%s cannot hold the stacks of %"
                     PRIu64 " traces in %zu bytes", d->sec, s->ntraces, left(d));
    }
    s->nnframes = (uint32_t)nf;
    s->nnstacks = (uint32_t)ns;
    ALLOC(s->nf_func, nf);
    ALLOC(s->nf_lib, nf);
    ALLOC(s->nf_off, nf);
    ALLOC(s->ns_off, ns + 1);
    TRY(col_begin(d, &c, "function column", nf, 1));
    for (uint64_t i = 0; i < nf; i++) {
        TRY(col_next_u32(d, &c, &s->nf_func[i], (uint64_t)s->nstrings + 1,
                         "native frame", "string+1"));
    }
    TRY(col_begin(d, &c, "library column", nf, 1));
    for (uint64_t i = 0; i < nf; i++) {
        TRY(col_next_u32(d, &c, &s->nf_lib[i], s->nstrings, "native frame",
                         "string"));
    }
    TRY(col_begin(d, &c, "offset column", nf, 0));
    for (uint64_t i = 0; i < nf; i++) {
        TRY(col_next(d, &c, &s->nf_off[i]));
    }
    s->ns_off[0] = 0;
    TRY(col_begin(d, &c, "stack length column", ns, 0));
    for (uint64_t i = 0; i < ns; i++) {
        TRY(col_next(d, &c, &x));
        /* every entry takes at least one byte of this section */
        if (x > left(d) || nentries + x > left(d)) {
            return dfail(d, HT_FORMAT_TOO_LARGE, "native stack %" PRIu64
                         " claims %" PRIu64 " frames but only %zu bytes of "
                         "the %s remain", i, x, left(d), d->sec);
        }
        nentries += x;
        if (nentries > UINT32_MAX) {
            return dfail(d, HT_FORMAT_TOO_LARGE, "native stacks hold more "
                         "than 2^32-1 frames");
        }
        s->ns_off[i + 1] = (uint32_t)nentries;
    }
    ALLOC(s->ns_frames, nentries);
    TRY(col_begin(d, &c, "stack frame column", nentries, 0));
    for (uint64_t k = 0; k < nentries; k++) {
        TRY(col_next_u32(d, &c, &s->ns_frames[k], nf, "native stack entry",
                         "native frame"));
    }
    ALLOC(s->tr_nstack, s->ntraces);
    TRY(col_begin(d, &c, "trace stack column", s->ntraces, 0));
    TRY(col_read(d, &c, s->tr_nstack, 0, ns, "trace", "native stack"));
    return sec_end(d);
}

/* Everything after the magic bytes: header checks, then the sections. */
static ht_format_status dec_file(dec_t *d, const uint8_t *buf, size_t len,
                                 ht_snap *s, uint8_t **meta, size_t *meta_len)
{
    ht_format_status st;
    if (len < H_FLAGS) {
        return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: header needs %d "
                     "bytes, %zu remain", HT_FORMAT_HEADER_SIZE, len);
    }
    uint32_t version = get_u32(buf + H_VERSION);
    if (version != HT_FORMAT_VERSION && version != HT_FORMAT_VERSION_EXACT) {
        return dfail(d, HT_FORMAT_UNSUPPORTED_VERSION, "format version %"
                     PRIu32 " is not supported (this reader reads versions "
                     "%d and %d)", version, HT_FORMAT_VERSION_EXACT,
                     HT_FORMAT_VERSION);
    }
    d->version = version;
    if (len < HT_FORMAT_HEADER_SIZE) {
        return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: header needs %d "
                     "bytes, %zu remain", HT_FORMAT_HEADER_SIZE, len);
    }
    uint32_t stored = get_u32(buf + HT_FORMAT_HEADER_CRC_OFFSET);
    uint32_t actual = ht_crc32c(0, buf, HT_FORMAT_HEADER_CRC_OFFSET);
    if (stored != actual) {
        return dfail(d, HT_FORMAT_CORRUPT, "header checksum mismatch (stored "
                     "0x%08" PRIx32 ", computed 0x%08" PRIx32 ")", stored,
                     actual);
    }
    uint32_t flags = get_u32(buf + H_FLAGS);
    uint32_t known = version >= 2 ? HT_FORMAT_FLAG_NATIVE : 0;
    if ((flags & ~known) != 0) {
        return dfail(d, HT_FORMAT_UNSUPPORTED_VERSION, "unknown flags 0x%"
                     PRIx32 " in a version %" PRIu32 " file", flags & ~known,
                     version);
    }
    uint32_t limit = get_u32(buf + H_LIMIT);
    s->traceback_limit = limit <= INT32_MAX ? (int32_t)limit
        : -(int32_t)(~limit) - 1;
    s->nstrings = get_u32(buf + H_NSTRINGS);
    s->nframes = get_u32(buf + H_NFRAMES);
    s->ntracebacks = get_u32(buf + H_NTRACEBACKS);
    s->ntraces = get_u64(buf + H_NTRACES);

    /* Do the sections fit in the file?  (Checked one by one, so no sum can
     * wrap and the message names the first section that is cut.) */
    uint64_t sec_len[NSEC];
    const uint8_t *sec_start[NSEC];
    size_t pos = HT_FORMAT_HEADER_SIZE;
    for (int k = 0; k < NSEC; k++) {
        sec_len[k] = get_u64(buf + H_SECLEN + 8 * k);
        sec_start[k] = buf + pos;
        if (sec_len[k] > len - pos) {
            return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: %s needs %"
                         PRIu64 " bytes, %zu remain", sec_name[k], sec_len[k],
                         len - pos);
        }
        pos += (size_t)sec_len[k];
    }
    /* Version 2: the native-frame section, after its 8-byte length and
     * that length's own CRC-32C (so that a damaged length reads as
     * damage, not as a file cut short). */
    const uint8_t *native_start = NULL;
    uint64_t native_len = 0;
    if (flags & HT_FORMAT_FLAG_NATIVE) {
        if (len - pos < 12) {
            return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: native "
                         "frame section length needs 12 bytes, %zu remain",
                         len - pos);
        }
        native_len = get_u64(buf + pos);
        stored = get_u32(buf + pos + 8);
        actual = ht_crc32c(0, buf + pos, 8);
        if (stored != actual) {
            return dfail(d, HT_FORMAT_CORRUPT, "native frame section length "
                         "checksum mismatch (stored 0x%08" PRIx32 ", computed "
                         "0x%08" PRIx32 ")", stored, actual);
        }
        pos += 12;
        if (native_len > len - pos) {
            return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: native "
                         "frame section needs %" PRIu64 " bytes, %zu remain",
                         native_len, len - pos);
        }
        native_start = buf + pos;
        pos += (size_t)native_len;
    }
    if (len - pos < HT_FORMAT_TRAILER_SIZE) {
        return dfail(d, HT_FORMAT_TRUNCATED, "truncated file: checksum needs "
                     "%d bytes, %zu remain", HT_FORMAT_TRAILER_SIZE, len - pos);
    }
    if (len - pos > HT_FORMAT_TRAILER_SIZE) {
        return dfail(d, HT_FORMAT_CORRUPT, "%zu unexpected bytes after the "
                     "end of the snapshot", len - pos - HT_FORMAT_TRAILER_SIZE);
    }

    /* Can each table's rows fit in its section?  Each row costs at least
     * one byte of a column that may not use RUNS. */
    static const struct { int sec; const char *rows; } rowsec[] = {
        {SEC_STRINGS, "strings"}, {SEC_FRAMES, "frames"},
        {SEC_TRACEBACKS, "tracebacks"}, {SEC_TRACES, "traces"},
    };
    uint64_t rows[] = {s->nstrings, s->nframes, s->ntracebacks, s->ntraces};
    for (int k = 0; k < 4; k++) {
        if (rows[k] > sec_len[rowsec[k].sec]) {
            return dfail(d, HT_FORMAT_TOO_LARGE, "header claims %" PRIu64
                         " %s but the %s holds only %" PRIu64 " bytes",
                         rows[k], rowsec[k].rows, sec_name[rowsec[k].sec],
                         sec_len[rowsec[k].sec]);
        }
    }

    stored = get_u32(buf + pos);
    actual = ht_crc32c(0, buf + HT_FORMAT_HEADER_SIZE,
                       pos - HT_FORMAT_HEADER_SIZE);
    if (stored != actual) {
        return dfail(d, HT_FORMAT_CORRUPT, "checksum mismatch (stored 0x%08"
                     PRIx32 ", computed 0x%08" PRIx32 ")", stored, actual);
    }

    static ht_format_status (*const dec_sec[NSEC])(dec_t *, ht_snap *) = {
        NULL, dec_strings, dec_frames, dec_tracebacks, dec_traces,
    };
    for (int k = SEC_STRINGS; k < NSEC; k++) {
        d->p = sec_start[k];
        d->end = sec_start[k] + sec_len[k];
        d->sec = sec_name[k];
        TRY(dec_sec[k](d, s));
    }
    if (native_start != NULL) {
        d->p = native_start;
        d->end = native_start + native_len;
        d->sec = "native frame section";
        TRY(dec_native(d, s));
    }

    if (ht_snap_validate(s, d->err, d->errlen) != 0) {
        return HT_FORMAT_CORRUPT;
    }
    if (meta != NULL) {
        uint8_t *m = fmt_malloc((size_t)sec_len[SEC_META] + 1);
        if (m == NULL) {
            return dfail(d, HT_FORMAT_NO_MEMORY, "out of memory copying the "
                         "%" PRIu64 "-byte meta section", sec_len[SEC_META]);
        }
        if (sec_len[SEC_META] > 0) {
            memcpy(m, sec_start[SEC_META], (size_t)sec_len[SEC_META]);
        }
        m[sec_len[SEC_META]] = 0;
        *meta = m;
        if (meta_len != NULL) {
            *meta_len = (size_t)sec_len[SEC_META];
        }
    }
    return HT_FORMAT_OK;
}

ht_format_status ht_format_decode(const uint8_t *buf, size_t len, ht_snap *out,
                                  uint8_t **meta, size_t *meta_len,
                                  char *err, size_t errlen)
{
    dec_t d = {.sec = "header", .err = err, .errlen = errlen};
    ht_format_status st;
    memset(out, 0, sizeof(*out));
    if (meta != NULL) {
        *meta = NULL;
    }
    if (meta_len != NULL) {
        *meta_len = 0;
    }
    size_t m = len < HT_FORMAT_MAGIC_LEN ? len : HT_FORMAT_MAGIC_LEN;
    if (m > 0 && memcmp(buf, HT_FORMAT_MAGIC, m) != 0) {
        st = dfail(&d, HT_FORMAT_NOT_A_SNAPSHOT, "not a heaptrace snapshot "
                   "(bad magic bytes%s)", buf[0] == 0x80
                   ? "; this looks like a pickle, e.g. from tracemalloc's "
                     "Snapshot.dump" : "");
    } else if (len < HT_FORMAT_MAGIC_LEN) {
        st = dfail(&d, HT_FORMAT_TRUNCATED, len == 0 ? "empty file"
                   : "truncated file: header needs %d bytes, %zu remain",
                   HT_FORMAT_HEADER_SIZE, len);
    } else {
        st = dec_file(&d, buf, len, out, meta, meta_len);
    }
    if (st != HT_FORMAT_OK) {
        ht_snap_free(out);
    }
    return st;
}

const char *ht_format_status_name(int status)
{
    static const char *const names[] = {
        "OK", "NOT_A_SNAPSHOT", "UNSUPPORTED_VERSION", "TRUNCATED", "CORRUPT",
        "TOO_LARGE", "NO_MEMORY",
    };
    if (status < 0 || status >= (int)(sizeof(names) / sizeof(names[0]))) {
        return "UNKNOWN";
    }
    return names[status];
}
