"""HTML: one self-contained page (inline script and style, nothing fetched)
with an icicle graph of memory by traceback and a sortable table of sites.

A snapshot shows where its memory sits; a diff shows the change between two
snapshots (the width of a frame is the bytes that changed under it, red for
growth, blue for shrinkage); a series adds a timeline of the total and of
the top sites, with ``heaptrace trend``'s verdicts, above the growth from
the first snapshot to the last.

Tracebacks are merged into a call tree here, so the page gets one node per
distinct call path, not one per traceback; the page draws only the frames
wide enough to see, so 100,000 tracebacks stay quick to show.
"""

from __future__ import annotations

import datetime
import html
import json
import linecache
import os

from . import Unsupported
from .model import FunctionNames, Profile, Series

FORMAT = "html"
BINARY = False

#: At most this many rows in a table of sites.
MAX_SITES = 1000

_HERE = os.path.dirname(os.path.abspath(__file__))


def _asset(name: str) -> str:
    with open(os.path.join(_HERE, name), encoding="utf-8") as stream:
        return stream.read()


class _Frames:
    """The frame table of the page: ``[file index, line, function or None]``."""

    def __init__(self, names: FunctionNames):
        self.names = names
        self.ids = {}
        self.table = []
        self.file_ids = {}
        self.files = []

    def __call__(self, frame) -> int:
        found = self.ids.get(frame)
        if found is None:
            filename, lineno = frame
            file_id = self.file_ids.get(filename)
            if file_id is None:
                file_id = self.file_ids[filename] = len(self.files)
                self.files.append(filename)
            named = self.names.lookup(filename, lineno)
            found = self.ids[frame] = len(self.table)
            self.table.append([file_id, lineno, named[0] if named else None])
        return found


def _tree(profile: Profile, frame_id) -> dict:
    """The call tree of *profile* as parallel arrays, node 0 the root and
    every parent before its children: ``p`` parent, ``f`` frame, ``v`` width
    (bytes; for a diff, bytes changed either way), ``n`` blocks; a diff adds
    ``d`` (net change), ``dn`` (blocks change) and ``s`` (bytes now)."""
    diff = profile.is_diff
    parent, frame, width, count = [-1], [-1], [0], [0]
    delta, count_delta, size = [0], [0], [0]
    index = {}
    for stack in profile.stacks:
        value = abs(stack.size_diff) if diff else stack.size
        if not value and not stack.count and not stack.count_diff:
            continue
        node = 0
        nodes = [0]
        for frame_key in stack.frames:
            key = (node, frame_id(frame_key))
            child = index.get(key)
            if child is None:
                child = index[key] = len(parent)
                parent.append(node)
                frame.append(key[1])
                width.append(0)
                count.append(0)
                if diff:
                    delta.append(0)
                    count_delta.append(0)
                    size.append(0)
            node = child
            nodes.append(node)
        for node in nodes:
            width[node] += value
            count[node] += stack.count
            if diff:
                delta[node] += stack.size_diff
                count_delta[node] += stack.count_diff
                size[node] += stack.size
    tree = {"p": parent, "f": frame, "v": width, "n": count}
    if diff:
        tree.update(d=delta, dn=count_delta, s=size)
    return tree


def _source(filename: str, lineno: int) -> str:
    return linecache.getline(filename, lineno).strip()


