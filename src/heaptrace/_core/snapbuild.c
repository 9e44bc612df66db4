/* snapbuild.c: take a snapshot of the live traces as an ht_snap.
 *
 * The live tables identify a traceback by what was cheap to capture (code
 * object and instruction offset per frame), so two live tracebacks can mean
 * the same lines.  A snapshot is in terms of what users see: file names,
 * line numbers, and tracebacks of those.  Building it resolves each distinct
 * live traceback once, in the order of the interning tables, as a sequence
 * of location keys (intern.c resolves each (code, offset) location to a
 * line once and remembers every arena frame's key), maps each location to
 * a frame id once per snapshot, and interns tracebacks of frame ids by
 * value, so the analysis can group by integer ids.  Work: passes over the
 * traces plus one step per frame of each distinct traceback; no Python
 * object per trace or per traceback, one per distinct file name.
 *
 * Native frames (native_frames=True): the export gives each trace a live
 * stack id; the stacks in use are copied out under the raw lock, each
 * distinct return address is symbolized once (dladdr, with the GIL
 * released, since dladdr takes the dynamic loader's lock and a thread
 * inside dlopen may be waiting for the GIL), and the snapshot gets the
 * native frame and stack tables of snapshot.h.
 */
#include "snapbuild.h"
#include "tracer.h"
#include "intern.h"
#include "snapdata.h"
#include "alloc.h"
#include "analysis.h"
#include "nstack.h"

#include <dlfcn.h>
#include <string.h>

/* ---- a growable array ------------------------------------------------------ */

/* ---- the builder ------------------------------------------------------------- */

typedef struct {
    ht_snap *s;
    size_t cap_blob, cap_stroff, cap_frames, cap_lines, cap_tboff, cap_tbframes, cap_tbtotal;
    size_t nblob, ntbframes;
    PyObject *strings;    /* dict: filename -> string id */
    ht_u64map frames;     /* (string id << 32 | lineno) -> frame id */
    ht_u64map tbs;        /* traceback hash -> newest traceback with it */
    uint32_t *tb_next;    /* chain of tracebacks sharing a hash */
    size_t cap_tbnext;
    uint32_t *frame_buf;
    size_t cap_framebuf;
    /* GIL tracebacks are resolved location by location (intern.c's keys):
     * loc_frame[key] is the canonical frame id of a location already seen,
     * or UINT32_MAX. */
    uint32_t *loc_frame;
    size_t cap_locframe;
    uint32_t *keys;       /* ht_intern_locations' output, cap_loc entries */
    size_t cap_loc;
} builder;

