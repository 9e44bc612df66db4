"""find_leaks as a Python API: options, tracing state, reports."""

import json
import os

import pytest

import heaptrace
from heaptrace.leaks import MAX_AUTO_ITERATIONS, find_leaks

HEAPTRACE_DIR = os.path.dirname(os.path.abspath(heaptrace.leaks.__file__))

_kept = []


def leak(size=600):
    _kept.append(bytearray(size))


def no_leak():
    return bytearray(600)


@pytest.fixture(autouse=True)
def forget():
    if heaptrace.is_tracing():
        heaptrace.stop()
    yield
    _kept.clear()
    if heaptrace.is_tracing():
        heaptrace.stop()


def test_tracing_off_before_is_off_after():
    assert not heaptrace.is_tracing()
    report = find_leaks(leak, iterations=120)
    assert not heaptrace.is_tracing()
    assert report.nframe == 25


def test_tracing_on_before_stays_on_with_its_limit():
    heaptrace.start(7)
    report = find_leaks(leak, iterations=120)
    assert heaptrace.is_tracing()
    assert heaptrace.get_traceback_limit() == 7
    assert report.nframe == 7
    assert report.suspects and len(report.suspects[0].traceback) <= 7


def test_one_frame_tracing_is_noted():
    heaptrace.start(1)
    report = find_leaks(leak, iterations=120)
    assert any("1 frame" in note for note in report.notes)


def test_explicit_iterations_warmup_and_snapshots():
    calls = []
    report = find_leaks(lambda: calls.append(None), iterations=250, warmup=9, snapshots=5)
    assert report.iterations == 250
    assert report.warmup == 9
    assert report.snapshots == 6
    assert len(calls) == 259


def test_automatic_iterations_are_bounded():
    report = find_leaks(no_leak)
    assert report.snapshots == 13
    assert 12 <= report.iterations <= MAX_AUTO_ITERATIONS
    assert report.warmup >= 2


def test_arguments_reach_the_function():
    report = find_leaks(leak, 5000, iterations=120)
    assert report.suspects[0].size_per_iteration >= 5000
    seen = []
    find_leaks(lambda a, b=None: seen.append((a, b)), 1, b=2, iterations=12, warmup=0)
    assert set(seen) == {(1, 2)}


def test_progress_is_reported():
    events = []
    find_leaks(no_leak, iterations=60, warmup=3, snapshots=4,
               progress=lambda *event: events.append(event))
    measuring = [e for e in events if e[0] == "measuring"]
    assert measuring == [("measuring", i, 4) for i in range(5)]
    assert ("warm-up", 0, 3) in events


def test_exceptions_propagate_and_tracing_stops():
    def fails():
        raise KeyError("boom")

    with pytest.raises(KeyError):
        find_leaks(fails)
    assert not heaptrace.is_tracing()


@pytest.mark.parametrize("options", [dict(snapshots=2), dict(iterations=5),
                                     dict(warmup=-1), dict(nframe=0)])
def test_bad_options(options):
    with pytest.raises(ValueError):
        find_leaks(no_leak, **options)


def test_stops_early_when_memory_runs_away():
    report = find_leaks(leak, 1_000_000, max_memory=8 * 1024 * 1024, warmup=1)
    assert report.suspects
    assert report.snapshots < 13
    assert any("stopped after" in note for note in report.notes)


def test_heaptrace_itself_is_never_reported():
    report = find_leaks(leak)
    places = [s.filename for s in report.suspects] + [d.filename for d in report.dismissed]
    places += [f.filename for s in report.suspects for f in s.traceback]
    assert places
    assert not [p for p in places if p.startswith(HEAPTRACE_DIR + os.sep)]


def test_report_as_json_and_text():
    report = find_leaks(leak, iterations=240)
    data = json.loads(json.dumps(report.to_dict()))
    first = data["suspects"][0]
    assert first["filename"] == __file__
    assert first["traceback"][0] == {"filename": __file__, "lineno": first["lineno"]}
    assert set(first) >= {"size_per_iteration", "count_per_iteration", "confidence",
                          "traceback"}
    confidences = [round(s["confidence"], 1) for s in data["suspects"]]
    assert confidences == sorted(confidences, reverse=True)
    text = report.format()
    assert text.startswith("1 suspected leak in leak: 240 calls")
    assert "_kept.append(bytearray(size))" in text


def test_no_leak_report():
    report = find_leaks(no_leak)
    assert report.suspects == []
    assert report.to_dict()["suspects"] == []
    assert report.format().startswith("No leak found in no_leak")
