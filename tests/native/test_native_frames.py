"""Native frames (issue 9, item 4): start(native=True, native_frames=True)
gives each native block its C call path, innermost first, symbolized when
the snapshot is taken; dump/load carry it (format version 2), top prints it.

A C library compiled here (-O0, frame pointers, no inlining) has a known
chain: nf_outer -> nf_inner -> malloc.
"""
import ctypes
import os
import pickle
import struct
import subprocess
import sys
import threading

import pytest

import heaptrace
from native_helpers import compiler, stopped  # noqa: F401 (autouse fixture)
from heaptrace import NATIVE_DOMAIN, NativeFrame, Snapshot, SnapshotFormatError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="native tracing is Linux-only")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LIB_C = r"""
#include <stdlib.h>
__attribute__((noinline)) void *nf_inner(size_t n) { void *p = malloc(n); return p; }
__attribute__((noinline)) void *nf_outer(size_t n) { void *p = nf_inner(n); return p; }
void nf_free(void *p) { free(p); }
/* Two callers of the same leaf, called from the same place with the same
 * stack depth: a path cache must tell them apart. */
__attribute__((noinline)) void *nf_via_a(size_t n) { void *p = nf_inner(n); return p; }
__attribute__((noinline)) void *nf_via_b(size_t n) { void *p = nf_inner(n); return p; }
void nf_loop(int k, size_t n, void **out) {
    for (int i = 0; i < k; i++) {
        out[i] = (i & 1) ? nf_via_b(n) : nf_via_a(n);
    }
}
"""

SIZE = 77_777       # an odd size, to pick the block out


@pytest.fixture(scope="module")
def libpath(tmp_path_factory):
    d = tmp_path_factory.mktemp("nframes")
    src = d / "libnf.c"
    src.write_text(LIB_C)
    out = str(d / "libnf.so")
    subprocess.run([compiler(), "-shared", "-fPIC", "-O0", "-fno-omit-frame-pointer",
                    "-fno-inline", "-o", out, str(src)], check=True, capture_output=True)
    return out


def load(path):
    lib = ctypes.CDLL(path)
    lib.nf_outer.restype = ctypes.c_void_p
    lib.nf_outer.argtypes = [ctypes.c_size_t]
    lib.nf_free.argtypes = [ctypes.c_void_p]
    return lib




def blocks_of(snapshot, size=SIZE):
    return [t for t in snapshot.traces if t.size == size and t.domain == NATIVE_DOMAIN]


def check_chain(trace, libpath):
    frames = trace.native_frames
    assert all(isinstance(f, NativeFrame) for f in frames)
    assert [f.function for f in frames[:2]] == ["nf_inner", "nf_outer"], frames
    assert frames[0].library == frames[1].library == libpath
    assert 0 < frames[0].offset < frames[1].offset < 1 << 20


def test_native_frames_name_inner_then_outer(libpath):
    heaptrace.start(3, native=True, native_frames=True)
    lib = load(libpath)
    p = lib.nf_outer(SIZE)   # MARK-outer-call
    snapshot = heaptrace.take_snapshot()
    lib.nf_free(p)
    (trace,) = blocks_of(snapshot)
    check_chain(trace, libpath)
    assert len(trace.native_frames) <= 16
    newest = trace.traceback[-1]
    assert newest.filename == __file__
    assert "MARK-outer-call" in open(__file__).read().splitlines()[newest.lineno - 1]
    # Blocks of Python's own allocators have no native frames.
    assert all(t.native_frames == () for t in snapshot.traces if t.domain != NATIVE_DOMAIN)
    assert heaptrace.get_tracemalloc_memory() > 0


def test_native_frames_need_native_and_cannot_be_added_later(libpath):
    with pytest.raises(ValueError):
        heaptrace.start(1, native_frames=True)
    assert not heaptrace.is_tracing()
    heaptrace.start(1, native=True)
    with pytest.raises(RuntimeError, match="without native frames"):
        heaptrace.start(1, native=True, native_frames=True)
    assert heaptrace.is_native()
    heaptrace.stop()
    # Without native_frames, native blocks have none.
    heaptrace.start(1, native=True)
    lib = load(libpath)
    p = lib.nf_outer(SIZE)
    (trace,) = blocks_of(heaptrace.take_snapshot())
    lib.nf_free(p)
    assert trace.native_frames == ()


