"""Edge cases where heaptrace once disagreed with the standard module:
addresses at the top of the address space, tracking an address Python's
allocators already traced, and frames still in their prologue."""
import gc
import subprocess
import sys
import textwrap

import pytest

import heaptrace


def under_both(script):
    """script's output run with "heaptrace" and with "tracemalloc" as its
    argument (each in a child process), checked to be the same."""
    out = {}
    for mod in ("heaptrace", "tracemalloc"):
        proc = subprocess.run([sys.executable, "-c", script, mod],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        out[mod] = proc.stdout
    assert out["heaptrace"] == out["tracemalloc"]
    return out


@pytest.fixture(autouse=True)
def stopped():
    heaptrace.stop()
    yield
    heaptrace.stop()


@pytest.mark.parametrize("top", [2**64 - 1, 2**64 - 2, 2**64 - 4096, 0, 1])
def test_track_any_address_big_blocks(top):
    """Big blocks (128 KiB and more) live in a side map keyed by address:
    every address, the last one and 0 included, must come and go."""
    def tracked():
        return sum(t[1] for t in heaptrace._get_traces() if t[0] in (5, 6))

    heaptrace.start()
    base = heaptrace.get_traced_memory()[0]
    heaptrace.track(5, top, 200000)
    heaptrace.track(5, 0x101c0, 300000)
    assert tracked() == 500000
    assert heaptrace.get_traced_memory()[0] - base >= 500000
    assert heaptrace._get_traceback(5, top) is not None
    heaptrace.untrack(5, 0x101c0)
    heaptrace.untrack(5, top)
    assert tracked() == 0
    assert heaptrace.get_traced_memory()[0] - base < 100000
    assert heaptrace._get_traceback(5, top) is None
    # Many big blocks around the top: the map grows and shrinks.
    addrs = [2**64 - 1 - k * 4096 for k in range(300)]
    for a in addrs:
        heaptrace.track(6, a, 131072 + a % 7)
    for a in addrs[::2]:
        heaptrace.untrack(6, a)
    assert all(heaptrace._get_traceback(6, a) is None for a in addrs[::2])
    assert all(heaptrace._get_traceback(6, a) is not None for a in addrs[1::2])
    for a in addrs[1::2]:
        heaptrace.untrack(6, a)
    assert tracked() == 0


def test_track_domain_0_replaces_a_python_trace():
    """track(0, addr) on a block Python allocated replaces its trace (one
    trace, the new size); untrack(0, addr) leaves it untraced, as in the
    standard module."""
    heaptrace.start()
    obj = bytes(5000)            # not a GC object: its block starts at id()
    assert heaptrace.get_object_traceback(obj) is not None
    before = heaptrace.get_traced_memory()[0]
    size = sys.getsizeof(obj)
    heaptrace.track(0, id(obj), 1000)
    # One trace, of the new size: the memory went down by the difference.
    # (Give or take the few small objects this test makes meanwhile.)
    assert 0 <= heaptrace.get_traced_memory()[0] - before - (1000 - size) < 512
    assert heaptrace._get_traceback(0, id(obj)) is not None
    heaptrace.untrack(0, id(obj))
    assert heaptrace.get_object_traceback(obj) is None
    assert heaptrace._get_traceback(0, id(obj)) is None
    assert 0 <= heaptrace.get_traced_memory()[0] - before + size < 512
    # The block's own free finds nothing to remove, and nothing breaks.
    del obj
    gc.collect()


def test_track_domain_0_matches_the_standard_module():
    _testcapi = pytest.importorskip("_testcapi")
    code = textwrap.dedent("""
        import sys
        if sys.argv[1] == "heaptrace":
            import heaptrace as tm
            track, untrack = tm.track, tm.untrack
        else:
            import tracemalloc as tm, _testcapi
            track, untrack = _testcapi.tracemalloc_track, _testcapi.tracemalloc_untrack
        tm.start()
        obj = bytes(5000)
        base = tm.get_traced_memory()[0]
        track(0, id(obj), 1000)
        a = tm.get_traced_memory()[0] - base
        untrack(0, id(obj))
        b = tm.get_traced_memory()[0] - base
        print(a, b, tm.get_object_traceback(obj))
    """)
    out = under_both(code)
    assert out["heaptrace"].split()[2] == "None"


PROLOGUE = textwrap.dedent("""
    import gc, sys
    if sys.argv[1] == "heaptrace":
        import heaptrace as tm
    else:
        import tracemalloc as tm
    seen = set()
    class Bomb:
        def __init__(self):
            self.cycle = self
        def __del__(self):
            b = bytes(3000)
            tb = tm.get_object_traceback(b)
            seen.add((tuple(f.lineno for f in tb), len(tb)))

    def with_cell(x):
        def inner():
            return x
        return inner

    def outer():
        return with_cell(1)

    tm.start(10)
    for i in range(100):
        gc.disable()
        Bomb()
        gc.set_threshold(1)
        gc.enable()
        outer()
        gc.set_threshold(700)
        gc.collect()
    print(sorted(seen))
""")


@pytest.mark.skipif(not heaptrace._core.FAST_FRAMES,
                    reason="the public-API build walks frames by creating frame objects, "
                           "so a collection (and this finalizer) can run inside its hook, "
                           "whose allocations then go untraced")
def test_frames_in_their_prologue_are_left_out_as_by_the_standard_module():
    """On 3.11 a collection can run while a frame makes its cells; a
    finalizer that allocates then must not report that frame (line 0)."""
    out = under_both(PROLOGUE)
    assert ", 0," not in out["heaptrace"]


PROFILED = textwrap.dedent("""
    import sys
    if sys.argv[1] == "heaptrace":
        import heaptrace as tm
    else:
        import tracemalloc as tm
    seen = set()
    def prof(frame, event, arg):
        if event == "call" and frame.f_code.co_name in ("inner", "with_cell"):
            b = bytes(3000)
            tb = tm.get_object_traceback(b)
            seen.add((tuple(f.lineno for f in tb), len(tb)))
    def with_cell(x):
        def inner():
            return x
        inner()
        return inner
    def outer():
        return with_cell(1)
    tm.start(10)
    sys.setprofile(prof)
    for i in range(5):
        outer()
    sys.setprofile(None)
    print(sorted(seen))
""")


@pytest.mark.skipif(not heaptrace._core.FAST_FRAMES,
                    reason="the public-API build does not trace inside its own hook")
def test_profile_function_called_before_a_prologue_sees_what_the_standard_module_sees():
    """A profile function runs at a frame's call event, before (3.11) or at
    the end of (3.12+) its prologue: its allocations report the frames the
    standard module reports."""
    out = under_both(PROFILED)
    assert out["heaptrace"].strip() != "[]"


def test_native_tracing_where_it_cannot_work_is_a_clear_error():
    """On a build without the frame shims (the public-API fallback), or off
    Linux, start(native=True) raises RuntimeError and leaves tracing off."""
    if heaptrace._core.FAST_FRAMES and sys.platform.startswith("linux"):
        heaptrace.start(1, native=True)
        assert heaptrace.is_native()
        heaptrace.stop()
        return
    with pytest.raises(RuntimeError, match="native"):
        heaptrace.start(1, native=True)
    assert not heaptrace.is_tracing()
