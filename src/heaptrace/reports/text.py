"""Text: what `heaptrace top`, `diff` and `trend` print on a terminal."""

from __future__ import annotations

import datetime

from . import Unsupported
from .model import DiffResult, TopResult, TrendResult

FORMAT = "text"
BINARY = False


def _entry(rank, traceback, summary, group_by, full_paths) -> list:
    """One ranked entry: its site (or, grouped by traceback, the whole call
    path under the summary) and the source lines."""
    from ..cli._common import format_site

    site = format_site(traceback, group_by, full_paths)
    if group_by == "traceback":
        return [f"#{rank}: {summary}"] + ["    " + line for line in site]
    return [f"#{rank}: {site[0]}: {summary}"] + site[1:]


def _native_lines(paths, full_paths) -> list:
    """The C call paths of a site's native blocks (top --native-frames),
    innermost frame first."""
    import os.path

    from ..cli._common import format_size, plural

    lines = []
    for size, count, frames in paths:
        lines.append(f"    native: {format_size(size)} in {plural(count, 'block')}")
        for frame in frames:
            library = frame.library if full_paths else os.path.basename(frame.library)
            lines.append(f"        {frame.function or '??'} "
                         f"({library}+{frame.offset:#x})")
    return lines


def _top(result: TopResult) -> list:
    from ..cli._common import format_size, plural

    stats = result.shown + result.rest
    what = {"lineno": "line", "filename": "file", "traceback": "traceback"}[result.group_by]
    what += "s" if len(result.shown) != 1 else ""
    taken = result.timestamp
    when = (" taken " + datetime.datetime.fromtimestamp(taken).strftime("%Y-%m-%d %H:%M:%S")
            if taken else "")
    lines = [f"Top {len(result.shown)} {what} of {result.snapshot}{when}"
             f"{' (cumulative)' if result.cumulative else ''}"]
    for rank, stat in enumerate(result.shown, 1):
        average = stat.size / stat.count if stat.count else 0
        summary = (f"{format_size(stat.size)} in {plural(stat.count, 'block')} "
                   f"(average {format_size(average)})")
        lines += _entry(rank, stat.traceback, summary, result.group_by, result.full_paths)
        if result.native is not None:
            lines += _native_lines(result.native.get(stat.traceback, ()),
                                   result.full_paths)
    if result.rest:
        lines.append(f"{len(result.rest):,} other: "
                     f"{format_size(sum(s.size for s in result.rest))}")
    lines.append(f"Total: {format_size(sum(s.size for s in stats))} in "
                 f"{plural(sum(s.count for s in stats), 'block')}")
    return lines


def _diff(result: DiffResult) -> list:
    from ..cli._common import format_size, plural

    stats = result.shown + result.rest
    lines = [f"Top {len(result.shown)} difference{'s' if len(result.shown) != 1 else ''}, "
             f"{result.new} compared to {result.old}"
             f"{' (cumulative)' if result.cumulative else ''}"]
    for rank, stat in enumerate(result.shown, 1):
        summary = (f"{format_size(stat.size_diff, sign=True)} ({stat.count_diff:+,} blocks), "
                   f"now {format_size(stat.size)} in {plural(stat.count, 'block')}")
        lines += _entry(rank, stat.traceback, summary, result.group_by, result.full_paths)
    if result.rest:
        lines.append(f"{len(result.rest):,} other: "
                     f"{format_size(sum(s.size_diff for s in result.rest), sign=True)}")
    lines.append(f"Total: {format_size(sum(s.size_diff for s in stats), sign=True)} "
                 f"({sum(s.count_diff for s in stats):+,} blocks)")
    return lines


_GROUP_NAMES = {"lineno": "line", "filename": "file", "traceback": "traceback"}


def _trend_site(key, group_by: str, full: bool) -> str:
    """A site of trend on one line: ``file:line``, and with --group-by
    traceback up to three callers after it."""
    from ..cli._common import short_path

    filename, lineno = key[0]
    if group_by == "filename":
        return short_path(filename, full)
    text = f"{short_path(filename, full)}:{lineno}"
    if group_by == "traceback" and len(key) > 1:
        text += " <- " + " <- ".join(f"{short_path(f, full)}:{n}" for f, n in key[1:4])
        if len(key) > 4:
            text += " <- ..."
    return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _trend(result: TrendResult) -> list:
    from ..cli._common import format_size, plural
    from ..trend import LEAK, NOISE, PLATEAU

    first = result.snapshots[0][0]
    start = datetime.datetime.fromtimestamp(first).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{plural(len(result.snapshots), 'snapshot')} over "
             f"{_duration(result.hours * 3600)} from {start}, grouped by "
             f"{_GROUP_NAMES[result.group_by]}"]
    lines += [f"Note: {note}" for note in result.notes]
    listed = [(k, t) for k, t in result.sites if result.all or t.kind != NOISE]
    shown = listed[: result.limit] if result.limit else listed
    if shown:
        lines.append(f"{'kind':<8} {'growth/hour':>12} {'size now':>10}  site")
    for key, trend in shown:
        rate = format_size(trend.slope, sign=True) if trend.kind == LEAK else "-"
        detail = (f"confidence {trend.confidence:.2f}, {trend.reason}"
                  if trend.kind == LEAK else trend.reason)
        lines.append(f"{trend.kind:<8} {rate:>12} {format_size(trend.last):>10}  "
                     f"{_trend_site(key, result.group_by, result.full_paths)}  ({detail})")
    if len(listed) > len(shown):
        lines.append(f"... {len(listed) - len(shown):,} more (--limit 0 shows all)")
    counts = result.counts
    summary = (f"{plural(counts[LEAK], 'leak')}, {plural(counts[PLATEAU], 'plateau')}, "
               f"{counts[NOISE]:,} noise")
    if not result.all and counts[NOISE]:
        summary += " (--all lists the noise)"
    lines.append(summary)
    return lines


def render(data) -> str:
    if isinstance(data, TopResult):
        return "\n".join(_top(data)) + "\n"
    if isinstance(data, DiffResult):
        return "\n".join(_diff(data)) + "\n"
    if isinstance(data, TrendResult):
        return "\n".join(_trend(data)) + "\n"
    raise Unsupported(f"no text output for a {type(data).__name__}")
