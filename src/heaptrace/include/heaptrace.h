/* heaptrace.h: C API of heaptrace for extension modules.
 *
 * An extension that manages memory of its own (an arena, a GPU buffer, a
 * block from a C library's malloc) can show it in heaptrace's traces under a
 * domain number of its choice, as it would with PyTraceMalloc_Track for the
 * standard module.  The functions are reached through a capsule, so the
 * extension does not link against heaptrace:
 *
 *     const HeaptraceCAPI *ht = Heaptrace_Import();   // NULL + ImportError if absent
 *     if (ht != NULL) ht->track(MY_DOMAIN, (uintptr_t)p, size);
 *     ...
 *     if (ht != NULL) ht->untrack(MY_DOMAIN, (uintptr_t)p);
 *
 * track and untrack may be called from any thread, with or without the GIL;
 * they never take the GIL.  They return 0 on success, -1 when heaptrace is
 * out of memory (the block is then not traced), and -2 when heaptrace is not
 * tracing.  Tracking an address already tracked in that domain replaces its
 * trace.  Compile with the include directory given by heaptrace.get_include().
 */
#ifndef HEAPTRACE_H
#define HEAPTRACE_H

#include <Python.h>
#include <stdint.h>

#define HEAPTRACE_CAPI_VERSION 1
#define HEAPTRACE_CAPSULE_NAME "heaptrace._core._C_API"

typedef struct {
    int version;    /* HEAPTRACE_CAPI_VERSION of the heaptrace that filled it */
    int (*track)(unsigned int domain, uintptr_t ptr, size_t size);
    int (*untrack)(unsigned int domain, uintptr_t ptr);
} HeaptraceCAPI;

/* Import heaptrace's C API.  Needs the GIL.  Returns NULL with an exception
 * set if heaptrace is not installed or is older than this header. */
static inline const HeaptraceCAPI *
Heaptrace_Import(void)
{
    const HeaptraceCAPI *api = (const HeaptraceCAPI *)PyCapsule_Import(
        HEAPTRACE_CAPSULE_NAME, 0);
    if (api != NULL && api->version < HEAPTRACE_CAPI_VERSION) {
        PyErr_SetString(PyExc_ImportError,
                        "the installed heaptrace is older than heaptrace.h");
        return NULL;
    }
    return api;
}

#endif /* HEAPTRACE_H */
