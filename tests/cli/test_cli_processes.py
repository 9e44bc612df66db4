"""`heaptrace run` follows the processes of a service (issue 11): fork()
children (a pre-fork server), multiprocessing under each start method and a
subprocess running sys.executable each write their own series, named by
pid, with the run's settings; a leak in one worker shows in its series."""

import os
import re
import sys

import pytest

import heaptrace
from cli_helpers import TARGETS, heaptrace as run_heaptrace, marked_line

PREFORK = os.path.join(TARGETS, "prefork.py")
CHILDREN = os.path.join(TARGETS, "children.py")


def series(folder, pid):
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.startswith(f"heaptrace-{pid}-") and name.endswith(".snap"))


def line_size(snapshot, path, line):
    return sum(stat.size for stat in snapshot.statistics("lineno")
               if stat.traceback[0].filename == path and stat.traceback[0].lineno == line)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_prefork_server_leak_is_found_in_the_leaky_worker(tmp_path):
    result = run_heaptrace("run", "--sample", "64KiB", "--interval", "0.3", "--no-signal",
                           "-o", tmp_path, PREFORK, timeout=120)
    assert result.returncode == 0, result.stderr
    roles = {m.group(2): m.group(1) for m in
             re.finditer(r"^(\d+) (leaky|steady)$", result.stdout, re.M)}
    assert set(roles) == {"leaky", "steady"}, result.stdout
    leak_line = marked_line(PREFORK, "# LEAK")
    steady_line = marked_line(PREFORK, "# STEADY")
    growth = {}
    for role, pid in roles.items():
        files = series(tmp_path, pid)
        assert len(files) >= 2, (role, os.listdir(tmp_path))
        first, last = heaptrace.Snapshot.load(files[0]), heaptrace.Snapshot.load(files[-1])
        assert last.sampling_interval == 64 * 1024
        growth[role] = (line_size(last, PREFORK, leak_line)
                        - line_size(first, PREFORK, leak_line))
        if role == "steady":
            # what it allocates it frees: nothing of it stays
            assert line_size(last, PREFORK, steady_line) < 100 * 1024
    # about 600 requests of 4 KiB: megabytes, against sampling noise of
    # a few hundred KiB
    assert growth["leaky"] > 1024 * 1024, growth
    assert growth["steady"] == 0, growth
    master = next(line.split()[1] for line in result.stdout.splitlines()
                  if line.startswith("master"))
    assert series(tmp_path, master)
    # `heaptrace trend` reads the folder, run by run
    trend = run_heaptrace("trend", tmp_path)
    assert trend.returncode in (0, 1), trend.stderr
    assert "Traceback" not in trend.stderr


def test_multiprocessing_and_subprocess_children_write_their_own_series(tmp_path):
    result = run_heaptrace("run", "--sample", "32KiB", "--interval", "0", "--no-signal",
                           "-o", tmp_path, CHILDREN, timeout=180)
    assert result.returncode == 0, result.stderr
    pids = {}
    for line in result.stdout.splitlines():
        words = line.split()
        pids[words[0]] = words[1:]
    assert set(pids) == {"fork", "spawn", "forkserver", "subprocess"}, result.stdout
    task_line = marked_line(CHILDREN, "# TASK")
    for kind in ("fork", "spawn", "forkserver"):
        for pid in pids[kind]:
            files = series(tmp_path, pid)
            assert files, (kind, pid, sorted(os.listdir(tmp_path)), result.stderr)
            snapshot = heaptrace.Snapshot.load(files[-1])
            assert snapshot.sampling_interval == 32 * 1024
    files = series(tmp_path, pids["subprocess"][0])
    assert files, (sorted(os.listdir(tmp_path)), result.stderr)
    child = heaptrace.Snapshot.load(files[-1])
    assert child.sampling_interval == 32 * 1024
    # its 2000 blocks of ~1 KiB, estimated
    total = sum(stat.size for stat in child.statistics("filename")
                if stat.traceback[0].filename == "<string>")
    assert 1e6 < total < 4e6, total
    assert task_line > 0


def test_child_keeps_its_own_sitecustomize(tmp_path):
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import os\nos.environ['OWN_SITE'] = 'ran'\n")
    program = tmp_path / "prog.py"
    program.write_text(
        "import subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', "
        "'import os, heaptrace; print(os.environ.get(\"OWN_SITE\"), heaptrace.is_tracing())'],"
        " capture_output=True, text=True)\n"
        "print(out.stdout.strip())\n")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(own) + (os.pathsep + env_path if env_path else "")
    try:
        result = run_heaptrace("run", "--interval", "0", "--no-signal", "-o",
                               tmp_path / "out", program)
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            del os.environ["PYTHONPATH"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ran True", (result.stdout, result.stderr)


def test_sample_option_is_checked(tmp_path):
    result = run_heaptrace("run", "--sample", "lots", "-o", tmp_path, PREFORK)
    assert result.returncode == 2
    assert "--sample" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
