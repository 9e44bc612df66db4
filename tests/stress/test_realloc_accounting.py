"""Regression: a MEM/OBJ block of 128 KiB or more resized in place to
another size of 128 KiB or more.

Found by the thread stress test (pickle.dumps grows its output buffer that
way): the trace table wrote the new size into its side map of big blocks
before reading the old one, so the traced total kept the old size, and the
free later subtracted the new one.  get_traced_memory() drifted away from
the sum of the traces and went negative.
"""
import ctypes
import gc
import pickle

import pytest

import heaptrace

from conftest import traced_sum

BIG = 1 << 17   # sizes from here up are kept in the big-block side map


def mem_functions():
    api = ctypes.pythonapi
    api.PyMem_Malloc.restype = ctypes.c_void_p
    api.PyMem_Malloc.argtypes = [ctypes.c_size_t]
    api.PyMem_Realloc.restype = ctypes.c_void_p
    api.PyMem_Realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    api.PyMem_Free.restype = None
    api.PyMem_Free.argtypes = [ctypes.c_void_p]
    return api.PyMem_Malloc, api.PyMem_Realloc, api.PyMem_Free


@pytest.mark.parametrize("sizes", [
    # shrinking a big block is done in place: always showed the bug
    (3 * BIG, 2 * BIG),
    (5 * BIG, 3 * BIG, 2 * BIG + 1),
    # growing is in place only when the address space after it is free
    (2 * BIG, 3 * BIG),
    (100, 3 * BIG, 5 * BIG),
    (BIG, BIG - 1000),                                          # big to small
    (100, BIG - 1000),                                          # small to small
])
def test_traced_total_follows_a_resized_block(sizes):
    """Each step of the resize is counted with the block's new size, and
    freeing it brings the total back.  Repeated, since only a resize that
    the allocator does in place shows the bug."""
    malloc, realloc, free = mem_functions()
    heaptrace.start(1)
    for _ in range(20):
        before = heaptrace.get_traced_memory()[0]
        p = malloc(sizes[0])
        for size in sizes[1:]:
            p = realloc(p, size)
            grown = heaptrace.get_traced_memory()[0] - before
            # the block counts with its new size (plus a little for ctypes' own objects)
            assert size <= grown < size + 4096, (sizes, size, grown)
            assert [t[1] for t in heaptrace._get_traces() if t[1] == size] == [size]
        free(p)
        after = heaptrace.get_traced_memory()[0] - before
        assert abs(after) < 4096, (sizes, after)


def test_pickle_round_trip_leaves_the_traced_total_consistent():
    """What a user sees: after pickling and unpickling a large structure and
    dropping it, get_traced_memory() agrees with the traces (and is not
    negative)."""
    data = [(i, str(i), (str(i) * 3, i)) for i in range(50000)]
    heaptrace.start(1)
    blob = pickle.dumps(data, pickle.HIGHEST_PROTOCOL)
    again = pickle.loads(blob)
    assert again == data
    del blob, again
    gc.collect()
    current = heaptrace.get_traced_memory()[0]
    assert current >= 0
    assert abs(traced_sum() - current) < 8192
