/* analysis.h: statistics, comparison and filtering of frozen snapshots.
 *
 * These are the algorithms behind Snapshot.statistics(), compare_to() and
 * filter_traces(), working on ht_snap (snapshot.h) without any Python
 * object, so that they cost time in proportion to the number of traces plus
 * the size of the interned tables, never traces times tracebacks.
 *
 * The results follow the standard tracemalloc module exactly: groups are
 * made per whole traceback, per most recent frame ('lineno') or per file of
 * the most recent frame ('filename', line 0); cumulative grouping counts a
 * block once per occurrence of a frame in its traceback (recursion counts
 * twice).  Values compare as Python would compare the (filename, lineno)
 * tuples of Traceback._frames, oldest frame first.
 *
 * Every function returns 0 on success or a negative HT_AN_* code; on failure
 * nothing is left allocated in the outputs.
 */
#ifndef HT_ANALYSIS_H
#define HT_ANALYSIS_H

#include <stddef.h>
#include <stdint.h>

#include "snapshot.h"

/* Failure codes. */
#define HT_AN_NOMEM (-1)     /* an allocation failed */
#define HT_AN_EMPTY (-2)     /* an empty traceback reached an operation that
                              * reads its most recent frame (the standard
                              * module raises IndexError there) */
#define HT_AN_OVERFLOW (-3)  /* a sum does not fit in an int64 */
#define HT_AN_INVALID (-4)   /* bad argument (unknown key type, too many
                              * strings) */

/* Key types of statistics(). */
#define HT_KEY_TRACEBACK 0
#define HT_KEY_LINENO 1
#define HT_KEY_FILENAME 2

/* rep value of the group of an empty traceback (key type 'lineno'). */
#define HT_REP_EMPTY UINT32_MAX

/* One group of a grouping: totals for each of up to two snapshots, and the
 * representative that names the group's traceback in snapshot `snap`:
 *   HT_KEY_TRACEBACK: a traceback id; its frames are the group's frames;
 *   HT_KEY_LINENO: a frame id (the group is that single frame), or
 *                  HT_REP_EMPTY for the empty traceback;
 *   HT_KEY_FILENAME: a string id (the group is the frame (file, 0)). */
typedef struct ht_group {
    uint64_t size[2];
    uint64_t count[2];
    uint32_t snap;
    uint32_t rep;
} ht_group;

/* A grouping's result: the groups in the order the operation sorts them. */
typedef struct ht_groups {
    ht_group *groups;
    size_t ngroups;
} ht_groups;

/* Release the groups (safe on a zeroed struct); never fails. */
void ht_groups_free(ht_groups *g);

/* Group the traces of *s and sort the groups as Snapshot.statistics() does:
 * by (size, count, traceback) descending.  Totals are in size[0]/count[0];
 * every group has snap == 0.  *s must satisfy snapshot.h's invariants.
 * Returns 0, or HT_AN_NOMEM / HT_AN_EMPTY (key 'filename', not cumulative,
 * with an empty traceback) / HT_AN_OVERFLOW / HT_AN_INVALID, with *out
 * zeroed. */
int ht_statistics(const ht_snap *s, int key_type, int cumulative,
                  ht_groups *out);

/* Group *new_s and *old_s alike and pair the groups as
 * Snapshot.compare_to() does, sorted by (abs(size_diff), size,
 * abs(count_diff), count, traceback) descending.  size[0]/count[0] are the
 * new totals, size[1]/count[1] the old ones (0 for a group only one side
 * has); snap says which snapshot names the group (0 = new, 1 = old).
 * Same failures as ht_statistics, with *out zeroed. */
int ht_compare(const ht_snap *new_s, const ht_snap *old_s, int key_type,
               int cumulative, ht_groups *out);

/* One Filter or DomainFilter, as prepared by the caller.
 *   is_domain: 1 for DomainFilter (only domains/ndomains and inclusive
 *              matter), 0 for Filter.
 *   inclusive: the filter's truth value of `inclusive`.
 *   str_match: for a Filter, one byte per string id of the snapshot,
 *              non-zero when the filename pattern matches that string (the
 *              caller applies fnmatch to the normalised name).
 *   has_lineno/lineno: the line the frame must also have; a line that no
 *              frame can have is expressed with an all-zero str_match.
 *   all_frames: any frame may match instead of the most recent one.
 *   has_domain: the Filter's domain is not None.
 *   domains/ndomains: the domain values that compare equal to the filter's
 *              domain (usually zero or one value). */
typedef struct ht_filter {
    int is_domain;
    int inclusive;
    const unsigned char *str_match;
    int has_lineno;
    uint32_t lineno;
    int all_frames;
    int has_domain;
    const uint32_t *domains;
    size_t ndomains;
} ht_filter;

/* Build in *out a snapshot with the same tables as *s and only the traces
 * that pass the filters, in their order: a trace passes when it matches at
 * least one inclusive filter (if there is any) and every exclusive one,
 * with the matching rules of tracemalloc's Filter._match and
 * DomainFilter._match.  nfilters == 0 copies every trace.
 * Returns 0, HT_AN_NOMEM, or HT_AN_EMPTY when a Filter without all_frames
 * would have to look at an empty traceback; on failure *out is zeroed. */
int ht_filter_snap(const ht_snap *s, const ht_filter *filters,
                   size_t nfilters, ht_snap *out);

/* Deep-copy the string, frame and traceback tables and traceback_limit of
 * *s into *out, with no trace.  Returns 0 or HT_AN_NOMEM (*out zeroed). */
int ht_snap_copy_tables(const ht_snap *s, ht_snap *out);

/* A hash map from uint64 keys to uint32 values, open addressing. */
typedef struct ht_u64map {
    uint64_t *keys;
    uint32_t *vals;      /* UINT32_MAX marks a free slot */
    size_t cap;          /* power of two, or 0 */
    size_t len;
} ht_u64map;

/* Look key up; return 1 and set *val when present, else 0.  Never fails. */
int ht_u64map_get(const ht_u64map *m, uint64_t key, uint32_t *val);
/* Insert or replace; val must not be UINT32_MAX.  Returns 0 or HT_AN_NOMEM
 * (the map is then unchanged). */
int ht_u64map_put(ht_u64map *m, uint64_t key, uint32_t val);
/* Release the map (safe on a zeroed one); never fails. */
void ht_u64map_free(ht_u64map *m);

#endif /* HT_ANALYSIS_H */
