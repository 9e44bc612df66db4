/* snapbuild.h: a snapshot of the live traces, as an ht_snap. */
#ifndef HT_SNAPBUILD_H
#define HT_SNAPBUILD_H

#include "compat.h"
#include "snapshot.h"

/* Fill *out with every live trace (empty if not tracing), its traceback_limit
 * the current one.  GIL held.  Returns 0, or -1 with an exception set
 * (MemoryError, or RuntimeError if a finalizer cleared the traces meanwhile);
 * on failure *out is left empty and owns nothing. */
int ht_snapshot_take(ht_snap *out);

#endif /* HT_SNAPBUILD_H */
