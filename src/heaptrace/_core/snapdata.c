/* snapdata.c: free, validate and compare ht_snap (the frozen snapshot).
 *
 * Validation walks every table exactly once and checks each entry against
 * the count of the table it points into, so a snapshot that passes can be
 * indexed without further bounds checks.  It is the last line of defence of
 * the file loader (format.c) and a cheap sanity check for anything else that
 * builds an ht_snap, so it never trusts a count to match an array beyond
 * what the invariants promise, and reports the first problem in words.
 *
 * Strings are checked to be UTF-8 as CPython's "surrogatepass" handler
 * writes it: standard UTF-8 (shortest form, at most U+10FFFF) except that
 * the three-byte forms of U+D800..U+DFFF are accepted, so that a file name
 * with lone surrogates survives a round trip.
 */
#include "snapdata.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ht_snap_free(ht_snap *s)
{
    if (s == NULL) {
        return;
    }
    free(s->str_off);
    free(s->str_blob);
    free(s->frame_file);
    free(s->frame_line);
    free(s->tb_off);
    free(s->tb_frames);
    free(s->tb_total);
    free(s->tr_domain);
    free(s->tr_size);
    free(s->tr_tb);
    free(s->nf_func);
    free(s->nf_lib);
    free(s->nf_off);
    free(s->ns_off);
    free(s->ns_frames);
    free(s->tr_nstack);
    memset(s, 0, sizeof(*s));
}

/* printf-style message into err (if any), always returns -1. */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Length of the valid UTF-8 (surrogatepass) prefix of p[0..n); n if valid. */
static size_t utf8_valid_prefix(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;    /* range of the 2nd byte */
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2;
            lo = 0xA0;                         /* no overlong forms */
        } else if (c >= 0xE1 && c <= 0xEF) {
            need = 2;                          /* ED: surrogates allowed */
        } else if (c == 0xF0) {
            need = 3;
            lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3;
            hi = 0x8F;                         /* nothing above U+10FFFF */
        } else {
            return i;                          /* 80..C1, F5..FF */
        }
        if (n - i - 1 < need || p[i + 1] < lo || p[i + 1] > hi) {
            return i;
        }
        for (size_t k = 2; k <= need; k++) {
            if (p[i + k] < 0x80 || p[i + k] > 0xBF) {
                return i;
            }
        }
        i += need + 1;
    }
    return n;
}

/* The native-frame tables (snapshot.h). */
static int validate_native(const ht_snap *s, char *err, size_t errlen)
{
    if (s->nnstacks == 0) {
        if (s->nnframes != 0 || s->tr_nstack != NULL || s->ns_off != NULL) {
            return fail(err, errlen, "native frames without native stacks");
        }
        return 0;
    }
    if (s->nnframes > 0
        && (s->nf_func == NULL || s->nf_lib == NULL || s->nf_off == NULL)) {
        return fail(err, errlen, "native frame arrays are NULL but there are %"
                    PRIu32 " native frames", s->nnframes);
    }
    for (uint32_t i = 0; i < s->nnframes; i++) {
        if (s->nf_func[i] > s->nstrings || s->nf_lib[i] >= s->nstrings) {
            return fail(err, errlen, "native frame %" PRIu32 " refers to a "
                        "string beyond the %" PRIu32 " strings", i, s->nstrings);
        }
    }
    if (s->ns_off == NULL || s->ns_off[0] != 0) {
        return fail(err, errlen, "native stack offsets missing or not "
                    "starting at 0");
    }
    for (uint32_t i = 0; i < s->nnstacks; i++) {
        if (s->ns_off[i + 1] < s->ns_off[i]) {
            return fail(err, errlen, "native stack %" PRIu32 " ends before "
                        "its start", i);
        }
    }
    uint32_t nentries = s->ns_off[s->nnstacks];
    if (nentries > 0 && s->ns_frames == NULL) {
        return fail(err, errlen, "ns_frames is NULL but the native stacks "
                    "hold %" PRIu32 " frames", nentries);
    }
    for (uint32_t k = 0; k < nentries; k++) {
        if (s->ns_frames[k] >= s->nnframes) {
            return fail(err, errlen, "native stack entry %" PRIu32 " refers "
                        "to native frame %" PRIu32 " but there are %" PRIu32
                        " native frames", k, s->ns_frames[k], s->nnframes);
        }
    }
    if (s->ntraces > 0 && s->tr_nstack == NULL) {
        return fail(err, errlen, "tr_nstack is NULL but there are %" PRIu64
                    " traces", s->ntraces);
    }
    for (uint64_t i = 0; i < s->ntraces; i++) {
        if (s->tr_nstack[i] >= s->nnstacks) {
            return fail(err, errlen, "trace %" PRIu64 " refers to native "
                        "stack %" PRIu32 " but there are %" PRIu32
                        " native stacks", i, s->tr_nstack[i], s->nnstacks);
        }
    }
    return 0;
}

