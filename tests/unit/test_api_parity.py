"""Parity of heaptrace's Python API with the standard tracemalloc module.

Both modules get the same made-up raw traces, (domain, size, frames,
total_nframe) with frames most recent first, and must give the same results,
in the same order, with the same text.  Random trace sets come from seeded
generators, with many equal sizes and counts so that tie-breaking is
exercised.
"""
import functools
import itertools
import linecache
import random
import tracemalloc as std
from unittest import mock

import pytest

import heaptrace as ht

KEY_TYPES = ("filename", "lineno", "traceback")
GROUPINGS = [(key_type, cumulative)
             for key_type in KEY_TYPES for cumulative in (False, True)
             if not (cumulative and key_type == "traceback")]

FILENAMES = (
    "a.py", "b.py", "pkg/mod.py", "pkg/mod.pyc", "pkg/sub/util.py",
    "<unknown>", "<frozen importlib._bootstrap>", "C:\\win\\x.py", "A.PY",
)

# A small hand-made pair of snapshots whose statistics are written out below.
HAND_OLD = [
    (0, 24, (("app.py", 10), ("main.py", 3)), 2),
    (0, 24, (("app.py", 10), ("main.py", 3)), 2),
    (0, 100, (("lib.py", 7), ("app.py", 11), ("main.py", 3)), 5),
    (1, 4096, (("lib.py", 7),), 1),
    (0, 8, (("<unknown>", 0),), 1),
]
HAND_NEW = [
    (0, 24, (("app.py", 10), ("main.py", 3)), 2),
    (0, 100, (("lib.py", 7), ("app.py", 11), ("main.py", 3)), 5),
    (0, 100, (("lib.py", 7), ("app.py", 11), ("main.py", 3)), 5),
    (2, 512, (("new.py", 1), ("main.py", 4)), None),
]


def random_traces(seed, count, sizes, spread):
    """Raw traces drawn from a pool of frames and tracebacks.

    Tracebacks are shared between traces, as the engine interns them; some
    repeat frames (recursion); total_nframe is None, exact or larger.  A
    larger *spread* means more distinct files, lines and tracebacks, hence
    fewer traces per group and more groups with equal totals.
    """
    rng = random.Random(seed)
    files = FILENAMES + tuple("gen/m%d.py" % i for i in range(4 * spread))
    frames = [(rng.choice(files), rng.randrange(2 * spread))
              for _ in range(40 * spread)]
    tracebacks = []
    for _ in range(200 * spread):
        stack = tuple(rng.choice(frames) for _ in range(rng.randint(1, 5)))
        if rng.random() < 0.15:
            stack += stack[:2]
        tracebacks.append(stack)
    traces = []
    for _ in range(count):
        stack = rng.choice(tracebacks)
        total = rng.choice((None, len(stack), len(stack) + rng.randint(1, 30)))
        traces.append((rng.randrange(4), rng.choice(sizes), stack, total))
    return traces


VARIED_SIZES = (0, 1, 7, 8, 16, 64, 100, 1000, 4096, 10240, 2 ** 20, 3 * 2 ** 30)


@functools.lru_cache(maxsize=None)
def dataset(name):
    """The raw traces of a named data set (built once, never mutated)."""
    if name == "hand-old":
        return HAND_OLD
    if name == "hand-new":
        return HAND_NEW
    if name == "empty":
        return []
    kind, seed = name.split("-")
    if kind == "varied":
        return random_traces(int(seed), 3000, VARIED_SIZES, 1)
    if kind == "ties":
        # Two sizes and many small groups: groups often share both size and
        # count, and only the traceback orders them.
        return random_traces(int(seed), 3000, (16, 32), 5)
    return grid_traces(int(seed))


def grid_traces(seed):
    """Traces in which every file and every line has the same total.

    Every group ties on size and count, whatever the key type; the traces
    are shuffled so that the order of first appearance is random too.
    """
    files = ["grid/f%02d.py" % i for i in range(12)]
    traces = [(0, 8, ((name, line), (files[-1 - index], line + 1)), 2)
              for index, name in enumerate(files) for line in range(5)]
    random.Random(seed).shuffle(traces)
    return traces


DATASETS = ("hand-old", "hand-new", "varied-1", "varied-2", "ties-1", "ties-2",
            "grid-1")
# (new, old) pairs for compare_to; each pair is also run the other way round.
PAIRS = (("hand-new", "hand-old"), ("varied-2", "varied-1"),
         ("ties-2", "ties-1"), ("varied-1", "ties-1"),
         ("varied-1", "empty"), ("varied-1", "varied-1"), ("grid-1", "grid-2"))


