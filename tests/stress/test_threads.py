"""Many threads allocate and free through RAW (with and without the GIL),
MEM and OBJ, and through user domains, while other threads take snapshots,
clear the traces, reset the peak, and stop and start tracing.

What a user would notice if the engine got this wrong: a crash or a hang,
memory that stays traced after the program let it go, a traced total that
disagrees with the traces, or blocks that are not traced at all.
"""
import bz2
import ctypes
import gc
import lzma
import os
import random
import threading
import zlib

import pytest

import heaptrace

from conftest import traced_sum

WORKERS = 8
ROUNDS = 300          # per worker; each round does a dozen allocations
HELD = 256 * 1024     # bytes of RAW memory each worker holds at the barrier


class Capsule(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_int),
        ("track", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_size_t,
                                   ctypes.c_size_t)),
        ("untrack", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_size_t)),
    ]


def capsule_api():
    """The C API through the capsule; ctypes calls CFUNCTYPE pointers
    without the GIL, as a C library's own thread would."""
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    ptr = get_pointer(heaptrace._core._C_API, b"heaptrace._core._C_API")
    return Capsule.from_address(ptr)


def compress_round(rng):
    """zlib, lzma and bz2 allocate their state through PyMem_RawMalloc
    with the GIL released."""
    data = rng.randbytes(512) * 8
    assert zlib.decompress(zlib.compress(data)) == data
    if rng.random() < 0.2:
        assert lzma.decompress(lzma.compress(data, preset=0)) == data
    if rng.random() < 0.2:
        assert bz2.decompress(bz2.compress(data, 1)) == data


class Workers:
    """WORKERS threads doing ROUNDS rounds each; halfway, every worker holds
    HELD bytes of RAW memory until the main thread has looked at it."""

    def __init__(self, cf, api=None):
        self.cf = cf
        self.api = api
        self.errors = []
        self.ops = [0] * WORKERS
        self.holding = threading.Barrier(WORKERS + 1)
        self.release = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,))
                        for n in range(WORKERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.release.set()
        for t in self.threads:
            t.join()
        assert not self.errors, self.errors

    def alive(self):
        return any(t.is_alive() for t in self.threads)

    def run(self, n):
        cf = self.cf
        rng = random.Random(n)
        raw, mem, objs, tracked = [], [], [], []
        try:
            for i in range(ROUNDS):
                if i == ROUNDS // 2:
                    held = cf.raw_malloc_nogil(HELD)
                    try:
                        self.holding.wait()
                        self.release.wait()
                    finally:
                        cf.raw_free_nogil(held)
                raw.append(cf.raw_malloc_nogil(rng.randrange(1, 5000)))
                raw[-1] = cf.raw_realloc_nogil(raw[-1], rng.randrange(1, 300000))
                mem.append(cf.mem_malloc(rng.randrange(1, 2000)))
                mem[-1] = cf.mem_realloc(mem[-1], rng.randrange(1, 2000))
                objs.append([bytearray(rng.randrange(600)), str(i) * 20, {i: (i,)},
                             bytes(rng.randrange(200000)) if i % 50 == 0 else b""])
                if self.api is not None:
                    address = 0x1000_0000 * (n + 1) + 64 * i
                    self.api.track(100 + n, address, 64)
                    tracked.append(address)
                compress_round(rng)
                if len(raw) > 20:
                    for _ in range(rng.randrange(1, 10)):
                        cf.raw_free_nogil(raw.pop(rng.randrange(len(raw))))
                        cf.mem_free(mem.pop(rng.randrange(len(mem))))
                        del objs[rng.randrange(len(objs))]
                        if tracked:
                            self.api.untrack(100 + n, tracked.pop())
                self.ops[n] += 12
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)
            self.holding.abort()
        finally:
            for p in raw:
                cf.raw_free_nogil(p)
            for p in mem:
                cf.mem_free(p)
            for address in tracked:
                self.api.untrack(100 + n, address)
            del objs


def assert_total_matches_traces():
    """get_traced_memory() is the sum of the traces (give or take the
    objects made while reading them)."""
    current = heaptrace.get_traced_memory()[0]
    total = traced_sum()
    assert current >= 0 and abs(total - current) < 64 * 1024, (current, total)


def settle():
    gc.collect()
    return heaptrace.get_traced_memory()[0]


