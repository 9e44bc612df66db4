"""@pytest.mark.limit_memory: the peak of the call phase against a limit."""

import heaptrace

from plugin_helpers import glob_escape, line_of

PROJECT = """
    import unittest
    import pytest


    @pytest.mark.limit_memory("2 MB")
    def test_over():
        data = bytearray(3 * 1024 * 1024)  # the big one
        assert len(data)


    @pytest.mark.limit_memory("2 MB")
    def test_under():
        data = bytearray(512 * 1024)
        assert len(data)


    @pytest.mark.limit_memory(4 * 1024 * 1024)
    def test_bytes_limit():
        data = bytearray(3 * 1024 * 1024)
        assert len(data)


    @pytest.mark.limit_memory("1 MiB")
    @pytest.mark.parametrize("mib", [0, 2])
    def test_param(mib):
        data = bytearray(mib * 1024 * 1024)  # parametrized
        assert len(data) >= 0


    @pytest.mark.limit_memory("1 MB")
    class TestGroup:
        def test_method(self):
            data = bytearray(2 * 1024 * 1024)  # in a class
            assert len(data)


    class Case(unittest.TestCase):
        @pytest.mark.limit_memory("1 MB")
        def test_case(self):
            data = bytearray(2 * 1024 * 1024)  # in a TestCase
            self.assertTrue(len(data))


    @pytest.mark.limit_memory("1 MB")
    def test_fails_itself():
        assert 1 == 2
"""


def test_limits(run, pytester):
    path = pytester.makepyfile(test_project=PROJECT)
    result = run("-rA")
    assert result.ret == 1
    result.assert_outcomes(passed=3, failed=5)
    out = result.stdout.str()
    for name in ("test_under", "test_bytes_limit", "test_param[0]"):
        assert f"PASSED {path.name}::{name}" in out
    # The failure gives the peak, the limit and the line at the peak.
    result.stdout.fnmatch_lines([
        "heaptrace: test_project.py::test_over reached a peak of 3.0 MiB of traced memory "
        "in its call phase, above its limit of 2 MB = 1.9 MiB",
        "Largest allocation sites at 3.0 MiB (the highest moment sampled):",
        f"  test_project.py:{line_of(PROJECT, 'the big one')}: 3.0 MiB in * block*",
    ])
    for name, marker in (("test_param[2]", "parametrized"),
                         ("TestGroup::test_method", "in a class"),
                         ("Case::test_case", "in a TestCase")):
        result.stdout.fnmatch_lines([
            f"heaptrace: test_project.py::{glob_escape(name)} reached a peak of 2.0 MiB *",
            "Largest allocation sites at 2.0 MiB *",
            f"  test_project.py:{line_of(PROJECT, marker)}: 2.0 MiB in *",
        ])
    # A test that fails by itself reports its own failure, not the limit.
    result.stdout.fnmatch_lines(["*def test_fails_itself():", "*assert 1 == 2"])
    assert "test_fails_itself reached" not in out


def test_limit_with_session_table(run, pytester):
    """Under --heaptrace tracing is already on; the limit still sees the
    call phase only."""
    pytester.makepyfile(test_project="""
        import pytest

        @pytest.fixture
        def ballast():
            return bytearray(3 * 1024 * 1024)

        @pytest.mark.limit_memory("2 MB")
        def test_fixture_memory_does_not_count(ballast):
            data = bytearray(1024 * 1024)
            assert len(ballast) and len(data)

        @pytest.mark.limit_memory("2 MB")
        def test_over():
            data = bytearray(3 * 1024 * 1024)
            assert len(data)
    """)
    result = run("--heaptrace")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_over reached a peak of 3.0 MiB*"])


def test_tracing_only_in_measured_phases(run_sub, pytester):
    # In a subprocess: in-process, pytester's hook recorder would grow with
    # the leak check's calls.
    pytester.makepyfile(test_project="""
        import heaptrace
        import pytest

        @pytest.fixture
        def traced_in_setup():
            return heaptrace.is_tracing()

        def test_unmarked():
            assert not heaptrace.is_tracing()

        @pytest.mark.limit_memory("10 MB")
        def test_marked(traced_in_setup):
            assert heaptrace.is_tracing()
            assert not traced_in_setup

        @pytest.mark.no_leaks(iterations=3, warmup=0)
        def test_leak_check(traced_in_setup):
            assert heaptrace.is_tracing()
            assert not traced_in_setup
    """)
    result = run_sub()
    result.assert_outcomes(passed=3)


def test_tracing_stops_after_the_session(run, pytester):
    pytester.makepyfile(test_project="""
        import pytest

        @pytest.mark.limit_memory("10 MB")
        def test_marked():
            pass
    """)
    run("--heaptrace").assert_outcomes(passed=1)
    assert not heaptrace.is_tracing()
