"""Behaviour of heaptrace's API objects beyond the numbers they hold.

Equality, hashing, ordering and the sequence protocol, snapshot files
(including those of the standard module), the functions that call the
engine, and the package namespace; compared with tracemalloc where it has
an opinion.
"""
import linecache
import pickle
import random
import tracemalloc as std
from unittest import mock

import pytest

import heaptrace as ht

RAW = [
    (0, 10, (("a.py", 2), ("b.py", 4)), 3),
    (1, 20, (("a.py", 5), ("b.py", 4)), None),
    (2, 66, (("b.py", 1),), 1),
]


def random_frames(seed, count):
    rng = random.Random(seed)
    return [(rng.choice(("a.py", "b.py", "c/d.py", "<unknown>", "B.py")),
             rng.randrange(5)) for _ in range(count)]


# -- equality, hashing, ordering ---------------------------------------------


def test_frame_order_matches():
    pairs = random_frames(1, 300)
    ours = sorted(ht.Frame(pair) for pair in pairs)
    theirs = sorted(std.Frame(pair) for pair in pairs)
    assert [f._frame for f in ours] == [f._frame for f in theirs]


def test_traceback_order_matches():
    pairs = random_frames(2, 600)
    stacks = [tuple(pairs[i:i + 1 + i % 4]) for i in range(0, 600, 3)]
    ours = sorted(ht.Traceback(stack) for stack in stacks)
    theirs = sorted(std.Traceback(stack) for stack in stacks)
    assert [tb._frames for tb in ours] == [tb._frames for tb in theirs]
    # Tracebacks order on their frames oldest first, not as recorded.
    first, second = ht.Traceback((("z.py", 1), ("a.py", 1))), ht.Traceback((("a.py", 1), ("b.py", 1)))
    assert first < second
    assert not first > second
    assert first <= first


def test_frame_equality_and_hash():
    frame = ht.Frame(("a.py", 3))
    assert frame == ht.Frame(("a.py", 3))
    assert hash(frame) == hash(ht.Frame(("a.py", 3)))
    assert frame != ht.Frame(("a.py", 4))
    assert frame != ("a.py", 3)
    assert frame != std.Frame(("a.py", 3))
    assert ht.Frame(("a.py", 3)) < ht.Frame(("a.py", 4)) < ht.Frame(("b.py", 0))
    with pytest.raises(TypeError):
        frame < ("a.py", 4)


def test_traceback_equality_ignores_total_nframe():
    frames = (("a.py", 2), ("b.py", 4))
    assert ht.Traceback(frames, 2) == ht.Traceback(frames, 30)
    assert hash(ht.Traceback(frames, 2)) == hash(ht.Traceback(frames))
    assert ht.Traceback(frames) != ht.Traceback(frames[::-1])
    assert ht.Traceback(frames) != frames
    with pytest.raises(TypeError):
        ht.Traceback(frames) < frames


def test_trace_equality_and_hash():
    assert ht.Trace(RAW[0]) == ht.Trace(RAW[0])
    assert hash(ht.Trace(RAW[0])) == hash(ht.Trace(tuple(RAW[0])))
    assert ht.Trace(RAW[0]) != ht.Trace(RAW[1])
    # The whole raw trace counts, total_nframe included.
    assert ht.Trace(RAW[0]) != ht.Trace(RAW[0][:3] + (4,))
    assert ht.Trace(RAW[0]) != RAW[0]


def test_statistic_equality_and_hash():
    tb = ht.Traceback((("a.py", 1),))
    stat = ht.Statistic(tb, 10, 2)
    assert stat == ht.Statistic(ht.Traceback((("a.py", 1),)), 10, 2)
    assert hash(stat) == hash(ht.Statistic(tb, 10, 2))
    assert stat != ht.Statistic(tb, 10, 3)
    assert stat != ht.StatisticDiff(tb, 10, 0, 2, 0)
    diff = ht.StatisticDiff(tb, 10, 5, 2, 1)
    assert diff == ht.StatisticDiff(tb, 10, 5, 2, 1)
    assert hash(diff) == hash(ht.StatisticDiff(tb, 10, 5, 2, 1))
    assert diff != ht.StatisticDiff(tb, 10, 5, 2, 0)


def test_traces_equality():
    assert ht.Snapshot(RAW, 1).traces == ht.Snapshot(list(RAW), 9).traces
    assert ht.Snapshot(RAW, 1).traces != ht.Snapshot(RAW[:2], 1).traces
    assert ht.Snapshot(RAW, 1).traces != RAW
    with pytest.raises(TypeError):
        hash(ht.Snapshot(RAW, 1).traces)


# -- sequences ---------------------------------------------------------------


