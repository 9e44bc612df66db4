/* fuzz_format.c: libFuzzer target for the snapshot file reader.
 *
 * Each input is decoded three ways: as it is (which mostly exercises the
 * magic, version, length and checksum checks), with both checksums
 * recomputed (so mutations reach the section parsers), and with the last
 * section's length also adjusted to whatever the input holds (so mutations
 * that add or remove bytes are not all stopped at the length check).
 *
 * Properties checked on every decode: the status is a known one; a failure
 * leaves a zeroed snapshot, NULL meta and a message; no allocation exceeds
 * what the input length justifies; a success validates, re-encodes, decodes
 * again to an equal snapshot and equal meta, and re-encoding that gives the
 * same bytes.  Any violation aborts, which libFuzzer reports as a crash.
 *
 * Build: fuzz/run.sh (clang -fsanitize=fuzzer,address,undefined).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "snapdata.h"

#define REQUIRE(cond) do {                                               \
        if (!(cond)) {                                                   \
            fprintf(stderr, "fuzz_format: %s:%d: %s\n", __FILE__,        \
                    __LINE__, #cond);                                    \
            abort();                                                     \
        }                                                                \
    } while (0)

static const ht_snap zero_snap;

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void fix_crc(uint8_t *buf, size_t len)
{
    put32(buf + HT_FORMAT_HEADER_CRC_OFFSET,
          ht_crc32c(0, buf, HT_FORMAT_HEADER_CRC_OFFSET));
    put32(buf + len - 4, ht_crc32c(0, buf + HT_FORMAT_HEADER_SIZE,
                                   len - HT_FORMAT_HEADER_SIZE - 4));
}

static void check(const uint8_t *buf, size_t len)
{
    ht_snap s, s2;
    uint8_t *meta, *meta2, *enc, *enc2;
    size_t meta_len, meta_len2, enc_len, enc_len2;
    char err[256] = "";

    ht_format_alloc_max = 0;
    ht_format_alloc_total = 0;
    ht_format_status st = ht_format_decode(buf, len, &s, &meta, &meta_len,
                                           err, sizeof(err));
    REQUIRE(st >= HT_FORMAT_OK && st <= HT_FORMAT_NO_MEMORY);
    REQUIRE(ht_format_alloc_max <= 8 * len + 16);
    REQUIRE(ht_format_alloc_total <= 16 * len + 64);
    if (st != HT_FORMAT_OK) {
        REQUIRE(st != HT_FORMAT_NO_MEMORY);
        REQUIRE(memcmp(&s, &zero_snap, sizeof(s)) == 0);
        REQUIRE(meta == NULL && meta_len == 0);
        REQUIRE(err[0] != 0);
        return;
    }
    REQUIRE(ht_snap_validate(&s, err, sizeof(err)) == 0);
    REQUIRE(meta != NULL && meta[meta_len] == 0);
    REQUIRE(ht_format_encode(&s, meta, meta_len, &enc, &enc_len) == 0);
    st = ht_format_decode(enc, enc_len, &s2, &meta2, &meta_len2, err,
                          sizeof(err));
    REQUIRE(st == HT_FORMAT_OK);
    REQUIRE(ht_snap_equal(&s, &s2));
    REQUIRE(meta_len2 == meta_len && memcmp(meta, meta2, meta_len) == 0);
    REQUIRE(ht_format_encode(&s2, meta2, meta_len2, &enc2, &enc_len2) == 0);
    REQUIRE(enc_len2 == enc_len && memcmp(enc, enc2, enc_len) == 0);
    free(enc);
    free(enc2);
    free(meta);
    free(meta2);
    ht_snap_free(&s);
    ht_snap_free(&s2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size);
    if (size < HT_FORMAT_HEADER_SIZE + HT_FORMAT_TRAILER_SIZE) {
        return 0;
    }
    uint8_t *copy = malloc(size);
    REQUIRE(copy != NULL);
    memcpy(copy, data, size);
    fix_crc(copy, size);
    check(copy, size);

    /* make the section lengths add up: the trace table takes the rest */
    uint64_t used = 0;
    int fits = 1;
    for (int k = 0; k < 4; k++) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++) {
            n |= (uint64_t)copy[40 + 8 * k + i] << (8 * i);
        }
        if (n > size || used + n > size) {
            fits = 0;
            break;
        }
        used += n;
    }
    uint64_t body = size - HT_FORMAT_HEADER_SIZE - HT_FORMAT_TRAILER_SIZE;
    if (fits && used <= body) {
        uint64_t rest = body - used;
        for (int i = 0; i < 8; i++) {
            copy[72 + i] = (uint8_t)(rest >> (8 * i));
        }
        fix_crc(copy, size);
        check(copy, size);
    }
    free(copy);
    return 0;
}
