"""Sampled tracing (issue 11): start(sampling_interval=N).

Every test seeds the sampler (sampling_seed), so its outcome is the same on
every run; the tolerances are still those of the statistics (a few standard
deviations), so that a biased estimator or a wrong probability fails them
for any seed.
"""
import gc
import math
import os
import pickle
import sys
import threading

import pytest

import heaptrace

KIB = 1024
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _stopped():
    heaptrace.stop()
    yield
    heaptrace.stop()


def prob(size, interval):
    return -math.expm1(-max(size, 1) / interval)


def line_stat(snapshot, lineno):
    """(size, count) of the statistics of this file's line *lineno*."""
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename == __file__ and frame.lineno == lineno:
            return stat.size, stat.count
    return 0, 0


def here():
    """The line number of the caller's line."""
    return sys._getframe(1).f_lineno


class Payload:
    """A class instance: re-traced on every allocation (unlike lists)."""
    __slots__ = ("data",)


def allocate(n, size):
    """n live objects each holding a bytes object of *size* bytes (one
    block of sys.getsizeof(bytes(size)) bytes each)."""
    out = []
    for _ in range(n):
        p = Payload()
        p.data = bytes(size)   # ALLOC_LINE
        out.append(p)
    return out


with open(__file__) as _source:
    ALLOC_LINE = next(i for i, text in enumerate(_source, 1)
                      if text.rstrip().endswith("# ALLOC_LINE"))


def test_start_arguments_are_checked():
    with pytest.raises(ValueError, match="sampling_interval must be from 1"):
        heaptrace.start(sampling_interval=0)
    with pytest.raises(ValueError, match="sampling_interval"):
        heaptrace.start(sampling_interval=-5)
    with pytest.raises(TypeError, match="sampling_interval must be an int"):
        heaptrace.start(sampling_interval="512KiB")
    with pytest.raises(TypeError, match="unexpected keyword"):
        heaptrace.start(sampling=3)
    assert not heaptrace.is_tracing()
    heaptrace.start(sampling_interval=4096)
    assert heaptrace.get_sampling_interval() == 4096
    heaptrace.stop()
    heaptrace.start()
    assert heaptrace.get_sampling_interval() is None
    assert heaptrace.take_snapshot().sampling_interval is None


@pytest.mark.parametrize("size", [16, 256, 4096, 32768])
def test_probability_of_sampling_a_block(size):
    # track() takes the same sampling decision as the hooks.
    interval = 8192
    draws = 20000
    heaptrace.start(sampling_interval=interval, sampling_seed=size)
    for i in range(draws):
        heaptrace.track(77, 0x10000000 + 64 * i, size)
    snapshot = heaptrace.take_snapshot()
    heaptrace.stop()
    kept = sum(1 for trace in snapshot.traces if trace.domain == 77)
    p = prob(size, interval)
    sigma = math.sqrt(draws * p * (1 - p))
    assert abs(kept - draws * p) <= 5 * sigma + 1, (kept, draws * p)


def test_estimates_are_unbiased_and_within_their_error():
    interval = 64 * KIB
    n, size = 20000, 1000
    heaptrace.start()
    objs = allocate(n, size)
    exact_size, exact_count = line_stat(heaptrace.take_snapshot(), ALLOC_LINE)
    del objs
    heaptrace.stop()
    assert exact_count == n

    block = exact_size / exact_count
    p = prob(round(block), interval)
    # Standard deviations of one run's estimates (Horvitz-Thompson).
    sd_size = math.sqrt(n * (1 - p) / p) * block
    sd_count = math.sqrt(n * (1 - p) / p)
    sizes, counts = [], []
    for seed in range(12):
        heaptrace.start(sampling_interval=interval, sampling_seed=seed)
        objs = allocate(n, size)
        est_size, est_count = line_stat(heaptrace.take_snapshot(), ALLOC_LINE)
        del objs
        heaptrace.stop()
        assert abs(est_size - exact_size) <= 4 * sd_size
        assert abs(est_count - exact_count) <= 4 * sd_count + 1
        sizes.append(est_size)
        counts.append(est_count)
    # Over the runs the mean converges on the exact figure.
    mean = sum(sizes) / len(sizes)
    assert abs(mean - exact_size) <= 4 * sd_size / math.sqrt(len(sizes))
    assert len(set(sizes)) > 1          # the seeds really differ


