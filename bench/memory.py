"""Resident memory that tracing costs per live traced block.

In a fresh interpreter per mode, the child reads its resident set size
(RSS, from /proc/self/statm), starts tracing (or not), creates COUNT small
distinct objects that stay alive, and reads RSS again.  The cost of tracing
one block is then

    (RSS growth traced - RSS growth untraced) / COUNT

The growth is measured from before ``start()``, so whatever the tracer
sets up when it starts is charged too (spread over COUNT blocks).  The
table also shows the tracer's own account, ``get_tracemalloc_memory()``
after the allocations divided by COUNT.

Each object is made at a depth of more than 25 frames, so that nframe=25
records full tracebacks; all of them share one traceback, so the figure is
the cost of the trace itself, not of storing many distinct tracebacks.

Example:
    python3 bench/memory.py --count 1000000 --nframe 1 25
"""
import argparse
import os
import statistics
import sys

from _common import (UNTRACED, emit, load_module, markdown_table,
                     require_heaptrace, run_child, save_json)

#: Ways to make the i-th object; each makes exactly one new live block.
#: (pymalloc rounds sizes up to a multiple of 16 bytes.)
KINDS = {
    "object": lambda i: object(),                # 16-byte object and block
    "int": lambda i: i + 1_000_000,              # 28-byte object, 32-byte block
    "bytes": lambda i: i.to_bytes(4, "little"),  # 37-byte object, 48-byte block
}
#: Frames between the child's entry point and the allocations.
DEPTH = 30


def resident_bytes():
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fill(objects, make, depth):
    """Recurse *depth* frames, then set every slot of *objects* to a new
    object made by *make*."""
    if depth:
        fill(objects, make, depth - 1)
        return
    for i in range(len(objects)):
        objects[i] = make(i)


def child(module_name, nframe, count, kind):
    """Measure one mode in this process and print its figures as JSON."""
    module = load_module(module_name)
    # The list that holds the objects is made before the first reading, so
    # only the COUNT objects themselves (and the tracer) make RSS grow.
    objects = [None] * count
    before = resident_bytes()
    if module is not None:
        module.start(nframe)
    started = resident_bytes()
    fill(objects, KINDS[kind], DEPTH)
    after = resident_bytes()
    result = {"module": module_name, "nframe": nframe,
              "start_growth": started - before, "growth": after - before}
    if module is not None:
        result["tracer_memory"] = module.get_tracemalloc_memory()
        module.stop()
    emit(result)


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--count", type=int, default=1_000_000,
                        help="live objects to create (default: 1,000,000)")
    parser.add_argument("--kind", choices=KINDS, default="int",
                        help="kind of object (default: int)")
    parser.add_argument("--nframe", type=int, nargs="+", default=[1],
                        help="traceback limits to measure (default: 1)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements per mode (default: 3)")
    parser.add_argument("--json", metavar="FILE",
                        help="also save the raw figures to FILE")
    parser.add_argument("--only-stdlib", action="store_true",
                        help="measure the standard tracemalloc alone")
    parser.add_argument("--child", nargs=2, metavar=("MODULE", "NFRAME"),
                        help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.count, args.kind)
        return
    modules = require_heaptrace(args.only_stdlib)
    traced = [(module, n) for n in args.nframe for module in modules]
    modes = [(UNTRACED, 0)] + traced
    results = {mode: [] for mode in modes}
    for rep in range(args.repeat):
        for module, nframe in modes:
            print(f"[{rep + 1}/{args.repeat}] {module} nframe={nframe}",
                  file=sys.stderr)
            results[module, nframe].append(run_child(__file__, [
                "--child", module, nframe, "--count", args.count,
                "--kind", args.kind]))

    # RSS readings barely vary between runs; the median only guards
    # against the odd run disturbed by something else.
    def median(mode, key):
        return statistics.median(r[key] for r in results[mode])

    base = median((UNTRACED, 0), "growth")
    rows = []
    for mode in traced:
        rows.append([
            mode[0], mode[1],
            f"{(median(mode, 'growth') - base) / args.count:.1f}",
            f"{median(mode, 'tracer_memory') / args.count:.1f}",
            f"{median(mode, 'start_growth') / 1024:.0f}",
        ])
    print(f"Memory per live traced block: {args.count:,} live blocks "
          f"(--kind {args.kind}), which take {base / args.count:.1f} bytes "
          f"each untraced (median of {args.repeat} fresh-process runs)\n")
    print(markdown_table(
        ["module", "nframe", "RSS bytes/block",
         "get_tracemalloc_memory() bytes/block", "RSS growth at start() (KiB)"],
        rows))
    save_json(args.json, {
        "python": sys.version, "count": args.count, "kind": args.kind,
        "results": {f"{m}:{n}": r for (m, n), r in results.items()},
    })


if __name__ == "__main__":
    main()
