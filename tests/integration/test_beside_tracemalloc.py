"""The standard tracemalloc started and stopped beside heaptrace, in every
order.

Both install PEP 445 hooks, each saving what was installed before it and
putting that back when it stops.  Whatever the order, the process must not
crash or hang, and at every step each module that says it is tracing must
see a new object; a heaptrace whose hooks another tool took out stops with a
RuntimeWarning instead of claiming to trace.  Each batch runs in a child
process, because the failures guarded against are crashes and endless
recursion.
"""

import itertools
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import itertools, sys, threading, warnings, zlib
    import tracemalloc
    import heaptrace

    class Obj:
        # (Slots: 3.11's tracemalloc misses objects with a managed dict.)
        __slots__ = ("a",)

    OPS = {
        "ts": tracemalloc.start, "tp": tracemalloc.stop,
        "hs": heaptrace.start, "hp": heaptrace.stop,
        "hc": heaptrace.clear_traces, "tc": tracemalloc.clear_traces,
    }
    names = sys.argv[1].split(",")
    length = int(sys.argv[2])
    threaded = sys.argv[3] == "1"

    # A thread allocating all the time, through every domain (zlib works
    # without the GIL, through PyMem_RawMalloc's hooks).
    done = threading.Event()
    def churn():
        data = bytes(range(256)) * 64
        while not done.is_set():
            keep = [Obj() for _ in range(50)]
            zlib.decompress(zlib.compress(data))
            del keep
    if threaded:
        worker = threading.Thread(target=churn)
        worker.start()

    def check(seq, step):
        obj = Obj()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h_on = heaptrace.is_tracing()
        for w in caught:
            assert issubclass(w.category, RuntimeWarning), (seq, step, w)
            assert "removed its allocator hooks" in str(w.message), (seq, step, w)
        if h_on:
            tb = heaptrace.get_object_traceback(obj)
            assert tb is not None, (seq, step, "heaptrace traces but missed it")
            heaptrace.get_traced_memory()
        if tracemalloc.is_tracing():
            tb = tracemalloc.get_object_traceback(obj)
            assert tb is not None, (seq, step, "tracemalloc traces but missed it")
        return len(caught)

    warned = 0
    count = 0
    for seq in itertools.product(names, repeat=length):
        for step, op in enumerate(seq):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                OPS[op]()
            warned += check(seq, step)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heaptrace.stop()
            tracemalloc.stop()
        # Both stopped: a clean start of each still works.
        heaptrace.start()
        obj = Obj()
        assert heaptrace.get_object_traceback(obj) is not None, seq
        heaptrace.stop()
        assert heaptrace.get_object_traceback(obj) is None, seq
        count += 1
    done.set()
    if threaded:
        worker.join()
    print("SEQUENCES", count, "WARNED", warned)
""")


def run(names, length, threaded=False):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(names), str(length),
         "1" if threaded else "0"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("order", list(itertools.permutations(["ts", "tp", "hs", "hp"])))
def test_one_order(order):
    """Each of the 24 orders of the four calls, on its own (the
    reproducers of the issue are among them)."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace(
            "for seq in itertools.product(names, repeat=length):",
            "for seq in [tuple(names)]:"), ",".join(order), "4", "0"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SEQUENCES 1" in proc.stdout


def test_the_reported_orders_warn_or_keep_tracing():
    """tracemalloc.start(); heaptrace.start(); tracemalloc.stop(): the
    hooks are gone, so heaptrace says so and stops, rather than claiming to
    trace; heaptrace.stop() afterwards restores nothing it does not own."""
    code = textwrap.dedent("""
        import tracemalloc, warnings, heaptrace
        tracemalloc.start(); heaptrace.start(); tracemalloc.stop()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            print("TRACING", heaptrace.is_tracing())
        print("WARNED", len(w), w and w[0].category.__name__)
        heaptrace.stop()
        x = [object() for _ in range(1000)]
        # The other order: heaptrace's hooks under tracemalloc's.
        heaptrace.start(); tracemalloc.start(); heaptrace.stop()
        print("STOPPED", heaptrace.is_tracing(), tracemalloc.is_tracing())
        tracemalloc.stop()
        class C: __slots__ = ("a",)
        c = C()
        print("AFTER", heaptrace.get_object_traceback(c))
        heaptrace.start()
        c = C()
        print("RESTART", heaptrace.get_object_traceback(c) is not None)
        heaptrace.stop()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert lines[0] == "TRACING False"
    assert lines[1] == "WARNED 1 RuntimeWarning"
    assert lines[2] == "STOPPED False True"
    assert lines[3] == "AFTER None"
    assert lines[4] == "RESTART True"


def test_every_sequence_of_four_calls():
    """All 4**4 sequences of start/stop calls of both modules, each
    checked after every call."""
    out = run(["ts", "tp", "hs", "hp"], 4)
    assert "SEQUENCES 256" in out


def test_sequences_with_clears_and_a_thread_allocating():
    """Sequences of five calls, clear_traces included, while another thread
    allocates through every domain."""
    out = run(["ts", "tp", "hs", "hp", "hc"], 4, threaded=True)
    assert "SEQUENCES 625" in out
