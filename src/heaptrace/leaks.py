"""Find the allocation sites that leak when a function is called again and again.

:func:`find_leaks` automates the technique the leak-hunting articles teach
by hand (warm up, baseline snapshot, loop, ``gc.collect()``, second snapshot,
``compare_to``) and avoids the ways it goes wrong:

* **Warm-up allocations** (lazy imports, caches filled on first use) happen
  before the baseline, and any that come later show up as a plateau or a
  step, not as growth.
* **Garbage the collector has not reached yet**: every snapshot is taken
  right after a full collection, so unreachable cycles are gone.  What the
  last collection freed is reported as garbage, not as a leak.
* **Too few iterations**: the number of calls is chosen from a time budget
  (as many as fit, not a fixed handful), and instead of two snapshots there
  is a series of them.  Each site's series is classified by
  :mod:`heaptrace.trend`: a leak must keep growing in the second half of the
  run, so a large cache that fills once cannot outrank a slow leak; a buffer
  that is emptied now and then gives back what it takes and is a sawtooth.
* **A shared helper hides the caller**: tracebacks are recorded with many
  frames (25 by default), and for each leaking line the call path whose
  memory grows is reported, not just the line.

Bytes decide, not blocks, so one block that is reallocated larger (a list
or bytearray that grows) is a leak too.  Allocations made in other threads
are traced and count.  The snapshots leave out heaptrace's own files, so the
analysis does not see itself.
"""

from __future__ import annotations

import gc
import linecache
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from .measure import _api, format_size, own_locations
from .trend import LEAK, classify, retained_floor, robust_slope

__all__ = ["find_leaks", "LeakReport", "Suspect", "CallPath", "Dismissed", "Frame"]

#: Default number of measurement intervals (one snapshot after each).
DEFAULT_SNAPSHOTS = 12
#: Default seconds spent calling the function while measuring.
DEFAULT_DURATION = 1.0
#: Most calls measured when the iterations are automatic: enough for a slow
#: leak to outgrow a cache of a few hundred entries, few enough that the
#: snapshots of a fast leak stay small.
MAX_AUTO_ITERATIONS = 5000
#: Share of the duration (and of MAX_AUTO_ITERATIONS) spent warming up, when
#: the warm-up is automatic.
WARMUP_SHARE = 0.1
#: Fewest warm-up calls when the warm-up is automatic.
MIN_WARMUP_CALLS = 2
#: Interval lengths vary by up to this share around their mean, so that the
#: snapshots do not fall in step with a buffer that is emptied every N calls
#: (sampled in step, a sawtooth can look like steady growth).
JITTER = 0.4
#: Smallest growth (bytes) over the run that can make a site a suspect.
MIN_GROWTH = 256
#: Smallest size (bytes) for a non-leak to be mentioned in ``dismissed``.
MIN_DISMISSED = 1024
#: How many dismissed sites a report keeps.
MAX_DISMISSED = 10
#: Stop early once traced memory grew this much (bytes) during the run.
DEFAULT_MAX_MEMORY = 512 * 1024 * 1024
#: The run stops early for memory only after this many intervals.
MIN_INTERVALS = 4


class Frame(NamedTuple):
    """One frame of a traceback: a file name and a line number."""

    filename: str
    lineno: int


@dataclass
class CallPath:
    """One call path (traceback, most recent frame first) to a suspect's line."""

    traceback: tuple
    size_per_iteration: float
    #: Bytes live on this path at the end of the run.
    size: int


