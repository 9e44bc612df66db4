"""The C engine against real programs: threads, the RAW domain without the
GIL, fork, user domains and the capsule C API, reallocation, deep stacks.

Each test drives heaptrace the way a user's program would and checks what
the user would see: traces, tracebacks and counters.
"""
import ctypes
import gc
import os
import subprocess
import sys
import textwrap
import threading
import zlib

import pytest

import heaptrace

HERE = os.path.abspath(__file__)


@pytest.fixture(autouse=True)
def stopped():
    """Every test starts and ends with tracing off."""
    heaptrace.stop()
    yield
    heaptrace.stop()


def _libpython():
    """Python's own C functions, called *without* the GIL (ctypes.CDLL
    releases it around every call): the way a C library allocates through
    PyMem_RawMalloc from a thread that dropped the GIL."""
    lib = ctypes.CDLL(None)
    lib.PyMem_RawMalloc.restype = ctypes.c_void_p
    lib.PyMem_RawMalloc.argtypes = [ctypes.c_size_t]
    lib.PyMem_RawRealloc.restype = ctypes.c_void_p
    lib.PyMem_RawRealloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.PyMem_RawFree.argtypes = [ctypes.c_void_p]
    return lib


def _line_of(marker):
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return number
    raise AssertionError(marker)


@pytest.mark.skipif(not heaptrace._core.DETACHED_TRACEBACKS,
                    reason="the public-API fallback cannot read frames without the GIL")
def test_raw_allocation_without_gil_is_traced_with_its_python_line():
    lib = _libpython()
    heaptrace.start(5)
    ptr = lib.PyMem_RawMalloc(12345)  # MARK-RAW-NOGIL
    try:
        frames = heaptrace._get_traceback(0, ptr)
        assert frames is not None
        assert frames[0] == (HERE, _line_of("MARK-RAW-NOGIL"))
        current, peak = heaptrace.get_traced_memory()
        assert current >= 12345
        traces = [t for t in heaptrace._get_traces() if t[1] == 12345]
        assert len(traces) == 1 and traces[0][0] == 0
        assert traces[0][3] == len(traces[0][2]) or traces[0][3] > 5
    finally:
        lib.PyMem_RawFree(ptr)
    assert heaptrace._get_traceback(0, ptr) is None


def test_raw_realloc_without_gil_moves_the_trace():
    lib = _libpython()
    heaptrace.start(1)
    ptr = lib.PyMem_RawMalloc(100)
    bigger = lib.PyMem_RawRealloc(ptr, 1 << 20)
    try:
        assert heaptrace._get_traceback(0, bigger) is not None
        if bigger != ptr:
            assert heaptrace._get_traceback(0, ptr) is None
        sizes = [t[1] for t in heaptrace._get_traces() if t[1] == 1 << 20]
        assert sizes == [1 << 20]
    finally:
        lib.PyMem_RawFree(bigger)


def test_threads_with_and_without_gil_return_to_baseline():
    """Eight threads allocate through all three domains, half of the RAW
    blocks without the GIL, while the main thread snapshots and resets the
    peak.  Afterwards every thread's memory is gone from the traces."""
    lib = _libpython()
    heaptrace.start(3)
    gc.collect()
    baseline, _ = heaptrace.get_traced_memory()
    stop_at = threading.Event()
    errors = []

    def worker(seed):
        try:
            kept = []
            for i in range(400):
                raw = lib.PyMem_RawMalloc(64 + (seed * 31 + i) % 4000)
                kept.append((raw, [str(i) * 3, bytearray(i % 300), {"k": i}]))
                zlib.compress(os.urandom(2000) * 5)   # RAW without the GIL inside zlib
                if len(kept) > 50:
                    old, _objs = kept.pop(0)
                    lib.PyMem_RawFree(old)
            for raw, _objs in kept:
                lib.PyMem_RawFree(raw)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    snapshots = 0
    while any(t.is_alive() for t in threads):
        snap = heaptrace.take_snapshot()
        assert snap.traceback_limit == 3
        snap.statistics("lineno")
        heaptrace.reset_peak()
        snapshots += 1
    for t in threads:
        t.join()
    assert not errors
    assert snapshots >= 1
    del snap
    gc.collect()
    current, _ = heaptrace.get_traced_memory()
    # What is left is the interpreter's own bookkeeping (thread states, type
    # caches), a few KiB, not the megabytes the threads allocated.
    assert current - baseline < 256 * 1024, (baseline, current)


def test_clear_and_restart_while_threads_allocate():
    lib = _libpython()
    heaptrace.start(2)
    done = threading.Event()

    def worker():
        while not done.is_set():
            p = lib.PyMem_RawMalloc(1000)
            junk = [bytes(50) for _ in range(20)]
            lib.PyMem_RawFree(p)
            del junk

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            if i % 3 == 0:
                heaptrace.clear_traces()
            elif i % 3 == 1:
                heaptrace.stop()
                heaptrace.start(1 + i % 7)
            else:
                heaptrace._get_traces()
    finally:
        done.set()
        for t in threads:
            t.join()
    assert heaptrace.is_tracing()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator does not reset its locks in a "
                           "fork child: a child forked while another thread is inside "
                           "ASan's malloc can deadlock inside ASan itself")
