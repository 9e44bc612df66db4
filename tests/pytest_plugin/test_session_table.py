"""--heaptrace: the tests with the highest peak and the most memory kept."""

import pytest

from plugin_helpers import installed, line_of

PROJECT = """
    _kept = []


    def test_big_peak():
        data = bytearray(4 * 1024 * 1024)
        assert len(data)


    def test_keeps_memory():
        _kept.extend(bytes(1000) for _ in range(300))  # kept here


    def test_small():
        assert [1, 2, 3]
"""


def test_table(run, pytester):
    pytester.makepyfile(test_project=PROJECT)
    result = run("--heaptrace", "--heaptrace-top", "2")
    result.assert_outcomes(passed=3)
    kept_line = line_of(PROJECT, "kept here")
    result.stdout.fnmatch_lines([
        "*= heaptrace: memory per test =*",
        "Highest peak (2 of 3 tests):",
        "        peak        kept  test",
        "     4.0 MiB  * test_project.py::test_big_peak (during call)",
        "  * test_project.py::test_keeps_memory (during call)",
        "",
        "Most memory kept after the test (*",
        "        kept        peak  test",
        "   3*.* KiB  * test_project.py::test_keeps_memory",
        f"    *test_project.py:{kept_line}: 3*.* KiB in 30* blocks",
    ])
    assert "test_small" not in result.stdout.str()


def test_no_table_without_the_option(run, pytester):
    pytester.makepyfile(test_project=PROJECT)
    result = run()
    result.assert_outcomes(passed=3)
    assert "memory per test" not in result.stdout.str()


def test_entry_point(pytester):
    """Installing heaptrace is enough: pytest finds the plugin by itself."""
    if not installed():
        pytest.skip("heaptrace is not installed (run through scripts/test-all.sh)")
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--heaptrace-leaks*", "*--heaptrace-top=N*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.limit_memory(size): *",
                                 "@pytest.mark.no_leaks(iterations=100, warmup=5): *"])