def test_same_seed_same_sample():
    def run():
        # The same sequence of allocations each time: no collection in the
        # middle of it, and the free lists refilled the same way.
        gc.collect()
        gc.disable()
        try:
            heaptrace.start(sampling_interval=16 * KIB, sampling_seed=42)
            objs = allocate(2000, 500)
            result = line_stat(heaptrace.take_snapshot(), ALLOC_LINE)
            del objs
            heaptrace.stop()
        finally:
            gc.enable()
        return result
    assert run() == run()


def test_traced_memory_is_an_estimate():
    heaptrace.start()
    base = heaptrace.get_traced_memory()[0]
    objs = allocate(20000, 2000)
    exact = heaptrace.get_traced_memory()[0] - base
    del objs
    heaptrace.stop()

    interval = 128 * KIB
    heaptrace.start(sampling_interval=interval, sampling_seed=3)
    base = heaptrace.get_traced_memory()[0]
    objs = allocate(20000, 2000)
    current, peak = heaptrace.get_traced_memory()
    estimate = current - base
    del objs
    after = heaptrace.get_traced_memory()[0]
    heaptrace.stop()
    block = sys.getsizeof(bytes(2000))
    p = prob(block, interval)
    sd = math.sqrt(20000 * (1 - p) / p) * block
    assert abs(estimate - exact) <= 5 * sd + 0.05 * exact
    assert peak >= current
    assert after < current - exact / 2     # the frees are seen too


def test_big_blocks_are_always_represented():
    interval = 512 * KIB
    for seed in range(20):
        heaptrace.start(sampling_interval=interval, sampling_seed=seed)
        big = bytes(16 * MIB)
        line = here() - 1
        size, count = line_stat(heaptrace.take_snapshot(), line)
        heaptrace.stop()
        del big
        assert count == 1
        assert abs(size - 16 * MIB) < 64     # s / p with p = 1 - e**-32


def test_dump_load_round_trip(tmp_path):
    heaptrace.start(sampling_interval=32 * KIB, sampling_seed=5)
    objs = allocate(5000, 1000)
    snapshot = heaptrace.take_snapshot()
    del objs
    heaptrace.stop()
    path = tmp_path / "sampled.htsnap"
    snapshot.dump(path)
    assert path.read_bytes()[8] == 2          # format version 2
    loaded = heaptrace.Snapshot.load(path)
    assert loaded.sampling_interval == 32 * KIB
    assert loaded.statistics("traceback") == snapshot.statistics("traceback")
    assert line_stat(loaded, ALLOC_LINE) == line_stat(snapshot, ALLOC_LINE)

    heaptrace.start()
    exact = heaptrace.take_snapshot()
    heaptrace.stop()
    exact.dump(tmp_path / "exact.htsnap")
    assert (tmp_path / "exact.htsnap").read_bytes()[8] == 1
    assert heaptrace.Snapshot.load(tmp_path / "exact.htsnap").sampling_interval is None

    # pickle keeps it as an attribute too
    again = pickle.loads(pickle.dumps(snapshot))
    assert again.sampling_interval == 32 * KIB


def test_compare_to_refuses_mixed_intervals():
    heaptrace.start(sampling_interval=64 * KIB, sampling_seed=1)
    sampled = heaptrace.take_snapshot()
    heaptrace.stop()
    heaptrace.start(sampling_interval=128 * KIB, sampling_seed=1)
    other = heaptrace.take_snapshot()
    heaptrace.stop()
    heaptrace.start()
    exact = heaptrace.take_snapshot()
    heaptrace.stop()
    with pytest.raises(ValueError, match="different sampling intervals"):
        sampled.compare_to(exact, "lineno")
    with pytest.raises(ValueError, match="65536 bytes and sampled every 131072"):
        sampled.compare_to(other, "lineno")
    assert isinstance(sampled.compare_to(sampled, "lineno"), list)


