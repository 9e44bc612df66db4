"""`heaptrace run` writes snapshots; `trend`, `top` and `diff` read them."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import heaptrace
from cli_helpers import TARGETS, heaptrace as run_heaptrace, heaptrace_json, marked_line

SERVICE = os.path.join(TARGETS, "service.py")
LEAK_LINE = marked_line(SERVICE, "# LEAK")
CACHE_LINE = marked_line(SERVICE, "# CACHE")


def snapshots_in(folder):
    return sorted(glob.glob(os.path.join(folder, "*.snap")))


@pytest.fixture(scope="module")
def service_run(tmp_path_factory):
    """One run of the service: 1.2 s, a snapshot every 0.15 s."""
    folder = tmp_path_factory.mktemp("run") / "snaps"
    result = run_heaptrace("run", "--interval", "0.15", "-o", folder, SERVICE,
                           "--seconds", "1.2")
    return folder, result


def test_run_writes_a_series_and_says_where(service_run):
    folder, result = service_run
    assert result.returncode == 0, result.stderr
    assert "service started" in result.stdout and "handled" in result.stdout
    files = snapshots_in(folder)
    assert len(files) >= 4, result.stderr
    names = [os.path.basename(f) for f in files]
    pid = names[0].split("-")[1]
    assert names == [f"heaptrace-{pid}-{i:06d}.snap" for i in range(1, len(files) + 1)]
    assert str(folder) in result.stderr
    assert f"wrote {len(files)} snapshots" in result.stderr


def test_snapshots_carry_their_time(service_run):
    folder, _ = service_run
    times = [heaptrace.Snapshot.load(f).timestamp for f in snapshots_in(folder)]
    assert times == sorted(times)
    assert times[-1] - times[0] >= 0.6
    assert abs(times[-1] - time.time()) < 600


def test_trend_classifies_the_leak_and_the_plateau(service_run):
    folder, _ = service_run
    report = heaptrace_json("trend", folder)
    sites = {(s["filename"], s["lineno"]): s for s in report["sites"]}
    leak = sites[(SERVICE, LEAK_LINE)]
    assert leak["kind"] == "leak", leak
    assert leak["growth_per_hour"] > 100 * 1024 * 1024   # ~1 MB in ~1 s
    assert report["sites"][0]["lineno"] == LEAK_LINE
    assert sites[(SERVICE, CACHE_LINE)]["kind"] == "plateau", sites[(SERVICE, CACHE_LINE)]
    assert report["summary"]["leak"] >= 1
    assert len(report["snapshots"]) == len(snapshots_in(folder))


def test_trend_text_and_explicit_files(service_run):
    folder, _ = service_run
    result = run_heaptrace("trend", *snapshots_in(folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{len(snapshots_in(folder))} snapshots over")
    leak_rows = [line for line in lines if line.startswith("leak ")]
    assert leak_rows and f"service.py:{LEAK_LINE}" in leak_rows[0]
    assert "/hour" in lines[1]


def test_trend_by_traceback_shows_the_caller(service_run):
    folder, _ = service_run
    report = heaptrace_json("trend", folder, "--group-by", "traceback")
    leak = report["sites"][0]
    assert leak["kind"] == "leak" and leak["lineno"] == LEAK_LINE
    callers = [frame["lineno"] for frame in leak["traceback"][1:]]
    assert marked_line(SERVICE, "# CALL") in callers


def test_trend_needs_three_snapshots(service_run):
    folder, _ = service_run
    result = run_heaptrace("trend", *snapshots_in(folder)[:2])
    assert result.returncode == 2
    assert "at least 3 snapshots" in result.stderr


def test_top_json_and_filters(service_run):
    folder, _ = service_run
    last = snapshots_in(folder)[-1]
    report = heaptrace_json("top", last, "--limit", "0")
    lines = {(s["filename"], s["lineno"]) for s in report["stats"]}
    assert (SERVICE, LEAK_LINE) in lines and (SERVICE, CACHE_LINE) in lines
    assert report["total"]["size"] == sum(s["size"] for s in report["stats"])
    assert report["other"]["entries"] == 0
    sizes = [s["size"] for s in report["stats"]]
    assert sizes == sorted(sizes, reverse=True)

    only = heaptrace_json("top", last, "--include", "*service.py", "--limit", "0")
    assert {s["filename"] for s in only["stats"]} == {SERVICE}
    without = heaptrace_json("top", last, "--exclude", "*service.py", "--limit", "0")
    assert SERVICE not in {s["filename"] for s in without["stats"]}

    limited = heaptrace_json("top", last, "--limit", "2")
    assert len(limited["stats"]) == 2
    assert limited["other"]["entries"] == len(report["stats"]) - 2


def test_top_grouped_by_file_and_cumulative(service_run):
    folder, _ = service_run
    last = snapshots_in(folder)[-1]
    by_file = heaptrace_json("top", last, "--group-by", "filename", "--limit", "0")
    service = [s for s in by_file["stats"] if s["filename"] == SERVICE]
    assert len(service) == 1
    cumulative = heaptrace_json("top", last, "--cumulative", "--limit", "0")
    lines = {s["lineno"]: s["size"] for s in cumulative["stats"] if s["filename"] == SERVICE}
    handle_call = marked_line(SERVICE, "# CALL")
    # Cumulative: the caller's line counts what handle() allocated below it.
    assert lines[handle_call] >= lines[LEAK_LINE]


def test_top_text(service_run):
    folder, _ = service_run
    result = run_heaptrace("top", snapshots_in(folder)[-1], "--limit", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Top 3 lines of ")
    ranks = [line for line in lines if line.startswith("#")]
    assert [line[:3] for line in ranks] == ["#1:", "#2:", "#3:"]
    leak = next(i for i, line in enumerate(lines) if f"service.py:{LEAK_LINE}:" in line)
    assert lines[leak + 1] == "    sessions.append(bytearray(500))  # LEAK"   # its source
    assert lines[-1].startswith("Total: ")
    traceback_view = run_heaptrace("top", snapshots_in(folder)[-1], "-g", "traceback", "-l", "1")
    assert "service.py" in traceback_view.stdout


def test_diff_puts_the_growth_first(service_run):
    folder, _ = service_run
    files = snapshots_in(folder)
    # From the middle of the run on, the cache is full and only the leak grows.
    old = files[len(files) // 2]
    report = heaptrace_json("diff", old, files[-1])
    first = report["stats"][0]
    assert (first["filename"], first["lineno"]) == (SERVICE, LEAK_LINE)
    assert first["size_diff"] > 50_000 and first["count_diff"] > 50
    text = run_heaptrace("diff", old, files[-1], "--limit", "1")
    assert f"service.py:{LEAK_LINE}" in text.stdout.splitlines()[1]
    assert "+" in text.stdout.splitlines()[1]


def test_run_keeps_the_newest(tmp_path):
    folder = tmp_path / "snaps"
    result = run_heaptrace("run", "--interval", "0.1", "--keep", "3", "-o", folder,
                           SERVICE, "--seconds", "0.8")
    assert result.returncode == 0, result.stderr
    files = snapshots_in(folder)
    assert len(files) == 3
    numbers = [int(os.path.basename(f).split("-")[2].split(".")[0]) for f in files]
    assert numbers[0] > 1 and numbers == list(range(numbers[0], numbers[0] + 3))
    assert "kept the newest 3" in result.stderr


def test_run_passes_on_the_exit_status_and_failures(tmp_path):
    result = run_heaptrace("run", "--interval", "0", "-o", tmp_path, "--", SERVICE,
                           "--seconds", "0.1", "--exit", "3")
    assert result.returncode == 3
    assert len(snapshots_in(tmp_path)) == 1   # the one at exit
    failed = run_heaptrace("run", "--interval", "0", "-o", tmp_path / "f", SERVICE,
                           "--seconds", "0.1", "--fail")
    assert failed.returncode == 1
    assert "RuntimeError: the service failed" in failed.stderr
    assert "heaptrace/cli" not in failed.stderr   # the program's traceback only
    assert len(snapshots_in(tmp_path / "f")) == 1


def test_run_module_with_json_events(tmp_path):
    # The program's arguments may look like run's own options.
    result = run_heaptrace("run", "--json", "--interval", "0", "-o", tmp_path,
                           "-m", "servicepkg", "alpha", "--keep", "2", "-o", "x",
                           cwd=TARGETS)
    assert result.returncode == 0, result.stderr
    assert "servicepkg args: alpha --keep 2 -o x" in result.stdout
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events] == ["start", "snapshot", "exit"]
    assert events[1]["reason"] == "exit"
    assert events[2]["snapshots"] == snapshots_in(tmp_path)
    assert events[2]["exit_code"] == 0


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_run_writes_a_snapshot_on_sigusr1(tmp_path):
    stop = tmp_path / "stop"
    process = subprocess.Popen(
        [sys.executable, "-m", "heaptrace", "run", "--json", "--interval", "0",
         "-o", str(tmp_path / "snaps"), SERVICE, "--wait-for", str(stop)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        start = json.loads(process.stderr.readline())
        assert start["event"] == "start" and start["signal"] == "SIGUSR1"
        process.send_signal(signal.SIGUSR1)
        taken = json.loads(process.stderr.readline())
        assert taken["event"] == "snapshot" and taken["reason"] == "signal"
        assert os.path.exists(taken["path"])
        stop.touch()
        assert process.wait(timeout=30) == 0
        end = json.loads(process.stderr.readline())
        assert end["event"] == "snapshot" and end["reason"] == "exit"
    finally:
        process.kill()
        process.wait()
        process.stderr.close()


def test_trend_without_stored_times_uses_file_times(tmp_path):
    """Snapshots dumped by hand carry no timestamp: their mtime is used."""
    heaptrace.start(1)
    try:
        kept = []
        for index in range(4):
            kept.append(bytearray(100_000))
            path = tmp_path / f"manual-{index}.snap"
            heaptrace.take_snapshot().dump(str(path))
            os.utime(path, (1_700_000_000 + 60 * index,) * 2)
    finally:
        heaptrace.stop()
    report = heaptrace_json("trend", tmp_path)
    assert report["hours"] == pytest.approx(3 / 60)
    assert [s["timestamp"] for s in report["snapshots"]] == [
        1_700_000_000 + 60 * i for i in range(4)]
    leak = report["sites"][0]
    assert leak["kind"] == "leak" and leak["filename"] == __file__


def test_top_reads_a_snapshot_of_the_standard_tracemalloc(tmp_path):
    import tracemalloc

    path = tmp_path / "stdlib.snap"
    tracemalloc.start()
    try:
        kept = bytearray(300_000)
        tracemalloc.take_snapshot().dump(str(path))
    finally:
        tracemalloc.stop()
    report = heaptrace_json("top", path, "--limit", "1")
    assert report["stats"][0]["filename"] == __file__
    assert report["stats"][0]["size"] >= 300_000
    del kept
