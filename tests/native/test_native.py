"""Native memory: malloc and its family, and anonymous mmap, made by C
libraries, traced under NATIVE_DOMAIN on the Python line that called them
(issue 9, items 2 and 3).

A small C library compiled here allocates each way; it is called through
ctypes.CDLL, which releases the GIL around the call, as most extensions do
around heavy work.  Each allocation must land on its Python line with its
exact size, and its free must give the memory back.
"""
import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest

import heaptrace
from native_helpers import build_shared, stopped  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="native tracing is Linux-only")

HERE = os.path.abspath(__file__)
NATIVE = heaptrace.NATIVE_DOMAIN

LIB_C = r"""
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mman.h>

void *n_malloc(size_t n) { return malloc(n); }
void *n_calloc(size_t k, size_t n) { return calloc(k, n); }
void *n_realloc(void *p, size_t n) { return realloc(p, n); }
void *n_posix_memalign(size_t n) { void *p = 0; return posix_memalign(&p, 64, n) ? 0 : p; }
void *n_aligned_alloc(size_t n) { return aligned_alloc(64, n); }
void *n_memalign(size_t n) { return memalign(64, n); }
void *n_valloc(size_t n) { return valloc(n); }
void *n_strdup(const char *s) { return strdup(s); }
void *n_strndup(const char *s, size_t n) { return strndup(s, n); }
void n_free(void *p) { free(p); }
void *n_mmap(size_t n) {
    void *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? 0 : p;
}
int n_munmap(void *p, size_t n) { return munmap(p, n); }

#include <pthread.h>
static void *thread_body(void *arg) { return malloc((size_t)arg); }
/* malloc on a thread that C code created: no Python frames at all. */
void *n_thread_malloc(size_t n) {
    pthread_t t; void *p = 0;
    if (pthread_create(&t, 0, thread_body, (void *)n) != 0) return 0;
    pthread_join(t, &p);
    return p;
}

/* A library that keeps a buffer per call: a leak. */
static void **kept; static size_t nkept;
void n_keep(size_t n) {
    kept = realloc(kept, (nkept + 1) * sizeof(void *));
    kept[nkept++] = malloc(n);
}
void n_release_all(void) {
    for (size_t i = 0; i < nkept; i++) free(kept[i]);
    free(kept); kept = 0; nkept = 0;
}
"""




@pytest.fixture(scope="module")
def libpath(tmp_path_factory):
    d = tmp_path_factory.mktemp("native")
    return build_shared(LIB_C, d / "libnat.so", ["-O1", "-pthread"])


def load(path):
    lib = ctypes.CDLL(path)
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    for name, args in [("n_malloc", [sz]), ("n_calloc", [sz, sz]), ("n_realloc", [vp, sz]),
                       ("n_posix_memalign", [sz]), ("n_aligned_alloc", [sz]),
                       ("n_memalign", [sz]), ("n_valloc", [sz]), ("n_strdup", [ctypes.c_char_p]),
                       ("n_strndup", [ctypes.c_char_p, sz]), ("n_mmap", [sz])]:
        getattr(lib, name).restype = vp
        getattr(lib, name).argtypes = args
    lib.n_free.argtypes = [vp]
    lib.n_thread_malloc.restype = vp
    lib.n_thread_malloc.argtypes = [sz]
    lib.n_munmap.argtypes = [vp, sz]
    lib.n_keep.argtypes = [sz]
    return lib




def line_of(marker):
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return number
    raise AssertionError(marker)


def native_traces():
    return [t for t in heaptrace.take_snapshot().traces if t.domain == NATIVE]


def native_bytes():
    return sum(t.size for t in native_traces())


def at(traces, size):
    return [t for t in traces if t.size == size]


