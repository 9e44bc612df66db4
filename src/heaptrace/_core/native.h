/* native.h: tracing the memory that C code takes from the malloc family
 * and from anonymous mmap (heaptrace.start(native=True)).  See native.c
 * for the invariants of the hooks. */
#ifndef HT_NATIVE_H
#define HT_NATIVE_H

#include <stddef.h>

/* Start recording native blocks and redirect the allocation functions in
 * every loaded shared object but the interpreter, the C library, the
 * dynamic linker and heaptrace itself, and in every object loaded later.
 * With frames, each block also gets its C call path (nstack.h).
 * GIL held, tracing on.  Returns 0, or -1 with a message in err: the
 * platform cannot redirect calls (not Linux with glibc on x86-64 or arm64),
 * the build has no frame shims (the public-API fallback),
 * the stack cannot be unwound (frames), native tracing is already on
 * without frames (frames asked for), or a slot could not be written; then
 * nothing is left redirected and native recording is off again (or, when
 * it was already on, as it was). */
int ht_native_start(int frames, char *err, size_t errlen);

/* Put every redirected call back and stop recording native blocks.  GIL
 * held.  Never fails: a slot that cannot be made writable again keeps
 * calling heaptrace's hook, which passes calls straight through once
 * native recording is off. */
void ht_native_stop(void);

/* Slots redirected now (0 when native tracing is off).  Never fails. */
size_t ht_native_slots(void);

#endif /* HT_NATIVE_H */
