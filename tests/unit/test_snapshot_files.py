"""Snapshot.dump/load: heaptrace's file format, tracemalloc pickles, and a
loader that gives a clean SnapshotFormatError for any bad input."""
import os
import pickle
import random
import resource
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc as std
from contextlib import contextmanager

import pytest

import heaptrace as ht
from heaptrace import SnapshotFormatError

MAGIC = b"\x89HTSNAP\n"


@contextmanager
def time_limit(seconds):
    """Fail the test instead of hanging."""
    def expired(signum, frame):
        raise AssertionError("the loader took more than %s s" % seconds)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def random_raw(n, seed=1, nfiles=20, depth=3):
    rng = random.Random(seed)
    files = ["/src/mod%d.py" % i for i in range(nfiles)]
    tbs = []
    for _ in range(max(1, n // 10)):
        frames = tuple((rng.choice(files), rng.randrange(1, 500))
                       for _ in range(rng.randrange(1, depth + 1)))
        tbs.append((frames, rng.choice([len(frames), len(frames) + 7, None])))
    raw = []
    for _ in range(n):
        frames, total = rng.choice(tbs)
        raw.append((rng.choice([0, 0, 0, 5]), rng.randrange(1, 5000), frames, total))
    return raw


def load_bytes(tmp_path, data, name="f.snap"):
    path = tmp_path / name
    path.write_bytes(data)
    with time_limit(20):
        return ht.Snapshot.load(path)


def assert_same(a, b):
    assert type(b) is ht.Snapshot
    assert b.traceback_limit == a.traceback_limit
    assert b.traces._traces == a.traces._traces
    assert [t.traceback.total_nframe for t in b.traces] == \
        [t.traceback.total_nframe for t in a.traces]


def small_file(tmp_path):
    snapshot = ht.Snapshot(random_raw(6, depth=2, nfiles=3), 4)
    snapshot.note = "x"
    path = tmp_path / "small.snap"
    snapshot.dump(path)
    return snapshot, path.read_bytes()


def load_bad(tmp_path, data):
    """Load data; it must either raise SnapshotFormatError or give a Snapshot."""
    try:
        return load_bytes(tmp_path, data)
    except SnapshotFormatError as error:
        assert str(error)
        return error


# -- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("raw,limit", [
    ([], 1),
    ([(0, 10, (("a.py", 1),), 1)], 1),
    (random_raw(500), 25),
    ([(0, 1, (("a.py", 1), ("b.py", 2)), None), (7, 2**40, (("a.py", 1),), 9),
      (2**32 - 1, 0, (), 0)], 2**31 - 1),
    ([(0, 3, (("é/ü/日本.py", 2**32 - 1), ("bad\udcff\ud800.py", 0)), 2)], 10),
    ([(0, 3, (("", 0),), 1)], 0),
])
def test_round_trip(tmp_path, raw, limit):
    snapshot = ht.Snapshot(raw, limit)
    snapshot.dump(tmp_path / "s.snap")
    loaded = ht.Snapshot.load(tmp_path / "s.snap")
    assert_same(snapshot, loaded)
    assert loaded.statistics("traceback") == snapshot.statistics("traceback")
    assert tmp_path.joinpath("s.snap").read_bytes()[:8] == MAGIC


def test_round_trip_of_a_live_snapshot(tmp_path):
    ht.start(5)
    try:
        kept = [bytearray(100) for _ in range(50)]
        snapshot = ht.take_snapshot()
    finally:
        ht.stop()
    snapshot.dump(str(tmp_path / "live.snap"))
    loaded = ht.Snapshot.load(str(tmp_path / "live.snap"))
    assert_same(snapshot, loaded)
    del kept


def test_extra_attributes(tmp_path):
    snapshot = ht.Snapshot(random_raw(20), 3)
    snapshot.timestamp = 1700000000.25
    snapshot.test_attr = "new"
    snapshot.data = {"a": [1, 2.5, None, True, "\udcff"], "b": {"c": -2**70}}
    snapshot.dump(tmp_path / "s.snap")
    loaded = ht.Snapshot.load(tmp_path / "s.snap")
    for name in ("timestamp", "test_attr", "data"):
        assert getattr(loaded, name) == getattr(snapshot, name)
    assert_same(snapshot, loaded)


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, b"x", object(), {"a": {3}}])
def test_dump_refuses_attributes_that_are_not_plain_data(tmp_path, value):
    snapshot = ht.Snapshot([], 1)
    snapshot.odd = value
    with pytest.raises(TypeError, match="'odd'"):
        snapshot.dump(tmp_path / "s.snap")