def test_dump_load_round_trip_and_filters(libpath, tmp_path):
    heaptrace.start(2, native=True, native_frames=True)
    lib = load(libpath)
    p = lib.nf_outer(SIZE)
    snapshot = heaptrace.take_snapshot()
    lib.nf_free(p)
    heaptrace.stop()
    path = tmp_path / "s.hts"
    snapshot.dump(path)
    data = path.read_bytes()
    assert struct.unpack_from("<II", data, 8) == (2, 1)     # version 2, native flag
    loaded = Snapshot.load(path)
    before = [(t.size, t.native_frames) for t in snapshot.traces]
    after = [(t.size, t.native_frames) for t in loaded.traces]
    assert before == after
    (trace,) = blocks_of(loaded)
    check_chain(trace, libpath)
    only_native = loaded.filter_traces([heaptrace.DomainFilter(True, NATIVE_DOMAIN)])
    (trace,) = blocks_of(only_native)
    check_chain(trace, libpath)
    # Native frames stay when the list of raw tuples has been built.
    assert loaded.traces[0] in loaded.traces
    assert [(t.size, t.native_frames) for t in loaded.traces] == after
    # Raw tuples and pickles carry none.
    assert Snapshot(list(loaded.traces._traces), 2).traces[0].native_frames == ()
    unpickled = pickle.loads(pickle.dumps(loaded))
    assert all(t.native_frames == () for t in unpickled.traces)


def test_version_1_files_still_load():
    path = os.path.join(REPO, "fuzz", "corpus", "v1_rank_map.htsnap")
    with open(path, "rb") as f:
        assert struct.unpack_from("<I", f.read(12), 8) == (1,)
    snapshot = Snapshot.load(path)
    assert len(snapshot.traces) == 1000
    assert all(t.native_frames == () for t in snapshot.traces)
    assert snapshot.statistics("lineno")


