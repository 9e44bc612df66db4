"""Made-up snapshots of a chosen shape, for the report tests."""

import random

import heaptrace


def wide_snapshot(path, tracebacks=100_000, seed=7):
    """A snapshot of *tracebacks* distinct tracebacks, 6 to 14 frames deep,
    in call trees that share their outer frames as real programs do."""
    rng = random.Random(seed)
    files = [f"/srv/app/pkg{i % 17}/module{i}.py" for i in range(300)]
    seen = set()
    traces = []
    while len(seen) < tracebacks:
        depth = rng.randint(6, 14)
        frames = []
        for level in range(depth):
            # Few choices near the root, many near the leaves.
            width = min(2 + level * level * 3, 299)
            index = rng.randrange(width)
            frames.append((files[(index * 7 + level) % 300], 10 + index % 500))
        key = tuple(reversed(frames))           # most recent first
        if key in seen:
            continue
        seen.add(key)
        traces.append((0, rng.randint(16, 4096), key, depth))
    snapshot = heaptrace.Snapshot(traces, 16)
    snapshot.dump(path)
    return sum(t[1] for t in traces)
