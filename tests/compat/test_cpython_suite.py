"""CPython's own tracemalloc tests, run against heaptrace.

The interpreter's ``test.test_tracemalloc`` is imported in a child process
in which ``sys.modules['tracemalloc']`` is heaptrace, so every
``tracemalloc.X`` the tests touch is heaptrace's.  Four classes are run:
TestTraceback, TestTracemallocEnabled, TestSnapshot and TestFilters.  test_new_reference
needs the interpreter to report objects reused from a free list: on 3.13 and
newer heaptrace gets that from the reference tracer (PyRefTracer_SetTracer),
which it keeps off unless asked (find_leaks turns it on), so the child turns
it on as a user wanting the standard module's behaviour would; before 3.13
the interpreter has no such hook and the test is left out.

The child is this file run as a script; it writes one JSON record per test.
"""
import json
import os
import subprocess
import sys
import unittest

import pytest

import heaptrace

CLASSES = ("TestTraceback", "TestTracemallocEnabled", "TestSnapshot",
           "TestFilters")
RETRACE = bool(getattr(heaptrace._core, "RETRACE_AVAILABLE", 0))
EXCLUDED = {} if RETRACE else {"TestTracemallocEnabled": ("test_new_reference",)}
# Tests per class once the exclusions are made.
EXPECTED = {
    (3, 11): {"TestTraceback": 1, "TestTracemallocEnabled": 13,
              "TestSnapshot": 13, "TestFilters": 5},
    (3, 12): {"TestTraceback": 1, "TestTracemallocEnabled": 13,
              "TestSnapshot": 13, "TestFilters": 5},
    (3, 13): {"TestTraceback": 1, "TestTracemallocEnabled": 13 + RETRACE,
              "TestSnapshot": 13, "TestFilters": 5},
}


class _RecordingResult(unittest.TextTestResult):
    """A test result that also keeps each test's outcome and report."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _record(self, test, outcome, report=""):
        self.records.append({"class": type(test).__name__,
                             "test": test._testMethodName,
                             "outcome": outcome, "report": report})

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failed", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected success")


def _run_suite(output_path):
    """Child process: run the CPython classes with heaptrace, write JSON."""
    sys.modules["tracemalloc"] = heaptrace
    if RETRACE:
        heaptrace.trace_reuse(True)
    from test import test_tracemalloc

    for class_name, names in EXCLUDED.items():
        for name in names:
            delattr(getattr(test_tracemalloc, class_name), name)

    # unittest.main() rather than a flat suite: some tests expect the call
    # stack of a real test driver (more than 10 frames deep).
    program = unittest.main(
        module=test_tracemalloc, argv=[sys.argv[0], *CLASSES], exit=False,
        testRunner=unittest.TextTestRunner(resultclass=_RecordingResult))
    with open(output_path, "w") as stream:
        json.dump(program.result.records, stream)


@pytest.fixture(scope="module")
def cpython_run(tmp_path_factory):
    """Run the child once; return (its records, its output)."""
    workdir = tmp_path_factory.mktemp("cpython_suite")
    output = workdir / "results.json"
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)
    package_root = os.path.dirname(os.path.dirname(heaptrace.__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [package_root, env.get("PYTHONPATH")]))
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(output)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    log = "exit status %s\n%s\n%s" % (child.returncode, child.stdout,
                                       child.stderr)
    assert output.exists(), "the child wrote no results:\n" + log
    return json.loads(output.read_text()), log


def _expected_counts():
    counts = EXPECTED.get(sys.version_info[:2])
    if counts is None:
        pytest.fail("no test count known for Python %d.%d: count the tests "
                    "of each class and add them to EXPECTED"
                    % sys.version_info[:2], pytrace=False)
    return counts


def _problems(records):
    """Reports of the tests that did not simply pass."""
    return ["%s.%s: %s\n%s" % (r["class"], r["test"], r["outcome"],
                               r["report"])
            for r in records if r["outcome"] != "passed"]


@pytest.mark.parametrize("class_name", CLASSES)
def test_cpython_class(cpython_run, class_name):
    records, log = cpython_run
    ran = [record for record in records if record["class"] == class_name]
    problems = _problems(ran)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    expected = _expected_counts()[class_name]
    if len(ran) != expected:
        pytest.fail("ran %d tests of %s, expected %d\n%s"
                    % (len(ran), class_name, expected, log), pytrace=False)


def test_cpython_suite_total(cpython_run):
    records, log = cpython_run
    expected = sum(_expected_counts().values())
    if _problems(records) or len(records) != expected:
        pytest.fail("%d tests ran (expected %d); output of the run:\n%s"
                    % (len(records), expected, log), pytrace=False)
    assert not [r for r in records
                if r["test"] in EXCLUDED.get(r["class"], ())]


if __name__ == "__main__":
    _run_suite(sys.argv[1])


def test_trace_reuse_is_refused_clearly_before_3_13():
    if RETRACE:
        assert heaptrace.trace_reuse(False) in (True, False)
        return
    import pytest
    with pytest.raises(RuntimeError, match="3.13"):
        heaptrace.trace_reuse(True)
    assert heaptrace.trace_reuse(False) is False
