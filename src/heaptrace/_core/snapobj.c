/* snapobj.c: the Python type heaptrace._core.SnapshotData.
 *
 * A SnapshotData owns one frozen snapshot (ht_snap, snapshot.h) and is the
 * thin binding between it and the Python layer (heaptrace._api): it builds
 * one from raw trace tuples (snapraw.c) or from a file (format.c), hands
 * traces back as raw tuples on demand, runs the analysis of analysis.c,
 * converting ids to Python objects only for the results, and offers the
 * check of snapshot pickles (pickscan.c) to the loader.
 *
 * The Python objects it gives out are made lazily and cached per interned
 * id: one str per file name, one (filename, lineno) tuple per frame, one
 * frames tuple per traceback, so that a million raw tuples share their
 * tracebacks as they do in the standard module.  When built from raw
 * tuples, the caches start out holding the caller's own str and frames
 * objects.
 */
#include "snapobj.h"
#include "sampling.h"

#include <string.h>

#include "alloc.h"
#include "analysis.h"
#include "format.h"
#include "pickscan.h"
#include "snapdata.h"
#include "snapraw.h"
#include "slots.h"

typedef struct {
    PyObject_HEAD
    ht_snap s;
    PyObject **str_objs;    /* nstrings entries, NULL until made */
    PyObject **frame_objs;  /* nframes entries */
    PyObject **tb_objs;     /* ntracebacks entries */
} SnapObj;

static PyTypeObject SnapObj_Type;

/* heaptrace._core.SnapshotFormatError, made by ht_snapobj_register. */
static PyObject *SnapshotFormatError;

#define SnapObj_Check(op) PyObject_TypeCheck(op, &SnapObj_Type)

/* ---- lifetime -------------------------------------------------------------------- */

static void
clear_cache(PyObject **objs, size_t n)
{
    if (objs == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        Py_XDECREF(objs[i]);
    }
    PyMem_Free(objs);
}

static void
snapobj_dealloc(SnapObj *self)
{
    clear_cache(self->str_objs, self->s.nstrings);
    clear_cache(self->frame_objs, self->s.nframes);
    clear_cache(self->tb_objs, self->s.ntracebacks);
    ht_snap_free(&self->s);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyObject *
ht_snapobj_new(ht_snap *s)
{
    SnapObj *self = PyObject_New(SnapObj, &SnapObj_Type);
    if (self == NULL) {
        ht_snap_free(s);
        return NULL;
    }
    self->s = *s;
    memset(s, 0, sizeof(*s));
    self->str_objs = PyMem_Calloc(self->s.nstrings ? self->s.nstrings : 1, sizeof(PyObject *));
    self->frame_objs = PyMem_Calloc(self->s.nframes ? self->s.nframes : 1, sizeof(PyObject *));
    self->tb_objs = PyMem_Calloc(self->s.ntracebacks ? self->s.ntracebacks : 1,
                                 sizeof(PyObject *));
    if (self->str_objs == NULL || self->frame_objs == NULL || self->tb_objs == NULL) {
        Py_DECREF(self);
        PyErr_NoMemory();
        return NULL;
    }
    return (PyObject *)self;
}

/* Raise the Python exception for an HT_AN_* code; returns NULL. */
static PyObject *
analysis_error(int rc)
{
    switch (rc) {
    case HT_AN_NOMEM:
        return PyErr_NoMemory();
    case HT_AN_EMPTY:
        PyErr_SetString(PyExc_IndexError, "empty traceback");
        return NULL;
    case HT_AN_OVERFLOW:
        PyErr_SetString(PyExc_OverflowError, "sizes too large to add up");
        return NULL;
    default:
        PyErr_SetString(PyExc_ValueError, "invalid analysis request");
        return NULL;
    }
}

/* ---- lazy Python objects --------------------------------------------------------- */

static PyObject *
str_obj(SnapObj *self, uint32_t id)
{
    if (self->str_objs[id] == NULL) {
        const ht_snap *s = &self->s;
        Py_ssize_t len = (Py_ssize_t)(s->str_off[id + 1] - s->str_off[id]);
        /* all names empty: str_blob may be NULL */
        self->str_objs[id] = PyUnicode_DecodeUTF8(
            len > 0 ? s->str_blob + s->str_off[id] : "", len, "surrogatepass");
    }
    return self->str_objs[id];   /* borrowed */
}

static PyObject *
frame_obj(SnapObj *self, uint32_t f)
{
    if (self->frame_objs[f] == NULL) {
        PyObject *name = str_obj(self, self->s.frame_file[f]);
        if (name == NULL) {
            return NULL;
        }
        PyObject *line = PyLong_FromUnsignedLong(self->s.frame_line[f]);
        if (line == NULL) {
            return NULL;
        }
        self->frame_objs[f] = PyTuple_Pack(2, name, line);
        Py_DECREF(line);
    }
    return self->frame_objs[f];   /* borrowed */
}

static PyObject *
tb_obj(SnapObj *self, uint32_t tb)
{
    if (self->tb_objs[tb] == NULL) {
        uint32_t lo = self->s.tb_off[tb], hi = self->s.tb_off[tb + 1];
        PyObject *t = PyTuple_New(hi - lo);
        if (t == NULL) {
            return NULL;
        }
        for (uint32_t i = lo; i < hi; i++) {
            PyObject *f = frame_obj(self, self->s.tb_frames[i]);
            if (f == NULL) {
                Py_DECREF(t);
                return NULL;
            }
            PyTuple_SET_ITEM(t, i - lo, Py_NewRef(f));
        }
        self->tb_objs[tb] = t;
    }
    return self->tb_objs[tb];   /* borrowed */
}

static PyObject *
raw_trace(SnapObj *self, uint64_t i)
{
    uint32_t tb = self->s.tr_tb[i];
    PyObject *frames = tb_obj(self, tb);
    if (frames == NULL) {
        return NULL;
    }
    int32_t total = self->s.tb_total[tb];
    if (total < 0) {
        return Py_BuildValue("(IKOO)", self->s.tr_domain[i],
                             (unsigned long long)self->s.tr_size[i], frames, Py_None);
    }
    return Py_BuildValue("(IKOi)", self->s.tr_domain[i],
                         (unsigned long long)self->s.tr_size[i], frames, (int)total);
}

/* Seed the caches with the caller's str and frames objects. */
static int
fill_caches(SnapObj *self, const ht_raw_objects *objs)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(objs->strings, &pos, &key, &value)) {
        self->str_objs[PyLong_AsUnsignedLong(value)] = Py_NewRef(key);
    }
    pos = 0;
    while (PyDict_Next(objs->tracebacks, &pos, &key, &value)) {
        self->tb_objs[PyLong_AsUnsignedLong(value)] = Py_NewRef(PyTuple_GET_ITEM(key, 0));
    }
    return 0;
}

