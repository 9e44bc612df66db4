"""Show how memory changed between two snapshots, largest change first.

Examples:
  heaptrace diff OLD.snap NEW.snap
  heaptrace diff OLD.snap NEW.snap --group-by traceback --limit 5
  heaptrace diff OLD.snap NEW.snap --cumulative -x '*/site-packages/*'

Sites are sorted as Snapshot.compare_to sorts them: by the size of the
change, then by the size now.  Filters work as in `heaptrace top`.
"""

from __future__ import annotations

from ._common import (Progress, add_display_arguments, add_filter_arguments,
                      check_display_arguments, filter_snapshot, format_size, print_entry,
                      frames_json, load_snapshot, plural, print_json, site_json)


def add_arguments(parser) -> None:
    parser.add_argument("old", metavar="OLD", help="the earlier snapshot file")
    parser.add_argument("new", metavar="NEW", help="the later snapshot file")
    add_display_arguments(parser)
    add_filter_arguments(parser)


def execute(args) -> int:
    check_display_arguments(args)
    progress = Progress()
    try:
        old = filter_snapshot(load_snapshot(args.old, progress), args)
        new = filter_snapshot(load_snapshot(args.new, progress), args)
        progress.update("heaptrace: comparing the snapshots")
        stats = new.compare_to(old, args.group_by, args.cumulative)
    finally:
        progress.clear()
    stats = [s for s in stats if s.size_diff or s.count_diff]
    shown = stats[: args.limit] if args.limit else stats
    rest = stats[len(shown):]
    size_diff = sum(s.size_diff for s in stats)
    count_diff = sum(s.count_diff for s in stats)
    if args.json:
        print_json({
            "old": args.old,
            "new": args.new,
            "group_by": args.group_by,
            "cumulative": args.cumulative,
            "stats": [{**site_json(s.traceback), "size": s.size, "size_diff": s.size_diff,
                       "count": s.count, "count_diff": s.count_diff,
                       "traceback": frames_json(s.traceback)} for s in shown],
            "other": {"entries": len(rest), "size_diff": sum(s.size_diff for s in rest),
                      "count_diff": sum(s.count_diff for s in rest)},
            "total": {"size_diff": size_diff, "count_diff": count_diff},
        })
        return 0
    print(f"Top {len(shown)} difference{'s' if len(shown) != 1 else ''}, "
          f"{args.new} compared to {args.old}"
          f"{' (cumulative)' if args.cumulative else ''}")
    for rank, stat in enumerate(shown, 1):
        summary = (f"{format_size(stat.size_diff, sign=True)} ({stat.count_diff:+,} blocks), "
                   f"now {format_size(stat.size)} in {plural(stat.count, 'block')}")
        print_entry(rank, stat.traceback, summary, args.group_by, args.full_paths)
    if rest:
        print(f"{len(rest):,} other: {format_size(sum(s.size_diff for s in rest), sign=True)}")
    print(f"Total: {format_size(size_diff, sign=True)} ({count_diff:+,} blocks)")
    return 0