CASES = {
    "malloc": (lambda lib: lib.n_malloc(12345), 12345),
    "calloc": (lambda lib: lib.n_calloc(7, 1000), 7000),
    "posix_memalign": (lambda lib: lib.n_posix_memalign(3001), 3001),
    "aligned_alloc": (lambda lib: lib.n_aligned_alloc(4096 * 3), 4096 * 3),
    "memalign": (lambda lib: lib.n_memalign(3003), 3003),
    "valloc": (lambda lib: lib.n_valloc(5000), 5000),
    "strdup": (lambda lib: lib.n_strdup(b"x" * 2999), 3000),
    "strndup": (lambda lib: lib.n_strndup(b"y" * 5000, 1999), 2000),
    "malloc-big": (lambda lib: lib.n_malloc(3 << 20), 3 << 20),
}


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("when", ["loaded-before-start", "loaded-after-start"])
def test_each_allocation_kind_lands_on_its_line(libpath, kind, when):
    make, size = CASES[kind]
    lib = load(libpath) if when == "loaded-before-start" else None
    heaptrace.start(5, native=True)
    if lib is None:
        lib = load(libpath)
    ptr = make(lib)  # the allocating line
    assert ptr
    found = at(native_traces(), size)
    assert len(found) == 1, (kind, [t.size for t in native_traces()][:20])
    # Innermost: the lambda of CASES that calls the library; below it, here.
    frames = found[0].traceback
    assert frames[-1].filename == HERE
    assert frames[-1].lineno == line_of('"%s": (lambda' % kind)
    assert frames[-2].lineno == line_of("# the allocating line")
    lib.n_free(ptr)
    assert at(native_traces(), size) == []


def test_realloc_moves_the_trace_and_free_gives_it_back(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True)
    p = lib.n_malloc(1000)
    p = lib.n_realloc(p, 250000)
    assert at(native_traces(), 1000) == []
    assert len(at(native_traces(), 250000)) == 1
    p = lib.n_realloc(p, 3000)
    assert at(native_traces(), 250000) == [] and len(at(native_traces(), 3000)) == 1
    lib.n_free(p)
    assert at(native_traces(), 3000) == []


def test_anonymous_mmap_and_munmap(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True)
    page = os.sysconf("SC_PAGE_SIZE")
    p = lib.n_mmap(64 * page)  # the mapping line
    found = at(native_traces(), 64 * page)
    assert len(found) == 1 and found[0].traceback[-1].lineno == line_of("# the mapping line")
    # Unmapping the head keeps the tail traced, at its new start.
    assert lib.n_munmap(p, 16 * page) == 0
    assert at(native_traces(), 64 * page) == []
    assert len(at(native_traces(), 48 * page)) == 1
    assert lib.n_munmap(p + 16 * page, 48 * page) == 0
    assert at(native_traces(), 48 * page) == []


def test_traced_memory_counts_native_blocks_and_frees(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True)
    base = heaptrace.get_traced_memory()[0]
    ptrs = [lib.n_malloc(100000) for _ in range(20)]
    grown = heaptrace.get_traced_memory()[0] - base
    assert 2_000_000 <= grown < 2_000_000 + 50_000
    for p in ptrs:
        lib.n_free(p)
    assert heaptrace.get_traced_memory()[0] - base < 50_000
    assert heaptrace.get_tracemalloc_memory() > 0


def test_without_native_nothing_native_is_seen(libpath):
    lib = load(libpath)
    heaptrace.start(1)
    assert not heaptrace.is_native()
    p = lib.n_malloc(54321)
    assert native_traces() == []
    lib.n_free(p)


def test_stop_restores_and_blocks_cross_start_and_stop(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True)
    assert heaptrace.is_native()
    assert heaptrace._core._native_status()[1] > 0
    before = lib.n_malloc(11111)           # allocated while tracing ...
    heaptrace.stop()
    assert heaptrace._core._native_status() == (False, 0, 0)
    lib.n_free(before)                     # ... freed after stop
    after = lib.n_malloc(22222)            # allocated while stopped ...
    heaptrace.start(1, native=True)
    lib.n_free(after)                      # ... freed while tracing
    p = lib.n_malloc(33333)
    assert len(at(native_traces(), 33333)) == 1
    assert at(native_traces(), 11111) == [] and at(native_traces(), 22222) == []
    lib.n_free(p)
    for _ in range(3):
        heaptrace.stop()
        heaptrace.start(1, native=True)
        p = lib.n_malloc(44444)
        assert len(at(native_traces(), 44444)) == 1
        lib.n_free(p)