PyDoc_STRVAR(from_raw_doc,
"from_raw(traces, traceback_limit, /, *, legacy=True, sampling_interval=0)\n--\n\n"
"Build a SnapshotData from raw trace tuples (domain, size, frames,\n"
"total_nframe), frames being a tuple of (filename, lineno) tuples, most\n"
"recent first.  With legacy, 3-tuples (no total_nframe) are accepted too.\n"
"Raise TypeError or ValueError on a malformed trace.");

static PyObject *
snapobj_from_raw(PyObject *Py_UNUSED(cls), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"", "", "legacy", "sampling_interval", NULL};
    PyObject *traces;
    int limit;
    int legacy = 1;
    unsigned long long interval = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oi|$pK:from_raw", kwlist,
                                     &traces, &limit, &legacy, &interval)) {
        return NULL;
    }
    if (interval > HT_SAMPLE_MAX_INTERVAL) {
        PyErr_SetString(PyExc_ValueError, "sampling_interval out of range");
        return NULL;
    }
    ht_snap s;
    ht_raw_objects objs;
    if (ht_snap_from_raw(traces, limit, legacy, &s, &objs) < 0) {
        return NULL;
    }
    s.sampling_interval = interval;
    SnapObj *self = (SnapObj *)ht_snapobj_new(&s);
    if (self != NULL) {
        fill_caches(self, &objs);
    }
    ht_raw_objects_clear(&objs);
    return (PyObject *)self;
}

/* ---- sequence of raw traces -------------------------------------------------------- */

static Py_ssize_t
snapobj_len(SnapObj *self)
{
    return (Py_ssize_t)self->s.ntraces;
}

/* The trace index arg names (negative counts from the end): 0, or -1 with
 * IndexError (or TypeError) set. */
static int
trace_index(SnapObj *self, PyObject *arg, Py_ssize_t *out)
{
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t n = (Py_ssize_t)self->s.ntraces;
    if (i < 0) {
        i += n;
    }
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "trace index out of range");
        return -1;
    }
    *out = i;
    return 0;
}

PyDoc_STRVAR(raw_doc,
"raw($self, index, /)\n--\n\n"
"The raw tuple (domain, size, frames, total_nframe) of trace index\n"
"(negative counts from the end).  IndexError when out of range.");

static PyObject *
snapobj_raw(SnapObj *self, PyObject *arg)
{
    Py_ssize_t i;
    if (trace_index(self, arg, &i) < 0) {
        return NULL;
    }
    return raw_trace(self, (uint64_t)i);
}

PyDoc_STRVAR(raw_list_doc,
"raw_list($self, /)\n--\n\n"
"A new list of the raw tuples of every trace, in order.");

