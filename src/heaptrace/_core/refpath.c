/* refpath.c: the object graph as leak hunting needs it (see refpath.h).
 *
 * A search builds, once, a graph of the live objects: every object that
 * gc.get_objects() returns, plus everything their tp_traverse reaches (so
 * untracked dicts and tuples, strings, bytes and bytearrays come in through
 * the containers that hold them).  No address is ever turned into an object:
 * an object's traced block is found from the object (its address minus its
 * pre-header), never the other way round.
 *
 * The graph lives in memory from libc (alloc.h), bounded by a byte budget,
 * and the build and the search are bounded by a deadline; past either, the
 * search gives up and says so.  The collector is off for the whole call, so
 * no finalizer can run and free an object whose pointer the graph holds
 * without a reference (referents are kept alive by their referrers, which
 * the list from gc.get_objects() keeps alive, and nothing else runs: the
 * call holds the GIL and calls no Python code).
 */
#include "refpath.h"
#include "tracer.h"
#include "intern.h"
#include "alloc.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

#define NO_NODE UINT32_MAX

/* Why a build or search stopped early. */
enum { G_OK = 0, G_MEMORY = 1, G_TIME = 2 };

/* One graph, on the stack of the call that builds it: nothing in it is
 * shared, and the GIL is held throughout. */
typedef struct {
    PyObject **obj;        /* node -> object (borrowed, see the top comment) */
    uint8_t *skip;         /* 1: the search's own containers, never traversed */
    uint32_t n, cap;
    uint32_t *slots;       /* address hash: node + 1, 0 for empty */
    size_t smask;
    int with_edges;
    uint32_t *esrc, *edst; /* edges referrer -> referent, in traversal order */
    size_t ne, ecap;
    uint32_t *rstart;      /* reverse index: referrers of node i are */
    uint32_t *rsrc;        /* rsrc[rstart[i] .. rstart[i + 1]) */
    uint32_t current;      /* node being traversed */
    size_t bytes, max_bytes;
    double deadline;
    int status;
} graph;

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Account for more bytes; -1 (status set) when over the budget. */
static int
charge(graph *g, size_t more)
{
    if (more > g->max_bytes - g->bytes) {
        g->status = G_MEMORY;
        return -1;
    }
    g->bytes += more;
    return 0;
}

/* Grow *p to hold newcap elements of elem bytes (oldcap now); -1 on
 * failure, *p untouched. */
static int
grow(graph *g, void **p, size_t elem, size_t oldcap, size_t newcap)
{
    if (charge(g, (newcap - oldcap) * elem) < 0) {
        return -1;
    }
    void *q = ht_realloc(*p, newcap * elem);
    if (q == NULL) {
        g->status = G_MEMORY;
        return -1;
    }
    *p = q;
    return 0;
}

static size_t
hash_ptr(const void *p)
{
    uint64_t x = (uint64_t)((uintptr_t)p >> 4);
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x ^ (x >> 31));
}

static uint32_t
node_find(const graph *g, PyObject *o)
{
    if (g->slots == NULL) {
        return NO_NODE;
    }
    size_t i = hash_ptr(o) & g->smask;
    while (g->slots[i] != 0) {
        uint32_t node = g->slots[i] - 1;
        if (g->obj[node] == o) {
            return node;
        }
        i = (i + 1) & g->smask;
    }
    return NO_NODE;
}

/* Make the address hash twice as big (or create it). */
static int
rehash(graph *g)
{
    size_t cap = g->slots == NULL ? 1024 : 2 * (g->smask + 1);
    if (charge(g, cap * sizeof(uint32_t)) < 0) {
        return -1;
    }
    uint32_t *slots = ht_calloc(cap, sizeof(uint32_t));
    if (slots == NULL) {
        g->status = G_MEMORY;
        return -1;
    }
    if (g->slots != NULL) {
        g->bytes -= (g->smask + 1) * sizeof(uint32_t);
        free(g->slots);
    }
    g->slots = slots;
    g->smask = cap - 1;
    for (uint32_t node = 0; node < g->n; node++) {
        size_t i = hash_ptr(g->obj[node]) & g->smask;
        while (slots[i] != 0) {
            i = (i + 1) & g->smask;
        }
        slots[i] = node + 1;
    }
    return 0;
}

