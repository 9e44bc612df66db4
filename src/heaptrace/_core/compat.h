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

/* HT_FORCE_PUBLIC_API builds the fallback on a version that has a shim, so
 * that the fallback is tested. */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 \
    && !defined(HT_FORCE_PUBLIC_API)
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

/* For a caller of the MEM or OBJ domain (which holds its interpreter's
 * GIL): whether that GIL is the main interpreter's, so that the tables the
 * main GIL protects may be touched.  False in an interpreter with a GIL of
 * its own (3.12+), and in the public-API build, which cannot tell (its
 * callers then take the path that does not rely on the GIL). */
static inline int
ht_compat_holds_main_gil(void)
{
#if HT_FAST_FRAMES && PY_VERSION_HEX < 0x030C0000
    return 1;
#elif HT_FAST_FRAMES
    PyThreadState *ts = _PyThreadState_GET();
    return ts != NULL
           && ts->interp->ceval.gil == PyInterpreterState_Main()->ceval.gil;
#else
    return ht_compat_gil_tstate() != NULL;
#endif
}

/* ---- frames ------------------------------------------------------------ */

/* A walk over a thread's complete frames, newest first, as the standard
 * module sees them (frames still building their cells or generator are
 * skipped, and so are C-stack shims):
 *
 *     ht_walk w;
 *     for (int ok = ht_walk_start(&w, ts); ok; ok = ht_walk_next(&w)) {
 *         ... ht_walk_code(&w), ht_walk_lasti(&w) ...
 *     }
 *     ht_walk_end(&w);
 *
 * ht_walk_code is borrowed: valid until the next step.  ht_walk_lasti is the
 * offset of the current instruction in code units, as PyCode_Addr2Line wants
 * it times sizeof(_Py_CODEUNIT).  HT_WALK_DETACHED says whether a thread
 * that does not hold the GIL may walk (only the fast shims can: the public
 * API creates frame objects). */

#if HT_FAST_FRAMES

#define HT_WALK_DETACHED 1

typedef struct {
    _PyInterpreterFrame *f;
    int exact;      /* frames below the top may be in their prologue */
} ht_walk;

static inline PyCodeObject *
ht_frame_code(_PyInterpreterFrame *f)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return (PyCodeObject *)f->f_executable;
#  else
    return f->f_code;
#  endif
}

/* Whether the standard module leaves a frame out of tracebacks: a frame
 * still running its prologue (making its cells, copying free variables),
 * and the C-stack shims of 3.12+. */
static inline int
ht_frame_skipped(_PyInterpreterFrame *f)
{
#  if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    if (f->owner == FRAME_OWNED_BY_CSTACK) {
        return 1;
    }
#  endif
    return _PyFrame_IsIncomplete(f);
}

/* The top frame of a chain can be in its prologue at any time (its cells
 * are allocated there).  A frame below the top can only if Python code ran
 * during its prologue: on 3.11, a collection (finalizers, weakref and gc
 * callbacks) that an allocation of the prologue started, or a trace or
 * profile function called before the prologue; on 3.12 and later neither
 * can happen (collections wait for the eval breaker, and the call events
 * fire at RESUME, the end of the prologue).  Testing every frame costs a
 * load of its code object, so frames below the top are tested only when
 * one of those is going on ("exact"); otherwise only for being a shim. */
static inline int
ht_walk_exact_for(PyThreadState *ts)
{
#  if PY_VERSION_HEX < 0x030C0000
    return ts->interp->gc.collecting || ts->cframe->use_tracing;
#  else
    (void)ts;
    return 0;
#  endif
}

static inline int
ht_frame_hidden(_PyInterpreterFrame *f, int exact)
{
    if (exact) {
        return ht_frame_skipped(f);
    }
#  if PY_VERSION_HEX >= 0x030C0000
    return f->owner == FRAME_OWNED_BY_CSTACK;
#  else
    (void)f;
    return 0;
#  endif
}

static inline int
ht_walk_start(ht_walk *w, PyThreadState *ts)
{
#  if PY_VERSION_HEX >= 0x030D0000
    _PyInterpreterFrame *f = ts->current_frame;
#  else
    _PyInterpreterFrame *f = ts->cframe->current_frame;
#  endif
    while (f != NULL && ht_frame_skipped(f)) {
        f = f->previous;
    }
    w->f = f;
    w->exact = ht_walk_exact_for(ts);
    return f != NULL;
}