static PyObject *
snapobj_raw_list(SnapObj *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New((Py_ssize_t)self->s.ntraces);
    if (list == NULL) {
        return NULL;
    }
    for (uint64_t i = 0; i < self->s.ntraces; i++) {
        PyObject *t = raw_trace(self, i);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

PyDoc_STRVAR(strings_doc,
"strings($self, /)\n--\n\n"
"A tuple of the interned file names; the match tables of filter() are\n"
"indexed like it.");

static PyObject *
snapobj_strings(SnapObj *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *t = PyTuple_New(self->s.nstrings);
    if (t == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < self->s.nstrings; i++) {
        PyObject *str = str_obj(self, i);
        if (str == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, Py_NewRef(str));
    }
    return t;
}

PyDoc_STRVAR(domains_doc,
"domains($self, /)\n--\n\n"
"A sorted tuple of the distinct domains of the traces.");

static PyObject *
snapobj_domains(SnapObj *self, PyObject *Py_UNUSED(ignored))
{
    ht_u64map seen;
    memset(&seen, 0, sizeof(seen));
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    uint32_t dummy;
    for (uint64_t i = 0; i < self->s.ntraces; i++) {
        uint32_t d = self->s.tr_domain[i];
        if (ht_u64map_get(&seen, d, &dummy)) {
            continue;
        }
        PyObject *v = PyLong_FromUnsignedLong(d);
        if (v == NULL || ht_u64map_put(&seen, d, 0) < 0 || PyList_Append(list, v) < 0) {
            if (!PyErr_Occurred()) {
                PyErr_NoMemory();
            }
            Py_XDECREF(v);
            Py_DECREF(list);
            ht_u64map_free(&seen);
            return NULL;
        }
        Py_DECREF(v);
    }
    ht_u64map_free(&seen);
    if (PyList_Sort(list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    PyObject *t = PyList_AsTuple(list);
    Py_DECREF(list);
    return t;
}

/* ---- analysis ------------------------------------------------------------------------- */

static int
parse_key_type(PyObject *key_type, int cumulative)
{
    int k = -1;
    if (PyUnicode_Check(key_type)) {
        if (PyUnicode_CompareWithASCIIString(key_type, "traceback") == 0) {
            k = HT_KEY_TRACEBACK;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type, "lineno") == 0) {
            k = HT_KEY_LINENO;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type, "filename") == 0) {
            k = HT_KEY_FILENAME;
        }
    }
    if (k < 0 || (cumulative && k == HT_KEY_TRACEBACK)) {
        PyErr_Format(PyExc_ValueError, "bad key_type %R (cumulative=%d)", key_type,
                     cumulative);
        return -1;
    }
    return k;
}

/* The frames tuple (most recent first) naming group g. */
static PyObject *
group_frames(SnapObj *owner, int key_type, const ht_group *g)
{
    if (key_type == HT_KEY_TRACEBACK) {
        return Py_XNewRef(tb_obj(owner, g->rep));
    }
    if (key_type == HT_KEY_LINENO) {
        if (g->rep == HT_REP_EMPTY) {
            return PyTuple_New(0);
        }
        PyObject *f = frame_obj(owner, g->rep);
        return f == NULL ? NULL : PyTuple_Pack(1, f);
    }
    PyObject *name = str_obj(owner, g->rep);
    if (name == NULL) {
        return NULL;
    }
    return Py_BuildValue("((Oi))", name, 0);
}


/* ---- result objects built in C ---------------------------------------------

   Snapshot.statistics() on a snapshot with tens of thousands of tracebacks
   spends most of its time running Statistic.__init__ and Traceback.__init__
   in Python.  Those classes only store their arguments in __slots__, so the
   objects are built here instead: allocated with the type's tp_alloc and
   their slots filled at the offsets the slot descriptors give.  A class
   whose attributes are not plain object slots is refused (TypeError), and
   the Python layer then builds the objects itself. */

typedef struct {
    PyTypeObject *type;
    Py_ssize_t off[5];
    int n;
} ht_slots;

/* Look up the object slots `names` of `type`.  0, or -1 with TypeError. */
static int
slots_of(PyObject *type, const char *const *names, int n, ht_slots *out)
{
    if (!PyType_Check(type)
        || !PyType_HasFeature((PyTypeObject *)type, Py_TPFLAGS_HEAPTYPE)) {
        PyErr_SetString(PyExc_TypeError, "result classes must be Python classes");
        return -1;
    }
    out->type = (PyTypeObject *)type;
    out->n = n;
    for (int i = 0; i < n; i++) {
        PyObject *d = PyObject_GetAttrString(type, names[i]);
        if (d == NULL) {
            return -1;
        }
        int ok = ht_compat_slot_offset(d, &out->off[i]) == 0;
        if (ok) {
            ok = out->off[i] >= (Py_ssize_t)sizeof(PyObject)
                 && out->off[i] + (Py_ssize_t)sizeof(PyObject *)
                    <= out->type->tp_basicsize;
        }
        Py_DECREF(d);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot",
                         out->type->tp_name, names[i]);
            return -1;
        }
    }
    return 0;
}

/* A new instance with its slots set to values (references stolen, all
 * released on failure).  NULL with an exception on failure. */
