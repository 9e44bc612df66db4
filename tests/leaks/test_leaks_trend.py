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


def test_sample_variance_estimates_the_variance_of_a_sampled_size():
    from heaptrace.trend import sample_variance

    assert sample_variance(1000, 0) == 0.0
    rng = random.Random(3)
    size, interval, draws = 3000, 4096, 200_000
    p = -math.expm1(-size / interval)
    # The true variance of one block's part of the estimate ...
    true = size * size * (1 - p) / p
    # ... and the mean of the estimator over many draws (a term per recorded block).
    mean = sum(sample_variance(size, interval) for _ in range(draws)
               if rng.random() < p) / draws
    assert mean == pytest.approx(true, rel=0.02)
    # Blocks far beyond the interval are always recorded: no noise.
    assert sample_variance(100 * interval, interval) < 1e-20


def test_noise_allowance_changes_only_sampled_series():
    ys = [5000 + 64 * x for x in XS]
    assert classify(XS, ys, noise=[0.0] * len(XS)) == classify(XS, ys)
    with pytest.raises(ValueError, match="noise"):
        classify(XS, ys, noise=[1.0])


def test_a_drift_within_the_noise_is_not_a_leak_but_a_clear_rise_is():
    # A flat site's estimate wandering up by a few of its deviations.
    drift = [10_000_000 + 150_000 * i + (200_000 if i % 3 == 0 else 0)
             for i in range(len(XS))]
    noise = [1_000_000] * len(XS)
    assert classify(XS, drift).kind == LEAK
    verdict = classify(XS, drift, noise=noise)
    assert verdict.kind == NOISE and "sampling noise" in verdict.reason
    # The same shape ten times steeper stands out of that noise.
    steep = [10_000_000 + 1_500_000 * i for i in range(len(XS))]
    assert classify(XS, steep, noise=noise).kind == LEAK
