"""trend, top and diff on snapshots of sampled tracing (issue 11): the trend
allows for the sampling noise, and the JSON output says the interval."""

import pytest

import heaptrace
from heaptrace.trend import LEAK, classify

from cli_helpers import heaptrace_json
from sampled_series import CACHE, CHURN, INTERVAL, LEAK as LEAK_SITE, MIB, write_series

# A seed whose slowly turning-over cache, read without allowing for the
# noise, looks like a leak (checked below, so that the test keeps proving
# that the allowance matters).
SEED = 15


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sampled")
    return folder, write_series(folder, SEED)


def site_sizes(paths, where):
    out = []
    for path in paths:
        snapshot = heaptrace.Snapshot.load(str(path))
        out.append(sum(s.size for s in snapshot.statistics("lineno")
                       if (s.traceback[0].filename, s.traceback[0].lineno) == where))
    return out


def test_without_the_noise_allowance_the_flat_cache_would_look_like_a_leak(series):
    _, paths = series
    hours = [i / 60 for i in range(len(paths))]
    assert classify(hours, site_sizes(paths, CACHE)).kind == LEAK


def test_trend_finds_the_leak_and_not_the_flat_sites(series):
    folder, _ = series
    out = heaptrace_json("trend", folder, "--all", "--full-paths")
    assert out["sampling_interval"] == INTERVAL
    assert all(s["sampling_interval"] == INTERVAL for s in out["snapshots"])
    sites = {(s["filename"], s["lineno"]): s for s in out["sites"]}
    leak = sites[LEAK_SITE]
    assert leak["kind"] == "leak", leak
    # 1 MiB a minute: 60 MiB an hour, estimated from a sample.
    assert leak["growth_per_hour"] == pytest.approx(60 * MIB, rel=0.3)
    for where in (CACHE, CHURN):
        assert sites[where]["kind"] != "leak", sites[where]


def test_a_short_sampled_series_does_not_call_noise_a_leak(tmp_path):
    # Every seed, 8 snapshots: too few to tell a 1 MiB/min leak at 512 KiB
    # from noise in this mix is fine, but the flat sites must never be leaks.
    for seed in range(6):
        folder = tmp_path / str(seed)
        folder.mkdir()
        write_series(folder, seed, minutes=8)
        out = heaptrace_json("trend", folder, "--all", "--full-paths")
        kinds = {(s["filename"], s["lineno"]): s["kind"] for s in out["sites"]}
        assert kinds[CACHE] != "leak" and kinds[CHURN] != "leak", (seed, kinds)


def test_top_and_diff_json_say_the_interval(series):
    _, paths = series
    top = heaptrace_json("top", paths[-1])
    assert top["sampling_interval"] == INTERVAL
    diff = heaptrace_json("diff", paths[0], paths[-1])
    assert diff["sampling_interval"] == INTERVAL


def test_exact_snapshots_say_null(tmp_path):
    path = tmp_path / "exact.snap"
    heaptrace.Snapshot([(0, 100, (("/a.py", 1),), 1)], 1).dump(str(path))
    assert heaptrace_json("top", path)["sampling_interval"] is None
    assert heaptrace_json("diff", path, path)["sampling_interval"] is None