/* The node of o, added if new.  NO_NODE (status set) when out of room. */
static uint32_t
node_add(graph *g, PyObject *o, int skip)
{
    uint32_t found = node_find(g, o);
    if (found != NO_NODE) {
        return found;
    }
    if (g->n >= NO_NODE - 1) {
        g->status = G_MEMORY;
        return NO_NODE;
    }
    if (g->slots == NULL || (size_t)(g->n + 1) * 2 > g->smask + 1) {
        if (rehash(g) < 0) {
            return NO_NODE;
        }
    }
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? (g->cap > NO_NODE / 2 ? NO_NODE - 1 : g->cap * 2) : 1024;
        if (grow(g, (void **)&g->obj, sizeof(PyObject *), g->cap, cap) < 0
            || grow(g, (void **)&g->skip, 1, g->cap, cap) < 0) {
            return NO_NODE;
        }
        g->cap = cap;
    }
    uint32_t node = g->n++;
    g->obj[node] = o;
    g->skip[node] = (uint8_t)skip;
    size_t i = hash_ptr(o) & g->smask;
    while (g->slots[i] != 0) {
        i = (i + 1) & g->smask;
    }
    g->slots[i] = node + 1;
    return node;
}

static int
visit(PyObject *o, void *arg)
{
    graph *g = arg;
    uint32_t node = node_add(g, o, 0);
    if (node == NO_NODE) {
        return -1;
    }
    if (!g->with_edges) {
        return 0;
    }
    if (g->ne == g->ecap) {
        size_t cap = g->ecap ? 2 * g->ecap : 4096;
        if (grow(g, (void **)&g->esrc, sizeof(uint32_t), g->ecap, cap) < 0
            || grow(g, (void **)&g->edst, sizeof(uint32_t), g->ecap, cap) < 0) {
            return -1;
        }
        g->ecap = cap;
    }
    g->esrc[g->ne] = g->current;
    g->edst[g->ne] = node;
    g->ne++;
    return 0;
}

static void
graph_free(graph *g)
{
    free(g->obj);
    free(g->skip);
    free(g->slots);
    free(g->esrc);
    free(g->edst);
    free(g->rstart);
    free(g->rsrc);
    memset(g, 0, sizeof(*g));
}

/* Nodes (and edges, if asked) of everything reachable from the objects of
 * gclist; the objects of skip are nodes that are never traversed.  0, or -1
 * with g->status saying why it stopped (the graph is then partial). */
static int
graph_build(graph *g, PyObject *gclist, PyObject *const *skip, Py_ssize_t nskip)
{
    Py_ssize_t count = PyList_GET_SIZE(gclist);
    if (node_add(g, gclist, 1) == NO_NODE) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < nskip; i++) {
        uint32_t node = node_add(g, skip[i], 1);
        if (node == NO_NODE) {
            return -1;
        }
        g->skip[node] = 1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        if (node_add(g, PyList_GET_ITEM(gclist, i), 0) == NO_NODE) {
            return -1;
        }
    }
    for (uint32_t node = 0; node < g->n; node++) {
        if ((node & 1023) == 0 && now() > g->deadline) {
            g->status = G_TIME;
            return -1;
        }
        PyObject *o = g->obj[node];
        if (g->skip[node] || !PyObject_IS_GC(o)) {
            continue;
        }
        traverseproc traverse = Py_TYPE(o)->tp_traverse;
        if (traverse == NULL) {
            continue;
        }
        g->current = node;
        if (traverse(o, visit, g) != 0 && g->status != G_OK) {
            return -1;
        }
    }
    return 0;
}

