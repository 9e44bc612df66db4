"""Slowdown of native tracing, beside heaptrace's exact mode and memray.

Modes, each run in a fresh interpreter with interleaved repetitions (as in
overhead.py): untraced; ``heaptrace.start(1)`` (exact: Python's allocators
only); ``heaptrace.start(1, native=True)``; ``heaptrace.start(1,
native=True, native_frames=True)`` (each native block's C call path too);
memray's ``Tracker`` writing to
a file in /tmp, without and with ``native_traces=True`` (its native mode).

Workloads:
  numpy_arrays  many medium NumPy arrays made and dropped (data from malloc,
                reported with PyTraceMalloc_Track);
  c_library     a C library (compiled here) doing malloc/free, called
                through ctypes without the GIL: 2,000 calls of 100 pairs;
  plus the pure-Python workloads of workloads.py.

Prints a Markdown table of slowdowns (traced / untraced, fastest of the
repetitions) with a geometric-mean row per group.

    python3 bench/native.py --repeat 3
"""
import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import geomean, markdown_table  # noqa: E402

MODES = ["untraced", "heaptrace", "heaptrace-native", "heaptrace-native-frames",
         "memray", "memray-native"]
NATIVE_WORKLOADS = ["numpy_arrays", "c_library"]

CLIB_C = r"""
#include <stdlib.h>
#include <string.h>
long churn(int pairs, size_t size) {
    void *live[8] = {0};
    long sum = 0;
    for (int i = 0; i < pairs; i++) {
        int k = i & 7;
        free(live[k]);
        live[k] = malloc(size + (size_t)(i & 63));
        memset(live[k], 1, 16);
        sum += ((char *)live[k])[0];
    }
    for (int k = 0; k < 8; k++) free(live[k]);
    return sum;
}
"""


def build_clib(folder):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        sys.exit("a C compiler is needed for the c_library workload")
    src = os.path.join(folder, "churn.c")
    with open(src, "w") as f:
        f.write(CLIB_C)
    out = os.path.join(folder, "libchurn.so")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", out, src], check=True)
    return out


def make_workload(name, scale, clib):
    if name == "numpy_arrays":
        import numpy as np

        rounds = max(1, round(3000 * scale))

        def run():
            for i in range(rounds):
                a = np.ones(5000 + (i & 255))
                b = a * 2.0
                c = np.concatenate([a, b])
                del a, b, c
        return run
    if name == "c_library":
        lib = ctypes.CDLL(clib)
        lib.churn.argtypes = [ctypes.c_int, ctypes.c_size_t]
        lib.churn.restype = ctypes.c_long
        calls = max(1, round(2000 * scale))

        def run():
            for i in range(calls):
                lib.churn(100, 64 + (i & 1023))
        return run
    from workloads import WORKLOADS
    return WORKLOADS[name](scale)


def child(args):
    run = make_workload(args.workload, args.scale, args.clib)
    run()       # warm-up, untraced
    times = []
    out = None
    if args.mode.startswith("heaptrace"):
        import heaptrace
        heaptrace.start(1, native=args.mode.startswith("heaptrace-native"),
                        native_frames=args.mode == "heaptrace-native-frames")
    elif args.mode.startswith("memray"):
        import memray
        out = os.path.join(tempfile.mkdtemp(), "memray.bin")
        tracker = memray.Tracker(out, native_traces=args.mode == "memray-native")
        tracker.__enter__()
    for _ in range(args.runs):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    if args.mode.startswith("heaptrace"):
        heaptrace.stop()
    elif out is not None:
        tracker.__exit__(None, None, None)
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    print(json.dumps({"times": times}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workloads", nargs="+", default=None)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--json", metavar="FILE")
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--clib", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from workloads import WORKLOADS
    workloads = args.workloads or NATIVE_WORKLOADS + list(WORKLOADS)
    folder = tempfile.mkdtemp()
    clib = build_clib(folder)
    times = {w: {m: [] for m in args.modes} for w in workloads}
    for rep in range(args.repeat):
        modes = args.modes[rep % len(args.modes):] + args.modes[:rep % len(args.modes)]
        for w in workloads:
            for m in modes:
                print(f"[{rep + 1}/{args.repeat}] {w}: {m}", file=sys.stderr)
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", "--workload", w, "--mode", m,
                     "--clib", clib, "--scale", str(args.scale)],
                    stdout=subprocess.PIPE, text=True)
                if proc.returncode != 0:
                    sys.exit(f"child {w} {m} failed ({proc.returncode})")
                times[w][m].extend(json.loads(proc.stdout.strip().splitlines()[-1])["times"])
    shutil.rmtree(folder, ignore_errors=True)
    traced = [m for m in args.modes if m != "untraced"]
    rows = []
    groups = {"native": [], "python": []}
    for w in workloads:
        base = min(times[w]["untraced"])
        ratios = {m: min(times[w][m]) / base for m in traced}
        groups["native" if w in NATIVE_WORKLOADS else "python"].append(ratios)
        rows.append([w, f"{base * 1000:.0f} ms"] + [f"{ratios[m]:.2f}x" for m in traced])
    for name, group in groups.items():
        if group:
            rows.append([f"geometric mean ({name})", ""]
                        + [f"{geomean([g[m] for g in group]):.2f}x" for m in traced])
    print(markdown_table(["workload", "untraced"] + traced, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(times, f)


if __name__ == "__main__":
    main()
