"""What the report formats show: plain data built from snapshots.

A :class:`Profile` is memory by traceback in one snapshot, or the change
between two (a diff); a :class:`Series` is a run of snapshots with the
verdict of ``heaptrace trend`` on every site.  Frames are ``(filename,
lineno)`` pairs; a stack lists them from the outermost call to the line
that allocated, the order of flame graphs and folded stacks.
"""

from __future__ import annotations

import ast
import linecache
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

__all__ = ["Stack", "Profile", "SiteSeries", "Series", "TopResult", "DiffResult",
           "TrendResult",
           "profile_of", "diff_profile_of", "FunctionNames", "short_path"]


@dataclass
class Stack:
    """The blocks allocated through one traceback."""

    frames: tuple          # ((filename, lineno), ...), outermost call first
    size: int              # bytes now
    count: int             # blocks now
    size_diff: int = 0     # change in bytes since the old snapshot (diffs only)
    count_diff: int = 0


@dataclass
class Profile:
    """Memory by traceback in the snapshot *source*, or, when *old_source* is
    set, its change since the snapshot *old_source*."""

    source: str
    stacks: list
    timestamp: Optional[float] = None
    old_source: Optional[str] = None
    old_timestamp: Optional[float] = None
    # Bytes between samples when the snapshots were sampled (their sizes
    # and counts are then estimates of all the blocks); None when exact.
    sampling_interval: Optional[int] = None

    @property
    def is_diff(self) -> bool:
        return self.old_source is not None

    @property
    def total_size(self) -> int:
        return sum(s.size for s in self.stacks)

    @property
    def total_count(self) -> int:
        return sum(s.count for s in self.stacks)

    @property
    def total_size_diff(self) -> int:
        return sum(s.size_diff for s in self.stacks)


@dataclass
class SiteSeries:
    """One site across a series: its bytes in every snapshot and its verdict
    (a :class:`heaptrace.trend.Trend`)."""

    frames: tuple          # most recent frame first, as `heaptrace trend` keys sites
    sizes: list
    trend: object


@dataclass
class Series:
    """A series of snapshots, their total memory and their sites."""

    paths: list
    times: list            # seconds since the epoch, in order
    totals: list           # bytes traced in each snapshot (after the filters)
    sites: list            # SiteSeries, leaks first (as `heaptrace trend` orders them)
    group_by: str = "lineno"
    growth: Optional[Profile] = None    # first snapshot -> last, by traceback
    note: Optional[str] = None
    extra: dict = field(default_factory=dict)


@dataclass
class TopResult:
    """What `heaptrace top` shows: the first statistics of a snapshot
    (Statistic objects) and the sums of the rest."""

    snapshot: str
    timestamp: Optional[float]
    traceback_limit: object
    group_by: str
    cumulative: bool
    full_paths: bool
    shown: list
    rest: list
    # With --native-frames: Traceback of a shown group -> [(size, count,
    # native_frames), ...] of its native blocks' C call paths, biggest
    # first; None otherwise.
    native: Optional[dict] = None
    # Snapshot.sampling_interval: None when exact, else the interval in
    # bytes (sizes and counts are then estimates).
    sampling_interval: Optional[int] = None


@dataclass
class DiffResult:
    """What `heaptrace diff` shows: the first StatisticDiff objects and the
    sums of the rest (only the sites that changed)."""

    old: str
    new: str
    group_by: str
    cumulative: bool
    full_paths: bool
    shown: list
    rest: list
    # The snapshots' sampling interval (compare_to refuses two different
    # ones): None when exact.
    sampling_interval: Optional[int] = None


@dataclass
class TrendResult:
    """What `heaptrace trend` shows: every site's verdict over a series, and
    how the series was chosen."""

    snapshots: list        # [(timestamp, path)], in time order
    hours: float           # from the first snapshot to the last
    group_by: str
    notes: list            # what the reader should know (runs, skipped files)
    pid: Optional[int]     # the run read, in a folder of `heaptrace run`
    runs: dict             # pid -> its files, in that folder
    skipped: list          # [(path, reason)]
    counts: dict           # kind -> number of sites
    sites: list            # [(key, Trend)], leaks first; a key is a tuple of
                           # (filename, lineno), most recent frame first
    intervals: dict = field(default_factory=dict)   # path -> sampling interval (sampled only)
    # Display options of the text output.
    limit: int = 20
    all: bool = False
    full_paths: bool = False


def _key(frames_of: Callable, traceback) -> tuple:
    return tuple((f.filename, f.lineno) for f in reversed(frames_of(traceback)))


