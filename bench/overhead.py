"""Slowdown of allocation-heavy workloads under tracemalloc and heaptrace.

For each workload of workloads.py, measures the untraced time and the time
with ``tracemalloc.start(N)`` and ``heaptrace.start(N)`` for each requested
N, and prints a Markdown table of the slowdowns (traced time / untraced
time) with a geometric-mean row.

Every (mode, workload) measurement runs in a fresh interpreter, so that
allocator state cannot leak from one mode into the next.  Repetitions are
interleaved: each repetition measures every mode once, in an order rotated
from one repetition to the next, so that a slow period of this shared
machine hits all modes alike instead of one mode's whole series.

Example:
    python3 bench/overhead.py --repeat 5 --nframe 1 25 --json overhead.json
"""
import argparse
import os
import sys

from _common import (UNTRACED, geomean, markdown_table, require_heaptrace,
                     run_child, save_json)
from workloads import WORKLOADS

WORKLOAD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "workloads.py")


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--repeat", type=int, default=5,
                        help="measurements per (mode, workload) (default: 5)")
    parser.add_argument("--nframe", type=int, nargs="+", default=[1, 25],
                        help="traceback limits to measure (default: 1 25)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS,
                        default=list(WORKLOADS), metavar="NAME",
                        help="workloads to run (default: all of "
                        f"{', '.join(WORKLOADS)})")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply each workload's work (default: 1.0)")
    parser.add_argument("--json", metavar="FILE",
                        help="also save the raw times to FILE")
    parser.add_argument("--only-stdlib", action="store_true",
                        help="measure the standard tracemalloc alone")
    return parser.parse_args()


def measure_all(args, modes):
    """Return {workload: {mode: [seconds, ...]}} for every mode, where a
    mode is a (module name, nframe) pair."""
    times = {w: {mode: [] for mode in modes} for w in args.workloads}
    for rep in range(args.repeat):
        shift = rep % len(modes)
        order = modes[shift:] + modes[:shift]
        for workload in args.workloads:
            for module, nframe in order:
                print(f"[{rep + 1}/{args.repeat}] {workload}: {module} "
                      f"nframe={nframe}", file=sys.stderr)
                result = run_child(WORKLOAD_SCRIPT, [
                    workload, "--module", module, "--nframe", nframe,
                    "--scale", args.scale])
                times[workload][module, nframe].extend(result["times"])
    return times


def main():
    args = parse_args()
    modules = require_heaptrace(args.only_stdlib)
    traced = [(module, n) for n in args.nframe for module in modules]
    modes = [(UNTRACED, 0)] + traced
    times = measure_all(args, modes)

    # The table uses the minimum of the repetitions.  On a shared machine
    # the disturbances (other processes taking the CPU, evicting the caches,
    # frequency changes) only ever add time, so the fastest run is the
    # closest to the cost of the work itself, and it is much steadier from
    # one invocation to the next than the median of a handful of runs.
    best = {w: {mode: min(t) for mode, t in by_mode.items()}
            for w, by_mode in times.items()}
    headers = ["workload", "untraced (s)"] + [
        f"{module} N={n}" for module, n in traced]
    rows = []
    slowdowns = {mode: [] for mode in traced}
    for workload in args.workloads:
        base = best[workload][UNTRACED, 0]
        row = [workload, f"{base:.3f}"]
        for mode in traced:
            ratio = best[workload][mode] / base
            slowdowns[mode].append(ratio)
            row.append(f"{ratio:.2f}x")
        rows.append(row)
    rows.append(["geometric mean", ""] + [
        f"{geomean(slowdowns[mode]):.2f}x" for mode in traced])

    print(f"Slowdown against untraced runs (minimum of {args.repeat} "
          "fresh-process runs each)\n")
    print(markdown_table(headers, rows))
    save_json(args.json, {
        "python": sys.version,
        "repeat": args.repeat,
        "scale": args.scale,
        "times": {w: {f"{module}:{n}": t for (module, n), t in by_mode.items()}
                  for w, by_mode in times.items()},
    })


if __name__ == "__main__":
    main()
