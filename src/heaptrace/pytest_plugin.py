"""pytest plugin: memory limits, leak verdicts and a memory table per test.

Registered through the ``pytest11`` entry point, so installing heaptrace
is enough.  It adds:

* ``@pytest.mark.limit_memory("24 MB")``: the test fails if the peak traced
  memory of its call phase goes above the limit.
* ``@pytest.mark.no_leaks`` (``iterations=``, ``warmup=``) and
  ``--heaptrace-leaks``: the call phase runs many times with its fixtures
  set up once, and :func:`heaptrace.find_leaks` judges the series.
* ``--heaptrace``: every test is traced, and the session ends with the
  tests that reached the highest peak and those that kept the most memory.

Tracing runs only inside the phases being measured; a test that uses none
of this runs untraced.  Marker arguments are checked at collection, and a
bad one stops the run with a usage error naming the test.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from dataclasses import dataclass
from typing import Optional

import pytest

from ._sizes import parse_size
from .leaks import DEFAULT_SNAPSHOTS, _display_path, find_leaks
from .measure import format_size, measure, own_locations

#: Calls measured and warm-up calls made by no_leaks when not given.
DEFAULT_ITERATIONS = 100
DEFAULT_WARMUP = 5
#: Frames per traceback: the leak check shows call paths; the limit and the
#: session table only need the allocating line.
LEAK_FRAMES = 25
SITE_FRAMES = 1
#: Allocation sites shown per test in messages and in the session table.
TOP_SITES = 5
TABLE_SITES = 3
#: Smallest site (bytes) shown after the first one, in the limit message and
#: the session table: below it are pytest's own records of the test, made
#: through the standard library.
MIN_TABLE_SITE = 1024
#: The limit check snapshots the heap when traced memory (above the start
#: of the call) first passes this share of the limit, then each time it
#: grows by this share again, so that the sites at the peak are known.
SAMPLE_SHARE = 0.05
#: --heaptrace snapshots a test's heap when its traced memory (above the
#: test's start) first passes PEAK_STEP bytes, then each time it passes the
#: last snapshot's level by a quarter of that level (at least PEAK_STEP
#: more): a few dozen snapshots at most, however high the test climbs.
PEAK_STEP = 64 * 1024

_SETTINGS = pytest.StashKey()
_SESSION = pytest.StashKey()
_PHASES = pytest.StashKey()


def _api():
    import heaptrace

    return heaptrace


# -- options and markers ------------------------------------------------------

def pytest_addoption(parser):
    group = parser.getgroup("heaptrace", "heaptrace: memory limits and leak checks")
    group.addoption(
        "--heaptrace", action="store_true", default=False,
        help="trace the memory of every test and end the session with the tests "
             "that reached the highest peak and those that kept the most memory")
    group.addoption(
        "--heaptrace-leaks", action="store_true", default=False,
        help="check every test for leaks, as if it were marked no_leaks: run its call "
             "phase repeatedly with its fixtures set up once and fail it if memory "
             "keeps growing")
    group.addoption(
        "--heaptrace-iterations", type=int, default=DEFAULT_ITERATIONS, metavar="N",
        help=f"calls measured by the leak check when the marker does not say "
             f"(default {DEFAULT_ITERATIONS}, at least 3)")
    group.addoption(
        "--heaptrace-warmup", type=int, default=DEFAULT_WARMUP, metavar="N",
        help=f"calls made before the leak check's first snapshot when the marker "
             f"does not say (default {DEFAULT_WARMUP})")
    group.addoption(
        "--heaptrace-top", type=int, default=5, metavar="N",
        help="tests listed in each table that --heaptrace prints (default 5)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "limit_memory(size): fail the test if the peak traced memory of its call phase "
        "goes above size (\"512 KB\", \"24 MB\", \"1.5 GiB\" or a number of bytes)")
    config.addinivalue_line(
        "markers",
        f"no_leaks(iterations={DEFAULT_ITERATIONS}, warmup={DEFAULT_WARMUP}): run the "
        f"test's call phase repeatedly with its fixtures set up once and fail it if "
        f"memory keeps growing (heaptrace.find_leaks's verdict)")
    for name in ("heaptrace_iterations", "heaptrace_top"):
        value = config.getoption(name)
        if value < (3 if name == "heaptrace_iterations" else 0):
            raise pytest.UsageError(
                f"--{name.replace('_', '-')} must be at least "
                f"{3 if name == 'heaptrace_iterations' else 0}, not {value}")
    if config.getoption("heaptrace_warmup") < 0:
        raise pytest.UsageError(
            f"--heaptrace-warmup must be at least 0, not {config.getoption('heaptrace_warmup')}")
    config.pluginmanager.register(_Plugin(config), "heaptrace-plugin")


@dataclass
class _Settings:
    """What the plugin does with one test, read from its markers and options."""

    limit: Optional[int] = None
    limit_text: str = ""
    iterations: Optional[int] = None   # None: no leak check
    warmup: int = DEFAULT_WARMUP
    error: Optional[str] = None


def _read_limit(marker) -> tuple:
    if len(marker.args) + len(marker.kwargs) != 1 or set(marker.kwargs) - {"limit"}:
        raise ValueError("limit_memory takes one size, e.g. limit_memory(\"24 MB\")")
    value = marker.args[0] if marker.args else marker.kwargs["limit"]
    try:
        limit = parse_size(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"limit_memory: {exc}") from None
    if limit <= 0:
        raise ValueError(f"limit_memory: the limit must be above 0, not {value!r}")
    return limit, value if isinstance(value, str) else f"{value:,} B"


def _read_count(kwargs: dict, name: str, default: int, least: int) -> int:
    value = kwargs.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"no_leaks: {name} must be a whole number, "
                         f"got {value!r} ({type(value).__name__})")
    if value < least:
        raise ValueError(f"no_leaks: {name} must be at least {least}, not {value}")
    return value


def _settings(item, config) -> _Settings:
    """The item's settings; ValueError with a one-line message on bad markers."""
    settings = _Settings()
    marker = item.get_closest_marker("limit_memory")
    if marker is not None:
        settings.limit, settings.limit_text = _read_limit(marker)
    marker = item.get_closest_marker("no_leaks")
    if marker is not None or config.getoption("heaptrace_leaks"):
        if marker is not None and marker.args:
            raise ValueError("no_leaks takes only keyword arguments "
                             "(iterations=, warmup=)")
        kwargs = marker.kwargs if marker is not None else {}
        unknown = sorted(set(kwargs) - {"iterations", "warmup"})
        if unknown:
            raise ValueError(f"no_leaks: unknown argument {unknown[0]!r} "
                             f"(it takes iterations= and warmup=)")
        settings.iterations = _read_count(
            kwargs, "iterations", config.getoption("heaptrace_iterations"), 3)
        settings.warmup = _read_count(
            kwargs, "warmup", config.getoption("heaptrace_warmup"), 0)
    return settings


