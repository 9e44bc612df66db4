/* hooks.h: the PEP 445 allocator hooks.  See hooks.c for how they live
 * beside other tools that install allocator hooks (the standard
 * tracemalloc). */
#ifndef HT_HOOKS_H
#define HT_HOOKS_H

/* The bits of ht_hooks_reached(): one per domain. */
#define HT_HOOKS_RAW 1u
#define HT_HOOKS_MEM 2u
#define HT_HOOKS_OBJ 4u
#define HT_HOOKS_ALL 7u

/* Put hooks on the RAW, MEM and OBJ domains whose current allocators do not
 * reach heaptrace's hooks already, chained to those allocators.  The hooks
 * record only while ht_hooks_record(1) is in effect.  GIL held.  Never
 * fails. */
void ht_hooks_install(void);

/* Take heaptrace's hooks out of the domains where they are on top of the
 * chain, putting back the allocators they wrap; where another tool chained
 * on top of them they stay in place, passing calls through.  GIL held.
 * Never fails. */
void ht_hooks_uninstall(void);

/* Make the hooks record (1) or only pass calls through (0).  GIL held.
 * Never fails. */
void ht_hooks_record(int on);

/* Which domains' current allocators reach heaptrace's hooks (HT_HOOKS_*
 * bits), found by calling each once (a 1-byte allocation and its free) with
 * a per-thread probing flag that the hooks note.  GIL held.  Never fails:
 * an allocation that fails probes nothing, and its domain reads as not
 * reached. */
unsigned ht_hooks_reached(void);

#include <stddef.h>
#include <stdint.h>

/* Sample with the given interval in bytes (0: record every block), seeding
 * each thread's generator from seed when seeded is set (deterministic
 * streams, for tests), from the clock and the thread otherwise.  Every
 * thread draws a new countdown at its next allocation.  GIL held, before
 * ht_hooks_record(1).  Never fails. */
void ht_hooks_sampling(uint64_t interval, int seeded, uint64_t seed);

/* In a fork child: make every thread seed its generator again, so that the
 * child's samples do not repeat the parent's.  Never fails. */
void ht_hooks_sampling_forked(void);

/* Whether a block of size bytes just allocated by the calling thread is to
 * be recorded: always when exact; when sampling, by the thread's countdown
 * (sampling.h).  For paths other than the hooks (track(), native
 * allocators).  Any thread.  Never fails. */
int ht_hooks_sample(size_t size);

#endif /* HT_HOOKS_H */