def test_top_native_frames(libpath, tmp_path):
    prog = tmp_path / "prog.py"
    snap = tmp_path / "t.hts"
    prog.write_text(
        "import ctypes, sys, heaptrace\n"
        "heaptrace.start(3, native=True, native_frames=True)\n"
        f"lib = ctypes.CDLL({libpath!r})\n"
        "lib.nf_outer.restype = ctypes.c_void_p\n"
        f"keep = [lib.nf_outer({SIZE}) for _ in range(4)]\n"
        "heaptrace.take_snapshot().dump(sys.argv[1])\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(heaptrace.__file__)))
    subprocess.run([sys.executable, str(prog), str(snap)], check=True, env=env)
    top = subprocess.run([sys.executable, "-m", "heaptrace", "top", "--native-frames",
                          "--limit", "1", str(snap)],
                         capture_output=True, text=True, env=env)
    assert top.returncode == 0, top.stderr
    lines = top.stdout.splitlines()
    assert "prog.py:5" in lines[1]
    # (The interpreter's own frames below ctypes can differ between the
    # first calls and later, specialised ones: the 4 blocks may come in
    # more than one path; the biggest names the library's two frames.)
    assert lines[3].strip().startswith("native: ") and " blocks" in lines[3]
    assert lines[4].strip().startswith("nf_inner (libnf.so+0x")
    assert lines[5].strip().startswith("nf_outer (libnf.so+0x")
    plain = subprocess.run([sys.executable, "-m", "heaptrace", "top", "--limit", "1",
                            str(snap)], capture_output=True, text=True, env=env)
    assert "native:" not in plain.stdout and "nf_inner" not in plain.stdout
    full = subprocess.run([sys.executable, "-m", "heaptrace", "top", "--native-frames",
                           "--full-paths", "--json", "--limit", "1", str(snap)],
                          capture_output=True, text=True, env=env)
    import json
    paths = json.loads(full.stdout)["stats"][0]["native_paths"]
    assert sum(p["count"] for p in paths) == 4
    assert sum(p["size"] for p in paths) == 4 * SIZE
    for path in paths:
        assert [f["function"] for f in path["frames"][:2]] == ["nf_inner", "nf_outer"]
        assert path["frames"][0]["library"] == libpath


def test_threads_without_the_gil(libpath):
    heaptrace.start(1, native=True, native_frames=True)
    lib = load(libpath)
    done = threading.Event()
    kept = []
    lock = threading.Lock()

    def work():
        mine = [lib.nf_outer(SIZE) for _ in range(200)]
        with lock:
            kept.extend(mine)

    def snapshots():
        while not done.is_set():
            heaptrace.take_snapshot()

    watcher = threading.Thread(target=snapshots)
    watcher.start()
    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    watcher.join()
    traces = blocks_of(heaptrace.take_snapshot())
    for p in kept:
        lib.nf_free(p)
    assert len(traces) == 800
    for trace in traces:
        check_chain(trace, libpath)


# ---- corrupt native-frame sections ------------------------------------------

def _crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _native_file(libpath, tmp_path):
    heaptrace.start(1, native=True, native_frames=True)
    lib = load(libpath)
    p = lib.nf_outer(SIZE)
    snapshot = heaptrace.take_snapshot()
    lib.nf_free(p)
    heaptrace.stop()
    snapshot = snapshot.filter_traces([heaptrace.DomainFilter(True, NATIVE_DOMAIN)])
    path = tmp_path / "n.hts"
    snapshot.dump(path)
    data = path.read_bytes()
    native_at = 84 + sum(struct.unpack_from("<5Q", data, 40))
    return bytearray(data), native_at


def _fix_crcs(data):
    struct.pack_into("<I", data, 80, _crc32c(bytes(data[:80])))
    struct.pack_into("<I", data, len(data) - 4, _crc32c(bytes(data[84:-4])))


def test_corrupt_native_sections_are_rejected_cleanly(libpath, tmp_path):
    data, at = _native_file(libpath, tmp_path)
    path = tmp_path / "bad.hts"
    # A damaged length, behind valid file checksums: its own CRC catches it.
    bad = bytearray(data)
    bad[at] ^= 0x40
    _fix_crcs(bad)
    path.write_bytes(bad)
    with pytest.raises(SnapshotFormatError, match="native frame section length") as e:
        Snapshot.load(path)
    assert e.value.status == "CORRUPT"
    # A file cut inside the native section.
    path.write_bytes(data[:at + 20])
    with pytest.raises(SnapshotFormatError, match="truncated") as e:
        Snapshot.load(path)
    # A huge frame count: refused before anything is allocated.
    bad = bytearray(data[:at + 12]) + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1])
    struct.pack_into("<Q", bad, at, 6)
    struct.pack_into("<I", bad, at + 8, _crc32c(bytes(bad[at:at + 8])))
    bad += b"\0\0\0\0"
    _fix_crcs(bad)
    path.write_bytes(bad)
    with pytest.raises(SnapshotFormatError, match="claims 4294967295 frames") as e:
        Snapshot.load(path)
    assert e.value.status == "TOO_LARGE"
    # Every byte of the section replaced, checksums recomputed: a valid
    # snapshot or a clean error, never anything else.
    errors = 0
    for i in range(at + 12, len(data) - 4):
        for value in (0x00, 0x01, 0x7F, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] = value
            _fix_crcs(bad)
            path.write_bytes(bad)
            try:
                for trace in Snapshot.load(path).traces:
                    trace.native_frames
            except SnapshotFormatError as exc:
                assert exc.status in ("CORRUPT", "TOO_LARGE", "TRUNCATED"), exc
                assert "\n" not in str(exc)
                errors += 1
    assert errors > 0


def test_same_leaf_from_two_callers_keeps_each_path(libpath):
    """malloc called over and over from the same leaf at the same stack
    depth, alternately through two callers: each block's path names its
    own caller (the capture may reuse an unwound path only when the stack
    still holds the same return addresses)."""
    lib = load(libpath)
    lib.nf_loop.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
    out = (ctypes.c_void_p * 40)()
    heaptrace.start(1, native=True, native_frames=True)
    lib.nf_loop(40, SIZE, out)
    blocks = blocks_of(heaptrace.take_snapshot())
    assert len(blocks) == 40
    callers = sorted(b.native_frames[1].function for b in blocks)
    assert callers == ["nf_via_a"] * 20 + ["nf_via_b"] * 20
    assert all(b.native_frames[0].function == "nf_inner" for b in blocks)
    assert all(b.native_frames[2].function == "nf_loop" for b in blocks)
    for p in out:
        lib.nf_free(p)