def test_traceback_is_a_sequence_oldest_first():
    frames = (("new.py", 3), ("mid.py", 2), ("old.py", 1))
    tb = ht.Traceback(frames, 7)
    assert len(tb) == 3
    assert tb.total_nframe == 7
    assert [str(frame) for frame in tb] == ["old.py:1", "mid.py:2", "new.py:3"]
    assert tb[-1] == ht.Frame(("new.py", 3))
    assert tb[:2] == (ht.Frame(("old.py", 1)), ht.Frame(("mid.py", 2)))
    assert type(tb[:2]) is tuple
    assert ht.Frame(("mid.py", 2)) in tb
    assert ht.Frame(("mid.py", 9)) not in tb
    assert list(reversed(tb))[0] == ht.Frame(("new.py", 3))
    assert tb.index(ht.Frame(("mid.py", 2))) == 1
    assert tb.count(ht.Frame(("old.py", 1))) == 1
    with pytest.raises(IndexError):
        tb[3]
    assert str(tb) == "old.py:1"


def test_traceback_accepts_a_list_of_frames():
    assert ht.Traceback([("a.py", 1), ("b.py", 2)])._frames == (("b.py", 2), ("a.py", 1))


def test_snapshot_traces_are_a_sequence_of_trace():
    traces = ht.Snapshot(RAW, 2).traces
    assert len(traces) == 3
    assert traces[2].size == 66
    assert traces[-1].domain == 2
    assert traces[:2] == (ht.Trace(RAW[0]), ht.Trace(RAW[1]))
    assert ht.Trace(RAW[1]) in traces
    assert ht.Trace((9, 1, (("x.py", 1),), 1)) not in traces
    assert [trace.size for trace in traces] == [10, 20, 66]
    with pytest.raises(IndexError):
        traces[3]


def test_trace_traceback_carries_total_nframe():
    trace = ht.Snapshot(RAW, 2).traces[0]
    assert trace.traceback.total_nframe == 3
    assert trace.traceback == ht.Traceback(RAW[0][2])
    assert ht.Trace(RAW[1]).traceback.total_nframe is None
    # A trace without total_nframe (the format before Python 3.9) still works.
    assert ht.Trace(RAW[0][:3]).traceback.total_nframe is None


# -- filters -------------------------------------------------------------------


def test_filter_attributes():
    f = ht.Filter(True, "pkg/mod.pyc")
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames, f.domain) == (
        True, "pkg/mod.py", None, False, None)
    f = ht.Filter(inclusive=False, filename_pattern="x.py", lineno=3,
                  all_frames=True, domain=5)
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames, f.domain) == (
        False, "x.py", 3, True, 5)
    with pytest.raises(AttributeError):
        f.filename_pattern = "y.py"
    f.domain = 6
    f.lineno = None
    assert (f.domain, f.lineno) == (6, None)
    assert isinstance(f, ht.BaseFilter)


def test_domain_filter_attributes():
    f = ht.DomainFilter(False, 3)
    assert (f.inclusive, f.domain) == (False, 3)
    with pytest.raises(AttributeError):
        f.domain = 4
    assert ht.DomainFilter(inclusive=True, domain=0).domain == 0
    assert isinstance(f, ht.BaseFilter)


def test_base_filter_is_abstract_and_extensible():
    with pytest.raises(NotImplementedError):
        ht.BaseFilter(True)._match(RAW[0])

    class BigBlocks(ht.BaseFilter):
        def _match(self, trace):
            return trace[1] >= 20

    kept = ht.Snapshot(RAW, 1).filter_traces([BigBlocks(True)])
    assert kept.traces._traces == RAW[1:]


@pytest.mark.parametrize("name", ["a.py", "a.pyc", "x/y.pyc", "a.pyo", ""])
def test_normalize_filename_matches(name):
    assert ht._normalize_filename(name) == std._normalize_filename(name)


# -- snapshot files ----------------------------------------------------------


def test_dump_and_load(tmp_path):
    path = tmp_path / "snap.pickle"
    snapshot = ht.Snapshot(RAW, 4)
    snapshot.note = "kept"
    snapshot.dump(path)
    loaded = ht.Snapshot.load(path)
    assert type(loaded) is ht.Snapshot
    assert loaded.traces == snapshot.traces
    assert loaded.traceback_limit == 4
    assert loaded.note == "kept"
    assert loaded.statistics("lineno") == snapshot.statistics("lineno")


def test_loads_snapshots_of_the_standard_module(tmp_path):
    path = tmp_path / "std.pickle"
    original = std.Snapshot(RAW, 3)
    original.top = [3, "plain data"]
    original.dump(path)
    loaded = ht.Snapshot.load(path)
    assert type(loaded) is ht.Snapshot
    assert type(loaded.traces) is ht._Traces
    assert loaded.traces._traces == RAW
    assert loaded.traceback_limit == 3
    assert loaded.top == [3, "plain data"]


