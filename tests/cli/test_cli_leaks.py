"""`heaptrace leaks` on real targets: text and JSON reports."""

import os

from cli_helpers import TARGETS, heaptrace, heaptrace_json, marked_line

TARGET_FILE = os.path.join(TARGETS, "leaky_target.py")
LEAK_LINE = marked_line(TARGET_FILE, "# LEAK")


def check_suspect_schema(suspect):
    assert set(suspect) >= {"filename", "lineno", "size_per_iteration",
                            "count_per_iteration", "traceback", "confidence"}
    assert isinstance(suspect["lineno"], int)
    assert 0.0 <= suspect["confidence"] <= 1.0
    for frame in suspect["traceback"]:
        assert set(frame) == {"filename", "lineno"}


def test_leaks_json_names_the_leak_first():
    report = heaptrace_json("leaks", f"{TARGET_FILE}:leak")
    first = report["suspects"][0]
    check_suspect_schema(first)
    assert os.path.samefile(first["filename"], TARGET_FILE)
    assert first["lineno"] == LEAK_LINE
    # Most recent frame first: the traceback starts at the leaking line.
    assert first["traceback"][0]["lineno"] == LEAK_LINE
    assert 700 <= first["size_per_iteration"] < 2000
    assert first["count_per_iteration"] >= 0.9


def test_leaks_json_is_empty_when_nothing_leaks():
    report = heaptrace_json("leaks", f"{TARGET_FILE}:no_leak")
    assert report["suspects"] == []


def test_leaks_options_are_applied():
    report = heaptrace_json("leaks", f"{TARGET_FILE}:leak", "--iterations", "600",
                            "--warmup", "7", "--nframe", "3", "--snapshots", "6")
    assert report["iterations"] == 600
    assert report["warmup"] == 7
    assert report["nframe"] == 3
    assert report["snapshots"] == 7
    assert all(len(s["traceback"]) <= 3 for s in report["suspects"])


def test_leaks_text_report_for_a_dotted_method():
    result = heaptrace("leaks", f"{TARGET_FILE}:handler.leak")
    assert result.returncode == 0, result.stderr
    line = marked_line(TARGET_FILE, "class Handler") + 2
    assert result.stdout.startswith("1 suspected leak in Handler.leak")
    assert f"leaky_target.py:{line}:" in result.stdout.splitlines()[2]
    # No progress line on a pipe.
    assert result.stderr == ""


def test_leaks_on_a_module_target():
    result = heaptrace("leaks", "leaky_target:leak", "--json", cwd=TARGETS)
    assert result.returncode == 0, result.stderr
    assert '"lineno": %d' % LEAK_LINE in result.stdout


def test_leaks_help_is_the_module_docstring():
    result = heaptrace("leaks", "--help")
    assert result.returncode == 0
    assert "Call a function many times" in result.stdout
    assert "FILE.py:FUNC" in result.stdout
