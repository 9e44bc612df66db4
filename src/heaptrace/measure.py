"""Measure the memory a block of code or a function uses.

The two everyday patterns, done once and right::

    with heaptrace.measure("parse") as m:
        records = parse(data)
    print(m)                  # net and peak memory, top allocation sites
    m.net, m.peak             # bytes

    @heaptrace.measured       # prints a summary to stderr after each call
    def parse(data):
        ...

If tracing is off, the measurement starts it (with ``nframe`` frames) and
stops it at the end; if it is on, it is left on.  ``peak`` is the highest
traced memory reached inside the block, above the level at its start; it
stays right when measurements are nested, even though each one resets the
process-wide peak.  Allocations of every thread count, so measurements made
at the same time in several threads see each other's memory.

This module also holds the small helpers that the other leak-hunting
modules share: :func:`format_size` and :func:`own_filters`.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Callable, Optional, TextIO

__all__ = ["Measurement", "measure", "measured", "format_size", "own_filters", "own_locations",
           "is_user_code", "user_frame_index", "user_code_snapshot"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# Measurements in progress, innermost last; each entry keeps the highest
# traced memory seen while it was outermost, since the inner ones reset the
# peak.  Protected by _STACK_LOCK.
_STACK: list = []
_STACK_LOCK = threading.Lock()


def _api():
    """The tracemalloc-compatible API (the heaptrace package), imported lazily."""
    import heaptrace

    return heaptrace


def format_size(size: float, sign: bool = False) -> str:
    """Format a byte count the way people read it: ``512 B``, ``1.5 KiB``, ``3.2 MiB``.

    With ``sign``, positive values get a ``+``.
    """
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value = float(size)
    unit = 0
    while abs(value) >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    plus = "+" if sign and size > 0 else ""
    if unit == 0:
        return f"{plus}{value:.0f} B"
    return f"{plus}{value:.1f} {units[unit]}"


def own_locations(api=None) -> tuple:
    """Where heaptrace's own code lives: ``(directory prefixes, file names)``.

    The directories are the heaptrace package's (and that of the module
    providing the API); the files add the one that implements
    ``take_snapshot``, wherever it is.
    """
    api = api or _api()
    prefixes = {_PACKAGE_DIR + os.sep}
    api_file = getattr(api, "__file__", None)
    if api_file:
        prefixes.add(os.path.dirname(os.path.abspath(api_file)) + os.sep)
    files = set()
    code = getattr(api.take_snapshot, "__code__", None)
    if code is not None:
        files.add(code.co_filename)
    return tuple(sorted(prefixes)), frozenset(files)


_LIBRARY_PREFIXES = None


def _library_prefixes() -> tuple:
    """Folders of code that is not the user's: the standard library, the
    site-packages folders, and heaptrace itself."""
    global _LIBRARY_PREFIXES
    if _LIBRARY_PREFIXES is None:
        import site
        import sysconfig

        folders = {_PACKAGE_DIR}
        for scheme_vars in ({}, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
            paths = sysconfig.get_paths(vars=scheme_vars or None)
            folders.update(paths.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib"))
        try:
            folders.update(site.getsitepackages())
        except AttributeError:   # some virtualenv versions lack it
            pass
        user_site = getattr(site, "USER_SITE", None)
        if user_site:
            folders.add(user_site)
        _LIBRARY_PREFIXES = tuple(sorted(os.path.join(os.path.abspath(f), "")
                                         for f in folders if f))
    return _LIBRARY_PREFIXES


def is_user_code(filename: str) -> bool:
    """Whether a file is the user's code: not the standard library, not an
    installed package (site-packages, dist-packages), not heaptrace, and not
    generated code (``<frozen ...>``, ``<string>``)."""
    if not filename or filename.startswith("<"):
        return False
    if f"{os.sep}site-packages{os.sep}" in filename or f"{os.sep}dist-packages{os.sep}" in filename:
        return False
    return not os.path.abspath(filename).startswith(_library_prefixes())


def user_frame_index(frames) -> int:
    """Index of the innermost frame that is the user's code in a sequence of
    frames (``(filename, lineno)`` pairs, most recent first); 0 when none is
    (or when the most recent already is)."""
    for index, frame in enumerate(frames):
        if is_user_code(frame[0]):
            return index
    return 0


def user_code_snapshot(snapshot, api=None):
    """A snapshot in which each block's traceback starts at its innermost
    frame in the user's code (the library frames above it dropped), so that
    grouping by line attributes memory to the user's line that caused it."""
    api = api or _api()
    cache = {}
    traces = []
    for trace in snapshot.traces:
        raw = trace._trace
        frames = raw[2]
        cut = cache.get(frames)
        if cut is None:
            index = user_frame_index(frames)
            cut = cache[frames] = frames[index:] if index else frames
        traces.append((raw[0], raw[1], cut) + tuple(raw[3:]))
    result = api.Snapshot(traces, snapshot.traceback_limit)
    for name, value in vars(snapshot).items():
        if name not in ("traces", "traceback_limit"):
            setattr(result, name, value)
    return result