static PyObject *
slots_new(const ht_slots *sl, PyObject **values)
{
    for (int i = 0; i < sl->n; i++) {
        if (values[i] == NULL) {
            for (int j = 0; j < sl->n; j++) {
                Py_XDECREF(values[j]);
            }
            return NULL;
        }
    }
    PyObject *obj = sl->type->tp_alloc(sl->type, 0);
    if (obj == NULL) {
        for (int j = 0; j < sl->n; j++) {
            Py_DECREF(values[j]);
        }
        return NULL;
    }
    for (int i = 0; i < sl->n; i++) {
        *(PyObject **)((char *)obj + sl->off[i]) = values[i];
    }
    return obj;
}

/* A Traceback of frames (most recent first, a tuple; reference stolen):
 * its _frames are oldest first, its _total_nframe None. */
static PyObject *
make_traceback(const ht_slots *tb, PyObject *frames)
{
    if (frames == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(frames);
    PyObject *oldest_first = PyTuple_New(n);
    if (oldest_first == NULL) {
        Py_DECREF(frames);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *f = PyTuple_GET_ITEM(frames, n - 1 - i);
        PyTuple_SET_ITEM(oldest_first, i, Py_NewRef(f));
    }
    Py_DECREF(frames);
    PyObject *values[2] = { oldest_first, Py_NewRef(Py_None) };
    return slots_new(tb, values);
}

static const char *const STAT_SLOTS[] = { "traceback", "size", "count" };
static const char *const DIFF_SLOTS[] = { "traceback", "size", "size_diff", "count",
                                          "count_diff" };
static const char *const TB_SLOTS[] = { "_frames", "_total_nframe" };

/* Parse the optional (result class, Traceback class) argument. */
static int
result_classes(PyObject *classes, const char *const *names, int n,
               ht_slots *result, ht_slots *tb)
{
    if (!PyTuple_Check(classes) || PyTuple_GET_SIZE(classes) != 2) {
        PyErr_SetString(PyExc_TypeError, "classes must be (result class, Traceback)");
        return -1;
    }
    if (slots_of(PyTuple_GET_ITEM(classes, 0), names, n, result) < 0
        || slots_of(PyTuple_GET_ITEM(classes, 1), TB_SLOTS, 2, tb) < 0) {
        return -1;
    }
    return 0;
}

/* A tuple of values (references stolen, all released on failure). */
static PyObject *
tuple_steal(PyObject **values, int n)
{
    PyObject *t = NULL;
    for (int i = 0; i < n; i++) {
        if (values[i] == NULL) {
            goto fail;
        }
    }
    t = PyTuple_New(n);
    if (t == NULL) {
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        PyTuple_SET_ITEM(t, i, values[i]);
    }
    return t;
fail:
    for (int i = 0; i < n; i++) {
        Py_XDECREF(values[i]);
    }
    return NULL;
}

/* The results of a grouping as a list, and *out freed: for statistics()
 * (old == NULL) (frames, size, count), for compare_to() (frames, size,
 * size_diff, count, count_diff); with `result` slots, objects of that class
 * whose traceback is a Traceback (`tb` slots) instead of tuples.  NULL with
 * an exception on failure. */
static PyObject *
groups_to_list(SnapObj *self, SnapObj *old, int k, ht_groups *out,
               const ht_slots *result, const ht_slots *tb)
{
    /* Tens of thousands of new containers would trigger collection after
     * collection, each traversing the young ones: that was three quarters
     * of the time.  Nothing here can make a cycle, so collect after. */
    int gc_was_on = PyGC_Disable();
    PyObject *list = PyList_New((Py_ssize_t)out->ngroups);
    for (size_t i = 0; list != NULL && i < out->ngroups; i++) {
        const ht_group *g = &out->groups[i];
        PyObject *frames = group_frames(old != NULL && g->snap ? old : self, k, g);
        PyObject *values[5];
        int n = 0;
        values[n++] = result != NULL ? make_traceback(tb, frames) : frames;
        values[n++] = PyLong_FromUnsignedLongLong(g->size[0]);
        if (old != NULL) {
            values[n++] = PyLong_FromLongLong((long long)g->size[0] - (long long)g->size[1]);
        }
        values[n++] = PyLong_FromUnsignedLongLong(g->count[0]);
        if (old != NULL) {
            values[n++] = PyLong_FromLongLong((long long)g->count[0] - (long long)g->count[1]);
        }
        PyObject *item = result != NULL ? slots_new(result, values) : tuple_steal(values, n);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    ht_groups_free(out);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return list;
}

PyDoc_STRVAR(statistics_doc,
"statistics($self, key_type, cumulative, classes=None, /)\n--\n\n"
"The groups of Snapshot.statistics(), sorted: a list of\n"
"(frames most recent first, size, count), or, with classes =\n"
"(Statistic, Traceback), of Statistic objects.  IndexError for an empty\n"
"traceback grouped by 'filename', OverflowError when sums overflow,\n"
"TypeError if the classes do not store their fields in object slots.");

static PyObject *
snapobj_statistics(SnapObj *self, PyObject *args)
{
    PyObject *key_type, *classes = Py_None;
    int cumulative;
    ht_slots stat_sl, tb_sl;
    if (!PyArg_ParseTuple(args, "Op|O:statistics", &key_type, &cumulative, &classes)) {
        return NULL;
    }
    int build = classes != Py_None;
    if (build && result_classes(classes, STAT_SLOTS, 3, &stat_sl, &tb_sl) < 0) {
        return NULL;
    }
    int k = parse_key_type(key_type, cumulative);
    if (k < 0) {
        return NULL;
    }
    ht_groups out;
    int rc = ht_statistics(&self->s, k, cumulative, &out);
    if (rc != 0) {
        return analysis_error(rc);
    }
    return groups_to_list(self, NULL, k, &out, build ? &stat_sl : NULL, &tb_sl);
}

PyDoc_STRVAR(compare_to_doc,
"compare_to($self, old, key_type, cumulative, classes=None, /)\n--\n\n"
"The groups of Snapshot.compare_to(old), sorted: a list of\n"
"(frames most recent first, size, size_diff, count, count_diff), or,\n"
"with classes = (StatisticDiff, Traceback), of StatisticDiff objects.\n"
"Same errors as statistics().");

static PyObject *
snapobj_compare_to(SnapObj *self, PyObject *args)
{
    PyObject *old, *key_type, *classes = Py_None;
    int cumulative;
    ht_slots diff_sl, tb_sl;
    if (!PyArg_ParseTuple(args, "O!Op|O:compare_to", &SnapObj_Type, &old, &key_type,
                          &cumulative, &classes)) {
        return NULL;
    }
    int build = classes != Py_None;
    if (build && result_classes(classes, DIFF_SLOTS, 5, &diff_sl, &tb_sl) < 0) {
        return NULL;
    }
    int k = parse_key_type(key_type, cumulative);
    if (k < 0) {
        return NULL;
    }
    ht_groups out;
    int rc = ht_compare(&self->s, &((SnapObj *)old)->s, k, cumulative, &out);
    if (rc != 0) {
        return analysis_error(rc);
    }
    return groups_to_list(self, (SnapObj *)old, k, &out, build ? &diff_sl : NULL, &tb_sl);
}

/* Parse one filter description (see filter_doc) into *f; the buffers it
 * points to are kept alive by `keep` (bytes objects) or allocated in
 * *domains (freed by the caller). */
static int
parse_filter(SnapObj *self, PyObject *spec, ht_filter *f, uint32_t **domains)
{
    PyObject *match, *lineno, *doms;
    int is_domain, inclusive, all_frames;
    if (!PyTuple_Check(spec)
        || !PyArg_ParseTuple(spec, "ppOOpO;a filter description is (is_domain, "
                             "inclusive, match, lineno, all_frames, domains)",
                             &is_domain, &inclusive, &match, &lineno, &all_frames, &doms)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "a filter description must be a tuple");
        }
        return -1;
    }
    memset(f, 0, sizeof(*f));
    f->is_domain = is_domain;
    f->inclusive = inclusive;
    f->all_frames = all_frames;
    if (!is_domain) {
        if (!PyBytes_Check(match) || (size_t)PyBytes_GET_SIZE(match) != self->s.nstrings) {
            PyErr_SetString(PyExc_ValueError,
                            "match must be bytes with one byte per string");
            return -1;
        }
        f->str_match = (const unsigned char *)PyBytes_AS_STRING(match);
        if (lineno != Py_None) {
            unsigned long long line;
            if (ht_check_uint(lineno, UINT32_MAX, "lineno", &line) < 0) {
                return -1;
            }
            f->has_lineno = 1;
            f->lineno = (uint32_t)line;
        }
    }
    if (doms != Py_None) {
        PyObject *seq = PySequence_Fast(doms, "domains must be a sequence");
        if (seq == NULL) {
            return -1;
        }
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        *domains = PyMem_Malloc((n ? n : 1) * sizeof(uint32_t));
        if (*domains == NULL) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned long long d;
            if (ht_check_uint(PySequence_Fast_GET_ITEM(seq, i), UINT32_MAX, "domain", &d) < 0) {
                Py_DECREF(seq);
                return -1;
            }
            (*domains)[i] = (uint32_t)d;
        }
        Py_DECREF(seq);
        f->has_domain = 1;
        f->domains = *domains;
        f->ndomains = (size_t)n;
    }
    else if (is_domain) {
        PyErr_SetString(PyExc_ValueError, "a domain filter needs its domains");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(filter_doc,
"filter($self, filters, /)\n--\n\n"
"A new SnapshotData with the traces that pass filters, a sequence of\n"
"descriptions (is_domain, inclusive, match, lineno, all_frames, domains):\n"
"match is bytes with one byte per entry of strings(), non-zero where the\n"
"filename pattern matches; lineno is None or an int; domains is None (no\n"
"domain condition) or the domain values equal to the filter's domain.\n"
"IndexError when a filter would read the frame of an empty traceback.");

static PyObject *
snapobj_filter(SnapObj *self, PyObject *filters)
{
    PyObject *seq = PySequence_Fast(filters, "filters must be a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ht_filter *fs = PyMem_Calloc(n ? n : 1, sizeof(*fs));
    uint32_t **doms = PyMem_Calloc(n ? n : 1, sizeof(*doms));
    PyObject *result = NULL;
    if (fs == NULL || doms == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (parse_filter(self, PySequence_Fast_GET_ITEM(seq, i), &fs[i], &doms[i]) < 0) {
            goto done;
        }
    }
    ht_snap out;
    int rc = ht_filter_snap(&self->s, fs, (size_t)n, &out);
    if (rc != 0) {
        analysis_error(rc);
        goto done;
    }
    SnapObj *res = (SnapObj *)ht_snapobj_new(&out);
    if (res == NULL) {
        goto done;
    }
    /* Same tables: share the Python objects made so far. */
    for (uint32_t i = 0; i < self->s.nstrings; i++) {
        res->str_objs[i] = Py_XNewRef(self->str_objs[i]);
    }
    for (uint32_t i = 0; i < self->s.nframes; i++) {
        res->frame_objs[i] = Py_XNewRef(self->frame_objs[i]);
    }
    for (uint32_t i = 0; i < self->s.ntracebacks; i++) {
        res->tb_objs[i] = Py_XNewRef(self->tb_objs[i]);
    }
    result = (PyObject *)res;
done:
    if (doms != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyMem_Free(doms[i]);
        }
    }
    PyMem_Free(doms);
    PyMem_Free(fs);
    Py_DECREF(seq);
    return result;
}

/* ---- files (format.c) ------------------------------------------------------------ */

PyDoc_STRVAR(to_bytes_doc,
"to_bytes($self, meta=b'', /)\n--\n\n"
"The snapshot in heaptrace's file format (docs/format.md), with the\n"
"bytes-like meta stored verbatim in its meta section.  MemoryError when\n"
"memory runs out.");

static PyObject *
snapobj_to_bytes(SnapObj *self, PyObject *args)
{
    Py_buffer meta = {0};
    if (!PyArg_ParseTuple(args, "|y*:to_bytes", &meta)) {
        return NULL;
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc;
    /* The tables are immutable and meta's buffer is held: nothing here
     * needs the GIL. */
    Py_BEGIN_ALLOW_THREADS
    rc = ht_format_encode(&self->s, meta.buf, meta.buf ? (size_t)meta.len : 0,
                          &out, &out_len);
    Py_END_ALLOW_THREADS
    if (meta.obj != NULL) {
        PyBuffer_Release(&meta);
    }
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    PyObject *result = out_len > (size_t)PY_SSIZE_T_MAX ? PyErr_NoMemory()
        : PyBytes_FromStringAndSize((const char *)out, (Py_ssize_t)out_len);
    free(out);
    return result;
}

/* Raise SnapshotFormatError(message) with its status attribute set to the
 * status name; returns NULL. */
static PyObject *
format_error(ht_format_status status, const char *message)
{
    PyObject *exc = PyObject_CallFunction(SnapshotFormatError, "s", message);
    if (exc == NULL) {
        return NULL;
    }
    PyObject *name = PyUnicode_FromString(ht_format_status_name(status));
    if (name == NULL || PyObject_SetAttrString(exc, "status", name) < 0) {
        Py_XDECREF(name);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(name);
    PyErr_SetObject(SnapshotFormatError, exc);
    Py_DECREF(exc);
    return NULL;
}

PyDoc_STRVAR(from_bytes_doc,
"from_bytes(data, /)\n--\n\n"
"Decode a file of heaptrace's format from the bytes-like data: a tuple\n"
"(SnapshotData, meta bytes).  Raise SnapshotFormatError (a ValueError)\n"
"naming what is wrong for any input that is not a valid file, with the\n"
"decoder's status name ('TRUNCATED', 'CORRUPT', ...) in its status\n"
"attribute; MemoryError when memory runs out.");

static PyObject *
snapobj_from_bytes(PyObject *Py_UNUSED(cls), PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    ht_snap s;
    uint8_t *meta = NULL;
    size_t meta_len = 0;
    char err[256];
    err[0] = '\0';
    ht_format_status st;
    if (PyBytes_CheckExact(arg)) {
        /* Immutable: decode without the GIL. */
        Py_BEGIN_ALLOW_THREADS
        st = ht_format_decode(buf.buf, (size_t)buf.len, &s, &meta, &meta_len,
                              err, sizeof(err));
        Py_END_ALLOW_THREADS
    }
    else {
        /* Another thread could write to a mutable buffer meanwhile. */
        st = ht_format_decode(buf.buf, (size_t)buf.len, &s, &meta, &meta_len,
                              err, sizeof(err));
    }
    PyBuffer_Release(&buf);
    if (st == HT_FORMAT_NO_MEMORY) {
        return PyErr_NoMemory();
    }
    if (st != HT_FORMAT_OK) {
        return format_error(st, err);
    }
    PyObject *meta_obj = PyBytes_FromStringAndSize((const char *)meta, (Py_ssize_t)meta_len);
    free(meta);
    if (meta_obj == NULL) {
        ht_snap_free(&s);
        return NULL;
    }
    PyObject *data = ht_snapobj_new(&s);
    if (data == NULL) {
        Py_DECREF(meta_obj);
        return NULL;
    }
    return Py_BuildValue("(NN)", data, meta_obj);
}

PyDoc_STRVAR(check_pickle_doc,
"check_pickle(data, /)\n--\n\n"
"Check the bytes-like data, a pickle said to hold a tracemalloc snapshot,\n"
"before it is unpickled; return None if it may be.  It must be protocol 2\n"
"to 5, use only opcodes that rebuild plain data and objects of the\n"
"snapshot classes (never REDUCE, INST, OBJ, NEWOBJ_EX, EXT*, PERSID,\n"
"buffers), name only tracemalloc.Snapshot/_Traces (or heaptrace's) in its\n"
"GLOBAL opcodes and those of its STACK_GLOBALs whose names it can see,\n"
"number its memo entries in order, have every length within the data,\n"
"and end with STOP.  So the unpickler's allocations stay within a small\n"
"multiple of len(data).  Raise SnapshotFormatError (status 'REFUSED',\n"
"'TRUNCATED', 'CORRUPT' or 'NOT_A_SNAPSHOT') otherwise.");

static PyObject *
snapobj_check_pickle(PyObject *Py_UNUSED(cls), PyObject *arg)
{
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int rc = ht_pickscan(buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(same_items_doc,
"same_items(traces, items, /)\n--\n\n"
"True if the sequence traces holds exactly the objects of the tuple items,\n"
"in the same order: identity, not equality, so that replacing one raw\n"
"trace by another, even an equal one, is seen.  The Python layer keeps a\n"
"SnapshotData made from a list of raw traces only while this holds.\n"
"TypeError if items is not a tuple or traces not a sequence.");

static PyObject *
snapobj_same_items(PyObject *Py_UNUSED(cls), PyObject *args)
{
    PyObject *traces, *items;
    if (!PyArg_ParseTuple(args, "OO!:same_items", &traces, &PyTuple_Type, &items)) {
        return NULL;
    }
    /* A list or tuple is used as it is; the GIL is held throughout, so no
     * other thread can change it during the comparison. */
    PyObject *seq = PySequence_Fast(traces, "traces must be a sequence of raw traces");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int same = n == PyTuple_GET_SIZE(items);
    PyObject **have = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; same && i < n; i++) {
        same = have[i] == PyTuple_GET_ITEM(items, i);
    }
    Py_DECREF(seq);
    return PyBool_FromLong(same);
}

static PyObject *
snapobj_get_limit(SnapObj *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->s.traceback_limit);
}

static PyObject *
snapobj_get_interval(SnapObj *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->s.sampling_interval);
}

/* ---- native frames ---------------------------------------------------------------------- */

/* Tuple of (function or None, library, offset) tuples of native stack id:
 * a new reference, or NULL with an exception set. */
static PyObject *
native_stack_obj(SnapObj *self, uint32_t id)
{
    const ht_snap *s = &self->s;
    if (s->nnstacks == 0) {
        return PyTuple_New(0);
    }
    uint32_t lo = s->ns_off[id], hi = s->ns_off[id + 1];
    PyObject *t = PyTuple_New(hi - lo);
    for (uint32_t k = lo; t != NULL && k < hi; k++) {
        uint32_t f = s->ns_frames[k];
        PyObject *func = s->nf_func[f] == 0 ? Py_None : str_obj(self, s->nf_func[f] - 1);
        PyObject *lib = str_obj(self, s->nf_lib[f]);
        PyObject *frame = func == NULL || lib == NULL ? NULL
            : Py_BuildValue("(OOK)", func, lib, (unsigned long long)s->nf_off[f]);
        if (frame == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, k - lo, frame);
    }
    return t;
}

PyDoc_STRVAR(native_doc,
"native($self, index, /)\n--\n\n"
"The native frames of trace index: a tuple of (function, library, offset)\n"
"tuples, innermost first; () when it has none.  IndexError when out of\n"
"range.");

static PyObject *
snapobj_native(SnapObj *self, PyObject *arg)
{
    Py_ssize_t i;
    if (trace_index(self, arg, &i) < 0) {
        return NULL;
    }
    if (self->s.nnstacks == 0) {
        return PyTuple_New(0);
    }
    return native_stack_obj(self, self->s.tr_nstack[i]);
}

PyDoc_STRVAR(native_stack_doc,
"native_stack($self, id, /)\n--\n\n"
"The native frames of native stack id, as native() gives them.");

static PyObject *
snapobj_native_stack(SnapObj *self, PyObject *arg)
{
    unsigned long id = PyLong_AsUnsignedLong(arg);
    if (id == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (id >= self->s.nnstacks) {
        PyErr_SetString(PyExc_IndexError, "native stack id out of range");
        return NULL;
    }
    return native_stack_obj(self, (uint32_t)id);
}

PyDoc_STRVAR(native_index_doc,
"native_index($self, /)\n--\n\n"
"A list of (trace index, native stack id) of the traces that have native\n"
"frames, in trace order.");

static PyObject *
snapobj_native_index(SnapObj *self, PyObject *Py_UNUSED(ignored))
{
    const ht_snap *s = &self->s;
    PyObject *list = PyList_New(0);
    for (uint64_t i = 0; list != NULL && s->nnstacks > 0 && i < s->ntraces; i++) {
        uint32_t id = s->tr_nstack[i];
        if (s->ns_off[id + 1] == s->ns_off[id]) {
            continue;
        }
        PyObject *item = Py_BuildValue("(KI)", (unsigned long long)i, id);
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(item);
    }
    return list;
}

/* ---- the type ---------------------------------------------------------------------------- */

static PyMethodDef snapobj_methods[] = {
    {"from_raw", (PyCFunction)(void (*)(void))snapobj_from_raw,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, from_raw_doc},
    {"from_bytes", (PyCFunction)snapobj_from_bytes, METH_O | METH_CLASS, from_bytes_doc},
    {"to_bytes", (PyCFunction)snapobj_to_bytes, METH_VARARGS, to_bytes_doc},
    {"check_pickle", (PyCFunction)snapobj_check_pickle, METH_O | METH_STATIC,
     check_pickle_doc},
    {"same_items", (PyCFunction)snapobj_same_items, METH_VARARGS | METH_STATIC,
     same_items_doc},
    {"raw", (PyCFunction)snapobj_raw, METH_O, raw_doc},
    {"raw_list", (PyCFunction)snapobj_raw_list, METH_NOARGS, raw_list_doc},
    {"strings", (PyCFunction)snapobj_strings, METH_NOARGS, strings_doc},
    {"domains", (PyCFunction)snapobj_domains, METH_NOARGS, domains_doc},
    {"statistics", (PyCFunction)snapobj_statistics, METH_VARARGS, statistics_doc},
    {"compare_to", (PyCFunction)snapobj_compare_to, METH_VARARGS, compare_to_doc},
    {"filter", (PyCFunction)snapobj_filter, METH_O, filter_doc},
    {"native", (PyCFunction)snapobj_native, METH_O, native_doc},
    {"native_stack", (PyCFunction)snapobj_native_stack, METH_O, native_stack_doc},
    {"native_index", (PyCFunction)snapobj_native_index, METH_NOARGS, native_index_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef snapobj_getset[] = {
    {"traceback_limit", (getter)snapobj_get_limit, NULL,
     "The traceback limit the traces were recorded with.", NULL},
    {"sampling_interval", (getter)snapobj_get_interval, NULL,
     "The sampling interval in bytes of the traces, 0 when exact.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods snapobj_as_sequence = {
    .sq_length = (lenfunc)snapobj_len,
};

PyDoc_STRVAR(snapobj_doc,
"The traces of a snapshot in compact C tables, and their analysis.\n\n"
"Made by SnapshotData.from_raw() or by the engine; immutable.");

static PyTypeObject SnapObj_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "heaptrace._core.SnapshotData",
    .tp_basicsize = sizeof(SnapObj),
    .tp_dealloc = (destructor)snapobj_dealloc,
    .tp_as_sequence = &snapobj_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = snapobj_doc,
    .tp_methods = snapobj_methods,
    .tp_getset = snapobj_getset,
};

int
ht_snapobj_register(PyObject *module)
{
    if (PyType_Ready(&SnapObj_Type) < 0) {
        return -1;
    }
    Py_INCREF(&SnapObj_Type);
    if (PyModule_AddObject(module, "SnapshotData", (PyObject *)&SnapObj_Type) < 0) {
        Py_DECREF(&SnapObj_Type);
        return -1;
    }
    if (SnapshotFormatError == NULL) {
        PyObject *attrs = Py_BuildValue("{sO}", "status", Py_None);
        if (attrs == NULL) {
            return -1;
        }
        SnapshotFormatError = PyErr_NewExceptionWithDoc(
            "heaptrace._core.SnapshotFormatError",
            "A snapshot file is truncated, corrupted or not a snapshot at all.\n\n"
            "The message names what is wrong; status, when set, is the short\n"
            "name of the file format's error ('TRUNCATED', 'CORRUPT', ...).",
            PyExc_ValueError, attrs);
        Py_DECREF(attrs);
        if (SnapshotFormatError == NULL) {
            return -1;
        }
    }
    ht_pickscan_init(SnapshotFormatError);
    Py_INCREF(SnapshotFormatError);
    if (PyModule_AddObject(module, "SnapshotFormatError", SnapshotFormatError) < 0) {
        Py_DECREF(SnapshotFormatError);
        return -1;
    }
    return 0;
}
