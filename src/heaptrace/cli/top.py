"""Show the allocation sites that hold the most memory in a snapshot.

Examples:
  heaptrace top snaps/heaptrace-4242-000007.snap
  heaptrace top SNAPSHOT --group-by traceback --limit 3
  heaptrace top SNAPSHOT --group-by filename --cumulative -i '*/myapp/*'
  heaptrace top SNAPSHOT --native-frames    (snapshots of start(native=True,
                                              native_frames=True))

Blocks allocated by the import machinery and blocks with no Python frame
are left out unless --no-default-excludes.
"""

from __future__ import annotations

import sys

from .. import reports
from ..reports.model import TopResult
from ..measure import user_code_snapshot
from ._common import (Progress, add_display_arguments, add_filter_arguments,
                      check_display_arguments, filter_snapshot, load_snapshot)


def add_arguments(parser) -> None:
    parser.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot file")
    add_display_arguments(parser)
    add_filter_arguments(parser)
    parser.add_argument("--user-code", action="store_true",
                        help="count each block at the innermost frame of its traceback in "
                             "your code (not the standard library or installed packages)")
    parser.add_argument(
        "--native-frames", action="store_true",
        help="under each site, print the C call paths of its native blocks "
             "(the %d biggest), for snapshots taken with "
             "start(native=True, native_frames=True)" % NATIVE_PATHS)


# Call paths printed per site with --native-frames.
NATIVE_PATHS = 3


def execute(args) -> int:
    check_display_arguments(args)
    progress = Progress()
    try:
        snapshot = load_snapshot(args.snapshot, progress)
        if args.user_code:
            snapshot = user_code_snapshot(snapshot)
        progress.update(f"heaptrace: grouping the blocks of {args.snapshot}")
        filtered = filter_snapshot(snapshot, args)
        stats = filtered.statistics(args.group_by, args.cumulative)
        native = None
        if args.native_frames:
            native = filtered._native_paths(args.group_by, args.cumulative)
    finally:
        progress.clear()
    shown = stats[: args.limit] if args.limit else stats
    if native is not None:
        native = {stat.traceback: native[stat.traceback][:NATIVE_PATHS]
                  for stat in shown if stat.traceback in native}
    result = TopResult(args.snapshot, getattr(snapshot, "timestamp", None),
                       snapshot.traceback_limit, args.group_by, args.cumulative,
                       args.full_paths, shown, stats[len(shown):], native,
                       getattr(snapshot, "sampling_interval", None))
    sys.stdout.write(reports.render("json" if args.json else "text", result))
    return 0
