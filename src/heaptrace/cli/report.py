"""Write an HTML report: a flame graph and the top sites of a snapshot, of
the change between two, or the timeline of a series.

Examples:
  heaptrace report SNAPSHOT -o report.html
  heaptrace report --diff OLD.snap NEW.snap -o diff.html
  heaptrace report heaptrace-snapshots/ -o trend.html
  heaptrace report snaps/heaptrace-4242-*.snap -o trend.html

The page is one file with its script and style inside: it loads nothing
from the network and can be mailed or attached to a ticket.  Its icicle
graph shows memory by call path (click a frame to zoom in, hover for its
file, line, size and blocks, search by file or function); its table lists
the top sites with their source lines and sorts by any column.  With
--diff the graph shows what changed (red grew, blue shrank).  A folder, or
three snapshots or more, is read as a series, as `heaptrace trend` reads it:
a timeline of the total and of the top sites, the verdicts (leak, plateau,
noise) and the growth from the first snapshot to the last.  Filters work as
in `heaptrace top`.
"""

from __future__ import annotations

import os

from ..reports.model import Series, SiteSeries, diff_profile_of, profile_of
from ._common import (CLIError, Progress, add_filter_arguments, filter_snapshot,
                      load_snapshot, ordered_frames, print_json)
from .export import write_output

USAGE = ("heaptrace report [options] SNAPSHOT -o FILE\n"
         "       heaptrace report [options] --diff OLD NEW -o FILE\n"
         "       heaptrace report [options] FOLDER|SNAPSHOTS... -o FILE")


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="*", metavar="SNAPSHOT|FOLDER",
                        help="a snapshot; or a folder of snapshots, or three or more "
                             "snapshot files, for a series")
    parser.add_argument("--diff", nargs=2, metavar=("OLD", "NEW"),
                        help="show the change from the snapshot OLD to NEW")
    parser.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="the HTML file to write (default: standard output)")
    parser.add_argument("-g", "--group-by", default="lineno",
                        choices=("lineno", "filename", "traceback"),
                        help="series: group the sites by line (default), file or "
                             "whole traceback")
    parser.add_argument("--min-growth", type=int, default=1024, metavar="BYTES",
                        help="series: smallest growth that is not noise (default 1024)")
    parser.add_argument("--pid", type=int, metavar="PID",
                        help="series in a folder: read the run of process PID "
                             "(default: the latest run with at least 3 snapshots)")
    parser.add_argument("--json", action="store_true",
                        help="print what was written as JSON (see docs/json.md)")
    add_filter_arguments(parser)


def _load(path: str, args, progress):
    snapshot = load_snapshot(path, progress)
    return filter_snapshot(snapshot, args), getattr(snapshot, "timestamp", None)


def execute(args) -> int:
    if args.json and args.output == "-":
        raise CLIError("--json prints a summary: give the report a file with -o FILE")
    if args.pid is not None and not (len(args.paths) == 1 and os.path.isdir(args.paths[0])):
        raise CLIError("--pid chooses a run in a folder; give the folder")
    if args.diff:
        if args.paths:
            raise CLIError("give either --diff OLD NEW or snapshots, not both")
        data, summary = _diff(args)
    elif not args.paths:
        raise CLIError("give a snapshot, --diff OLD NEW, or a folder of snapshots")
    elif len(args.paths) == 1 and not os.path.isdir(args.paths[0]):
        data, summary = _single(args)
    elif len(args.paths) == 2:
        raise CLIError("two snapshots: use --diff OLD NEW to compare them "
                       "(a series needs at least 3)")
    else:
        data, summary = _series(args)
    write_output("html", data, args.output)
    if args.json:
        print_json({"output": args.output, **summary})
    return 0


def _single(args):
    progress = Progress()
    try:
        path = args.paths[0]
        snapshot, when = _load(path, args, progress)
        progress.update(f"heaptrace: building the report of {path}")
        profile = profile_of(snapshot, path, ordered_frames, when)
    finally:
        progress.clear()
    return profile, {"kind": "snapshot", "snapshot": path, "timestamp": when,
                     "stacks": len(profile.stacks),
                     "total": {"size": profile.total_size, "count": profile.total_count}}


def _diff(args):
    progress = Progress()
    old_path, new_path = args.diff
    try:
        old, old_when = _load(old_path, args, progress)
        new, new_when = _load(new_path, args, progress)
        progress.update("heaptrace: comparing the snapshots")
        try:
            profile = diff_profile_of(old, new, old_path, new_path, ordered_frames,
                                      old_when, new_when)
        except ValueError as error:     # sampled and exact, or two intervals
            raise CLIError(f"{new_path} and {old_path}: {error}") from None
    finally:
        progress.clear()
    return profile, {"kind": "diff", "old": old_path, "new": new_path,
                     "stacks": len(profile.stacks),
                     "total": {"size_diff": profile.total_size_diff,
                               "count_diff": sum(s.count_diff for s in profile.stacks)}}


def _series(args):
    from . import trend as trend_cli

    if args.min_growth < 0:
        raise CLIError("--min-growth must be 0 or more")
    selection = trend_cli.snapshot_files(args.paths, args.pid)
    if len(selection.files) < 3:
        raise CLIError(f"a series needs at least 3 snapshots, got {len(selection.files)}")
    series = trend_cli._read_series(selection, args)
    if selection.skipped:
        selection.notes.append(f"skipped {len(selection.skipped)} file(s) that are not snapshots")
    note = "; ".join(selection.notes) or None
    hours, classified = trend_cli.classify_series(selection, series, args.min_growth)
    times = [when for when, _, _ in series]
    tables = [table for _, _, table in series]
    sites = [SiteSeries(key, sizes, trend) for key, sizes, trend in classified]
    totals = [sum(table.values()) for table in tables]
    paths = [path for _, path, _ in series]
    progress = Progress()
    try:
        first, first_when = _load(paths[0], args, progress)
        last, last_when = _load(paths[-1], args, progress)
        progress.update("heaptrace: comparing the first and the last snapshot")
        try:
            growth = diff_profile_of(first, last, paths[0], paths[-1], ordered_frames,
                                     first_when, last_when)
        except ValueError:      # sampled with another interval: no growth graph
            growth = None
            note = "; ".join(filter(None, [note, "no growth graph: the first and the "
                                           "last snapshot were taken with different "
                                           "sampling intervals"]))
    finally:
        progress.clear()
    data = Series(paths, times, totals, sites, args.group_by, growth, note)
    counts = {kind: sum(1 for s in sites if s.trend.kind == kind)
              for kind in trend_cli.KIND_ORDER}
    return data, {"kind": "series", "snapshots": paths, "summary": counts,
                  "total": {"first": totals[0], "last": totals[-1]}}
