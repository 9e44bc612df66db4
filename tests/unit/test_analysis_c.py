"""Parity of the C analysis (heaptrace._core.SnapshotData) with tracemalloc.

Large seeded random sets of raw traces, with recursion (a frame repeated in
one traceback), '<unknown>' frames, many equal sizes and counts, non-ASCII
and surrogate-escaped file names, equal frames with different total_nframe,
and several domains, go through heaptrace's Snapshot and the standard
module's; statistics for every grouping, compare_to both ways and every
filter form must give identical lists, in the same order, with the same
text.  A test also checks that the C path really is the one taken.
"""
import random
import subprocess
import sys
import tracemalloc as std

import pytest

import heaptrace as ht
from heaptrace import _api

pytestmark = pytest.mark.skipif(
    _api._SnapshotData is None, reason="engine built without SnapshotData")

GROUPINGS = [("traceback", False), ("lineno", False), ("filename", False),
             ("lineno", True), ("filename", True)]

NAMES = ("app.py", "lib/util.py", "lib/util.pyc", "<unknown>", "Ünïcødé.py",
         "caf\udce9.py", "z.py", "a.py", "a.py\x00", "b", "\U0001f600.py",
         "<frozen importlib._bootstrap>")


def random_traces(seed, count, nframe=6, with_empty=False):
    rng = random.Random(seed)
    frames = [(rng.choice(NAMES), rng.choice((0, 1, 2, 3, 10, 11)))
              for _ in range(40)]
    frames.append(("<unknown>", 0))
    tracebacks = []
    for _ in range(300):
        depth = rng.randint(1, nframe)
        tb = [rng.choice(frames) for _ in range(depth)]
        if rng.random() < 0.2 and depth > 1:
            tb[-1] = tb[0]                 # recursion
        tracebacks.append(tuple(tb))
    if with_empty:
        tracebacks.append(())
    traces = []
    for _ in range(count):
        tb = rng.choice(tracebacks)
        total = rng.choice((len(tb), len(tb) + 3, None))
        traces.append((rng.choice((0, 0, 0, 1, 7)),
                       rng.choice((8, 16, 16, 32, 64, 1000)), tb, total))
    return traces


def texts(stats):
    return [(str(s), repr(s)) for s in stats]


def check_same(ours, theirs):
    assert [type(s).__name__ for s in ours] == [type(s).__name__ for s in theirs]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.traceback._frames == b.traceback._frames
        assert a.size == b.size and a.count == b.count
        if hasattr(b, "size_diff"):
            assert a.size_diff == b.size_diff and a.count_diff == b.count_diff
    assert texts(ours) == texts(theirs)


@pytest.fixture(scope="module")
def pair():
    old = random_traces(1, 20000)
    new = random_traces(1, 15000)[:12000] + random_traces(2, 6000)
    return ((ht.Snapshot(old, 6), std.Snapshot(old, 6)),
            (ht.Snapshot(new, 6), std.Snapshot(new, 6)))


def test_c_path_is_used(pair, monkeypatch):
    (ours, _), _ = pair
    monkeypatch.setattr(ht.Snapshot, "_grouped", None)
    assert ours.statistics("lineno")
    monkeypatch.setattr(_api, "_keeps", None)
    assert len(ours.filter_traces([ht.Filter(True, "a.py")]).traces)


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
def test_statistics(pair, key_type, cumulative):
    for ours, theirs in pair:
        check_same(ours.statistics(key_type, cumulative),
                   theirs.statistics(key_type, cumulative))


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
def test_compare_to_both_ways(pair, key_type, cumulative):
    (o_ht, o_std), (n_ht, n_std) = pair
    check_same(n_ht.compare_to(o_ht, key_type, cumulative),
               n_std.compare_to(o_std, key_type, cumulative))
    check_same(o_ht.compare_to(n_ht, key_type, cumulative),
               o_std.compare_to(n_std, key_type, cumulative))
    check_same(n_ht.compare_to(n_ht, key_type, cumulative),
               n_std.compare_to(n_std, key_type, cumulative))


def filter_forms(mod):
    F, D = mod.Filter, mod.DomainFilter
    forms = [[]]
    for inclusive in (True, False):
        for pattern in ("a.py", "lib/*", "lib/util.py", "<unknown>",
                        "caf\udce9.py", "Ü*"):
            for lineno in (None, 10, 2**40):
                for all_frames in (False, True):
                    for domain in (None, 7, 99):
                        forms.append([F(inclusive, pattern, lineno,
                                        all_frames, domain)])
        forms.append([D(inclusive, 0)])
        forms.append([D(inclusive, 7)])
        forms.append([D(inclusive, 5)])
    forms.append([F(True, "a.py"), F(True, "z.py", all_frames=True),
                  F(False, "<unknown>"), D(False, 1)])
    forms.append([F(False, "lib/*", all_frames=True), F(False, "*", 3),
                  D(True, 0), F(True, "b", domain=7)])
    return forms


