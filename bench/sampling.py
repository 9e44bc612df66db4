"""Cost and accuracy of sampled tracing (heaptrace.start(sampling_interval=N)).

Runs the five workloads of workloads.py (those of overhead.py) untraced,
traced exactly, and sampled at 64 KiB, 512 KiB and 2 MiB, in one run, each
measurement in a fresh interpreter with the repetitions interleaved as in
overhead.py, and prints the slowdowns (minimum time over the repetitions /
untraced minimum) with a geometric-mean row.

Accuracy: each workload runs once more per mode under a profile hook that
takes a snapshot at the same point of the work every time (the middle
profile event, so that the workload's data are live); the table gives, for
the five biggest sites ('lineno') of the exact snapshot, the error of the
estimated sizes at each interval: the sum over the five sites of
|estimated - exact|, relative to their exact total, averaged over --seeds
seeds (and the worst seed).

Also measures get_tracemalloc_memory() with 1,000,000 live 32-byte blocks
exactly and at 512 KiB.

Example:
    python3 bench/sampling.py --repeat 5 --json sampling.json
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import geomean, markdown_table, run_child, save_json  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

KIB = 1024
MODES = [("untraced", None), ("exact", 0), ("64 KiB", 64 * KIB),
         ("512 KiB", 512 * KIB), ("2 MiB", 2048 * KIB)]
THIS = os.path.abspath(__file__)


# -- children --------------------------------------------------------------------

def child_time(workload, interval, runs, scale):
    run = WORKLOADS[workload](scale)
    run()
    import heaptrace
    if interval is not None:
        heaptrace.start(1, sampling_interval=interval or None)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    heaptrace.stop()
    return {"times": times}


def _profiled(run):
    """Count the profile events of one run of *run*."""
    events = [0]

    def count(frame, event, arg):
        events[0] += 1
    sys.setprofile(count)
    try:
        run()
    finally:
        sys.setprofile(None)
    return events[0]


def child_accuracy(workload, interval, seed, scale):
    import heaptrace
    run = WORKLOADS[workload](scale)
    run()
    target = _profiled(run) // 2
    events = [0]
    taken = []

    def hook(frame, event, arg):
        events[0] += 1
        if events[0] == target:
            taken.append(heaptrace.take_snapshot())
    heaptrace.start(1, sampling_interval=interval or None, sampling_seed=seed)
    sys.setprofile(hook)
    try:
        run()
    finally:
        sys.setprofile(None)
    snapshot = taken[0].filter_traces([heaptrace.Filter(False, THIS),
                                       heaptrace.Filter(False, heaptrace.__file__)])
    heaptrace.stop()
    sites = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        sites[f"{frame.filename}:{frame.lineno}"] = stat.size
    return {"sites": sites}


def child_memory(interval):
    import heaptrace
    heaptrace.start(1, sampling_interval=interval or None, sampling_seed=1)
    base = heaptrace.get_tracemalloc_memory()
    # ints above the small-int cache: one 32-byte pymalloc block each
    blocks = list(range(10**9, 10**9 + 1_000_000))
    used = heaptrace.get_tracemalloc_memory() - base
    del blocks
    heaptrace.stop()
    return {"memory": used}


# -- parent ----------------------------------------------------------------------

def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1,
                        help="timed runs per measurement (default 1)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    return parser.parse_args()


def pct(x):
    return f"{100 * x:.0f}%"


def main():
    args = parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        interval = None if rest[-1] == "none" else int(rest[-1])
        if kind == "time":
            result = child_time(rest[0], interval, args.runs, args.scale)
        elif kind == "accuracy":
            result = child_accuracy(rest[0], interval, int(rest[1]), args.scale)
        else:
            result = child_memory(interval)
        import json
        print(json.dumps(result), flush=True)
        return

    def child(*words):
        return run_child(THIS, ["--runs", args.runs, "--scale", args.scale,
                                "--child", *words])

    names = list(WORKLOADS)
    times = {w: {m: [] for m, _ in MODES} for w in names}
    for rep in range(args.repeat):
        shift = rep % len(MODES)
        order = MODES[shift:] + MODES[:shift]
        for workload in names:
            for mode, interval in order:
                print(f"[{rep + 1}/{args.repeat}] {workload}: {mode}", file=sys.stderr)
                result = child("time", workload,
                               "none" if interval is None else interval)
                times[workload][mode].extend(result["times"])
    best = {w: {m: min(t) for m, t in modes.items()} for w, modes in times.items()}
    rows = []
    for workload in names:
        base = best[workload]["untraced"]
        rows.append([workload, f"{base * 1000:.0f} ms"]
                    + [f"{best[workload][m] / base:.3f}x" for m, _ in MODES[1:]])
    rows.append(["geometric mean", ""]
                + [f"{geomean([best[w][m] / best[w]['untraced'] for w in names]):.3f}x"
                   for m, _ in MODES[1:]])
    print("\nSlowdown (minimum of %d runs / untraced minimum)\n" % args.repeat)
    print(markdown_table(["workload", "untraced"] + [m for m, _ in MODES[1:]], rows))

    accuracy = {}
    rows = []
    for workload in names:
        print(f"accuracy: {workload}", file=sys.stderr)
        exact = child("accuracy", workload, 0, 0)["sites"]
        top = sorted(exact, key=exact.get, reverse=True)[:5]
        total = sum(exact[s] for s in top)
        row = [workload, f"{total / 2**20:.2f} MiB"]
        accuracy[workload] = {"exact": {s: exact[s] for s in top}}
        for mode, interval in MODES[2:]:
            errors = []
            for seed in range(1, args.seeds + 1):
                sites = child("accuracy", workload, seed, interval)["sites"]
                # error of each site, relative to the top five's exact total
                errors.append([abs(sites.get(s, 0) - exact[s]) / total for s in top])
                accuracy[workload].setdefault(mode, []).append(
                    {s: sites.get(s, 0) for s in top})
            mean = sum(sum(e) for e in errors) / len(errors)
            worst = max(sum(e) for e in errors)
            row.append(f"{pct(mean)} (worst seed {pct(worst)})")
        rows.append(row)
    print("\nAccuracy: sum over the 5 biggest sites of |estimated - exact| size, "
          "relative to their exact total; mean over %d seeds (worst seed)\n" % args.seeds)
    print(markdown_table(["workload", "top-5 exact"] + [m for m, _ in MODES[2:]], rows))

    memory = {mode: child("memory", interval)["memory"]
              for mode, interval in (("exact", 0), ("512 KiB", 512 * KIB))}
    print("\nget_tracemalloc_memory() with 1,000,000 live 32-byte blocks: exact "
          f"{memory['exact'] / 2**20:.1f} MiB, 512 KiB {memory['512 KiB'] / 2**10:.1f} KiB "
          f"({pct(memory['512 KiB'] / memory['exact'])} of exact)")
    save_json(args.json, {"times": times, "accuracy": accuracy, "memory": memory})


if __name__ == "__main__":
    main()