# -- the plugin ---------------------------------------------------------------

class _Plugin:
    def __init__(self, config):
        self.config = config
        self.session_tracing = config.getoption("heaptrace")
        # Per-test figures of --heaptrace, from this process or from the
        # xdist workers' reports: {nodeid: dict}.
        self.results = {}
        # A collection report named a bad marker argument.
        self.usage_error = False

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        # Markers are read as the tests are collected: a bad one turns the
        # collection of its module into an error naming the test, which
        # stops the run before any test and reaches the xdist controller as
        # any collection error does (a UsageError would crash a worker).
        outcome = yield
        report = outcome.get_result()
        if report.outcome != "passed":
            return
        errors = []
        for node in report.result:
            if isinstance(node, pytest.Item):
                try:
                    node.stash[_SETTINGS] = _settings(node, self.config)
                except ValueError as exc:
                    errors.append(f"{node.nodeid}: {exc}")
        if errors:
            report.outcome = "failed"
            report.longrepr = ("heaptrace: bad marker arguments (usage error)\n"
                               + "\n".join(errors))
            report.result = []
            report.heaptrace_usage_error = True

    def pytest_collectreport(self, report):
        if getattr(report, "heaptrace_usage_error", False):
            self.usage_error = True

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session):
        if self.usage_error:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items):
        # Markers another plugin added after the collection are read here;
        # a bad one fails its test when it runs.
        for item in items:
            try:
                item.stash[_SETTINGS] = _settings(item, config)
            except ValueError as exc:
                item.stash[_SETTINGS] = _Settings(error=f"heaptrace: {item.nodeid}: {exc}")

    # -- the call phase ----------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        settings = item.stash.get(_SETTINGS, None)
        if settings is not None and settings.error is not None:
            pytest.fail(settings.error, pytrace=False)
        patched = False
        if settings is not None and (settings.limit is not None
                                     or settings.iterations is not None):
            runtest = first = item.runtest
            if settings.limit is not None:
                first = _limit_check(item, settings, runtest)
            if settings.iterations is not None:
                # The limit applies to the first call, before the leak
                # check's own snapshots take memory.
                item.runtest = _leak_check(item, settings, first, runtest)
            else:
                item.runtest = first
            patched = True
        try:
            with _phase(item, "call"):
                yield
        finally:
            if patched:
                del item.runtest

    # -- --heaptrace: memory per test --------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        if not self.session_tracing:
            yield
            return
        state = _TestMemory(item)
        item.stash[_SESSION] = state
        item.stash[_PHASES] = {}
        try:
            yield
        finally:
            state.finish()
            del item.stash[_SESSION]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item):
        with _phase(item, "setup"):
            yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_teardown(self, item, nextitem):
        with _phase(item, "teardown"):
            yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        state = item.stash.get(_SESSION, None)
        if state is not None and call.when == "teardown":
            outcome.get_result().heaptrace = state.figures(item)

    def pytest_runtest_logreport(self, report):
        figures = getattr(report, "heaptrace", None)
        if report.when == "teardown" and isinstance(figures, dict):
            self.results[report.nodeid] = figures

    def pytest_terminal_summary(self, terminalreporter):
        if self.session_tracing and self.results:
            _write_table(terminalreporter, self.results,
                         self.config.getoption("heaptrace_top"))