def test_dump_refuses_cycles(tmp_path):
    snapshot = ht.Snapshot([], 1)
    snapshot.loop = []
    snapshot.loop.append(snapshot.loop)
    with pytest.raises(TypeError, match="'loop'"):
        snapshot.dump(tmp_path / "s.snap")


def test_file_is_smaller_than_the_standard_pickle(tmp_path):
    raw = random_raw(5000, depth=5, nfiles=60)
    ht.Snapshot(raw, 5).dump(tmp_path / "ours.snap")
    std.Snapshot(raw, 5).dump(str(tmp_path / "std.pickle"))
    ours = os.path.getsize(tmp_path / "ours.snap")
    theirs = os.path.getsize(tmp_path / "std.pickle")
    assert ours < theirs / 2, (ours, theirs)


def test_pickle_dumps_of_a_snapshot_still_works(tmp_path):
    snapshot = ht.Snapshot(random_raw(30), 3)
    snapshot.note = "kept"
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(snapshot, protocol))
        assert_same(snapshot, copy)
        # and Snapshot.load reads such pickles through the restricted path
        loaded = load_bytes(tmp_path, pickle.dumps(snapshot, protocol))
        assert_same(snapshot, loaded)
        assert loaded.note == "kept"


# -- tracemalloc pickles ------------------------------------------------------


def test_loads_real_stdlib_pickles(tmp_path):
    program = textwrap.dedent("""
        import pickle, sys, tracemalloc
        tracemalloc.start(4)
        kept = [bytearray(64) for _ in range(100)]
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        snapshot.label = "stdlib"
        snapshot.dump(sys.argv[1] + "/dump.pickle")
        for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
            with open(sys.argv[1] + "/p%d.pickle" % protocol, "wb") as f:
                pickle.dump(snapshot, f, protocol)
    """)
    subprocess.run([sys.executable, "-c", program, str(tmp_path)], check=True)
    names = sorted(os.listdir(tmp_path))
    assert "dump.pickle" in names and "p2.pickle" in names
    for name in names:
        with open(tmp_path / name, "rb") as f:
            expected = pickle.load(f)
        loaded = ht.Snapshot.load(tmp_path / name)
        assert type(loaded) is ht.Snapshot
        assert loaded.traceback_limit == expected.traceback_limit == 4
        assert loaded.traces._traces == expected.traces._traces
        assert loaded.label == "stdlib"
        assert ([str(s) for s in loaded.statistics("lineno")]
                == [str(s) for s in expected.statistics("lineno")])


def test_legacy_three_item_traces_load():
    data = pickle.dumps(std.Snapshot([(0, 5, (("a.py", 1),))], 1), 2)
    loaded = ht._api._snapshot_from_bytes(data, "x")
    assert loaded.traces._traces == [(0, 5, (("a.py", 1),), None)]


# -- hostile heaptrace files ---------------------------------------------------


def test_every_prefix_of_a_file_is_refused(tmp_path):
    snapshot, data = small_file(tmp_path)
    assert_same(snapshot, load_bytes(tmp_path, data))
    for cut in range(len(data)):
        with pytest.raises(SnapshotFormatError):
            load_bytes(tmp_path, data[:cut])


def test_every_bit_flip_is_refused(tmp_path):
    _, data = small_file(tmp_path)
    for byte in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[byte] ^= 1 << bit
            with pytest.raises(SnapshotFormatError):
                load_bytes(tmp_path, bytes(bad))


def test_status_names(tmp_path):
    _, data = small_file(tmp_path)
    with pytest.raises(SnapshotFormatError) as info:
        load_bytes(tmp_path, data[:40])
    assert info.value.status == "TRUNCATED"
    assert isinstance(info.value, ValueError)
    with pytest.raises(SnapshotFormatError) as info:
        load_bytes(tmp_path, data[:-1] + bytes([data[-1] ^ 1]))
    assert info.value.status == "CORRUPT"


def test_spliced_files(tmp_path):
    rng = random.Random(7)
    _, a = small_file(tmp_path)
    snapshot = ht.Snapshot(random_raw(40, seed=3), 2)
    snapshot.dump(tmp_path / "b.snap")
    b = (tmp_path / "b.snap").read_bytes()
    for _ in range(300):
        i, j = rng.randrange(len(a)), rng.randrange(len(b))
        result = load_bad(tmp_path, a[:i] + b[j:])
        if not isinstance(result, SnapshotFormatError):
            assert type(result) is ht.Snapshot


