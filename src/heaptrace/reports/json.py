"""JSON: the machine-readable output of `heaptrace top`, `diff` and `trend`
(schemas in docs/json.md)."""

from __future__ import annotations

import json

from . import Unsupported
from .model import DiffResult, TopResult, TrendResult

FORMAT = "json"
BINARY = False


def _top(result: TopResult) -> dict:
    from ..cli._common import frames_json, site_json

    rest = result.rest
    stats = result.shown + rest
    out = {
        "snapshot": result.snapshot,
        "timestamp": result.timestamp,
        "traceback_limit": result.traceback_limit,
        "sampling_interval": result.sampling_interval,
        "group_by": result.group_by,
        "cumulative": result.cumulative,
        "stats": [{**site_json(s.traceback), "size": s.size, "count": s.count,
                   "traceback": frames_json(s.traceback)} for s in result.shown],
        "other": {"entries": len(rest), "size": sum(s.size for s in rest),
                  "count": sum(s.count for s in rest)},
        "total": {"size": sum(s.size for s in stats), "count": sum(s.count for s in stats)},
    }
    if result.native is not None:
        for entry, stat in zip(out["stats"], result.shown):
            entry["native_paths"] = [
                {"size": size, "count": count,
                 "frames": [{"function": f.function, "library": f.library,
                             "offset": f.offset} for f in frames]}
                for size, count, frames in result.native.get(stat.traceback, ())]
    return out


def _diff(result: DiffResult) -> dict:
    from ..cli._common import frames_json, site_json

    rest = result.rest
    stats = result.shown + rest
    return {
        "old": result.old,
        "new": result.new,
        "sampling_interval": result.sampling_interval,
        "group_by": result.group_by,
        "cumulative": result.cumulative,
        "stats": [{**site_json(s.traceback), "size": s.size, "size_diff": s.size_diff,
                   "count": s.count, "count_diff": s.count_diff,
                   "traceback": frames_json(s.traceback)} for s in result.shown],
        "other": {"entries": len(rest), "size_diff": sum(s.size_diff for s in rest),
                  "count_diff": sum(s.count_diff for s in rest)},
        "total": {"size_diff": sum(s.size_diff for s in stats),
                  "count_diff": sum(s.count_diff for s in stats)},
    }


def _trend_site(key, trend) -> dict:
    filename, lineno = key[0]
    return {
        "filename": filename,
        "lineno": lineno,
        "traceback": [{"filename": f, "lineno": n} for f, n in key],
        "kind": trend.kind,
        "shape": trend.shape,
        "growth_per_hour": trend.slope,
        "growth": trend.growth,
        "size": trend.last,
        "first_size": trend.first,
        "peak_size": trend.peak,
        "confidence": trend.confidence,
        "reason": trend.reason,
    }


def _trend(result: TrendResult) -> dict:
    return {
        "snapshots": [{"path": path, "timestamp": when,
                       "sampling_interval": result.intervals.get(path)}
                      for when, path in result.snapshots],
        "sampling_interval": max(result.intervals.values(), default=None),
        "hours": result.hours,
        "group_by": result.group_by,
        "note": "; ".join(result.notes) or None,
        "pid": result.pid,
        "runs": [{"pid": p, "snapshots": len(f)} for p, f in sorted(result.runs.items())],
        "skipped": [{"path": path, "reason": why} for path, why in result.skipped],
        "summary": result.counts,
        "sites": [_trend_site(key, trend) for key, trend in result.sites],
    }


def render(data) -> str:
    if isinstance(data, TopResult):
        value = _top(data)
    elif isinstance(data, DiffResult):
        value = _diff(data)
    elif isinstance(data, TrendResult):
        value = _trend(data)
    else:
        raise Unsupported(f"no JSON output for a {type(data).__name__}")
    return json.dumps(value, indent=2) + "\n"
