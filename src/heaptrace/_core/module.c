/* module.c: the heaptrace._core extension module: bindings only.
 *
 * Each function parses its arguments, calls the engine (tracer.c, intern.c)
 * and converts the result.  Names, signatures, return values and error
 * messages follow the standard _tracemalloc module, so that the Python layer
 * can be a drop-in replacement for Lib/tracemalloc.py.  The raw trace tuple
 * (domain, size, frames, total_nframe), with frames a tuple of
 * (filename, lineno) tuples, most recent first, is the contract between C and
 * Python, as in the standard module.
 */
#include "compat.h"
#include "tracer.h"
#include "intern.h"
#include "alloc.h"
#include "snapbuild.h"
#include "snapdata.h"
#include "snapobj.h"
#include "pytrack.h"
#include "native.h"
#include "refpath.h"
#include "sampling.h"
#include "../include/heaptrace.h"

#include <limits.h>

#ifdef HT_FAULT_INJECTION
_Atomic long ht_fault_countdown = -1;
#endif

/* ---- helpers ---------------------------------------------------------------- */

/* A C int from an index-like object, with the standard module's messages. */
static int
as_c_int(PyObject *obj, int *out)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_OverflowError,
                            "Python int too large to convert to C int");
        }
        return -1;
    }
    if (v > INT_MAX || v < INT_MIN) {
        PyErr_SetString(PyExc_OverflowError,
                        "Python int too large to convert to C int");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int
parse_domain_address(PyObject *const *args, unsigned int *domain, uintptr_t *ptr)
{
    unsigned long d = PyLong_AsUnsignedLong(args[0]);
    if (d == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (d > UINT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "domain does not fit in an unsigned int");
        return -1;
    }
    unsigned long long p = PyLong_AsUnsignedLongLong(args[1]);
    if (p == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *domain = (unsigned int)d;
    *ptr = (uintptr_t)p;
    return 0;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s expected %zd arguments, got %zd",
                     name, expected, nargs);
        return -1;
    }
    return 0;
}

/* The raw frames tuple of a traceback id, checking that the traces were not
 * cleared meanwhile (building objects can run a finalizer that clears). */
static PyObject *
frames_of(uint32_t tb, uint64_t generation)
{
    PyObject *frames = ht_intern_frames(tb);
    if (frames != NULL && ht_tracer_generation() != generation) {
        Py_DECREF(frames);
        PyErr_SetString(PyExc_RuntimeError,
                        "the traces were cleared while they were being read");
        return NULL;
    }
    return frames;
}

/* Every binding that reads or changes the tracer's state first makes sure
 * that its hooks are still in place (tracer.h, ht_tracer_check). */
#define CHECK_HOOKS()                   \
    do {                                \
        if (ht_tracer_check() < 0) {    \
            return NULL;                \
        }                               \
    } while (0)

/* ---- the tracemalloc API ------------------------------------------------------ */

PyDoc_STRVAR(start_doc,
"start($module, nframe=1, /, *, sampling_interval=None, sampling_seed=None)\n--\n\n"
"Start tracing Python memory allocations.\n\n"
"Also set the maximum number of frames stored in the traceback of a\n"
"trace to nframe.  With sampling_interval (a number of bytes), only a\n"
"random sample of the blocks is recorded, about one per sampling_interval\n"
"bytes allocated, and sizes and counts are reported as unbiased estimates;\n"
"sampling_seed (an int) makes the sample repeatable.  Already tracing:\n"
"nothing changes.");

/* An int keyword argument of start() in [lo, hi], or None (*given = 0). */
static int
start_kw_u64(const char *name, PyObject *obj, uint64_t lo, uint64_t hi,
             int *given, uint64_t *out)
{
    *given = 0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "start(): %s must be an int or None, "
                     "not %.100s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (lo == 0 && hi == UINT64_MAX) {
        /* A seed: any int, reduced to 64 bits. */
        if (overflow) {
            PyErr_Clear();
            v = (long long)PyLong_AsUnsignedLongLongMask(obj);
            if (PyErr_Occurred()) {
                return -1;
            }
        }
        *out = (uint64_t)v;
        *given = 1;
        return 0;
    }
    if (overflow || v < 0 || (uint64_t)v < lo || (uint64_t)v > hi) {
        PyErr_Format(PyExc_ValueError, "start(): %s must be from %llu to "
                     "%llu bytes, or None", name, (unsigned long long)lo,
                     (unsigned long long)hi);
        return -1;
    }
    *out = (uint64_t)v;
    *given = 1;
    return 0;
}