def test_fork_child_goes_on_tracing_while_parent_threads_allocate():
    lib = _libpython()
    heaptrace.start(4)
    done = threading.Event()

    def worker():
        while not done.is_set():
            p = lib.PyMem_RawMalloc(333)
            lib.PyMem_RawFree(p)

    t = threading.Thread(target=worker)
    t.start()
    try:
        pid = os.fork()
        if pid == 0:  # child: must still be tracing, and snapshot
            code = 1
            try:
                if heaptrace.is_tracing():
                    data = bytearray(54321)  # MARK-FORK
                    tb = heaptrace.get_object_traceback(data)
                    snap = heaptrace.take_snapshot()
                    sizes = [t.size for t in snap.traces]
                    ok = (tb is not None and tb[-1].lineno == _line_of("MARK-FORK")
                          and any(s >= 54321 for s in sizes))
                    code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        done.set()
        t.join()


def test_user_domains_track_untrack_and_filter():
    heaptrace.start(1)
    heaptrace.track(7, 0x10000, 4096)  # MARK-TRACK
    heaptrace.track(7, 0x20000, 100)
    heaptrace.track(8, 0x10000, 1)
    traces = [t for t in heaptrace._get_traces() if t[0] in (7, 8)]
    assert sorted((t[0], t[1]) for t in traces) == [(7, 100), (7, 4096), (8, 1)]
    assert heaptrace._get_traceback(7, 0x10000)[0] == (HERE, _line_of("MARK-TRACK"))
    snap = heaptrace.take_snapshot().filter_traces([heaptrace.DomainFilter(True, 7)])
    assert sorted(t.size for t in snap.traces) == [100, 4096]
    heaptrace.track(7, 0x10000, 50)          # re-tracking replaces
    heaptrace.untrack(7, 0x20000)
    heaptrace.untrack(7, 0x999999)           # unknown address: no error
    traces = sorted((t[0], t[1]) for t in heaptrace._get_traces() if t[0] in (7, 8))
    assert traces == [(7, 50), (8, 1)]
    heaptrace.stop()
    with pytest.raises(RuntimeError, match="not tracing"):
        heaptrace.track(7, 0x10000, 1)
    with pytest.raises(RuntimeError, match="not tracing"):
        heaptrace.untrack(7, 0x10000)


@pytest.mark.parametrize("args, exc", [
    ((-1, 0x1000, 1), OverflowError),
    ((2**32, 0x1000, 1), OverflowError),
    ((1, -5, 1), OverflowError),
    ((1, 0x1000, -1), OverflowError),
    (("x", 0x1000, 1), TypeError),
    ((1, 0x1000), TypeError),
])
def test_track_rejects_bad_arguments(args, exc):
    heaptrace.start(1)
    with pytest.raises(exc):
        heaptrace.track(*args)


def test_capsule_c_api_tracks_from_c():
    """Call track/untrack through the capsule, as an extension would."""
    heaptrace.start(1)

    class CAPI(ctypes.Structure):
        _fields_ = [
            ("version", ctypes.c_int),
            ("track", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_size_t,
                                       ctypes.c_size_t)),
            ("untrack", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_size_t)),
        ]

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    address = get_pointer(heaptrace._core._C_API, b"heaptrace._core._C_API")
    api = CAPI.from_address(address)
    assert api.version == 1
    assert api.track(99, 0xABC0, 777) == 0
    assert [t[1] for t in heaptrace._get_traces() if t[0] == 99] == [777]
    assert api.untrack(99, 0xABC0) == 0
    assert [t for t in heaptrace._get_traces() if t[0] == 99] == []
    heaptrace.stop()
    assert api.track(99, 0xABC0, 777) == -2
    assert os.path.exists(os.path.join(heaptrace.get_include(), "heaptrace.h"))


def test_realloc_larger_updates_size_and_traceback():
    heaptrace.start(1)
    buf = bytearray(10)
    before = heaptrace.get_traced_memory()[0]
    buf.extend(bytes(1 << 20))  # MARK-GROW
    tb = heaptrace.get_object_traceback(buf)
    after = heaptrace.get_traced_memory()[0]
    assert after - before >= 1 << 20
    grown = [t for t in heaptrace._get_traces() if t[1] >= 1 << 20]
    assert grown and grown[0][2][0] == (HERE, _line_of("MARK-GROW"))
    assert tb is not None


def test_object_with_managed_dict_and_gc_header():
    """get_object_traceback must find objects whose memory block starts
    before the object (GC header, managed __dict__)."""
    heaptrace.start(1)

    class Plain:
        pass

    class Slotted:
        __slots__ = ("a",)

    # (lists, tuples and dicts may come from free lists, which neither module
    # sees; these types always take fresh memory)
    objs = [Plain(), Slotted(), bytes(range(100)), int("9" * 30)]  # MARK-OBJS
    for obj in objs:
        tb = heaptrace.get_object_traceback(obj)
        assert tb is not None, type(obj)
        assert tb[0].lineno == _line_of("MARK-OBJS"), type(obj)


