/* snapraw.c: an ht_snap built from raw trace tuples (see snapraw.h).
 *
 * File names are interned through a dict (str -> id) and tracebacks through
 * a dict keyed by (frames, total_nframe), with a map from the address of a
 * frames tuple to its id in front of it: the raw traces of a real snapshot
 * share their frames tuples, so most traces cost one map lookup.  The
 * tables grow in plain malloc'd arrays that are moved into the ht_snap at
 * the end.
 */
#include "snapraw.h"

#include <string.h>

#include "alloc.h"
#include "analysis.h"
#include "snapdata.h"

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

int
ht_check_uint(PyObject *v, unsigned long long max, const char *what,
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
        if (ht_check_uint(PyTuple_GET_ITEM(fr, 1), UINT32_MAX, "lineno", &line) < 0) {
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
            || ht_check_uint(PyTuple_GET_ITEM(fr, 1), UINT32_MAX, "lineno", &line) < 0) {
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
    if (ht_check_uint(PyTuple_GET_ITEM(item, 0), UINT32_MAX, "domain", &domain) < 0
        || ht_check_uint(PyTuple_GET_ITEM(item, 1), (unsigned long long)INT64_MAX, "size",
                      &size) < 0
        || (total_obj != Py_None
            && ht_check_uint(total_obj, INT32_MAX, "total_nframe", &total) < 0)) {
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


int
ht_snap_from_raw(PyObject *traces, int32_t traceback_limit, int legacy,
                 ht_snap *out, ht_raw_objects *objs)
{
    memset(out, 0, sizeof(*out));
    objs->strings = objs->tracebacks = NULL;
    PyObject *seq = PySequence_Fast(traces, "traces must be a sequence of raw traces");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    ht_snap s;
    memset(&s, 0, sizeof(s));
    s.traceback_limit = traceback_limit;
    builder b;
    memset(&b, 0, sizeof(b));
    b.str_off.item = sizeof(uint64_t);
    b.blob.item = 1;
    b.frame_file.item = b.frame_line.item = sizeof(uint32_t);
    b.tb_off.item = b.tb_frames.item = sizeof(uint32_t);
    b.tb_total.item = sizeof(int32_t);
    uint64_t zero64 = 0;
    uint32_t zero32 = 0;
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
    *out = s;
    objs->strings = b.strdict;
    objs->tracebacks = b.tbdict;
    b.strdict = b.tbdict = NULL;
    builder_free(&b);
    Py_DECREF(seq);
    return 0;
error:
    builder_free(&b);
    ht_snap_free(&s);
    Py_DECREF(seq);
    return -1;
}

void
ht_raw_objects_clear(ht_raw_objects *objs)
{
    Py_CLEAR(objs->strings);
    Py_CLEAR(objs->tracebacks);
}