/* The reverse index: who refers to each node.  Frees the edge list. */
static int
graph_reverse(graph *g)
{
    size_t n = (size_t)g->n + 1;
    if (charge(g, n * sizeof(uint32_t) + g->ne * sizeof(uint32_t)) < 0) {
        return -1;
    }
    g->rstart = ht_calloc(n, sizeof(uint32_t));
    g->rsrc = ht_malloc((g->ne ? g->ne : 1) * sizeof(uint32_t));
    if (g->rstart == NULL || g->rsrc == NULL) {
        g->status = G_MEMORY;
        return -1;
    }
    for (size_t e = 0; e < g->ne; e++) {
        g->rstart[g->edst[e] + 1]++;
    }
    for (size_t i = 1; i < n; i++) {
        g->rstart[i] += g->rstart[i - 1];
    }
    /* Fill using edst as the cursor array's storage is not possible (it is
     * read); walk the edges and place each at the next free spot of its
     * referent, tracked in a temporary copy of the starts. */
    uint32_t *cursor = ht_malloc(n * sizeof(uint32_t));
    if (cursor == NULL) {
        g->status = G_MEMORY;
        return -1;
    }
    memcpy(cursor, g->rstart, n * sizeof(uint32_t));
    for (size_t e = 0; e < g->ne; e++) {
        g->rsrc[cursor[g->edst[e]]++] = g->esrc[e];
    }
    free(cursor);
    free(g->esrc);
    free(g->edst);
    g->esrc = g->edst = NULL;
    return 0;
}

/* ---- where a node's memory was allocated ---------------------------------- */

/* The block an object owns besides its own (the table or array its items
 * live in), if it is of one of the kinds asked for, else NULL. */
enum { OWN_DICT = 1, OWN_LIST = 2, OWN_SET = 4, OWN_BYTEARRAY = 8 };

static void *
owned_block(PyObject *o, int kinds)
{
    if ((kinds & OWN_DICT) && PyDict_Check(o)) {
        PyDictObject *d = (PyDictObject *)o;
        /* Shared keys (split tables) belong to the class, not this dict. */
        return d->ma_values == NULL ? (void *)d->ma_keys : NULL;
    }
    if ((kinds & OWN_LIST) && PyList_Check(o)) {
        return ((PyListObject *)o)->ob_item;
    }
    if ((kinds & OWN_SET) && PyAnySet_Check(o)) {
        PySetObject *s = (PySetObject *)o;
        return s->table != s->smalltable ? (void *)s->table : NULL;
    }
    if ((kinds & OWN_BYTEARRAY) && PyByteArray_Check(o)) {
        PyByteArrayObject *b = (PyByteArrayObject *)o;
        return b->ob_alloc > 0 ? (void *)b->ob_bytes : NULL;
    }
    return NULL;
}

static uintptr_t
block_of(PyObject *o)
{
    return (uintptr_t)o - ht_compat_preheader_size(Py_TYPE(o));
}

/* Traceback id -> site index, cached: the first prefix of the traceback's
 * frames that is a key of the sites dict.  On the stack of one call. */
typedef struct {
    uint32_t *keys;        /* tb + 1, 0 for empty */
    int32_t *values;
    size_t mask, used;
    PyObject *sites;
} site_cache;

static int32_t
site_lookup(PyObject *sites, uint32_t tb)
{
    PyObject *frames = ht_intern_frames(tb);
    if (frames == NULL) {
        PyErr_Clear();
        return -1;
    }
    int32_t site = -1;
    Py_ssize_t n = PyTuple_GET_SIZE(frames);
    for (Py_ssize_t k = 1; k <= n && site < 0; k++) {
        PyObject *prefix = PyTuple_GetSlice(frames, 0, k);
        if (prefix == NULL) {
            PyErr_Clear();
            break;
        }
        PyObject *value = PyDict_GetItemWithError(sites, prefix);
        Py_DECREF(prefix);
        if (value != NULL) {
            long v = PyLong_AsLong(value);
            site = (v >= 0 && v < INT32_MAX) ? (int32_t)v : -1;
        }
        if (PyErr_Occurred()) {
            PyErr_Clear();
        }
    }
    Py_DECREF(frames);
    return site;
}

static int32_t
site_of(site_cache *c, uint32_t tb)
{
    size_t i = (tb * 2654435761u) & c->mask;
    while (c->keys[i] != 0) {
        if (c->keys[i] == tb + 1) {
            return c->values[i];
        }
        i = (i + 1) & c->mask;
    }
    int32_t site = site_lookup(c->sites, tb);
    if ((c->used + 1) * 2 > c->mask + 1) {
        return site;    /* full enough: answer without caching */
    }
    c->keys[i] = tb + 1;
    c->values[i] = site;
    c->used++;
    return site;
}