def _is_own(filename: str, prefixes: tuple, files: frozenset) -> bool:
    return filename.startswith(prefixes) or filename in files


def own_filters(api=None) -> list:
    """Filters that leave out what heaptrace's own code allocated.

    They look at the most recent frame only, so a user's allocation made
    below a heaptrace call stays in.
    """
    api = api or _api()
    prefixes, files = own_locations(api)
    patterns = [prefix + "*" for prefix in prefixes] + sorted(files)
    return [api.Filter(False, pattern) for pattern in patterns]


class Measurement:
    """The memory used by one run of a block of code.

    Created by :class:`measure`; the fields are filled in when the block
    ends (they are ``None`` before).

    * ``net``: traced bytes at the end minus at the start (negative if the
      block freed more than it kept).
    * ``peak``: the highest traced memory inside the block, above the start.
    * ``duration``: wall-clock seconds.
    * ``top``: the allocation sites whose memory changed most, as the
      ``StatisticDiff`` objects of ``Snapshot.compare_to`` (empty if
      ``top=0``).
    """

    def __init__(self, label: Optional[str]):
        self.label = label
        self.net: Optional[int] = None
        self.peak: Optional[int] = None
        self.duration: Optional[float] = None
        self.top: list = []

    def format(self) -> str:
        """A short human-readable summary, one site per line."""
        name = f"{self.label}: " if self.label else ""
        if self.net is None:
            return f"heaptrace: {name}(not measured yet)"
        lines = [
            f"heaptrace: {name}net {format_size(self.net, sign=True)}, "
            f"peak {format_size(self.peak, sign=True)}, {self.duration * 1000:.1f} ms"
        ]
        for rank, stat in enumerate(self.top, 1):
            frame = stat.traceback[-1]   # the most recent frame
            lines.append(
                f"  #{rank} {_short_path(frame.filename)}:{frame.lineno}: "
                f"{format_size(stat.size_diff, sign=True)} "
                f"({stat.count_diff:+,} blocks, now {format_size(stat.size)})"
            )
        return "\n".join(lines)

    __str__ = format

    def __repr__(self):
        return f"<Measurement {self.label!r} net={self.net} peak={self.peak}>"

    def to_dict(self) -> dict:
        """The measurement as JSON-ready data (see docs/json.md)."""
        return {
            "label": self.label,
            "net": self.net,
            "peak": self.peak,
            "duration": self.duration,
            "top": [
                {
                    "filename": stat.traceback[-1].filename,
                    "lineno": stat.traceback[-1].lineno,
                    "size_diff": stat.size_diff,
                    "count_diff": stat.count_diff,
                    "size": stat.size,
                    "count": stat.count,
                }
                for stat in self.top
            ],
        }