int ht_snap_validate(const ht_snap *s, char *err, size_t errlen)
{
    if (s == NULL) {
        return fail(err, errlen, "snapshot is NULL");
    }

    /* strings */
    uint64_t blob_len = 0;
    if (s->str_off == NULL) {
        if (s->nstrings != 0) {
            return fail(err, errlen, "str_off is NULL but there are %" PRIu32
                        " strings", s->nstrings);
        }
    } else {
        if (s->str_off[0] != 0) {
            return fail(err, errlen, "str_off[0] is %" PRIu64 ", not 0",
                        s->str_off[0]);
        }
        for (uint32_t i = 0; i < s->nstrings; i++) {
            if (s->str_off[i + 1] < s->str_off[i]) {
                return fail(err, errlen, "string %" PRIu32 " ends at offset %"
                            PRIu64 ", before its start %" PRIu64, i,
                            s->str_off[i + 1], s->str_off[i]);
            }
        }
        blob_len = s->str_off[s->nstrings];
    }
    if (blob_len > SIZE_MAX) {
        return fail(err, errlen, "string blob of %" PRIu64 " bytes is larger "
                    "than the address space", blob_len);
    }
    if (blob_len > 0 && s->str_blob == NULL) {
        return fail(err, errlen, "str_blob is NULL but the strings take %"
                    PRIu64 " bytes", blob_len);
    }
    for (uint32_t i = 0; i < s->nstrings; i++) {
        size_t start = (size_t)s->str_off[i];
        size_t len = (size_t)(s->str_off[i + 1] - s->str_off[i]);
        if (len == 0) {
            continue;       /* str_blob may be NULL then */
        }
        const unsigned char *p = (const unsigned char *)s->str_blob + start;
        size_t ok = utf8_valid_prefix(p, len);
        if (ok != len) {
            return fail(err, errlen, "string %" PRIu32 " is not valid UTF-8 "
                        "(bad byte 0x%02x at offset %zu of %zu)", i,
                        (unsigned)p[ok], ok, len);
        }
    }

    /* frames */
    if (s->nframes > 0 && (s->frame_file == NULL || s->frame_line == NULL)) {
        return fail(err, errlen, "frame arrays are NULL but there are %"
                    PRIu32 " frames", s->nframes);
    }
    for (uint32_t i = 0; i < s->nframes; i++) {
        if (s->frame_file[i] >= s->nstrings) {
            return fail(err, errlen, "frame %" PRIu32 " refers to string %"
                        PRIu32 " but there are %" PRIu32 " strings", i,
                        s->frame_file[i], s->nstrings);
        }
    }

    /* tracebacks */
    uint32_t nentries = 0;
    if (s->tb_off == NULL) {
        if (s->ntracebacks != 0) {
            return fail(err, errlen, "tb_off is NULL but there are %" PRIu32
                        " tracebacks", s->ntracebacks);
        }
    } else {
        if (s->tb_off[0] != 0) {
            return fail(err, errlen, "tb_off[0] is %" PRIu32 ", not 0",
                        s->tb_off[0]);
        }
        for (uint32_t i = 0; i < s->ntracebacks; i++) {
            if (s->tb_off[i + 1] < s->tb_off[i]) {
                return fail(err, errlen, "traceback %" PRIu32 " ends at entry %"
                            PRIu32 ", before its start %" PRIu32, i,
                            s->tb_off[i + 1], s->tb_off[i]);
            }
        }
        nentries = s->tb_off[s->ntracebacks];
    }
    if (s->ntracebacks > 0 && s->tb_total == NULL) {
        return fail(err, errlen, "tb_total is NULL but there are %" PRIu32
                    " tracebacks", s->ntracebacks);
    }
    if (nentries > 0 && s->tb_frames == NULL) {
        return fail(err, errlen, "tb_frames is NULL but the tracebacks hold %"
                    PRIu32 " frames", nentries);
    }
    for (uint32_t i = 0; i < s->ntracebacks; i++) {
        if (s->tb_total[i] < -1) {
            return fail(err, errlen, "traceback %" PRIu32 " has total_nframe %"
                        PRId32 " (must be >= 0, or -1 for None)", i,
                        s->tb_total[i]);
        }
        for (uint32_t k = s->tb_off[i]; k < s->tb_off[i + 1]; k++) {
            if (s->tb_frames[k] >= s->nframes) {
                return fail(err, errlen, "traceback %" PRIu32 " (entry %"
                            PRIu32 ") refers to frame %" PRIu32 " but there "
                            "are %" PRIu32 " frames", i, k - s->tb_off[i],
                            s->tb_frames[k], s->nframes);
            }
        }
    }

    /* traces */
    if (s->ntraces > SIZE_MAX / sizeof(uint64_t)) {
        return fail(err, errlen, "%" PRIu64 " traces do not fit in memory",
                    s->ntraces);
    }
    if (s->ntraces > 0 &&
        (s->tr_domain == NULL || s->tr_size == NULL || s->tr_tb == NULL)) {
        return fail(err, errlen, "trace arrays are NULL but there are %"
                    PRIu64 " traces", s->ntraces);
    }
    for (uint64_t i = 0; i < s->ntraces; i++) {
        if (s->tr_tb[i] >= s->ntracebacks) {
            return fail(err, errlen, "trace %" PRIu64 " refers to traceback %"
                        PRIu32 " but there are %" PRIu32 " tracebacks", i,
                        s->tr_tb[i], s->ntracebacks);
        }
    }
    return validate_native(s, err, errlen);
}

