/* nstack.h: the C call paths of native blocks
 * (heaptrace.start(native=True, native_frames=True)).
 *
 * A native hook captures its caller's return addresses (ht_nstack_capture)
 * before it takes the tracer's raw lock, because an unwinder may take the
 * dynamic loader's lock and a thread holding the raw lock must never wait
 * for it.  Under the raw lock the addresses are interned into a stack id,
 * and the pair (Python traceback id, stack id) into a "native trace id",
 * which is what the native table stores in place of a traceback id while
 * native frames are on: no trace grows.  Export (tracer.c) turns the id
 * back into the pair.  Symbolizing (dladdr) happens at snapshot time,
 * once per distinct address (snapbuild.c).
 *
 * Memory comes from libc (alloc.h), never from Python.  Ids: stack 0 is
 * the empty stack and pair 0 is (HT_TB_UNKNOWN, stack 0); both exist from
 * ht_nstack_setup on and stand in for anything that could not be stored.
 */
#ifndef HT_NSTACK_H
#define HT_NSTACK_H

#include <stddef.h>
#include <stdint.h>

/* Most return addresses kept per block (innermost first). */
#define HT_NSTACK_MAX 16

/* Prepare the unwinder (glibc's backtrace() loads libgcc_s on its first
 * call, which allocates and takes the loader's lock: it must never happen
 * inside a hook) and note heaptrace's own address range, whose frames are
 * left out of every stack.  GIL held, outside any hook.  0, or -1 when the
 * unwinder is not available (then native frames cannot be captured). */
int ht_nstack_prepare(void);

/* Capture the calling thread's return addresses, innermost first, without
 * heaptrace's own frames: at most HT_NSTACK_MAX into ips.  Returns how
 * many (0 when nothing could be had).  Any thread; never called with the
 * raw lock held; allocates nothing once prepared. */
int ht_nstack_capture(uintptr_t *ips);

/* Reset the tables to hold only stack 0 and pair 0.  Raw lock held.
 * 0, or -1 when out of memory (then the tables are empty and every
 * intern below returns 0). */
int ht_nstack_setup(void);

/* Forget every stack and pair and release their memory.  Raw lock held.
 * Never fails. */
void ht_nstack_clear(void);

/* Id of the native trace (tb, ips[0..n)).  Raw lock held.  Returns 0 when
 * the tables cannot grow (the block then has no Python traceback and no
 * native frames, but is still traced). */
uint32_t ht_nstack_intern(uint32_t tb, const uintptr_t *ips, int n);

/* The pair behind a native trace id: its traceback id and stack id.  An
 * unknown id gives (HT_TB_UNKNOWN, 0).  Raw lock held.  Never fails. */
void ht_nstack_pair(uint32_t id, uint32_t *tb, uint32_t *stack);

/* Number of stacks (every stack id is below it).  Raw lock held. */
uint32_t ht_nstack_count(void);

/* Copy stack id's addresses into ips (room for HT_NSTACK_MAX); returns
 * their number (0 for an unknown id).  Raw lock held.  Never fails. */
int ht_nstack_get(uint32_t id, uintptr_t *ips);

/* Bytes used by the tables.  Raw lock held. */
size_t ht_nstack_memory(void);

#endif /* HT_NSTACK_H */