static int
string_id(builder *b, PyObject *name, uint32_t *id)
{
    PyObject *found = PyDict_GetItemWithError(b->strings, name);
    if (found != NULL) {
        *id = (uint32_t)PyLong_AsUnsignedLong(found);
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *bytes = PyUnicode_AsEncodedString(name, "utf-8", "surrogatepass");
    if (bytes == NULL) {
        return -1;
    }
    size_t len = (size_t)PyBytes_GET_SIZE(bytes);
    ht_snap *s = b->s;
    if (s->nstrings == UINT32_MAX
        || ht_grow((void **)&s->str_blob, &b->cap_blob, b->nblob + len, 1) < 0
        || ht_grow((void **)&s->str_off, &b->cap_stroff, (size_t)s->nstrings + 2,
                sizeof(uint64_t)) < 0) {
        Py_DECREF(bytes);
        PyErr_NoMemory();
        return -1;
    }
    if (len > 0) {      /* an empty first name leaves str_blob NULL */
        memcpy(s->str_blob + b->nblob, PyBytes_AS_STRING(bytes), len);
    }
    Py_DECREF(bytes);
    b->nblob += len;
    *id = s->nstrings++;
    s->str_off[s->nstrings] = b->nblob;
    PyObject *value = PyLong_FromUnsignedLong(*id);
    if (value == NULL || PyDict_SetItem(b->strings, name, value) < 0) {
        Py_XDECREF(value);
        return -1;
    }
    Py_DECREF(value);
    return 0;
}

static int
frame_id(builder *b, uint32_t file, uint32_t lineno, uint32_t *id)
{
    uint64_t key = ((uint64_t)file << 32) | lineno;
    if (ht_u64map_get(&b->frames, key, id)) {
        return 0;
    }
    ht_snap *s = b->s;
    if (s->nframes == UINT32_MAX - 1
        || ht_grow((void **)&s->frame_file, &b->cap_frames, (size_t)s->nframes + 1,
                sizeof(uint32_t)) < 0
        || ht_grow((void **)&s->frame_line, &b->cap_lines, (size_t)s->nframes + 1,
                sizeof(uint32_t)) < 0
        || ht_u64map_put(&b->frames, key, s->nframes) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    s->frame_file[s->nframes] = file;
    s->frame_line[s->nframes] = lineno;
    *id = s->nframes++;
    return 0;
}

/* Canonical traceback of frame ids (n of them in b->frame_buf) and total. */
static int
traceback_id(builder *b, size_t n, int32_t total, uint32_t *id)
{
    ht_snap *s = b->s;
    uint64_t h = (uint64_t)(uint32_t)total * 0x100000001b3ULL;
    for (size_t k = 0; k < n; k++) {
        h = (h ^ b->frame_buf[k]) * 0x100000001b3ULL;
    }
    h ^= n;
    /* The map goes from a hash to the newest traceback with that hash;
     * tb_next chains the older ones (collisions of a 64-bit hash are rare,
     * but they must not merge tracebacks). */
    uint32_t newest = UINT32_MAX;
    if (ht_u64map_get(&b->tbs, h, &newest)) {
        for (uint32_t t = newest; t != UINT32_MAX; t = b->tb_next[t]) {
            uint32_t off = s->tb_off[t];
            if (s->tb_off[t + 1] - off == n && s->tb_total[t] == total
                && memcmp(s->tb_frames + off, b->frame_buf, n * sizeof(uint32_t)) == 0) {
                *id = t;
                return 0;
            }
        }
    }
    if (s->ntracebacks >= UINT32_MAX - 2
        || b->ntbframes + n > UINT32_MAX
        || ht_grow((void **)&s->tb_off, &b->cap_tboff, (size_t)s->ntracebacks + 2,
                sizeof(uint32_t)) < 0
        || ht_grow((void **)&s->tb_total, &b->cap_tbtotal, (size_t)s->ntracebacks + 1,
                sizeof(int32_t)) < 0
        || ht_grow((void **)&b->tb_next, &b->cap_tbnext, (size_t)s->ntracebacks + 1,
                sizeof(uint32_t)) < 0
        || ht_grow((void **)&s->tb_frames, &b->cap_tbframes, b->ntbframes + n + 1,
                sizeof(uint32_t)) < 0
        || ht_u64map_put(&b->tbs, h, s->ntracebacks) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t t = s->ntracebacks++;
    memcpy(s->tb_frames + b->ntbframes, b->frame_buf, n * sizeof(uint32_t));
    b->ntbframes += n;
    s->tb_off[t + 1] = (uint32_t)b->ntbframes;
    s->tb_total[t] = total;
    b->tb_next[t] = newest;
    *id = t;
    return 0;
}

/* Canonical frame id of a (filename, lineno) tuple. */
static int
tuple_frame_id(builder *b, PyObject *frame, uint32_t *id)
{
    uint32_t file;
    long lineno = PyLong_AsLong(PyTuple_GET_ITEM(frame, 1));
    if ((lineno == -1 && PyErr_Occurred())
        || string_id(b, PyTuple_GET_ITEM(frame, 0), &file) < 0
        || frame_id(b, file, (uint32_t)lineno, id) < 0) {
        return -1;
    }
    return 0;
}

/* Once a traceback's frames are known (which may have run the hooks): check
 * that the traces were not cleared meanwhile, and make room for n frame ids
 * in b->frame_buf.  0, or -1 with an exception set. */
static int
frame_buf_for(builder *b, size_t n, uint64_t generation)
{
    if (ht_tracer_generation() != generation) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the traces were cleared while the snapshot was taken");
        return -1;
    }
    if (ht_grow((void **)&b->frame_buf, &b->cap_framebuf, n + 1, sizeof(uint32_t)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Frame ids of a GIL traceback, into b->frame_buf; *n their number.  Each
 * distinct location is turned into a frame id once per snapshot. */
static int
resolve_gil(builder *b, uint32_t live, uint64_t generation, size_t *n)
{
    int rc;
    while ((rc = ht_intern_locations(live, b->keys, b->cap_loc, n)) == 1) {
        uint32_t *keys = ht_realloc(b->keys, *n * sizeof(uint32_t));
        if (keys == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->keys = keys;
        b->cap_loc = *n;
    }
    if (rc < 0 || frame_buf_for(b, *n, generation) < 0) {
        return -1;
    }
    for (size_t k = 0; k < *n; k++) {
        uint32_t key = b->keys[k];
        if (key != UINT32_MAX && key < b->cap_locframe && b->loc_frame[key] != UINT32_MAX) {
            b->frame_buf[k] = b->loc_frame[key];
            continue;
        }
        if (tuple_frame_id(b, ht_intern_location_frame(key), &b->frame_buf[k]) < 0) {
            return -1;
        }
        if (key != UINT32_MAX) {
            size_t old = b->cap_locframe;
            if (ht_grow((void **)&b->loc_frame, &b->cap_locframe, (size_t)key + 1,
                     sizeof(uint32_t)) < 0) {
                PyErr_NoMemory();
                return -1;
            }
            memset(b->loc_frame + old, 0xFF, (b->cap_locframe - old) * sizeof(uint32_t));
            b->loc_frame[key] = b->frame_buf[k];
        }
    }
    return 0;
}

/* Frame ids of a detached traceback (rare: RAW blocks allocated without the
 * GIL), through its tuple of frames. */
static int
resolve_detached(builder *b, uint32_t live, uint64_t generation, size_t *n)
{
    PyObject *frames = ht_intern_frames(live);
    if (frames == NULL) {
        return -1;
    }
    *n = (size_t)PyTuple_GET_SIZE(frames);
    if (frame_buf_for(b, *n, generation) < 0) {
        Py_DECREF(frames);
        return -1;
    }
    for (size_t k = 0; k < *n; k++) {
        if (tuple_frame_id(b, PyTuple_GET_ITEM(frames, k), &b->frame_buf[k]) < 0) {
            Py_DECREF(frames);
            return -1;
        }
    }
    Py_DECREF(frames);
    return 0;
}

/* Canonical traceback of a live traceback id. */
static int
resolve(builder *b, uint32_t live, uint64_t generation, uint32_t *id)
{
    size_t n;
    int rc;
    if (live == HT_TB_UNKNOWN || (live & HT_TB_DETACHED)) {
        rc = resolve_detached(b, live, generation, &n);
    }
    else {
        rc = resolve_gil(b, live, generation, &n);
    }
    if (rc < 0) {
        return -1;
    }
    return traceback_id(b, n, ht_intern_total(live), id);
}

/* Mark of a live traceback id that the snapshot uses, not yet resolved
 * (canonical ids stay below it: traceback_id stops at UINT32_MAX - 2). */
#define NEEDED (UINT32_MAX - 1)

/* ---- native frames ------------------------------------------------------ */

/* One distinct return address and what dladdr said of it (malloc'ed
 * copies; NULL when unknown). */
typedef struct {
    uintptr_t ip;
    char *func;
    char *lib;
    uint64_t off;
} sym_t;

static void
symbolize(sym_t *sym, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* A return address is just past its call: look up the call. */
        uintptr_t at = sym[i].ip - 1;
        Dl_info info;
        sym[i].off = at;
        if (dladdr((void *)at, &info) == 0) {
            continue;
        }
        if (info.dli_fname != NULL && info.dli_fname[0] != 0) {
            size_t len = strlen(info.dli_fname);
            if ((sym[i].lib = ht_malloc(len + 1)) != NULL) {
                memcpy(sym[i].lib, info.dli_fname, len + 1);
            }
            sym[i].off = at - (uintptr_t)info.dli_fbase;
        }
        if (info.dli_sname != NULL) {
            size_t len = strlen(info.dli_sname);
            if ((sym[i].func = ht_malloc(len + 1)) != NULL) {
                memcpy(sym[i].func, info.dli_sname, len + 1);
            }
        }
    }
}

/* String id of a C string (file names in the file system's encoding,
 * symbols as UTF-8 with undecodable bytes escaped). */
static int
cstring_id(builder *b, const char *text, int path, uint32_t *id)
{
    PyObject *name = path ? PyUnicode_DecodeFSDefault(text)
        : PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "surrogateescape");
    if (name == NULL) {
        return -1;
    }
    int rc = string_id(b, name, id);
    Py_DECREF(name);
    return rc;
}

/* Give out->tr_nstack (live stack ids from the export) snapshot stack ids
 * and build the native tables.  GIL held.  0, or -1 with an exception. */
static int
build_native(builder *b)
{
    ht_snap *s = b->s;
    size_t n = (size_t)s->ntraces;
    int rc = -1;
    uint32_t *map = NULL;
    uintptr_t *ips = NULL;        /* the stacks' addresses, back to back */
    size_t nips = 0, cap_ips = 0, cap_off = 0, cap_frames = 0;
    sym_t *sym = NULL;
    size_t nsym = 0, cap_sym = 0;
    ht_u64map seen = {0};
    uint32_t *ip_sym = NULL;      /* per entry of ips: index into sym */

    pthread_mutex_lock(&ht_raw_lock);
    uint32_t nlive = ht_nstack_count();
    map = ht_malloc(((size_t)nlive + 1) * sizeof(uint32_t));
    if (map == NULL) {
        pthread_mutex_unlock(&ht_raw_lock);
        PyErr_NoMemory();
        goto done;
    }
    memset(map, 0xFF, ((size_t)nlive + 1) * sizeof(uint32_t));
    map[0] = 0;     /* the empty stack is snapshot stack 0 */
    for (size_t i = 0; i < n; i++) {
        if (s->tr_nstack[i] < nlive) {
            map[s->tr_nstack[i]] = NEEDED;
        }
        else {
            s->tr_nstack[i] = 0;   /* (cannot happen: stacks only grow) */
        }
    }
    s->nnstacks = 0;
    int oom = 0;
    for (uint32_t id = 0; id < nlive && !oom; id++) {
        if (id != 0 && map[id] != NEEDED) {
            continue;
        }
        uintptr_t buf[HT_NSTACK_MAX];
        int k = ht_nstack_get(id, buf);
        if (ht_grow((void **)&ips, &cap_ips, nips + (size_t)k + 1, sizeof(uintptr_t)) < 0
            || ht_grow((void **)&s->ns_off, &cap_off, (size_t)s->nnstacks + 2,
                    sizeof(uint32_t)) < 0) {
            oom = 1;
            break;
        }
        if (k > 0) {
            memcpy(ips + nips, buf, (size_t)k * sizeof(uintptr_t));
        }
        s->ns_off[0] = 0;
        nips += (size_t)k;
        map[id] = s->nnstacks++;
        s->ns_off[s->nnstacks] = (uint32_t)nips;
    }
    pthread_mutex_unlock(&ht_raw_lock);
    if (!oom && s->nnstacks == 0) {
        /* (No stack table at all: every trace gets the empty stack.) */
        if (ht_grow((void **)&s->ns_off, &cap_off, 2, sizeof(uint32_t)) < 0) {
            oom = 1;
        }
        else {
            s->ns_off[0] = s->ns_off[1] = 0;
            s->nnstacks = 1;
        }
    }
    if (oom) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        s->tr_nstack[i] = map[s->tr_nstack[i]];
    }
    /* Distinct addresses. */
    ip_sym = ht_malloc((nips ? nips : 1) * sizeof(uint32_t));
    if (ip_sym == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t k = 0; k < nips; k++) {
        uint32_t found;
        if (ht_u64map_get(&seen, ips[k], &found)) {
            ip_sym[k] = found;
            continue;
        }
        if (ht_grow((void **)&sym, &cap_sym, nsym + 1, sizeof(sym_t)) < 0
            || ht_u64map_put(&seen, ips[k], (uint32_t)nsym) != 0) {
            PyErr_NoMemory();
            goto done;
        }
        memset(&sym[nsym], 0, sizeof(sym_t));
        sym[nsym].ip = ips[k];
        ip_sym[k] = (uint32_t)nsym++;
    }
    Py_BEGIN_ALLOW_THREADS
    symbolize(sym, nsym);
    Py_END_ALLOW_THREADS
    /* Native frames: one per distinct address (two addresses of the same
     * place stay two frames; they differ by offset). */
    s->nnframes = (uint32_t)nsym;
    if (nsym > 0) {
        s->nf_func = ht_malloc(nsym * sizeof(uint32_t));
        s->nf_lib = ht_malloc(nsym * sizeof(uint32_t));
        s->nf_off = ht_malloc(nsym * sizeof(uint64_t));
        if (s->nf_func == NULL || s->nf_lib == NULL || s->nf_off == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (size_t i = 0; i < nsym; i++) {
        uint32_t id;
        if (cstring_id(b, sym[i].lib != NULL ? sym[i].lib : "<unknown>",
                       sym[i].lib != NULL, &id) < 0) {
            goto done;
        }
        s->nf_lib[i] = id;
        s->nf_func[i] = 0;
        if (sym[i].func != NULL) {
            if (cstring_id(b, sym[i].func, 0, &id) < 0) {
                goto done;
            }
            s->nf_func[i] = id + 1;
        }
        s->nf_off[i] = sym[i].off;
    }
    if (ht_grow((void **)&s->ns_frames, &cap_frames, nips + 1, sizeof(uint32_t)) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(s->ns_frames, ip_sym, nips * sizeof(uint32_t));
    rc = 0;

done:
    for (size_t i = 0; i < nsym; i++) {
        free(sym[i].func);
        free(sym[i].lib);
    }
    free(sym);
    free(map);
    free(ips);
    free(ip_sym);
    ht_u64map_free(&seen);
    return rc;
}

static int take(ht_snap *out);

int
ht_snapshot_take(ht_snap *out)
{
    memset(out, 0, sizeof(*out));
    /* Resolving tracebacks makes a tuple per distinct frame; automatic
     * collections triggered by them would traverse every young object over
     * and over.  Nothing made here can form a cycle. */
    int gc_was_on = PyGC_Disable();
    int rc = take(out);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return rc;
}

static int
take(ht_snap *out)
{
    uint64_t generation = ht_tracer_generation();
    ht_export traces;
    if (ht_tracer_export(&traces) < 0) {
        return -1;
    }
    size_t n = traces.n;
    builder b;
    memset(&b, 0, sizeof(b));
    b.s = out;
    /* Live traceback id -> canonical id, by direct index: GIL ids and
     * detached ids are both dense from 0.  Every id in the export is below
     * the counts read after it (the tables only grow until cleared, and a
     * clear is detected through the generation). */
    uint32_t ngil, ndet;
    ht_intern_counts(&ngil, &ndet);
    uint32_t *map_gil = ht_malloc(((size_t)ngil + 1) * sizeof(uint32_t));
    uint32_t *map_det = ht_malloc(((size_t)ndet + 1) * sizeof(uint32_t));
    b.strings = PyDict_New();
    out->traceback_limit = ht_tracer_nframe();
    out->sampling_interval = ht_tracer_sampling_interval();
    /* The export's columns become the snapshot's: domains and sizes as
     * they are, traceback ids rewritten in place to canonical ones. */
    out->ntraces = n;
    out->tr_domain = traces.domain;
    out->tr_size = traces.size;
    out->tr_tb = traces.tb;
    out->tr_nstack = traces.nstack;
    traces.domain = NULL;
    traces.size = NULL;
    traces.tb = NULL;
    traces.nstack = NULL;
    out->str_off = ht_calloc(1, sizeof(uint64_t));
    out->tb_off = ht_calloc(1, sizeof(uint32_t));
    b.cap_stroff = b.cap_tboff = 1;
    if (b.strings == NULL) {
        goto error;
    }
    if (out->tr_domain == NULL || out->tr_size == NULL || out->tr_tb == NULL
        || out->str_off == NULL || out->tb_off == NULL
        || map_gil == NULL || map_det == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    /* Three passes, so that the interning tables are read in the order
     * they are laid out rather than in the traces' (address) order: mark
     * the live ids in use, resolve them in id order, rewrite the traces. */
    memset(map_gil, 0xFF, ((size_t)ngil + 1) * sizeof(uint32_t));
    memset(map_det, 0xFF, ((size_t)ndet + 1) * sizeof(uint32_t));
    for (size_t i = 0; i < n; i++) {
        uint32_t live = out->tr_tb[i];
        uint32_t index = live & ~HT_TB_DETACHED;
        if (index >= ((live & HT_TB_DETACHED) ? ndet : ngil)) {
            PyErr_SetString(PyExc_SystemError, "heaptrace: traceback id out of range");
            goto error;
        }
        ((live & HT_TB_DETACHED) ? map_det : map_gil)[index] = NEEDED;
    }
    for (uint32_t id = 0; id < ngil; id++) {
        if (map_gil[id] == NEEDED && resolve(&b, id, generation, &map_gil[id]) < 0) {
            goto error;
        }
    }
    for (uint32_t id = 0; id < ndet; id++) {
        if (map_det[id] == NEEDED
            && resolve(&b, id | HT_TB_DETACHED, generation, &map_det[id]) < 0) {
            goto error;
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t live = out->tr_tb[i];
        uint32_t index = live & ~HT_TB_DETACHED;
        out->tr_tb[i] = ((live & HT_TB_DETACHED) ? map_det : map_gil)[index];
    }
    if (out->tr_nstack != NULL) {
        if (ht_tracer_generation() != generation) {
            PyErr_SetString(PyExc_RuntimeError,
                            "the traces were cleared while the snapshot was taken");
            goto error;
        }
        if (build_native(&b) < 0) {
            goto error;
        }
    }
    int rc = 0;
    goto done;

error:
    rc = -1;
    ht_snap_free(out);
done:
    free(map_gil);
    free(map_det);
    ht_u64map_free(&b.frames);
    ht_u64map_free(&b.tbs);
    free(b.tb_next);
    free(b.frame_buf);
    free(b.loc_frame);
    free(b.keys);
    Py_XDECREF(b.strings);
    return rc;
}
