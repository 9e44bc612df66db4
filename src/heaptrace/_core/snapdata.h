/* snapdata.h: lifetime and integrity helpers for ht_snap (see snapshot.h).
 *
 * ht_snap is a bag of malloc'd arrays whose meaning rests on a handful of
 * invariants (offset tables that start at 0 and never go backwards, ids that
 * stay inside the table they index, UTF-8 strings).  Code that builds a
 * snapshot from untrusted bytes, or that hands one to code relying on those
 * invariants, checks it once with ht_snap_validate; code that owns one frees
 * it with ht_snap_free whether it was fully built or not.
 *
 * Plain C11, no Python: this file is linked into the extension, the C tests
 * and the fuzzer alike.
 */
#ifndef HT_SNAPDATA_H
#define HT_SNAPDATA_H

#include <stddef.h>

#include "snapshot.h"

/* Free every array owned by *s and zero the whole struct.
 *
 * Safe on a NULL pointer, on a zeroed struct, and on a partially built one
 * (any array may be NULL).  Never fails.  After the call *s is a valid empty
 * snapshot (all counts 0, all pointers NULL). */
void ht_snap_free(ht_snap *s);

/* Check every invariant listed in snapshot.h, in time linear in the size of
 * the snapshot, without reading outside the arrays the counts describe.
 *
 * Beyond snapshot.h's list it also requires: every string is valid UTF-8
 * (lone surrogates allowed, as produced by Python's "surrogatepass"),
 * tb_total[i] >= -1, and a non-NULL array wherever its count says it has
 * entries.  A table with zero entries may have NULL offsets (a zeroed struct
 * is a valid empty snapshot).
 *
 * Returns 0 when *s is valid.  Returns -1 otherwise and, when err is
 * non-NULL and errlen > 0, writes a NUL-terminated message naming the first
 * problem found (for example "frame 12 refers to string 99 but there are 40
 * strings"), truncated to errlen bytes.  Never modifies *s. */
int ht_snap_validate(const ht_snap *s, char *err, size_t errlen);

/* Compare two snapshots field by field (counts, every table entry, the
 * bytes of every string, traceback_limit).  A NULL offset table of a table
 * with zero entries equals a table holding the single offset 0.
 *
 * Both snapshots must satisfy the invariants (ht_snap_validate); otherwise
 * the result is unspecified.  Returns 1 if equal, 0 if not.  Never fails. */
int ht_snap_equal(const ht_snap *a, const ht_snap *b);

#endif /* HT_SNAPDATA_H */