@dataclass
class Suspect:
    """An allocation site whose memory kept growing with the calls."""

    filename: str
    lineno: int
    #: The call path whose memory grows the most, most recent frame first,
    #: cut where it enters heaptrace.
    traceback: tuple
    #: Retained growth per call, in bytes and in memory blocks.  The block
    #: rate can be 0 when one block is reallocated larger.
    size_per_iteration: float
    count_per_iteration: float
    #: How sure the finding is, 0.0 to 1.0.
    confidence: float
    #: Bytes and blocks live at the site at the end of the run.
    size: int
    count: int
    #: Bytes the site kept during the measured calls.
    growth: int
    #: Why it is a suspect (for example "grew in 12 of 12 intervals").
    reason: str
    #: Every call path to this line whose memory grew, the largest first.
    callers: list = field(default_factory=list)

    def format_traceback(self, limit: Optional[int] = None) -> list:
        """The traceback as text lines, each frame followed by its source line."""
        lines = []
        for frame in self.traceback[:limit]:
            lines.append(f'  File "{_display_path(frame.filename)}", line {frame.lineno}')
            source = linecache.getline(frame.filename, frame.lineno).strip()
            if source:
                lines.append(f"    {source}")
        return lines

    def to_dict(self) -> dict:
        return {
            "filename": self.filename,
            "lineno": self.lineno,
            "size_per_iteration": self.size_per_iteration,
            "count_per_iteration": self.count_per_iteration,
            "traceback": _frames_json(self.traceback),
            "confidence": self.confidence,
            "size": self.size,
            "count": self.count,
            "growth": self.growth,
            "reason": self.reason,
            "callers": [
                {
                    "traceback": _frames_json(path.traceback),
                    "size_per_iteration": path.size_per_iteration,
                    "size": path.size,
                }
                for path in self.callers
            ],
        }


@dataclass
class Dismissed:
    """A site whose memory moved a lot but that is not a leak, and why.

    ``kind`` is ``"plateau"`` (grew, then stopped: a cache that filled),
    ``"step"`` (grew at one or two moments only), ``"sawtooth"`` (gives
    back what it takes), ``"one-time"`` (grew during the warm-up only) or
    ``"garbage"`` (unreachable cycles that ``gc.collect()`` freed).
    ``size`` is the amount involved: growth, swing, or bytes freed.
    """

    kind: str
    filename: str
    lineno: int
    size: int
    reason: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "filename": self.filename, "lineno": self.lineno,
                "size": self.size, "reason": self.reason}


@dataclass
class LeakReport:
    """What :func:`find_leaks` found.  ``suspects`` is sorted most likely leak first."""

    function: str
    suspects: list
    dismissed: list
    #: Calls made while measuring, and before (warm-up).
    iterations: int
    warmup: int
    #: Snapshots in the measured series (the baseline included).
    snapshots: int
    #: Frames per traceback that tracing recorded.
    nframe: int
    #: Wall-clock seconds of the whole hunt.
    duration: float
    notes: list = field(default_factory=list)

    def format(self, limit: int = 10, frames: int = 8) -> str:
        """The report as text: suspects with their tracebacks, then what was dismissed."""
        found = len(self.suspects)
        head = (f"{found} suspected leak{'s' if found != 1 else ''} in {self.function}: "
                if found else f"No leak found in {self.function}: ")
        out = [head + f"{self.iterations:,} calls after {self.warmup:,} warm-up calls, "
                      f"{self.snapshots} snapshots, {self.duration:.1f} s"]
        for rank, s in enumerate(self.suspects[:limit], 1):
            out.append("")
            out.append(
                f"#{rank} {_display_path(s.filename)}:{s.lineno}: "
                f"{format_size(s.size_per_iteration, sign=True)} per call, "
                f"{s.count_per_iteration:+.2f} blocks per call "
                f"(confidence {s.confidence:.2f}; {s.reason}; now {format_size(s.size)})"
            )
            out.extend(s.format_traceback(frames))
            for path in s.callers[1:3]:
                fork = _first_difference(s.traceback, path.traceback)
                out.append(f"  also growing through "
                           f"{_display_path(fork.filename)}:{fork.lineno}: "
                           f"{format_size(path.size_per_iteration, sign=True)} per call")
            if len(s.callers) > 3:
                out.append(f"  ... and through {len(s.callers) - 3} more call paths")
        if len(self.suspects) > limit:
            out.append(f"... and {len(self.suspects) - limit} more")
        if self.dismissed:
            out.append("")
            out.append("Not leaks:")
            for d in self.dismissed:
                out.append(f"  {d.kind:<9} {_display_path(d.filename)}:{d.lineno}: "
                           f"{format_size(d.size)}, {d.reason}")
        for note in self.notes:
            out.append(f"Note: {note}")
        return "\n".join(out)

    __str__ = format

    def to_dict(self) -> dict:
        """The report as JSON-ready data (see docs/json.md)."""
        return {
            "function": self.function,
            "iterations": self.iterations,
            "warmup": self.warmup,
            "snapshots": self.snapshots,
            "nframe": self.nframe,
            "duration": self.duration,
            "suspects": [s.to_dict() for s in self.suspects],
            "dismissed": [d.to_dict() for d in self.dismissed],
            "notes": list(self.notes),
        }