/* ---- _held_by ------------------------------------------------------------------ */

static PyObject *
gc_objects(void)
{
    PyObject *gc = PyImport_ImportModule("gc");
    if (gc == NULL) {
        return NULL;
    }
    PyObject *list = PyObject_CallMethod(gc, "get_objects", NULL);
    Py_DECREF(gc);
    if (list != NULL && !PyList_CheckExact(list)) {
        Py_DECREF(list);
        PyErr_SetString(PyExc_TypeError, "gc.get_objects() did not return a list");
        return NULL;
    }
    return list;
}

/* The path from root node r to the target it was reached from: a new list,
 * root first. */
static PyObject *
path_list(const graph *g, const uint32_t *parent, uint32_t r)
{
    PyObject *path = PyList_New(0);
    for (uint32_t node = r; path != NULL && node != NO_NODE; node = parent[node]) {
        if (PyList_Append(path, g->obj[node]) < 0) {
            Py_CLEAR(path);
        }
    }
    return path;
}

/* Multi-source search backwards from the targets of one site to the nearest
 * root.  Returns the root's node and fills parent, or NO_NODE. */
static uint32_t
search_back(graph *g, const uint32_t *targets, size_t ntargets, const int32_t *root_of,
            uint32_t *stamp, uint32_t mark, uint32_t *parent, uint32_t *queue)
{
    size_t head = 0, tail = 0;
    for (size_t t = 0; t < ntargets; t++) {
        uint32_t node = targets[t];
        if (stamp[node] != mark) {
            stamp[node] = mark;
            parent[node] = NO_NODE;
            queue[tail++] = node;
        }
    }
    while (head < tail) {
        if ((head & 4095) == 0 && now() > g->deadline) {
            g->status = G_TIME;
            return NO_NODE;
        }
        uint32_t node = queue[head++];
        if (root_of[node] >= 0) {
            return node;
        }
        for (uint32_t e = g->rstart[node]; e < g->rstart[node + 1]; e++) {
            uint32_t from = g->rsrc[e];
            if (g->skip[from] || stamp[from] == mark) {
                continue;
            }
            stamp[from] = mark;
            parent[from] = node;
            queue[tail++] = from;
        }
    }
    return NO_NODE;
}

PyDoc_STRVAR(held_by_doc,
"_held_by($module, sites, nsites, roots, exclude, seconds, max_bytes, max_targets, /)\n--\n\n"
"For each site, a chain of references from a root to a live object allocated there.\n\n"
"sites maps traceback prefixes (tuples of (filename, lineno), most recent\n"
"first) to a site index below nsites; an object belongs to a site when the\n"
"traceback of its block (or of the table or buffer it owns) starts with such\n"
"a prefix.  roots is a list of objects; exclude a tuple of objects never\n"
"followed (the caller's own containers).  Returns a dict: 'paths' (per site,\n"
"None or (root index, [objects, root first])), 'targets' (live objects found\n"
"per site), 'complete' (False if the time or memory budget ran out),\n"
"'nodes' and 'edges'.");

