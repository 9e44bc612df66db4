"""What `heaptrace export` and `heaptrace report` make of every kind of
input: sampled snapshots and snapshots with native frames (format version
2) work, a sampled snapshot's pprof profile carries its period and its
estimates, and a missing, unreadable, foreign or truncated file gives one
line and exit status 2 in every command.
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import heaptrace
from browser import require, tool_env

INTERVAL = 65536


class Payload:
    def __init__(self):
        self.data = bytearray(3000)     # PAYLOAD


def _allocate(kept, count):
    for _ in range(count):
        kept.append(Payload())


def _openssl_hashes():
    return type(hashlib.sha256()).__module__ == "_hashlib"


def _dump(path, when):
    snapshot = heaptrace.take_snapshot()
    snapshot.timestamp = when
    snapshot.dump(str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """sampled-1..3 (one interval, growing), exact, native (with native
    frames), and broken files of every kind."""
    folder = tmp_path_factory.mktemp("inputs")
    made = {}
    heaptrace.stop()
    kept = []
    heaptrace.start(5, sampling_interval=INTERVAL, sampling_seed=7)
    try:
        for index in range(1, 4):
            _allocate(kept, 1500)
            made[f"sampled-{index}"] = _dump(folder / f"sampled-{index}.snap",
                                             1_700_000_000 + 60 * index)
    finally:
        heaptrace.stop()
    heaptrace.start(5)
    try:
        _allocate(kept, 50)
        made["exact"] = _dump(folder / "exact.snap", 1_700_000_000)
    finally:
        heaptrace.stop()
    if sys.platform.startswith("linux") and _openssl_hashes():
        # OpenSSL allocates a hash object's state with malloc: native blocks
        # with a C call path.
        heaptrace.start(5, native=True, native_frames=True)
        try:
            hashes = [hashlib.sha256(b"heaptrace") for _ in range(200)]
            _allocate(kept, 20)
            made["native"] = _dump(folder / "native.snap", 1_700_000_000)
        finally:
            heaptrace.stop()
        del hashes
    whole = open(made["sampled-1"], "rb").read()
    (folder / "truncated.snap").write_bytes(whole[: len(whole) // 2])
    made["truncated"] = str(folder / "truncated.snap")
    (folder / "foreign.json").write_text('{"not": "a snapshot"}\n')
    made["foreign"] = str(folder / "foreign.json")
    made["missing"] = str(folder / "missing.snap")
    made["directory"] = str(folder)
    made["folder"] = folder
    return made


def heaptrace_cli(*args):
    return subprocess.run([sys.executable, "-m", "heaptrace", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def ok(*args):
    result = heaptrace_cli(*args)
    assert result.returncode == 0, (args, result.stderr)
    return result


def one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith("heaptrace: error: "), message
    for word in words:
        assert word in message, message
    return message


def version(path):
    with open(path, "rb") as stream:
        return int.from_bytes(stream.read(12)[8:12], "little")


def test_sampled_and_native_snapshots_are_format_version_2(files):
    assert version(files["sampled-1"]) == 2
    assert version(files["exact"]) == 1
    if "native" not in files:
        pytest.skip("native frames need Linux and hashlib on OpenSSL")
    assert version(files["native"]) == 2
    loaded = heaptrace.Snapshot.load(files["native"])
    assert any(trace.native_frames for trace in loaded.traces)


def test_every_new_command_reads_sampled_and_native_snapshots(files, tmp_path):
    out = tmp_path / "out"
    for name in ("sampled-3", "native"):
        if name not in files:
            continue
        path = files[name]
        summary = json.loads(ok("export", path, "-o", out, "--json").stdout)
        assert summary["sampling_interval"] == (INTERVAL if name.startswith("sampled")
                                                else None)
        assert gzip.decompress(out.read_bytes())
        folded = ok("export", "-f", "collapsed", path).stdout.splitlines()
        top = json.loads(ok("top", path, "--json").stdout)
        assert sum(int(line.rpartition(" ")[2]) for line in folded) == top["total"]["size"]
        page = json.loads(ok("report", path, "-o", out, "--json").stdout)
        assert page["total"] == top["total"]
        html = out.read_text()
        assert ("sampled every 65,536 bytes" in html) == name.startswith("sampled")
    diff = json.loads(ok("report", "--diff", files["sampled-1"], files["sampled-3"],
                         "-o", out, "--json").stdout)
    assert diff["total"]["size_diff"] > 0
    series = [files[f"sampled-{i}"] for i in (1, 2, 3)]
    summary = json.loads(ok("report", *series, "-o", out, "--json").stdout)
    assert summary["snapshots"] == series
    assert "Growth from the first snapshot to the last" in out.read_text()


def _pprof(go, *args):
    result = subprocess.run([go, "tool", "pprof", *args], capture_output=True, text=True,
                            timeout=120, env=tool_env())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pprof_of_a_sampled_snapshot_carries_its_period_and_estimates(files, tmp_path):
    go = require(shutil.which("go"), "go (Debian's golang-go)")
    path = files["sampled-3"]
    profile = tmp_path / "heap.pb.gz"
    ok("export", path, "-o", profile)
    raw = _pprof(go, "-raw", str(profile))
    assert "PeriodType: space bytes" in raw, raw[:1500]
    assert f"Period: {INTERVAL}\n" in raw, raw[:1500]
    assert re.search(r"Comment: sampled: .*estimates", raw), raw[:1500]
    # The values are the estimates `heaptrace top` shows, not the sizes of
    # the sampled blocks alone.
    top = json.loads(ok("top", path, "--json", "--limit", "0").stdout)
    sampled_bytes = sum(trace.size for trace in heaptrace.Snapshot.load(path).traces)
    assert top["total"]["size"] > 2 * sampled_bytes
    for index, field in (("inuse_space", "size"), ("inuse_objects", "count")):
        text = _pprof(go, "-top", "-lines", "-nodefraction=0", f"-sample_index={index}",
                      "-unit=B" if field == "size" else "-unit=count", str(profile))
        total = re.search(r"of (\d+)(B)? total", text)
        assert total and int(total.group(1)) == top["total"][field], text
    # An exact snapshot keeps the period 1 and says nothing of sampling.
    exact = tmp_path / "exact.pb.gz"
    ok("export", files["exact"], "-o", exact)
    raw = _pprof(go, "-raw", str(exact))
    assert "Period: 1\n" in raw and "sampled" not in raw, raw[:1500]


def _unreadable(tmp_path, files):
    """A path that exists but cannot be read: no permission, or for root
    (who may read anything) a file whose reads fail."""
    if os.getuid() != 0:
        path = tmp_path / "locked.snap"
        shutil.copy(files["sampled-1"], path)
        path.chmod(0)
        return str(path)
    return "/proc/self/mem"


def test_bad_files_give_one_line_errors_in_every_command(files, tmp_path):
    good, other = files["sampled-1"], files["sampled-2"]
    out = tmp_path / "out"
    bad = {
        "missing": ("no such file",),
        "directory": ("is a directory",),
        "foreign": ("not a heaptrace snapshot",),
        "truncated": ("truncated",),
        "unreadable": ("cannot read the file",),
    }
    paths = {name: files.get(name) for name in bad}
    paths["unreadable"] = _unreadable(tmp_path, files)
    for name, words in bad.items():
        path = paths[name]
        commands = [
            ("export", path, "-o", out),
            ("export", "-f", "collapsed", path, "-o", out),
            ("report", "--diff", path, good, "-o", out),
            ("report", "--diff", good, path, "-o", out),
        ]
        if name != "directory":     # report reads a folder as a series
            commands += [("report", path, "-o", out),
                         ("report", good, other, path, "-o", out)]
        for args in commands:
            message = one_line_error(heaptrace_cli(*args), *words)
            assert path in message, message
    assert not out.exists()


def test_mixed_sampling_intervals_are_refused_in_one_line(files, tmp_path):
    sampled, exact = files["sampled-1"], files["exact"]
    out = tmp_path / "out.html"
    for args in (("diff", exact, sampled), ("report", "--diff", exact, sampled, "-o", out)):
        one_line_error(heaptrace_cli(*args), "sampling intervals", sampled, exact)
    # A series whose ends differ still gets its timeline, without the growth graph.
    ok("report", exact, files["sampled-2"], files["sampled-3"], "-o", out)
    page = out.read_text()
    assert "no growth graph" in page and "Growth from the first" not in page
