/* snapobj.c: the Python type heaptrace._core.SnapshotData.
 *
 * A SnapshotData owns one frozen snapshot (ht_snap, snapshot.h) and is the
 * thin binding between it and the Python layer (heaptrace._api): it builds
 * one from raw trace tuples, hands traces back as raw tuples on demand, and
 * runs the analysis of analysis.c, converting ids to Python objects only for
 * the results.
 *
 * The Python objects it gives out are made lazily and cached per interned
 * id: one str per file name, one (filename, lineno) tuple per frame, one
 * frames tuple per traceback, so that a million raw tuples share their
 * tracebacks as they do in the standard module.  When built from raw
 * tuples, the caches start out holding the caller's own str and frames
 * objects.
 */
#include "snapobj.h"

#include <stdarg.h>
#include <string.h>

#include "alloc.h"
#include "analysis.h"
#include "format.h"
#include "snapdata.h"
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

/* ---- from_raw ---------------------------------------------------------------------- */

/* A growable array of fixed-size items. */
typedef struct {
    void *p;
    size_t n, cap, item;
} vec;

static int
vec_push(vec *v, const void *x, size_t count)
{
    if (v->n + count > v->cap) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap < v->n + count) {
            cap *= 2;
        }
        void *p = ht_realloc(v->p, cap * v->item);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        v->p = p;
        v->cap = cap;
    }
    if (count > 0) {   /* x may be NULL for an empty string */
        memcpy((char *)v->p + v->n * v->item, x, count * v->item);
    }
    v->n += count;
    return 0;
}

typedef struct {
    PyObject *strdict;     /* str -> string id */
    PyObject *tbdict;      /* (frames, total) -> traceback id */
    ht_u64map framemap;    /* string id << 32 | lineno -> frame id */
    ht_u64map ptrmap;      /* address of a frames tuple -> traceback id */
    vec str_off, blob, frame_file, frame_line, tb_off, tb_frames, tb_total;
} builder;

static int
check_uint(PyObject *v, unsigned long long max, const char *what,
           unsigned long long *out)
{
    if (!PyLong_CheckExact(v)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what,
                     Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        return -1;
    }
    unsigned long long u;
    if (overflow < 0 || (overflow == 0 && x < 0)) {
        goto bad;
    }
    if (overflow > 0) {
        u = PyLong_AsUnsignedLongLong(v);
        if (PyErr_Occurred()) {
            PyErr_Clear();
            goto bad;
        }
    }
    else {
        u = (unsigned long long)x;
    }
    if (u > max) {
        goto bad;
    }
    *out = u;
    return 0;
bad:
    PyErr_Format(PyExc_ValueError, "%s out of range: %R", what, v);
    return -1;
}

static int
intern_string(builder *b, PyObject *name, uint32_t *id)
{
    PyObject *known = PyDict_GetItemWithError(b->strdict, name);
    if (known != NULL) {
        *id = (uint32_t)PyLong_AsUnsignedLong(known);
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    if (b->str_off.n - 1 >= UINT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "too many file names");
        return -1;
    }
    PyObject *bytes = PyUnicode_AsEncodedString(name, "utf-8", "surrogatepass");
    if (bytes == NULL) {
        return -1;
    }
    int rc = vec_push(&b->blob, PyBytes_AS_STRING(bytes), (size_t)PyBytes_GET_SIZE(bytes));
    Py_DECREF(bytes);
    uint64_t end = b->blob.n;
    if (rc < 0 || vec_push(&b->str_off, &end, 1) < 0) {
        return -1;
    }
    *id = (uint32_t)(b->str_off.n - 2);
    PyObject *idobj = PyLong_FromUnsignedLong(*id);
    if (idobj == NULL) {
        return -1;
    }
    rc = PyDict_SetItem(b->strdict, name, idobj);
    Py_DECREF(idobj);
    return rc;
}