def profile_of(snapshot, source: str, frames_of: Callable,
               timestamp: Optional[float] = None) -> Profile:
    """The Profile of a (filtered) snapshot taken at *timestamp*.  *frames_of* gives the frames of
    a Traceback, most recent first (the CLI cuts off its launcher frames);
    tracebacks that become equal are merged."""
    merged = {}
    for stat in snapshot.statistics("traceback"):
        key = _key(frames_of, stat.traceback)
        stack = merged.get(key)
        if stack is None:
            merged[key] = Stack(key, stat.size, stat.count)
        else:
            stack.size += stat.size
            stack.count += stat.count
    stacks = sorted(merged.values(), key=lambda s: (-s.size, -s.count, s.frames))
    return Profile(source, stacks, timestamp,
                   sampling_interval=getattr(snapshot, "sampling_interval", None))


def diff_profile_of(old, new, old_source: str, source: str, frames_of: Callable,
                    old_timestamp: Optional[float] = None,
                    timestamp: Optional[float] = None) -> Profile:
    """The Profile of the change from the snapshot *old* to *new*; only the
    tracebacks whose bytes or blocks changed are kept.  Snapshots taken with
    different sampling intervals raise ValueError (their estimates do not mix)."""
    merged = {}
    for stat in new.compare_to(old, "traceback"):
        if not (stat.size_diff or stat.count_diff):
            continue
        key = _key(frames_of, stat.traceback)
        stack = merged.get(key)
        if stack is None:
            merged[key] = Stack(key, stat.size, stat.count, stat.size_diff, stat.count_diff)
        else:
            stack.size += stat.size
            stack.count += stat.count
            stack.size_diff += stat.size_diff
            stack.count_diff += stat.count_diff
    stacks = sorted(merged.values(), key=lambda s: (-abs(s.size_diff), -s.size, s.frames))
    return Profile(source, stacks, timestamp, old_source, old_timestamp,
                   getattr(new, "sampling_interval", None))


def short_path(filename: str) -> str:
    """The last two components of a path (``package/module.py``)."""
    return os.sep.join(filename.split(os.sep)[-2:])


class FunctionNames:
    """The Python function that holds a line of a file, read from its source.

    A snapshot stores only file names and line numbers, so the qualified name
    of the code object (``Class.method``, ``outer.<locals>.inner``,
    ``<module>``) is found again by parsing the file as it is now.  A file
    that cannot be read or parsed gives None: callers then name the frame by
    ``file:line``.  Comprehensions are not told apart from their function.
    """

    #: Files larger than this are not parsed.
    MAX_SOURCE = 4 * 1024 * 1024

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._files = {}

    def lookup(self, filename: str, lineno: int) -> Optional[tuple]:
        """``(qualname, first line of the function)`` or None."""
        if not self.enabled:
            return None
        table = self._files.get(filename, False)
        if table is False:
            table = self._files[filename] = self._scan(filename)
        if table is None:
            return None
        names, firsts = table
        if 0 < lineno < len(names):
            return names[lineno], firsts[lineno]
        return None

    def name(self, filename: str, lineno: int) -> str:
        """The qualified name, or ``short/path.py:LINE`` when it is not known."""
        found = self.lookup(filename, lineno)
        if found is not None:
            return found[0]
        return f"{short_path(filename)}:{lineno}"

    def _scan(self, filename: str):
        if filename.startswith("<") and filename.endswith(">"):
            return None
        try:
            lines = linecache.getlines(filename)
            if not lines or sum(map(len, lines)) > self.MAX_SOURCE:
                return None
            tree = ast.parse("".join(lines), filename)
        except (SyntaxError, ValueError, MemoryError, RecursionError, OSError):
            return None
        count = len(lines) + 2
        names = ["<module>"] * count
        firsts = [1] * count
        # Parents before children, so that inner scopes overwrite outer ones.
        stack = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                scoped = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                            ast.ClassDef, ast.Lambda))
                if not scoped:
                    stack.append((child, prefix))
                    continue
                name = "<lambda>" if isinstance(child, ast.Lambda) else child.name
                qualname = prefix + name
                start = child.lineno
                end = min(getattr(child, "end_lineno", start) or start, count - 1)
                for line in range(start, end + 1):
                    names[line] = qualname
                    firsts[line] = start
                inner = qualname + (".<locals>." if not isinstance(child, ast.ClassDef)
                                    else ".")
                stack.append((child, inner))
        return names, firsts


def frame_label(names: FunctionNames, filename: str, lineno: int) -> str:
    """``qualname (short/path.py:LINE)``: how flame graphs name a frame."""
    found = names.lookup(filename, lineno)
    where = f"{short_path(filename)}:{lineno}"
    return f"{found[0]} ({where})" if found is not None else where


def frames_of_stacks(stacks: Iterable[Stack]) -> set:
    return {frame for stack in stacks for frame in stack.frames}
