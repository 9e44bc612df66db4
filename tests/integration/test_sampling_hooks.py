"""The sampled hooks' fast paths (hooks.c, "the sampled hooks").

Sampled tracing installs its own set of hooks, which pass most calls
straight on without the reentrancy flag.  These tests check the cases where
that could go wrong: an allocator below heaptrace that hands small requests
on to the RAW domain (the debug hooks) must not have its bytes counted twice,
and sampled hooks that stay in a chain under another tool must still trace
every block when an exact session starts later.  Each runs in a child
process, with a fixed seed.
"""
import os
import subprocess
import sys
import textwrap

import heaptrace

SRC = os.path.dirname(os.path.dirname(os.path.abspath(heaptrace.__file__)))

UNBIASED = textwrap.dedent("""
    import math, sys
    import heaptrace

    class Payload:
        __slots__ = ("data",)

    def allocate(n, size):
        out = []
        for _ in range(n):
            p = Payload()
            p.data = bytes(size)   # ALLOC
            out.append(p)
        return out

    def site(snapshot):
        # Every block, wherever its trace is attributed (a block counted a
        # second time in the RAW domain may be given another traceback).
        stats = snapshot.statistics("filename")
        return sum(s.size for s in stats), sum(s.count for s in stats)

    LINE = next(i for i, t in enumerate(open(__file__), 1) if t.rstrip().endswith("# ALLOC"))
    n, size, interval = 20000, 460, 16 * 1024
    heaptrace.start()
    objs = allocate(n, size)
    exact_size, exact_count = site(heaptrace.take_snapshot())
    del objs
    heaptrace.stop()
    assert exact_count >= 2 * n, exact_count
    block = exact_size / n
    p = -math.expm1(-block / interval)
    sd = math.sqrt(n * (1 - p) / p) * block
    for seed in range(4):
        heaptrace.start(sampling_interval=interval, sampling_seed=seed)
        objs = allocate(n, size)
        est, _ = site(heaptrace.take_snapshot())
        del objs
        heaptrace.stop()
        assert abs(est - exact_size) <= 4 * sd, (seed, est, exact_size, sd)
    print("OK")
""")


def run_script(script, env_extra):
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    with open(os.devnull) as null:
        proc = subprocess.run([sys.executable, "-c", script], env=env, stdin=null,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_estimates_stay_unbiased_when_small_requests_reach_the_raw_domain(tmp_path):
    # Under the debug hooks a 460-byte bytes object (493 bytes, plus the
    # debug header: over 512)
    # is passed on from pymalloc to PyMem_RawMalloc: counting it in both
    # domains would double its chance of being sampled and halve the
    # estimate.
    script = tmp_path / "unbiased.py"
    script.write_text(UNBIASED)
    code = f"__file__ = {str(script)!r}\n" + UNBIASED
    for allocator in ("pymalloc_debug", "pymalloc", "malloc"):
        assert "OK" in run_script(code, {"PYTHONMALLOC": allocator}), allocator


LEFT_IN_CHAIN = textwrap.dedent("""
    import gc, warnings, tracemalloc
    import heaptrace

    class Obj:
        __slots__ = ("a",)

    # Sampled heaptrace first, then tracemalloc on top of it: stopping
    # heaptrace leaves its sampled hooks in the chain, passing calls through.
    heaptrace.start(sampling_interval=1 << 30, sampling_seed=1)
    tracemalloc.start()
    heaptrace.stop()
    # An exact session finds those hooks with its probe and uses them.
    heaptrace.start()
    assert heaptrace.get_sampling_interval() is None
    objs = [Obj() for _ in range(1000)]
    assert all(heaptrace.get_object_traceback(o) is not None for o in objs)
    current = heaptrace.get_traced_memory()[0]
    del objs
    gc.collect()
    # The frees went through the sampled hooks' free: the traces must go.
    after = heaptrace.get_traced_memory()[0]
    assert current - after >= 1000 * Obj.__basicsize__, (current, after)
    snapshot = heaptrace.take_snapshot()
    assert snapshot.sampling_interval is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heaptrace.stop()
        tracemalloc.stop()
    # And sampling again through the same hooks.
    heaptrace.start(sampling_interval=1, sampling_seed=1)
    objs = [Obj() for _ in range(100)]
    assert all(heaptrace.get_object_traceback(o) is not None for o in objs)
    heaptrace.stop()
    print("OK")
""")


def test_sampled_hooks_left_in_a_chain_trace_an_exact_session_fully():
    assert "OK" in run_script(LEFT_IN_CHAIN, {})
