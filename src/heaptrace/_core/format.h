/* format.h: heaptrace's binary snapshot file format (docs/format.md).
 *
 * A file is a fixed 84-byte header (magic, version, counts, section
 * lengths, header CRC-32C), five sections (meta, strings, frames,
 * tracebacks, traces) and a trailing CRC-32C of the sections.  Numbers in
 * the sections are LEB128 varints stored column by column; each column says
 * how it is coded (plain, delta, or runs), and the writer picks the
 * smallest.  The reader trusts nothing: it checks every count against the
 * bytes that could hold it before allocating, every id against its table,
 * and returns a precise error instead of ever reading out of bounds.
 *
 * Plain C11, no Python: it is fuzzed standalone (fuzz/fuzz_format.c).
 */
#ifndef HT_FORMAT_H
#define HT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

/* The 8 magic bytes that open every file: "\x89HTSNAP\n". */
#define HT_FORMAT_MAGIC "\x89HTSNAP\n"
#define HT_FORMAT_MAGIC_LEN 8
/* The format versions this code reads.  Version 1 is written for an exact
 * snapshot without native frames.  Version 2 opens the trace section with
 * the sampling interval as a varint (0: exact), and may carry the
 * native-frame section after the trace table (flags bit 0: an 8-byte
 * length, its CRC, then the section). */
#define HT_FORMAT_VERSION 2
#define HT_FORMAT_VERSION_EXACT 1
/* The largest sampling interval a file may record (as in sampling.h). */
#define HT_FORMAT_MAX_INTERVAL ((uint64_t)1 << 40)
/* Version 2, flags bit 0: the native-frame section is present. */
#define HT_FORMAT_FLAG_NATIVE 1u
/* Size of the fixed header, header CRC included. */
#define HT_FORMAT_HEADER_SIZE 84
/* Offset of the header CRC-32C (which covers bytes 0..HEADER_CRC_OFFSET). */
#define HT_FORMAT_HEADER_CRC_OFFSET 80
/* Size of the trailing CRC-32C (which covers the sections). */
#define HT_FORMAT_TRAILER_SIZE 4

typedef enum ht_format_status {
    HT_FORMAT_OK = 0,
    HT_FORMAT_NOT_A_SNAPSHOT,       /* bad magic bytes */
    HT_FORMAT_UNSUPPORTED_VERSION,  /* unknown version or flags */
    HT_FORMAT_TRUNCATED,            /* file shorter than its header says */
    HT_FORMAT_CORRUPT,              /* checksum, structure or id error */
    HT_FORMAT_TOO_LARGE,            /* a count the bytes cannot hold */
    HT_FORMAT_NO_MEMORY             /* malloc failed */
} ht_format_status;

/* Serialize *s with the opaque bytes meta[0..meta_len) (meta may be NULL
 * when meta_len is 0).
 *
 * *s must satisfy the invariants of snapshot.h (check with ht_snap_validate
 * when unsure); the encoder reads the arrays the counts describe and nothing
 * else.  It does not modify *s.
 *
 * Returns 0 and stores a malloc'd buffer in *out and its length in *out_len
 * (the caller frees it with free()).  Returns -1 when memory runs out (or
 * the file would not fit in size_t); then nothing is allocated and *out and
 * *out_len are left unchanged. */
int ht_format_encode(const ht_snap *s, const uint8_t *meta, size_t meta_len,
                     uint8_t **out, size_t *out_len);

/* Parse buf[0..len) into *out.  Never reads outside buf, never allocates
 * more than a small constant times len, runs in time linear in len.
 *
 * *out is overwritten without being freed first.  On HT_FORMAT_OK, *out
 * satisfies every invariant of snapshot.h (ht_snap_validate passes) and owns
 * its arrays (release with ht_snap_free); if meta is non-NULL, *meta gets a
 * malloc'd copy of the meta bytes followed by one extra NUL byte (never
 * NULL on success, free it with free()) and *meta_len their count (NUL not
 * included); meta_len may be NULL.
 *
 * On any other status nothing is left allocated, *out is zeroed, *meta is
 * set to NULL and *meta_len to 0 (when given), and, when err is non-NULL and
 * errlen > 0, err holds a NUL-terminated human-readable message such as
 * "truncated file: traceback table needs 1200 bytes, 17 remain" (cut to
 * errlen bytes).  On success err is left untouched. */
ht_format_status ht_format_decode(const uint8_t *buf, size_t len, ht_snap *out,
                                  uint8_t **meta, size_t *meta_len,
                                  char *err, size_t errlen);

/* Short stable name of a status ("OK", "NOT_A_SNAPSHOT", ...); "UNKNOWN"
 * for a value outside the enum.  Never fails, never returns NULL. */
const char *ht_format_status_name(int status);

/* Extend a CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) over
 * p[0..n).  Start with crc = 0; ht_crc32c(0, "123456789", 9) == 0xE3069283.
 * p may be NULL when n is 0.  Never fails. */
uint32_t ht_crc32c(uint32_t crc, const void *p, size_t n);
/* The same by table lookup, one byte at a time: what ht_crc32c does on a
 * CPU without the CRC-32C instruction (SSE4.2).  Exposed for the tests.
 * Never fails. */
uint32_t ht_crc32c_portable(uint32_t crc, const void *p, size_t n);

#ifdef HT_FORMAT_ALLOC_HOOK
/* Test builds only (compile format.c with -DHT_FORMAT_ALLOC_HOOK).
 * ht_format_alloc_fail_after: number of further allocations to let succeed
 * before every following one fails (-1, the default, never fails).
 * ht_format_alloc_max: largest single request seen;
 * ht_format_alloc_total: sum of the requests granted (tests reset both). */
extern long ht_format_alloc_fail_after;
extern size_t ht_format_alloc_max;
extern size_t ht_format_alloc_total;
#endif

#endif /* HT_FORMAT_H */