def test_random_bytes(tmp_path):
    rng = random.Random(11)
    for n in list(range(0, 100)) + [1000, 100000]:
        data = bytes(rng.randrange(256) for _ in range(n))
        for prefix in (b"", MAGIC, b"\x80\x04"):
            with pytest.raises(SnapshotFormatError):
                load_bytes(tmp_path, prefix + data)


@pytest.mark.parametrize("data", [b"", b"hello, world\n", b"\x80", b"\x80\x01.",
                                  b"{\"attributes\": {}}", b"(lp0\n."])
def test_neither_kind(tmp_path, data):
    with pytest.raises(SnapshotFormatError, match="neither|truncated|pickle"):
        load_bytes(tmp_path, data)


def test_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        ht.Snapshot.load(tmp_path / "missing.snap")
    with pytest.raises(IsADirectoryError):
        ht.Snapshot.load(tmp_path)


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def with_header(data, **fields):
    """Patch header fields of a file and fix its header checksum."""
    offsets = {"ntraces": (32, "<Q"), "nstrings": (20, "<I"),
               "ntracebacks": (28, "<I"), "trace_len": (72, "<Q")}
    head = bytearray(data[:80])
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, head, offset, value)
    return bytes(head) + struct.pack("<I", crc32c(bytes(head))) + data[84:]


