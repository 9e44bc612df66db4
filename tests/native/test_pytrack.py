"""PyTraceMalloc_Track / PyTraceMalloc_Untrack parity (issue 9, item 1).

A C library compiled here calls the two C-API functions, as NumPy does for
its data buffers.  While heaptrace traces, those blocks must land in
heaptrace's traces under their domain, with the Python line that called the
library; when heaptrace stops, the calls must reach the standard module
again.  The library is built several ways (lazy PLT, full RELRO, -fno-plt)
because each puts the GOT slot somewhere else.  A last test runs a NumPy
program under both modules and compares what a user sees.
"""
import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import tracemalloc as std

import pytest

import heaptrace
from native_helpers import build_shared, stopped  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="GOT redirection is Linux-only")

HERE = os.path.abspath(__file__)
DOMAIN = 4242

TRACKER_C = r"""
#include <stdint.h>
#include <stddef.h>
extern int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size);
extern int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr);
int trk_track(unsigned int d, uintptr_t p, size_t n) { return PyTraceMalloc_Track(d, p, n); }
int trk_untrack(unsigned int d, uintptr_t p) { return PyTraceMalloc_Untrack(d, p); }
"""

# Library A opens "libtrk_dep.so" by bare name; only A's own RUNPATH
# ($ORIGIN/dep) says where it is.
OPENER_C = r"""
#include <dlfcn.h>
#include <stddef.h>
int opener_open(void) {
    void *h = dlopen("libtrk_dep.so", RTLD_NOW);
    return h != NULL;
}
"""
DEP_C = "int trk_dep_answer(void) { return 42; }\n"

VARIANTS = {
    "lazy": [],
    "full-relro": ["-Wl,-z,relro,-z,now"],
    "no-plt": ["-fno-plt", "-Wl,-z,relro,-z,now"],
}






@pytest.fixture(scope="module")
def libdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pytrack")
    libs = {}
    for name, flags in VARIANTS.items():
        libs[name] = build_shared(TRACKER_C, str(d / ("libtrk_%s.so" % name.replace("-", "_"))),
                            flags)
    os.mkdir(d / "dep")
    build_shared(DEP_C, str(d / "dep" / "libtrk_dep.so"), ["-Wl,-soname,libtrk_dep.so"])
    libs["opener"] = build_shared(OPENER_C, str(d / "libtrk_opener.so"),
                            ["-Wl,--enable-new-dtags,-rpath,$ORIGIN/dep", "-ldl"])
    return libs




