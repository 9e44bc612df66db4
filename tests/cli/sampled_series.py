"""Synthetic series of sampled snapshots (no tracing involved), as
`heaptrace run --sample` would write them: each block is recorded with the
probability the engine uses, 1 - exp(-size / interval), when it is
allocated, and stays recorded (or not) while it lives."""

import math
import random

import heaptrace

KIB = 1024
MIB = 1024 * KIB
INTERVAL = 512 * KIB
START = 1_790_000_000.0

LEAK = ("/srv/app/leaky.py", 10)      # 1 MiB a minute, on top of 5 MiB held
CACHE = ("/srv/app/cache.py", 20)     # 20 MiB, a tenth replaced every minute
CHURN = ("/srv/app/buffers.py", 30)   # 20 MiB, all replaced every minute


class Site:
    def __init__(self, where, rng):
        self.where = where
        self.rng = rng
        self.live = []      # [size, recorded]

    def alloc(self, size, count):
        p = -math.expm1(-size / INTERVAL)
        self.live.extend([size, self.rng.random() < p] for _ in range(count))

    def free_some(self, count):
        self.rng.shuffle(self.live)
        del self.live[:count]

    def traces(self):
        return [(0, size, (self.where,), 1) for size, recorded in self.live if recorded]


def write_series(folder, seed, minutes=20, pid=4242):
    """Write *minutes* snapshots, one a minute; return their paths."""
    rng = random.Random(seed)
    leak, cache, churn = Site(LEAK, rng), Site(CACHE, rng), Site(CHURN, rng)
    leak.alloc(4 * KIB, 1280)
    cache.alloc(4 * KIB, 5120)
    paths = []
    for minute in range(minutes):
        leak.alloc(KIB, 1024)
        cache.free_some(512)
        cache.alloc(4 * KIB, 512)
        churn.live = []
        churn.alloc(4 * KIB, 5120)
        snapshot = heaptrace.Snapshot(leak.traces() + cache.traces() + churn.traces(), 1,
                                      sampling_interval=INTERVAL)
        snapshot.timestamp = START + 60 * minute
        path = folder / f"heaptrace-{pid}-{minute + 1:06d}.snap"
        snapshot.dump(str(path))
        paths.append(path)
    return paths