# -- limit_memory ---------------------------------------------------------------

def _limit_check(item, settings: _Settings, runtest):
    """``runtest`` wrapped so that it fails if its peak goes above the limit."""

    def check():
        api = _api()
        nframe = LEAK_FRAMES if settings.iterations is not None else SITE_FRAMES
        baseline = api.take_snapshot() if api.is_tracing() else None
        failures = _unittest_failures(item)
        with measure(top=0, nframe=nframe) as m:
            sampler = _PeakSampler(api, settings.limit)
            sampler.install()
            try:
                runtest()
            finally:
                sampler.remove()
                state = item.stash.get(_SESSION, None)
                if state is not None and sampler.snapshot is not None:
                    # Under --heaptrace too: the limit's sampler watched
                    # more closely, its snapshot may be the higher one.
                    state.peaks.offer(sampler.snapshot, sampler.start + sampler.at)
        if m.peak > settings.limit and _unittest_failures(item) == failures:
            pytest.fail(_limit_message(item, settings, m.peak, sampler, baseline),
                        pytrace=False)

    return check


class _PeakSampler:
    """Snapshots the heap near the peak of a call phase, from a profile function.

    At every call and return in the thread running the test, traced memory
    is read; once it passes half the limit, the heap is snapshotted, and
    again each time it grows by SAMPLE_SHARE of the limit.  The last
    snapshot is then within that share of the highest moment sampled.
    Nothing is installed if another profiler (cProfile, a debugger) is set.
    """

    def __init__(self, api, limit: int):
        self.api = api
        self.get_traced_memory = api.get_traced_memory
        self.start = api.get_traced_memory()[0]
        self.step = max(1, int(limit * SAMPLE_SHARE))
        self.next_at = self.start + limit // 2
        self.snapshot = None
        self.at = 0
        self.installed = False
        self.other_profiler = False

    def install(self) -> None:
        if sys.getprofile() is not None:
            self.other_profiler = True
            return
        sys.setprofile(self.event)
        self.installed = True

    def remove(self) -> None:
        if self.installed:
            sys.setprofile(None)
            self.installed = False

    def event(self, frame, event, arg) -> None:
        current = self.get_traced_memory()[0]
        if current >= self.next_at:
            self.snapshot = self.api.take_snapshot()
            self.at = current - self.start
            self.next_at = current + self.step


def _limit_message(item, settings, peak, sampler, baseline) -> str:
    limit = settings.limit
    shown = settings.limit_text
    if format_size(limit) not in shown:
        shown += f" = {format_size(limit)}"
    lines = [f"heaptrace: {item.nodeid} reached a peak of {format_size(peak)} of traced "
             f"memory in its call phase, above its limit of {shown}"]
    if sampler.snapshot is not None:
        sites = _sites(sampler.snapshot, baseline, skip_pytest=True)[:TOP_SITES]
        sites = sites[:1] + [site for site in sites[1:] if site[2] >= MIN_TABLE_SITE]
        lines.append(f"Largest allocation sites at {format_size(sampler.at)} "
                     f"(the highest moment sampled):")
        lines.extend(f"  {path}:{lineno}: {format_size(size)} in {count:,} "
                     f"block{'s' if count != 1 else ''}"
                     for path, lineno, size, count in sites)
    elif sampler.other_profiler:
        lines.append("(the sites at the peak are unknown: another profiler was active)")
    else:
        lines.append("(the sites at the peak are unknown: it was reached and left "
                     "inside a single call)")
    return "\n".join(lines)


