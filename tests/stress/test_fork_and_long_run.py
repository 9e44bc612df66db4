"""fork() while threads allocate, and a long run with many snapshots.

A child forked while other threads are inside the allocator must inherit
consistent tables: it goes on tracing, sees its own allocations with their
lines, can snapshot, clear and restart, and can start threads of its own
that allocate without the GIL.  A program that keeps tracing on for many
rounds of work and snapshots stays within a fixed memory bound.
"""
import gc
import os
import random
import time
import signal
import threading
import warnings
import zlib

import pytest

import heaptrace

from conftest import CFunctions

HERE = os.path.abspath(__file__)
FORKS = 25
ROUNDS = 1200
WARM = 200


def _line_of(marker):
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return number
    raise AssertionError(marker)


def child_checks(cf):
    """Run in the forked child; returns a list of problems (empty: fine)."""
    problems = []
    if not heaptrace.is_tracing():
        return ["not tracing after fork"]
    data = bytearray(54321)  # MARK-CHILD
    tb = heaptrace.get_object_traceback(data)
    if tb is None or tb[-1].lineno != _line_of("MARK-CHILD"):
        problems.append("traceback of a new block: %r" % (tb,))
    snap = heaptrace.take_snapshot()
    if not any(t.size >= 54321 and t.traceback[-1].filename == HERE
               for t in snap.traces):
        problems.append("the new block is not in the snapshot")
    # The raw lock is usable: threads of the child allocate without the GIL.
    sizes = []

    def raw_user(n):
        for i in range(200):
            p = cf.raw_malloc_nogil(1000 + n)
            cf.raw_free_nogil(p)
        zlib.compress(bytes(10000))
        sizes.append(n)

    threads = [threading.Thread(target=raw_user, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(sizes) != 3:
        problems.append("child threads did not finish")
    heaptrace.clear_traces()
    if heaptrace.get_object_traceback(data) is not None:
        problems.append("clear_traces kept a trace")
    heaptrace.stop()
    heaptrace.start(2)
    again = bytearray(12345)
    if heaptrace.get_object_traceback(again) is None:
        problems.append("not tracing after restart in the child")
    return problems


def wait_bounded(pid, seconds=60.0):
    """The child's wait status, or None (and the child killed) if it has not
    ended within seconds: a hang must fail the test, not stall the run."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator does not reset its locks in a "
                           "fork child: a child that allocates from new threads can "
                           "deadlock inside ASan itself")
def test_fork_while_threads_allocate_in_every_domain(tmp_path):
    cf = CFunctions()
    heaptrace.start(4)
    done = threading.Event()

    def worker(n):
        rng = random.Random(n)
        while not done.is_set():
            p = cf.raw_malloc_nogil(rng.randrange(1, 4000))
            q = cf.mem_malloc(rng.randrange(1, 4000))
            junk = [str(i) * 5 for i in range(20)]
            zlib.compress(rng.randbytes(2000))
            cf.mem_free(q)
            cf.raw_free_nogil(p)
            del junk

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    failures = []
    try:
        for k in range(FORKS):
            report = tmp_path / ("child-%d" % k)
            with warnings.catch_warnings():
                # 3.12+ warns that forking a threaded process may deadlock:
                # that is the situation under test.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    problems = child_checks(cf)
                    report.write_text("\n".join(problems))
                    code = 0 if not problems else 2
                finally:
                    os._exit(code)
            status = wait_bounded(pid)
            if status is None:
                failures.append((k, "hung", ""))
            elif not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                detail = report.read_text() if report.exists() else ""
                failures.append((k, status, detail))
    finally:
        done.set()
        for t in threads:
            t.join()
    assert failures == []
    # The parent goes on tracing too.
    data = bytearray(77777)
    assert heaptrace.get_object_traceback(data) is not None


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_round(rng, keep):
    """Work of one round: churn through all domains, keep a bounded set."""
    cf = one_round.cf
    raws = [cf.raw_malloc_nogil(rng.randrange(1, 3000)) for _ in range(50)]
    for _ in range(300):
        keep[rng.randrange(len(keep))] = [bytes(rng.randrange(1, 400)),
                                          str(rng.random())]
    zlib.compress(rng.randbytes(5000))
    for p in raws:
        cf.raw_free_nogil(p)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_long_run_with_many_snapshots_stays_bounded(tmp_path):
    """1200 rounds of work with a snapshot (and its statistics, a compare,
    and every 20th round a dump and load) after each: after a warm-up,
    neither the process's resident memory nor heaptrace's own memory grows
    with the number of rounds."""
    one_round.cf = CFunctions()
    rng = random.Random(5)
    keep = [None] * 2000
    path = str(tmp_path / "s.heaptrace")
    heaptrace.start(10)
    previous = None
    marks = {}
    for i in range(ROUNDS):
        one_round(rng, keep)
        snap = heaptrace.take_snapshot()
        snap.statistics("traceback")
        if previous is not None:
            snap.compare_to(previous, "lineno")
        if i % 20 == 0:
            snap.dump(path)
            heaptrace.Snapshot.load(path).statistics("filename")
        previous = snap
        if i in (WARM, ROUNDS - 1):
            gc.collect()
            marks[i] = (rss_bytes(), heaptrace.get_tracemalloc_memory(),
                        heaptrace.get_traced_memory()[0])
    rss_early, own_early, traced_early = marks[WARM]
    rss_late, own_late, traced_late = marks[ROUNDS - 1]
    # Five times the rounds: a leak per round or per snapshot would
    # show as growth well beyond noise.
    assert own_late <= own_early * 1.25 + (1 << 20), marks
    # (Under AddressSanitizer the process keeps freed memory in quarantine,
    # up to 256 MiB, so its resident size says nothing about leaks there;
    # heaptrace's own memory, above, is still checked.)
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        assert rss_late <= rss_early * 1.25 + (8 << 20), marks
    assert traced_late <= traced_early * 1.5 + (1 << 20), marks
    print("\nrss %.1f -> %.1f MiB, heaptrace's own %.1f -> %.1f MiB"
          % (rss_early / 2**20, rss_late / 2**20, own_early / 2**20, own_late / 2**20))
