"""Stress tests: many threads, forks and long runs against the engine.

Each test does a fixed amount of work (counts, not durations) sized to take
a few seconds, so the suite is bounded in time.  They carry the ``stress``
marker: ``pytest -m stress`` (or ``pytest tests/stress``) runs them alone,
``-m "not stress"`` leaves them out.
"""
import ctypes

import pytest

import heaptrace


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stress: bounded stress test of the engine (threads, fork, long runs)")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/stress/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.stress)


@pytest.fixture(autouse=True)
def stopped():
    """Every test starts and ends with tracing off."""
    heaptrace.stop()
    yield
    heaptrace.stop()


class CFunctions:
    """CPython's allocators called through ctypes.

    ``nogil`` functions come from ctypes.CDLL, which releases the GIL around
    every call: the way a C library allocates through PyMem_RawMalloc from a
    thread that dropped the GIL.  ``gil`` ones come from ctypes.pythonapi,
    which keeps the GIL held (PyMem_Malloc needs it).
    """

    def __init__(self):
        nogil = ctypes.CDLL(None)
        gil = ctypes.pythonapi
        for lib in (nogil, gil):
            for name in ("PyMem_RawMalloc", "PyMem_Malloc"):
                fn = getattr(lib, name)
                fn.restype = ctypes.c_void_p
                fn.argtypes = [ctypes.c_size_t]
            for name in ("PyMem_RawRealloc", "PyMem_Realloc"):
                fn = getattr(lib, name)
                fn.restype = ctypes.c_void_p
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
            for name in ("PyMem_RawFree", "PyMem_Free"):
                fn = getattr(lib, name)
                fn.restype = None
                fn.argtypes = [ctypes.c_void_p]
        self.raw_malloc_nogil = nogil.PyMem_RawMalloc
        self.raw_realloc_nogil = nogil.PyMem_RawRealloc
        self.raw_free_nogil = nogil.PyMem_RawFree
        self.mem_malloc = gil.PyMem_Malloc
        self.mem_realloc = gil.PyMem_Realloc
        self.mem_free = gil.PyMem_Free


@pytest.fixture
def cfuncs():
    return CFunctions()


def traced_sum():
    """Sum of the sizes of every trace the engine holds."""
    return sum(t[1] for t in heaptrace._get_traces())
