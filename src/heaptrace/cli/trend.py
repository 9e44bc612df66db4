"""Classify every allocation site across a series of snapshots: leak, plateau or noise.

Examples:
  heaptrace trend heaptrace-snapshots/
  heaptrace trend snaps/heaptrace-4242-*.snap --group-by traceback
  heaptrace trend heaptrace-snapshots/ --all --json
  heaptrace trend heaptrace-snapshots/ --pid 4242

Give the snapshot files, or the folder that `heaptrace run` wrote them to
(at least three snapshots).  In a folder, the runs (processes) are kept
apart by the pid in the file names: the latest run with at least three
snapshots is read, a note names the others, and --pid PID picks one.
Other *.snap files in the folder, and files that are not snapshots, are
skipped with a note (a folder of hand-named snapshots only is read as one
series).  Each snapshot's time is the one `run` stored in it, else the
file's modification time.

A leak is a site whose retained memory (the least it holds from a moment
on) kept growing through the series, its second half included; a plateau
grew and then stopped, or grew once; noise is everything else: flat, or
memory that comes and goes.  Growth is given per hour.  Filters work as in
`heaptrace top`.

Snapshots of sampled tracing (`heaptrace run --sample`) hold estimates; the
classification allows for their sampling noise: a leak must grow by several
standard deviations of it (a few dozen snapshots find a leak of 1 MiB a
minute at 512KiB), and a flat series is not called a leak.
"""

from __future__ import annotations

import os
import re
import sys

from .. import reports
from ..measure import user_code_snapshot
from ..reports.model import TrendResult
from ..trend import LEAK, NOISE, PLATEAU, classify, sample_variance
from ._common import (CLIError, Progress, add_filter_arguments, filter_snapshot,
                      load_snapshot, ordered_frames, plural)

#: Names that `heaptrace run` gives its snapshots: pid and sequence number.
SNAPSHOT_NAME = re.compile(r"^heaptrace-(\d+)-(\d+)\.snap$")
MIN_SNAPSHOTS = 3
KIND_ORDER = {LEAK: 0, PLATEAU: 1, NOISE: 2}


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="SNAPSHOTS|FOLDER",
                        help="snapshot files, or one folder of *.snap files")
    parser.add_argument("-g", "--group-by", default="lineno",
                        choices=("lineno", "filename", "traceback"),
                        help="group blocks by line (default), file or whole traceback")
    parser.add_argument("-l", "--limit", type=int, default=20, metavar="N",
                        help="show at most N sites (default 20; 0 shows all)")
    parser.add_argument("--all", action="store_true",
                        help="list the noise too, not only leaks and plateaus")
    parser.add_argument("--min-growth", type=int, default=1024, metavar="BYTES",
                        help="smallest growth over the series that is not noise "
                             "(default 1024)")
    parser.add_argument("--user-code", action="store_true",
                        help="count each block at the innermost frame of its traceback in "
                             "your code (not the standard library or installed packages)")
    parser.add_argument("--full-paths", action="store_true",
                        help="show whole file names instead of their last two components")
    parser.add_argument("--pid", type=int, metavar="PID",
                        help="in a folder, read the run of process PID "
                             "(default: the latest run with at least 3 snapshots)")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON (see docs/json.md)")
    add_filter_arguments(parser)


class Selection:
    """What trend reads: the files, the run (pid) they belong to, the runs
    found in the folder, and notes on what was left out."""

    def __init__(self, files, pid=None, runs=None, folder=None):
        self.files = files
        self.pid = pid
        self.runs = runs or {}
        self.folder = folder
        self.notes: list = []
        self.skipped: list = []    # [(path, reason)]
        # Sampled snapshots read: path -> sampling interval, and path ->
        # {site key: variance of its estimated size} (see heaptrace.trend).
        self.intervals: dict = {}
        self.variances: dict = {}

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append((path, reason))


def snapshot_files(paths: list, pid=None) -> Selection:
    """Choose the files to read (see the module help)."""
    if len(paths) == 1 and os.path.isdir(paths[0]):
        return _folder_files(paths[0], pid)
    for path in paths:
        if os.path.isdir(path):
            raise CLIError(f"{path}: is a directory; give one folder, or snapshot files")
    if pid is not None:
        raise CLIError("--pid chooses a run in a folder; give the folder, not files")
    return Selection(list(paths))


