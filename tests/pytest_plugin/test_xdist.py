"""Under pytest-xdist (-n 2) the verdicts and messages are the same."""

import pytest

from plugin_helpers import line_of, outcomes

pytest.importorskip("xdist")

PROJECT = """
    import pytest

    _kept = []
    _cache = {}


    class Blob:
        def __init__(self):
            self.data = bytes(200)


    def test_leaks():
        _kept.append(Blob())


    def test_allocate_and_free():
        assert [Blob() for _ in range(50)]


    def test_cache_fills_once():
        _cache.setdefault("table", [Blob() for _ in range(300)])


    @pytest.mark.parametrize("n", [0, 2])
    def test_param(n):
        for _ in range(n):
            _kept.append(Blob())


    @pytest.mark.limit_memory("1 MB")
    def test_over_limit():
        assert bytearray(2 * 1024 * 1024)


    calls = [0]


    def test_not_repeatable():
        calls[0] += 1
        assert calls[0] == 1
"""

OPTIONS = ("-rA", "--heaptrace-leaks", "--heaptrace-iterations", "30",
           "--heaptrace-warmup", "3")


def verdicts(result) -> dict:
    """{test: (outcome, first line of the heaptrace message)}."""
    found = outcomes(result)
    lines = result.outlines
    for test in found:
        name = test.split("::", 1)[1]
        message = next((line for line in lines
                        if line.startswith(f"heaptrace: test_project.py::{name} ")), "")
        found[test] = (found[test], message.split(":", 2)[-1].split(" per ")[0])
    return found


def test_same_verdicts_with_xdist(run_sub, pytester):
    pytester.makepyfile(test_project=PROJECT)
    alone = run_sub(*OPTIONS)
    spread = run_sub(*OPTIONS, "-n", "2")
    assert alone.ret == spread.ret == 1
    expected = {
        "test_project.py::test_leaks": "FAILED",
        "test_project.py::test_allocate_and_free": "PASSED",
        "test_project.py::test_cache_fills_once": "PASSED",
        "test_project.py::test_param[0]": "PASSED",
        "test_project.py::test_param[2]": "FAILED",
        "test_project.py::test_over_limit": "FAILED",
        "test_project.py::test_not_repeatable": "FAILED",
    }
    assert {test: v[0] for test, v in verdicts(alone).items()} == expected
    assert verdicts(spread) == verdicts(alone)
    # With a leak check too, the limit applies to the first call: the leak
    # check's own snapshots do not count.
    spread.stdout.fnmatch_lines(["*test_over_limit reached a peak of 2.0 MiB *"])
    spread.stdout.fnmatch_lines(["*test_not_repeatable cannot be checked for leaks*"])
    spread.stdout.fnmatch_lines(["*test_leaks leaks memory*"])


def test_table_with_xdist(run_sub, pytester):
    pytester.makepyfile(test_project=PROJECT)
    result = run_sub("--heaptrace", "-n", "2")
    result.stdout.fnmatch_lines([
        "*= heaptrace: memory per test =*",
        "Highest peak (5 of 7 tests):",
        "*test_project.py::test_over_limit (during call)",
        # The sites at the peak travel from the workers too.
        "*test_project.py::test_cache_fills_once (during call)",
        "*at * KiB (the highest moment sampled):",
        f"*test_project.py:{line_of(PROJECT, 'bytes(200)')}: * KiB in * blocks",
    ])


def test_bad_marker_with_xdist(run_sub, pytester):
    pytester.makepyfile(test_project="""
        import pytest

        @pytest.mark.limit_memory("lots")
        def test_bad():
            pass
    """)
    result = run_sub("-n", "2")
    assert result.ret == 4
    result.stdout.fnmatch_lines([
        "heaptrace: bad marker arguments (usage error)",
        "test_project.py::test_bad: limit_memory: cannot read 'lots' as a size *",
    ])
    assert "INTERNALERROR" not in result.stdout.str()
