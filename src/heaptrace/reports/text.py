"""Text: what `heaptrace top` and `heaptrace diff` print on a terminal."""

from __future__ import annotations

import datetime

from . import Unsupported
from .model import DiffResult, TopResult

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


def render(data) -> str:
    if isinstance(data, TopResult):
        return "\n".join(_top(data)) + "\n"
    if isinstance(data, DiffResult):
        return "\n".join(_diff(data)) + "\n"
    raise Unsupported(f"no text output for a {type(data).__name__}")
