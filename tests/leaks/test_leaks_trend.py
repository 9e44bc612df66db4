"""heaptrace.trend.classify on made-up series: no tracing involved."""

import math
import random

import pytest

from heaptrace.trend import LEAK, NOISE, PLATEAU, classify, retained_floor, robust_slope

XS = list(range(0, 1300, 100))   # 13 points: 12 intervals of 100 calls


def test_steady_growth_is_a_leak_with_its_rate():
    trend = classify(XS, [5000 + 64 * x for x in XS])
    assert trend.kind == LEAK and trend.shape == "growing"
    assert trend.slope == pytest.approx(64)
    assert trend.confidence >= 0.95
    assert trend.rises == 12


def test_noisy_growth_is_a_leak_and_the_rate_is_robust():
    rng = random.Random(1)
    ys = [64 * x + rng.randint(0, 2000) for x in XS]
    ys[7] += 200_000   # one odd moment
    trend = classify(XS, ys)
    assert trend.kind == LEAK
    assert trend.slope == pytest.approx(64, rel=0.25)


def test_growth_in_doubling_steps_is_a_leak():
    # A table that doubles whenever it is full: its size only moves now and then.
    ys = [8 * 2 ** math.ceil(math.log2(max(x, 1) + 50)) for x in XS]
    trend = classify(XS, ys)
    assert trend.kind == LEAK, trend
    assert trend.slope > 0


def test_cache_that_fills_then_stops_is_a_plateau():
    ys = [min(x, 400) * 1000 for x in XS]
    trend = classify(XS, ys)
    assert trend.kind == PLATEAU and trend.shape == "plateau"
    assert trend.slope == 0
    assert trend.growth == 400_000
    assert "stopped growing" in trend.reason


def test_one_time_allocation_is_a_step():
    ys = [0] * 6 + [300_000] * 7
    trend = classify(XS, ys)
    assert trend.kind == PLATEAU and trend.shape == "step"


def test_growth_with_transient_spikes_is_a_leak():
    ys = [64 * x for x in XS]
    ys[3] += 300_000   # a burst of requests in flight at one moment
    trend = classify(XS, ys)
    assert trend.kind == LEAK, trend
    assert trend.confidence < classify(XS, [64 * x for x in XS]).confidence


@pytest.mark.parametrize("period", [3, 5, 7, 8, 12])
def test_sawtooth_is_noise(period):
    ys = [(i % period) * 10_000 for i in range(len(XS))]
    trend = classify(XS, ys)
    assert trend.kind == NOISE and trend.shape == "sawtooth", trend


def test_small_changes_are_noise():
    trend = classify(XS, [1000 + (i % 2) * 100 for i in range(len(XS))])
    assert trend.kind == NOISE and trend.shape == "flat"


def test_threshold_decides_what_is_too_small():
    ys = [10 * x for x in XS]   # 12 KB over the series
    assert classify(XS, ys, min_growth=1024).kind == LEAK
    assert classify(XS, ys, min_growth=100_000).kind == NOISE


def test_short_series_get_less_confidence():
    long = classify(XS, [64 * x for x in XS])
    short = classify(XS[:4], [64 * x for x in XS[:4]])
    assert short.kind == LEAK
    assert short.confidence < long.confidence


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError):
        classify([0, 1], [0, 100_000])
    with pytest.raises(ValueError):
        classify([0, 1, 2], [0, 1])


def test_retained_floor_and_robust_slope():
    assert retained_floor([5, 3, 4, 9, 8]) == [3, 3, 4, 8, 8]
    assert robust_slope([0, 1, 2, 3, 4, 5], [0, 2, 4, 100, 8, 10]) == pytest.approx(2)
    xs = list(range(200))    # long series use half-lag pairs
    assert robust_slope(xs, [3 * x for x in xs]) == pytest.approx(3)