def _folder_files(folder: str, pid) -> Selection:
    names = sorted(n for n in os.listdir(folder)
                   if n.endswith(".snap") and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise CLIError(f"{folder}: no snapshots (*.snap) in this folder")
    runs: dict = {}
    others = []
    for name in names:
        match = SNAPSHOT_NAME.match(name)
        if match:
            runs.setdefault(int(match.group(1)), []).append(os.path.join(folder, name))
        else:
            others.append(os.path.join(folder, name))
    if not runs:
        if pid is not None:
            raise CLIError(f"{folder}: no snapshots written by `heaptrace run`, so no pid "
                           f"to choose")
        return Selection(others, folder=folder)

    def newest(run_pid):
        return max(os.path.getmtime(path) for path in runs[run_pid])

    if pid is not None:
        if pid not in runs:
            raise CLIError(f"{folder}: no run with pid {pid} (runs here: "
                           f"{_run_list(runs)})")
        chosen = pid
    else:
        enough = [p for p in runs if len(runs[p]) >= MIN_SNAPSHOTS]
        chosen = max(enough or runs, key=newest)
    selection = Selection(runs[chosen], chosen, runs, folder)
    if len(runs) > 1:
        selection.notes.append(f"the folder holds {len(runs)} runs ({_run_list(runs)}); "
                               f"showing pid {chosen}; --pid PID shows another")
    for path in others:
        selection.skip(path, "not named like a snapshot of `heaptrace run`")
    return selection


def _run_list(runs: dict) -> str:
    return ", ".join(f"pid {p}: {plural(len(files), 'snapshot')}"
                     for p, files in sorted(runs.items()))


def execute(args) -> int:
    if args.limit < 0:
        raise CLIError("--limit must be 0 or more")
    selection = snapshot_files(args.paths, args.pid)
    _check_count(selection, len(selection.files))
    series = _read_series(selection, args)
    _check_count(selection, len(series))
    if selection.skipped:
        shown = ", ".join(f"{os.path.basename(path)} ({why})"
                          for path, why in selection.skipped[:3])
        more = len(selection.skipped) - 3
        selection.notes.append(f"skipped {plural(len(selection.skipped), 'file')}: {shown}"
                               + (f" and {more} more" if more > 0 else ""))
    hours, classified = classify_series(selection, series, args.min_growth)
    sites = [(key, trend) for key, _, trend in classified]
    counts = {kind: sum(1 for _, t in sites if t.kind == kind) for kind in KIND_ORDER}
    result = TrendResult([(when, path) for when, path, _ in series], hours[-1],
                         args.group_by, selection.notes, selection.pid, selection.runs,
                         selection.skipped, counts, sites,
                         intervals=selection.intervals,
                         limit=args.limit, all=args.all, full_paths=args.full_paths)
    sys.stdout.write(reports.render("json" if args.json else "text", result))
    return 0


def classify_series(selection: Selection, series: list, min_growth: int):
    """(hours since the first snapshot, [(site key, sizes, Trend)]) of a
    series read by _read_series, leaks first (what `trend` and the series
    report show).  Raises CLIError if the snapshots share one time."""
    times = [when for when, _, _ in series]
    hours = [(when - times[0]) / 3600 for when in times]
    if hours[-1] <= 0:
        raise CLIError("the snapshots were all taken at the same time")
    tables = [table for _, _, table in series]
    sites = []
    for key in set().union(*tables):
        sizes = [table.get(key, 0) for table in tables]
        sites.append((key, sizes, classify(hours, sizes, min_growth=min_growth,
                                           noise=series_noise(selection, series, key))))
    # (Ties are broken by the site itself, so that the order never depends
    # on the hash seed.)
    sites.sort(key=lambda item: (KIND_ORDER[item[2].kind], -item[2].slope,
                                 -item[2].growth, -item[2].last, repr(item[0])))
    return hours, sites


def _check_count(selection: Selection, count: int) -> None:
    if count >= MIN_SNAPSHOTS:
        return
    where = f" of pid {selection.pid}" if selection.pid is not None else ""
    message = f"trend needs at least {MIN_SNAPSHOTS} snapshots, got {count}{where}"
    if selection.skipped:
        message += f" ({plural(len(selection.skipped), 'file')} skipped)"
    if len(selection.runs) > 1:
        message += f"; runs in {selection.folder}: {_run_list(selection.runs)}"
    raise CLIError(message)


def _read_series(selection: Selection, args) -> list:
    """[(time, path, {site key: bytes})] in time order; a key is a tuple of
    (filename, lineno) pairs, most recent frame first.  In a folder, a file
    that cannot be read as a snapshot is skipped (and noted); a file named
    on the command line must be one."""
    files = selection.files
    progress = Progress()
    series = []
    try:
        for index, path in enumerate(files, 1):
            progress.update(f"heaptrace: reading snapshot {index}/{len(files)}: {path}")
            try:
                snapshot = load_snapshot(path)
            except CLIError as error:
                if selection.folder is None:
                    raise
                reason = str(error)
                selection.skip(path, reason[len(path) + 2:] if reason.startswith(path)
                               else reason)
                continue
            when = getattr(snapshot, "timestamp", None) or os.path.getmtime(path)
            table = {}
            snapshot = filter_snapshot(snapshot, args)
            if getattr(args, "user_code", False):
                snapshot = user_code_snapshot(snapshot)
            for stat in snapshot.statistics(args.group_by):
                key = tuple((f.filename, f.lineno) for f in ordered_frames(stat.traceback))
                table[key] = table.get(key, 0) + stat.size
            interval = getattr(snapshot, "sampling_interval", None)
            if interval:
                selection.intervals[path] = interval
                selection.variances[path] = _variances(snapshot, args.group_by, interval)
            series.append((when, path, table))
            del snapshot
    finally:
        progress.clear()
    series.sort(key=lambda item: item[0])
    return series


def _variances(snapshot, group_by: str, interval: int) -> dict:
    """{site key: variance of the site's estimated size} of a sampled
    snapshot: the sum over its recorded blocks of
    heaptrace.trend.sample_variance, grouped as statistics() groups them."""
    from .._api import Traceback

    groups: dict = {}
    for trace in snapshot.traces:
        frames = trace._trace[2]        # raw frames, most recent first
        if not frames:
            continue
        if group_by == "lineno":
            frames = frames[:1]
        elif group_by == "filename":
            frames = ((frames[0][0], 0),)
        groups[frames] = groups.get(frames, 0.0) + sample_variance(trace.size, interval)
    out: dict = {}
    for frames, variance in groups.items():
        key = tuple((f.filename, f.lineno) for f in ordered_frames(Traceback(frames)))
        out[key] = out.get(key, 0.0) + variance
    return out


def series_noise(selection: Selection, series: list, key):
    """The standard deviation of a site's estimated size in each snapshot
    of the series, or None when every snapshot is exact."""
    if not selection.variances:
        return None
    return [selection.variances.get(path, {}).get(key, 0.0) ** 0.5
            for _, path, _ in series]