def test_native_added_to_a_running_tracer_and_clear_traces(libpath):
    lib = load(libpath)
    heaptrace.start(3)
    heaptrace.start(native=True)
    assert heaptrace.is_native() and heaptrace.get_traceback_limit() == 3
    p = lib.n_malloc(77777)
    heaptrace.clear_traces()
    assert heaptrace.is_native()
    assert at(native_traces(), 77777) == []
    q = lib.n_malloc(88888)
    assert len(at(native_traces(), 88888)) == 1
    lib.n_free(p)
    lib.n_free(q)


def test_threads_without_the_gil(libpath):
    lib = load(libpath)
    heaptrace.start(2, native=True)
    errors = []

    def work(size):
        try:
            for _ in range(300):
                ptrs = [lib.n_malloc(size) for _ in range(20)]  # thread line
                for p in ptrs:
                    lib.n_free(p)
            keep.append(lib.n_malloc(size))
        except BaseException as e:
            errors.append(e)

    keep = []
    threads = [threading.Thread(target=work, args=(10000 + k,)) for k in range(6)]
    for t in threads:
        t.start()
    for _ in range(20):
        heaptrace.take_snapshot()
    for t in threads:
        t.join()
    assert not errors
    traces = native_traces()
    for k in range(6):
        found = at(traces, 10000 + k)
        assert len(found) == 1
        assert found[0].traceback[-1].lineno == line_of("keep.append(lib.n_malloc(size))")
    for p in keep:
        lib.n_free(p)
    assert all(at(native_traces(), 10000 + k) == [] for k in range(6))


def test_numpy_data_is_counted_once(libpath):
    np = pytest.importorskip("numpy")
    heaptrace.start(1, native=True)
    arrays = [np.ones(100000) for _ in range(20)]
    snap = heaptrace.take_snapshot()
    by_domain = {}
    for t in snap.traces:
        by_domain[t.domain] = by_domain.get(t.domain, 0) + t.size
    # The data buffers are reported in NumPy's domain, not a second time
    # as native blocks.
    assert 16_000_000 <= by_domain.get(389047, 0) < 16_100_000
    assert by_domain.get(NATIVE, 0) < 1_000_000
    del arrays


def test_fork_child_goes_on_tracing_native(libpath):
    code = textwrap.dedent(f"""
        import ctypes, os, heaptrace
        lib = ctypes.CDLL({libpath!r})
        lib.n_malloc.restype = ctypes.c_void_p
        lib.n_malloc.argtypes = [ctypes.c_size_t]
        heaptrace.start(1, native=True)
        pid = os.fork()
        if pid == 0:
            p = lib.n_malloc(65432)
            ok = any(t.size == 65432 and t.domain == heaptrace.NATIVE_DOMAIN
                     for t in heaptrace.take_snapshot().traces)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("CHILD", os.waitstatus_to_exitcode(status))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "CHILD 0" in proc.stdout


def test_a_leaking_c_library_shows_in_statistics(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True)
    first = heaptrace.take_snapshot()
    for _ in range(100):
        lib.n_keep(4096)  # the leaking call
    second = heaptrace.take_snapshot()
    top = second.compare_to(first, "lineno")[0]
    assert top.traceback[0].lineno == line_of("# the leaking call")
    assert top.size_diff >= 100 * 4096
    lib.n_release_all()


def test_native_without_tracing_is_a_clear_error():
    with pytest.raises(RuntimeError, match="start"):
        heaptrace._core._native_start()


def test_heaptrace_run_native_finds_a_c_library_leak(libpath, tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({libpath!r})
        lib.n_keep.argtypes = [ctypes.c_size_t]
        for i in range(500):
            lib.n_keep(10000)   # keeps a buffer per call
    """))
    out = tmp_path / "snaps"
    proc = subprocess.run([sys.executable, "-m", "heaptrace", "run", "--native", "-o", str(out),
                           str(prog)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    snaps = sorted(out.glob("*.snap"))
    snap = heaptrace.Snapshot.load(str(snaps[-1]))
    native = snap.filter_traces([heaptrace.DomainFilter(True, NATIVE)])
    top = native.statistics("lineno")[0]
    assert top.traceback[0].filename == str(prog)
    assert top.traceback[0].lineno == 6
    assert top.size >= 500 * 10000
    # Without --native, none of it is seen.
    out2 = tmp_path / "snaps2"
    subprocess.run([sys.executable, "-m", "heaptrace", "run", "-o", str(out2), str(prog)],
                   check=True, capture_output=True, timeout=120,
                   env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    snap2 = heaptrace.Snapshot.load(str(sorted(out2.glob("*.snap"))[-1]))
    assert not [t for t in snap2.traces if t.domain == NATIVE]


EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))),
                       "examples", "native_leak.py")


