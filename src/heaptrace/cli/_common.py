"""What the subcommands share: the error type, snapshot loading, filters,
output formatting and terminal progress."""

from __future__ import annotations

import json
import linecache
import os
import runpy
import sys
from typing import Optional

from ..measure import _api, format_size, own_locations

__all__ = ["CLIError", "EXIT_OK", "EXIT_TARGET_FAILED", "EXIT_USAGE", "one_line",
           "load_snapshot", "add_filter_arguments", "filter_snapshot",
           "add_display_arguments", "check_display_arguments", "short_path",
           "ordered_frames", "format_site", "site_json", "frames_json", "print_json",
           "Progress", "plural", "format_size"]

#: Exit codes: success; the user's code (script, function) raised or failed;
#: heaptrace could not do what was asked (bad option, missing or unreadable
#: file, no such target).
EXIT_OK = 0
EXIT_TARGET_FAILED = 1
EXIT_USAGE = 2

#: Files left out of top, diff and trend unless --no-default-excludes: the
#: import machinery and blocks with no Python frame.
DEFAULT_EXCLUDES = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>",
                    "<unknown>")


class CLIError(Exception):
    """A failure reported to the user as one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException) -> str:
    """``Type: message`` of an exception, on one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def load_snapshot(path: str, progress: Optional["Progress"] = None):
    """Load a snapshot with ``Snapshot.load``; any failure is a CLIError."""
    if progress is not None:
        progress.update(f"heaptrace: reading {path}")
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a snapshot")
    api = _api()
    try:
        snapshot = api.Snapshot.load(path)
    except OSError as error:    # no permission, an I/O error: not a verdict on the data
        raise CLIError(f"{path}: cannot read the file ({one_line(error)})") from None
    except Exception as error:  # any other reader failure means "not a snapshot"
        if getattr(error, "status", None) == "TRUNCATED":
            raise CLIError(f"{path}: truncated snapshot ({error})") from None
        raise CLIError(f"{path}: not a heaptrace snapshot ({one_line(error)})") from None
    if not isinstance(snapshot, api.Snapshot):
        raise CLIError(f"{path}: not a heaptrace snapshot (it holds a "
                       f"{type(snapshot).__name__})")
    return snapshot


def add_filter_arguments(parser) -> None:
    """The include/exclude options of top, diff and trend."""
    group = parser.add_argument_group("filters")
    group.add_argument("-i", "--include", action="append", default=[], metavar="PATTERN",
                       help="keep only blocks allocated in files matching PATTERN "
                            "(fnmatch syntax, e.g. '*/myapp/*'); repeatable")
    group.add_argument("-x", "--exclude", action="append", default=[], metavar="PATTERN",
                       help="leave out blocks allocated in files matching PATTERN; repeatable")
    group.add_argument("--all-frames", action="store_true",
                       help="match the patterns against every frame of the traceback, "
                            "not only the most recent one")
    group.add_argument("--no-default-excludes", action="store_true",
                       help="keep the import machinery (<frozen importlib._bootstrap*>) "
                            "and <unknown>, which are left out by default")


def filter_snapshot(snapshot, args):
    """Apply the filter options to a snapshot."""
    api = _api()
    filters = [api.Filter(True, pattern, all_frames=args.all_frames)
               for pattern in args.include]
    excludes = list(args.exclude)
    if not args.no_default_excludes:
        excludes.extend(DEFAULT_EXCLUDES)
    filters += [api.Filter(False, pattern, all_frames=args.all_frames) for pattern in excludes]
    return snapshot.filter_traces(filters) if filters else snapshot


def add_display_arguments(parser, *, limit: int = 10, group_choices=None) -> None:
    """The grouping and display options of top and diff."""
    parser.add_argument("-g", "--group-by", default="lineno",
                        choices=group_choices or ("lineno", "filename", "traceback"),
                        help="group blocks by line (default), file or whole traceback")
    parser.add_argument("-c", "--cumulative", action="store_true",
                        help="count a block for every frame of its traceback, not only the "
                             "most recent one (with --group-by lineno or filename)")
    parser.add_argument("-l", "--limit", type=int, default=limit, metavar="N",
                        help=f"show the top N entries (default {limit}; 0 shows all)")
    parser.add_argument("--full-paths", action="store_true",
                        help="show whole file names instead of their last two components")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON (see docs/json.md)")


def check_display_arguments(args) -> None:
    if args.cumulative and args.group_by == "traceback":
        raise CLIError("--cumulative works with --group-by lineno or filename")
    if args.limit < 0:
        raise CLIError("--limit must be 0 or more")


def short_path(filename: str, full: bool = False) -> str:
    """The last two components of a path (``package/module.py``), or all of it."""
    if full:
        return filename
    return os.sep.join(filename.split(os.sep)[-2:])


_LAUNCHERS = None


def _is_launcher(filename: str) -> bool:
    """True for the frames below a program that `heaptrace run` ran: heaptrace's
    own files and runpy."""
    global _LAUNCHERS
    if _LAUNCHERS is None:
        prefixes, files = own_locations()
        _LAUNCHERS = (prefixes, files | {runpy.__file__, "<frozen runpy>"})
    prefixes, files = _LAUNCHERS
    return filename.startswith(prefixes) or filename in files


def ordered_frames(traceback) -> list:
    """The frames of an API Traceback, most recent first.

    The frames through which `heaptrace run` started the program (heaptrace's
    own and runpy's) are cut off: they are the same under every allocation.
    """
    frames = list(reversed(list(traceback)))
    for index, frame in enumerate(frames):
        if index and _is_launcher(frame.filename):
            return frames[:index]
    return frames


def format_site(traceback, group_by: str, full: bool = False) -> list:
    """Text lines naming the site of a statistic: a file name, or ``file:line``
    followed by its indented source line, for one frame or for a whole
    traceback (most recent frame first)."""
    frames = ordered_frames(traceback)
    if group_by == "filename":
        return [short_path(frames[0].filename, full)]
    if group_by == "lineno":
        frames = frames[:1]
    lines = []
    for frame in frames:
        lines.append(f"{short_path(frame.filename, full)}:{frame.lineno}")
        source = linecache.getline(frame.filename, frame.lineno).strip()
        if source:
            lines.append(f"    {source}")
    return lines


def site_json(traceback) -> dict:
    """The most recent frame of a traceback as ``{"filename", "lineno"}``."""
    frame = ordered_frames(traceback)[0]
    return {"filename": frame.filename, "lineno": frame.lineno}


def frames_json(traceback) -> list:
    """A traceback as JSON: ``[{"filename", "lineno"}]``, most recent first."""
    return [{"filename": f.filename, "lineno": f.lineno} for f in ordered_frames(traceback)]


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


class Progress:
    """One self-overwriting status line on standard error, only on a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.active = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = False

    def update(self, text: str) -> None:
        if self.active:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def plural(count: int, word: str, words: Optional[str] = None) -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def print_entry(rank, traceback, summary, group_by, full_paths):
    """Print one ranked entry of `top` or `diff`: its site (or, grouped by
    traceback, the whole call path under the summary) and the source lines."""
    site = format_site(traceback, group_by, full_paths)
    if group_by == "traceback":
        print(f"#{rank}: {summary}")
        body = ["    " + line for line in site]
    else:
        print(f"#{rank}: {site[0]}: {summary}")
        body = site[1:]
    for line in body:
        print(line)
