/* pytrack.c: PyTraceMalloc_Track / PyTraceMalloc_Untrack redirected to
 * heaptrace (see pytrack.h).
 *
 * The hooks behave as CPython's own functions (3.11 to 3.13): track
 * returns -2 when not tracing and otherwise takes the GIL with
 * PyGILState_Ensure to capture the caller's traceback; untrack never takes
 * the GIL.  They are called from any thread, with or without the GIL.
 */
#include "pytrack.h"
#include "got.h"
#include "tracer.h"

/* The real functions: written by ht_got_install under its lock, before any
 * slot points to the hooks, always with the same value (dlsym's answer),
 * so a hook may read them at any time. */
static int (*real_track)(unsigned int, uintptr_t, size_t);
static int (*real_untrack)(unsigned int, uintptr_t);

static int
hook_track(unsigned int domain, uintptr_t ptr, size_t size)
{
    if (!ht_tracer_is_tracing()) {
        return real_track != NULL ? real_track(domain, ptr, size) : -2;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = ht_tracer_track(domain, ptr, size);
    PyGILState_Release(gil);
    return rc;
}

static int
hook_untrack(unsigned int domain, uintptr_t ptr)
{
    if (!ht_tracer_is_tracing()) {
        return real_untrack != NULL ? real_untrack(domain, ptr) : -2;
    }
    return ht_tracer_untrack(domain, ptr);
}

static ht_got_hook hooks[] = {
    {"PyTraceMalloc_Track", (void *)hook_track, (void **)&real_track},
    {"PyTraceMalloc_Untrack", (void *)hook_untrack, (void **)&real_untrack},
};
/* heaptrace's own extension is left alone: an address inside it. */
static const void *const skip[] = {(const void *)hooks};
/* Guarded by got.c's lock once installed; installed and uninstalled with
 * the GIL held. */
static ht_got_set set = HT_GOT_SET_INIT(hooks, 2, skip, 1);

int
ht_pytrack_install(void)
{
    if (ht_got_init_once() < 0) {
        snprintf(set.error, sizeof(set.error), "heaptrace: pthread_atfork failed");
        return -1;
    }
    return ht_got_install(&set) < 0 ? -1 : 0;
}

void
ht_pytrack_uninstall(void)
{
    (void)ht_got_uninstall(&set);
}

PyObject *
ht_py_pytrack_status(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(unused))
{
    char err[sizeof(set.error)];
    size_t n = ht_got_status(&set, err, sizeof(err));
    if (err[0] == 0) {
        return Py_BuildValue("(nO)", (Py_ssize_t)n, Py_None);
    }
    return Py_BuildValue("(ns)", (Py_ssize_t)n, err);
}
