"""find_leaks names the user's line and what keeps the memory (issue 10).

See holder_scenarios.py: every leak must be named first, at a line marked
# LEAK, with a "kept by" chain holding the expected steps in order; on
every control nothing may be named.
"""

import pytest

import heaptrace
import heaptrace.leaks
import holder_scenarios as scen
from test_leaks_scenarios import assert_nothing_named, describe, hunt, leak_lines


@pytest.fixture(autouse=True)
def clean_state():
    if heaptrace.is_tracing():
        heaptrace.stop()
    scen.reset()
    yield
    scen.reset()


def assert_in_order(steps, expected, report):
    position = 0
    for wanted in expected:
        for index in range(position, len(steps)):
            if wanted in steps[index]:
                position = index + 1
                break
        else:
            raise AssertionError(f"{wanted!r} not in the chain {steps} (in order)"
                                 + describe(report))


LEAKS = [scen.loggers_per_request, scen.lru_cache_on_a_method, scen.saved_exceptions,
         scen.closures_on_an_event_bus, scen.finished_tasks_in_a_list,
         scen.suspended_generators, scen.thread_local_list, scen.numpy_arrays_in_a_list]


@pytest.mark.parametrize("scenario", LEAKS, ids=lambda f: f.__name__)
def test_leak_is_named_at_the_users_line_with_its_holder(scenario):
    if scenario is scen.numpy_arrays_in_a_list:
        pytest.importorskip("numpy")
    report = hunt(scenario)
    assert report.suspects, "no suspect named" + describe(report)
    first = report.suspects[0]
    marked = leak_lines(*[obj for obj in vars(scen).values()
                          if callable(obj) and getattr(obj, "__module__", "") == scen.__name__
                          and not isinstance(obj, type)])
    assert (first.filename, first.lineno) in marked, describe(report)
    assert first.held_by, "no 'kept by' chain" + describe(report)
    assert_in_order(first.held_by, scen.HOLDERS[scenario], report)
    assert "kept by: " in report.format()
    assert report.to_dict()["suspects"][0]["held_by"] == first.held_by


def test_library_allocation_keeps_its_frames_under_the_users_line():
    report = hunt(scen.loggers_per_request)
    first = report.suspects[0]
    # The memory is allocated inside logging; the user's line is reported,
    # and the allocating frame stays visible.
    assert first.allocated_at is not None, describe(report)
    assert first.allocated_at.filename.endswith("__init__.py")
    assert first.traceback[0] == first.allocated_at
    assert any(frame[:2] == (first.filename, first.lineno) for frame in first.traceback)


def test_without_user_code_the_library_line_is_named():
    report = hunt(scen.loggers_per_request, user_code=False)
    assert report.suspects, describe(report)
    assert "logging" in report.suspects[0].filename, describe(report)
    assert report.suspects[0].allocated_at is None


def test_held_by_can_be_turned_off():
    report = hunt(scen.closures_on_an_event_bus, held_by=False)
    assert report.suspects and report.suspects[0].held_by is None


@pytest.mark.parametrize("scenario", [scen.bounded_deque, scen.numpy_temporaries],
                         ids=lambda f: f.__name__)
def test_controls_name_nothing_with_native_tracing_too(scenario):
    """With C libraries' memory traced as well (NumPy's temporaries come
    from malloc), a control still names nothing.  (The C-library leak and
    its fixed twin are in tests/native.)"""
    if scenario is scen.numpy_temporaries:
        pytest.importorskip("numpy")
    assert_nothing_named(hunt(scenario, native=True))


CONTROLS = [scen.bounded_deque, scen.batch_flushed_every_300_calls,
            scen.numpy_temporaries, scen.loggers_reused]


@pytest.mark.parametrize("scenario", CONTROLS, ids=lambda f: f.__name__)
def test_control_names_nothing(scenario):
    if scenario is scen.numpy_temporaries:
        pytest.importorskip("numpy")
    assert_nothing_named(hunt(scenario))
