/* pytrack.h: PyTraceMalloc_Track / PyTraceMalloc_Untrack parity (issue 9.1).
 *
 * Extension modules (NumPy's data buffers, for one) report memory of their
 * own with PyTraceMalloc_Track; those calls go to the standard module.
 * While heaptrace traces, the two functions are redirected in the GOT of
 * every loaded object but heaptrace's own (see got.h), and of every object
 * loaded later (through the dlopen hook of got.c), to heaptrace's track and
 * untrack, so that the blocks land in heaptrace's tables under their
 * domain.  Redirected calls made while heaptrace is not tracing (a thread
 * that read a slot just before stop() put it back) go to the real
 * functions, that is to the standard module.
 */
#ifndef HT_PYTRACK_H
#define HT_PYTRACK_H

#include "compat.h"

/* Redirect the two functions.  GIL held; call after tracing is switched on
 * (ht_tracer_start).  Returns 0, or -1 if the platform cannot redirect
 * calls or a slot could not be written; the tracer goes on without the
 * redirection then (nothing is left patched), and ht_pytrack_status says
 * why.  Calling it again while installed patches new objects only. */
int ht_pytrack_install(void);

/* Put the slots back.  GIL held.  Never fails: a slot that cannot be made
 * writable again keeps pointing to heaptrace, which forwards to the real
 * function once tracing is off. */
void ht_pytrack_uninstall(void);

/* heaptrace._core._pytrack_status(): (slots patched now, last error or
 * None).  GIL held.  NULL with MemoryError if the tuple cannot be built. */
PyObject *ht_py_pytrack_status(PyObject *module, PyObject *unused);

#endif /* HT_PYTRACK_H */
