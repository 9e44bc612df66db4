"""find_leaks on leaking and non-leaking scenarios (see leak_scenarios.py).

Every leak must be named first; on every control nothing may be named.
Each scenario runs with the automatic settings a user gets by default.
"""

import gc
import inspect
import sys
import time
import uuid

import pytest

import heaptrace
import heaptrace.leaks
import leak_scenarios as scen

# A leaks case must finish in a few seconds.
TIME_LIMIT = 8.0


def leak_lines(*functions):
    """The (filename, lineno) of the lines marked '# LEAK' in the functions."""
    lines = set()
    for function in functions:
        source, first = inspect.getsourcelines(function)
        for offset, text in enumerate(source):
            if "# LEAK" in text:
                lines.add((inspect.getsourcefile(function), first + offset))
    assert lines, "scenario without a # LEAK mark"
    return lines


def line_of(function, text):
    source, first = inspect.getsourcelines(function)
    for offset, line in enumerate(source):
        if text in line:
            return first + offset
    raise AssertionError(f"{text!r} not in {function.__name__}")


def hunt(func, **options):
    start = time.perf_counter()
    report = heaptrace.leaks.find_leaks(func, **options)
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT, f"find_leaks took {elapsed:.1f} s"
    return report


def describe(report):
    return "\n" + report.format()


@pytest.fixture(autouse=True)
def clean_state():
    if heaptrace.is_tracing():
        heaptrace.stop()
    scen.reset()
    yield
    scen.reset()


def assert_named_first(report, *functions):
    assert report.suspects, "no suspect named" + describe(report)
    first = report.suspects[0]
    assert (first.filename, first.lineno) in leak_lines(*functions), describe(report)
    assert first.size_per_iteration > 0
    assert 0.5 <= first.confidence <= 1.0, describe(report)
    return first


def assert_nothing_named(report):
    assert report.suspects == [], describe(report)


def test_unbounded_dict_cache():
    report = hunt(scen.dict_cache)
    first = assert_named_first(report, scen.fetch_user, scen.dict_cache)
    assert first.lineno == line_of(scen.fetch_user, "bytearray(512)")
    # A dict plus a 512-byte bytearray per call.
    assert 512 <= first.size_per_iteration < 4096
    assert first.count_per_iteration >= 1


def test_list_behind_a_shared_helper_names_the_caller_that_keeps_it():
    report = hunt(scen.shared_helper)
    first = assert_named_first(report, scen.make_record, scen.audit, scen.shared_helper)
    assert first.lineno == line_of(scen.make_record, "bytearray(300)")
    callers = [frame.lineno for frame in first.traceback[1:]
               if frame.filename == scen.__file__]
    # The path through audit() keeps the memory; the one through validate()
    # reaches the same line but keeps nothing.
    assert callers[0] == line_of(scen.audit, "make_record"), describe(report)
    assert line_of(scen.validate, "make_record") not in callers


def test_unbounded_lru_cache():
    report = hunt(scen.unbounded_lru_cache)
    first = assert_named_first(report, scen.render_page.__wrapped__, scen.unbounded_lru_cache)
    assert first.lineno == line_of(scen.render_page.__wrapped__, "bytearray(400)")


def test_bounded_lru_cache_is_not_a_leak():
    assert_nothing_named(hunt(scen.bounded_lru_cache))


def test_closures_kept_in_a_global_list():
    report = hunt(scen.register_callbacks)
    first = assert_named_first(report, scen.register_callbacks)
    assert first.lineno == line_of(scen.register_callbacks, "lambda")


def test_slow_leak_behind_a_cache_that_fills_once():
    report = hunt(scen.render_tile)
    first = assert_named_first(report, scen.render_tile)
    assert first.lineno == line_of(scen.render_tile, "_history.append")
    # The cache held far more memory, yet it is no suspect: it plateaued.
    cache_line = line_of(scen.render_tile, "bytearray(4096)")
    assert all(s.lineno != cache_line for s in report.suspects), describe(report)
    told_apart = {d.lineno for d in report.dismissed if d.kind in ("plateau", "one-time")}
    assert cache_line in told_apart, describe(report)


def test_sawtooth_buffer_is_not_a_leak():
    assert_nothing_named(hunt(scen.buffered_write))


def test_garbage_cycles_are_not_a_leak_even_with_the_collector_off():
    gc.disable()
    try:
        report = hunt(scen.make_cycle)
    finally:
        gc.enable()
    assert_nothing_named(report)
    cycle_line = line_of(scen.make_cycle, "bytearray(1000)")
    assert ("garbage", cycle_line) in {(d.kind, d.lineno) for d in report.dismissed}, \
        describe(report)


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    name = f"lazy_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        "TABLE = [bytearray(64) for _ in range(3000)]\n"
        "INDEX = {i: str(i) for i in range(3000)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(scen, "lazy_module_name", name)
    yield name
    sys.modules.pop(name, None)


def test_lazy_import_is_not_a_leak(lazy_module):
    assert_nothing_named(hunt(scen.lazy_import))


def test_lazy_import_is_not_a_leak_even_without_warm_up(lazy_module):
    report = hunt(scen.lazy_import, warmup=0)
    assert_nothing_named(report)
    # The import happened inside the measured series, and was told apart.
    assert report.dismissed, describe(report)


def test_leak_in_a_worker_thread():
    report = hunt(scen.submit_job)
    first = assert_named_first(report, scen._work)
    # The traceback is the worker's own stack.
    assert first.traceback[0].lineno == line_of(scen._work, "bytearray(300)")
    assert any(frame.filename.endswith("threading.py") for frame in first.traceback)


def test_block_reallocated_larger_is_a_leak():
    report = hunt(scen.append_journal)
    first = assert_named_first(report, scen.append_journal)
    # One block that grows: bytes go up, blocks do not.
    assert first.count_per_iteration < 0.1
    assert 32 <= first.size_per_iteration <= 512


def test_function_that_keeps_nothing():
    assert_nothing_named(hunt(scen.pure_work))
