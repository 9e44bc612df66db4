"""Show the allocation sites that hold the most memory in a snapshot.

Examples:
  heaptrace top snaps/heaptrace-4242-000007.snap
  heaptrace top SNAPSHOT --group-by traceback --limit 3
  heaptrace top SNAPSHOT --group-by filename --cumulative -i '*/myapp/*'

Blocks allocated by the import machinery and blocks with no Python frame
are left out unless --no-default-excludes.
"""

from __future__ import annotations

import datetime

from ._common import (Progress, add_display_arguments, add_filter_arguments,
                      check_display_arguments, filter_snapshot, format_size, print_entry,
                      frames_json, load_snapshot, plural, print_json, site_json)


def add_arguments(parser) -> None:
    parser.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot file")
    add_display_arguments(parser)
    add_filter_arguments(parser)


def execute(args) -> int:
    check_display_arguments(args)
    progress = Progress()
    try:
        snapshot = load_snapshot(args.snapshot, progress)
        progress.update(f"heaptrace: grouping the blocks of {args.snapshot}")
        stats = filter_snapshot(snapshot, args).statistics(args.group_by, args.cumulative)
    finally:
        progress.clear()
    shown = stats[: args.limit] if args.limit else stats
    rest = stats[len(shown):]
    total_size = sum(s.size for s in stats)
    total_count = sum(s.count for s in stats)
    if args.json:
        print_json({
            "snapshot": args.snapshot,
            "timestamp": getattr(snapshot, "timestamp", None),
            "traceback_limit": snapshot.traceback_limit,
            "group_by": args.group_by,
            "cumulative": args.cumulative,
            "stats": [{**site_json(s.traceback), "size": s.size, "count": s.count,
                       "traceback": frames_json(s.traceback)} for s in shown],
            "other": {"entries": len(rest), "size": sum(s.size for s in rest),
                      "count": sum(s.count for s in rest)},
            "total": {"size": total_size, "count": total_count},
        })
        return 0
    what = {"lineno": "line", "filename": "file", "traceback": "traceback"}[args.group_by]
    what += "s" if len(shown) != 1 else ""
    taken = getattr(snapshot, "timestamp", None)
    when = (" taken " + datetime.datetime.fromtimestamp(taken).strftime("%Y-%m-%d %H:%M:%S")
            if taken else "")
    print(f"Top {len(shown)} {what} of {args.snapshot}{when}"
          f"{' (cumulative)' if args.cumulative else ''}")
    for rank, stat in enumerate(shown, 1):
        average = stat.size / stat.count if stat.count else 0
        summary = (f"{format_size(stat.size)} in {plural(stat.count, 'block')} "
                   f"(average {format_size(average)})")
        print_entry(rank, stat.traceback, summary, args.group_by, args.full_paths)
    if rest:
        print(f"{len(rest):,} other: {format_size(sum(s.size for s in rest))}")
    print(f"Total: {format_size(total_size)} in {plural(total_count, 'block')}")
    return 0