static PyObject *
ht_py_held_by(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "_held_by expected 7 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *sites = args[0], *roots = args[2], *exclude = args[3];
    if (!PyDict_Check(sites) || !PyList_Check(roots) || !PyTuple_Check(exclude)) {
        PyErr_SetString(PyExc_TypeError, "_held_by expects a dict, an int, a list and a tuple");
        return NULL;
    }
    Py_ssize_t nsites = PyLong_AsSsize_t(args[1]);
    double seconds = PyFloat_AsDouble(args[4]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[5]);
    Py_ssize_t max_targets = PyLong_AsSsize_t(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (nsites < 0 || nsites > 100000 || max_bytes <= 0 || max_targets < 1
        || max_targets > 100000) {
        PyErr_SetString(PyExc_ValueError, "_held_by: argument out of range");
        return NULL;
    }
    double t0 = now();
    int gc_was_on = PyGC_Disable();
    PyObject *gclist = gc_objects();
    if (gclist == NULL) {
        if (gc_was_on) {
            PyGC_Enable();
        }
        return NULL;
    }

    graph g;
    memset(&g, 0, sizeof(g));
    g.with_edges = 1;
    g.max_bytes = (size_t)max_bytes;
    g.deadline = t0 + seconds;

    PyObject *result = NULL, *paths = NULL, *found = NULL;
    uint32_t *targets = NULL, *holders = NULL, *stamp = NULL, *parent = NULL, *queue = NULL;
    size_t *ntargets = NULL, *nholders = NULL;
    int32_t *root_of = NULL;
    site_cache cache = {NULL, NULL, 0, 0, sites};

    PyObject *skip[3] = {roots, exclude, sites};
    if (graph_build(&g, gclist, skip, 3) == 0) {
        (void)graph_reverse(&g);
    }
    paths = PyList_New(nsites);
    found = PyList_New(nsites);
    if (paths == NULL || found == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < nsites; i++) {
        PyList_SET_ITEM(paths, i, Py_NewRef(Py_None));
        PyList_SET_ITEM(found, i, PyLong_FromLong(0));
        if (PyList_GET_ITEM(found, i) == NULL) {
            goto done;
        }
    }
    if (g.status == G_OK && nsites > 0 && ht_tracer_is_tracing()) {
        size_t cache_cap = 1u << 16;
        targets = ht_malloc((size_t)nsites * (size_t)max_targets * sizeof(uint32_t));
        ntargets = ht_calloc((size_t)nsites, sizeof(size_t));
        holders = ht_malloc((size_t)nsites * (size_t)max_targets * sizeof(uint32_t));
        nholders = ht_calloc((size_t)nsites, sizeof(size_t));
        root_of = ht_malloc((size_t)g.n * sizeof(int32_t));
        stamp = ht_calloc((size_t)g.n, sizeof(uint32_t));
        parent = ht_malloc((size_t)g.n * sizeof(uint32_t));
        queue = ht_malloc((size_t)g.n * sizeof(uint32_t));
        cache.keys = ht_calloc(cache_cap, sizeof(uint32_t));
        cache.values = ht_malloc(cache_cap * sizeof(int32_t));
        cache.mask = cache_cap - 1;
        if (targets == NULL || ntargets == NULL || holders == NULL || nholders == NULL
            || root_of == NULL || stamp == NULL
            || parent == NULL || queue == NULL || cache.keys == NULL || cache.values == NULL
            || charge(&g, (size_t)g.n * 16) < 0) {
            g.status = G_MEMORY;
        }
    }
    if (g.status == G_OK && targets != NULL) {
        /* The live objects of each site, up to max_targets each. */
        for (uint32_t node = 0; node < g.n; node++) {
            PyObject *o = g.obj[node];
            if (g.skip[node]) {
                continue;
            }
            size_t size;
            uint32_t tb;
            int32_t site = -1;
            if (ht_tracer_get_gil(block_of(o), &size, &tb)) {
                site = site_of(&cache, tb);
            }
            if (site >= 0 && site < nsites && ntargets[site] < (size_t)max_targets) {
                targets[(size_t)site * (size_t)max_targets + ntargets[site]++] = node;
                continue;
            }
            /* An object whose table grew there (a list appended to, a dict
             * filled): a holder, used only for a site with no object of
             * its own. */
            void *own = owned_block(o, OWN_DICT | OWN_LIST | OWN_SET | OWN_BYTEARRAY);
            if (own != NULL && ht_tracer_get_gil((uintptr_t)own, &size, &tb)) {
                site = site_of(&cache, tb);
                if (site >= 0 && site < nsites && nholders[site] < (size_t)max_targets) {
                    holders[(size_t)site * (size_t)max_targets + nholders[site]++] = node;
                }
            }
        }
        for (Py_ssize_t site = 0; site < nsites; site++) {
            if (ntargets[site] == 0 && nholders[site] > 0) {
                size_t base = (size_t)site * (size_t)max_targets;
                memcpy(targets + base, holders + base, nholders[site] * sizeof(uint32_t));
                ntargets[site] = nholders[site];
            }
        }
        for (uint32_t node = 0; node < g.n; node++) {
            root_of[node] = -1;
        }
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(roots); i++) {
            uint32_t node = node_find(&g, PyList_GET_ITEM(roots, i));
            if (node != NO_NODE && root_of[node] < 0) {
                root_of[node] = (int32_t)i;
            }
        }
        for (Py_ssize_t site = 0; site < nsites && g.status == G_OK; site++) {
            size_t nt = ntargets[site];
            PyObject *count = PyLong_FromSize_t(nt);
            if (count == NULL) {
                goto done;
            }
            Py_SETREF(PyList_GET_ITEM(found, site), count);
            if (nt == 0) {
                continue;
            }
            uint32_t r = search_back(&g, targets + (size_t)site * (size_t)max_targets, nt,
                                     root_of, stamp, (uint32_t)site + 1, parent, queue);
            if (r == NO_NODE) {
                continue;
            }
            PyObject *path = path_list(&g, parent, r);
            PyObject *entry = path ? Py_BuildValue("(iN)", root_of[r], path) : NULL;
            if (entry == NULL) {
                goto done;
            }
            Py_SETREF(PyList_GET_ITEM(paths, site), entry);
        }
    }
    result = Py_BuildValue("{sOsOsOsnsnsd}", "paths", paths, "targets", found,
                           "complete", g.status == G_OK ? Py_True : Py_False,
                           "nodes", (Py_ssize_t)g.n, "edges", (Py_ssize_t)g.ne,
                           "seconds", now() - t0);
done:
    free(targets);
    free(ntargets);
    free(holders);
    free(nholders);
    free(root_of);
    free(stamp);
    free(parent);
    free(queue);
    free(cache.keys);
    free(cache.values);
    graph_free(&g);
    Py_XDECREF(paths);
    Py_XDECREF(found);
    Py_DECREF(gclist);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return result;
}