def snapshot_pair(raw, limit=5):
    """The same raw traces as a heaptrace and as a tracemalloc snapshot."""
    return ht.Snapshot(raw, limit), std.Snapshot(raw, limit)


def rendered(items):
    """What a user sees of a list of results: repr and str, in order."""
    return [(repr(item), str(item)) for item in items]


def test_reference_is_the_standard_module():
    assert std is not ht
    assert std.Snapshot is not ht.Snapshot


# -- statistics() ------------------------------------------------------------


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
@pytest.mark.parametrize("name", DATASETS)
def test_statistics_match(name, key_type, cumulative):
    ours, theirs = snapshot_pair(dataset(name))
    got = ours.statistics(key_type, cumulative)
    assert all(type(stat) is ht.Statistic for stat in got)
    assert rendered(got) == rendered(theirs.statistics(key_type, cumulative))


def test_statistics_hand_computed():
    snapshot = ht.Snapshot(HAND_OLD, 3)

    def line(filename, lineno):
        return ht.Traceback(((filename, lineno),))

    assert snapshot.statistics("lineno") == [
        ht.Statistic(line("lib.py", 7), 4196, 2),
        ht.Statistic(line("app.py", 10), 48, 2),
        ht.Statistic(line("<unknown>", 0), 8, 1),
    ]
    assert snapshot.statistics("filename", cumulative=True) == [
        ht.Statistic(line("lib.py", 0), 4196, 2),
        ht.Statistic(line("main.py", 0), 148, 3),
        ht.Statistic(line("app.py", 0), 148, 3),
        ht.Statistic(line("<unknown>", 0), 8, 1),
    ]


def test_cumulative_counts_each_occurrence_of_a_frame():
    recursive = (("r.py", 1), ("r.py", 1), ("r.py", 2), ("s.py", 9))
    ours, theirs = snapshot_pair([(0, 10, recursive, 4)])

    by_line = {str(stat.traceback): (stat.size, stat.count)
               for stat in ours.statistics("lineno", cumulative=True)}
    assert by_line == {"r.py:1": (20, 2), "r.py:2": (10, 1), "s.py:9": (10, 1)}
    by_file = ours.statistics("filename", cumulative=True)
    assert rendered(by_file) == rendered(theirs.statistics("filename", True))
    assert (by_file[0].size, by_file[0].count) == (30, 3)


@pytest.mark.parametrize("key_type", ["lineno", "filename"])
def test_cumulative_accepts_frames_as_lists(key_type):
    raw = [(0, 8, [("a.py", 1), ("b.py", 2)], 2), (0, 8, [("a.py", 1)], 1)]
    ours, theirs = snapshot_pair(raw)
    assert rendered(ours.statistics(key_type, True)) == rendered(
        theirs.statistics(key_type, True))


@pytest.mark.parametrize("name,key_type,cumulative", [
    ("grid-1", key_type, cumulative) for key_type, cumulative in GROUPINGS
] + [("ties-1", "lineno", False), ("ties-1", "lineno", True),
     ("ties-1", "traceback", False)])
def test_ties_are_broken_by_traceback_descending(name, key_type, cumulative):
    stats = ht.Snapshot(dataset(name), 5).statistics(key_type, cumulative)
    ties = 0
    for first, second in zip(stats, stats[1:]):
        if (first.size, first.count) == (second.size, second.count):
            ties += 1
            assert first.traceback > second.traceback
    assert ties >= 5, "the data set no longer exercises tie-breaking"


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
def test_group_keys_carry_no_total_nframe(key_type, cumulative):
    stats = ht.Snapshot(dataset("varied-1"), 5).statistics(key_type, cumulative)
    assert {stat.traceback.total_nframe for stat in stats} == {None}


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
def test_statistics_of_empty_snapshot(key_type, cumulative):
    assert ht.Snapshot([], 1).statistics(key_type, cumulative) == []


def error_of(call):
    """The exception class and message that *call* raises."""
    with pytest.raises(Exception) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("key_type,cumulative", [
    ("function", False), ("LINENO", False), (None, False), (["lineno"], True),
    ("traceback", True), ("traceback", 1),
])
def test_grouping_errors_match(key_type, cumulative):
    ours, theirs = snapshot_pair(HAND_OLD)
    expected = error_of(lambda: theirs.statistics(key_type, cumulative))
    assert expected[0] is ValueError
    assert error_of(lambda: ours.statistics(key_type, cumulative)) == expected
    assert error_of(
        lambda: ours.compare_to(ours, key_type, cumulative)) == expected


