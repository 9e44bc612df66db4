/* tracer.h: the tracer's state and its operations.
 *
 * Locking, in one place:
 *   - The GIL protects the trace table of blocks allocated through the MEM
 *     and OBJ domains (their hooks always run with the GIL held), the
 *     interned GIL tracebacks (intern.c), and start/stop/clear.
 *   - ht_raw_lock protects everything a thread without the GIL may touch:
 *     the table of blocks allocated through the RAW domain, the tables of
 *     user domains (track/untrack), and the detached tracebacks.  It exists
 *     because the RAW domain is called without the GIL (compression
 *     libraries, thread creation); the standard module instead takes the
 *     GIL inside PyMem_RawMalloc, which heaptrace never does.
 *   - Lock order: GIL, then ht_raw_lock.  A thread holding ht_raw_lock never
 *     waits for the GIL and never allocates through a Python allocator.
 *   - The counters of traced memory are atomics: each table's share is
 *     written by one side and read by both, and the peak is a max over both.
 */
#ifndef HT_TRACER_H
#define HT_TRACER_H

#include "compat.h"
#include <pthread.h>
#include <stdint.h>

extern pthread_mutex_t ht_raw_lock;

/* Every trace, as columns (malloc'ed arrays of n entries each, never NULL
 * after a successful export): what ht_tracer_export gives and the caller
 * frees. */
typedef struct {
    size_t n;
    uint32_t *domain;
    uint64_t *size;
    uint32_t *tb;
    /* Native frames on: the stack id of each trace (nstack.h; 0, the empty
     * stack, for traces of other domains).  Otherwise NULL. */
    uint32_t *nstack;
} ht_export;

/* Free the columns of an export and zero it.  Never fails. */
void ht_export_free(ht_export *e);

/* ---- used by the hooks -------------------------------------------------- */

/* Record a block allocated through MEM/OBJ by a thread holding the GIL, ts
 * being its thread state.  Returns 0, or -1 if the table cannot grow (the
 * caller then frees the block and fails the allocation, as the standard
 * module does). */
int ht_tracer_add_gil(PyThreadState *ts, void *ptr, size_t size);

/* Forget a MEM/OBJ block, if traced.  GIL held.  Never fails. */
void ht_tracer_remove_gil(void *ptr);

/* Record a block allocated through RAW (or through MEM/OBJ outside the main
 * interpreter); any thread, GIL or not.  Returns 0 or -1 as above. */
int ht_tracer_add_raw(void *ptr, size_t size, int foreign);

/* Forget a RAW block, if traced.  Any thread.  Never fails. */
void ht_tracer_remove_raw(void *ptr);

/* A block moved or changed size.  Never fails: if the new trace cannot be
 * stored, the block is left untraced (the old block is gone, so failing the
 * reallocation is no longer possible). */
void ht_tracer_realloc_gil(PyThreadState *ts, void *old, void *ptr, size_t size);

/* Take a RAW block's trace out before the block is reallocated (so that no
 * other thread can be handed the old address while its trace is still in
 * the table), and put it back if the reallocation fails.  Any thread.
 * ht_tracer_take_raw returns 1 if the block was traced.  Never fail; a trace
 * that cannot be put back leaves the block untraced. */
int ht_tracer_take_raw(void *ptr, size_t *size, uint32_t *tb);
void ht_tracer_put_back_raw(void *ptr, size_t size, uint32_t tb);

/* ---- used by the bindings (GIL held unless said otherwise) --------------- */

/* Start tracing with nframe frames per traceback.  0, or -1 with an
 * exception set (MemoryError); nothing changes on failure.  Already tracing:
 * nothing changes, as in the standard module. */
int ht_tracer_start(int nframe);

/* The sampling the next ht_tracer_start uses: interval in bytes (0: exact,
 * at most HT_SAMPLE_MAX_INTERVAL), and a seed for the hooks' generators when
 * seeded is set.  Returns 0, or -1 (nothing changes) while tracing. */
int ht_tracer_set_sampling(uint64_t interval, int seeded, uint64_t seed);

/* The sampling interval of the traces (0: exact).  GIL held. */
uint64_t ht_tracer_sampling_interval(void);

/* Stop tracing and forget every trace.  Never fails. */
void ht_tracer_stop(void);

/* If tracing but heaptrace's hooks are no longer reached by every domain's
 * allocator (another tool, such as the standard tracemalloc, put back
 * allocators it had saved before heaptrace started), stop tracing and warn
 * (RuntimeWarning).  Called by every binding that reads or changes the
 * tracer's state.  0, or -1 with an exception set when the warning is
 * turned into an error (tracing is stopped either way). */
