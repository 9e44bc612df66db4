"""Snapshot.load on files that are not regular files (issue 8.11).

A device such as /dev/zero, a pipe or a FIFO has no size to read up to and
may never end.  The loader must decide from the first bytes, refusing at
once what starts like no snapshot, and otherwise read no more than the
heaptrace header declares (or, for a pickle, than a fixed limit).  Each
stream here is fed by a thread that counts what it manages to write before
the reader closes its end; it gives up at 64 MiB, so a loader that reads
without limit fails these tests instead of eating the machine's memory.
"""
import os
import struct
import sys
import textwrap
import subprocess
import threading

import pytest

import heaptrace as ht
from heaptrace import SnapshotFormatError, _api

FEED_CAP = 64 << 20
# What a bounded reader may leave in flight: the pipe's buffer and the
# reader's own chunk.
SLACK = 4 << 20


class Feeder(threading.Thread):
    """Write *head*, then *filler* over and over, into the FIFO *path* until
    the reader goes away or FEED_CAP bytes are written."""

    def __init__(self, path, head, filler=b"\0" * 65536):
        super().__init__(daemon=True)
        self.path, self.head, self.filler = path, head, filler
        self.written = 0

    def run(self):
        try:
            with open(self.path, "wb") as stream:
                stream.write(self.head)
                self.written += len(self.head)
                while self.filler and self.written < FEED_CAP:
                    stream.write(self.filler)
                    self.written += len(self.filler)
        except (BrokenPipeError, ConnectionResetError):
            pass


def load_from_fifo(tmp_path, head, filler=b"\0" * 65536):
    path = tmp_path / "stream.snap"
    os.mkfifo(path)
    feeder = Feeder(path, head, filler)
    feeder.start()
    try:
        return ht.Snapshot.load(path), feeder
    finally:
        feeder.join(60)
        assert not feeder.is_alive()


def small_snapshot_bytes(tmp_path):
    snapshot = ht.Snapshot([(0, 10, (("a.py", 1),), 1), (1, 20, (("b.py", 2),), None)], 1)
    snapshot.dump(tmp_path / "small.snap")
    return snapshot, (tmp_path / "small.snap").read_bytes()


def test_dev_zero_is_refused_at_once():
    # In a child with an address-space limit (not under AddressSanitizer,
    # which reserves terabytes itself): a reader that kept going would hit
    # MemoryError there, not the format error.
    program = textwrap.dedent("""
        import os, resource, heaptrace
        if "asan" not in os.environ.get("LD_PRELOAD", ""):
            limit = 1 << 30
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            heaptrace.Snapshot.load("/dev/zero")
        except heaptrace.SnapshotFormatError as error:
            print(error)
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "/dev/zero is neither a heaptrace snapshot" in out.stdout


def written_after_refusal(tmp_path, head, filler=b"\0" * 65536, match=None):
    path = tmp_path / "stream.snap"
    os.mkfifo(path)
    feeder = Feeder(path, head, filler)
    feeder.start()
    with pytest.raises(SnapshotFormatError, match=match):
        ht.Snapshot.load(path)
    feeder.join(60)
    assert not feeder.is_alive()
    return feeder.written


@pytest.mark.parametrize("head", [b"hello, world\n", b"\0" * 8, b"\x80\x07junk",
                                  b"\x89HTSNAQ\n"])
def test_endless_stream_with_a_wrong_start_is_read_no_further(tmp_path, head):
    assert written_after_refusal(tmp_path, head, match="neither") < SLACK


def test_snapshot_followed_by_endless_data(tmp_path):
    # The header says how long the file is: one byte past it is enough to
    # see that the stream does not end there.
    _, data = small_snapshot_bytes(tmp_path)
    assert written_after_refusal(tmp_path, data) < SLACK


def test_header_declaring_more_than_the_stream_limit(tmp_path):
    _, data = small_snapshot_bytes(tmp_path)
    head = bytearray(data[:84])
    struct.pack_into("<Q", head, 72, 1 << 40)        # trace table length
    written = written_after_refusal(tmp_path, bytes(head), match="declares")
    assert written < SLACK


def test_endless_pickle_stream_stops_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(_api, "_STREAM_LIMIT", 1 << 20)
    written = written_after_refusal(tmp_path, b"\x80\x04", b"N" * 65536,
                                    match="more than 1048576 bytes")
    assert written < (1 << 20) + SLACK


def test_snapshots_still_load_from_pipes(tmp_path):
    snapshot, data = small_snapshot_bytes(tmp_path)
    loaded, _ = load_from_fifo(tmp_path, data, b"")
    assert loaded.traces._traces == snapshot.traces._traces
    import tracemalloc
    std = tracemalloc.Snapshot([(0, 7, (("c.py", 3),), 1)], 1)
    std.dump(tmp_path / "std.pickle")
    pickled = (tmp_path / "std.pickle").read_bytes()
    os.unlink(tmp_path / "stream.snap")
    loaded, _ = load_from_fifo(tmp_path, pickled, b"")
    assert loaded.traces._traces == [(0, 7, (("c.py", 3),), 1)]


def test_truncated_stream_says_truncated(tmp_path):
    _, data = small_snapshot_bytes(tmp_path)
    with pytest.raises(SnapshotFormatError, match="truncated") as info:
        load_from_fifo(tmp_path, data[:60], b"")
    assert info.value.status == "TRUNCATED"
