/* slots.c: where a Python class keeps a __slots__ attribute.
 *
 * snapobj.c builds Statistic, StatisticDiff and Traceback objects in C by
 * filling their slots directly; the offsets come from the classes' slot
 * descriptors.  Reading a descriptor's PyMemberDef needs structmember.h,
 * whose short macro names (T_INT, T_BOOL, ...) would clash with other code,
 * so it is included here alone.
 */
#include "compat.h"
#include "structmember.h"

#include "slots.h"

int
ht_compat_slot_offset(PyObject *descr, Py_ssize_t *offset)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
        return -1;
    }
    *offset = m->offset;
    return 0;
}