static PyObject *
ht_py_start(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs,
            PyObject *kwnames)
{
    CHECK_HOOKS();
    int nframe = 1;
    if (nargs > 1) {
        PyErr_Format(PyExc_TypeError, "start expected at most 1 argument, got %zd", nargs);
        return NULL;
    }
    PyObject *interval_obj = NULL, *seed_obj = NULL;
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(key, "sampling_interval") == 0) {
            interval_obj = args[nargs + i];
        }
        else if (PyUnicode_CompareWithASCIIString(key, "sampling_seed") == 0) {
            seed_obj = args[nargs + i];
        }
        else {
            PyErr_Format(PyExc_TypeError, "start() got an unexpected keyword "
                         "argument '%U'", key);
            return NULL;
        }
    }
    if (nargs == 1 && as_c_int(args[0], &nframe) < 0) {
        return NULL;
    }
    if (nframe < 1 || nframe > HT_MAX_NFRAME) {
        PyErr_Format(PyExc_ValueError,
                     "the number of frames must be in range [1; %d]", HT_MAX_NFRAME);
        return NULL;
    }
    int has_interval, has_seed;
    uint64_t interval = 0, seed = 0;
    if (start_kw_u64("sampling_interval", interval_obj, 1, HT_SAMPLE_MAX_INTERVAL,
                     &has_interval, &interval) < 0
        || start_kw_u64("sampling_seed", seed_obj, 0, UINT64_MAX,
                        &has_seed, &seed) < 0) {
        return NULL;
    }
    /* (Refused while tracing: then start() changes nothing.) */
    (void)ht_tracer_set_sampling(has_interval ? interval : 0, has_seed, seed);
    if (ht_tracer_start(nframe) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_sampling_interval_doc,
"get_sampling_interval($module, /)\n--\n\n"
"The sampling interval in bytes of the tracing in progress, or None when\n"
"every block is traced (or not tracing).");