/* Traceback id of (frames, total); creates it when new. */
static int
intern_traceback(builder *b, PyObject *frames, PyObject *total_obj, int32_t total,
                 uint32_t *id)
{
    uint32_t known;
    if (ht_u64map_get(&b->ptrmap, (uint64_t)(uintptr_t)frames, &known)
        && ((int32_t *)b->tb_total.p)[known] == total) {
        *id = known;
        return 0;
    }
    if (!PyTuple_CheckExact(frames)) {
        PyErr_Format(PyExc_TypeError, "frames must be a tuple, not %.100s",
                     Py_TYPE(frames)->tp_name);
        return -1;
    }
    Py_ssize_t nf = PyTuple_GET_SIZE(frames);
    for (Py_ssize_t k = 0; k < nf; k++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, k);
        unsigned long long line;
        if (!PyTuple_CheckExact(fr) || PyTuple_GET_SIZE(fr) != 2) {
            PyErr_SetString(PyExc_TypeError, "a frame must be a (filename, lineno) tuple");
            return -1;
        }
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(fr, 0))) {
            PyErr_SetString(PyExc_TypeError, "a frame's filename must be a str");
            return -1;
        }
        if (check_uint(PyTuple_GET_ITEM(fr, 1), UINT32_MAX, "lineno", &line) < 0) {
            return -1;
        }
    }
    PyObject *key = PyTuple_Pack(2, frames, total_obj);
    if (key == NULL) {
        return -1;
    }
    PyObject *found = PyDict_GetItemWithError(b->tbdict, key);
    if (found != NULL) {
        *id = (uint32_t)PyLong_AsUnsignedLong(found);
        Py_DECREF(key);
        return ht_u64map_put(&b->ptrmap, (uint64_t)(uintptr_t)frames, *id) < 0
               ? (PyErr_NoMemory(), -1) : 0;
    }
    if (PyErr_Occurred() || b->tb_off.n - 1 >= UINT32_MAX - 1) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "too many tracebacks");
        }
        Py_DECREF(key);
        return -1;
    }
    for (Py_ssize_t k = 0; k < nf; k++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, k);
        uint32_t sid, fid;
        unsigned long long line;
        if (intern_string(b, PyTuple_GET_ITEM(fr, 0), &sid) < 0
            || check_uint(PyTuple_GET_ITEM(fr, 1), UINT32_MAX, "lineno", &line) < 0) {
            Py_DECREF(key);
            return -1;
        }
        uint64_t fkey = ((uint64_t)sid << 32) | line;
        if (!ht_u64map_get(&b->framemap, fkey, &fid)) {
            uint32_t l32 = (uint32_t)line;
            fid = (uint32_t)b->frame_file.n;
            if (fid >= UINT32_MAX - 1 || ht_u64map_put(&b->framemap, fkey, fid) < 0
                || vec_push(&b->frame_file, &sid, 1) < 0
                || vec_push(&b->frame_line, &l32, 1) < 0) {
                if (!PyErr_Occurred()) {
                    PyErr_NoMemory();
                }
                Py_DECREF(key);
                return -1;
            }
        }
        if (vec_push(&b->tb_frames, &fid, 1) < 0) {
            Py_DECREF(key);
            return -1;
        }
    }
    if (b->tb_frames.n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many frames");
        Py_DECREF(key);
        return -1;
    }
    uint32_t end = (uint32_t)b->tb_frames.n;
    *id = (uint32_t)(b->tb_off.n - 1);
    PyObject *idobj = PyLong_FromUnsignedLong(*id);
    int rc = idobj == NULL ? -1 : PyDict_SetItem(b->tbdict, key, idobj);
    Py_XDECREF(idobj);
    Py_DECREF(key);
    if (rc < 0 || vec_push(&b->tb_off, &end, 1) < 0 || vec_push(&b->tb_total, &total, 1) < 0) {
        return -1;
    }
    if (ht_u64map_put(&b->ptrmap, (uint64_t)(uintptr_t)frames, *id) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int
convert_trace(builder *b, ht_snap *s, uint64_t i, PyObject *item, int legacy)
{
    if (!PyTuple_Check(item)) {
        PyErr_Format(PyExc_TypeError, "a raw trace must be a tuple, not %.100s",
                     Py_TYPE(item)->tp_name);
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(item);
    if (n != 4 && !(legacy && n == 3)) {
        PyErr_Format(PyExc_ValueError,
                     "a raw trace must be (domain, size, frames, total_nframe), "
                     "got a tuple of %zd items", n);
        return -1;
    }
    unsigned long long domain, size, total = 0;
    PyObject *total_obj = n == 4 ? PyTuple_GET_ITEM(item, 3) : Py_None;
    if (check_uint(PyTuple_GET_ITEM(item, 0), UINT32_MAX, "domain", &domain) < 0
        || check_uint(PyTuple_GET_ITEM(item, 1), (unsigned long long)INT64_MAX, "size",
                      &size) < 0
        || (total_obj != Py_None
            && check_uint(total_obj, INT32_MAX, "total_nframe", &total) < 0)) {
        return -1;
    }
    uint32_t tb;
    if (intern_traceback(b, PyTuple_GET_ITEM(item, 2), total_obj,
                         total_obj == Py_None ? -1 : (int32_t)total, &tb) < 0) {
        return -1;
    }
    s->tr_domain[i] = (uint32_t)domain;
    s->tr_size[i] = size;
    s->tr_tb[i] = tb;
    return 0;
}

/* Move the builder's tables into *s. */
static void
builder_finish(builder *b, ht_snap *s)
{
    s->nstrings = (uint32_t)(b->str_off.n - 1);
    s->str_off = b->str_off.p;
    s->str_blob = b->blob.p;
    s->nframes = (uint32_t)b->frame_file.n;
    s->frame_file = b->frame_file.p;
    s->frame_line = b->frame_line.p;
    s->ntracebacks = (uint32_t)(b->tb_off.n - 1);
    s->tb_off = b->tb_off.p;
    s->tb_frames = b->tb_frames.p;
    s->tb_total = b->tb_total.p;
    b->str_off.p = b->blob.p = b->frame_file.p = b->frame_line.p = NULL;
    b->tb_off.p = b->tb_frames.p = b->tb_total.p = NULL;
}

static void
builder_free(builder *b)
{
    Py_XDECREF(b->strdict);
    Py_XDECREF(b->tbdict);
    ht_u64map_free(&b->framemap);
    ht_u64map_free(&b->ptrmap);
    free(b->str_off.p);
    free(b->blob.p);
    free(b->frame_file.p);
    free(b->frame_line.p);
    free(b->tb_off.p);
    free(b->tb_frames.p);
    free(b->tb_total.p);
}

/* Seed the caches with the caller's str and frames objects. */
static int
fill_caches(SnapObj *self, builder *b)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(b->strdict, &pos, &key, &value)) {
        self->str_objs[PyLong_AsUnsignedLong(value)] = Py_NewRef(key);
    }
    pos = 0;
    while (PyDict_Next(b->tbdict, &pos, &key, &value)) {
        self->tb_objs[PyLong_AsUnsignedLong(value)] = Py_NewRef(PyTuple_GET_ITEM(key, 0));
    }
    return 0;
}

