"""Tell a leak from a plateau or from noise in a series of sizes.

Both :func:`heaptrace.find_leaks` (sizes after each batch of calls) and
``heaptrace trend`` (sizes in snapshots written over time) ask the same
question about one allocation site: given how many bytes the site held at a
series of moments, does it keep growing?

The idea
--------
A snapshot shows what is live at one moment.  Memory that a site allocates
and later gives back (buffers, garbage, per-request work) comes and goes;
memory it keeps is never given back.  Two views of the series separate them:

* The *retained floor*: ``floor[i] = min(y[i:])``, the lowest the site goes
  from moment ``i`` on.  It ignores everything the site gives back later and
  never decreases.  A leak's floor keeps rising; a sawtooth buffer's floor
  stays at the bottom of its teeth; a cache's floor rises, then stops.
* The *rises and drops* of the raw series.  A leak gives back little of what
  it takes.  A buffer that is emptied now and then gives back about as much
  as it takes, even when the sampling happens to catch it on the way up.

A site is classified as a leak when its floor rose in several intervals and
was still rising in the second half of the series (a cache that filled and
stopped is a *plateau*, a one-time allocation a *step*).  A site that gave
back more than half of what it took is a *sawtooth*, unless its floor rose
in nearly every interval: then it leaks, with transient memory on top.  Growth is
measured on the floor with a robust slope (Theil-Sen), so that one odd
moment cannot make or hide a leak.  A block that is reallocated larger counts
like any other growth: only bytes are looked at, not blocks.

The confidence of a leak grows with the share of intervals in which it grew,
how well a straight line fits its floor, how much of the growth happened in
the second half, and how little it gave back; it is reduced for short series.
A sawtooth sampled in step with its period can pass for growth; callers that
choose when to sample (find_leaks) vary the spacing to avoid that.

Sampled snapshots
-----------------
With sampled tracing (``start(sampling_interval=N)``) each size is an
estimate: a recorded block of ``s`` bytes stands for ``s / p`` bytes, where
``p = 1 - exp(-s/N)`` is its chance of being recorded, so its part of the
estimate is 0 or ``s / p`` and has variance ``s*s * (1 - p) / p``.  Blocks
are sampled independently (disjoint stretches of a Poisson process), so
summing ``s*s * (1 - p) / (p*p)`` over a site's recorded blocks
(:func:`sample_variance`) estimates the variance of its size without bias;
for small blocks it is about ``size * N``.  Given those standard deviations
(``noise=``), :func:`classify` allows for them:

* a drop no larger than twice its noise is not counted as memory given
  back, so a leak measured with noise is not taken for a sawtooth;
* a leak's growth must stand out of the noise: the rise of the
  least-squares line over the series must be at least ``NOISE_Z`` times its
  standard deviation (otherwise the site is noise).  The estimates at two moments share the blocks that lived
  through both, so they are positively correlated (never negatively); the
  deviation used is the bound that holds for any such correlation
  (:func:`_rise_noise`), so a flat series is not called a leak whether its
  memory turns over quickly (independent noise) or slowly (drifting noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "LEAK",
    "PLATEAU",
    "NOISE",
    "Trend",
    "classify",
    "retained_floor",
    "robust_slope",
    "sample_variance",
]

#: Kinds of :class:`Trend`.
LEAK = "leak"
PLATEAU = "plateau"
NOISE = "noise"

# A series is a leak only if it grew in at least this many intervals: one or
# two steps are one-time allocations (a lazy import, a table that resized).
MIN_RISES = 3
# ... and if its second half holds at least this share of its growth.
MIN_LATE_SHARE = 0.25
# A series that gave back more than this share of what it took is a sawtooth
# (memory that comes and goes) ...
MAX_GIVEBACK = 0.5
# ... unless its retained floor rose in at least this share of the intervals:
# then it leaks, with transient memory on top (requests in flight).
STEADY_SHARE = 0.75
# Series shorter than this (in intervals) get a reduced confidence.
FULL_CONFIDENCE_INTERVALS = 8
# Beyond this many points the slope uses half-lag pairs, O(n), not all pairs.
ALL_PAIRS_LIMIT = 64
# Sampled series: the rise must be at least this many standard deviations of
# its noise ...
NOISE_Z = 2.5
# ... and a drop of up to this many standard deviations is noise, not memory
# given back.
DROP_Z = 2.0


@dataclass(frozen=True)
class Trend:
    """How one series behaved.

    ``kind`` is :data:`LEAK`, :data:`PLATEAU` or :data:`NOISE`; ``shape``
    says more: ``"growing"`` (leak), ``"plateau"`` (grew, then stopped),
    ``"step"`` (grew at one or two moments only), ``"sawtooth"`` (gave back
    most of what it took), ``"flat"`` (changed by less than the threshold).
    """

    kind: str
    shape: str
    #: Growth of the retained floor per unit of x (0.0 unless a leak).
    slope: float
    #: How much the retained floor rose over the whole series.
    growth: int
    #: First and last value, and the largest one.
    first: int
    last: int
    peak: int
    #: Number of intervals in which the retained floor rose.
    rises: int
    #: How sure the series is a leak, 0.0 to 1.0 (0.0 unless a leak).
    confidence: float
    #: One phrase that explains the classification.
    reason: str


def sample_variance(size: int, interval: int) -> float:
    """What one recorded block of *size* bytes, sampled every *interval*
    bytes, adds to the estimated variance of its site's size (0.0 when
    exact).

    A block is recorded with probability ``p = 1 - exp(-size/interval)``
    and then counts ``size / p`` bytes, so its term of the estimate has
    variance ``size**2 * (1 - p) / p``.  Each recorded block adds that
    divided by ``p``, ``size**2 * (1 - p) / p**2``, so that the sum over the
    recorded blocks estimates the variance of the site's size without bias.
    A block of 0 bytes is weighted as one of 1 byte, as in the engine.
    """
    if not interval:
        return 0.0
    s = float(size or 1)
    p = -math.expm1(-s / interval)
    return s * s * (1.0 - p) / (p * p)


def _rise_noise(xs: Sequence[float], noise: Sequence[float]) -> tuple:
    """The least-squares rise over the span as weights on the points, and
    the largest standard deviation it can have given each point's deviation
    and correlations that are never negative: ``(weights, deviation)``.

    The rise is ``sum(c[i] * y[i])``.  Its variance is at most
    ``(sum of c[i]*noise[i] over c > 0)**2 + (the same over c < 0)**2``:
    within each group the correlation is at most 1, and across the groups
    the covariances only subtract.
    """
    n = len(xs)
    mean = sum(xs) / n
    sxx = sum((x - mean) ** 2 for x in xs)
    span = xs[-1] - xs[0]
    weights = [(x - mean) / sxx * span if sxx else 0.0 for x in xs]
    up = sum(c * d for c, d in zip(weights, noise) if c > 0)
    down = sum(-c * d for c, d in zip(weights, noise) if c < 0)
    return weights, math.sqrt(up * up + down * down)


def retained_floor(values: Sequence[float]) -> list:
    """Return ``[min(values[i:]) for i in range(len(values))]``, in O(n)."""
    floor = list(values)
    for i in range(len(floor) - 2, -1, -1):
        if floor[i + 1] < floor[i]:
            floor[i] = floor[i + 1]
    return floor


def robust_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Theil-Sen slope of ``ys`` over ``xs``: the median of pairwise slopes.

    Long series use the pairs half a series apart, which keeps the cost
    linear and the estimate robust.  Pairs with equal x are skipped; with no
    usable pair the slope is 0.0.
    """
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n <= ALL_PAIRS_LIMIT:
        pairs = ((i, j) for i in range(n) for j in range(i + 1, n))
    else:
        lag = n // 2
        pairs = ((i, i + lag) for i in range(n - lag))
    slopes = [(ys[j] - ys[i]) / (xs[j] - xs[i]) for i, j in pairs if xs[j] != xs[i]]
    return float(_median(slopes)) if slopes else 0.0


