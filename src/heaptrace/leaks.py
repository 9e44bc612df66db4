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

* **The site is inside a library**: a suspect is named at the innermost
  frame of its traceback in the user's own code (not the standard library,
  not an installed package), with the library frames kept under it.
* **Memory that belongs to an object** (a set's table, a bytearray's
  buffer; on 3.13 and newer also a dict's keys and a list's items) is
  counted with the object, at the line that allocated the object.  On 3.13
  and newer, objects handed out again from CPython's free lists are
  re-traced to the line that reused them, for the duration of the hunt.
* **Who keeps it**: for each suspect, the chain of references from a root
  (a module global, a class attribute, a thread's frame) to one of its live
  objects is searched in C, and reported as ``held_by``.

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
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from . import heldby
from .measure import _api, format_size, own_locations, user_frame_index
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
    #: Where the memory was allocated, when that is not the reported line
    #: (the line is then the user's code that called into a library).
    allocated_at: Optional[Frame] = None
    #: The chain of references that keeps the leaked objects alive, root
    #: first (``["module app.cache", "_CACHE", "[1234]"]``), or None when no
    #: path was found (or the search was not made, or ran out of budget).
    held_by: Optional[list] = None

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
            "allocated_at": (None if self.allocated_at is None else
                             {"filename": self.allocated_at.filename,
                              "lineno": self.allocated_at.lineno}),
            "held_by": self.held_by,
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
            if s.held_by:
                out.append(f"  kept by: {heldby.format_path(s.held_by)}")
            if s.allocated_at is not None:
                out.append(f"  allocated in library code, at "
                           f"{_display_path(s.allocated_at.filename)}:{s.allocated_at.lineno}")
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
               user_code: bool = True, held_by: bool = True, native: bool = False,
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
    * ``user_code``: name each suspect at the innermost frame of its
      traceback in the user's code, when the allocation happens in a
      library (False: at the allocating line, as tracemalloc groups).
    * ``held_by``: search, for each suspect, the chain of references from a
      root that keeps its objects alive (``Suspect.held_by``).

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
    sources = _native_sources(api, native)
    started = False
    if not api.is_tracing():
        api.start(nframe, native=native)
        started = True
    elif native:
        api.start(native=True)
    retrace_was = _set_retrace(True)
    try:
        hunt = _Hunt(api, func, args, kwargs, iterations=iterations, warmup=warmup,
                     snapshots=snapshots, duration=duration, max_memory=max_memory,
                     progress=progress, user_code=user_code, held_by=held_by,
                     sources=sources)
        return hunt.run()
    finally:
        _set_retrace(retrace_was)
        if started:
            api.stop()


def _native_sources(api, native) -> tuple:
    """Where the hunt's memory comes from: Python's allocators always (with
    the blocks extensions such as NumPy report through PyTraceMalloc_Track),
    and C libraries' allocations (NATIVE_DOMAIN) when ``native`` is asked
    for."""
    return ("python", "native") if native else ("python",)


def _core_module():
    try:
        from . import _core
    except ImportError:   # the API comes from elsewhere (tests of the pure-Python layer)
        return None
    return _core


def _set_retrace(on: bool) -> bool:
    """Turn the re-tracing of objects reused from free lists on or off
    (3.13 and newer); returns whether it was on."""
    core = _core_module()
    if core is None or not getattr(core, "RETRACE_AVAILABLE", 0):
        return False
    return core._set_retrace(on)


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
                 duration, max_memory, progress, user_code=True, held_by=True,
                 sources=("python",)):
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
        self.user_code = user_code
        self.search_held_by = held_by
        self.sources = sources
        self.sites = {}
        core = _core_module()
        # The engine's graph functions read heaptrace's own traces, so they
        # are used only when the API is heaptrace's.
        self.core = core if getattr(api, "__name__", "") == "heaptrace" else None
        # Which owned blocks can be credited to their owner: an owner handed
        # out from a free list keeps the trace of its first allocation unless
        # the interpreter reports the reuse (3.13 reference tracer), so dicts
        # and lists are only credited when it does.
        self.owned_kinds = heldby.OWN_SET | heldby.OWN_BYTEARRAY
        if core is not None and getattr(core, "RETRACE_AVAILABLE", 0):
            self.owned_kinds |= heldby.OWN_DICT | heldby.OWN_LIST

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
        self.credit_owners(table)
        return table

    def credit_owners(self, table: dict) -> None:
        """Move the blocks that belong to an object (tables, buffers) to the
        call path that allocated the object."""
        if self.core is None:
            return
        moves = self.core._owned_blocks(self.owned_kinds, heldby.OWNED_SECONDS,
                                        heldby.MAX_BYTES)
        for owned_frames, owner_frames, size, count in moves or ():
            owned = self.trim_raw(owned_frames)
            owner = self.trim_raw(owner_frames)
            entry = table.get(owned)
            if owned is None or owner is None or entry is None:
                continue
            size = min(size, entry[0])
            count = min(count, entry[1])
            entry[0] -= size
            entry[1] -= count
            if not entry[0] and not entry[1]:
                del table[owned]
            target = table.setdefault(owner, [0, 0])
            target[0] += size
            target[1] += count

    def trim_raw(self, frames) -> Optional[tuple]:
        """trim() for raw frames: (filename, lineno) pairs, most recent first."""
        key = []
        for filename, lineno in frames:
            if self.is_own(filename):
                if not key:
                    return None
                break
            key.append(tuple.__new__(Frame, (filename, lineno)))
        return tuple(key) if key else None

    def site(self, key) -> tuple:
        """The line a traceback key is counted at: its most recent frame, or
        with user_code its innermost frame in the user's code."""
        line = self.sites.get(key)
        if line is None:
            index = user_frame_index(key) if self.user_code else 0
            line = self.sites[key] = tuple(key[index]) if key else ("<unknown>", 0)
        return line

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
        if self.search_held_by and suspects and self.core is not None:
            self.find_holders(suspects, [table for _, table in samples])
        if suspects and sys.version_info < (3, 13):
            self.notes.append("before Python 3.13, objects CPython reuses from its free "
                              "lists (dicts, lists, tuples...) keep the line of their "
                              "memory's first allocation")
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

    def find_holders(self, suspects: list, tables: list) -> None:
        """Fill each suspect's held_by from one search of the object graph."""
        sites = {}
        index_of = {(s.filename, s.lineno): i for i, s in enumerate(suspects)}
        for key in set().union(*tables):
            index = index_of.get(self.site(key))
            if index is not None:
                sites[tuple(tuple(frame) for frame in key)] = index
        found = heldby.search(self.core, sites, len(suspects), own=self.is_own)
        for suspect, path in zip(suspects, found.paths):
            suspect.held_by = path
        if not found.complete:
            self.notes.append(f"the search for what keeps the leaked objects ran out of "
                              f"{found.limit}; some suspects have no 'kept by'")

    def analyse(self, before_warm_up, samples, before_gc):
        """Classify every line's series: (suspects, dismissed)."""
        xs = [x for x, _ in samples]
        tables = [table for _, table in samples]
        line_tables = [_by_line(table, self.site) for table in tables]
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
        warm = _by_line(before_warm_up, self.site)
        first = line_tables[0]
        for line, (size, _) in first.items():
            grew = size - warm.get(line, (0, 0))[0]
            if grew >= MIN_DISMISSED and line not in leaking and line not in dismissed:
                dismissed[line] = Dismissed("one-time", *line, grew,
                                            "allocated during the warm-up, then stable")
        if before_gc is not None:
            last = line_tables[-1]
            for line, (size, _) in _by_line(before_gc, self.site).items():
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
            if self.site(key) != line:
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
            traceback = max((key for key in tables[-1] if self.site(key) == line),
                            key=lambda k: tables[-1][k][0], default=(Frame(*line),))
        return Suspect(
            filename=line[0], lineno=line[1], traceback=traceback,
            size_per_iteration=trend.slope,
            count_per_iteration=_rate(xs, retained_floor(counts)),
            confidence=trend.confidence, size=trend.last, count=counts[-1],
            growth=trend.growth, reason=trend.reason, callers=callers,
            allocated_at=(traceback[0] if traceback and tuple(traceback[0]) != line
                          else None))


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


def _by_line(table: dict, site=None) -> dict:
    """Sum a {traceback key: [size, count]} table by line: each key's most
    recent frame, or the line ``site(key)`` gives."""
    lines = {}
    for key, (size, count) in table.items():
        if site is not None:
            line = site(key)
        else:
            line = tuple(key[0]) if key else ("<unknown>", 0)
        entry = lines.get(line)
        if entry is None:
            lines[line] = [size, count]
        else:
            entry[0] += size
            entry[1] += count
    return lines