PyDoc_STRVAR(from_raw_doc,
"from_raw(traces, traceback_limit, /, *, legacy=True)\n--\n\n"
"Build a SnapshotData from raw trace tuples (domain, size, frames,\n"
"total_nframe), frames being a tuple of (filename, lineno) tuples, most\n"
"recent first.  With legacy, 3-tuples (no total_nframe) are accepted too.\n"
"Raise TypeError or ValueError on a malformed trace.");

static PyObject *
snapobj_from_raw(PyObject *Py_UNUSED(cls), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"", "", "legacy", NULL};
    PyObject *traces;
    int limit;
    int legacy = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oi|$p:from_raw", kwlist,
                                     &traces, &limit, &legacy)) {
        return NULL;
    }
    PyObject *seq = PySequence_Fast(traces, "traces must be a sequence of raw traces");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ht_snap s;
    memset(&s, 0, sizeof(s));
    s.traceback_limit = limit;
    builder b;
    memset(&b, 0, sizeof(b));
    b.str_off.item = sizeof(uint64_t);
    b.blob.item = 1;
    b.frame_file.item = b.frame_line.item = sizeof(uint32_t);
    b.tb_off.item = b.tb_frames.item = sizeof(uint32_t);
    b.tb_total.item = sizeof(int32_t);
    uint64_t zero64 = 0;
    uint32_t zero32 = 0;
    SnapObj *self = NULL;
    b.strdict = PyDict_New();
    b.tbdict = PyDict_New();
    if (b.strdict == NULL || b.tbdict == NULL
        || vec_push(&b.str_off, &zero64, 1) < 0 || vec_push(&b.tb_off, &zero32, 1) < 0) {
        goto error;
    }
    s.ntraces = (uint64_t)n;
    s.tr_domain = ht_malloc((n ? n : 1) * sizeof(uint32_t));
    s.tr_size = ht_malloc((n ? n : 1) * sizeof(uint64_t));
    s.tr_tb = ht_malloc((n ? n : 1) * sizeof(uint32_t));
    if (s.tr_domain == NULL || s.tr_size == NULL || s.tr_tb == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (convert_trace(&b, &s, (uint64_t)i, items[i], legacy) < 0) {
            goto error;
        }
    }
    builder_finish(&b, &s);
    self = (SnapObj *)ht_snapobj_new(&s);
    if (self == NULL) {
        goto error;
    }
    fill_caches(self, &b);
    builder_free(&b);
    Py_DECREF(seq);
    return (PyObject *)self;
error:
    builder_free(&b);
    ht_snap_free(&s);
    Py_DECREF(seq);
    return NULL;
}

/* ---- sequence of raw traces -------------------------------------------------------- */

static Py_ssize_t
snapobj_len(SnapObj *self)
{
    return (Py_ssize_t)self->s.ntraces;
}

PyDoc_STRVAR(raw_doc,
"raw($self, index, /)\n--\n\n"
"The raw tuple (domain, size, frames, total_nframe) of trace index\n"
"(negative counts from the end).  IndexError when out of range.");