static inline int
ht_walk_next(ht_walk *w)
{
    _PyInterpreterFrame *f = w->f->previous;
    while (f != NULL && ht_frame_hidden(f, w->exact)) {
        f = f->previous;
    }
    w->f = f;
    return f != NULL;
}

/* Count the frames tracebacks show from the current one to the bottom, up
 * to `cap` in all; ends the walk.  The loop that costs most on deep
 * stacks. */
static inline unsigned
ht_walk_count(ht_walk *w, unsigned counted, unsigned cap)
{
    _PyInterpreterFrame *f = w->f;
    int exact = w->exact;
    while (f != NULL && counted < cap) {
        counted += !ht_frame_hidden(f, exact);
        f = f->previous;
    }
    w->f = NULL;
    return counted;
}

/* The frame a walk stands on, whether it is exact (above), the caller of a
 * frame, and how much a frame below the top adds to total_nframe (hidden
 * frames add nothing): what a caller needs to follow and count the chain
 * itself (intern.c's chain memo). */
#define HT_FRAME_LINKS 1
static inline void *ht_walk_frame(ht_walk *w) { return w->f; }
static inline int ht_walk_is_exact(ht_walk *w) { return w->exact; }
static inline void *ht_frame_previous(const void *f)
{
    return ((const _PyInterpreterFrame *)f)->previous;
}
static inline unsigned
ht_frame_weight(const void *f, int exact)
{
    return !ht_frame_hidden((_PyInterpreterFrame *)f, exact);
}

static inline PyCodeObject *ht_walk_code(ht_walk *w) { return ht_frame_code(w->f); }
static inline int ht_walk_lasti(ht_walk *w) { return _PyInterpreterFrame_LASTI(w->f); }
static inline void ht_walk_end(ht_walk *w) { (void)w; }

/* Size of the memory in front of an object (GC header, managed dict and
 * weakref slots): the traced block starts that many bytes before it. */
static inline size_t
ht_compat_preheader_size(PyTypeObject *tp)
{
    return _PyType_PreHeaderSize(tp);
}

#else  /* public-API fallback: any version without a shim */

#define HT_WALK_DETACHED 0

/* Frame objects are created on demand by these calls; the hooks' reentrancy
 * guard keeps those allocations out of the traces.  Slower, but correct. */
typedef struct {
    PyFrameObject *frame;   /* owned */
    PyCodeObject *code;     /* owned */
} ht_walk;

static inline int
ht_walk_load(ht_walk *w, PyFrameObject *frame)
{
    Py_XDECREF(w->code);
    Py_XDECREF(w->frame);
    w->frame = frame;
    w->code = frame ? PyFrame_GetCode(frame) : NULL;
    return frame != NULL;
}

static inline int
ht_walk_start(ht_walk *w, PyThreadState *ts)
{
    w->frame = NULL;
    w->code = NULL;
    return ht_walk_load(w, PyThreadState_GetFrame(ts));
}

static inline int
ht_walk_next(ht_walk *w)
{
    return ht_walk_load(w, PyFrame_GetBack(w->frame));
}

static inline PyCodeObject *ht_walk_code(ht_walk *w) { return w->code; }

static inline int
ht_walk_lasti(ht_walk *w)
{
    int bytes = PyFrame_GetLasti(w->frame);
    return bytes < 0 ? -1 : bytes / 2;
}

static inline void
ht_walk_end(ht_walk *w)
{
    Py_CLEAR(w->code);
    Py_CLEAR(w->frame);
}

static inline unsigned
ht_walk_count(ht_walk *w, unsigned counted, unsigned cap)
{
    int more = w->frame != NULL;
    while (more && counted < cap) {
        counted++;
        more = ht_walk_next(w);
    }
    ht_walk_end(w);
    return counted;
}

static inline size_t
ht_compat_preheader_size(PyTypeObject *tp)
{
    /* A GC header of two words, then the managed dict/weakref words. */
    size_t n = PyType_IS_GC(tp) ? 2 * sizeof(void *) : 0;
#  ifdef Py_TPFLAGS_MANAGED_WEAKREF
    if (PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT | Py_TPFLAGS_MANAGED_WEAKREF)) {
        n += 2 * sizeof(void *);
    }
#  else
    if (PyType_HasFeature(tp, Py_TPFLAGS_MANAGED_DICT)) {
        n += 2 * sizeof(void *);
    }
#  endif
    return n;
}

#endif /* HT_FAST_FRAMES */

#endif /* HT_COMPAT_H */