def test_memory_returns_to_baseline_after_threads_with_snapshots(cfuncs, tmp_path):
    """Snapshots (analysed, dumped and loaded) and reset_peak run while the
    workers churn; while every worker holds HELD bytes they are all traced;
    once the workers are done the traced memory is back at its baseline and
    agrees with the traces."""
    heaptrace.start(5)
    api = capsule_api()
    baseline = settle()
    work = Workers(cfuncs, api)
    work.start()
    snapshots = 0
    path = str(tmp_path / "s.heaptrace")
    try:
        work.holding.wait()
        # Every worker is parked holding HELD bytes of RAW memory.
        current, peak = heaptrace.get_traced_memory()
        assert current - baseline >= WORKERS * HELD
        held = [t for t in heaptrace._get_traces() if t[0] == 0 and t[1] == HELD]
        assert len(held) == WORKERS
        assert all(t[2] and t[2][0][0] == __file__ for t in held)
        work.release.set()
        while work.alive():
            snap = heaptrace.take_snapshot()
            assert snap.traceback_limit == 5
            snap.statistics("traceback")
            if snapshots % 5 == 0:
                snap.dump(path)
                again = heaptrace.Snapshot.load(path)
                assert len(again.traces) == len(snap.traces)
                assert again.statistics("filename") == snap.statistics("filename")
            heaptrace.reset_peak()
            current, peak = heaptrace.get_traced_memory()
            assert peak >= current
            snapshots += 1
    finally:
        work.join()
    snap = again = None
    assert snapshots > 1
    current = settle()
    assert_total_matches_traces()
    # What is left is the interpreter's own bookkeeping (thread states,
    # caches), a few KiB, not the megabytes the threads allocated.
    assert current - baseline < 256 * 1024, (baseline, current)
    assert [t for t in heaptrace._get_traces() if t[0] >= 100] == []
    print("\n%d threads x %d operations, %d snapshots" % (WORKERS, work.ops[0], snapshots))


def test_control_calls_race_with_allocating_threads(cfuncs):
    """Two control threads call take_snapshot, clear_traces, reset_peak,
    stop, start and the lookups at the same time as the workers allocate.
    Afterwards tracing works as usual and the tables agree with the totals."""
    heaptrace.start(3)
    api = capsule_api()
    work = Workers(cfuncs, api)
    done = threading.Event()
    errors = []
    counts = [0, 0]

    def control(k):
        rng = random.Random(1000 + k)
        try:
            while not done.is_set():
                op = rng.randrange(8)
                if op == 0:
                    heaptrace.clear_traces()
                elif op == 1:
                    heaptrace.stop()
                    heaptrace.start(rng.randrange(1, 10))
                elif op == 2:
                    try:
                        snap = heaptrace.take_snapshot()
                    except RuntimeError:
                        # the other control thread stopped tracing meanwhile
                        assert not heaptrace.is_tracing()
                        heaptrace.start(1)
                        continue
                    snap.statistics("lineno")
                    snap.filter_traces([heaptrace.Filter(False, "<unknown>")])
                elif op == 3:
                    heaptrace.reset_peak()
                elif op == 4:
                    heaptrace._get_traces()
                elif op == 5:
                    heaptrace.get_object_traceback(work)
                    heaptrace.get_tracemalloc_memory()
                elif op == 6:
                    # start() while tracing changes nothing
                    heaptrace.start(rng.randrange(1, 10))
                else:
                    heaptrace.get_traced_memory()
                counts[k] += 1
        except BaseException as exc:
            errors.append(exc)

    controllers = [threading.Thread(target=control, args=(k,)) for k in range(2)]
    for t in controllers:
        t.start()
    work.start()
    try:
        work.holding.wait()
        work.release.set()
    finally:
        work.join()
        done.set()
        for t in controllers:
            t.join()
    assert not errors, errors
    assert min(counts) > 0
    # Tracing still works: a new block is traced with its line ...
    heaptrace.stop()
    heaptrace.start(1)
    baseline = settle()
    data = bytearray(300000)  # MARK-AFTER
    tb = heaptrace.get_object_traceback(data)
    assert tb is not None and tb[0].filename == __file__
    assert heaptrace.get_traced_memory()[0] - baseline >= 300000
    # ... and freeing it brings the total back.
    del data
    current = settle()
    assert_total_matches_traces()
    assert current - baseline < 16 * 1024
    print("\n%d threads x %d operations, control calls %s"
          % (WORKERS, work.ops[0], counts))


def test_threads_started_and_ended_while_tracing_restarts():
    """Creating and ending threads allocates RAW memory without the GIL
    (thread states, stacks' bookkeeping); do it many times while the main
    thread stops and starts tracing."""
    heaptrace.start(2)
    baseline = settle()
    out = []

    def short(i):
        out.append(bytes(100 + i))

    for i in range(300):
        batch = [threading.Thread(target=short, args=(i,)) for _ in range(4)]
        for t in batch:
            t.start()
        if i % 10 == 0:
            heaptrace.stop()
            heaptrace.start(2)
            baseline = settle()
        elif i % 10 == 5:
            heaptrace.clear_traces()
            baseline = settle()
        for t in batch:
            t.join()
    assert len(out) == 1200
    out.clear()
    assert settle() - baseline < 64 * 1024