static PyObject *
snapobj_raw(SnapObj *self, PyObject *arg)
{
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t n = (Py_ssize_t)self->s.ntraces;
    if (i < 0) {
        i += n;
    }
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "trace index out of range");
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
            if (check_uint(lineno, UINT32_MAX, "lineno", &line) < 0) {
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
            if (check_uint(PySequence_Fast_GET_ITEM(seq, i), UINT32_MAX, "domain", &d) < 0) {
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

/* ---- pickles of snapshots ----------------------------------------------------------- */

/* The globals a snapshot pickle may name (module, name): the standard
 * module's two classes, and heaptrace's own when a Snapshot was pickled
 * with pickle.dump. */
static const char *const pickle_globals[][2] = {
    {"tracemalloc", "Snapshot"}, {"tracemalloc", "_Traces"},
    {"heaptrace._api", "Snapshot"}, {"heaptrace._api", "_Traces"},
};

/* Argument kinds of the opcodes a snapshot pickle may contain. */
enum {
    ARG_NONE, ARG_U1, ARG_U2, ARG_U4, ARG_U8,   /* fixed-size integers */
    ARG_COUNT1, ARG_COUNT4, ARG_COUNT8,         /* length, then that many bytes */
    ARG_SLONG4,                                 /* LONG4: signed 4-byte length */
    ARG_LINES2,                                 /* GLOBAL: two text lines */
    ARG_REFUSED                                 /* not allowed at all */
};

/* What to remember about an opcode while scanning. */
enum { OP_PLAIN, OP_STRING, OP_PUT, OP_MEMOIZE, OP_GET, OP_STACK_GLOBAL, OP_STOP,
       OP_PROTO, OP_FRAME };

typedef struct {
    unsigned char arg, kind;
    const char *name;
} pk_op;

static pk_op pk_table[256];

static void
pk_init_table(void)
{
    static const struct { unsigned char code, arg, kind; const char *name; } ops[] = {
        {0x80, ARG_U1, OP_PROTO, "PROTO"}, {0x95, ARG_U8, OP_FRAME, "FRAME"},
        {'.', ARG_NONE, OP_STOP, "STOP"}, {'(', ARG_NONE, OP_PLAIN, "MARK"},
        {'N', ARG_NONE, OP_PLAIN, "NONE"}, {0x88, ARG_NONE, OP_PLAIN, "NEWTRUE"},
        {0x89, ARG_NONE, OP_PLAIN, "NEWFALSE"}, {'J', ARG_U4, OP_PLAIN, "BININT"},
        {'K', ARG_U1, OP_PLAIN, "BININT1"}, {'M', ARG_U2, OP_PLAIN, "BININT2"},
        {0x8a, ARG_COUNT1, OP_PLAIN, "LONG1"}, {0x8b, ARG_SLONG4, OP_PLAIN, "LONG4"},
        {'G', ARG_U8, OP_PLAIN, "BINFLOAT"},
        {'X', ARG_COUNT4, OP_STRING, "BINUNICODE"},
        {0x8c, ARG_COUNT1, OP_STRING, "SHORT_BINUNICODE"},
        {0x8d, ARG_COUNT8, OP_STRING, "BINUNICODE8"},
        {'B', ARG_COUNT4, OP_PLAIN, "BINBYTES"}, {'C', ARG_COUNT1, OP_PLAIN, "SHORT_BINBYTES"},
        {0x8e, ARG_COUNT8, OP_PLAIN, "BINBYTES8"},
        {')', ARG_NONE, OP_PLAIN, "EMPTY_TUPLE"}, {'t', ARG_NONE, OP_PLAIN, "TUPLE"},
        {0x85, ARG_NONE, OP_PLAIN, "TUPLE1"}, {0x86, ARG_NONE, OP_PLAIN, "TUPLE2"},
        {0x87, ARG_NONE, OP_PLAIN, "TUPLE3"}, {']', ARG_NONE, OP_PLAIN, "EMPTY_LIST"},
        {'a', ARG_NONE, OP_PLAIN, "APPEND"}, {'e', ARG_NONE, OP_PLAIN, "APPENDS"},
        {'l', ARG_NONE, OP_PLAIN, "LIST"}, {'}', ARG_NONE, OP_PLAIN, "EMPTY_DICT"},
        {'s', ARG_NONE, OP_PLAIN, "SETITEM"}, {'u', ARG_NONE, OP_PLAIN, "SETITEMS"},
        {'d', ARG_NONE, OP_PLAIN, "DICT"}, {0x8f, ARG_NONE, OP_PLAIN, "EMPTY_SET"},
        {0x90, ARG_NONE, OP_PLAIN, "ADDITEMS"}, {0x91, ARG_NONE, OP_PLAIN, "FROZENSET"},
        {'h', ARG_U1, OP_GET, "BINGET"}, {'j', ARG_U4, OP_GET, "LONG_BINGET"},
        {'q', ARG_U1, OP_PUT, "BINPUT"}, {'r', ARG_U4, OP_PUT, "LONG_BINPUT"},
        {0x94, ARG_NONE, OP_MEMOIZE, "MEMOIZE"},
        {'c', ARG_LINES2, OP_PLAIN, "GLOBAL"},
        {0x93, ARG_NONE, OP_STACK_GLOBAL, "STACK_GLOBAL"},
        {0x81, ARG_NONE, OP_PLAIN, "NEWOBJ"}, {'b', ARG_NONE, OP_PLAIN, "BUILD"},
        /* Refused, named for the message. */
        {'R', ARG_REFUSED, 0, "REDUCE"}, {'i', ARG_REFUSED, 0, "INST"},
        {'o', ARG_REFUSED, 0, "OBJ"}, {0x92, ARG_REFUSED, 0, "NEWOBJ_EX"},
        {0x82, ARG_REFUSED, 0, "EXT1"}, {0x83, ARG_REFUSED, 0, "EXT2"},
        {0x84, ARG_REFUSED, 0, "EXT4"}, {'P', ARG_REFUSED, 0, "PERSID"},
        {'Q', ARG_REFUSED, 0, "BINPERSID"}, {0x96, ARG_REFUSED, 0, "BYTEARRAY8"},
        {0x97, ARG_REFUSED, 0, "NEXT_BUFFER"}, {0x98, ARG_REFUSED, 0, "READONLY_BUFFER"},
    };
    for (size_t i = 0; i < 256; i++) {
        pk_table[i].arg = ARG_REFUSED;
        pk_table[i].kind = 0;
        pk_table[i].name = NULL;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        pk_table[ops[i].code].arg = ops[i].arg;
        pk_table[ops[i].code].kind = ops[i].kind;
        pk_table[ops[i].code].name = ops[i].name;
    }
}

static uint64_t
pk_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) {
        v = (v << 8) | p[i];
    }
    return v;
}