def _sites(snapshot, baseline, skip_pytest: bool) -> list:
    """[(path, lineno, bytes, blocks)] live in ``snapshot`` (and not in
    ``baseline``), largest first; heaptrace's own blocks, and pytest's and
    pluggy's with ``skip_pytest``, left out."""
    prefixes, files = own_locations()
    if skip_pytest:
        prefixes = prefixes + _pytest_prefixes()
    if baseline is None:
        rows = [(s.traceback[-1], s.size, s.count) for s in snapshot.statistics("lineno")]
    else:
        rows = [(d.traceback[-1], d.size_diff, d.count_diff)
                for d in snapshot.compare_to(baseline, "lineno")]
    sites = [(_display_path(frame.filename), frame.lineno, size, count)
             for frame, size, count in rows
             if size > 0 and not frame.filename.startswith(prefixes)
             and frame.filename not in files]
    sites.sort(key=lambda site: -site[2])
    return sites


def _pytest_prefixes() -> tuple:
    import _pytest
    import pluggy

    return tuple(os.path.dirname(os.path.abspath(module.__file__)) + os.sep
                 for module in (_pytest, pluggy))


# -- no_leaks -------------------------------------------------------------------

class _NotRepeatable(Exception):
    """The test passed once, then failed when called again."""

    def __init__(self, call: int, error: str):
        super().__init__(error)
        self.call = call
        self.error = error


class _FailedFirst(Exception):
    """A unittest-style test failed on its first call (its item holds the failure)."""


def _unittest_failures(item) -> int:
    """Failures a unittest-style item has recorded (they are not raised)."""
    return len(getattr(item, "_excinfo", None) or ())


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) if isinstance(exc, pytest.fail.Exception) else None
    text = text or str(exc)
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _leak_check(item, settings: _Settings, first, runtest):
    """A leak hunt that calls ``first`` once, then ``runtest`` many times."""

    def check():
        calls = 0

        def call_test():
            nonlocal calls
            calls += 1
            if calls > 1:
                _drop_captured(item.config)
            failures = _unittest_failures(item)
            try:
                (first if calls == 1 else runtest)()
            except (KeyboardInterrupt, pytest.exit.Exception):
                raise
            except BaseException as exc:
                if calls == 1:
                    raise
                raise _NotRepeatable(calls, _describe(exc)) from None
            if _unittest_failures(item) > failures:
                if calls == 1:
                    raise _FailedFirst()
                error = item._excinfo[failures].exconly().strip().splitlines()[0]
                del item._excinfo[failures:]
                raise _NotRepeatable(calls, error)

        call_test.__qualname__ = item.nodeid
        try:
            report = find_leaks(call_test, iterations=settings.iterations,
                                warmup=settings.warmup,
                                snapshots=min(DEFAULT_SNAPSHOTS, settings.iterations),
                                nframe=LEAK_FRAMES)
        except _FailedFirst:
            return
        except _NotRepeatable as exc:
            failed = exc
        else:
            failed = None
        if failed is not None:
            # Raised outside the except clause, so that the report does not
            # chain the test's own exception to this message.
            pytest.fail(
                f"heaptrace: {item.nodeid} cannot be checked for leaks: it passed its "
                f"first call but failed call {failed.call} ({failed.error}).\n"
                f"no_leaks calls the test {settings.warmup + settings.iterations} times "
                f"with its fixtures set up once; a test that uses up its fixtures or "
                f"its input cannot be repeated.  This is not a leak verdict.",
                pytrace=False)
        if report.suspects:
            _hide_pytest_frames(report)
            found = len(report.suspects)
            pytest.fail(f"heaptrace: {item.nodeid} leaks memory: {found} allocation "
                        f"site{'s' if found != 1 else ''} kept growing with the calls\n"
                        + report.format(limit=TOP_SITES, frames=6), pytrace=False)

    return check


