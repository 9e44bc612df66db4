"""Cost of taking and analysing snapshots with many traces.

A child interpreter per module starts tracing (nframe=10 by default) and
builds about TRACES live traced blocks from a few thousand distinct call
paths: generated functions, compiled with exec() into six fake source files
("gen/level0.py" .. "gen/level5.py"), call one another along random paths
and each allocates small ints on its own line.  With the few frames of the
driver below them, the deepest tracebacks are longer than 10 frames and get
truncated.  The child then times:

    take_snapshot             tracemalloc.take_snapshot()
    statistics_lineno         snapshot.statistics("lineno")
    statistics_traceback      snapshot.statistics("traceback")
    statistics_cumulative     snapshot.statistics("lineno", cumulative=True)
    compare_to                later.compare_to(snapshot, "lineno"), where
                              the later snapshot is taken after freeing a
                              fifth of the blocks and allocating new ones
    filter_traces             snapshot.filter_traces([Filter(True, pattern),
                              Filter(False, "<unknown>")]), the pattern
                              keeping half of the fake files
    dump                      snapshot.dump(file), and the file's size
    load                      Snapshot.load(file)

Each operation is timed once: at full size the standard module needs
seconds for most of them, and running one again could measure a cache
rather than the operation.

Tracing is stopped once both snapshots are taken, so the analysis is
measured alone.  With --keep-tracing it stays active, as in a program that
inspects itself: every allocation the analysis makes is then traced too,
which multiplies the standard module's times (statistics_cumulative takes
it about ten minutes at 1.2 million traces).

Example:
    python3 bench/snapshot_ops.py --traces 1200000 --json snapshot_ops.json
"""
import argparse
import os
import random
import sys
import tempfile
import time

from _common import (MODULES, emit, load_module, markdown_table,
                     require_heaptrace, run_child, save_json)

#: Levels of generated functions, one fake source file each.
LEVELS = 6
#: Generated functions per level.
WIDTH = 16
#: Distinct call paths through the levels.
PATHS = 3000
#: Matches the first three of the six fake files.
INCLUDE_PATTERN = "gen/level[0-2].py"

OPERATIONS = (
    "take_snapshot",
    "statistics_lineno",
    "statistics_traceback",
    "statistics_cumulative",
    "compare_to",
    "filter_traces",
    "dump",
    "load",
)


def generate_levels():
    """Compile the generated functions; return the entry level's functions.

    Function j of level l keeps a list of new ints allocated on a line of
    its own, then calls function path[0] of the next level with the rest of
    the path.
    """
    following = []
    for level in reversed(range(LEVELS)):
        source = "".join(
            f"def f{j}(path, count, out):\n"
            f"    out.append([k + {1_000_000 + j} for k in range(count)])\n"
            f"    if path:\n"
            f"        NEXT[path[0]](path[1:], count, out)\n\n"
            for j in range(WIDTH))
        namespace = {"NEXT": following}
        exec(compile(source, f"gen/level{level}.py", "exec"), namespace)
        following = [namespace[f"f{j}"] for j in range(WIDTH)]
    return following


def allocate(entry, paths, count, out):
    """Call the generated functions along each path; each call appends one
    list of *count* new ints to *out*."""
    for path in paths:
        entry[path[0]](path[1:], count, out)


