/* slots.h: offsets of __slots__ attributes (see slots.c). */
#ifndef HT_SLOTS_H
#define HT_SLOTS_H

#include "compat.h"

/* If descr is the descriptor of a writable object slot (__slots__ entry),
 * store its offset in the instance and return 0; otherwise return -1 (no
 * exception set). */
int ht_compat_slot_offset(PyObject *descr, Py_ssize_t *offset);

#endif /* HT_SLOTS_H */
