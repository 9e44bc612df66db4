"""How long the reference-path search takes on a heap of a million objects.

Builds a heap of about a million live objects (records: instances with a
dict, a list and a bytearray each, in a module-level index), makes a small
leak somewhere else in it, and times heaptrace's search for what keeps the
leaked objects (heaptrace.heldby.search, the C walk in refpath.c) and the
pass that pairs owned blocks with their owners (_core._owned_blocks).  There
is no standard-library equivalent to compare with: the by-hand way is
gc.get_referrers, timed here for one step of one object for scale.

    python bench/refpath.py [--objects N] [--repeat R]
"""
import argparse
import gc
import sys
import time

import heaptrace
from heaptrace import _core, heldby

INDEX = {}
LEAKED = []


class Record:
    def __init__(self, n):
        self.n = n
        self.tags = [n, -n]
        self.blob = bytearray(16)


def build(objects):
    # Each record is about 5 objects: the instance, its tags list, two ints
    # (most beyond the small-int cache) and the bytearray.
    for n in range(objects // 5):
        INDEX[n] = Record(n + 1000)


def leak(count):
    for n in range(count):
        LEAKED.append({"leaked": bytearray(64)})   # the site searched for


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"heaptrace from {heaptrace.__file__}", file=sys.stderr)
    heaptrace.start(10)
    build(args.objects)
    leak(100)
    line = leak.__code__.co_firstlineno + 2
    sites = {((__file__, line),): 0}
    # The trimmed keys find_leaks would pass: the allocation line, then the
    # callers below it in this file.
    snapshot = heaptrace.take_snapshot()
    for stat in snapshot.statistics("traceback"):
        frames = tuple((f.filename, f.lineno) for f in reversed(stat.traceback))
        if frames[0] == (__file__, line):
            sites[frames] = 0
    del snapshot
    gc.collect()
    live = len(gc.get_objects())
    times, owned_times = [], []
    found = None
    for _ in range(args.repeat):
        t = time.perf_counter()
        found = heldby.search(_core, sites, 1, own=lambda f: f.startswith(heaptrace.__path__[0]),
                              seconds=60.0)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        _core._owned_blocks(15, 60.0, heldby.MAX_BYTES)
        owned_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    gc.get_referrers(LEAKED[0])
    referrers = time.perf_counter() - t
    result = _core._held_by(sites, 1, [], (), 60.0, heldby.MAX_BYTES, 64)
    heaptrace.stop()
    print(f"| GC-tracked objects | {live:,} |")
    print(f"| objects in the graph (with untracked referents) | {result['nodes']:,} |")
    print(f"| references in the graph | {result['edges']:,} |")
    print(f"| search, best of {args.repeat} | {min(times):.2f} s |")
    print(f"| owned-block pass, best of {args.repeat} | {min(owned_times):.2f} s |")
    print(f"| one gc.get_referrers() call, for scale | {referrers:.2f} s |")
    print(f"| path found | {' -> '.join(found.paths[0]) if found.paths[0] else None} |")


if __name__ == "__main__":
    main()