static int
pk_global_allowed(const unsigned char *mod, size_t modlen, const unsigned char *name,
                  size_t namelen)
{
    for (size_t i = 0; i < sizeof(pickle_globals) / sizeof(pickle_globals[0]); i++) {
        if (strlen(pickle_globals[i][0]) == modlen && strlen(pickle_globals[i][1]) == namelen
            && memcmp(pickle_globals[i][0], mod, modlen) == 0
            && memcmp(pickle_globals[i][1], name, namelen) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Raise SnapshotFormatError(msg) with the status attribute; msg may hold
 * bytes of the pickle that are not UTF-8 (shown backslash-escaped).
 * Returns -1. */
static int
pk_raise(const char *status, const char *msg)
{
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (text == NULL) {
        return -1;
    }
    PyObject *exc = PyObject_CallOneArg(SnapshotFormatError, text);
    Py_DECREF(text);
    if (exc == NULL) {
        return -1;
    }
    PyObject *name = PyUnicode_FromString(status);
    if (name != NULL && PyObject_SetAttrString(exc, "status", name) == 0) {
        PyErr_SetObject(SnapshotFormatError, exc);
    }
    Py_XDECREF(name);
    Py_DECREF(exc);
    return -1;
}

/* Raise SnapshotFormatError("... refuses to load global 'mod.name' ...") with
 * status "REFUSED"; returns -1. */
static int
pk_refuse_global(const unsigned char *mod, size_t modlen, const unsigned char *name,
                 size_t namelen, size_t at)
{
    char msg[400];
    int ml = modlen > 120 ? 120 : (int)modlen, nl = namelen > 120 ? 120 : (int)namelen;
    PyOS_snprintf(msg, sizeof(msg),
                  "the snapshot loader refuses to load global '%.*s.%.*s' (byte %zu): "
                  "a tracemalloc snapshot pickle only names tracemalloc.Snapshot "
                  "and tracemalloc._Traces", ml, (const char *)mod, nl,
                  (const char *)name, at);
    return pk_raise("REFUSED", msg);
}

/* Raise SnapshotFormatError with the given status name and message. */
static int
pk_fail(const char *status, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    PyOS_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return pk_raise(status, msg);
}

/* What the scanner knows of a value on the unpickler's stack. */
enum { T_SCALAR, T_STRING, T_TUPLE, T_LIST, T_DICT, T_CLASS, T_OBJ };
#define IS_SCALAR(t) ((t) == T_SCALAR || (t) == T_STRING)

/* A growable array of bytes (tags) or of size_t (mark positions). */
typedef struct {
    unsigned char *tags;
    size_t ntags, captags;
    size_t *marks;
    size_t nmarks, capmarks;
    unsigned char *memo;     /* tag of each memo entry */
    size_t capmemo;
    ht_u64map memo_str;      /* memo index of a string -> byte of its opcode */
} pk_state;

static int
pk_grow(void **arr, size_t *cap, size_t need, size_t item)
{
    if (need <= *cap) {
        return 0;
    }
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) {
        cap2 *= 2;
    }
    void *q = PyMem_Realloc(*arr, cap2 * item);
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *arr = q;
    *cap = cap2;
    return 0;
}

static int
pk_push(pk_state *st, unsigned char tag)
{
    if (pk_grow((void **)&st->tags, &st->captags, st->ntags + 1, 1) < 0) {
        return -1;
    }
    st->tags[st->ntags++] = tag;
    return 0;
}

/* Check p[0..n) opcode by opcode before the unpickler sees it; 0 if it may
 * be unpickled, -1 with SnapshotFormatError (or MemoryError) set if not.
 * See check_pickle_doc. */
static int pk_scan_impl(const unsigned char *p, size_t n, pk_state *st);

static int
pk_scan(const unsigned char *p, size_t n)
{
    pk_state st;
    memset(&st, 0, sizeof(st));
    int rc = pk_scan_impl(p, n, &st);
    PyMem_Free(st.tags);
    PyMem_Free(st.marks);
    PyMem_Free(st.memo);
    ht_u64map_free(&st.memo_str);
    return rc;
}

#define PK_POP(dst) do {                                                        \
        if (st->ntags <= (st->nmarks ? st->marks[st->nmarks - 1] : 0)) {       \
            return pk_fail("CORRUPT", "pickle opcode %s at byte %zu finds the " \
                           "stack empty", op->name, at);                        \
        }                                                                       \
        (dst) = st->tags[--st->ntags];                                          \
    } while (0)

/* Apply the stack effect of one opcode to the tags; for GET, PUT and
 * MEMOIZE the caller does it.  Refuses what a snapshot pickle never does
 * and what would let the unpickler do more than linear work: a dict key or
 * set member that is not a scalar (hashing a tuple that shares its items
 * through the memo can take exponential time), SETITEM on a non-dict,
 * APPEND on a non-list, BUILD on a non-object, NEWOBJ on a non-class. */
static int
pk_stack(pk_state *st, unsigned char code, const pk_op *op, size_t at)
{
    unsigned char a, b, c;
    size_t mark;
    switch (code) {
    case '(':
        if (pk_grow((void **)&st->marks, &st->capmarks, st->nmarks + 1,
                    sizeof(size_t)) < 0) {
            return -1;
        }
        st->marks[st->nmarks++] = st->ntags;
        return 0;
    case 'N': case 0x88: case 0x89: case 'J': case 'K': case 'M': case 0x8a: case 0x8b:
    case 'G': case 'B': case 'C': case 0x8e:
        return pk_push(st, T_SCALAR);
    case 'X': case 0x8c: case 0x8d:
        return pk_push(st, T_STRING);
    case 0x8f:
        return pk_push(st, T_SCALAR);   /* a set, filled with scalars only */
    case ')':
        return pk_push(st, T_TUPLE);
    case ']':
        return pk_push(st, T_LIST);
    case '}':
        return pk_push(st, T_DICT);
    case 'c':
        return pk_push(st, T_CLASS);
    case 0x93:
        PK_POP(a);
        PK_POP(b);
        if (!IS_SCALAR(a) || !IS_SCALAR(b)) {
            goto bad;
        }
        return pk_push(st, T_CLASS);
    case 0x85: case 0x86: case 0x87:
        for (int k = 0; k < code - 0x84; k++) {
            PK_POP(a);
        }
        return pk_push(st, T_TUPLE);
    case 'a':
        PK_POP(a);
        PK_POP(b);
        if (b != T_LIST) {
            goto bad;
        }
        return pk_push(st, b);
    case 's':
        PK_POP(a);
        PK_POP(b);
        PK_POP(c);
        if (!IS_SCALAR(b) || c != T_DICT) {
            goto bad;
        }
        return pk_push(st, c);
    case 'b':
        PK_POP(a);
        PK_POP(b);
        if (b != T_OBJ || a != T_DICT) {
            goto bad;
        }
        return pk_push(st, b);
    case 0x81:
        PK_POP(a);
        PK_POP(b);
        if (a != T_TUPLE || b != T_CLASS) {
            goto bad;
        }
        return pk_push(st, T_OBJ);
    case 't': case 'l': case 'd': case 'e': case 'u': case 0x90: case 0x91:
        break;
    default:
        return 0;   /* no stack effect: PROTO, FRAME, STOP; memo ops */
    }
    /* The opcodes that take everything down to the last mark. */
    if (st->nmarks == 0) {
        return pk_fail("CORRUPT", "pickle opcode %s at byte %zu has no mark",
                       op->name, at);
    }
    mark = st->marks[--st->nmarks];
    size_t count = st->ntags - mark;
    if (code == 'd' || code == 'u') {
        if (count % 2 != 0) {
            goto bad;
        }
        for (size_t k = mark; k < st->ntags; k += 2) {
            if (!IS_SCALAR(st->tags[k])) {
                goto bad;
            }
        }
    }
    if (code == 0x90 || code == 0x91) {
        for (size_t k = mark; k < st->ntags; k++) {
            if (!IS_SCALAR(st->tags[k])) {
                goto bad;
            }
        }
    }
    st->ntags = mark;
    switch (code) {
    case 't':
        return pk_push(st, T_TUPLE);
    case 'l':
        return pk_push(st, T_LIST);
    case 'd':
        return pk_push(st, T_DICT);
    case 0x91:
        return pk_push(st, T_SCALAR);   /* a frozenset of scalars */
    default:   /* APPENDS, SETITEMS, ADDITEMS: onto the value below the mark */
        if (st->ntags == 0) {
            goto bad;
        }
        a = st->tags[st->ntags - 1];
        if ((code == 'e' && a != T_LIST) || (code == 'u' && a != T_DICT)
            || (code == 0x90 && a != T_SCALAR)) {
            goto bad;
        }
        return 0;
    }
bad:
    return pk_fail("REFUSED", "the snapshot loader refuses pickle opcode %s at byte %zu: "
                   "a snapshot pickle never applies it to such values", op->name, at);
}

/* Remember that memo entry idx is the string whose opcode starts at byte
 * `at` (SIZE_MAX: it is not a string, or not one the scanner knows). */
static int
pk_memo_string(pk_state *st, uint64_t idx, size_t at)
{
    if (st->memo[idx] != T_STRING || at == SIZE_MAX || at > UINT32_MAX) {
        st->memo[idx] = st->memo[idx] == T_STRING ? T_SCALAR : st->memo[idx];
        return 0;
    }
    if (ht_u64map_put(&st->memo_str, idx, (uint32_t)at) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static int
pk_scan_impl(const unsigned char *p, size_t n, pk_state *st)
{
    size_t i = 0;
    uint64_t nput = 0;   /* memo entries that may exist so far */
    /* The last two strings pushed, for STACK_GLOBAL (NULL: unknown). */
    const unsigned char *str[2] = {NULL, NULL};
    size_t strlen_[2] = {0, 0};
    size_t last_string_at = 0;   /* byte of the opcode of str[1] */
    if (n < 2 || p[0] != 0x80 || p[1] < 2 || p[1] > 5) {
        return pk_fail("NOT_A_SNAPSHOT", "not a pickle of protocol 2 to 5");
    }
    while (i < n) {
        size_t at = i;
        unsigned char code = p[i++];
        const pk_op *op = &pk_table[code];
        if (op->arg == ARG_REFUSED) {
            if (op->name != NULL) {
                return pk_fail("REFUSED",
                               "the snapshot loader refuses pickle opcode %s (byte %zu), "
                               "which a tracemalloc snapshot pickle never contains",
                               op->name, at);
            }
            return pk_fail("REFUSED", "the snapshot loader refuses pickle opcode 0x%02x "
                           "(byte %zu): not one a snapshot pickle uses", code, at);
        }
        size_t left = n - i;
        uint64_t v = 0;
        const unsigned char *payload = NULL;
        uint64_t plen = 0;
        switch (op->arg) {
        case ARG_NONE:
            break;
        case ARG_U1: case ARG_U2: case ARG_U4: case ARG_U8: {
            size_t w = op->arg == ARG_U1 ? 1 : op->arg == ARG_U2 ? 2 : op->arg == ARG_U4 ? 4 : 8;
            if (left < w) {
                goto truncated;
            }
            v = pk_le(p + i, w);
            i += w;
            break;
        }
        case ARG_COUNT1: case ARG_COUNT4: case ARG_COUNT8: case ARG_SLONG4: {
            size_t w = op->arg == ARG_COUNT1 ? 1 : op->arg == ARG_COUNT8 ? 8 : 4;
            if (left < w) {
                goto truncated;
            }
            plen = pk_le(p + i, w);
            if (op->arg == ARG_SLONG4 && plen >= 0x80000000u) {
                return pk_fail("CORRUPT", "negative length in pickle opcode %s (byte %zu)",
                               op->name, at);
            }
            i += w;
            if (plen > n - i) {
                goto truncated;
            }
            payload = p + i;
            i += (size_t)plen;
            break;
        }
        case ARG_LINES2: {
            const unsigned char *mod = p + i;
            const unsigned char *nl1 = memchr(mod, '\n', left);
            if (nl1 == NULL) {
                goto truncated;
            }
            const unsigned char *name = nl1 + 1;
            const unsigned char *nl2 = memchr(name, '\n', (size_t)(p + n - name));
            if (nl2 == NULL) {
                goto truncated;
            }
            if (!pk_global_allowed(mod, (size_t)(nl1 - mod), name, (size_t)(nl2 - name))) {
                return pk_refuse_global(mod, (size_t)(nl1 - mod), name,
                                        (size_t)(nl2 - name), at);
            }
            i = (size_t)(nl2 + 1 - p);
            break;
        }
        }
        if (pk_stack(st, code, op, at) < 0) {
            return -1;
        }
        switch (op->kind) {
        case OP_PROTO:
            if (at != 0) {
                return pk_fail("CORRUPT", "PROTO opcode in the middle of the pickle "
                               "(byte %zu)", at);
            }
            break;
        case OP_FRAME:
            if (v > n - i) {
                goto truncated;
            }
            break;
        case OP_STRING:
            last_string_at = at;
            str[0] = str[1];
            strlen_[0] = strlen_[1];
            str[1] = payload;
            strlen_[1] = (size_t)plen;
            break;
        case OP_PUT:
            if (st->ntags == 0) {
                return pk_fail("CORRUPT", "pickle memo store at byte %zu with an "
                               "empty stack", at);
            }
            /* The pickler numbers memo entries 0, 1, 2...: an index beyond
             * the entries that can exist would only make the unpickler
             * grow its memo table to that size. */
            if (v > nput) {
                return pk_fail("CORRUPT", "pickle memo index %llu at byte %zu is "
                               "beyond the %llu entries stored so far",
                               (unsigned long long)v, at, (unsigned long long)nput);
            }
            if (v == nput) {
                if (pk_grow((void **)&st->memo, &st->capmemo, nput + 1, 1) < 0) {
                    return -1;
                }
                nput++;
            }
            st->memo[v] = st->tags[st->ntags - 1];
            if (pk_memo_string(st, v, str[1] != NULL ? last_string_at : SIZE_MAX) < 0) {
                return -1;
            }
            break;
        case OP_MEMOIZE:
            if (st->ntags == 0) {
                return pk_fail("CORRUPT", "pickle memo store at byte %zu with an "
                               "empty stack", at);
            }
            if (pk_grow((void **)&st->memo, &st->capmemo, nput + 1, 1) < 0) {
                return -1;
            }
            st->memo[nput] = st->tags[st->ntags - 1];
            if (pk_memo_string(st, nput, str[1] != NULL ? last_string_at : SIZE_MAX) < 0) {
                return -1;
            }
            nput++;
            break;
        case OP_GET:
            if (v >= nput) {
                return pk_fail("CORRUPT", "pickle memo index %llu at byte %zu was "
                               "never stored", (unsigned long long)v, at);
            }
            if (pk_push(st, st->memo[v]) < 0) {
                return -1;
            }
            {
                uint32_t where;
                str[0] = str[1];
                strlen_[0] = strlen_[1];
                str[1] = NULL;
                if (st->memo[v] == T_STRING && ht_u64map_get(&st->memo_str, v, &where)) {
                    /* Re-read the string opcode stored at that byte. */
                    const unsigned char *q = p + where;
                    size_t w = *q == 0x8c ? 1 : *q == 'X' ? 4 : 8;
                    str[1] = q + 1 + w;
                    strlen_[1] = (size_t)pk_le(q + 1, w);
                    last_string_at = where;
                }
            }
            break;
        case OP_STACK_GLOBAL:
            if (str[0] != NULL && str[1] != NULL
                && !pk_global_allowed(str[0], strlen_[0], str[1], strlen_[1])) {
                return pk_refuse_global(str[0], strlen_[0], str[1], strlen_[1], at);
            }
            /* Names that came from the memo are checked by the
             * unpickler's find_class. */
            break;
        case OP_STOP:
            if (st->ntags != 1 || st->nmarks != 0) {
                return pk_fail("CORRUPT", "the pickle ends with %zu values and %zu "
                               "marks on its stack instead of one value",
                               st->ntags, st->nmarks);
            }
            if (i != n) {
                return pk_fail("CORRUPT", "%zu unexpected bytes after the end of "
                               "the pickle", n - i);
            }
            return 0;
        default:
            break;
        }
        if (op->kind != OP_STRING && op->kind != OP_PUT && op->kind != OP_MEMOIZE
            && op->kind != OP_FRAME && op->kind != OP_GET) {
            str[0] = str[1] = NULL;
        }
    }
truncated:
    return pk_fail("TRUNCATED", "truncated pickle: it ends before its STOP opcode");
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
    int rc = pk_scan(buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
snapobj_get_limit(SnapObj *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->s.traceback_limit);
}

/* ---- the type ---------------------------------------------------------------------------- */

static PyMethodDef snapobj_methods[] = {
    {"from_raw", (PyCFunction)(void (*)(void))snapobj_from_raw,
     METH_VARARGS | METH_KEYWORDS | METH_CLASS, from_raw_doc},
    {"from_bytes", (PyCFunction)snapobj_from_bytes, METH_O | METH_CLASS, from_bytes_doc},
    {"to_bytes", (PyCFunction)snapobj_to_bytes, METH_VARARGS, to_bytes_doc},
    {"check_pickle", (PyCFunction)snapobj_check_pickle, METH_O | METH_STATIC,
     check_pickle_doc},
    {"raw", (PyCFunction)snapobj_raw, METH_O, raw_doc},
    {"raw_list", (PyCFunction)snapobj_raw_list, METH_NOARGS, raw_list_doc},
    {"strings", (PyCFunction)snapobj_strings, METH_NOARGS, strings_doc},
    {"domains", (PyCFunction)snapobj_domains, METH_NOARGS, domains_doc},
    {"statistics", (PyCFunction)snapobj_statistics, METH_VARARGS, statistics_doc},
    {"compare_to", (PyCFunction)snapobj_compare_to, METH_VARARGS, compare_to_doc},
    {"filter", (PyCFunction)snapobj_filter, METH_O, filter_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef snapobj_getset[] = {
    {"traceback_limit", (getter)snapobj_get_limit, NULL,
     "The traceback limit the traces were recorded with.", NULL},
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
    pk_init_table();
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
    Py_INCREF(SnapshotFormatError);
    if (PyModule_AddObject(module, "SnapshotFormatError", SnapshotFormatError) < 0) {
        Py_DECREF(SnapshotFormatError);
        return -1;
    }
    return 0;
}
