/* pickscan.h: the restricted-pickle scanner of Snapshot.load.
 *
 * A pickle said to hold a tracemalloc snapshot is checked opcode by opcode
 * before Python's unpickler sees it: only protocols 2 to 5, only opcodes
 * that rebuild plain data and the snapshot classes, only the globals
 * tracemalloc.Snapshot/_Traces (or heaptrace's own), every length within
 * the data, a STOP at the end.  What passes cannot make the unpickler call
 * anything or allocate more than a small multiple of the pickle's size.
 */
#ifndef HT_PICKSCAN_H
#define HT_PICKSCAN_H

#include <stddef.h>

#include "compat.h"

/* Fill the opcode table and remember error_type (SnapshotFormatError, which
 * must stay alive) as the exception to raise.  Call once during module init,
 * GIL held, before ht_pickscan.  Never fails. */
void ht_pickscan_init(PyObject *error_type);

/* Check p[0..n).  GIL held.  Returns 0 if it may be unpickled; -1 otherwise
 * with SnapshotFormatError set (its status 'REFUSED', 'TRUNCATED', 'CORRUPT'
 * or 'NOT_A_SNAPSHOT' and a message naming the opcode and byte), or
 * MemoryError. */
int ht_pickscan(const unsigned char *p, size_t n);

#endif /* HT_PICKSCAN_H */
