"""`heaptrace trend FOLDER` with several runs and stray files (issue 8.14)."""

import os

import pytest

import heaptrace
from cli_helpers import assert_one_line_error, heaptrace as run_heaptrace, heaptrace_json

BASE = 1_700_000_000


def _write_series(folder, names, start):
    """Dump one growing snapshot per name, a minute apart from ``start``."""
    heaptrace.start(1)
    try:
        kept = []
        for index, name in enumerate(names):
            kept.append(bytearray(200_000))
            snapshot = heaptrace.take_snapshot()
            snapshot.timestamp = start + 60 * index
            path = folder / name
            snapshot.dump(str(path))
            os.utime(path, (start + 60 * index,) * 2)
    finally:
        heaptrace.stop()


@pytest.fixture
def mixed_folder(tmp_path):
    """Run 111: 3 snapshots; run 222: 1 newer snapshot; a stray snapshot not
    named by run; a text file named .snap."""
    _write_series(tmp_path, [f"heaptrace-111-{i:06d}.snap" for i in (1, 2, 3)], BASE)
    _write_series(tmp_path, ["heaptrace-222-000001.snap"], BASE + 3600)
    _write_series(tmp_path, ["by-hand.snap"], BASE + 7200)
    (tmp_path / "notes.snap").write_text("not a snapshot\n")
    return tmp_path


def test_trend_reads_the_run_that_has_a_series(mixed_folder):
    report = heaptrace_json("trend", mixed_folder)
    assert report["pid"] == 111
    assert [os.path.basename(s["path"]) for s in report["snapshots"]] == [
        f"heaptrace-111-{i:06d}.snap" for i in (1, 2, 3)]
    assert report["runs"] == [{"pid": 111, "snapshots": 3}, {"pid": 222, "snapshots": 1}]
    assert "--pid" in report["note"] and "pid 222" in report["note"]
    assert {os.path.basename(s["path"]) for s in report["skipped"]} == {
        "by-hand.snap", "notes.snap"}
    assert report["sites"][0]["kind"] != "noise"   # the growth of _write_series
    assert report["sites"][0]["filename"] == __file__


def test_trend_text_says_which_run_and_what_was_skipped(mixed_folder):
    result = run_heaptrace("trend", mixed_folder)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("Note: ")]
    assert any("showing pid 111" in line and "--pid PID" in line for line in notes), notes
    assert any("skipped 2 files" in line and "notes.snap" in line for line in notes), notes


def test_trend_pid_picks_another_run(mixed_folder):
    result = run_heaptrace("trend", mixed_folder, "--pid", "222")
    assert_one_line_error(result, 2, "at least 3 snapshots", "pid 222", "pid 111: 3")
    missing = run_heaptrace("trend", mixed_folder, "--pid", "333")
    assert_one_line_error(missing, 2, "no run with pid 333")


def test_trend_skips_a_broken_file_of_a_run(tmp_path):
    _write_series(tmp_path, [f"heaptrace-5-{i:06d}.snap" for i in (1, 2, 3, 4)], BASE)
    (tmp_path / "heaptrace-5-000003.snap").write_bytes(b"garbage")
    report = heaptrace_json("trend", tmp_path)
    assert len(report["snapshots"]) == 3
    assert [os.path.basename(s["path"]) for s in report["skipped"]] == [
        "heaptrace-5-000003.snap"]
    assert report["sites"][0]["filename"] == __file__
