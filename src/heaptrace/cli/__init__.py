"""The ``heaptrace`` command: run, top, diff, trend, leaks, report, export.

Each subcommand lives in its own module, which provides ``add_arguments``
and ``execute`` and whose docstring is its help text; it may also provide
``USAGE`` (the usage line) and ``split_argv`` (to keep the arguments of a
program it runs away from argparse).  Every failure the
user must hear about is raised as :class:`CLIError` and printed as one line;
its exit code is 2 for a problem with what was asked (a missing file, a
file that is not a snapshot, a target that does not exist) and 1 when the
user's own code failed.  See docs/cli.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from ._common import CLIError

__all__ = ["main", "CLIError", "COMMANDS"]

#: Subcommands, in the order of the help.
COMMANDS = ("run", "top", "diff", "trend", "leaks", "report", "export")


def _modules() -> dict:
    return {name: importlib.import_module(f"{__name__}.{name}") for name in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heaptrace",
        description="Trace Python memory allocations and hunt leaks.",
        epilog="Run 'heaptrace COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"heaptrace {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _modules().items():
        summary = module.__doc__.strip().splitlines()[0]
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  usage=getattr(module, "USAGE", None),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(execute=module.execute)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # A command that runs a program (run) leaves the program's arguments
    # alone: they are split off before argparse sees them.
    split = getattr(_modules().get(argv[0]) if argv else None, "split_argv", None)
    try:
        if split is not None:
            own, program = split(argv[1:])
            args = parser.parse_args([argv[0], *own])
            args.program = program
        else:
            args = parser.parse_args(argv)
        return args.execute(args)
    except CLIError as error:
        print(f"heaptrace: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("heaptrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (head, less) went away: not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def _version() -> str:
    import heaptrace

    return getattr(heaptrace, "__version__", "unknown")
