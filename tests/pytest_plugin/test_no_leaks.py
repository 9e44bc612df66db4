"""@pytest.mark.no_leaks and --heaptrace-leaks: leak verdicts per test.

pytest runs in a subprocess here, as users run it: in-process, pytester's
hook recorder keeps a record of every call of the test, which grows.
"""

from plugin_helpers import glob_escape, line_of, outcomes

LEAKY = """
    import unittest
    import pytest

    _kept = []


    class Blob:
        def __init__(self):
            self.data = bytes(200)


    def test_leaks():
        _kept.append(Blob())  # leaks here


    @pytest.mark.parametrize("n", [1, 3])
    def test_param(n):
        for _ in range(n):
            _kept.append(Blob())  # parametrized leak


    class TestGroup:
        def test_method(self):
            _kept.append(Blob())  # method leak


    class Case(unittest.TestCase):
        def test_case(self):
            _kept.append(Blob())  # TestCase leak
"""

FINE = """
    import logging
    import unittest
    import pytest

    _cache = {}
    log = logging.getLogger("fine")


    class Blob:
        def __init__(self):
            self.data = bytes(200)


    def test_allocate_and_free():
        blobs = [Blob() for _ in range(100)]
        assert len(blobs) == 100


    def test_cache_fills_once():
        if "table" not in _cache:
            _cache["table"] = [Blob() for _ in range(500)]
        assert len(_cache["table"]) == 500


    @pytest.fixture(scope="module")
    def shared():
        return [Blob() for _ in range(500)]


    @pytest.fixture
    def state():
        return {"blobs": []}


    def test_fixture_state(shared, state):
        state["blobs"] = [Blob() for _ in range(20)]
        assert len(shared) == 500


    def test_prints_and_logs():
        print("output " * 20)
        log.warning("a warning %s", "x" * 100)


    class TestGroup:
        def test_method(self):
            assert [Blob() for _ in range(10)]


    class Case(unittest.TestCase):
        def setUp(self):
            self.blobs = [Blob() for _ in range(10)]

        def test_case(self):
            self.assertEqual(len(self.blobs), 10)
"""

ITERATIONS = ("--heaptrace-iterations", "30", "--heaptrace-warmup", "3")


def test_marker_finds_the_leaking_line(run_sub, pytester):
    pytester.makepyfile(test_project="""
        import pytest

        _kept = []

        @pytest.mark.no_leaks(iterations=30, warmup=3)
        def test_leaks():
            _kept.append(bytes(300))  # leaks here

        def test_unmarked_is_not_checked():
            _kept.append(bytes(300))
    """)
    result = run_sub("-rA")
    assert result.ret == 1
    assert outcomes(result) == {
        "test_project.py::test_leaks": "FAILED",
        "test_project.py::test_unmarked_is_not_checked": "PASSED",
    }
    result.stdout.fnmatch_lines([
        "heaptrace: test_project.py::test_leaks leaks memory: 1 allocation site kept "
        "growing with the calls",
        "1 suspected leak in test_project.py::test_leaks: 30 calls after 3 warm-up calls, *",
        "#1 test_project.py:7: +* per call, +1.00 blocks per call (confidence *",
    ])


def test_option_checks_every_test(run_sub, pytester):
    pytester.makepyfile(test_project=LEAKY)
    result = run_sub("-rA", "--heaptrace-leaks", *ITERATIONS)
    assert result.ret == 1
    assert set(outcomes(result).values()) == {"FAILED"}
    result.assert_outcomes(failed=5)
    for name, marker in (("test_leaks", "leaks here"),
                         ("test_param[1]", "parametrized leak"),
                         ("test_param[3]", "parametrized leak"),
                         ("TestGroup::test_method", "method leak"),
                         ("Case::test_case", "TestCase leak")):
        result.stdout.fnmatch_lines([
            f"heaptrace: test_project.py::{glob_escape(name)} leaks memory: *",
            f"*test_project.py:{line_of(LEAKY, marker)}: *per call*",
        ])
    # Without the option, nothing is checked.
    result = run_sub()
    result.assert_outcomes(passed=5)


def test_non_leaks_pass(run_sub, pytester):
    pytester.makepyfile(test_project=FINE)
    result = run_sub("-rA", "--heaptrace-leaks", *ITERATIONS)
    assert "leaks memory" not in result.stdout.str()
    result.assert_outcomes(passed=6)
    assert result.ret == 0
    # The report keeps what the last call printed and logged.
    result.stdout.fnmatch_lines(["*Captured stdout call*", "output output *",
                                 "*Captured log call*", "WARNING *a warning xxx*"])


def test_not_repeatable(run_sub, pytester):
    pytester.makepyfile(test_project="""
        import unittest
        import pytest

        calls = {"f": 0, "u": 0}

        @pytest.mark.no_leaks(iterations=10, warmup=1)
        def test_once():
            calls["f"] += 1
            assert calls["f"] == 1, "already ran"

        class Case(unittest.TestCase):
            @pytest.mark.no_leaks(iterations=10, warmup=1)
            def test_once(self):
                calls["u"] += 1
                self.assertEqual(calls["u"], 1)

        @pytest.mark.no_leaks(iterations=10, warmup=1)
        def test_fails_first():
            assert 1 == 2
    """)
    result = run_sub("-rA")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert "leaks memory" not in out
    result.stdout.fnmatch_lines([
        "heaptrace: test_project.py::test_once cannot be checked for leaks: it passed its "
        "first call but failed call 2 (AssertionError: already ran).",
        "no_leaks calls the test 11 times with its fixtures set up once; *"
        "This is not a leak verdict.",
    ])
    result.stdout.fnmatch_lines([
        "heaptrace: test_project.py::Case::test_once cannot be checked for leaks: it passed "
        "its first call but failed call 2 (AssertionError: 2 != 1).",
    ])
    # A test that fails on its first call is an ordinary failure.
    assert "test_fails_first cannot" not in out
    result.stdout.fnmatch_lines(["*def test_fails_first():", ">*assert 1 == 2"])


def test_bad_markers_are_usage_errors(run_sub, pytester):
    pytester.makepyfile(test_project="""
        import pytest

        @pytest.mark.limit_memory("24 XB")
        def test_bad_unit():
            pass

        @pytest.mark.limit_memory(2.5)
        def test_bad_type():
            pass

        @pytest.mark.no_leaks(iterations="many")
        def test_bad_iterations():
            pass

        @pytest.mark.no_leaks(rounds=3)
        def test_unknown_argument():
            pass

        def test_fine():
            pass
    """)
    result = run_sub()
    assert result.ret == 4
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "heaptrace: bad marker arguments (usage error)",
        "test_project.py::test_bad_unit: limit_memory: cannot read '24 XB' as a size *",
        "test_project.py::test_bad_type: limit_memory: expected a size such as \"24 MB\" "
        "or a number of bytes, got 2.5 (float)",
        "test_project.py::test_bad_iterations: no_leaks: iterations must be a whole number, "
        "got 'many' (str)",
        "test_project.py::test_unknown_argument: no_leaks: unknown argument 'rounds' *",
    ])
    assert "Traceback" not in result.stdout.str()


def test_bad_options_are_usage_errors(run_sub, pytester):
    pytester.makepyfile(test_project="def test_fine():\n    pass\n")
    result = run_sub("--heaptrace-iterations", "2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--heaptrace-iterations must be at least 3, not 2*"])
