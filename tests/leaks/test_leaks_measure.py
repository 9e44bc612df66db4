"""heaptrace.measure (context manager) and heaptrace.measured (decorator)."""

import io

import pytest

import heaptrace
from heaptrace.measure import format_size, measure, measured

MB = 1_000_000


@pytest.fixture(autouse=True)
def tracing_off():
    if heaptrace.is_tracing():
        heaptrace.stop()
    yield
    if heaptrace.is_tracing():
        heaptrace.stop()


def test_net_peak_and_top_site():
    with measure("keep") as m:
        kept = bytearray(2 * MB)   # the top site
    assert 2 * MB <= m.net < 2 * MB + 100_000
    assert m.peak >= m.net
    assert m.duration >= 0
    top = m.top[0]
    assert top.traceback[0].filename == __file__
    assert top.size_diff >= 2 * MB
    assert "keep: net +1.9 MiB" in m.format()
    # Only this file's lines: no trace of the measuring itself.
    assert {d.traceback[-1].filename for d in m.top} == {__file__}
    del kept


def test_transient_memory_shows_in_peak_not_net():
    with measure() as m:
        buffer = bytearray(3 * MB)
        del buffer
    assert abs(m.net) < 100_000
    assert m.peak >= 3 * MB - 10_000


def test_nested_measurements_keep_the_outer_peak():
    with measure("outer", top=0) as outer:
        with measure("inner", top=0) as inner:
            spike = bytearray(4 * MB)
            del spike
        small = bytearray(MB)
        del small
    assert inner.peak >= 4 * MB - 10_000
    assert outer.peak >= 4 * MB - 10_000   # reset by the inner one, yet kept
    assert outer.top == []


def test_tracing_state_is_restored():
    with measure(top=0):
        assert heaptrace.is_tracing()
    assert not heaptrace.is_tracing()
    heaptrace.start(3)
    with measure(top=0):
        pass
    assert heaptrace.is_tracing() and heaptrace.get_traceback_limit() == 3


def test_exception_inside_is_measured_and_propagates():
    with pytest.raises(ZeroDivisionError):
        with measure(top=0) as m:
            kept = bytearray(MB)
            1 / 0
    assert m.net >= MB
    del kept


def test_a_measure_is_used_once():
    m = measure(top=0)
    with m:
        pass
    with pytest.raises(RuntimeError):
        with m:
            pass


def test_output_stream():
    out = io.StringIO()
    with measure("loud", top=1, output=out):
        kept = bytearray(MB)
    assert out.getvalue().startswith("heaptrace: loud: net +")
    assert "#1 " in out.getvalue()
    del kept


def test_top_grouped_by_traceback_names_the_allocating_line():
    def allocate():
        return bytearray(MB)   # the allocating line

    with measure(top=1, group_by="traceback", nframe=5) as m:
        kept = allocate()
    line = allocate.__code__.co_firstlineno + 1
    assert m.to_dict()["top"][0]["lineno"] == line
    assert f"test_leaks_measure.py:{line}:" in m.format()
    del kept


def test_decorator_reports_every_call():
    out = io.StringIO()
    seen = []

    @measured(output=out, callback=seen.append)
    def build(n):
        return bytearray(n)

    assert len(build(MB)) == MB
    assert len(build(2 * MB)) == 2 * MB
    assert [m.label for m in seen] == [build.__qualname__] * 2
    assert seen[1].net >= 2 * MB
    assert build.last_measurement is seen[1]
    assert out.getvalue().count("heaptrace: ") == 2
    assert build.__name__ == "build"


def test_bare_decorator_and_quiet(capsys):
    @measured
    def noisy():
        return 1

    @measured(quiet=True)
    def silent():
        return 2

    assert noisy() == 1 and silent() == 2
    err = capsys.readouterr().err
    assert "noisy" in err and "silent" not in err
    assert silent.last_measurement.net is not None


def test_format_size():
    assert format_size(0) == "0 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 1024 ** 2, sign=True) == "+3.0 MiB"
    assert format_size(-2048, sign=True) == "-2.0 KiB"
