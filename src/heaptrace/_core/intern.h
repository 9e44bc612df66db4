/* intern.h: interned tracebacks, captured cheaply and resolved lazily.
 *
 * Two id spaces share one 32-bit traceback id:
 *   - GIL tracebacks (top bit clear): sequences of raw frames (code object,
 *     instruction offset) captured by threads that hold the GIL.  Resolving
 *     a raw frame to (filename, lineno) is deferred until someone asks, and
 *     then done once per distinct frame.  Protected by the GIL.
 *   - Detached tracebacks (top bit set, HT_TB_DETACHED): captured by threads
 *     that do not hold the GIL (RAW allocations made with the GIL released).
 *     Such a thread may not touch reference counts, so it resolves its
 *     frames on the spot and copies the file names into memory of its own.
 *     Protected by the tracer's raw lock.
 * Id 0 is the traceback ("<unknown>", 0) used when no Python frame exists.
 */
#ifndef HT_INTERN_H
#define HT_INTERN_H

#include "compat.h"
#include <stdint.h>

#define HT_TB_DETACHED 0x80000000u
#define HT_TB_UNKNOWN 0u
#define HT_MAX_NFRAME 65535

/* Create the constants the tables need.  GIL held, tracer not yet started.
 * 0, or -1 with an exception set. */
int ht_intern_init_once(void);

/* Set up the tables and the capture buffers for at most max_nframe frames.
 * Returns 0, or -1 on out of memory (nothing changed).  GIL and raw lock
 * held. */
int ht_intern_setup(int max_nframe);

/* Capture the calling thread's stack and intern it; the thread holds the
 * GIL and ts is its thread state.  Returns the id, or HT_TB_UNKNOWN when the
 * table cannot grow (the block is then still traced, under "<unknown>"). */
uint32_t ht_intern_capture_gil(PyThreadState *ts);

/* The same for a thread that does not hold the GIL: ts may be NULL (a thread
 * Python does not know).  Raw lock held.  Never touches a reference count. */
uint32_t ht_intern_capture_detached(PyThreadState *ts);

/* Frames of a traceback as a tuple of (filename, lineno) tuples, most recent
 * first: a new reference, or NULL with an exception set (MemoryError, or
 * RuntimeError if the id is unknown, e.g. after clear_traces).  GIL held;
 * takes the raw lock briefly for detached ids.  Results are cached. */
PyObject *ht_intern_frames(uint32_t tb);

/* The frames of a GIL traceback as locations, most recent first: keys[i]
 * names frame i's location (code object and instruction offset): distinct
 * locations have distinct keys, dense from 0 in order of first resolution,
 * so a caller can cache per location in an array.  UINT32_MAX is a frame
 * without code ("<unknown>").  Keys stay valid until the tables are
 * cleared.  Sets *n to the number of frames.  Returns 0; 1 when that is
 * more than cap (nothing written: retry with more room); -1 with an
 * exception set (MemoryError, or RuntimeError for an id that is detached or
 * unknown).  GIL held. */
int ht_intern_locations(uint32_t tb, uint32_t *keys, size_t cap, size_t *n);

/* The (filename, lineno) tuple of a location key from ht_intern_locations,
 * borrowed (valid until the tables are cleared); ("<unknown>", 0) for
 * UINT32_MAX.  GIL held.  Never fails. */
PyObject *ht_intern_location_frame(uint32_t key);

/* How many GIL and detached tracebacks exist: every id in use is below
 * these.  GIL held; takes the raw lock briefly.  Never fails. */
void ht_intern_counts(uint32_t *ngil, uint32_t *ndetached);

/* total_nframe of a traceback, or 0 for an unknown id.  GIL held. */
int ht_intern_total(uint32_t tb);

/* Python references dropped by ht_intern_clear, to be released later. */
typedef struct {
    PyObject **items;   /* malloc'ed */
    size_t n;
} ht_garbage;

/* Forget every traceback.  GIL held, raw lock held.  The Python references
 * the tables held are handed to *garbage so that the caller releases them
 * (ht_garbage_release) after dropping the raw lock, because deallocating a
 * code object calls the allocators.  Never fails: if no memory can be had
 * for the list, the references are leaked rather than released under the
 * lock. */
void ht_intern_clear(ht_garbage *garbage);

/* Release and forget the references.  GIL held, raw lock not held. */
void ht_garbage_release(ht_garbage *garbage);

/* Bytes used by the interning tables.  GIL and raw lock held. */
size_t ht_intern_memory(void);

#endif /* HT_INTERN_H */