def _load(path, gil=True):
    lib = (ctypes.PyDLL if gil else ctypes.CDLL)(path)
    lib.trk_track.argtypes = [ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
    lib.trk_untrack.argtypes = [ctypes.c_uint, ctypes.c_void_p]
    return lib


def _line_of(marker):
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "_line_of" not in line:
                return number
    raise AssertionError(marker)


def _domain_traces(domain):
    return [t for t in heaptrace.take_snapshot().traces if t.domain == domain]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("when", ["loaded-before-start", "loaded-after-start"])
def test_tracked_block_lands_in_heaptrace_on_its_python_line(libdir, variant, when):
    # A fresh copy per case, so that "loaded after start" really is a new
    # dlopen and not the already loaded object.
    path = libdir[variant]
    copy = "%s.%s.so" % (path, when)
    shutil.copy(path, copy)
    if when == "loaded-before-start":
        lib = _load(copy)
        heaptrace.start(5)
    else:
        heaptrace.start(5)
        lib = _load(copy)
    assert lib.trk_track(DOMAIN, 0x10000, 123456) == 0  # MARK-TRACK
    traces = _domain_traces(DOMAIN)
    assert [t.size for t in traces] == [123456]
    assert traces[0].traceback[-1].filename == HERE
    assert traces[0].traceback[-1].lineno == _line_of("MARK-TRACK")
    assert heaptrace.get_traced_memory()[0] >= 123456

    assert lib.trk_untrack(DOMAIN, 0x10000) == 0
    assert _domain_traces(DOMAIN) == []

    heaptrace.stop()
    assert heaptrace._core._pytrack_status()[0] == 0
    # Back to the standard module: not tracing there, so -2 ...
    assert lib.trk_track(DOMAIN, 0x10000, 10) == -2
    # ... and the standard module sees the block once it traces.
    std.start()
    assert lib.trk_track(DOMAIN, 0x20000, 77) == 0
    seen = [t.size for t in std.take_snapshot().traces if t.domain == DOMAIN]
    assert seen == [77]
    assert lib.trk_untrack(DOMAIN, 0x20000) == 0


def test_track_without_the_gil_takes_it_and_keeps_the_line(libdir):
    """ctypes.CDLL drops the GIL around the call: the hook takes it back,
    as CPython's PyTraceMalloc_Track does, so the block still carries the
    Python line that called the library."""
    lib = _load(libdir["lazy"], gil=False)
    heaptrace.start(5)
    assert lib.trk_track(DOMAIN, 0x30000, 999) == 0  # MARK-NOGIL
    traces = _domain_traces(DOMAIN)
    assert [t.size for t in traces] == [999]
    assert traces[0].traceback[-1].lineno == _line_of("MARK-NOGIL")


def test_track_from_many_threads_without_the_gil(libdir):
    lib = _load(libdir["lazy"], gil=False)
    heaptrace.start(1)
    errors = []

    def worker(base):
        for i in range(200):
            if lib.trk_track(DOMAIN, base + 16 * i, 32) != 0:
                errors.append(i)
        for i in range(0, 200, 2):
            lib.trk_untrack(DOMAIN, base + 16 * i)

    threads = [threading.Thread(target=worker, args=(0x100000 * (n + 1),)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    traces = _domain_traces(DOMAIN)
    assert len(traces) == 6 * 100
    assert sum(t.size for t in traces) == 6 * 100 * 32


def test_restart_patches_again_and_stop_restores(libdir):
    lib = _load(libdir["full-relro"])
    for _ in range(3):
        heaptrace.start()
        patched, error = heaptrace._core._pytrack_status()
        assert error is None and patched >= 2
        assert lib.trk_track(DOMAIN, 0x40000, 5) == 0
        assert [t.size for t in _domain_traces(DOMAIN)] == [5]
        heaptrace.stop()
        assert heaptrace._core._pytrack_status()[0] == 0
        assert lib.trk_track(DOMAIN, 0x40000, 5) == -2


def test_bare_name_dlopen_still_follows_the_callers_runpath(libdir):
    """While heaptrace traces, dlopen goes through heaptrace, which must not
    make a library lose its own RUNPATH ($ORIGIN/dep here)."""
    heaptrace.start()
    opener = ctypes.CDLL(libdir["opener"])
    assert opener.opener_open() == 1
    dep = ctypes.CDLL("libtrk_dep.so", mode=os.RTLD_NOLOAD)
    assert dep.trk_dep_answer() == 42


def test_missing_library_error_names_the_library():
    heaptrace.start()
    with pytest.raises(OSError, match="libheaptrace_no_such_lib.so"):
        ctypes.CDLL("libheaptrace_no_such_lib.so")


def test_forked_child_goes_on_tracking(libdir):
    script = textwrap.dedent("""
        import ctypes, os, sys
        import heaptrace
        lib = ctypes.PyDLL(sys.argv[1])
        lib.trk_track.argtypes = [ctypes.c_uint, ctypes.c_void_p, ctypes.c_size_t]
        heaptrace.start()
        pid = os.fork()
        if pid == 0:
            rc = lib.trk_track(%d, 0x50000, 4321)
            sizes = [t.size for t in heaptrace.take_snapshot().traces if t.domain == %d]
            os._exit(0 if rc == 0 and sizes == [4321] else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """ % (DOMAIN, DOMAIN))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", script, libdir["lazy"]],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


NUMPY_PROGRAM = textwrap.dedent("""
    import sys
    if sys.argv[1] == "heaptrace":
        import heaptrace as tracemalloc
    else:
        import tracemalloc
    import numpy as np
    tracemalloc.start()
    keep = [np.ones(100_000) for _ in range(20)]
    snap = tracemalloc.take_snapshot()
    total = tracemalloc.get_traced_memory()[0]
    domains = {}
    for t in snap.traces:
        domains[t.domain] = domains.get(t.domain, 0) + t.size
    print(round(total / 1e6, 1))
    print(sorted(d for d, size in domains.items() if size > 1e6))
    print(round(domains.get(389047, 0) / 1e6, 1))
    for st in snap.statistics("lineno")[:2]:
        print(st.traceback[0].filename, st.traceback[0].lineno, round(st.size / 1e6, 1))
""")


def test_numpy_program_matches_the_standard_module(tmp_path):
    pytest.importorskip("numpy")
    prog = tmp_path / "keep_arrays.py"
    prog.write_text(NUMPY_PROGRAM)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = {}
    for mod in ("tracemalloc", "heaptrace"):
        proc = subprocess.run([sys.executable, str(prog), mod], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        out[mod] = proc.stdout.splitlines()
    assert out["tracemalloc"][0] == "16.0"          # the program is what we think
    assert out["heaptrace"] == out["tracemalloc"]


def _mappings(path):
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        return [line.split()[:2] for line in f if line.rstrip().endswith(real)]


@pytest.mark.parametrize("variant", ["full-relro", "no-plt"])
def test_read_only_got_stays_read_only(libdir, variant):
    """Under full RELRO the slots are read-only: heaptrace makes a page
    writable only for the store, and leaves every mapping of the library
    with the permissions the dynamic linker gave it."""
    lib = _load(libdir[variant])
    before = _mappings(libdir[variant])
    assert any(perms.startswith("r--") for _, perms in before)
    heaptrace.start()
    assert lib.trk_track(DOMAIN, 0x60000, 8) == 0
    assert [t.size for t in _domain_traces(DOMAIN)] == [8]   # the slot was patched
    assert _mappings(libdir[variant]) == before
    heaptrace.stop()
    assert _mappings(libdir[variant]) == before