class measure(Measurement):
    """Context manager that measures the memory used by its block.

    ``with measure("label") as m:`` gives ``m.net``, ``m.peak``,
    ``m.duration`` and ``m.top`` once the block is over.

    * ``top``: how many allocation sites to keep (0 skips the two snapshots
      this needs, which cost time in a large traced heap).
    * ``group_by``: ``"lineno"``, ``"filename"`` or ``"traceback"``.
    * ``nframe``: frames per traceback if this measurement starts tracing.
    * ``output``: a text file to print the summary to at the end.

    A ``measure`` object is used once; use :func:`measured` to measure every
    call of a function.
    """

    def __init__(self, label: Optional[str] = None, *, top: int = 10,
                 group_by: str = "lineno", nframe: int = 1,
                 output: Optional[TextIO] = None):
        super().__init__(label)
        if top < 0:
            raise ValueError("top must be >= 0")
        self._top_limit = top
        self._group_by = group_by
        self._nframe = nframe
        self._output = output
        self._entered = False
        self._started_tracing = False

    def __enter__(self) -> "measure":
        if self._entered:
            raise RuntimeError("a measure() object can only be used once")
        self._entered = True
        api = _api()
        if not api.is_tracing():
            api.start(self._nframe)
            self._started_tracing = True
        self._before = api.take_snapshot() if self._top_limit else None
        with _STACK_LOCK:
            current, peak = api.get_traced_memory()
            if _STACK:
                _STACK[-1][1] = max(_STACK[-1][1], peak)
            api.reset_peak()
            self._start = api.get_traced_memory()[0]
            _STACK.append([self, self._start])
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc_info) -> None:
        api = _api()
        self.duration = time.perf_counter() - self._t0
        with _STACK_LOCK:
            current, peak = api.get_traced_memory()
            if _STACK and _STACK[-1][0] is self:
                peak = max(peak, _STACK.pop()[1])
            self.net = current - self._start
            self.peak = max(0, peak - self._start)
        if self._before is not None:
            after = api.take_snapshot()
            diffs = after.compare_to(self._before, self._group_by)
            # heaptrace's own blocks (the snapshots) are dropped from the
            # grouped result: cheaper than filtering every trace, and it
            # allocates nothing on the way (Filter compiles patterns).
            prefixes, files = own_locations(api)
            self.top = [d for d in diffs
                        if (d.size_diff or d.count_diff)
                        and not _is_own(d.traceback[-1].filename, prefixes, files)
                        ][: self._top_limit]
            self._before = None
        if self._started_tracing:
            api.stop()
        if self._output is not None:
            print(self.format(), file=self._output, flush=True)


def measured(func: Optional[Callable] = None, *, label: Optional[str] = None,
             top: int = 5, group_by: str = "lineno", nframe: int = 1,
             output: Optional[TextIO] = None, quiet: bool = False,
             callback: Optional[Callable[[Measurement], None]] = None):
    """Decorator that measures every call of a function.

    After each call, the summary is printed to ``output`` (standard error by
    default; nothing with ``quiet=True``) and ``callback(measurement)`` is
    called if given.  The latest measurement is kept as
    ``wrapper.last_measurement``.  Usable bare (``@measured``) or with
    options (``@measured(top=3)``); the other options are those of
    :class:`measure`.
    """

    def decorate(function: Callable) -> Callable:
        name = label or getattr(function, "__qualname__", repr(function))

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            stream = None if quiet else (output or sys.stderr)
            m = measure(name, top=top, group_by=group_by, nframe=nframe, output=stream)
            with m:
                result = function(*args, **kwargs)
            wrapper.last_measurement = m
            if callback is not None:
                callback(m)
            return result

        wrapper.last_measurement = None
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _short_path(filename: str) -> str:
    """The last two components of a path, as the 'pretty top' shows them."""
    return os.sep.join(filename.split(os.sep)[-2:])