def find_leaks(func: Callable, /, *args, iterations: Optional[int] = None,
               warmup: Optional[int] = None, snapshots: int = DEFAULT_SNAPSHOTS,
               nframe: int = 25, duration: float = DEFAULT_DURATION,
               max_memory: int = DEFAULT_MAX_MEMORY,
               progress: Optional[Callable[[str, int, int], None]] = None,
               native: bool = False,
               **kwargs) -> LeakReport:
    """Call ``func(*args, **kwargs)`` many times and report the sites that leak.

    * ``iterations``: calls to measure; by default as many as fit in
      ``duration`` seconds (at least one per snapshot).
    * ``warmup``: calls before the baseline; by default at least two and
      about a tenth of ``duration``.
    * ``snapshots``: intervals in the measured series (at least 3); a
      snapshot is taken after each, after a full garbage collection.
    * ``nframe``: frames per traceback, if tracing is off (it is then
      started, and stopped at the end).  If tracing is already on, it is left
      as it is, and its traceback limit is used.
    * ``max_memory``: bytes of growth after which the run stops early.
    * ``native``: also trace the memory C extensions and libraries take
      with ``malloc`` and ``mmap`` (``start(native=True)``), so that a C
      library's leak is found too.  If tracing is already on, native
      tracing is added to it (and left on).
    * ``progress``: called as ``progress(phase, done, total)`` with phase
      ``"warm-up"`` (calls so far, total 0 if automatic) or ``"measuring"``
      (snapshots so far, of ``snapshots``).

    Exceptions raised by ``func`` propagate.  To pass ``func`` an argument
    named like one of these options, use ``functools.partial`` or a lambda.
    """
    if snapshots < 3:
        raise ValueError("snapshots must be at least 3")
    if iterations is not None and iterations < snapshots:
        raise ValueError("iterations must be at least the number of snapshots")
    if warmup is not None and warmup < 0:
        raise ValueError("warmup must be >= 0")
    if nframe < 1:
        raise ValueError("nframe must be >= 1")
    api = _api()
    started = False
    if not api.is_tracing():
        api.start(nframe, native=native)
        started = True
    elif native:
        api.start(native=True)
    try:
        hunt = _Hunt(api, func, args, kwargs, iterations=iterations, warmup=warmup,
                     snapshots=snapshots, duration=duration, max_memory=max_memory,
                     progress=progress)
        return hunt.run()
    finally:
        if started:
            api.stop()


