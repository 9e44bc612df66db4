"""Helpers shared by the benchmark scripts in this directory.

Every benchmark compares heaptrace with the standard ``tracemalloc`` module
in the same run, and runs each measurement in a fresh interpreter so that
the state one tracer leaves behind (allocator arenas, hooks, caches) cannot
bias the next.  This module holds what those scripts have in common: the
names of the tracing modes, loading the module that a mode stands for,
running a child interpreter and reading its result, and printing Markdown.
"""
import importlib
import json
import math
import subprocess
import sys

#: The value of a mode that traces nothing.
UNTRACED = "none"
#: The two tracing modules that are compared.
MODULES = ("tracemalloc", "heaptrace")


def load_module(name):
    """Return the tracing module called *name* ("tracemalloc" or
    "heaptrace"), or None for the untraced mode."""
    if name == UNTRACED:
        return None
    return importlib.import_module(name)


def require_heaptrace(only_stdlib):
    """Check, before any measurement starts, that heaptrace can be imported.

    Returns the tracing modules to measure: only the standard one when
    *only_stdlib* is true, both otherwise.  Exits with status 2 and a clear
    message when heaptrace is wanted but cannot be imported.
    """
    if only_stdlib:
        return ("tracemalloc",)
    try:
        import heaptrace
    except ImportError as exc:
        sys.exit(
            f"error: cannot import heaptrace ({exc}).\n"
            "Run with a Python where it is installed (for example "
            "/tmp/benchvenv/bin/python after 'pip install /work/main'), or "
            "pass --only-stdlib to measure the standard tracemalloc alone."
        )
    print(f"heaptrace: {heaptrace.__file__}", file=sys.stderr)
    return MODULES


def run_child(script, args):
    """Run ``script`` with *args* in a fresh interpreter (the one running
    this process) and return the JSON object it prints last on stdout.

    The child's stderr passes through, so its progress messages and any
    traceback are visible.  A failing child ends the benchmark.
    """
    proc = subprocess.run(
        [sys.executable, script, *map(str, args)],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"error: child {script} {' '.join(map(str, args))} "
                 f"failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result):
    """Print a child's result as the single JSON line run_child reads."""
    print(json.dumps(result), flush=True)


def geomean(values):
    """Geometric mean of positive numbers."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def markdown_table(headers, rows):
    """Return a Markdown table; cells are converted with str() and the
    columns are padded so the text lines up in a terminal too."""
    cells = [list(map(str, headers))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), separator] + [line(r) for r in cells[1:]])


def save_json(path, data):
    """Write raw benchmark numbers to *path* (nothing when path is None)."""
    if path is None:
        return
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"raw numbers written to {path}", file=sys.stderr)
