/* snapobj.h: heaptrace._core.SnapshotData, a Python handle on an ht_snap. */
#ifndef HT_SNAPOBJ_H
#define HT_SNAPOBJ_H

#include "compat.h"
#include "snapshot.h"

/* Add the SnapshotData type and the SnapshotFormatError exception (a
 * ValueError subclass with a `status` attribute, None unless set) to
 * *module.  Returns 0, or -1 with an exception set (the module may then
 * have the type without the exception). */
int ht_snapobj_register(PyObject *module);

/* A new SnapshotData owning *s: on success the object takes every array of
 * *s and *s is zeroed; on failure (NULL with an exception set) *s is
 * freed and zeroed too.  *s must satisfy snapshot.h's invariants. */
PyObject *ht_snapobj_new(ht_snap *s);

#endif /* HT_SNAPOBJ_H */
