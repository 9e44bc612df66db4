/* pickscan.c: the check a snapshot pickle passes before it is unpickled
 * (see pickscan.h).
 *
 * The scanner walks the opcodes once, keeping only a tag per value on the
 * unpickler's stack, per mark and per memo entry, so it runs in time and
 * memory linear in the pickle and never builds an object.
 */
#include "pickscan.h"

#include <stdarg.h>
#include <string.h>

#include "analysis.h"

/* SnapshotFormatError, set once by ht_pickscan_init during module init (GIL
 * held); read-only afterwards.  A borrowed reference: the module keeps the
 * type alive. */
static PyObject *pk_error_type;

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

/* Filled once by ht_pickscan_init during module init (GIL held); read-only
 * afterwards. */
static pk_op pk_table[256];

void
ht_pickscan_init(PyObject *error_type)
{
    pk_error_type = error_type;
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

/* Raise the scanner's error type (SnapshotFormatError) with msg with the status attribute; msg may hold
 * bytes of the pickle that are not UTF-8 (shown backslash-escaped).
 * Returns -1. */
static int
pk_raise(const char *status, const char *msg)
{
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (text == NULL) {
        return -1;
    }
    PyObject *exc = PyObject_CallOneArg(pk_error_type, text);
    Py_DECREF(text);
    if (exc == NULL) {
        return -1;
    }
    PyObject *name = PyUnicode_FromString(status);
    if (name != NULL && PyObject_SetAttrString(exc, "status", name) == 0) {
        PyErr_SetObject(pk_error_type, exc);
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
 * be unpickled, -1 with pk_error_type (or MemoryError) set if not.
 * See check_pickle_doc. */
static int pk_scan_impl(const unsigned char *p, size_t n, pk_state *st);

int
ht_pickscan(const unsigned char *p, size_t n)
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