def _display_path(filename: str) -> str:
    """A file name relative to the current folder when it lies inside it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith(os.pardir) else relative


def _first_difference(traceback: tuple, other: tuple) -> Frame:
    """The frame of ``other`` where it leaves ``traceback`` (compared from the
    allocation outwards), or its last frame."""
    for mine, theirs in zip(traceback, other):
        if mine != theirs:
            return theirs
    return other[-1]


def _frames_json(traceback) -> list:
    return [{"filename": f.filename, "lineno": f.lineno} for f in traceback]


def _collect_garbage() -> None:
    """Collect until nothing more is found (finalizers can free more cycles)."""
    for _ in range(3):
        if gc.collect() == 0:
            break


class _Hunt:
    """One run of find_leaks: calls, snapshots, then the analysis."""

    def __init__(self, api, func, args, kwargs, *, iterations, warmup, snapshots,
                 duration, max_memory, progress):
        self.api = api
        self.func, self.args, self.kwargs = func, args, kwargs
        self.iterations = iterations
        self.warmup = warmup
        self.intervals = snapshots
        self.duration = duration
        self.max_memory = max_memory
        self.progress = progress or (lambda phase, done, total: None)
        # Calls the memory budget allows, estimated from the warm-up.
        self.affordable = MAX_AUTO_ITERATIONS
        self.own_prefixes, self.own_files = own_locations(api)
        self.notes = []

    # -- calling -----------------------------------------------------------

    def call(self, times: int) -> None:
        func, args, kwargs = self.func, self.args, self.kwargs
        for _ in range(times):
            func(*args, **kwargs)

    def call_for(self, seconds: float, ceiling: int, max_calls: int) -> int:
        """Call the function for ``seconds`` (at least once); return the calls made.

        Calls go in batches sized from the time per call so far, at most
        doubling the calls made, so the clock is read rarely and one slow
        call cannot cause a long overshoot.  Stops early after ``max_calls``
        or when traced memory passes ``ceiling``.
        """
        calls = 0
        batch = 1
        start = time.perf_counter()
        while True:
            self.call(batch)
            calls += batch
            elapsed = time.perf_counter() - start
            if elapsed >= seconds or calls >= max_calls:
                return calls
            if self.api.get_traced_memory()[0] > ceiling:
                return calls
            per_call = elapsed / calls
            wanted = int((seconds - elapsed) / per_call) if per_call > 0 else calls
            batch = max(1, min(wanted, calls, max_calls - calls))

    # -- sampling ----------------------------------------------------------

    def sample(self, collect: bool = True) -> dict:
        """Snapshot the heap: {traceback key: [size, count]}, heaptrace left out.

        A key is a tuple of Frame, most recent first, cut at the first frame
        inside heaptrace (the calling loop), so paths differ only by what the
        user's code did.  Blocks whose most recent frame is in heaptrace (the
        snapshots, this analysis) are left out.  Filtering the grouped
        tracebacks instead of the traces keeps this cheap.
        """
        if collect:
            _collect_garbage()
        snapshot = self.api.take_snapshot()
        table = {}
        for stat in snapshot.statistics("traceback"):
            key = self.trim(stat.traceback)
            if key is None:
                continue
            entry = table.get(key)
            if entry is None:
                table[key] = [stat.size, stat.count]
            else:
                entry[0] += stat.size
                entry[1] += stat.count
        return table

    def is_own(self, filename: str) -> bool:
        return filename.startswith(self.own_prefixes) or filename in self.own_files

    def trim(self, traceback) -> Optional[tuple]:
        """The traceback as a key (see sample), or None if heaptrace allocated it."""
        frames = []
        # A Traceback is a sequence from the oldest frame to the most recent.
        for frame in reversed(traceback):
            if self.is_own(frame.filename):
                if not frames:
                    return None
                break
            # tuple.__new__, not Frame(): a NamedTuple's __new__ lives in
            # "<string>", which the own-file filter could not recognise.
            frames.append(tuple.__new__(Frame, (frame.filename, frame.lineno)))
        return tuple(frames) if frames else None

    # -- the run -----------------------------------------------------------

    def run(self) -> LeakReport:
        t0 = time.perf_counter()
        before_warm_up = self.sample()
        warm_calls = self.warm_up()
        samples, before_gc = self.measure()
        suspects, dismissed = self.analyse(before_warm_up, samples, before_gc)
        limit = self.api.get_traceback_limit() if self.api.is_tracing() else 0
        if limit == 1:
            self.notes.append("tracing was already on with 1 frame per traceback, so callers "
                              "cannot be told apart; start it with more, e.g. start(25)")
        return LeakReport(
            function=getattr(self.func, "__qualname__", None) or repr(self.func),
            suspects=suspects, dismissed=dismissed, iterations=samples[-1][0],
            warmup=warm_calls, snapshots=len(samples), nframe=limit,
            duration=time.perf_counter() - t0, notes=self.notes)

    def measure(self) -> tuple:
        """The measured series: [(calls so far, table)], from the baseline on,
        and the table of the last moment before its garbage collection."""
        samples = [(0, self.sample())]
        ceiling = self.api.get_traced_memory()[0] + self.max_memory
        before_gc = None
        done = 0
        weights = _weights(self.intervals)
        plan = self.plan_intervals(weights)
        self.progress("measuring", 0, self.intervals)
        for index in range(self.intervals):
            if plan is not None:
                self.call(plan[index])
                done += plan[index]
            else:
                share = weights[index] / self.intervals
                done += self.call_for(self.duration * share, ceiling,
                                      max(1, int(self.affordable * share)))
            last = index == self.intervals - 1
            stop = (not last and index + 1 >= MIN_INTERVALS
                    and self.api.get_traced_memory()[0] > ceiling)
            if last or stop:
                before_gc = self.sample(collect=False)
            samples.append((done, self.sample()))
            self.progress("measuring", index + 1, self.intervals)
            if stop:
                self.notes.append(
                    f"stopped after {index + 1} of {self.intervals} intervals: memory grew "
                    f"by more than {format_size(self.max_memory)}")
                break
        return samples, before_gc

    def warm_up(self) -> int:
        if self.warmup is not None:
            before = self.api.get_traced_memory()[0]
            for done in range(self.warmup):
                self.progress("warm-up", done, self.warmup)
                self.call(1)
            self.budget_calls(before, self.warmup)
            return self.warmup
        self.progress("warm-up", 0, 0)
        before = self.api.get_traced_memory()[0]
        calls = self.call_for(WARMUP_SHARE * self.duration, before + self.max_memory // 4,
                              int(WARMUP_SHARE * MAX_AUTO_ITERATIONS))
        if calls < MIN_WARMUP_CALLS:
            self.call(MIN_WARMUP_CALLS - calls)
            calls = MIN_WARMUP_CALLS
        self.budget_calls(before, calls)
        return calls

    def budget_calls(self, before: int, calls: int) -> None:
        """Limit the measured calls so that a fast leak stays within max_memory.

        The warm-up's growth per call overestimates (it includes one-time
        allocations), which only errs towards fewer calls.
        """
        per_call = (self.api.get_traced_memory()[0] - before) / max(1, calls)
        if per_call > 0:
            self.affordable = max(1, min(MAX_AUTO_ITERATIONS, int(self.max_memory / per_call)))

    def plan_intervals(self, weights: list) -> Optional[list]:
        """Calls per interval when the caller fixed the iterations, else None.

        The intervals follow ``weights`` (which average 1), each has at
        least one call, and they add up to the iterations exactly.
        """
        if self.iterations is None:
            return None
        spare = self.iterations - self.intervals
        plan = [1 + int(spare * w / self.intervals) for w in weights]
        for index in range(self.iterations - sum(plan)):
            plan[index % self.intervals] += 1
        return plan

    # -- the analysis ------------------------------------------------------

    def analyse(self, before_warm_up, samples, before_gc):
        """Classify every line's series: (suspects, dismissed)."""
        xs = [x for x, _ in samples]
        tables = [table for _, table in samples]
        line_tables = [_by_line(table) for table in tables]
        lines = set().union(*line_tables)
        suspects = []
        dismissed = {}
        for line in lines:
            sizes = [lt.get(line, (0, 0))[0] for lt in line_tables]
            if max(sizes) == min(sizes):
                continue
            trend = classify(xs, sizes, min_growth=MIN_GROWTH)
            if trend.kind == LEAK:
                suspects.append(self.suspect(line, trend, xs, tables, line_tables))
            elif trend.shape == "sawtooth" and trend.peak - min(sizes) >= MIN_DISMISSED:
                dismissed[line] = Dismissed("sawtooth", *line, trend.peak - min(sizes),
                                            trend.reason)
            elif trend.shape in ("plateau", "step") and trend.growth >= MIN_DISMISSED:
                dismissed[line] = Dismissed(trend.shape, *line, trend.growth, trend.reason)
        leaking = {(s.filename, s.lineno) for s in suspects}
        warm = _by_line(before_warm_up)
        first = line_tables[0]
        for line, (size, _) in first.items():
            grew = size - warm.get(line, (0, 0))[0]
            if grew >= MIN_DISMISSED and line not in leaking and line not in dismissed:
                dismissed[line] = Dismissed("one-time", *line, grew,
                                            "allocated during the warm-up, then stable")
        if before_gc is not None:
            last = line_tables[-1]
            for line, (size, _) in _by_line(before_gc).items():
                freed = size - last.get(line, (0, 0))[0]
                if freed >= MIN_DISMISSED and line not in leaking:
                    dismissed[line] = Dismissed("garbage", *line, freed,
                                                "unreachable cycles, freed by gc.collect()")
        suspects.sort(key=lambda s: (-round(s.confidence, 1), -s.size_per_iteration))
        kept = sorted(dismissed.values(), key=lambda d: -d.size)[:MAX_DISMISSED]
        return suspects, kept

    def suspect(self, line, trend, xs, tables, line_tables) -> Suspect:
        counts = [lt.get(line, (0, 0))[1] for lt in line_tables]
        callers = []
        for key in set().union(*tables):
            if key[0] != line:
                continue
            sizes = [table.get(key, (0, 0))[0] for table in tables]
            floor = retained_floor(sizes)
            if floor[-1] > floor[0]:
                callers.append(CallPath(key, _rate(xs, floor), sizes[-1]))
        callers.sort(key=lambda p: (-p.size_per_iteration, -p.size))
        if callers:
            traceback = callers[0].traceback
        else:
            # Reallocations can move a block between call paths, so no single
            # path grew: show the path that holds the most now.
            traceback = max((key for key in tables[-1] if key[0] == line),
                            key=lambda k: tables[-1][k][0], default=(Frame(*line),))
        return Suspect(
            filename=line[0], lineno=line[1], traceback=traceback,
            size_per_iteration=trend.slope,
            count_per_iteration=_rate(xs, retained_floor(counts)),
            confidence=trend.confidence, size=trend.last, count=counts[-1],
            growth=trend.growth, reason=trend.reason, callers=callers)


def _weights(count: int) -> list:
    """Relative interval lengths: pseudo-random around 1 (mean 1), the same
    on every run so that a hunt can be repeated."""
    rng = random.Random(count)
    weights = [1.0 + JITTER * (2.0 * rng.random() - 1.0) for _ in range(count)]
    mean = sum(weights) / count
    return [w / mean for w in weights]


def _rate(xs, floor) -> float:
    """Growth per unit of x of a retained floor: robust slope, else the average."""
    slope = robust_slope(xs, floor)
    if slope <= 0 and floor[-1] > floor[0] and xs[-1] != xs[0]:
        slope = (floor[-1] - floor[0]) / (xs[-1] - xs[0])
    return max(0.0, slope)


def _by_line(table: dict) -> dict:
    """Sum a {traceback key: [size, count]} table by its most recent frame."""
    lines = {}
    for key, (size, count) in table.items():
        line = tuple(key[0]) if key else ("<unknown>", 0)
        entry = lines.get(line)
        if entry is None:
            lines[line] = [size, count]
        else:
            entry[0] += size
            entry[1] += count
    return lines