/* ---- _owned_blocks ---------------------------------------------------------- */

/* (owned block's tb, owner's tb) -> bytes and blocks, on the stack of one
 * call. */
typedef struct {
    uint64_t key;          /* owned << 32 | owner, plus 1; 0 for empty */
    uint64_t size, count;
} pair_slot;

PyDoc_STRVAR(owned_blocks_doc,
"_owned_blocks($module, kinds, seconds, max_bytes, /)\n--\n\n"
"Blocks that belong to a live object but were allocated elsewhere.\n\n"
"kinds: 1 dict key tables, 2 list item arrays, 4 set tables, 8 bytearray\n"
"buffers (or them together).  Returns a list of (frames of the owned\n"
"blocks, frames of their owner, bytes, blocks), or None if the time or\n"
"memory budget ran out.");

static PyObject *
ht_py_owned_blocks(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "_owned_blocks expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    long kinds = PyLong_AsLong(args[0]);
    double seconds = PyFloat_AsDouble(args[1]);
    Py_ssize_t max_bytes = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (max_bytes <= 0) {
        PyErr_SetString(PyExc_ValueError, "_owned_blocks: max_bytes must be positive");
        return NULL;
    }
    if (!ht_tracer_is_tracing()) {
        return PyList_New(0);
    }
    double t0 = now();
    int gc_was_on = PyGC_Disable();
    PyObject *gclist = gc_objects();
    if (gclist == NULL) {
        if (gc_was_on) {
            PyGC_Enable();
        }
        return NULL;
    }
    graph g;
    memset(&g, 0, sizeof(g));
    g.max_bytes = (size_t)max_bytes;
    g.deadline = t0 + seconds;
    PyObject *result = NULL;
    size_t cap = 1u << 12, used = 0;
    pair_slot *pairs = NULL;
    if (graph_build(&g, gclist, NULL, 0) < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    pairs = ht_calloc(cap, sizeof(pair_slot));
    if (pairs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (uint32_t node = 0; node < g.n; node++) {
        PyObject *o = g.obj[node];
        void *own = g.skip[node] ? NULL : owned_block(o, (int)kinds);
        size_t osize, bsize;
        uint32_t otb, btb;
        if (own == NULL || !ht_tracer_get_gil((uintptr_t)own, &bsize, &btb)
            || !ht_tracer_get_gil(block_of(o), &osize, &otb) || otb == btb) {
            continue;
        }
        uint64_t key = (((uint64_t)btb << 32) | otb) + 1;
        size_t i = (size_t)(key * 0x9E3779B97F4A7C15ull >> 20) & (cap - 1);
        while (pairs[i].key != 0 && pairs[i].key != key) {
            i = (i + 1) & (cap - 1);
        }
        if (pairs[i].key == 0) {
            if ((used + 1) * 2 > cap) {
                continue;   /* too many distinct pairs: the rest stay where they are */
            }
            pairs[i].key = key;
            used++;
        }
        pairs[i].size += bsize;
        pairs[i].count++;
    }
    result = PyList_New(0);
    for (size_t i = 0; result != NULL && i < cap; i++) {
        if (pairs[i].key == 0) {
            continue;
        }
        uint64_t key = pairs[i].key - 1;
        PyObject *owned = ht_intern_frames((uint32_t)(key >> 32));
        PyObject *owner = owned ? ht_intern_frames((uint32_t)key) : NULL;
        PyObject *item = owner ? Py_BuildValue("(OOKK)", owned, owner,
                                               (unsigned long long)pairs[i].size,
                                               (unsigned long long)pairs[i].count) : NULL;
        Py_XDECREF(owned);
        Py_XDECREF(owner);
        if (item == NULL || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(item);
    }
done:
    free(pairs);
    graph_free(&g);
    Py_DECREF(gclist);
    if (gc_was_on) {
        PyGC_Enable();
    }
    return result;
}

/* ---- reference tracing (3.13 and newer) ------------------------------------------ */

#if PY_VERSION_HEX >= 0x030D0000
#  define HT_RETRACE 1
/* Whether heaptrace's reference tracer is installed, and the tracer it
 * replaced (called in turn, so that another tool keeps working).  GIL. */
static int retrace_on;
static PyRefTracer saved_tracer;
static void *saved_data;

static int
ref_event(PyObject *obj, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE) {
        PyThreadState *ts = ht_compat_gil_tstate();
        if (ts != NULL) {
            ht_tracer_retrace_gil(ts, block_of(obj));
        }
    }
    return saved_tracer != NULL ? saved_tracer(obj, event, saved_data) : 0;
}

static int
set_retrace(int on)
{
    if (on && !retrace_on) {
        saved_tracer = PyRefTracer_GetTracer(&saved_data);
        if (PyRefTracer_SetTracer(ref_event, NULL) < 0) {
            return -1;
        }
        retrace_on = 1;
    }
    else if (!on && retrace_on) {
        void *data;
        if (PyRefTracer_GetTracer(&data) == ref_event
            && PyRefTracer_SetTracer(saved_tracer, saved_data) < 0) {
            return -1;
        }
        saved_tracer = NULL;
        saved_data = NULL;
        retrace_on = 0;
    }
    return 0;
}
#else
#  define HT_RETRACE 0
static int retrace_on;   /* always 0: nothing to install before 3.13 */
static int set_retrace(int on) { (void)on; return 0; }
#endif

PyDoc_STRVAR(set_retrace_doc,
"_set_retrace($module, on, /)\n--\n\n"
"Re-trace objects handed out again from a free list to the code that\n"
"reuses them (3.13 and newer, through the interpreter's reference tracer).\n"
"Returns whether it was on before.  Before 3.13 it stays off: see\n"
"RETRACE_AVAILABLE.");

static PyObject *
ht_py_set_retrace(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) {
        return NULL;
    }
    int was = retrace_on;
    if (set_retrace(on) < 0) {
        return NULL;
    }
    return PyBool_FromLong(was);
}

static PyMethodDef ht_refpath_methods[] = {
    {"_held_by", (PyCFunction)(void (*)(void))ht_py_held_by, METH_FASTCALL, held_by_doc},
    {"_owned_blocks", (PyCFunction)(void (*)(void))ht_py_owned_blocks, METH_FASTCALL,
     owned_blocks_doc},
    {"_set_retrace", ht_py_set_retrace, METH_O, set_retrace_doc},
    {NULL, NULL, 0, NULL}
};

int
ht_refpath_register(PyObject *module)
{
    if (PyModule_AddFunctions(module, ht_refpath_methods) < 0) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "RETRACE_AVAILABLE", HT_RETRACE);
}
