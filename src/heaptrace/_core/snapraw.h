/* snapraw.h: an ht_snap built from raw trace tuples.
 *
 * Raw traces are what tracemalloc's Snapshot holds: tuples (domain, size,
 * frames, total_nframe), frames a tuple of (filename, lineno) tuples, most
 * recent first.  The builder interns file names, frames and tracebacks into
 * the C tables of snapshot.h, and tells the caller which of its own str and
 * frames objects each id came from, so that they can be handed back later
 * instead of copies.
 */
#ifndef HT_SNAPRAW_H
#define HT_SNAPRAW_H

#include "compat.h"
#include "snapshot.h"

/* The caller's objects behind the ids of a snapshot built from raw tuples:
 * strings maps each file name (a str) to its string id, tracebacks each key
 * (frames, total_nframe) to its traceback id.  Both are dicts owned by the
 * struct (NULL when empty). */
typedef struct {
    PyObject *strings;
    PyObject *tracebacks;
} ht_raw_objects;

/* Build *out from the sequence traces of raw trace tuples; with legacy,
 * 3-tuples (no total_nframe, taken as None) are accepted too.  GIL held.
 * Returns 0 with *out a valid snapshot (snapshot.h) and *objs filled in.
 * On failure returns -1 with TypeError or ValueError naming the first
 * malformed trace (MemoryError when memory runs out), *out and *objs empty
 * and owning nothing. */
int ht_snap_from_raw(PyObject *traces, int32_t traceback_limit, int legacy,
                     ht_snap *out, ht_raw_objects *objs);

/* Release the dicts of *objs and set its fields to NULL.  Never fails. */
void ht_raw_objects_clear(ht_raw_objects *objs);

/* Check that v is an int (exactly) within 0..max and store it in *out;
 * what names the value in the message.  Returns 0, or -1 with TypeError
 * (not an int) or ValueError (out of range) set and *out unchanged. */
int ht_check_uint(PyObject *v, unsigned long long max, const char *what,
                  unsigned long long *out);

#endif /* HT_SNAPRAW_H */