def _drop_captured(config) -> None:
    """Empty what pytest captured during the previous call (output, log
    records), which would otherwise grow with the calls like a leak; the
    report keeps what the last call printed and logged."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None and getattr(capman, "_global_capturing", None) is not None:
        capman.read_global_capture()
    logging_plugin = config.pluginmanager.getplugin("logging-plugin")
    for name in ("caplog_handler", "report_handler"):
        handler = getattr(logging_plugin, name, None)
        if hasattr(handler, "clear"):
            handler.clear()


def _hide_pytest_frames(report) -> None:
    """Drop pytest's and pluggy's frames (the calls between heaptrace's loop
    and the test) from the suspects' call paths."""
    prefixes = _pytest_prefixes()
    for suspect in report.suspects:
        kept = tuple(f for f in suspect.traceback if not f.filename.startswith(prefixes))
        suspect.traceback = kept or suspect.traceback[:1]
        for path in suspect.callers:
            kept = tuple(f for f in path.traceback if not f.filename.startswith(prefixes))
            path.traceback = kept or path.traceback[:1]


# -- --heaptrace ------------------------------------------------------------------

@contextlib.contextmanager
def _phase(item, when: str):
    """Measure one phase of a test that --heaptrace traces."""
    phases = item.stash.get(_PHASES, None)
    if phases is None:
        yield
        return
    m = measure(top=0, nframe=SITE_FRAMES)
    state = item.stash.get(_SESSION, None)
    peaks = state.peaks if state is not None else None
    settings = item.stash.get(_SETTINGS, None)
    if peaks is not None and (when != "call" or (settings is not None
                                                  and settings.iterations is not None)):
        # The trace function watches the call phase of a test without a
        # leak check only; setup, teardown and a leak check are sampled at
        # their end.  (Measured on CPython 3.11: with it installed during
        # setup, the peak of a no_leaks test's call phase doubled, 2.3 to
        # 4.2 MiB; the cause was not found.)
        peaks = _PhaseEndOnly(peaks)
    with m:
        if peaks is not None:
            peaks.install()
        try:
            yield
        finally:
            if peaks is not None:
                peaks.remove()
                peaks.check()       # the memory the phase ends with
    phases[when] = m