def _median(values: list) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def _r_squared(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Coefficient of determination of the least-squares line (1.0 if ys is constant)."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    if syy == 0:
        return 1.0
    if sxx == 0:
        return 0.0
    return max(0.0, min(1.0, sxy * sxy / (sxx * syy)))


def classify(xs: Sequence[float], ys: Sequence[float], *, min_growth: float = 1024,
             noise: Sequence[float] | None = None) -> Trend:
    """Classify the series ``ys`` (sizes in bytes) measured at ``xs``.

    ``xs`` must be increasing (calls made so far, or hours); it needs at
    least three points.  ``min_growth`` is the smallest growth, in the units
    of ``ys``, that is not noise.  ``noise``, for estimates from sampled
    snapshots, gives the standard deviation of each value (see the module
    docstring); None, or all zeros, for exact sizes.
    """
    n = len(ys)
    if n != len(xs):
        raise ValueError("xs and ys differ in length")
    if n < 3:
        raise ValueError("a trend needs at least 3 points")
    if noise is not None:
        if len(noise) != n:
            raise ValueError("noise and ys differ in length")
        if not any(noise):
            noise = None
    floor = retained_floor(ys)
    growth = floor[-1] - floor[0]
    steps = list(zip(floor, floor[1:]))
    rises = sum(1 for a, b in steps if b > a)
    took = sum(max(0, b - a) for a, b in zip(ys, ys[1:]))
    if noise is None:
        gave = sum(max(0, a - b) for a, b in zip(ys, ys[1:]))
    else:
        gave = sum(max(0.0, a - b - DROP_Z * math.hypot(da, db))
                   for a, b, da, db in zip(ys, ys[1:], noise, noise[1:]))
    common = dict(growth=int(growth), first=int(ys[0]), last=int(ys[-1]),
                  peak=int(max(ys)), rises=rises)

    def verdict(kind, shape, reason, slope=0.0, confidence=0.0):
        return Trend(kind=kind, shape=shape, slope=slope, confidence=confidence,
                     reason=reason, **common)

    if took < min_growth:
        return verdict(NOISE, "flat", "changed by less than the threshold")
    intervals = n - 1
    if gave > MAX_GIVEBACK * took and rises < STEADY_SHARE * intervals:
        return verdict(NOISE, "sawtooth",
                       f"gave back {gave / took:.0%} of what it allocated")
    if growth < min_growth:
        return verdict(NOISE, "flat", "kept less than the threshold")
    if noise is not None:
        # The floor rose from its lowest value (at `low`) to the last one:
        # the difference of two estimates, correlated never negatively.
        low = min(range(n), key=lambda i: (ys[i], -i))
        if growth < NOISE_Z * math.hypot(noise[low], noise[-1]):
            return verdict(NOISE, "flat", "grew less than the sampling noise")
    # The floor at the middle of the span (not the middle index: the points
    # need not be evenly spaced).
    middle = (xs[0] + xs[-1]) / 2
    mid = max(i for i in range(n) if xs[i] <= middle)
    late = floor[-1] - floor[mid]
    if rises < MIN_RISES:
        return verdict(PLATEAU, "step",
                       f"grew at {rises} moment{'s' if rises != 1 else ''} only")
    if late < MIN_LATE_SHARE * growth:
        # Where did it reach 90% of its final level?
        target = floor[0] + 0.9 * growth
        reached = next(i for i, v in enumerate(floor) if v >= target)
        share = (xs[reached] - xs[0]) / (xs[-1] - xs[0]) if xs[-1] != xs[0] else 0.0
        return verdict(PLATEAU, "plateau",
                       f"stopped growing after {share:.0%} of the series")
    significance = 1.0
    if noise is not None:
        weights, deviation = _rise_noise(xs, noise)
        rise = sum(c * y for c, y in zip(weights, ys))
        if rise < NOISE_Z * deviation:
            return verdict(NOISE, "flat", "grew less than the sampling noise")
        significance = min(1.0, rise / (2 * NOISE_Z * deviation))
    slope = robust_slope(xs, floor)
    if slope <= 0 and xs[-1] != xs[0]:
        # Growth in a few large steps (a table that doubles): fall back on
        # the average rate.
        slope = growth / (xs[-1] - xs[0])
    consistency = rises / intervals
    sustain = min(1.0, late / (0.5 * growth))
    fit = _r_squared(xs, floor)
    length = min(1.0, intervals / FULL_CONFIDENCE_INTERVALS)
    steadiness = 1.0 - 0.5 * gave / took
    confidence = (significance * steadiness * length
                  * (0.4 * consistency + 0.3 * sustain + 0.3 * fit))
    confidence = math.floor(max(0.0, min(1.0, confidence)) * 100) / 100
    return verdict(LEAK, "growing",
                   f"grew in {rises} of {intervals} intervals", slope=slope,
                   confidence=confidence)