# -- compare_to() ------------------------------------------------------------


@pytest.mark.parametrize("key_type,cumulative", GROUPINGS)
@pytest.mark.parametrize("new,old", PAIRS + tuple((o, n) for n, o in PAIRS))
def test_compare_to_matches(new, old, key_type, cumulative):
    ours_new, theirs_new = snapshot_pair(dataset(new))
    ours_old, theirs_old = snapshot_pair(dataset(old))
    got = ours_new.compare_to(ours_old, key_type, cumulative)
    assert all(type(diff) is ht.StatisticDiff for diff in got)
    assert rendered(got) == rendered(
        theirs_new.compare_to(theirs_old, key_type, cumulative))


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_compare_to_adds_up(key_type):
    new, old = ht.Snapshot(dataset("varied-2"), 5), ht.Snapshot(dataset("varied-1"), 5)
    diffs = new.compare_to(old, key_type)

    def total(raw):
        return sum(size for _, size, _, _ in raw)

    assert sum(d.size_diff for d in diffs) == total(dataset("varied-2")) - total(dataset("varied-1"))
    assert sum(d.count_diff for d in diffs) == 0
    assert sum(d.size for d in diffs) == total(dataset("varied-2"))


def test_compare_to_hand_computed():
    new, old = ht.Snapshot(HAND_NEW, 3), ht.Snapshot(HAND_OLD, 3)

    def line(filename, lineno):
        return ht.Traceback(((filename, lineno),))

    assert new.compare_to(old, "lineno") == [
        ht.StatisticDiff(line("lib.py", 7), 200, -3996, 2, 0),
        ht.StatisticDiff(line("new.py", 1), 512, 512, 1, 1),
        ht.StatisticDiff(line("app.py", 10), 24, -24, 1, -1),
        ht.StatisticDiff(line("<unknown>", 0), 0, -8, 0, -1),
    ]


# -- filters -------------------------------------------------------------------

PATTERNS = ("a.py", "*.py", "pkg/*", "pkg/mod.pyc", "<unknown>", "*",
            "[ab].py", "?.py", "", "a.PY")
FILTER_ARGS = list(itertools.product(
    (True, False), PATTERNS, (None, 0, 2), (False, True), (None, 1)))


def make_filters(module, specs):
    """Build filters in *module* from (inclusive, pattern, lineno, all_frames,
    domain) specs; a spec ("domain", inclusive, domain) is a DomainFilter."""
    filters = []
    for spec in specs:
        if spec[0] == "domain":
            filters.append(module.DomainFilter(spec[1], spec[2]))
        else:
            inclusive, pattern, lineno, all_frames, domain = spec
            filters.append(module.Filter(inclusive, pattern, lineno,
                                         all_frames, domain=domain))
    return filters


def filtered(snapshot, module, specs):
    return snapshot.filter_traces(make_filters(module, specs)).traces._traces


FILTERED_TRACES = dataset("varied-1")[:600] + HAND_OLD


@pytest.mark.parametrize("spec", FILTER_ARGS)
def test_single_filter_matches(spec):
    ours, theirs = snapshot_pair(FILTERED_TRACES)
    assert filtered(ours, ht, [spec]) == filtered(theirs, std, [spec])


def test_single_filters_split_the_traces():
    snapshot = ht.Snapshot(FILTERED_TRACES, 5)
    splits = sum(0 < len(filtered(snapshot, ht, [spec])) < len(FILTERED_TRACES)
                 for spec in FILTER_ARGS)
    assert splits >= len(FILTER_ARGS) // 2, "the filters keep all or nothing"


@pytest.mark.parametrize("spec", FILTER_ARGS[::7])
def test_filter_predicates_match(spec):
    ours, = make_filters(ht, [spec])
    theirs, = make_filters(std, [spec])
    for trace in dataset("varied-2")[:300]:
        _domain, _size, frames, _total = trace
        assert ours._match(trace) == theirs._match(trace)
        assert ours._match_traceback(frames) == theirs._match_traceback(frames)
        for filename, lineno in frames:
            assert (ours._match_frame(filename, lineno)
                    == theirs._match_frame(filename, lineno))


FILTER_LISTS = [
    [(True, "a.py", None, False, None), (True, "b.py", None, False, None)],
    [(False, "a.py", None, False, None), (False, "pkg/*", 2, True, None)],
    [(True, "*.py", None, True, None), (False, "b.py", 3, False, None)],
    [("domain", True, 1), ("domain", True, 2), (False, "a.py", None, False, 1)],
    [("domain", False, 0), (True, "pkg/*", None, True, 3)],
    [("domain", False, 0), ("domain", False, 3)],
    [(True, "<unknown>", 0, False, None), ("domain", True, 2),
     (False, "*", 5, True, 2)],
]