class Bench:
    """The state one child works on: the live blocks, the snapshots and
    the dump file, with a method per timed operation."""

    def __init__(self, module, traces, workdir):
        self.module = module
        self.entry = generate_levels()
        # Every path makes LEVELS lists of `count` ints, each list being two
        # blocks (the object and its array of items): at least 3 blocks.
        npaths = max(1, min(PATHS, traces // (3 * LEVELS)))
        self.count = max(1, traces // (npaths * LEVELS) - 2)
        rng = random.Random(42)
        self.paths = [tuple(rng.randrange(WIDTH) for _ in range(LEVELS))
                      for _ in range(npaths)]
        self.live = []
        self.snapshot = None
        self.later = None
        self.path = os.path.join(workdir, "snapshot.dump")
        self.file_size = None

    def build(self):
        allocate(self.entry, self.paths, self.count, self.live)

    def take_snapshot(self):
        self.snapshot = self.module.take_snapshot()

    def statistics_lineno(self):
        self.snapshot.statistics("lineno")

    def statistics_traceback(self):
        self.snapshot.statistics("traceback")

    def statistics_cumulative(self):
        self.snapshot.statistics("lineno", cumulative=True)

    def take_later_snapshot(self):
        """Free a fifth of the lists, allocate as many again along a tenth
        of the paths, and take the snapshot compare_to compares with."""
        del self.live[::5]
        allocate(self.entry, self.paths[::10], self.count * 2, self.live)
        self.later = self.module.take_snapshot()

    def compare_to(self):
        self.later.compare_to(self.snapshot, "lineno")

    def filter_traces(self):
        Filter = self.module.Filter
        self.snapshot.filter_traces([Filter(True, INCLUDE_PATTERN),
                                     Filter(False, "<unknown>")])

    def dump(self):
        self.snapshot.dump(self.path)
        self.file_size = os.path.getsize(self.path)

    def load(self):
        self.module.Snapshot.load(self.path)


def seconds_text(seconds):
    """Seconds to three significant digits (these span five decades)."""
    return f"{seconds:.0f}" if seconds >= 100 else f"{seconds:#.3g}"


def ratio_text(ratio):
    """A ratio such as a speedup, with one decimal below 100."""
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def timed(label, func):
    """Call func(); report and return the seconds it took."""
    begin = time.perf_counter()
    func()
    seconds = time.perf_counter() - begin
    print(f"  {label}: {seconds:.3f} s", file=sys.stderr, flush=True)
    return seconds


def child(module_name, nframe, traces, ops, keep_tracing):
    """Build the traces, time *ops* in order, and print the results."""
    module = load_module(module_name)
    with tempfile.TemporaryDirectory() as workdir:
        bench = Bench(module, traces, workdir)
        module.start(nframe)
        seconds = {"build": timed("build", bench.build)}
        seconds["take_snapshot"] = timed("take_snapshot", bench.take_snapshot)
        ntraces = len(bench.snapshot.traces)
        print(f"  ({ntraces:,} traces)", file=sys.stderr)
        if "compare_to" in ops:
            bench.take_later_snapshot()
        if not keep_tracing:
            module.stop()
        for op in ops:
            if op == "take_snapshot":
                continue
            if op == "load" and bench.file_size is None:
                bench.dump()    # the file to load, when dump is not timed
            seconds[op] = timed(op, getattr(bench, op))
        if keep_tracing:
            module.stop()
    emit({"module": module_name, "ntraces": ntraces, "seconds": seconds,
          "file_size": bench.file_size})


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--traces", type=int, default=1_200_000,
                        help="live traces to build (default: 1,200,000)")
    parser.add_argument("--nframe", type=int, default=10,
                        help="traceback limit (default: 10)")
    parser.add_argument("--ops", nargs="+", choices=OPERATIONS,
                        default=list(OPERATIONS), metavar="OP",
                        help=f"operations to time (default: all of "
                        f"{', '.join(OPERATIONS)})")
    parser.add_argument("--keep-tracing", action="store_true",
                        help="keep tracing during the analysis operations")
    parser.add_argument("--json", metavar="FILE",
                        help="also save the raw figures to FILE")
    parser.add_argument("--only-stdlib", action="store_true",
                        help="measure the standard tracemalloc alone")
    parser.add_argument("--child", choices=MODULES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Run in the documented order whatever order they were given in.
    args.ops = [op for op in OPERATIONS if op in args.ops]
    return args


def main():
    args = parse_args()
    if args.child:
        child(args.child, args.nframe, args.traces, args.ops,
              args.keep_tracing)
        return
    modules = require_heaptrace(args.only_stdlib)
    results = {}
    for module in modules:
        print(f"{module}:", file=sys.stderr)
        results[module] = run_child(__file__, [
            "--child", module, "--traces", args.traces, "--nframe",
            args.nframe, "--ops", *args.ops,
            *(["--keep-tracing"] if args.keep_tracing else [])])

    headers = ["operation"] + [f"{m} (s)" for m in modules]
    if len(modules) == 2:
        headers.append("speedup")
    rows = []
    for op in ["build"] + args.ops:
        row = [op] + [seconds_text(results[m]["seconds"][op])
                      for m in modules]
        if len(modules) == 2:
            std, ours = (results[m]["seconds"][op] for m in modules)
            row.append(ratio_text(std / ours))
        rows.append(row)
    if "dump" in args.ops:
        sizes = [results[m]["file_size"] for m in modules]
        row = ["dump file size (MB)"] + [f"{s / 1e6:.1f}" for s in sizes]
        if len(modules) == 2:
            ratio = sizes[0] / sizes[1]
            row.append(f"{ratio_text(ratio)} smaller" if ratio >= 1
                       else f"{ratio_text(1 / ratio)} larger")
        rows.append(row)
    counts = ", ".join(f"{m} {results[m]['ntraces']:,}" for m in modules)
    tracing = "active" if args.keep_tracing else "stopped"
    print(f"Snapshot operations, nframe={args.nframe}, live traces: "
          f"{counts}; tracing {tracing} during the analysis\n")
    print(markdown_table(headers, rows))
    save_json(args.json, {"python": sys.version, "traces": args.traces,
                          "nframe": args.nframe,
                          "keep_tracing": args.keep_tracing,
                          "results": results})


if __name__ == "__main__":
    main()