def _snapshot_sites(profile: Profile, frame_id) -> list:
    """Rows of the sites table: the lines that allocated, with what they
    hold themselves and with their callees."""
    own = {}
    total = {}
    for stack in profile.stacks:
        if stack.frames:
            site = stack.frames[-1]
            entry = own.setdefault(site, [0, 0])
            entry[0] += stack.size
            entry[1] += stack.count
        for frame in set(stack.frames):
            total[frame] = total.get(frame, 0) + stack.size
    by_own = sorted(own, key=lambda f: (-own[f][0], f))[: MAX_SITES // 2]
    by_total = sorted(total, key=lambda f: (-total[f], f))[: MAX_SITES // 2]
    chosen = list(dict.fromkeys(by_own + by_total))
    rows = []
    for frame in chosen:
        size, count = own.get(frame, (0, 0))
        rows.append({"frame": frame_id(frame), "size": size, "count": count,
                     "cum": total.get(frame, 0), "src": _source(*frame)})
    rows.sort(key=lambda r: (-r["size"], -r["cum"]))
    return rows


def _diff_sites(profile: Profile, frame_id) -> list:
    sites = {}
    for stack in profile.stacks:
        if not stack.frames:
            continue
        entry = sites.setdefault(stack.frames[-1], [0, 0, 0])
        entry[0] += stack.size_diff
        entry[1] += stack.count_diff
        entry[2] += stack.size
    chosen = sorted(sites, key=lambda f: (-abs(sites[f][0]), -sites[f][2], f))[:MAX_SITES]
    return [{"frame": frame_id(f), "size_diff": sites[f][0], "count_diff": sites[f][1],
             "size": sites[f][2], "src": _source(*f)} for f in chosen]


def _when(timestamp) -> str:
    if not timestamp:
        return ""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _size(size: float, sign: bool = False) -> str:
    from ..measure import format_size

    return format_size(size, sign)


_SEARCH_BAR = """
<div class="toolbar">
  <input id="search" type="search" placeholder="Search: file name, function or file:line">
  <span id="search-result"></span>
  <button id="reset" type="button">Reset zoom</button>
  <span id="zoom-path"></span>
</div>
<div id="flame" class="flame"></div>"""


class _Title:
    """A page title that names snapshot files: the file names in the title
    and the heading, each with its full path as a tooltip, and the folder
    they are in (or their full paths) on a line of its own."""

    def __init__(self):
        self.text = []      # plain text, for <title>
        self.html = []      # the heading
        self.paths = []

    def add(self, words: str) -> "_Title":
        self.text.append(words)
        self.html.append(html.escape(words))
        return self

    def file(self, path: str) -> "_Title":
        path = os.path.abspath(path)
        name = os.path.basename(path) or path
        self.text.append(name)
        self.html.append(f'<span class="file" title="{html.escape(path)}">'
                         f'{html.escape(name)}</span>')
        self.paths.append(path)
        return self

    def where(self) -> str:
        """``in FOLDER`` when the files share one, else their full paths."""
        folders = {os.path.dirname(path) for path in self.paths}
        if len(folders) == 1:
            return f"in {folders.pop()}"
        return ", ".join(self.paths)


def _page(title: _Title, meta: str, body: str, data: dict) -> str:
    where = title.where()
    where_line = f'<div class="where">{html.escape(where)}</div>' if where else ""
    payload = (json.dumps(data, separators=(",", ":"), ensure_ascii=True)
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{html.escape("".join(title.text))}</title>
<style>
{_asset("report.css")}</style>
</head>
<body>
<header><h1>{"".join(title.html)}</h1>{where_line}<div class="meta">{html.escape(meta)}</div></header>
{body}
<div id="tip"></div>
<script type="application/json" id="heaptrace-data">{payload}</script>
<script>
{_asset("report.js")}</script>
</body>
</html>
"""


def _profile_page(profile: Profile, names: FunctionNames) -> str:
    frames = _Frames(names)
    tree = _tree(profile, frames)
    if profile.is_diff:
        sites = _diff_sites(profile, frames)
        title = (_Title().add("heaptrace diff: ").file(profile.source)
                 .add(" compared to ").file(profile.old_source))
        grown = sum(s.size_diff for s in profile.stacks if s.size_diff > 0)
        shrunk = sum(s.size_diff for s in profile.stacks if s.size_diff < 0)
        meta = (f"net change {_size(profile.total_size_diff, True)}: "
                f"{_size(grown, True)} grew (red), {_size(shrunk, True)} shrank (blue); "
                f"{len(profile.stacks):,} tracebacks changed")
        heading = "Change by call path (width: bytes that changed)"
        table = "Sites that changed the most"
    else:
        sites = _snapshot_sites(profile, frames)
        title = _Title().add("heaptrace report: ").file(profile.source)
        taken = _when(profile.timestamp)
        meta = (f"{_size(profile.total_size)} in {profile.total_count:,} blocks, "
                f"{len(profile.stacks):,} distinct tracebacks"
                + (f"; taken {taken}" if taken else ""))
        heading = "Memory by call path (click a frame to zoom, hover for details)"
        table = "Top allocation sites (click a header to sort, a row to find it above)"
    if profile.sampling_interval:
        meta += (f"; sampled every {profile.sampling_interval:,} bytes: sizes and "
                 f"blocks are estimates")
    data = {"kind": "diff" if profile.is_diff else "snapshot", "frames": frames.table,
            "files": frames.files, "tree": tree, "sites": sites}
    body = (f'<section><h2>{html.escape(heading)}</h2>{_SEARCH_BAR}</section>\n'
            f'<section><h2>{html.escape(table)}</h2><table id="sites"></table></section>')
    return _page(title, meta, body, data)


def _series_page(series: Series, names: FunctionNames) -> str:
    frames = _Frames(names)
    hours = [(t - series.times[0]) / 3600 for t in series.times]
    sites = []
    for site in series.sites:
        trend = site.trend
        sites.append({"frame": frames(site.frames[0]), "sizes": site.sizes,
                      "kind": trend.kind, "slope": trend.slope, "growth": trend.growth,
                      "last": trend.last, "confidence": trend.confidence,
                      "reason": trend.reason, "src": _source(*site.frames[0])})
        if len(sites) >= MAX_SITES:
            break
    data = {"kind": "series", "frames": frames.table, "files": frames.files,
            "hours": hours, "totals": series.totals, "sites": sites,
            "paths": series.paths, "times": series.times}
    growth = ""
    if series.growth is not None:
        data["tree"] = _tree(series.growth, frames)
        data["sites"] = sites
        data["growth_sites"] = _diff_sites(series.growth, frames)
        growth = (f'<section><h2>Growth from the first snapshot to the last, by call path '
                  f'(red grew, blue shrank)</h2>{_SEARCH_BAR}</section>\n'
                  f'<section><h2>Sites that changed the most</h2>'
                  f'<table id="sites"></table></section>')
    kinds = {}
    for site in series.sites:
        kinds[site.trend.kind] = kinds.get(site.trend.kind, 0) + 1
    span = series.times[-1] - series.times[0]
    title = _Title().add(f"heaptrace trend: {len(series.paths)} snapshots, ")
    title.file(series.paths[0]).add(" to ").file(series.paths[-1])
    title.paths = [os.path.abspath(path) for path in series.paths]
    meta = (f"{len(series.paths)} snapshots over {span:.1f} s from {_when(series.times[0])}; "
            f"total {_size(series.totals[0])} \u2192 {_size(series.totals[-1])}; "
            f"{kinds.get('leak', 0)} leaks, {kinds.get('plateau', 0)} plateaus, "
            f"{kinds.get('noise', 0)} noise")
    note = f'<p class="note">{html.escape(series.note)}</p>' if series.note else ""
    body = (f'<section><h2>Traced memory over time (total and top sites)</h2>{note}'
            f'<div id="chart"></div></section>\n'
            f'<section><h2>Sites and their verdicts</h2><table id="trend-sites"></table>'
            f'</section>\n{growth}')
    return _page(title, meta, body, data)


def render(data, names: FunctionNames = None) -> str:
    names = names or FunctionNames()
    if isinstance(data, Profile):
        return _profile_page(data, names)
    if isinstance(data, Series):
        return _series_page(data, names)
    raise Unsupported(f"no HTML report for a {type(data).__name__}")
