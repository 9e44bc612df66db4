"""Allocation-heavy workloads, and a runner that times one of them.

Each workload is a function ``make(scale)`` that does its setup (building
input data, generating source text) and returns a callable ``run()`` doing
the measured work.  At scale 1.0 a run takes roughly 0.2-0.5 s untraced on
a typical machine.

Run as a script, this file measures one workload in one tracing mode and
prints a JSON line; ``overhead.py`` and ``callgrind.sh`` drive it:

    python3 bench/workloads.py small_objects --module heaptrace --nframe 25

The run sequence is: setup, one untraced warm-up run (so that first-call
costs such as imports, specialisation of the bytecode and the growth of
the allocator's arenas are not charged to any tracer), start tracing,
``--runs`` timed runs, stop tracing.  With ``--runs 0`` everything but the
measured work happens, which callgrind.sh uses as a baseline to subtract.
"""
import argparse
import ast
import json
import random
import sys
import time

from _common import UNTRACED, MODULES, emit, load_module


def small_objects(scale):
    """Many small objects: lists of tuples of ints, floats and strings, and
    a dict indexing them, built and dropped."""
    rounds = max(1, round(24 * scale))

    def run():
        for _ in range(rounds):
            rows = [(i, float(i), str(i)) for i in range(20_000)]
            index = {text: row for row in rows for text in (row[2],)}
            pairs = [[a, b] for a, _, b in rows]
            del rows, index, pairs

    return run


def json_roundtrip(scale):
    """JSON round trips of a nested structure of dicts, lists, strings and
    numbers."""
    rng = random.Random(1)
    data = [
        {
            "id": i,
            "name": f"record-{i}",
            "score": rng.random(),
            "tags": [f"tag{rng.randrange(50)}" for _ in range(5)],
            "children": [
                {"key": f"k{j}", "values": [rng.randrange(1000) for _ in range(8)]}
                for j in range(4)
            ],
        }
        for i in range(500)
    ]
    rounds = max(1, round(40 * scale))

    def run():
        for _ in range(rounds):
            text = json.dumps(data)
            copy = json.loads(text)
            del text, copy

    return run


def _python_source(nfunctions):
    """Return Python source text with *nfunctions* functions using a mix of
    statements and expressions, so that parsing it creates many nodes."""
    parts = []
    for i in range(nfunctions):
        parts.append(
            f"def function_{i}(a, b=1, *args, key=None, **kwargs):\n"
            f'    """Docstring of function {i}."""\n'
            f"    total = a + b * {i} - len(args)\n"
            f"    for index, item in enumerate(args):\n"
            f"        if item is None or index % 3 == 0:\n"
            f"            continue\n"
            f"        total += item ** 2 if index else -item\n"
            f"    values = [x * {i} for x in range(total) if x % 2]\n"
            f"    table = {{'name': 'f{i}', 'values': values, 'key': key}}\n"
            f"    try:\n"
            f"        result = table[key](*values, **kwargs)\n"
            f"    except (KeyError, TypeError) as error:\n"
            f"        result = str(error)\n"
            f"    return result, lambda y: y + total\n\n"
        )
    return "".join(parts)


def ast_parse(scale):
    """``ast.parse`` of a sizeable generated source text (about 550 KB at
    scale 1)."""
    source = _python_source(max(1, round(1000 * scale)))

    def run():
        tree = ast.parse(source)
        del tree

    return run


class _Node:
    """A tree node: an ordinary class instance with a few attributes."""

    def __init__(self, value, children):
        self.value = value
        self.children = children
        self.label = None


def _build_tree(depth, fanout, counter):
    counter[0] += 1
    children = [_build_tree(depth - 1, fanout, counter)
                for _ in range(fanout)] if depth else []
    return _Node(counter[0], children)


def object_trees(scale):
    """Trees of class instances (fanout 4, depth 7: about 22,000 nodes),
    built and dropped."""
    rounds = max(1, round(10 * scale))

    def run():
        for _ in range(rounds):
            tree = _build_tree(7, 4, [0])
            del tree

    return run


def _allocate_at_depth(depth, count):
    """Recurse *depth* more frames, then allocate and drop small objects."""
    if depth:
        _allocate_at_depth(depth - 1, count)
        return
    for _ in range(count):
        items = [(i, str(i)) for i in range(1000)]
        del items


def deep_stack(scale):
    """Allocations made 40 frames below the workload's entry point."""
    count = max(1, round(2000 * scale))

    def run():
        _allocate_at_depth(40, count)

    return run


#: The workloads, by name, in the order tables show them.
WORKLOADS = {
    "small_objects": small_objects,
    "json_roundtrip": json_roundtrip,
    "ast_parse": ast_parse,
    "object_trees": object_trees,
    "deep_stack": deep_stack,
}


def measure(workload, module_name, nframe, runs, scale, sampling=None):
    """Set up and time *workload* as described in the module docstring;
    return the seconds of each timed run.  *sampling* (heaptrace only) is
    the sampling interval in bytes, None for exact tracing."""
    run = WORKLOADS[workload](scale)
    run()
    module = load_module(module_name)
    if module is not None and sampling:
        module.start(nframe, sampling_interval=sampling, sampling_seed=1)
    elif module is not None:
        module.start(nframe)
    times = []
    for _ in range(runs):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    if module is not None:
        module.stop()
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--module", choices=(UNTRACED,) + MODULES,
                        default=UNTRACED, help="tracing module (default: none)")
    parser.add_argument("--nframe", type=int, default=1,
                        help="frames per traceback (default: 1)")
    parser.add_argument("--runs", type=int, default=1,
                        help="timed runs (default: 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the amount of work (default: 1.0)")
    parser.add_argument("--sampling", type=int, default=None, metavar="BYTES",
                        help="heaptrace only: sampling interval in bytes "
                        "(default: exact tracing)")
    args = parser.parse_args()
    if args.sampling is not None and args.module != "heaptrace":
        parser.error("--sampling needs --module heaptrace")
    times = measure(args.workload, args.module, args.nframe, args.runs,
                    args.scale, args.sampling)
    emit({"workload": args.workload, "module": args.module,
          "nframe": args.nframe, "times": times})


if __name__ == "__main__":
    main()