@pytest.mark.parametrize("specs", FILTER_LISTS)
def test_filter_lists_match(specs):
    ours, theirs = snapshot_pair(dataset("varied-2"))
    expected = filtered(theirs, std, specs)
    assert filtered(ours, ht, specs) == expected
    assert 0 < len(expected) < len(dataset("varied-2"))


def test_filter_traces_keeps_order_and_limit():
    snapshot = ht.Snapshot(HAND_OLD, 7)
    result = snapshot.filter_traces([ht.Filter(False, "app.py", all_frames=True)])
    assert result.traces._traces == [HAND_OLD[3], HAND_OLD[4]]
    assert result.traceback_limit == 7
    assert snapshot.traces._traces == HAND_OLD


def test_filter_traces_without_filters_copies():
    raw = list(HAND_OLD)
    snapshot = ht.Snapshot(raw, 4)
    copy = snapshot.filter_traces([])
    assert copy is not snapshot
    assert copy.traces is not snapshot.traces
    assert copy.traces == snapshot.traces
    assert copy.traceback_limit == 4
    raw.pop()
    assert len(copy.traces) == len(HAND_OLD)


def test_filter_traces_accepts_any_iterable():
    ours, theirs = snapshot_pair(dataset("varied-1"))
    specs = [(True, "a.py", None, True, None), ("domain", False, 2)]
    expected = theirs.filter_traces(iter(make_filters(std, specs)))
    got = ours.filter_traces(iter(make_filters(ht, specs)))
    assert got.traces._traces == expected.traces._traces
    assert ours.filter_traces(iter(())).traces == ours.traces


@pytest.mark.parametrize("filters", [
    lambda m: m.Filter(True, "a.py"), lambda m: None, lambda m: 3])
def test_filter_traces_rejects_non_iterable(filters):
    ours, theirs = snapshot_pair(HAND_OLD)
    expected = error_of(lambda: theirs.filter_traces(filters(std)))
    assert expected[0] is TypeError
    assert error_of(lambda: ours.filter_traces(filters(ht))) == expected


@pytest.mark.parametrize("filename,pattern", [
    ("a.py", "a.pyc"), ("a.pyc", "a.py"), ("a.pyo", "a.py"), ("a.py", "a.PY"),
    ("dir/a.py", "*a.py"), ("dir/a.py", "dir/?.py"), ("a.py", "[!a].py"),
    ("b.py", "[!a].py"), ("x[1].py", "x[[]1].py"), ("", ""), ("", "*"),
    ("abc", ""), ("a\\b", "a/b"), ("abcbdefeg", "a*bd*eg"),
])
def test_filename_matching_matches(filename, pattern):
    for inclusive in (True, False):
        ours = ht.Filter(inclusive, pattern)._match_frame(filename, 1)
        theirs = std.Filter(inclusive, pattern)._match_frame(filename, 1)
        assert ours == theirs


# -- text ----------------------------------------------------------------------

SIZES = [
    0, 1, -1, 99, 100, 101, 1023, 1024, 1025, 10 * 1024 - 1, 10 * 1024,
    10 * 1024 + 1, 99 * 1024, 100 * 1024 - 1, 100 * 1024, 10 * 1024 ** 2 - 1,
    10 * 1024 ** 2, 5 * 1024 ** 3, 1024 ** 4, 99 * 1024 ** 4, 100 * 1024 ** 4,
    10 ** 6 * 1024 ** 4, 7 * 1024 ** 5, 0.5, 1.5, 2.5, 2501.5, 10239.5,
    102399.9, -102400, -5 * 1024 ** 3, -0.0, float("inf"), float("-inf"),
    float("nan"),
]


@pytest.mark.parametrize("sign", [False, True])
def test_format_size_matches(sign):
    rng = random.Random(3)
    values = SIZES + [rng.choice((1, -1)) * int(2 ** rng.uniform(0, 50))
                      for _ in range(2000)]
    values += [rng.uniform(-1e7, 1e7) for _ in range(500)]
    assert ([ht._format_size(value, sign) for value in values]
            == [std._format_size(value, sign) for value in values])


