"""`heaptrace run`: the regressions of issue 8 (items 5, 6, 12, 13, 15, 16, 17)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import heaptrace
from cli_helpers import TARGETS, assert_one_line_error, heaptrace as run_heaptrace, \
    heaptrace_json, marked_line

GLOBALS_ONLY = os.path.join(TARGETS, "globals_only.py")
LOCAL_INTERRUPT = os.path.join(TARGETS, "local_interrupt.py")
FORKER = os.path.join(TARGETS, "forker.py")
SHOW_PATHS = os.path.join(TARGETS, "show_paths.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEAKY_APP = os.path.join(ROOT, "examples", "leaky_app.py")
PACKAGE_DIR = os.path.dirname(os.path.abspath(heaptrace.__file__)) + os.sep


def snapshots_in(folder):
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.endswith(".snap"))


# -- item 5: the exit snapshot sees the program's data, however it ends --------

@pytest.mark.parametrize("program, how, status, mark", [
    (GLOBALS_ONLY, "normal", 0, "# GLOBALS"),
    (GLOBALS_ONLY, "exit", 0, "# GLOBALS"),
    (GLOBALS_ONLY, "interrupt", 130, "# GLOBALS"),
    (LOCAL_INTERRUPT, "", 130, "# LOCALS"),
], ids=["normal-end", "sys-exit", "ctrl-c", "ctrl-c-locals"])
def test_exit_snapshot_holds_the_program_data(tmp_path, program, how, status, mark):
    result = run_heaptrace("run", "--interval", "0", "--no-signal", "-o", tmp_path,
                           program, how)
    assert result.returncode == status, result.stderr
    files = snapshots_in(tmp_path)
    assert len(files) == 1, result.stderr
    top = heaptrace_json("top", files[0], "--limit", "1")["stats"][0]
    assert (top["filename"], top["lineno"]) == (program, marked_line(program, mark))
    assert top["size"] >= 100 * 10000


# -- item 6: nothing heaptrace keeps for itself shows up in a snapshot ----------

def _is_launcher(filename):
    return filename.startswith(PACKAGE_DIR) or "runpy" in filename


def _heaptrace_work(traceback, program):
    """True if a trace was allocated by heaptrace's own work: a heaptrace frame
    anywhere but in the chain of calls that started the program."""
    frames = [frame.filename for frame in traceback]          # oldest first
    index = 0
    while index < len(frames) and _is_launcher(frames[index]):
        index += 1
    launched = index > 0 and any(f.startswith(PACKAGE_DIR) for f in frames[:index])
    if launched and (index == len(frames) or frames[index] != program):
        return True
    return any(f.startswith(PACKAGE_DIR) for f in frames[index:])


def test_readme_leaky_app_shows_only_its_own_leaks(tmp_path):
    result = run_heaptrace("run", "--interval", "0.2", "--nframe", "40", "-o", tmp_path,
                           LEAKY_APP, "--seconds", "2.5", "--rate", "200")
    assert result.returncode == 0, result.stderr
    files = snapshots_in(tmp_path)
    assert len(files) >= 5, result.stderr
    for path in files:
        snapshot = heaptrace.Snapshot.load(path)
        own = [trace for trace in snapshot.traces
               if _heaptrace_work(trace.traceback, LEAKY_APP)]
        assert not own, (path, [list(t.traceback) for t in own[:3]])
    report = heaptrace_json("trend", tmp_path)
    leaks = {(s["filename"], s["lineno"]) for s in report["sites"] if s["kind"] == "leak"}
    sessions = (LEAKY_APP, marked_line(LEAKY_APP, '"token": bytearray(256)'))
    request_ids = (LEAKY_APP, marked_line(LEAKY_APP, "request_id = next(_request_ids)"))
    assert sessions in leaks
    assert leaks <= {sessions, request_ids}, leaks


# -- item 12: a signal that cannot be used is a usage error ---------------------

@pytest.mark.parametrize("name", ["KILL", "SIGSTOP", "9", "SEGV"])
def test_run_refuses_a_signal_it_cannot_catch(tmp_path, name):
    result = run_heaptrace("run", "-s", name, "-o", tmp_path / "snaps", SHOW_PATHS)
    assert_one_line_error(result, 2, "--signal")
    assert result.stdout == ""                      # the program never ran
    assert not os.path.exists(tmp_path / "snaps") or not snapshots_in(tmp_path / "snaps")


def test_run_refuses_sigalrm_when_the_timer_needs_it(tmp_path):
    result = run_heaptrace("run", "-s", "ALRM", "-o", tmp_path, SHOW_PATHS)
    assert_one_line_error(result, 2, "--signal", "--interval")
    assert result.stdout == ""


# -- item 13: an output folder that cannot be written is refused first ----------

def _unwritable_folder(tmp_path):
    if os.getuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    for candidate in ("/sys/kernel", "/sys", "/proc"):
        if os.path.isdir(candidate):
            try:
                tempfile.TemporaryFile(dir=candidate).close()
            except OSError:
                return candidate
    pytest.skip("no folder here that root cannot write")


def test_run_checks_the_output_folder_before_the_program(tmp_path):
    folder = _unwritable_folder(tmp_path)
    result = run_heaptrace("run", "-o", folder, SHOW_PATHS)
    assert_one_line_error(result, 2, str(folder), "cannot write")
    assert result.stdout == ""


# -- item 15: a forked child leaves the parent's series alone -------------------
# (issue 11: with children followed, the child writes a series of its own)

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("follow", [False, True], ids=["no-follow", "follow"])
def test_forked_child_does_not_act_as_the_snapshotter(tmp_path, follow):
    result = run_heaptrace("run", "--json", "--interval", "30", "--keep", "1",
                           *([] if follow else ["--no-follow"]), "-o", tmp_path, FORKER)
    assert result.returncode == 0, result.stderr
    assert "parent done" in result.stdout
    assert "Warning" not in result.stderr, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]
    pid = events[0]["pid"]
    mine = [e for e in events if e["event"] == "start"
            or str(pid) in os.path.basename(e.get("path") or e.get("folder") and
                                            " ".join(e.get("snapshots", [])) or "")]
    assert [e["event"] for e in mine] == ["start", "snapshot", "exit"], events
    names = [os.path.basename(f) for f in snapshots_in(tmp_path)]
    assert f"heaptrace-{pid}-000001.snap" in names
    others = [name for name in names if not name.startswith(f"heaptrace-{pid}-")]
    if follow:
        assert len(others) == 1 and others[0].endswith("-000001.snap"), names
    else:
        assert others == [], names


# -- item 16: __file__, sys.argv[0] and sys.path[0] as python gives them --------

def _paths(command, cwd):
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[0])


def test_program_gets_the_paths_python_gives(tmp_path):
    shutil.copy(SHOW_PATHS, tmp_path / "show.py")
    (tmp_path / "links").mkdir()
    os.symlink(tmp_path / "show.py", tmp_path / "links" / "link.py")
    for script in ("show.py", os.path.join("links", "link.py")):
        plain = _paths([sys.executable, script], tmp_path)
        traced = _paths([sys.executable, "-m", "heaptrace", "run", "-o", tmp_path / "out",
                         script], tmp_path)
        assert traced == plain
        assert os.path.isabs(traced["file"]) and traced["main"]


def test_snapshots_name_files_by_absolute_path(tmp_path):
    relative = os.path.relpath(GLOBALS_ONLY, TARGETS)
    result = run_heaptrace("run", "--interval", "0", "-o", tmp_path, relative, cwd=TARGETS)
    assert result.returncode == 0, result.stderr
    # Read from another folder: the source lines are still found.
    shown = run_heaptrace("top", snapshots_in(tmp_path)[0], "--limit", "1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "kept = [bytearray(10000) for _ in range(100)]" in shown.stdout


# -- item 17: -i means --include everywhere; run's interval is --interval only ---

def test_run_short_i_is_not_the_interval(tmp_path):
    result = run_heaptrace("run", "-i", "5", "-o", tmp_path, SHOW_PATHS)
    assert_one_line_error(result, 2, "--interval")
    assert result.stdout == ""


# -- the --interval timer (SIGALRM) gives way to a program that uses SIGALRM ----

def test_interval_timer_gives_way_to_the_program(tmp_path):
    program = os.path.join(TARGETS, "uses_alarm.py")
    result = run_heaptrace("run", "--interval", "0.02", "-o", tmp_path, program)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["alarms: 1"]
    assert "the program uses SIGALRM" in result.stderr
    assert snapshots_in(tmp_path)          # the exit snapshot still came
