"""`heaptrace export` and `heaptrace report`, checked with the tools that
read them: go tool pprof, and the HTML pages in headless Chromium.

Set HEAPTRACE_SCREENSHOTS=DIR to keep the screenshots (the README's come
from here: HEAPTRACE_SCREENSHOTS=docs/images).
"""

import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from browser import Browser, find_chromium, png_colors, require, tool_env
from synthetic import wide_snapshot

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = os.path.join(HERE, "..", "cli", "targets", "service.py")
SERVICE = os.path.normpath(SERVICE)


def marked_line(path, mark):
    with open(path) as source:
        for number, line in enumerate(source, 1):
            if mark in line:
                return number
    raise AssertionError(f"{mark!r} not in {path}")


LEAK_LINE = marked_line(SERVICE, "# LEAK")
CACHE_LINE = marked_line(SERVICE, "# CACHE")


def heaptrace(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "heaptrace", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def heaptrace_ok(*args):
    result = heaptrace(*args)
    assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith("heaptrace: error: "), message
    for word in words:
        assert word in message, message


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    """A run of the service: a leak (LEAK_LINE) and a cache that stops growing."""
    folder = tmp_path_factory.mktemp("run") / "snaps"
    heaptrace_ok("run", "--interval", "0.15", "-o", folder, SERVICE, "--seconds", "1.0")
    files = sorted(glob.glob(os.path.join(folder, "*.snap")))
    assert len(files) >= 4
    return folder, files


@pytest.fixture(scope="module")
def browser():
    binary = require(find_chromium(), "Chromium")
    instance = Browser(binary)
    yield instance
    instance.close()


def keep_screenshot(png, name):
    folder = os.environ.get("HEAPTRACE_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, name), "wb") as stream:
            stream.write(png)


# -- pprof -------------------------------------------------------------------------


def pprof_top(go, profile, sample_index):
    """{(filename, line): flat value} from `go tool pprof -top -lines`."""
    result = subprocess.run(
        [go, "tool", "pprof", "-top", "-lines", "-nodefraction=0", "-nodecount=100000",
         "-unit=B" if sample_index == "inuse_space" else "-unit=count",
         f"-sample_index={sample_index}", profile],
        capture_output=True, text=True, timeout=120, env=tool_env())
    assert result.returncode == 0, result.stderr
    rows = {}
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("flat"))
    for line in lines[start + 1:]:
        flat = int(line.split()[0].rstrip("B"))
        # "... name file:line"; a file such as "<frozen abc>" holds a space.
        where = re.search(r"(<[^>]*>|\S+):(\d+)$", line)
        key = (where.group(1), int(where.group(2)))
        if flat:
            rows[key] = rows.get(key, 0) + flat
    return rows, result.stdout


def test_pprof_lists_the_sites_and_sizes_of_top(snaps, tmp_path):
    go = require(shutil.which("go"), "go (Debian's golang-go)")
    snapshot = snaps[1][-1]
    profile = tmp_path / "heap.pb.gz"
    heaptrace_ok("export", "--format", "pprof", snapshot, "-o", profile)
    top = json.loads(heaptrace_ok("top", snapshot, "--limit", "0", "--json").stdout)
    for index, field in (("inuse_space", "size"), ("inuse_objects", "count")):
        rows, text = pprof_top(go, str(profile), index)
        expected = {(s["filename"], s["lineno"]): s[field] for s in top["stats"]}
        assert rows == expected, text
        assert sum(rows.values()) == top["total"][field]
    # The leak is named by its Python function and file, not by an address.
    rows, text = pprof_top(go, str(profile), "inuse_space")
    assert re.search(rf"\bhandle {re.escape(SERVICE)}:{LEAK_LINE}\b", text), text


def test_pprof_carries_time_and_sample_types(snaps, tmp_path):
    go = require(shutil.which("go"), "go (Debian's golang-go)")
    snapshot = snaps[1][-1]
    profile = tmp_path / "heap.pb.gz"
    heaptrace_ok("export", snapshot, "-o", profile)          # pprof is the default
    assert gzip.decompress(profile.read_bytes())              # really gzipped
    raw = subprocess.run([go, "tool", "pprof", "-raw", str(profile)], capture_output=True,
                         text=True, timeout=120, env=tool_env())
    assert raw.returncode == 0, raw.stderr
    assert "inuse_space/bytes[dflt] inuse_objects/count" in raw.stdout, raw.stdout[:2000]
    import heaptrace as api
    import datetime
    taken = datetime.datetime.fromtimestamp(api.Snapshot.load(snapshot).timestamp,
                                            datetime.timezone.utc)
    assert f"Time: {taken:%Y-%m-%d %H:%M:%S}" in raw.stdout, raw.stdout[:2000]


# -- folded stacks -------------------------------------------------------------------


def test_folded_stacks_add_up_to_the_total(snaps, tmp_path):
    snapshot = snaps[1][-1]
    folded = tmp_path / "heap.folded"
    heaptrace_ok("export", "--format", "collapsed", snapshot, "-o", folded,
                 "--no-default-excludes")
    top = json.loads(heaptrace_ok("top", snapshot, "--json", "--no-default-excludes").stdout)
    lines = folded.read_text().splitlines()
    total = 0
    for line in lines:
        stack, _, size = line.rpartition(" ")
        assert stack and int(size) > 0, line
        total += int(size)
    assert total == top["total"]["size"]
    # Outermost call first, the allocating line last, functions named.
    leak = [line for line in lines if line.rpartition(" ")[0].endswith(
        f"handle (targets/service.py:{LEAK_LINE})")]
    assert len(leak) == 1, lines[:5]
    frames = leak[0].rpartition(" ")[0].split(";")
    assert frames[0].startswith("<module> (targets/service.py:"), frames
    assert frames[-2].startswith("main (targets/service.py:"), frames


def test_export_to_standard_output(snaps):
    result = heaptrace_ok("export", "-f", "collapsed", snaps[1][-1])
    assert f"handle (targets/service.py:{LEAK_LINE})" in result.stdout


# -- bad input -------------------------------------------------------------------------


def test_bad_files_give_one_line_errors(tmp_path, snaps):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a snapshot\n")
    missing = tmp_path / "missing.snap"
    good = snaps[1][-1]
    out = tmp_path / "out"
    for args, words in [
        (("export", missing, "-o", out), ("missing.snap", "no such file")),
        (("export", foreign, "-o", out), ("notes.txt", "not a heaptrace snapshot")),
        (("export", tmp_path, "-o", out), ("is a directory",)),
        (("export", good, "-o", tmp_path / "no" / "such" / "dir"), ("cannot write",)),
        (("report", missing, "-o", out), ("no such file",)),
        (("report", foreign, "-o", out), ("not a heaptrace snapshot",)),
        (("report", "--diff", good, foreign, "-o", out), ("notes.txt",)),
        (("report", "--diff", missing, good, "-o", out), ("missing.snap",)),
        (("report", good, good, "-o", out), ("--diff",)),
        (("report", "-o", out), ("give a snapshot",)),
        (("report", tmp_path, "-o", out), ("no snapshots",)),
        (("report", good, "--json"), ("-o FILE",)),
    ]:
        assert_one_line_error(heaptrace(*args), *words)
    assert not out.exists()


def test_series_report_reads_the_run_of_pid(snaps, tmp_path):
    """In a folder of two runs, report reads the latest by default and the
    one --pid names, as trend does."""
    folder = tmp_path / "runs"
    folder.mkdir()
    for path in snaps[1]:
        shutil.copy2(path, folder)
    pid = int(os.path.basename(snaps[1][0]).split("-")[1])
    other = pid + 1
    for index, path in enumerate(snaps[1][:3], 1):
        target = folder / f"heaptrace-{other}-{index:06d}.snap"
        shutil.copy(path, target)            # newer mtime: the latest run
    page = tmp_path / "trend.html"
    default = json.loads(heaptrace_ok("report", folder, "-o", page, "--json").stdout)
    assert [os.path.basename(p).split("-")[1] for p in default["snapshots"]] == [
        str(other)] * 3
    chosen = json.loads(heaptrace_ok("report", folder, "--pid", pid, "-o", page,
                                     "--json").stdout)
    assert len(chosen["snapshots"]) == len(snaps[1])
    assert {os.path.basename(p).split("-")[1] for p in chosen["snapshots"]} == {str(pid)}
    assert_one_line_error(heaptrace("report", folder, "--pid", "1", "-o", page),
                          "no run with pid 1")
    assert_one_line_error(heaptrace("report", snaps[1][0], "--pid", pid, "-o", page),
                          "--pid", "folder")


def test_report_json_summary(snaps, tmp_path):
    page = tmp_path / "report.html"
    summary = json.loads(heaptrace_ok("report", snaps[1][-1], "-o", page, "--json").stdout)
    top = json.loads(heaptrace_ok("top", snaps[1][-1], "--json").stdout)
    assert summary["kind"] == "snapshot" and summary["total"] == top["total"]
    assert page.stat().st_size > 0


# -- HTML in headless Chromium ---------------------------------------------------------


def open_page(browser, path):
    browser.events.clear()
    browser.open(f"file://{path}")
    assert browser.errors() == []
    html = open(path, encoding="utf-8").read()
    # Self-contained: nothing is fetched.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)


def assert_click_zooms(browser, label):
    """Clicking the frame labelled *label* zooms into it: it then spans the
    whole graph and the page names it."""
    index = browser.evaluate(
        "(function(){var all=document.querySelectorAll('#flame .fr');"
        f"for(var i=0;i<all.length;i++) if(all[i].textContent.indexOf({json.dumps(label)})===0)"
        " return all[i].dataset.i; return null;})()")
    assert index is not None, label
    full = browser.evaluate("document.getElementById('flame').clientWidth")
    before = browser.evaluate(
        f"document.querySelector('#flame .fr[data-i=\"{index}\"]').getBoundingClientRect().width")
    assert before < full - 10
    browser.click(f'#flame .fr[data-i="{index}"]')
    after = browser.evaluate(
        f"document.querySelector('#flame .fr[data-i=\"{index}\"]').getBoundingClientRect().width")
    assert after >= full - 2, (before, after, full)
    assert label.split(" (")[0] in browser.evaluate("document.getElementById('zoom-path').textContent")
    assert browser.errors() == []
    browser.click("#reset")
    assert browser.evaluate("document.getElementById('zoom-path').textContent") == ""


def assert_heading_names(browser, *paths):
    """The page's title and heading name the snapshot files by their file
    names; each name's tooltip holds its full path, and the line under the
    heading the folder."""
    heading = browser.evaluate("document.querySelector('header h1').textContent")
    title = browser.evaluate("document.title")
    for path in paths:
        assert os.path.basename(path) in heading and os.path.basename(path) in title
    folder = os.path.dirname(os.path.abspath(paths[0]))
    assert folder not in heading and folder not in title, heading
    tips = browser.evaluate("Array.prototype.map.call(document.querySelectorAll("
                            "'header h1 .file'), function(e){return e.title;})")
    assert tips == [os.path.abspath(path) for path in paths], tips
    where = browser.evaluate("document.querySelector('header .where').textContent")
    assert where == f"in {folder}", where


def table_sites(browser, table):
    return browser.evaluate(
        f"Array.prototype.map.call(document.querySelectorAll('#{table} tbody tr'),"
        " function(tr){return Array.prototype.map.call(tr.children, function(td)"
        "{return td.textContent;});})")


def test_snapshot_report_in_chromium(snaps, tmp_path, browser):
    page = tmp_path / "report.html"
    heaptrace_ok("report", snaps[1][-1], "-o", page)
    open_page(browser, page)
    assert_heading_names(browser, snaps[1][-1])
    rows = table_sites(browser, "sites")
    sites = [row[0] for row in rows[:2]]
    assert sorted(sites) == sorted([f"targets/service.py:{LEAK_LINE}",
                                    f"targets/service.py:{CACHE_LINE}"]), rows[:3]
    assert rows[0][1] == "handle" and "# " in rows[0][-1]
    png = browser.screenshot()
    assert png_colors(png) > 20
    keep_screenshot(png, "report-snapshot.png")
    assert_click_zooms(browser, f"handle (targets/service.py:{LEAK_LINE})")
    # Sorting by blocks puts the leak (many small blocks) first.
    browser.click('#sites th[data-key="count"]')
    assert table_sites(browser, "sites")[0][0] == f"targets/service.py:{LEAK_LINE}"
    # Searching marks the frames of that file.
    browser.evaluate("(function(){var s=document.getElementById('search');"
                     "s.value='service.py:%d';s.dispatchEvent(new Event('input'));})()"
                     % LEAK_LINE)
    browser.wait_for("document.querySelectorAll('#flame .fr.match').length === 1")
    assert "matched" in browser.evaluate("document.getElementById('search-result').textContent")
    assert browser.errors() == []


def test_diff_report_in_chromium(snaps, tmp_path, browser):
    files = snaps[1]
    page = tmp_path / "diff.html"
    heaptrace_ok("report", "--diff", files[0], files[-1], "-o", page)
    open_page(browser, page)
    assert_heading_names(browser, files[-1], files[0])     # NEW compared to OLD
    rows = table_sites(browser, "sites")
    by_site = {row[0]: row for row in rows}
    leak = by_site[f"targets/service.py:{LEAK_LINE}"]
    assert leak[2].startswith("+") and "grow" in browser.evaluate(
        "document.querySelector('#sites tbody tr td:nth-child(3)').className")
    # Growth is red: the leak's frame has a red hue.
    color = browser.evaluate(
        "(function(){var all=document.querySelectorAll('#flame .fr');"
        f"for(var i=0;i<all.length;i++) if(all[i].textContent.indexOf('handle (targets/service.py:{LEAK_LINE})')===0)"
        " return getComputedStyle(all[i]).backgroundColor; return null;})()")
    red, green, blue = map(int, re.findall(r"\d+", color)[:3])
    assert red > green + 40 and red > blue + 40, color
    png = browser.screenshot()
    assert png_colors(png) > 20
    keep_screenshot(png, "report-diff.png")
    assert_click_zooms(browser, f"handle (targets/service.py:{LEAK_LINE})")


def test_series_report_in_chromium(snaps, tmp_path, browser):
    page = tmp_path / "trend.html"
    heaptrace_ok("report", snaps[0], "-o", page)
    open_page(browser, page)
    assert_heading_names(browser, snaps[1][0], snaps[1][-1])
    rows = table_sites(browser, "trend-sites")
    assert rows[0][0] == "leak" and rows[0][1] == f"targets/service.py:{LEAK_LINE}", rows[:2]
    kinds = {row[1]: row[0] for row in rows}
    assert kinds[f"targets/service.py:{CACHE_LINE}"] == "plateau"
    # The timeline: the total and a line per leak or plateau, with its verdict.
    assert browser.evaluate("document.querySelectorAll('#chart polyline').length") >= 3
    legend = browser.evaluate("document.querySelector('#chart .legend').textContent")
    assert f"leak targets/service.py:{LEAK_LINE}" in legend, legend
    png = browser.screenshot()
    assert png_colors(png) > 20
    keep_screenshot(png, "report-trend.png")
    assert_click_zooms(browser, f"handle (targets/service.py:{LEAK_LINE})")


def test_report_of_100000_tracebacks_stays_usable(tmp_path, browser):
    snapshot = tmp_path / "wide.snap"
    total = wide_snapshot(str(snapshot), tracebacks=100_000)
    page = tmp_path / "wide.html"
    heaptrace_ok("report", snapshot, "-o", page)
    open_page(browser, page)
    # Only the frames wide enough to see are in the DOM.
    drawn = int(browser.evaluate("document.getElementById('flame').dataset.drawn"))
    assert 10 < drawn < 20_000, drawn
    assert browser.evaluate("window.heaptraceFlame.tree.v[0]") == total
    assert len(table_sites(browser, "sites")) <= 1000
    first = browser.evaluate("document.querySelector('#flame .fr[data-i]:not(.above)"
                             ":nth-child(2)').textContent")
    assert_click_zooms(browser, first)
    # The time the page took to draw itself, for the README (not asserted).
    print(f"\n100,000 tracebacks: {page.stat().st_size / 1e6:.1f} MB page, rendered in "
          f"{browser.evaluate('document.body.dataset.renderMs')} ms, {drawn} frames drawn")
