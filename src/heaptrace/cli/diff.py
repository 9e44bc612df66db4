"""Show how memory changed between two snapshots, largest change first.

Examples:
  heaptrace diff OLD.snap NEW.snap
  heaptrace diff OLD.snap NEW.snap --group-by traceback --limit 5
  heaptrace diff OLD.snap NEW.snap --cumulative -x '*/site-packages/*'

Sites are sorted as Snapshot.compare_to sorts them: by the size of the
change, then by the size now.  Filters work as in `heaptrace top`.
"""

from __future__ import annotations

import sys

from .. import reports
from ..reports.model import DiffResult
from ..measure import user_code_snapshot
from ._common import (CLIError, Progress, add_display_arguments, add_filter_arguments,
                      check_display_arguments, filter_snapshot, load_snapshot)


def add_arguments(parser) -> None:
    parser.add_argument("old", metavar="OLD", help="the earlier snapshot file")
    parser.add_argument("new", metavar="NEW", help="the later snapshot file")
    add_display_arguments(parser)
    add_filter_arguments(parser)
    parser.add_argument("--user-code", action="store_true",
                        help="count each block at the innermost frame of its traceback in "
                             "your code (not the standard library or installed packages)")


def execute(args) -> int:
    check_display_arguments(args)
    progress = Progress()
    try:
        old = filter_snapshot(load_snapshot(args.old, progress), args)
        new = filter_snapshot(load_snapshot(args.new, progress), args)
        if args.user_code:
            old, new = user_code_snapshot(old), user_code_snapshot(new)
        progress.update("heaptrace: comparing the snapshots")
        try:
            stats = new.compare_to(old, args.group_by, args.cumulative)
        except ValueError as error:     # sampled and exact, or two intervals
            raise CLIError(f"{args.new} and {args.old}: {error}") from None
    finally:
        progress.clear()
    stats = [s for s in stats if s.size_diff or s.count_diff]
    shown = stats[: args.limit] if args.limit else stats
    result = DiffResult(args.old, args.new, args.group_by, args.cumulative, args.full_paths,
                        shown, stats[len(shown):], getattr(new, "sampling_interval", None))
    sys.stdout.write(reports.render("json" if args.json else "text", result))
    return 0