def test_filter_traces():
    raw = random_traces(3, 2000)
    for (ours, theirs) in [(ht.Snapshot(raw, 6), std.Snapshot(raw, 6))]:
        for f_ht, f_std in zip(filter_forms(ht), filter_forms(std)):
            got = ours.filter_traces(f_ht)
            want = theirs.filter_traces(f_std)
            assert got.traces._traces == want.traces._traces, f_std
            assert len(got.traces) == len(want.traces)
            check_same(got.statistics("traceback"),
                       want.statistics("traceback"))


def test_filtered_then_grouped(pair):
    (o_ht, o_std), (n_ht, n_std) = pair
    a = n_ht.filter_traces([ht.Filter(False, "<unknown>")])
    b = n_std.filter_traces([std.Filter(False, "<unknown>")])
    for key_type, cumulative in GROUPINGS:
        check_same(a.compare_to(o_ht, key_type, cumulative),
                   b.compare_to(o_std, key_type, cumulative))


def test_empty_tracebacks():
    raw = random_traces(5, 3000, with_empty=True)
    ours, theirs = ht.Snapshot(raw, 6), std.Snapshot(raw, 6)
    for key_type, cumulative in GROUPINGS:
        try:
            want = theirs.statistics(key_type, cumulative)
        except IndexError:
            with pytest.raises(IndexError):
                ours.statistics(key_type, cumulative)
            continue
        assert [(s.traceback._frames, s.size, s.count)
                for s in ours.statistics(key_type, cumulative)] \
            == [(s.traceback._frames, s.size, s.count) for s in want]
    for f_ht, f_std in [(ht.Filter(True, "a.py", all_frames=True),
                         std.Filter(True, "a.py", all_frames=True)),
                        (ht.Filter(False, "a.py"), std.Filter(False, "a.py"))]:
        try:
            want = theirs.filter_traces([f_std]).traces._traces
        except IndexError:
            with pytest.raises(IndexError):
                ours.filter_traces([f_ht])
            continue
        assert ours.filter_traces([f_ht]).traces._traces == want


def test_raw_round_trip_and_laziness():
    raw = random_traces(9, 5000)
    data = _api._SnapshotData.from_raw(raw, 6)
    assert data.raw_list() == raw
    assert len(data) == len(raw) and data.raw(-1) == raw[-1]
    snap = ht.Snapshot._from_data(data, 6)
    assert len(snap.traces) == len(raw)
    assert snap.traces[3] == ht.Trace(raw[3])
    assert "_traces" not in snap.traces.__dict__
    assert snap.traces._traces == raw


@pytest.mark.parametrize("bad", [
    [(0, 1, [("a", 1)], 1)], [(0, -1, (("a", 1),), 1)], [(0, 1, (("a", -1),), 1)],
    [(0, 1, ((b"a", 1),), 1)], [(0, 1, (("a", 1, 2),), 1)], [(-1, 1, (), 1)],
    [(0, 1)], ["trace"], [(0, 1.0, (), 1)], [(True, 1, (), 1)]])
def test_from_raw_rejects(bad):
    with pytest.raises((TypeError, ValueError)):
        _api._SnapshotData.from_raw(bad, 1)


def test_legacy_three_tuples():
    data = _api._SnapshotData.from_raw([(0, 5, (("a", 1),))], 1)
    assert data.raw(0) == (0, 5, (("a", 1),), None)
    with pytest.raises(ValueError):
        _api._SnapshotData.from_raw([(0, 5, (("a", 1),))], 1, legacy=False)


# Issue 8.4: a snapshot whose file names are all empty has no string bytes at
# all; comparing or grouping it must not hand memcmp/memcpy a NULL pointer
# (the sanitizer build turns that into a failure) and must give the standard
# module's answer.
EMPTY_NAME_SETS = [
    [(0, 10, (("", 1),), 1)],
    [(0, 10, (("", 1), ("", 2)), 2), (0, 5, (("", 1),), 1)],
    [(0, 7, (("a.py", 1),), 1)],
    [(0, 3, (("", 4),), 1), (1, 4, (("a.py", 4), ("", 1)), 2)],
    [],
]