static PyObject *
ht_py_get_sampling_interval(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    uint64_t n = ht_tracer_is_tracing() ? ht_tracer_sampling_interval() : 0;
    if (n == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(n);
}

PyDoc_STRVAR(stop_doc,
"stop($module, /)\n--\n\n"
"Stop tracing Python memory allocations.\n\n"
"Also clear traces of memory blocks allocated by Python.");

static PyObject *
ht_py_stop(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_tracer_stop();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(is_tracing_doc,
"is_tracing($module, /)\n--\n\n"
"Return True if heaptrace is tracing Python memory allocations.");

static PyObject *
ht_py_is_tracing(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    return PyBool_FromLong(ht_tracer_is_tracing());
}

PyDoc_STRVAR(clear_traces_doc,
"clear_traces($module, /)\n--\n\n"
"Clear traces of memory blocks allocated by Python.");

static PyObject *
ht_py_clear_traces(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_tracer_clear();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_traceback_limit_doc,
"get_traceback_limit($module, /)\n--\n\n"
"Get the maximum number of frames stored in the traceback of a trace.\n\n"
"By default, a trace of an allocated memory block only stores\n"
"the most recent frame: the limit is 1.");

static PyObject *
ht_py_get_traceback_limit(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    return PyLong_FromLong(ht_tracer_nframe());
}

PyDoc_STRVAR(get_traced_memory_doc,
"get_traced_memory($module, /)\n--\n\n"
"Get the current size and peak size of memory blocks traced by heaptrace.\n\n"
"Returns a tuple: (current: int, peak: int).");

static PyObject *
ht_py_get_traced_memory(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    size_t current, peak;
    ht_tracer_traced_memory(&current, &peak);
    return Py_BuildValue("nn", (Py_ssize_t)current, (Py_ssize_t)peak);
}

PyDoc_STRVAR(reset_peak_doc,
"reset_peak($module, /)\n--\n\n"
"Set the peak size of memory blocks traced by heaptrace to the current size.\n\n"
"Do nothing if heaptrace is not tracing memory allocations.");

static PyObject *
ht_py_reset_peak(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_tracer_reset_peak();
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_tracemalloc_memory_doc,
"get_tracemalloc_memory($module, /)\n--\n\n"
"Get the memory usage in bytes of heaptrace used to store traces.");

static PyObject *
ht_py_get_tracemalloc_memory(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    return PyLong_FromSize_t(ht_tracer_self_memory());
}

PyDoc_STRVAR(get_object_traceback_doc,
"_get_object_traceback($module, obj, /)\n--\n\n"
"Get the traceback where the Python object obj was allocated.\n\n"
"Return a tuple of (filename: str, lineno: int) tuples, most recent first.\n"
"Return None if heaptrace is not tracing or did not trace the allocation.");

static PyObject *
ht_py_get_object_traceback(PyObject *Py_UNUSED(module), PyObject *obj)
{
    CHECK_HOOKS();
    uintptr_t ptr = (uintptr_t)obj - ht_compat_preheader_size(Py_TYPE(obj));
    uint32_t tb;
    if (!ht_tracer_lookup(0, ptr, &tb)) {
        Py_RETURN_NONE;
    }
    return frames_of(tb, ht_tracer_generation());
}

PyDoc_STRVAR(get_traceback_doc,
"_get_traceback($module, domain, address, /)\n--\n\n"
"Get the traceback of the block at address in domain, as a tuple of\n"
"(filename, lineno) tuples, most recent first; None if it is not traced.");

static PyObject *
ht_py_get_traceback(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_HOOKS();
    unsigned int domain;
    uintptr_t ptr;
    uint32_t tb;
    if (check_nargs("_get_traceback", nargs, 2) < 0
        || parse_domain_address(args, &domain, &ptr) < 0) {
        return NULL;
    }
    if (!ht_tracer_lookup(domain, ptr, &tb)) {
        Py_RETURN_NONE;
    }
    return frames_of(tb, ht_tracer_generation());
}

PyDoc_STRVAR(get_traces_doc,
"_get_traces($module, /)\n--\n\n"
"Get the traces of all memory blocks traced by heaptrace.\n\n"
"Return a list of (domain: int, size: int, traceback: tuple,\n"
"total_nframe: int) tuples; traceback is a tuple of (filename: str,\n"
"lineno: int) tuples, most recent first.  Empty if not tracing.");

static PyObject *build_traces(const ht_export *e, uint64_t generation);

static PyObject *
ht_py_get_traces(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_export traces;
    uint64_t generation = ht_tracer_generation();
    if (ht_tracer_export(&traces) < 0) {
        return NULL;
    }
    /* No automatic collection while the list is built: a finalizer could
     * clear the traces under it (see intern.c), and each of the many new
     * tuples would otherwise trigger a collection of the young ones. */
    int gc_was_on = PyGC_Disable();
    PyObject *list = build_traces(&traces, generation);
    if (gc_was_on) {
        PyGC_Enable();
    }
    ht_export_free(&traces);
    return list;
}

/* The list of _get_traces() from an export: a new reference, or NULL with
 * an exception set. */
static PyObject *
build_traces(const ht_export *e, uint64_t generation)
{
    PyObject *list = PyList_New((Py_ssize_t)e->n);
    if (list == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < e->n; i++) {
        PyObject *frames = frames_of(e->tb[i], generation);
        if (frames == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyObject *item = Py_BuildValue("(IKNi)", e->domain[i],
                                       (unsigned long long)e->size[i], frames,
                                       ht_intern_total(e->tb[i]));
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

/* ---- heaptrace extras ---------------------------------------------------------- */

PyDoc_STRVAR(take_snapshot_data_doc,
"_take_snapshot_data($module, /)\n--\n\n"
"The live traces as a SnapshotData: interned C arrays, no Python object\n"
"per trace.  Empty if not tracing.");

static PyObject *
ht_py_take_snapshot_data(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_snap s;
    if (ht_snapshot_take(&s) < 0) {
        return NULL;
    }
    return ht_snapobj_new(&s);
}

PyDoc_STRVAR(snapshot_tables_doc,
"_snapshot_tables($module, /)\n--\n\n"
"The live traces as interned tables, the form the C analysis works on:\n"
"(traceback_limit, strings, frames, tracebacks, traces) where strings is\n"
"a tuple of file names, frames a list of (string id, lineno), tracebacks a\n"
"list of (frame ids most recent first, total_nframe) and traces a list of\n"
"(domain, size, traceback id).  For tests and debugging.");

static PyObject *
ht_py_snapshot_tables(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    CHECK_HOOKS();
    ht_snap s;
    if (ht_snapshot_take(&s) < 0) {
        return NULL;
    }
    PyObject *strings = PyTuple_New(s.nstrings);
    PyObject *frames = PyList_New(s.nframes);
    PyObject *tbs = PyList_New(s.ntracebacks);
    PyObject *traces = PyList_New((Py_ssize_t)s.ntraces);
    PyObject *result = NULL;
    if (strings == NULL || frames == NULL || tbs == NULL || traces == NULL) {
        goto done;
    }
    for (uint32_t i = 0; i < s.nstrings; i++) {
        PyObject *str = PyUnicode_DecodeUTF8(s.str_blob + s.str_off[i],
                                             (Py_ssize_t)(s.str_off[i + 1] - s.str_off[i]),
                                             "surrogatepass");
        if (str == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(strings, i, str);
    }
    for (uint32_t i = 0; i < s.nframes; i++) {
        PyObject *f = Py_BuildValue("(II)", s.frame_file[i], s.frame_line[i]);
        if (f == NULL) {
            goto done;
        }
        PyList_SET_ITEM(frames, i, f);
    }
    for (uint32_t i = 0; i < s.ntracebacks; i++) {
        uint32_t n = s.tb_off[i + 1] - s.tb_off[i];
        PyObject *ids = PyTuple_New(n);
        if (ids == NULL) {
            goto done;
        }
        for (uint32_t k = 0; k < n; k++) {
            PyObject *v = PyLong_FromUnsignedLong(s.tb_frames[s.tb_off[i] + k]);
            if (v == NULL) {
                Py_DECREF(ids);
                goto done;
            }
            PyTuple_SET_ITEM(ids, k, v);
        }
        PyObject *tb = Py_BuildValue("(Ni)", ids, s.tb_total[i]);
        if (tb == NULL) {
            goto done;
        }
        PyList_SET_ITEM(tbs, i, tb);
    }
    for (uint64_t i = 0; i < s.ntraces; i++) {
        PyObject *t = Py_BuildValue("(IKI)", s.tr_domain[i],
                                    (unsigned long long)s.tr_size[i], s.tr_tb[i]);
        if (t == NULL) {
            goto done;
        }
        PyList_SET_ITEM(traces, (Py_ssize_t)i, t);
    }
    char err[200];
    if (ht_snap_validate(&s, err, sizeof(err)) < 0) {
        PyErr_Format(PyExc_SystemError, "heaptrace built an invalid snapshot: %s", err);
        goto done;
    }
    result = Py_BuildValue("(iOOOO)", s.traceback_limit, strings, frames, tbs, traces);
done:
    Py_XDECREF(strings);
    Py_XDECREF(frames);
    Py_XDECREF(tbs);
    Py_XDECREF(traces);
    ht_snap_free(&s);
    return result;
}

PyDoc_STRVAR(track_doc,
"track($module, domain, address, size, /)\n--\n\n"
"Trace a memory block of size bytes at address in a domain, as an\n"
"extension module would with the C API (see heaptrace.h).  Raise\n"
"RuntimeError if heaptrace is not tracing, MemoryError if it is out of\n"
"memory.");

static PyObject *
ht_py_track(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_HOOKS();
    unsigned int domain;
    uintptr_t ptr;
    if (check_nargs("track", nargs, 3) < 0
        || parse_domain_address(args, &domain, &ptr) < 0) {
        return NULL;
    }
    size_t size = PyLong_AsSize_t(args[2]);
    if (size == (size_t)-1 && PyErr_Occurred()) {
        return NULL;
    }
    int rc = ht_tracer_track(domain, ptr, size);
    if (rc == -2) {
        PyErr_SetString(PyExc_RuntimeError, "heaptrace is not tracing memory allocations");
        return NULL;
    }
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(untrack_doc,
"untrack($module, domain, address, /)\n--\n\n"
"Stop tracing the block at address in a domain (no error if it was not\n"
"traced).  Raise RuntimeError if heaptrace is not tracing.");

static PyObject *
ht_py_untrack(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_HOOKS();
    unsigned int domain;
    uintptr_t ptr;
    if (check_nargs("untrack", nargs, 2) < 0
        || parse_domain_address(args, &domain, &ptr) < 0) {
        return NULL;
    }
    if (ht_tracer_untrack(domain, ptr) == -2) {
        PyErr_SetString(PyExc_RuntimeError, "heaptrace is not tracing memory allocations");
        return NULL;
    }
    Py_RETURN_NONE;
}

#ifdef HT_FAULT_INJECTION
static PyObject *
ht_py_fail_allocations(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    ht_fault_countdown = n;
    Py_RETURN_NONE;
}
#endif

PyDoc_STRVAR(native_start_doc,
"_native_start($module, frames=False, /)\n--\n\n"
"Trace the memory that C code takes from the malloc family and anonymous\n"
"mmap, under NATIVE_DOMAIN (heaptrace.start(native=True) calls this);\n"
"with frames, each block's C call path too (native_frames=True).\n"
"Raises RuntimeError if not tracing or if the platform cannot do it; the\n"
"process is then left as it was.");

static PyObject *
ht_py_native_start(PyObject *Py_UNUSED(module), PyObject *args)
{
    int frames = 0;
    if (!PyArg_ParseTuple(args, "|p:_native_start", &frames)) {
        return NULL;
    }
    CHECK_HOOKS();
    if (!ht_tracer_is_tracing()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "native tracing needs tracing on: call start() first");
        return NULL;
    }
    char err[200];
    if (ht_native_start(frames, err, sizeof(err)) < 0) {
        PyErr_SetString(PyExc_RuntimeError, err);
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(native_status_doc,
"_native_status($module, /)\n--\n\n"
"(on, slots redirected, native blocks that could not be recorded).");

static PyObject *
ht_py_native_status(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(Onn)", ht_tracer_native_on() ? Py_True : Py_False,
                         (Py_ssize_t)ht_native_slots(),
                         (Py_ssize_t)ht_tracer_native_lost());
}

static PyMethodDef ht_methods[] = {
    {"start", (PyCFunction)(void (*)(void))ht_py_start,
     METH_FASTCALL | METH_KEYWORDS, start_doc},
    {"get_sampling_interval", ht_py_get_sampling_interval, METH_NOARGS,
     get_sampling_interval_doc},
    {"stop", ht_py_stop, METH_NOARGS, stop_doc},
    {"is_tracing", ht_py_is_tracing, METH_NOARGS, is_tracing_doc},
    {"clear_traces", ht_py_clear_traces, METH_NOARGS, clear_traces_doc},
    {"get_traceback_limit", ht_py_get_traceback_limit, METH_NOARGS, get_traceback_limit_doc},
    {"get_traced_memory", ht_py_get_traced_memory, METH_NOARGS, get_traced_memory_doc},
    {"reset_peak", ht_py_reset_peak, METH_NOARGS, reset_peak_doc},
    {"get_tracemalloc_memory", ht_py_get_tracemalloc_memory, METH_NOARGS,
     get_tracemalloc_memory_doc},
    {"_get_object_traceback", ht_py_get_object_traceback, METH_O, get_object_traceback_doc},
    {"_get_traces", ht_py_get_traces, METH_NOARGS, get_traces_doc},
    {"_get_traceback", (PyCFunction)(void (*)(void))ht_py_get_traceback, METH_FASTCALL,
     get_traceback_doc},
    {"_snapshot_tables", ht_py_snapshot_tables, METH_NOARGS, snapshot_tables_doc},
    {"_take_snapshot_data", ht_py_take_snapshot_data, METH_NOARGS, take_snapshot_data_doc},
    {"track", (PyCFunction)(void (*)(void))ht_py_track, METH_FASTCALL, track_doc},
    {"untrack", (PyCFunction)(void (*)(void))ht_py_untrack, METH_FASTCALL, untrack_doc},
    {"_native_start", ht_py_native_start, METH_VARARGS, native_start_doc},
    {"_native_status", ht_py_native_status, METH_NOARGS, native_status_doc},
    {"_pytrack_status", ht_py_pytrack_status, METH_NOARGS,
     "(GOT slots of PyTraceMalloc_Track/Untrack redirected now, last error or None)"},
#ifdef HT_FAULT_INJECTION
    {"_fail_allocations", ht_py_fail_allocations, METH_O,
     "Make heaptrace's own allocations fail after n more (-1: never)."},
#endif
    {NULL, NULL, 0, NULL}
};

static const HeaptraceCAPI ht_capi = {
    HEAPTRACE_CAPI_VERSION,
    ht_tracer_track,
    ht_tracer_untrack,
};

static struct PyModuleDef ht_module = {
    PyModuleDef_HEAD_INIT,
    "heaptrace._core",
    "The C engine of heaptrace: allocator hooks, trace tables, interning.",
    -1,   /* the tracer is process-wide state: one instance, no subinterpreters */
    ht_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    if (ht_tracer_init_once() < 0 || ht_intern_init_once() < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&ht_module);
    if (m == NULL) {
        return NULL;
    }
    PyObject *capsule = PyCapsule_New((void *)&ht_capi, HEAPTRACE_CAPSULE_NAME, NULL);
    if (capsule == NULL || PyModule_AddObject(m, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_NFRAME", HT_MAX_NFRAME) < 0
        || PyModule_AddIntConstant(m, "NATIVE_DOMAIN", (long)HT_NATIVE_DOMAIN) < 0
        || PyModule_AddIntConstant(m, "FAST_FRAMES", HT_FAST_FRAMES) < 0
        || PyModule_AddIntConstant(m, "DETACHED_TRACEBACKS", HT_WALK_DETACHED) < 0
        || PyModule_AddIntConstant(m, "FAULT_INJECTION",
#ifdef HT_FAULT_INJECTION
                                   1
#else
                                   0
#endif
                                   ) < 0
        || ht_snapobj_register(m) < 0
        || ht_refpath_register(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
