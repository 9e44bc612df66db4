"""Every user mistake gets a one-line error and a non-zero exit, never a traceback."""

import os
import pickle
import tracemalloc

import pytest

from cli_helpers import TARGETS, assert_one_line_error, heaptrace

TARGET_FILE = os.path.join(TARGETS, "leaky_target.py")


@pytest.fixture
def not_a_snapshot(tmp_path):
    path = tmp_path / "notes.snap"
    path.write_text("these are notes, not a snapshot\n")
    return path


@pytest.fixture
def pickled_list(tmp_path):
    path = tmp_path / "list.snap"
    with open(path, "wb") as stream:
        pickle.dump([1, 2, 3], stream)
    return path


@pytest.mark.parametrize("command", [["top"], ["diff", "x"], ["trend"]])
def test_missing_snapshot_file(tmp_path, command):
    missing = tmp_path / "missing.snap"
    if command == ["trend"]:
        args = ["trend", missing, missing, missing]
    elif command[0] == "diff":
        args = ["diff", missing, missing]
    else:
        args = ["top", missing]
    result = heaptrace(*args)
    assert_one_line_error(result, 2, str(missing), "no such file")


def test_file_that_is_not_a_snapshot(not_a_snapshot):
    result = heaptrace("top", not_a_snapshot)
    assert_one_line_error(result, 2, str(not_a_snapshot), "not a heaptrace snapshot")


def test_pickle_that_is_not_a_snapshot(pickled_list):
    result = heaptrace("top", pickled_list)
    assert_one_line_error(result, 2, "not a heaptrace snapshot")


def test_diff_with_a_file_that_is_not_a_snapshot(not_a_snapshot):
    result = heaptrace("diff", not_a_snapshot, not_a_snapshot)
    assert_one_line_error(result, 2, "not a heaptrace snapshot")


def test_trend_with_files_that_are_not_snapshots(not_a_snapshot):
    result = heaptrace("trend", not_a_snapshot, not_a_snapshot, not_a_snapshot)
    assert_one_line_error(result, 2, "not a heaptrace snapshot")


def test_trend_of_an_empty_folder(tmp_path):
    result = heaptrace("trend", tmp_path)
    assert_one_line_error(result, 2, "no snapshots")


def test_top_of_a_folder(tmp_path):
    result = heaptrace("top", tmp_path)
    assert_one_line_error(result, 2, "directory")


def test_leaks_missing_file(tmp_path):
    result = heaptrace("leaks", f"{tmp_path}/nowhere.py:main")
    assert_one_line_error(result, 2, "nowhere.py", "no such file")


def test_leaks_missing_function():
    result = heaptrace("leaks", f"{TARGET_FILE}:no_such_function")
    assert_one_line_error(result, 2, "no_such_function")


def test_leaks_missing_method():
    result = heaptrace("leaks", f"{TARGET_FILE}:handler.no_such_method")
    assert_one_line_error(result, 2, "no_such_method")


def test_leaks_missing_module():
    result = heaptrace("leaks", "no_such_package.no_such_module:main")
    assert_one_line_error(result, 2, "no_such_package.no_such_module", "no such module")


def test_leaks_target_that_is_not_callable():
    result = heaptrace("leaks", f"{TARGET_FILE}:NOT_CALLABLE")
    assert_one_line_error(result, 2, "not callable")


def test_leaks_target_without_a_function_name():
    result = heaptrace("leaks", TARGET_FILE)
    assert_one_line_error(result, 2, "FILE.py:FUNC")


def test_leaks_target_that_raises():
    result = heaptrace("leaks", f"{TARGET_FILE}:boom")
    assert_one_line_error(result, 1, "ValueError", "this target always fails")


def test_leaks_target_whose_import_fails(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_anywhere\n\ndef main():\n    pass\n")
    result = heaptrace("leaks", f"{broken}:main")
    assert_one_line_error(result, 1, "importing", "no_such_module_anywhere")


def test_run_missing_script(tmp_path):
    result = heaptrace("run", "-o", tmp_path / "out", tmp_path / "nowhere.py")
    assert_one_line_error(result, 2, "nowhere.py", "no such file")


def test_run_missing_module(tmp_path):
    result = heaptrace("run", "-o", tmp_path / "out", "-m", "no_such_module_anywhere")
    assert_one_line_error(result, 2, "no_such_module_anywhere", "no such module")


def test_run_without_a_program():
    result = heaptrace("run")
    assert_one_line_error(result, 2)


def test_bad_option_value(tmp_path):
    result = heaptrace("top", "--limit", "-3", tmp_path / "x.snap")
    assert_one_line_error(result, 2, "--limit")


def test_unknown_command_is_a_usage_error():
    result = heaptrace("frobnicate")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "usage:" in result.stderr


class _Terminal:
    def __init__(self, tty):
        self.tty = tty
        self.written = ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.written += text

    def flush(self):
        pass


def test_progress_only_on_a_terminal():
    from heaptrace.cli._common import Progress

    terminal = _Terminal(tty=True)
    progress = Progress(terminal)
    progress.update("heaptrace: measuring 3/12")
    progress.clear()
    assert terminal.written == "\r\x1b[Kheaptrace: measuring 3/12\r\x1b[K"
    pipe = _Terminal(tty=False)
    progress = Progress(pipe)
    progress.update("heaptrace: measuring 3/12")
    progress.clear()
    assert pipe.written == ""


@pytest.mark.parametrize("kind", ["heaptrace", "pickle"])
@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_snapshot_says_truncated(tmp_path, kind, keep):
    path = tmp_path / "whole.snap"
    traces = [(0, 100 + i, (("/src/app.py", i + 1),), 1) for i in range(50)]
    if kind == "heaptrace":
        from heaptrace import Snapshot   # the tree under test (PYTHONPATH)
        Snapshot(traces, 1).dump(path)
    else:
        tracemalloc.Snapshot(traces, 1).dump(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.snap"
    cut.write_bytes(data[:max(1, int(len(data) * keep))])
    result = heaptrace("top", cut)
    message = assert_one_line_error(result, 2, str(cut), "truncated snapshot")
    assert "not a heaptrace snapshot" not in message


# -- issue 8.17 ---------------------------------------------------------------

def test_leaks_target_that_needs_arguments():
    result = heaptrace("leaks", f"{TARGET_FILE}:needs_args")
    assert_one_line_error(result, 2, "callable with no arguments", "count",
                          "function of no arguments")


def test_leaks_target_that_is_a_method_of_a_class():
    result = heaptrace("leaks", f"{TARGET_FILE}:Client.ping")
    assert_one_line_error(result, 2, "callable with no arguments", "obj.method")


def test_leaks_method_of_an_object_as_the_help_shows():
    from heaptrace.cli import leaks

    assert ":client.ping" in leaks.__doc__ and "Client.ping" not in leaks.__doc__
    result = heaptrace("leaks", f"{TARGET_FILE}:client.ping", "--iterations", "60")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "11"])
def test_leaks_iterations_below_the_snapshots_get_one_message(value):
    result = heaptrace("leaks", f"{TARGET_FILE}:leak", "--iterations", value)
    assert_one_line_error(result, 2, "--iterations must be at least --snapshots (12)",
                          f"got {value}")


@pytest.mark.parametrize("option, value", [("--duration", "0"), ("--duration", "-1"),
                                           ("--limit", "-1")])
def test_leaks_other_bad_values(option, value):
    result = heaptrace("leaks", f"{TARGET_FILE}:leak", option, value)
    assert_one_line_error(result, 2, option)