static uint64_t str_end(const ht_snap *s, uint32_t i)
{
    return s->str_off == NULL ? 0 : s->str_off[i];
}

static uint32_t tb_end(const ht_snap *s, uint32_t i)
{
    return s->tb_off == NULL ? 0 : s->tb_off[i];
}

/* memcmp that accepts NULL pointers when n == 0 (memcmp itself does not). */
static int same_bytes(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

int ht_snap_equal(const ht_snap *a, const ht_snap *b)
{
    if (a->traceback_limit != b->traceback_limit ||
        a->sampling_interval != b->sampling_interval ||
        a->nstrings != b->nstrings || a->nframes != b->nframes ||
        a->ntracebacks != b->ntracebacks || a->ntraces != b->ntraces) {
        return 0;
    }
    for (uint32_t i = 0; i <= a->nstrings; i++) {
        if (str_end(a, i) != str_end(b, i)) {
            return 0;
        }
    }
    if (!same_bytes(a->str_blob, b->str_blob, (size_t)str_end(a, a->nstrings))
        || !same_bytes(a->frame_file, b->frame_file,
                       a->nframes * sizeof(uint32_t))
        || !same_bytes(a->frame_line, b->frame_line,
                       a->nframes * sizeof(uint32_t))) {
        return 0;
    }
    for (uint32_t i = 0; i <= a->ntracebacks; i++) {
        if (tb_end(a, i) != tb_end(b, i)) {
            return 0;
        }
    }
    size_t nt = (size_t)a->ntraces;
    if (a->nnframes != b->nnframes || a->nnstacks != b->nnstacks) {
        return 0;
    }
    if (a->nnstacks > 0) {
        uint32_t ne = a->ns_off[a->nnstacks];
        if (!same_bytes(a->nf_func, b->nf_func, a->nnframes * sizeof(uint32_t))
            || !same_bytes(a->nf_lib, b->nf_lib, a->nnframes * sizeof(uint32_t))
            || !same_bytes(a->nf_off, b->nf_off, a->nnframes * sizeof(uint64_t))
            || !same_bytes(a->ns_off, b->ns_off,
                           (a->nnstacks + (size_t)1) * sizeof(uint32_t))
            || ne != b->ns_off[b->nnstacks]
            || !same_bytes(a->ns_frames, b->ns_frames, ne * sizeof(uint32_t))
            || !same_bytes(a->tr_nstack, b->tr_nstack, nt * sizeof(uint32_t))) {
            return 0;
        }
    }
    return same_bytes(a->tb_frames, b->tb_frames,
                      tb_end(a, a->ntracebacks) * sizeof(uint32_t))
        && same_bytes(a->tb_total, b->tb_total,
                      a->ntracebacks * sizeof(int32_t))
        && same_bytes(a->tr_domain, b->tr_domain, nt * sizeof(uint32_t))
        && same_bytes(a->tr_size, b->tr_size, nt * sizeof(uint64_t))
        && same_bytes(a->tr_tb, b->tr_tb, nt * sizeof(uint32_t));
}