@pytest.mark.parametrize("target, native, leaks", [
    ("handle_request", True, True),
    ("handle_request_fixed", True, False),
    ("handle_request", False, False),     # invisible without native tracing
])
def test_leaks_native_finds_a_c_library_leak(target, native, leaks):
    cmd = [sys.executable, "-m", "heaptrace", "leaks", f"{EXAMPLE}:{target}", "--json",
           "--iterations", "240"] + (["--native"] if native else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    import json
    report = json.loads(proc.stdout)
    lines = [s["lineno"] for s in report["suspects"]]
    if leaks:
        assert lines and lines[0] == 24, report["suspects"]
        assert report["suspects"][0]["size_per_iteration"] > 100_000
    else:
        assert lines == [], report["suspects"]


def test_a_thread_c_created_gets_an_unknown_traceback(libpath):
    lib = load(libpath)
    heaptrace.start(5, native=True)
    p = lib.n_thread_malloc(23456)
    found = at(native_traces(), 23456)
    assert len(found) == 1
    assert [(f.filename, f.lineno) for f in found[0].traceback] == [("<unknown>", 0)]
    lib.n_free(p)


def test_sampled_native_tracing_estimates_what_was_allocated(libpath):
    lib = load(libpath)
    heaptrace.start(1, native=True, sampling_interval=64 * 1024, sampling_seed=7)
    ptrs = [lib.n_malloc(1000) for _ in range(20000)]  # the sampled line
    snap = heaptrace.take_snapshot()
    assert snap.sampling_interval == 64 * 1024
    native = snap.filter_traces([heaptrace.DomainFilter(True, NATIVE)])
    top = native.statistics("lineno")[0]
    assert top.traceback[0].lineno == line_of("# the sampled line")
    # About 300 blocks in the sample stand for the 20,000: the estimate is
    # within a few standard errors (about 6%) of 20 MB.
    assert abs(top.size - 20_000_000) < 0.2 * 20_000_000, top
    assert len(native.traces) < 2000
    for p in ptrs:
        lib.n_free(p)
    assert sum(t.size for t in heaptrace.take_snapshot().traces if t.domain == NATIVE) < 100_000


def test_run_native_follows_a_python_child(libpath, tmp_path):
    """A Python child started by the program under `heaptrace run --native`
    traces native memory too, in its own series."""
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({libpath!r})
        lib.n_keep.argtypes = [ctypes.c_size_t]
        for i in range(300):
            lib.n_keep(10000)   # the child's leak
    """))
    prog = tmp_path / "parent.py"
    prog.write_text(f"import subprocess, sys\nsubprocess.run([sys.executable, {str(child)!r}], "
                    "check=True)\n")
    out = tmp_path / "snaps"
    proc = subprocess.run([sys.executable, "-m", "heaptrace", "run", "--native", "-o", str(out),
                           str(prog)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    pids = {name.split("-")[1] for name in os.listdir(out) if name.endswith(".snap")}
    assert len(pids) == 2, os.listdir(out)
    found = False
    for name in sorted(os.listdir(out)):
        snap = heaptrace.Snapshot.load(str(out / name))
        native = [t for t in snap.traces
                  if t.domain == NATIVE and t.traceback[-1].filename == str(child)]
        found = found or sum(t.size for t in native) >= 300 * 10000
    assert found