def test_header_claiming_huge_counts_fails_fast(tmp_path):
    _, data = small_file(tmp_path)
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(data[:80]) == struct.unpack_from("<I", data, 80)[0]
    cases = [with_header(data, ntraces=2**40), with_header(data, nstrings=2**32 - 1),
             with_header(data, ntracebacks=2**31),
             with_header(data, ntraces=2**40, trace_len=2**60)]
    program = textwrap.dedent("""
        import os, resource, sys, heaptrace
        # An address-space limit also catches a huge allocation that is never
        # touched; AddressSanitizer (make sanitize) reserves terabytes of
        # address space itself, so there only the resident-size check holds.
        if "asan" not in os.environ.get("LD_PRELOAD", ""):
            limit = 300 * 2**20 + resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit * 2, limit * 2))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in sys.argv[1:]:
            try:
                heaptrace.Snapshot.load(path)
            except heaptrace.SnapshotFormatError as error:
                print(error.status, error)
            else:
                raise SystemExit("loaded " + path)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown < 20 * 1024, grown   # KiB
    """)
    paths = []
    for index, case in enumerate(cases):
        paths.append(str(tmp_path / ("huge%d.snap" % index)))
        with open(paths[-1], "wb") as f:
            f.write(case)
    out = subprocess.run([sys.executable, "-c", program] + paths, timeout=60,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == len(cases)
    assert "TOO_LARGE" in out.stdout or "TRUNCATED" in out.stdout


# -- hostile pickles -------------------------------------------------------------


class Calls:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def std_pickle(raw, limit=1, protocol=4, **attributes):
    snapshot = std.Snapshot(raw, limit)
    snapshot.__dict__.update(attributes)
    return pickle.dumps(snapshot, protocol)


def hostile_pickles():
    import builtins
    good = [(0, 1, (("a.py", 1),), 1)]
    yield "os.system", pickle.dumps(Calls(os.system, "echo pwned"), 2)
    yield "os.system p4", pickle.dumps(Calls(os.system, "echo pwned"), 4)
    yield "eval", pickle.dumps(Calls(builtins.eval, "1+1"), 4)
    yield "Popen", pickle.dumps(Calls(subprocess.Popen, ["true"]), 4)
    yield "attr calls", std_pickle(good, evil=Calls(os.system, "echo pwned"))
    yield "global text", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueR."
    yield "REDUCE on Snapshot", b"\x80\x02ctracemalloc\nSnapshot\n(]K\x01tR."
    yield "NEWOBJ args", b"\x80\x02ctracemalloc\nSnapshot\nK\x01\x85\x81."
    yield "setstate key", (b"\x80\x02ctracemalloc\nSnapshot\n)\x81}X\x0c\x00\x00\x00"
                           b"__setstate__cos\nsystem\nsb.")
    yield "BUILD tuple state", b"\x80\x02ctracemalloc\nSnapshot\n)\x81N}\x86b."
    yield "deep nesting", (b"\x80\x04" + b"]" * 200000 + b"a" * 199999 + b".")
    nested = b"".join([b"\x80\x04K\x01K\x02\x86"] + [b"\x94h%c\x86" % i for i in range(40)])
    yield "laughs as key", nested + b"}\x94(" + b"h%c" % 40 + b"K\x01u."
    yield "huge memo", b"\x80\x02Nr\xff\xff\xff\x7f."
    yield "huge bytes", b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"x."
    yield "huge string", b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"x."
    yield "huge frame", b"\x80\x04\x95" + struct.pack("<Q", 2**62) + b"N."
    yield "bytearray", pickle.dumps(bytearray(b"xx"), 5)
    yield "not a snapshot", pickle.dumps([1, 2, 3], 4)
    yield "traces not a list", std_pickle((), 1)
    yield "trace of 5", std_pickle([(0, 1, (("a.py", 1),), 1, 9)])
    yield "trace of 2", std_pickle([(0, 1)])
    yield "trace a list", std_pickle([[0, 1, (("a.py", 1),), 1]])
    yield "filename int", std_pickle([(0, 1, ((3, 1),), 1)])
    yield "lineno str", std_pickle([(0, 1, (("a.py", "1"),), 1)])
    yield "negative size", std_pickle([(0, -1, (("a.py", 1),), 1)])
    yield "domain too big", std_pickle([(2**40, 1, (("a.py", 1),), 1)])
    yield "frames a list", std_pickle([(0, 1, [("a.py", 1)], 1)])
    yield "limit a str", std_pickle(good, "1")
    yield "limit negative", std_pickle(good, -1)
    yield "trailing data", std_pickle(good) + b"x"
    yield "truncated", std_pickle(good)[:-3]
    snap = std.Snapshot(good, 1)
    del snap.traceback_limit
    yield "no limit", pickle.dumps(snap, 4)
    snap = std.Snapshot(good, 1)
    snap.traces = good
    yield "traces a list", pickle.dumps(snap, 4)


@pytest.mark.parametrize("name,data", list(hostile_pickles()),
                         ids=[name for name, _ in hostile_pickles()])
def test_hostile_pickles_are_refused(tmp_path, name, data, capfd):
    with pytest.raises(SnapshotFormatError) as info:
        load_bytes(tmp_path, data)
    assert str(info.value)
    assert "pwned" not in capfd.readouterr().out


@pytest.mark.parametrize("name,global_", [
    ("os.system", "system"), ("eval", "builtins.eval"), ("Popen", "subprocess.Popen")])
def test_refusals_name_the_global(tmp_path, name, global_):
    data = dict(hostile_pickles())[name]
    with pytest.raises(SnapshotFormatError, match="refuses to load global '.*%s'"
                       % global_.replace(".", r"\.")):
        load_bytes(tmp_path, data)


def test_hostile_pickle_memory_stays_small(tmp_path):
    cases = dict(hostile_pickles())
    names = ["huge memo", "huge bytes", "huge string", "huge frame", "laughs as key"]
    paths = []
    for index, name in enumerate(names):
        paths.append(str(tmp_path / ("p%d" % index)))
        with open(paths[-1], "wb") as f:
            f.write(cases[name])
    program = textwrap.dedent("""
        import resource, sys, heaptrace
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in sys.argv[1:]:
            try:
                heaptrace.Snapshot.load(path)
            except heaptrace.SnapshotFormatError as error:
                pass
            else:
                raise SystemExit("loaded " + path)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown < 20 * 1024, grown   # KiB
    """)
    out = subprocess.run([sys.executable, "-c", program] + paths, timeout=60,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr


def test_random_mutations_of_a_stdlib_pickle(tmp_path):
    rng = random.Random(5)
    data = std_pickle(random_raw(20, seed=9), 3, label=[1, "x"])
    for _ in range(1500):
        bad = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            bad[rng.randrange(2, len(bad))] = rng.randrange(256)
        result = load_bad(tmp_path, bytes(bad))
        if not isinstance(result, SnapshotFormatError):
            assert type(result) is ht.Snapshot


# Issue 8.17: a snapshot cut short says so, whatever its kind and wherever
# the cut falls, with status TRUNCATED (the CLI words its message on it).
def test_cut_files_say_truncated(tmp_path):
    _, data = small_file(tmp_path)
    std.Snapshot(random_raw(30), 3).dump(tmp_path / "std.pickle")
    pickled = (tmp_path / "std.pickle").read_bytes()
    for whole in (data, pickled):
        for cut in sorted({1, 2, 5, 8, 40, 84, 85, len(whole) // 2, len(whole) - 1}):
            with pytest.raises(SnapshotFormatError) as info:
                load_bytes(tmp_path, whole[:cut])
            assert info.value.status == "TRUNCATED", (cut, str(info.value))
            assert "truncated" in str(info.value)
