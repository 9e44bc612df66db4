"""Export a snapshot for other tools: pprof or folded stacks.

Examples:
  heaptrace export --format pprof SNAPSHOT -o heap.pb.gz
  go tool pprof -top -lines heap.pb.gz
  heaptrace export --format collapsed SNAPSHOT -o heap.folded
  flamegraph.pl heap.folded > heap.svg

pprof (gzipped profile.proto) is read by go tool pprof, Grafana Pyroscope,
Parca and Google Cloud Profiler: one sample per traceback with the sample
types inuse_space (bytes) and inuse_objects (count).  A sampled snapshot
(run --sample) gives estimates of all the blocks, and its pprof profile
carries the sampling interval as its period.  Folded stacks
(`frame;frame;frame bytes`, outermost call first) feed flamegraph.pl,
inferno and speedscope.  Functions are named from the current source files.
Filters work as in `heaptrace top`.
"""

from __future__ import annotations

import sys

from .. import reports
from ..reports.model import profile_of
from ._common import (CLIError, Progress, add_filter_arguments, filter_snapshot,
                      load_snapshot, one_line, ordered_frames, print_json)

EXPORT_FORMATS = ("pprof", "collapsed")


def add_arguments(parser) -> None:
    parser.add_argument("snapshot", metavar="SNAPSHOT", help="a snapshot file")
    parser.add_argument("-f", "--format", choices=EXPORT_FORMATS, default="pprof",
                        help="pprof (default) or collapsed (folded stacks)")
    parser.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="the file to write (default: standard output)")
    parser.add_argument("--json", action="store_true",
                        help="print what was written as JSON (see docs/json.md)")
    add_filter_arguments(parser)


def write_output(format_name: str, data, output: str) -> None:
    """Write a rendered report to *output* ("-": standard output); any failure
    is a CLIError."""
    module = reports.formatter(format_name)
    try:
        rendered = module.render(data)
    except reports.Unsupported as error:
        raise CLIError(str(error)) from None
    if output == "-":
        if module.BINARY:
            if sys.stdout.isatty():
                raise CLIError(f"{format_name} output is binary; give -o FILE "
                               "or redirect standard output")
            sys.stdout.flush()
            sys.stdout.buffer.write(rendered)
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(rendered)
        return
    try:
        if module.BINARY:
            with open(output, "wb") as stream:
                stream.write(rendered)
        else:
            with open(output, "w", encoding="utf-8") as stream:
                stream.write(rendered)
    except OSError as error:
        raise CLIError(f"{output}: cannot write the file ({one_line(error)})") from None


def execute(args) -> int:
    progress = Progress()
    try:
        snapshot = load_snapshot(args.snapshot, progress)
        progress.update(f"heaptrace: grouping the blocks of {args.snapshot}")
        profile = profile_of(filter_snapshot(snapshot, args), args.snapshot, ordered_frames,
                             getattr(snapshot, "timestamp", None))
    finally:
        progress.clear()
    if args.json and args.output == "-":
        raise CLIError("--json prints a summary: give the export a file with -o FILE")
    write_output(args.format, profile, args.output)
    if args.json:
        print_json({"snapshot": args.snapshot, "format": args.format, "output": args.output,
                    "timestamp": profile.timestamp,
                    "sampling_interval": profile.sampling_interval,
                    "stacks": len(profile.stacks),
                    "total": {"size": profile.total_size, "count": profile.total_count}})
    return 0