@pytest.mark.parametrize("size,sign,text", [
    (0, False, "0 B"), (10239, True, "+10239 B"), (10240, False, "10.0 KiB"),
    (-1536 * 1024, True, "-1536 KiB"), (-50 * 1024 ** 2, True, "-50.0 MiB"),
    (1023.5 * 1024, False, "1024 KiB"), (200 * 1024 ** 5, False, "204800 TiB"),
])
def test_format_size_examples(size, sign, text):
    assert ht._format_size(size, sign) == text


TEXT_TRACES = [
    (0, 10, (("a.py", 2), ("b.py", 4)), 3),
    (3, 123456, (("<unknown>", 0),), None),
    (1, 0, (("dir/it's.py", 12),), 1),
    (2, 7 * 1024 ** 3, (('quote"d.py', 1), ("x.py", 99)), 40),
]


@pytest.mark.parametrize("raw", TEXT_TRACES)
def test_trace_text_matches(raw):
    ours, theirs = ht.Trace(raw), std.Trace(raw)
    assert (repr(ours), str(ours)) == (repr(theirs), str(theirs))
    assert ((repr(ours.traceback), str(ours.traceback))
            == (repr(theirs.traceback), str(theirs.traceback)))
    assert rendered(ours.traceback) == rendered(theirs.traceback)


@pytest.mark.parametrize("frames,total", [
    ((), None), ((), 0), ((("f1", 1), ("f2", 2)), None),
    ((("f1", 1), ("f2", 2)), 2), ((("f", 0),), 17),
])
def test_traceback_repr_matches(frames, total):
    assert (repr(ht.Traceback(frames, total))
            == repr(std.Traceback(frames, total)))


def test_traces_repr_matches():
    for raw in ([], HAND_OLD, dataset("varied-1")):
        assert repr(ht.Snapshot(raw, 1).traces) == repr(std.Snapshot(raw, 1).traces)


@pytest.mark.parametrize("values", [
    (10, 1), (0, 0), (66, 3), (2 ** 40, 7), (5, 0),
])
def test_statistic_text_matches(values):
    tb = (("a.py", 2), ("b.py", 4))
    ours = ht.Statistic(ht.Traceback(tb), *values)
    theirs = std.Statistic(std.Traceback(tb), *values)
    assert (repr(ours), str(ours)) == (repr(theirs), str(theirs))


@pytest.mark.parametrize("values", [
    (5002, 5000, 2, 1), (0, -66, 0, -1), (30, 0, 3, 0), (400, 400, 1, 1),
    (3 * 2 ** 30, -2 ** 31, 10, -12), (0, 0, 0, 0),
])
def test_statistic_diff_text_matches(values):
    tb = (("c.py", 578),)
    ours = ht.StatisticDiff(ht.Traceback(tb), *values)
    theirs = std.StatisticDiff(std.Traceback(tb), *values)
    assert (repr(ours), str(ours)) == (repr(theirs), str(theirs))


def test_statistic_examples():
    tb = ht.Traceback((("b.py", 1),))
    assert str(ht.Statistic(tb, 66, 1)) == "b.py:1: size=66 B, count=1, average=66 B"
    assert str(ht.StatisticDiff(tb, 0, -66, 0, -1)) == "b.py:1: size=0 B (-66 B), count=0 (-1)"


FORMAT_FRAMES = (("f4.py", 4), ("f3.py", 3), ("f2.py", 2), ("f1.py", 1))


@pytest.mark.parametrize("most_recent_first", [False, True])
@pytest.mark.parametrize("limit", [None, -5, -4, -3, -1, 0, 1, 2, 4, 5, 100])
def test_traceback_format_matches(limit, most_recent_first):
    def getline(filename, lineno):
        return "" if lineno == 3 else "  <%s, %s>  " % (filename, lineno)

    with mock.patch.object(ht.linecache, "getline", side_effect=getline):
        ours = ht.Traceback(FORMAT_FRAMES).format(limit, most_recent_first)
        theirs = std.Traceback(FORMAT_FRAMES).format(limit, most_recent_first)
    assert ours == theirs


def test_traceback_format_example():
    with mock.patch("heaptrace.linecache.getline", return_value=" src \n"):
        lines = ht.Traceback(FORMAT_FRAMES).format(limit=2, most_recent_first=True)
    assert lines == ['  File "f4.py", line 4', "    src",
                     '  File "f3.py", line 3', "    src"]


def test_traceback_format_reads_source(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    return [1] * 100\n\nf()\n")
    frames = ((str(source), 2), (str(source), 3), (str(source), 4))
    linecache.checkcache(str(source))
    ours = ht.Traceback(frames).format()
    assert ours == std.Traceback(frames).format()
    assert ours[-1] == "    return [1] * 100"
    assert ours[0] == '  File "%s", line 4' % source
