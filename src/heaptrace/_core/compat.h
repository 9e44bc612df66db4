/* compat.h: every Python-version shim of heaptrace, in one place.
 *
 * The fast path reads interpreter internals: the current thread state, the
 * chain of _PyInterpreterFrame, a frame's code object and instruction
 * offset, and the size of an object's pre-header.  Their layout changes from
 * one CPython version to the next, so each supported version gets its shim
 * here, compiled against that version's own internal headers (setup.py passes
 * them with -isystem).  A version without a shim falls back to the public,
 * slower API (PyThreadState_GetFrame / PyFrame_GetBack), so heaptrace still
 * works there, only with more overhead per allocation.
 *
 * Nothing outside this header may include an internal CPython header or
 * test PY_VERSION_HEX.
 */
#ifndef HT_COMPAT_H
#define HT_COMPAT_H

#define PY_SSIZE_T_CLEAN
#ifndef Py_BUILD_CORE_MODULE
#  define Py_BUILD_CORE_MODULE 1
#endif
#include <Python.h>

#if PY_VERSION_HEX < 0x030B0000
#  error "heaptrace needs CPython 3.11 or newer"
#endif
#ifdef Py_GIL_DISABLED
#  error "heaptrace does not support the free-threaded build yet: its tables rely on the GIL"
#endif

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#  define HT_FAST_FRAMES 1
#  include "internal/pycore_frame.h"
#  include "internal/pycore_pystate.h"
#  include "internal/pycore_object.h"
#  include "internal/pycore_code.h"
#else
#  define HT_FAST_FRAMES 0
#endif

/* ---- thread state ------------------------------------------------------ */

/* The thread state of the calling thread when it holds the GIL of the main
 * interpreter, else NULL.  Only then may the caller touch the tables that
 * the GIL protects.  Cheap: called on every allocation of the RAW domain. */
static inline PyThreadState *
ht_compat_gil_tstate(void)
{
#if HT_FAST_FRAMES && PY_VERSION_HEX < 0x030C0000
    /* 3.11: _PyThreadState_GET() is the GIL holder of the whole runtime. */
    PyThreadState *holder = _PyThreadState_GET();
    if (holder == NULL || holder != PyGILState_GetThisThreadState()) {
        return NULL;
    }
    return holder;
#elif HT_FAST_FRAMES
    /* 3.12+: the calling thread's attached thread state, NULL when detached. */
    PyThreadState *ts = _PyThreadState_GET();
    if (ts == NULL || ts->interp != PyInterpreterState_Main()) {
        return NULL;
    }
    return ts;
#else
    return PyGILState_Check() ? PyGILState_GetThisThreadState() : NULL;
#endif
}

/* The thread state of the calling thread, which the caller knows holds the
 * GIL (the MEM and OBJ domains).  Returns NULL when the caller is not in the
 * main interpreter (a subinterpreter may have a GIL of its own), in which case
 * it must take the path that does not rely on the GIL. */
static inline PyThreadState *
ht_compat_holder_tstate(void)
{
#if HT_FAST_FRAMES && PY_VERSION_HEX < 0x030C0000
    return _PyThreadState_GET();
#elif HT_FAST_FRAMES
    PyThreadState *ts = _PyThreadState_GET();
    if (ts == NULL || ts->interp != PyInterpreterState_Main()) {
        return NULL;
    }
    return ts;
#else
    return ht_compat_gil_tstate();
#endif
}

/* ---- frames ------------------------------------------------------------ */

#if HT_FAST_FRAMES
typedef _PyInterpreterFrame ht_frame;

static inline PyCodeObject *
ht_frame_code(ht_frame *f)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return (PyCodeObject *)f->f_executable;
#  else
    return f->f_code;
#  endif
}

/* Offset of the current instruction in code units, as the interpreter's own
 * line-number lookup wants it (times sizeof(_Py_CODEUNIT)). */
static inline int
ht_frame_lasti(ht_frame *f)
{
    return _PyInterpreterFrame_LASTI(f);
}

/* A frame is skipped, as the standard module skips it, while it is still
 * building its cells or generator (incomplete) or when it is a C-stack shim. */
static inline int
ht_frame_skipped(ht_frame *f)
{
    return _PyFrame_IsIncomplete(f);
}

static inline ht_frame *
ht_frame_first_complete(ht_frame *f)
{
    while (f != NULL && ht_frame_skipped(f)) {
        f = f->previous;
    }
    return f;
}

/* The newest complete frame of a thread (not necessarily the caller's). */
static inline ht_frame *
ht_frame_top(PyThreadState *ts)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return ht_frame_first_complete(ts->current_frame);
#  else
    return ht_frame_first_complete(ts->cframe->current_frame);
#  endif
}

/* The next older complete frame.  Only the newest frame of a thread can be
 * incomplete (a frame below it has already run its prologue and called
 * something), so below the top only C-stack shims need skipping; the full
 * test is kept for versions where that reasoning was not checked. */
static inline ht_frame *
ht_frame_older(ht_frame *f)
{
    f = f->previous;
#  if PY_VERSION_HEX >= 0x030C0000
    while (f != NULL && f->owner == FRAME_OWNED_BY_CSTACK) {
        f = f->previous;
    }
#  endif
    return f;
}

/* Size of the memory in front of an object (GC header, managed dict and
 * weakref slots): the traced block starts that many bytes before it. */
static inline size_t
ht_compat_preheader_size(PyTypeObject *tp)
{
    return _PyType_PreHeaderSize(tp);
}

#else  /* !HT_FAST_FRAMES: public-API fallback, used only on unknown versions */
#  error "no frame shim for this CPython version: add one to compat.h"
#endif

#endif /* HT_COMPAT_H */
