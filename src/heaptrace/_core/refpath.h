/* refpath.h: the object graph as leak hunting needs it.
 *
 * Two questions, both answered from the live objects the collector knows
 * (gc.get_objects()) and everything they refer to (tp_traverse), never from
 * an arbitrary address:
 *   - which live objects were allocated where a leak grows, and which chain
 *     of references leads from a root (a module, a class, a thread's frame)
 *     to one of them (_held_by);
 *   - which blocks belong to an object (a dict's key table, a list's item
 *     array, a set's table, a bytearray's buffer), so that a leak verdict
 *     can count them with that object (_owned_blocks).
 * Reference tracing (3.13 and newer): objects handed out again from a free
 * list are re-traced to the line that reused them (_set_retrace).
 */
#ifndef HT_REFPATH_H
#define HT_REFPATH_H

#include "compat.h"

/* Add _held_by, _owned_blocks, _set_retrace and RETRACE_AVAILABLE to the
 * module.  0, or -1 with an exception set (the module is then unusable, and
 * its import fails). */
int ht_refpath_register(PyObject *module);

#endif /* HT_REFPATH_H */