class _PeakSites:
    """Snapshots of a test's heap as its traced memory climbs, for the sites
    at its peak (--heaptrace).

    Traced memory is read at the end of every phase and, in the call phase
    of a test without a leak check, when a frame of the test's own files
    (its module and conftest.py files) starts or returns, through a trace
    function that asks for no other event: other code runs without a
    callback.  Snapshots follow the schedule of PEAK_STEP.  The last
    snapshot is then the highest moment seen at those points; memory taken
    and given back inside one call of other code is not seen.  Nothing is
    installed while another trace function (coverage, a debugger) is set.
    """

    def __init__(self, api, own_files: frozenset, start: int):
        self.api = api
        self.get_traced_memory = api.get_traced_memory
        self.own_files = own_files
        self.start = start
        self.next_at = start + PEAK_STEP
        self.snapshot = None
        self.at = 0
        self.installed = False
        self.other_tracer = False

    def install(self) -> None:
        if sys.gettrace() is not None:
            self.other_tracer = True
            return
        sys.settrace(self._call)
        self.installed = True

    def remove(self) -> None:
        if self.installed:
            # A trace function the test or a fixture set since stays.
            if sys.gettrace() == self._call:
                sys.settrace(None)
            self.installed = False

    def _call(self, frame, event, arg):
        if frame.f_code.co_filename not in self.own_files:
            return None         # no more events from this frame
        frame.f_trace_lines = False
        self.check()
        return self._return

    def _return(self, frame, event, arg):
        if event == "return":
            self.check()
        return self._return

    def offer(self, snapshot, level: int) -> None:
        """Keep *snapshot*, taken elsewhere when traced memory was *level*,
        if it is higher than the snapshot kept."""
        if level - self.start > self.at:
            self.snapshot = snapshot
            self.at = level - self.start
            self.next_at = max(self.next_at, level + max(PEAK_STEP, self.at // 4))

    def check(self) -> None:
        current = self.get_traced_memory()[0]
        if current < self.next_at:
            return
        self.snapshot = None    # its memory is not part of the test's
        self.snapshot = self.api.take_snapshot()
        self.at = current - self.start
        after = self.get_traced_memory()[0]
        self.next_at = after + max(PEAK_STEP, self.at // 4)


class _PhaseEndOnly:
    """A _PeakSites that samples at the end of the phase only."""

    def __init__(self, peaks):
        self.check = peaks.check

    def install(self) -> None:
        pass

    def remove(self) -> None:
        pass


def _own_files(item) -> frozenset:
    """The files whose frames are the test's own: its module, and the
    conftest.py files (its fixtures)."""
    files = set()
    module = getattr(item, "module", None)
    for name in (getattr(module, "__file__", None), str(getattr(item, "path", ""))):
        if name:
            files.add(name)
            files.add(os.path.abspath(name))
    for plugin in item.config.pluginmanager.get_plugins():
        name = getattr(plugin, "__file__", None)
        if name and os.path.basename(name) == "conftest.py":
            files.add(name)
    return frozenset(files)


class _TestMemory:
    """The memory of one test under --heaptrace, from setup to teardown."""

    def __init__(self, item):
        api = _api()
        settings = item.stash.get(_SETTINGS, None)
        nframe = (LEAK_FRAMES if settings is not None and settings.iterations is not None
                  else SITE_FRAMES)
        self.baseline = api.take_snapshot() if api.is_tracing() else None
        self.measurement = measure(top=0, nframe=nframe)
        self.measurement.__enter__()
        self.peaks = _PeakSites(api, _own_files(item), api.get_traced_memory()[0])
        self.open = True
        self.result = None

    def figures(self, item) -> dict:
        """Peak, memory kept and its sites (plain data: it travels from xdist workers)."""
        if self.result is None:
            peaks = self.peaks
            at_peak = []
            if peaks.snapshot is not None:
                at_peak = _sites(peaks.snapshot, self.baseline, skip_pytest=True)
                at_peak = [list(site) for site in at_peak[:TABLE_SITES]
                           if site[2] >= MIN_TABLE_SITE]
                peaks.snapshot = None
            gc.collect()
            snapshot = _api().take_snapshot()
            self.finish()
            sites = _sites(snapshot, self.baseline, skip_pytest=True)
            phases = item.stash.get(_PHASES, {})
            # The phase that rose the most above its own start.
            phase = max(phases, key=lambda when: phases[when].peak or 0, default="")
            self.result = {
                "peak": self.measurement.peak,
                "kept": sum(site[2] for site in sites),
                "phase": phase,
                "sites": [list(site) for site in sites[:TABLE_SITES]
                          if site[2] >= MIN_TABLE_SITE],
                # The sites at the highest moment sampled (peak_at bytes
                # above the test's start); peak_unknown says why the call
                # phase was sampled at its end only.
                "peak_at": peaks.at,
                "peak_sites": at_peak,
                "peak_unknown": ("another trace function was active"
                                 if peaks.other_tracer else ""),
            }
        return self.result

    def finish(self) -> None:
        if self.open:
            self.open = False
            self.measurement.__exit__(None, None, None)


def _write_table(tr, results: dict, top: int) -> None:
    tr.write_sep("=", "heaptrace: memory per test")
    total = len(results)
    by_peak = sorted(results.items(), key=lambda kv: -kv[1]["peak"])[:top]
    tr.write_line(f"Highest peak ({len(by_peak)} of {total} tests):")
    tr.write_line(f"  {'peak':>10}  {'kept':>10}  test")
    for nodeid, f in by_peak:
        phase = f" (during {f['phase']})" if f["phase"] else ""
        tr.write_line(f"  {format_size(f['peak']):>10}  {format_size(f['kept']):>10}  "
                      f"{nodeid}{phase}")
        sites = f.get("peak_sites") or []
        if sites:
            tr.write_line(f"  {'':>10}  {'':>10}    at {format_size(f['peak_at'])} "
                          f"(the highest moment sampled):")
        for path, lineno, size, count in sites:
            tr.write_line(f"  {'':>10}  {'':>10}      {path}:{lineno}: {format_size(size)} "
                          f"in {count:,} block{'s' if count != 1 else ''}")
        if f.get("peak_unknown"):
            tr.write_line(f"  {'':>10}  {'':>10}    (memory sampled at the end of each "
                          f"phase only: {f['peak_unknown']})")
    by_kept = [kv for kv in sorted(results.items(), key=lambda kv: -kv[1]["kept"])
               if kv[1]["kept"] > 0][:top]
    tr.write_line("")
    if not by_kept:
        tr.write_line("No test kept memory after its teardown.")
        return
    tr.write_line(f"Most memory kept after the test ({len(by_kept)} of {total} tests):")
    tr.write_line(f"  {'kept':>10}  {'peak':>10}  test")
    for nodeid, f in by_kept:
        tr.write_line(f"  {format_size(f['kept']):>10}  {format_size(f['peak']):>10}  {nodeid}")
        for path, lineno, size, count in f["sites"]:
            tr.write_line(f"  {'':>10}  {'':>10}    {path}:{lineno}: {format_size(size)} "
                          f"in {count:,} block{'s' if count != 1 else ''}")
