"""pprof: a gzipped profile.proto, read by ``go tool pprof``, Grafana
Pyroscope, Parca and Google Cloud Profiler.

The encoder below writes the few protobuf field kinds profile.proto uses
(varints and length-delimited fields) itself, so heaptrace needs no protobuf
library.  One sample per distinct traceback with two values, ``inuse_space``
(bytes) and ``inuse_objects`` (count); one location per ``file:line``, one
function per Python function (its qualified name, read from the source, else
the file name).  The snapshot's time becomes ``time_nanos``.  The period
(``period_type`` space/bytes) is 1 for an exact snapshot; a sampled snapshot
carries its sampling interval there, and its values are already the
estimates of all the blocks (as Go's own heap profiles are scaled), so tools
show them as they are; a comment says so.
"""

from __future__ import annotations

import gzip

from . import Unsupported
from .model import FunctionNames, Profile, short_path

FORMAT = "pprof"
BINARY = True

# profile.proto field numbers.
_PROFILE_SAMPLE_TYPE, _PROFILE_SAMPLE, _PROFILE_LOCATION, _PROFILE_FUNCTION = 1, 2, 4, 5
_PROFILE_STRING_TABLE, _PROFILE_TIME_NANOS, _PROFILE_PERIOD_TYPE = 6, 9, 11
_PROFILE_PERIOD, _PROFILE_COMMENT, _PROFILE_DEFAULT_SAMPLE_TYPE = 12, 13, 14
_VALUE_TYPE_TYPE, _VALUE_TYPE_UNIT = 1, 2
_SAMPLE_LOCATION_ID, _SAMPLE_VALUE = 1, 2
_LOCATION_ID, _LOCATION_LINE = 1, 4
_LINE_FUNCTION_ID, _LINE_LINE = 1, 2
_FUNCTION_ID, _FUNCTION_NAME, _FUNCTION_SYSTEM_NAME = 1, 2, 3
_FUNCTION_FILENAME, _FUNCTION_START_LINE = 4, 5

_VARINT, _LENGTH_DELIMITED = 0, 2
_MASK64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    """A protobuf base-128 varint; negative int64 values take ten bytes."""
    value &= _MASK64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def int_field(field: int, value: int) -> bytes:
    """A varint field; zero is left out, as proto3 does."""
    return _key(field, _VARINT) + varint(value) if value else b""


def bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, _LENGTH_DELIMITED) + varint(len(value)) + value


def packed_field(field: int, values) -> bytes:
    """A packed repeated varint field (proto3's default for scalars)."""
    return bytes_field(field, b"".join(varint(v) for v in values)) if values else b""


class _Strings:
    """The profile's string table: index 0 is the empty string."""

    def __init__(self):
        self.index = {"": 0}
        self.table = [""]

    def __call__(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.table)
            self.table.append(text)
        return found


def encode(profile: Profile, names: FunctionNames = None) -> bytes:
    """The profile.proto message of *profile*, not yet gzipped."""
    if profile.is_diff:
        raise Unsupported("pprof holds one snapshot; export the newer snapshot, "
                          "or compare two pprof files with `go tool pprof -diff_base`")
    names = names or FunctionNames()
    strings = _Strings()
    out = []

    def value_type(kind: str, unit: str) -> bytes:
        return (int_field(_VALUE_TYPE_TYPE, strings(kind))
                + int_field(_VALUE_TYPE_UNIT, strings(unit)))

    out.append(bytes_field(_PROFILE_SAMPLE_TYPE, value_type("inuse_space", "bytes")))
    out.append(bytes_field(_PROFILE_SAMPLE_TYPE, value_type("inuse_objects", "count")))

    locations = {}      # (filename, lineno) -> location id
    functions = {}      # (name, filename) -> function id
    location_messages = []
    function_messages = []

    def location_of(frame) -> int:
        found = locations.get(frame)
        if found is not None:
            return found
        filename, lineno = frame
        named = names.lookup(filename, lineno)
        # Unknown source: the file stands for the function (pprof -lines
        # still tells the lines apart).
        name, start = named if named is not None else (short_path(filename), 0)
        function_id = functions.get((name, filename))
        if function_id is None:
            function_id = functions[(name, filename)] = len(functions) + 1
            function_messages.append(bytes_field(_PROFILE_FUNCTION, (
                int_field(_FUNCTION_ID, function_id)
                + int_field(_FUNCTION_NAME, strings(name))
                + int_field(_FUNCTION_SYSTEM_NAME, strings(name))
                + int_field(_FUNCTION_FILENAME, strings(filename))
                + int_field(_FUNCTION_START_LINE, start))))
        location_id = locations[frame] = len(locations) + 1
        line = int_field(_LINE_FUNCTION_ID, function_id) + int_field(_LINE_LINE, lineno)
        location_messages.append(bytes_field(_PROFILE_LOCATION, (
            int_field(_LOCATION_ID, location_id) + bytes_field(_LOCATION_LINE, line))))
        return location_id

    for stack in profile.stacks:
        # pprof lists a sample's locations from the leaf (the allocation) out.
        ids = [location_of(frame) for frame in reversed(stack.frames)]
        out.append(bytes_field(_PROFILE_SAMPLE, (packed_field(_SAMPLE_LOCATION_ID, ids)
                                                 + packed_field(_SAMPLE_VALUE,
                                                                [stack.size, stack.count]))))
    out.extend(location_messages)
    out.extend(function_messages)
    comments = [strings(f"heaptrace snapshot {profile.source}")]
    interval = profile.sampling_interval
    if interval:
        comments.append(strings(f"sampled: one block per {interval} bytes allocated on "
                                f"average; values are estimates of all the blocks"))
    default_type = strings("inuse_space")
    period_type = bytes_field(_PROFILE_PERIOD_TYPE, value_type("space", "bytes"))
    out.extend(bytes_field(_PROFILE_STRING_TABLE, text.encode("utf-8", "backslashreplace"))
               for text in strings.table)
    if profile.timestamp:
        out.append(int_field(_PROFILE_TIME_NANOS, int(profile.timestamp * 1e9)))
    out.append(period_type)
    out.append(int_field(_PROFILE_PERIOD, interval or 1))
    out.extend(int_field(_PROFILE_COMMENT, comment) for comment in comments)
    out.append(int_field(_PROFILE_DEFAULT_SAMPLE_TYPE, default_type))
    return b"".join(out)


def render(data) -> bytes:
    if not isinstance(data, Profile):
        raise Unsupported("pprof shows one snapshot, not a series")
    # mtime=0: the same snapshot gives the same bytes.
    return gzip.compress(encode(data), mtime=0)
