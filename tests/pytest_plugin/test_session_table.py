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
    big_line = line_of(PROJECT, "bytearray(4 * 1024 * 1024)")
    result.stdout.fnmatch_lines([
        "*= heaptrace: memory per test =*",
        "Highest peak (2 of 3 tests):",
        "        peak        kept  test",
        "     4.0 MiB  * test_project.py::test_big_peak (during call)",
        "                            at 4.0 MiB (the highest moment sampled):",
        f"                              test_project.py:{big_line}: 4.0 MiB in * block*",
        "  * test_project.py::test_keeps_memory (during call)",
        "",
        "Most memory kept after the test (*",
        "        kept        peak  test",
        "   3*.* KiB  * test_project.py::test_keeps_memory",
        f"    *test_project.py:{kept_line}: 3*.* KiB in 30* blocks",
    ])
    assert "test_small" not in result.stdout.str()


PEAK_PROJECT = """
    import sys

    import heaptrace


    def build():
        return [bytes(2000) for _ in range(2000)]  # peak here


    def test_peak_then_free():
        data = build()
        total = sum(map(len, data))
        del data
        assert total == 4_000_000


    def test_untraced():
        # Without --heaptrace the plugin leaves the test alone.
        assert not heaptrace.is_tracing() and sys.gettrace() is None
"""


def test_table_names_the_sites_at_the_peak(run, pytester):
    """A test whose peak is gone by its end: the sites at the peak name the
    line that made it, though nothing is kept."""
    pytester.makepyfile(test_peak=PEAK_PROJECT)
    result = run("--heaptrace", "-k", "peak_then_free")
    result.assert_outcomes(passed=1, deselected=1)
    peak_line = line_of(PEAK_PROJECT, "peak here")
    result.stdout.fnmatch_lines([
        "Highest peak (1 of 1 tests):",
        "     3.* MiB  * test_peak.py::test_peak_then_free (during call)",
        "                            at 3.* MiB (the highest moment sampled):",
        f"                              test_peak.py:{peak_line}: 3.* MiB in 2,0?? blocks",
    ])
    kept = result.stdout.str().split("Most memory kept")[-1]
    assert f"test_peak.py:{peak_line}" not in kept


def test_peak_sites_leave_other_trace_functions_alone(run, pytester):
    """With another trace function set (coverage, a debugger), the plugin
    does not replace it, and says that the sites at the peak come from the
    ends of the phases only."""
    pytester.makeconftest("""
        import sys
        import pytest

        calls = []

        def tracer(frame, event, arg):
            calls.append(event)

        @pytest.hookimpl(hookwrapper=True, tryfirst=True)
        def pytest_runtest_protocol(item):
            sys.settrace(tracer)
            yield
            sys.settrace(None)

        def pytest_sessionfinish():
            print("other tracer calls:", len(calls))
    """)
    pytester.makepyfile(test_peak=PEAK_PROJECT)
    result = run("--heaptrace", "-s", "-k", "peak_then_free", subprocess=True)
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines([
        "*test_peak.py::test_peak_then_free (during call)",
        "*(memory sampled at the end of each phase only: another trace function "
        "was active)",
    ])
    calls = int(result.stdout.str().split("other tracer calls:")[1].split()[0])
    assert calls > 0


def test_peak_sites_from_the_limit_check(run, pytester):
    """A peak reached and left inside other code's calls: limit_memory's
    closer watch finds its site, and the table shows it."""
    pytester.makepyfile(helpers="""
        def churn():
            data = [bytes(1000) for _ in range(3000)]  # churn here
            settle()
            return len(data)


        def settle():
            pass
    """, test_churn="""
        import pytest

        import helpers


        @pytest.mark.limit_memory("4 MB")  # its sampler starts at half
        def test_churn():
            assert helpers.churn() == 3000
    """)
    result = run("--heaptrace")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*test_churn.py::test_churn (during call)",
        "*at *.* MiB (the highest moment sampled):",
        "*helpers.py:2: *.* MiB in 3,0?? blocks",
    ])


def test_untraced_without_the_option(run, pytester):
    pytester.makepyfile(test_peak=PEAK_PROJECT)
    result = run("-k", "untraced")
    result.assert_outcomes(passed=1, deselected=1)


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
