/* gen_corpus.c: writes the fuzzer's seed corpus, a handful of small valid
 * snapshot files chosen so that every column coding (raw, delta, runs) and
 * the traceback rank map appear at least once.
 *
 * Usage: gen_corpus DIR   (fuzz/run.sh runs it; the output is committed in
 * fuzz/corpus/).  Exits non-zero if a file cannot be built or written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "snapdata.h"

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n == 0 ? 1 : n, size);
    if (p == NULL) {
        exit(1);
    }
    return p;
}

/* nstr strings "f<i>.py", one frame per string, tracebacks of `depth`
 * frames, traces spread over the tracebacks by `pick`. */
static void build(ht_snap *s, uint32_t nstr, uint32_t ntb, uint32_t depth,
                  uint64_t ntr, int pick)
{
    memset(s, 0, sizeof(*s));
    s->traceback_limit = (int32_t)depth;
    s->nstrings = nstr;
    s->str_off = xcalloc(nstr + 1, sizeof(uint64_t));
    s->str_blob = xcalloc(nstr, 16);
    for (uint32_t i = 0; i < nstr; i++) {
        int n = sprintf(s->str_blob + s->str_off[i], "f%u.py", i);
        s->str_off[i + 1] = s->str_off[i] + (uint64_t)n;
    }
    s->nframes = nstr;
    s->frame_file = xcalloc(nstr, sizeof(uint32_t));
    s->frame_line = xcalloc(nstr, sizeof(uint32_t));
    for (uint32_t i = 0; i < nstr; i++) {
        s->frame_file[i] = i;
        s->frame_line[i] = 10 * i + 1;
    }
    s->ntracebacks = ntb;
    s->tb_off = xcalloc(ntb + 1, sizeof(uint32_t));
    s->tb_frames = xcalloc((size_t)ntb * depth, sizeof(uint32_t));
    s->tb_total = xcalloc(ntb, sizeof(int32_t));
    for (uint32_t i = 0; i < ntb; i++) {
        s->tb_off[i + 1] = s->tb_off[i] + depth;
        for (uint32_t k = 0; k < depth; k++) {
            s->tb_frames[i * depth + k] = (i + k) % nstr;
        }
        s->tb_total[i] = i % 5 == 4 ? -1 : (int32_t)(depth + i % 3);
    }
    s->ntraces = ntr;
    s->tr_domain = xcalloc(ntr, sizeof(uint32_t));
    s->tr_size = xcalloc(ntr, sizeof(uint64_t));
    s->tr_tb = xcalloc(ntr, sizeof(uint32_t));
    for (uint64_t i = 0; i < ntr; i++) {
        s->tr_domain[i] = i % 17 == 16 ? 0xFFFFFFFFu : 0;
        s->tr_size[i] = pick == 0 ? 8 * (i % 50) : pick == 1 ? 64 * i
                        : i % 100;
        /* pick 2: two hot tracebacks with large ids interleaved with all the
         * others, so that ranking them pays */
        s->tr_tb[i] = (uint32_t)(pick == 0 ? i % ntb
                                 : pick == 1 ? i * ntb / ntr
                                 : i % 4 == 0 ? i % ntb
                                 : i % 2 ? ntb - 1 : 3 * ntb / 4 + i % 8);
    }
}

static void write(const char *dir, const char *name, const ht_snap *s,
                  const char *meta)
{
    uint8_t *buf;
    size_t len;
    char path[1024];
    if (ht_format_encode(s, (const uint8_t *)meta, strlen(meta), &buf, &len)
        != 0) {
        exit(1);
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: cannot write %s\n", path);
        exit(1);
    }
    printf("%s: %zu bytes\n", path, len);
    free(buf);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "corpus";
    ht_snap s;
    memset(&s, 0, sizeof(s));
    write(dir, "empty.htsnap", &s, "");
    build(&s, 1, 1, 1, 1, 0);
    write(dir, "one_trace.htsnap", &s, "{}");
    ht_snap_free(&s);
    build(&s, 6, 9, 3, 40, 0);
    write(dir, "raw_columns.htsnap", &s, "{\"filters\": []}");
    ht_snap_free(&s);
    build(&s, 4, 5, 2, 60, 1);
    write(dir, "sorted_runs_delta.htsnap", &s, "");
    ht_snap_free(&s);
    build(&s, 3, 200, 1, 1000, 2);
    write(dir, "rank_map.htsnap", &s, "");
    ht_snap_free(&s);
    /* native frames (version 2): stacks of 0, 2 and 3 frames */
    build(&s, 4, 5, 2, 30, 0);
    {
        static const uint32_t func[] = {1, 0, 2};
        static const uint32_t lib[] = {1, 1, 3};
        static const uint64_t off[] = {0x1140, 0x6f79, 0x2508e3};
        static const uint32_t stoff[] = {0, 0, 2, 5};
        static const uint32_t stfr[] = {0, 1, 2, 1, 0};
        s.nnframes = 3;
        s.nf_func = xcalloc(3, sizeof(uint32_t));
        s.nf_lib = xcalloc(3, sizeof(uint32_t));
        s.nf_off = xcalloc(3, sizeof(uint64_t));
        memcpy(s.nf_func, func, sizeof(func));
        memcpy(s.nf_lib, lib, sizeof(lib));
        memcpy(s.nf_off, off, sizeof(off));
        s.nnstacks = 3;
        s.ns_off = xcalloc(4, sizeof(uint32_t));
        s.ns_frames = xcalloc(5, sizeof(uint32_t));
        memcpy(s.ns_off, stoff, sizeof(stoff));
        memcpy(s.ns_frames, stfr, sizeof(stfr));
        s.tr_nstack = xcalloc(30, sizeof(uint32_t));
        for (uint32_t i = 0; i < 30; i++) {
            s.tr_nstack[i] = i % 3;
        }
    }
    write(dir, "native_frames.htsnap", &s, "");
    ht_snap_free(&s);
    return 0;
}