def test_standard_pickles_with_api_objects_as_attributes_are_refused(tmp_path):
    # The restricted unpickler rebuilds plain data and the snapshot only.
    path = tmp_path / "std.pickle"
    original = std.Snapshot(RAW, 3)
    original.top = original.statistics("traceback")[0]
    original.dump(path)
    with pytest.raises(ht.SnapshotFormatError, match="Statistic"):
        ht.Snapshot.load(path)


def test_standard_module_loads_our_pickled_snapshots(tmp_path):
    # dump() writes heaptrace's format; pickle.dump still gives a pickle
    # the standard module reads.
    path = tmp_path / "ours.pickle"
    with open(path, "wb") as stream:
        pickle.dump(ht.Snapshot(RAW, 2), stream)
    loaded = std.Snapshot.load(path)
    assert loaded.traces._traces == RAW
    assert loaded.traceback_limit == 2


def test_api_objects_pickle():
    tb = ht.Traceback(RAW[0][2], 3)
    for obj in (ht.Frame(("a.py", 1)), tb, ht.Trace(RAW[0]),
                ht.Statistic(tb, 1, 1), ht.StatisticDiff(tb, 1, 1, 1, 1)):
        copy = pickle.loads(pickle.dumps(obj))
        assert copy == obj
        assert repr(copy) == repr(obj)


# -- functions that call the engine ------------------------------------------


def test_take_snapshot_goes_through_the_package():
    raw = [(0, 5, (("a.py", 2),), 10)]
    with mock.patch.object(ht, "is_tracing", return_value=True), \
            mock.patch.object(ht, "get_traceback_limit", return_value=5), \
            mock.patch.object(ht, "_get_traces", return_value=raw):
        snapshot = ht.take_snapshot()
    assert type(snapshot) is ht.Snapshot
    assert snapshot.traceback_limit == 5
    assert snapshot.traces._traces is raw
    assert snapshot.traces[0].traceback.total_nframe == 10


def test_take_snapshot_requires_tracing():
    with mock.patch.object(ht, "is_tracing", return_value=False):
        with pytest.raises(RuntimeError) as ours:
            ht.take_snapshot()
    with mock.patch.object(std, "is_tracing", return_value=False):
        with pytest.raises(RuntimeError) as theirs:
            std.take_snapshot()
    assert str(ours.value) == str(theirs.value)


def test_get_object_traceback_goes_through_the_package():
    frames = (("new.py", 2), ("old.py", 1))
    with mock.patch.object(ht, "_get_object_traceback", return_value=frames) as get:
        tb = ht.get_object_traceback("some object")
    get.assert_called_once_with("some object")
    assert tb == ht.Traceback(frames)
    assert tb[0] == ht.Frame(("old.py", 1))
    with mock.patch.object(ht, "_get_object_traceback", return_value=None):
        assert ht.get_object_traceback("some object") is None


def test_engine_round_trip():
    ht.start(3)
    try:
        block = bytearray(50_000)
        tb = ht.get_object_traceback(block)
        snapshot = ht.take_snapshot()
    finally:
        ht.stop()
    assert tb is not None
    assert tb[-1] == ht.Frame((__file__, test_engine_round_trip.__code__.co_firstlineno + 3))
    assert snapshot.traceback_limit == 3
    assert any(trace.size >= 50_000 for trace in snapshot.traces)
    with pytest.raises(RuntimeError):
        ht.take_snapshot()


# -- the package namespace ---------------------------------------------------

STANDARD_API = (
    "BaseFilter", "DomainFilter", "Filter", "Frame", "Snapshot", "Statistic",
    "StatisticDiff", "Trace", "Traceback", "clear_traces",
    "get_object_traceback", "get_traceback_limit", "get_traced_memory",
    "get_tracemalloc_memory", "is_tracing", "reset_peak", "start", "stop",
    "take_snapshot",
)


def test_namespace_covers_the_standard_api():
    for name in STANDARD_API:
        assert hasattr(std, name), name
        assert name in ht.__all__, name
    for name in ht.__all__:
        assert hasattr(ht, name), name
    assert len(set(ht.__all__)) == len(ht.__all__)


def test_namespace_details():
    assert ht.linecache is linecache
    assert ht.__version__ == "0.1.0"
    for name in ("_get_traces", "_get_object_traceback", "_format_size",
                 "_normalize_filename", "_Traces", "track", "untrack"):
        assert callable(getattr(ht, name)), name
    namespace = {}
    exec("from heaptrace import *", namespace)
    assert set(STANDARD_API) <= namespace.keys()