int ht_tracer_check(void);

int ht_tracer_is_tracing(void);
int ht_tracer_nframe(void);

/* Forget every trace and reset the counters.  Never fails. */
void ht_tracer_clear(void);

void ht_tracer_traced_memory(size_t *current, size_t *peak);
void ht_tracer_reset_peak(void);

/* Bytes of memory the tracer itself uses. */
size_t ht_tracer_self_memory(void);

/* Changes every time the traces are cleared, so that code that drops the GIL
 * (by allocating, which may run a finalizer) can tell its ids went stale. */
uint64_t ht_tracer_generation(void);

/* Traceback id of a traced block.  1 if found, 0 if not. */
int ht_tracer_lookup(unsigned int domain, uintptr_t ptr, uint32_t *tb);

/* Size and traceback id of a block in the GIL table (MEM/OBJ blocks of the
 * main interpreter).  GIL held.  1 if found, 0 if not (or not tracing);
 * never fails. */
int ht_tracer_get_gil(uintptr_t ptr, size_t *size, uint32_t *tb);
/* Give a traced MEM/OBJ block the traceback of the calling thread, ts being
 * its thread state (an object handed out again from a free list is
 * credited to the code that reused it).  GIL held.  Untraced blocks are left
 * alone.  Never fails: if the traceback cannot be interned it becomes
 * "<unknown>", as for any allocation. */
void ht_tracer_retrace_gil(PyThreadState *ts, uintptr_t ptr);
/* All traces, as columns.  Returns 0, or -1 with MemoryError set (then *out
 * is empty). */
int ht_tracer_export(ht_export *out);

/* Track or untrack a block of a domain, replacing any trace of that address
 * in the domain.  Any thread, GIL or not; for domain 0 (the domain of
 * Python's own allocators) they take the GIL, as the standard module does.
 * Returns 0, -1 when out of memory, -2 when not tracing (the values of
 * PyTraceMalloc_Track). */
int ht_tracer_track(unsigned int domain, uintptr_t ptr, size_t size);
int ht_tracer_untrack(unsigned int domain, uintptr_t ptr);

/* ---- native blocks (native.c) --------------------------------------------- */

/* The domain of blocks that C code takes from the malloc family or from
 * anonymous mmap (heaptrace.NATIVE_DOMAIN). */
#define HT_NATIVE_DOMAIN 0x4e415456u

/* Record a native block; ips[0..nips) is its C call path, innermost first
 * (captured before the call: ht_nstack_capture; nips < 0 or ips unused
 * when native frames are off).  Any thread, GIL or not; never call with
 * the raw lock held.  Returns 0, or -1 when not recorded: native tracing
 * is off, or the table could not grow (then counted in
 * ht_tracer_native_lost; the caller keeps the block, untraced). */
int ht_tracer_add_native(void *ptr, size_t size, const uintptr_t *ips, int nips);

/* Take a native block's trace out (before the block is freed or moved);
 * 1 if it was traced.  Any thread.  Never fails. */
int ht_tracer_take_native(void *ptr, size_t *size, uint32_t *tb);

/* Forget a native block's trace, if any (the block is being freed).  Any
 * thread.  Never fails. */
void ht_tracer_remove_native(void *ptr);

/* Put a trace back (a reallocation failed, or the tail of a partly
 * unmapped region).  Any thread.  Never fails: a trace that cannot be
 * stored is counted as lost. */
void ht_tracer_put_back_native(void *ptr, size_t size, uint32_t tb);

/* Switch native recording on (only while tracing) or off.  With it on, a
 * block of the native table also leaves it when it is freed through
 * Python's RAW allocator or reported with track().  GIL held.  Never
 * fails. */
void ht_tracer_native(int on);
int ht_tracer_native_on(void);

/* Switch native frames on or off (before native recording starts).  GIL
 * held.  0; -1 when out of memory; -2 when the native table is not empty
 * (blocks recorded in the other mode; nothing changes on failure). */
int ht_tracer_native_frames(int on);
/* Whether hooks should capture call paths.  Any thread. */
int ht_tracer_native_frames_on(void);

/* Native blocks not recorded since tracing started or was cleared. */
size_t ht_tracer_native_lost(void);

/* Register the fork handlers.  0, or -1 with an exception set. */
int ht_tracer_init_once(void);

#endif /* HT_TRACER_H */
