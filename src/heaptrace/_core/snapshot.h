/* snapshot.h: the frozen, Python-free form of a snapshot.
 *
 * A snapshot is a set of traces (domain, size, traceback) plus the interned
 * tables the tracebacks refer to.  Everything is plain C arrays of integer ids
 * so that the analysis (group, diff, filter) and the file format can work on
 * millions of traces without one Python object per trace, and so that the
 * file reader can be fuzzed without an interpreter.
 *
 * Invariants (checked by ht_snap_validate, relied on everywhere else):
 *   - str_off has nstrings + 1 entries, is non-decreasing, str_off[0] == 0 and
 *     str_off[nstrings] == the size of str_blob.  String i is the UTF-8 text
 *     str_blob[str_off[i] .. str_off[i+1]) (lone surrogates are encoded as in
 *     Python's "surrogatepass" error handler).
 *   - every frame_file[i] < nstrings.
 *   - tb_off has ntracebacks + 1 entries, non-decreasing, tb_off[0] == 0,
 *     tb_off[ntracebacks] == the number of entries in tb_frames; traceback i
 *     is the frame ids tb_frames[tb_off[i] .. tb_off[i+1]), most recent frame
 *     first, each < nframes.  A traceback may be empty only if it came from a
 *     user-built raw trace; the tracer always records at least one frame
 *     (("<unknown>", 0) when it cannot see any).
 *   - tb_total[i] is the total_nframe of traceback i, or -1 for None.
 *   - every tr_tb[i] < ntracebacks.
 *   - Native frames (start(native=True, native_frames=True)): present when
 *     nnstacks > 0, and then tr_nstack has ntraces entries, each <
 *     nnstacks.  Native frame i is (function nf_func[i] - 1, or None when
 *     nf_func[i] == 0; library nf_lib[i]; offset nf_off[i]), both string
 *     ids < nstrings.  ns_off has nnstacks + 1 entries, non-decreasing,
 *     ns_off[0] == 0, ns_off[nnstacks] == the entries of ns_frames; stack
 *     i is the native frame ids ns_frames[ns_off[i] .. ns_off[i+1]),
 *     innermost first, each < nnframes.  Without native frames all of
 *     these are 0 / NULL.
 *
 * Ownership: an ht_snap owns all of its arrays (allocated with malloc);
 * ht_snap_free releases them.  No field holds a Python reference.
 */
#ifndef HT_SNAPSHOT_H
#define HT_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ht_snap {
    int32_t traceback_limit;   /* Snapshot.traceback_limit */
    uint64_t sampling_interval; /* bytes; 0 when every block was traced,
                                 * else each trace stands for the blocks and
                                 * bytes sampling.h gives (estimates) */

    uint32_t nstrings;
    uint64_t *str_off;         /* nstrings + 1 byte offsets into str_blob */
    char *str_blob;

    uint32_t nframes;
    uint32_t *frame_file;      /* string id of the frame's file name */
    uint32_t *frame_line;      /* line number (0 when unknown) */

    uint32_t ntracebacks;
    uint32_t *tb_off;          /* ntracebacks + 1 offsets into tb_frames */
    uint32_t *tb_frames;       /* frame ids, most recent first */
    int32_t *tb_total;         /* total_nframe, -1 for None */

    uint64_t ntraces;
    uint32_t *tr_domain;
    uint64_t *tr_size;
    uint32_t *tr_tb;           /* traceback id */

    /* Native frames (all 0 / NULL when the snapshot has none). */
    uint32_t nnframes;
    uint32_t *nf_func;         /* string id + 1 of the function, 0 = None */
    uint32_t *nf_lib;          /* string id of the shared object's path */
    uint64_t *nf_off;          /* offset of the address in that object */
    uint32_t nnstacks;
    uint32_t *ns_off;          /* nnstacks + 1 offsets into ns_frames */
    uint32_t *ns_frames;       /* native frame ids, innermost first */
    uint32_t *tr_nstack;       /* native stack of each trace */
} ht_snap;

#endif /* HT_SNAPSHOT_H */