def test_compare_to_reports_estimated_growth():
    interval = 32 * KIB
    heaptrace.start(sampling_interval=interval, sampling_seed=9)
    before = heaptrace.take_snapshot()
    objs = allocate(10000, 1000)
    after = heaptrace.take_snapshot()
    heaptrace.stop()
    diff = next(d for d in after.compare_to(before, "lineno")
                if d.traceback[0].lineno == ALLOC_LINE
                and d.traceback[0].filename == __file__)
    block = sys.getsizeof(bytes(1000))
    exact = 10000 * block
    p = prob(block, interval)
    assert abs(diff.size_diff - exact) <= 4 * math.sqrt(10000 * (1 - p) / p) * block
    del objs


def test_filter_traces_and_hand_built_snapshots_keep_the_interval():
    heaptrace.start(sampling_interval=16 * KIB, sampling_seed=2)
    objs = allocate(3000, 800)
    snapshot = heaptrace.take_snapshot()
    heaptrace.stop()
    kept = snapshot.filter_traces([heaptrace.Filter(True, __file__)])
    assert kept.sampling_interval == 16 * KIB
    assert line_stat(kept, ALLOC_LINE) == line_stat(snapshot, ALLOC_LINE)
    # The same raw traces in a hand-built snapshot give the same estimates;
    # without the interval they are the plain sample.
    raw = list(snapshot.traces._traces)
    by_hand = heaptrace.Snapshot(raw, snapshot.traceback_limit, 16 * KIB)
    assert line_stat(by_hand, ALLOC_LINE) == line_stat(snapshot, ALLOC_LINE)
    plain = heaptrace.Snapshot(raw, snapshot.traceback_limit)
    size, count = line_stat(plain, ALLOC_LINE)
    assert count < line_stat(snapshot, ALLOC_LINE)[1] / 5
    bad = heaptrace.Snapshot(raw, 1, "often")
    with pytest.raises(ValueError, match="sampling_interval must be None"):
        bad.statistics("lineno")
    del objs


def test_threads_sample_their_own_allocations():
    interval = 32 * KIB
    n_threads, n, size = 4, 5000, 1000
    heaptrace.start(sampling_interval=interval, sampling_seed=11)
    held = []
    lock = threading.Lock()

    def work():
        objs = allocate(n, size)
        with lock:
            held.append(objs)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    size_est, _count = line_stat(heaptrace.take_snapshot(), ALLOC_LINE)
    heaptrace.stop()
    block = sys.getsizeof(bytes(size))
    total = n_threads * n * block
    p = prob(block, interval)
    sd = math.sqrt(n_threads * n * (1 - p) / p) * block
    assert abs(size_est - total) <= 5 * sd


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_keeps_sampling():
    heaptrace.start(sampling_interval=32 * KIB, sampling_seed=4)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        status = 1
        try:
            objs = allocate(5000, 1000)
            snap = heaptrace.take_snapshot()
            size, _ = line_stat(snap, ALLOC_LINE)
            os.write(write_fd, ("%s %d" % (snap.sampling_interval, size)).encode())
            del objs
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        interval, size = pipe.read().split()
    _, status = os.waitpid(pid, 0)
    heaptrace.stop()
    assert status == 0
    assert int(interval) == 32 * KIB
    block = sys.getsizeof(bytes(1000))
    p = prob(block, 32 * KIB)
    assert abs(int(size) - 5000 * block) <= 5 * math.sqrt(5000 * (1 - p) / p) * block


def test_tracer_memory_shrinks_with_the_sample():
    def tracer_memory(**kwargs):
        heaptrace.start(**kwargs)
        base = heaptrace.get_tracemalloc_memory()
        blocks = [Payload() for _ in range(300000)]
        used = heaptrace.get_tracemalloc_memory() - base
        del blocks
        heaptrace.stop()
        return used
    exact = tracer_memory()
    sampled = tracer_memory(sampling_interval=512 * KIB, sampling_seed=1)
    assert sampled < exact / 10, (sampled, exact)