def _run(code, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


DEEP = textwrap.dedent("""
    import sys, {module} as tm
    tm.start({nframe})
    def down(n):
        if n:
            return down(n - 1)
        return [bytearray(777) for _ in range(3)]
    def gen():
        yield down(7)
    kept = [down(30), list(gen()), [x for x in [bytearray(999)]]]
    out = sorted((t[1], t[2], t[3]) for t in tm._get_traces()
                 if t[2][0][0] == "<string>" and t[1] > 700)
    print(repr(out))
""")


@pytest.mark.parametrize("nframe", [1, 5, 64])
def test_tracebacks_and_total_nframe_match_the_standard_module(nframe):
    """The same program traced by each module gives the same frames and
    total_nframe (deep recursion, a generator, a comprehension)."""
    ours = _run(DEEP.format(module="heaptrace", nframe=nframe))
    theirs = _run(DEEP.format(module="tracemalloc", nframe=nframe))
    assert ours == theirs
    assert ours.count("<string>") >= 7


CHAINS = textwrap.dedent("""
    import random, sys, threading, {module} as tm
    sys.setrecursionlimit(5000)
    tm.start({nframe})
    lists = []
    local = threading.local()
    def leaf(size):
        local.kept.append(bytearray(size))
    def down(n, size):
        if n > 0:
            return (down if n % 3 else other)(n - 1, size)
        leaf(size)
    def other(n, size):
        return down(n, size + 1)
    def gen(size):
        while True:
            depth = yield
            down(depth, size)
    def work(seed, rounds):
        # each thread's blocks, and the growth of the list holding them,
        # are traced in that thread, whatever the scheduling
        local.kept = []
        lists.append(local.kept)
        rng = random.Random(seed)
        g = gen(3000 + seed)
        next(g)
        for i in range(rounds):
            depth = rng.choice([0, 1, 2, 5, 9, 40, 41, rng.randrange(300)])
            if rng.random() < 0.3:
                # resume the same generator from a different depth
                (lambda d: g.send(d))(depth)
            elif rng.random() < 0.1:
                down(depth + 260, 2000)      # longer than the memo holds
            else:
                down(depth, 1000 + (i % 7))
    work(1, 400)
    threads = [threading.Thread(target=work, args=(k, 150)) for k in range(2, 9)]
    for t in threads: t.start()
    for t in threads: t.join()
    out = sorted((t[1], t[2], t[3]) for t in tm._get_traces()
                 if t[2][0][0] == "<string>" and t[1] >= 1000)
    print(len(out), repr(out))
""")


@pytest.mark.parametrize("nframe", [1, 3])
def test_total_nframe_matches_while_the_stack_keeps_changing(nframe):
    """total_nframe stays exact when the stack below an allocation changes
    from one allocation to the next: random depths, a generator resumed at
    different depths, stacks longer than the chain memo, eight threads
    (more than the memo's slots).  Compared with the standard module on the
    same program."""
    ours = _run(CHAINS.format(module="heaptrace", nframe=nframe))
    theirs = _run(CHAINS.format(module="tracemalloc", nframe=nframe))
    assert int(ours.split()[0]) > 1000
    assert ours == theirs


def test_stack_deeper_than_limit_counts_every_frame():
    heaptrace.start(2)

    def down(n):
        if n:
            return down(n - 1)
        return bytearray(4321)

    data = down(200)
    frames = heaptrace._get_object_traceback(data)
    traces = [t for t in heaptrace._get_traces() if t[2] == frames and t[1] >= 4321]
    assert len(frames) == 2
    assert traces and traces[0][3] > 200


def test_snapshot_tables_describe_the_same_traces():
    """The interned tables the C analysis works on expand back to exactly
    the traces _get_traces() reports (checked on the blocks of one line, as
    each call's own result is traced too)."""
    import collections

    heaptrace.start(6)

    def make(n):
        return [str(i) * 2 for i in range(n)]  # MARK-TABLES

    kept = [make(300) for _ in range(20)] + [[make(5)] for _ in range(3)]
    line = _line_of("MARK-TABLES")
    limit, strings, frames, tracebacks, traces = heaptrace._core._snapshot_tables()
    raw = heaptrace._get_traces()
    assert limit == 6

    def expand(trace):
        domain, size, tb = trace
        ids, total = tracebacks[tb]
        return (domain, size,
                tuple((strings[frames[f][0]], frames[f][1]) for f in ids), total)

    ours = collections.Counter(x for x in map(expand, traces) if x[2][0] == (HERE, line))
    theirs = collections.Counter(x for x in raw if x[2][0] == (HERE, line))
    assert sum(ours.values()) >= 6000
    assert ours == theirs
    assert len(set(strings)) == len(strings)
    assert len(set(map(tuple, frames))) == len(frames)
    del kept