@pytest.mark.parametrize("new", range(len(EMPTY_NAME_SETS)))
@pytest.mark.parametrize("old", range(len(EMPTY_NAME_SETS)))
def test_compare_to_with_empty_file_names(new, old):
    new_raw, old_raw = EMPTY_NAME_SETS[new], EMPTY_NAME_SETS[old]
    ours = ht.Snapshot(new_raw, 2)
    assert ours._snapdata() is not None      # the C analysis is the one tested
    for key_type, cumulative in GROUPINGS:
        got = ours.compare_to(ht.Snapshot(old_raw, 2), key_type, cumulative)
        want = std.Snapshot(new_raw, 2).compare_to(std.Snapshot(old_raw, 2),
                                                  key_type, cumulative)
        check_same(got, want)
        check_same(ours.statistics(key_type, cumulative),
                   std.Snapshot(new_raw, 2).statistics(key_type, cumulative))


def test_live_snapshot_whose_only_file_name_is_empty():
    # Code compiled with an empty file name allocates everything the
    # snapshot holds, so the engine's snapshot builder meets "" first.
    program = (
        "import heaptrace\n"
        "heaptrace.start(1)\n"
        "src = ('heaptrace.clear_traces()\\n'\n"
        "       'keep = [bytearray(100) for _ in range(50)]\\n'\n"
        "       'snap = heaptrace.take_snapshot()\\n')\n"
        "exec(compile(src, '', 'exec'))\n"
        "heaptrace.stop()\n"
        "top = snap.statistics('filename')[0]\n"
        "other = heaptrace.Snapshot([(0, 1, (('a.py', 1),), 1)], 1)\n"
        "snap.compare_to(other, 'lineno')\n"
        "print(repr(top.traceback[0].filename), top.count >= 50)\n")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["''", "True"]


# Issue 8.10: editing snapshot.traces._traces in place, even keeping its
# length, must change what statistics(), compare_to() and filter_traces()
# say, as it does in the standard module, which recomputes every time.
def edited_pairs():
    raw = random_traces(21, 400)
    replacement = (0, 12345, (("edited.py", 7), ("a.py", 1)), 2)
    built = ht.Snapshot(list(raw), 6)
    # the same traces reached through the engine's SnapshotData, whose
    # _traces list is made on first use
    from_data = ht.Snapshot._from_data(_api._SnapshotData.from_raw(raw, 6), 6)
    return raw, replacement, [built, from_data]


@pytest.mark.parametrize("which", [0, 1])
def test_statistics_follow_in_place_edits(which):
    raw, replacement, snaps = edited_pairs()
    ours = snaps[which]
    old = ht.Snapshot(random_traces(22, 300), 6)
    for key_type, cumulative in GROUPINGS:     # analyse, so a cache exists
        ours.statistics(key_type, cumulative)
    ours.compare_to(old, "lineno")
    edited = list(raw)
    for index in (0, 57, len(raw) - 1):
        ours.traces._traces[index] = replacement
        edited[index] = replacement
        theirs = std.Snapshot(list(edited), 6)
        for key_type, cumulative in GROUPINGS:
            check_same(ours.statistics(key_type, cumulative),
                       theirs.statistics(key_type, cumulative))
            check_same(ours.compare_to(old, key_type, cumulative),
                       theirs.compare_to(std.Snapshot(old.traces._traces, 6),
                                         key_type, cumulative))
            check_same(old.compare_to(ours, key_type, cumulative),
                       std.Snapshot(old.traces._traces, 6).compare_to(
                           theirs, key_type, cumulative))
        kept = ours.filter_traces([ht.Filter(True, "edited.py")]).traces._traces
        assert kept == [replacement] * edited.count(replacement)


def test_edit_to_a_trace_only_python_can_analyse():
    # Replacing an item by one the C tables cannot hold (a size past 2**63)
    # must not leave the earlier C result in place; and putting a plain one
    # back must bring the C analysis back with the right numbers.
    raw = [(0, 10, (("a.py", 1),), 1), (0, 20, (("b.py", 2),), 1)]
    ours = ht.Snapshot(list(raw), 1)
    assert ours.statistics("filename")[0].size == 20
    ours.traces._traces[0] = (0, 2**70, (("a.py", 1),), 1)
    assert [s.size for s in ours.statistics("filename")] == [2**70, 20]
    ours.traces._traces[0] = (0, 30, (("a.py", 1),), 1)
    assert [s.size for s in ours.statistics("filename")] == [30, 20]
    assert ours._snapdata() is not None


def test_same_items_compares_identity():
    a = (0, 1, (("a.py", 1),), 1)
    b = tuple(list(a))                    # equal to a, not a itself
    assert a == b and a is not b
    same = _api._SnapshotData.same_items
    assert same([a, b], (a, b)) and same((a, b), (a, b)) and same([], ())
    assert not same([a, a], (a, b))       # equal, but another object
    assert not same([a], (a, b)) and not same([a, b, a], (a, b))
    with pytest.raises(TypeError):
        same([a], [a])
