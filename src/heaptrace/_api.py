"""The Python objects of heaptrace's tracemalloc-compatible API.

The C engine hands out *raw traces*, plain tuples

    (domain: int, size: int, frames: tuple, total_nframe: int or None)

where ``frames`` is a tuple of ``(filename, lineno)`` pairs, most recent call
first.  Everything in this module works on that contract alone, so it can be
exercised with made-up traces, and the classes wrap raw tuples lazily: a
snapshot of a million blocks holds a million tuples, not a million objects.

Results, ordering, exceptions and the text of str()/repr() are those of the
standard ``tracemalloc`` module, so that ``import heaptrace as tracemalloc``
changes nothing but speed.
"""

import fnmatch
import io
import json
import linecache
import math
import os.path
import pickle
import stat
import struct
import sys
from collections.abc import Iterable, Sequence
from functools import total_ordering

try:
    from heaptrace._core import SnapshotData as _SnapshotData
except ImportError:  # pragma: no cover - engine missing or built without it
    _SnapshotData = None
try:
    from heaptrace._core import SnapshotFormatError
except ImportError:  # pragma: no cover - engine missing or built without it
    class SnapshotFormatError(ValueError):
        """A snapshot file is truncated, corrupted or not a snapshot."""
        status = None

_SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def _format_size(size, sign):
    """Render a byte count the way tracemalloc prints it.

    The number is given in the first unit of B, KiB, MiB, GiB, TiB in which
    it stays below 10 * 1024 (TiB however large it is).  Outside bytes, a
    number below 100 gets one decimal ("12.5 KiB"), a larger one none
    ("4096 KiB").  With *sign* true the sign is always written ("+12.5 MiB",
    "-12 B").
    """
    flag = "+" if sign else ""
    for unit in _SIZE_UNITS:
        if unit != "B" and abs(size) < 100:
            return "%s %s" % (format(size, flag + ".1f"), unit)
        if abs(size) < 10 * 1024 or unit == _SIZE_UNITS[-1]:
            return "%s %s" % (format(size, flag + ".0f"), unit)
        size /= 1024


def _average_suffix(size, count):
    """The ", average=..." tail of a statistic's text; empty for no block."""
    if not count:
        return ""
    return ", average=" + _format_size(size / count, False)


# -- Frames and tracebacks -----------------------------------------------------


@total_ordering
class Frame:
    """A location in the source: one frame of a traceback.

    A frame wraps a ``(filename, lineno)`` pair; it compares, hashes and
    orders exactly like that pair.
    """

    __slots__ = ("_frame",)

    def __init__(self, frame):
        self._frame = frame

    @property
    def filename(self):
        """The name of the file, as the code object recorded it."""
        return self._frame[0]

    @property
    def lineno(self):
        """The line number, 0 when it is not known."""
        return self._frame[1]

    def __eq__(self, other):
        if isinstance(other, Frame):
            return self._frame == other._frame
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Frame):
            return self._frame < other._frame
        return NotImplemented

    def __hash__(self):
        return hash(self._frame)

    def __str__(self):
        return "%s:%s" % (self.filename, self.lineno)

    def __repr__(self):
        return "<Frame filename=%r lineno=%r>" % (self.filename, self.lineno)


@total_ordering
class Traceback(Sequence):
    """The call stack of an allocation: a sequence of Frame objects.

    The engine records frames most recent first; a Traceback stores and
    yields them the other way round, from the oldest call to the allocation
    site.  *total_nframe* is how deep the stack really was before it was cut
    to the traceback limit, or None when nobody counted.  Equality, hashing
    and ordering only look at the frames, never at *total_nframe*.
    """

    __slots__ = ("_frames", "_total_nframe")

    def __init__(self, frames, total_nframe=None):
        self._frames = tuple(reversed(frames))
        self._total_nframe = total_nframe

    @property
    def total_nframe(self):
        """The depth of the stack before truncation, or None."""
        return self._total_nframe

    def __len__(self):
        return len(self._frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(Frame(pair) for pair in self._frames[index])
        return Frame(self._frames[index])

    def __contains__(self, frame):
        return frame._frame in self._frames

    def __eq__(self, other):
        if isinstance(other, Traceback):
            return self._frames == other._frames
        return NotImplemented

    def __lt__(self, other):
        if isinstance(other, Traceback):
            return self._frames < other._frames
        return NotImplemented

    def __hash__(self):
        return hash(self._frames)

    def __str__(self):
        # Like tracemalloc, name the oldest frame (index 0).
        return str(self[0])

    def __repr__(self):
        text = "<Traceback %s" % (tuple(self),)
        if self._total_nframe is not None:
            text += " total_nframe=%s" % (self._total_nframe,)
        return text + ">"

    def format(self, limit=None, most_recent_first=False):
        """Return the traceback as lines of text, like the traceback module.

        Each frame gives a ``  File "name", line N`` line, followed by the
        stripped source line when linecache can find it.  A positive *limit*
        keeps only the *limit* most recent frames, a negative one leaves out
        the ``-limit`` most recent frames, and 0 leaves nothing.  Frames run
        from the oldest to the most recent unless *most_recent_first* is set.
        """
        frames = self._frames
        if limit is not None:
            frames = frames[-limit:] if limit > 0 else frames[:limit]
        if most_recent_first:
            frames = frames[::-1]
        lines = []
        for filename, lineno in frames:
            lines.append('  File "%s", line %s' % (filename, lineno))
            # Looked up at call time on purpose: callers patch linecache.
            source = linecache.getline(filename, lineno).strip()
            if source:
                lines.append("    " + source)
        return lines


# -- Traces --------------------------------------------------------------------


class NativeFrame:
    """One frame of a native block's C call path (native_frames=True).

    *function* is the name of the symbol the address falls in, or None
    when the object exports none there; *library* the path of the shared
    object (``"<unknown>"`` when no loaded object holds the address); and
    *offset* the address of the call inside that object (relative to where
    it is loaded), as ``addr2line -e library -f offset`` takes it.
    """

    __slots__ = ("function", "library", "offset")

    def __init__(self, function, library, offset):
        self.function = function
        self.library = library
        self.offset = offset

    def _key(self):
        return (self.function, self.library, self.offset)

    def __eq__(self, other):
        if isinstance(other, NativeFrame):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self):
        return hash(self._key())

    def __str__(self):
        return "%s (%s+%#x)" % (self.function or "??", self.library, self.offset)

    def __repr__(self):
        return "<NativeFrame function=%r library=%r offset=%#x>" % self._key()


def _native_frames(raw):
    """NativeFrame objects of raw (function, library, offset) tuples."""
    return tuple(NativeFrame(*frame) for frame in raw)


class Trace:
    """One traced memory block: its domain, size and allocation traceback."""

    __slots__ = ("_trace", "_native")

    def __init__(self, trace, _native=()):
        self._trace = trace
        self._native = _native

    @property
    def native_frames(self):
        """The C call path of a native block (start(native=True,
        native_frames=True)), innermost first, as NativeFrame objects; ()
        for any other block."""
        native = self._native
        if native and not isinstance(native[0], NativeFrame):
            native = self._native = _native_frames(native)
        return native

    @property
    def domain(self):
        """The address space of the block (0 for Python's own allocators)."""
        return self._trace[0]

    @property
    def size(self):
        """The size of the block in bytes."""
        return self._trace[1]

    @property
    def traceback(self):
        """Where the block was allocated, as a Traceback."""
        return Traceback(*self._trace[2:])

    def __eq__(self, other):
        if isinstance(other, Trace):
            return self._trace == other._trace
        return NotImplemented

    def __hash__(self):
        return hash(self._trace)

    def __str__(self):
        return "%s: %s" % (self.traceback, _format_size(self.size, False))

    def __repr__(self):
        return "<Trace domain=%s size=%s, traceback=%r>" % (
            self.domain, _format_size(self.size, False), self.traceback)


class _Traces(Sequence):
    """The traces of a snapshot: a read-only sequence of Trace objects.

    It holds either a list of raw trace tuples (in ``_traces``), or a
    SnapshotData of the C engine (in ``_data``) from which raw tuples are
    made on demand; reading ``_traces`` then builds the list once.  A Trace
    is only built when one is asked for.  The SnapshotData made from a list
    (for the analysis in C) is kept only while the list holds the very same
    raw tuples, in the same order: ``_data_source`` keeps a tuple of them,
    and every analysis first compares the list with it item by item (by
    identity, in C), so that any edit of the list, in place or not, is seen.
    """

    # No __slots__: a pickled snapshot restores ``_traces`` through the
    # instance dict, in the standard module's pickles too.

    def __init__(self, traces):
        self._traces = traces

    @classmethod
    def _from_data(cls, data):
        """A _Traces over a SnapshotData, without a list of raw tuples."""
        self = cls.__new__(cls)
        self._data = data
        return self

    def __getattr__(self, name):
        # Only reached when ``_traces`` is not in the instance dict yet.
        data = self.__dict__.get("_data")
        if name != "_traces" or data is None:
            raise AttributeError(name)
        traces = self._traces = data.raw_list()
        self._data_source = (tuple(traces),)
        return traces

    def __getstate__(self):
        # Pickle the raw tuples only, as the standard module does.
        return {"_traces": self._traces}

    def _snapdata(self, traceback_limit, sampling_interval=0):
        """The SnapshotData of these traces, made from the list if needed,
        with the given sampling interval (0: exact).

        Raise TypeError, ValueError or OverflowError when the raw tuples do
        not fit the C tables (then only the Python code can analyse them).
        """
        data = self._snapdata_any(traceback_limit, sampling_interval)
        if data.sampling_interval != sampling_interval:
            # The Snapshot's interval was set by hand: same traces, other
            # weights.
            limit = traceback_limit
            if type(limit) is not int or not 0 <= limit < 2**31:
                limit = 0
            data = _SnapshotData.from_raw(data.raw_list(), limit, legacy=False,
                                          sampling_interval=sampling_interval)
        return data

    def _snapdata_any(self, traceback_limit, sampling_interval):
        state = self.__dict__
        if "_traces" not in state:
            return state["_data"]
        traces = state["_traces"]
        source = state.get("_data_source")
        if source is not None and _SnapshotData.same_items(traces, source[0]):
            if source[1:]:
                raise TypeError("raw traces not supported by SnapshotData")
            return state["_data"]
        if type(traceback_limit) is not int or not 0 <= traceback_limit < 2**31:
            traceback_limit = 0
        items = tuple(traces)
        try:
            data = _SnapshotData.from_raw(items, traceback_limit, legacy=False,
                                          sampling_interval=sampling_interval)
        except (TypeError, ValueError, OverflowError):
            self._data_source = (items, "unsupported")
            raise
        self._data = data
        self._data_source = (items,)
        return data

    def __len__(self):
        if "_traces" in self.__dict__:
            return len(self._traces)
        return len(self._data)

    def __getitem__(self, index):
        state = self.__dict__
        if "_traces" not in state and type(index) is int:
            data = self._data
            return Trace(data.raw(index), data.native(index))
        if isinstance(index, slice):
            if "_traces" not in state:
                data = self._data
                return tuple(Trace(data.raw(i), data.native(i))
                             for i in range(len(data))[index])
            return tuple(Trace(raw) for raw in self._traces[index])
        raw = self._traces[index]
        return Trace(raw, self._native_of(index, raw))

    def _native_of(self, index, raw):
        """The native frames of trace *index* of the list, while the list
        still holds the engine's own tuple there; () otherwise."""
        state = self.__dict__
        data = state.get("_data")
        source = state.get("_data_source")
        if data is None or source is None or source[1:] or type(index) is not int:
            return ()
        items = source[0]
        if len(items) != len(self._traces) or len(items) != len(data):
            return ()
        if index < 0:
            index += len(items)
        if not 0 <= index < len(items) or items[index] is not raw:
            return ()
        return data.native(index)

    def __contains__(self, trace):
        return trace._trace in self._traces

    def __eq__(self, other):
        if isinstance(other, _Traces):
            return self._traces == other._traces
        return NotImplemented

    def __repr__(self):
        return "<Traces len=%s>" % len(self)


# -- Statistics ----------------------------------------------------------------


class Statistic:
    """The memory allocated at one place: total size and number of blocks.

    Snapshot.statistics() returns these, biggest first.
    """

    __slots__ = ("traceback", "size", "count")

    def __init__(self, traceback, size, count):
        self.traceback = traceback
        self.size = size
        self.count = count

    def _values(self):
        return (self.traceback, self.size, self.count)

    def _sort_key(self):
        """Order of Snapshot.statistics(), which sorts on it in reverse."""
        return (self.size, self.count, self.traceback)

    def __eq__(self, other):
        if isinstance(other, Statistic):
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self):
        return hash(self._values())

    def __str__(self):
        return "%s: size=%s, count=%i%s" % (
            self.traceback, _format_size(self.size, False), self.count,
            _average_suffix(self.size, self.count))

    def __repr__(self):
        return "<Statistic traceback=%r size=%i count=%i>" % self._values()


class StatisticDiff:
    """How the memory allocated at one place changed between two snapshots.

    *size* and *count* describe the newer snapshot; *size_diff* and
    *count_diff* are new minus old.  Snapshot.compare_to() returns these,
    biggest change first.
    """

    __slots__ = ("traceback", "size", "size_diff", "count", "count_diff")

    def __init__(self, traceback, size, size_diff, count, count_diff):
        self.traceback = traceback
        self.size = size
        self.size_diff = size_diff
        self.count = count
        self.count_diff = count_diff

    def _values(self):
        return (self.traceback, self.size, self.size_diff,
                self.count, self.count_diff)

    def _sort_key(self):
        """Order of Snapshot.compare_to(), which sorts on it in reverse."""
        return (abs(self.size_diff), self.size,
                abs(self.count_diff), self.count, self.traceback)

    def __eq__(self, other):
        if isinstance(other, StatisticDiff):
            return self._values() == other._values()
        return NotImplemented

    def __hash__(self):
        return hash(self._values())

    def __str__(self):
        return "%s: size=%s (%s), count=%i (%+i)%s" % (
            self.traceback,
            _format_size(self.size, False),
            _format_size(self.size_diff, True),
            self.count, self.count_diff,
            _average_suffix(self.size, self.count))

    def __repr__(self):
        return ("<StatisticDiff traceback=%r size=%i (%+i) count=%i (%+i)>"
                % self._values())


# -- Filters -------------------------------------------------------------------


def _normalize_filename(filename):
    """Normalise a file name, or a pattern, before it is matched.

    The case is folded where the platform ignores it, and a ``.pyc`` suffix
    is read as ``.py`` so that a pattern on a module matches either file.
    """
    filename = os.path.normcase(filename)
    if filename.endswith(".pyc"):
        return filename[:-1]
    return filename


class BaseFilter:
    """The base of trace filters.

    *inclusive* says which way the filter works: an inclusive filter keeps
    only the traces it matches, an exclusive one drops them.  Subclasses
    implement ``_match(raw_trace)``, which returns whether the trace passes
    the filter (already taking *inclusive* into account).
    """

    def __init__(self, inclusive):
        self.inclusive = inclusive

    def _match(self, trace):
        """Return True if the raw trace passes this filter."""
        raise NotImplementedError


class Filter(BaseFilter):
    """Filter traces on the file name and line number of their frames.

    *filename_pattern* is an fnmatch pattern.  *lineno*, when not None, must
    equal the frame's line number too.  Only the most recent frame is looked
    at, unless *all_frames* is true, in which case any frame may match.  With
    *domain* set, the filter only concerns traces of that domain: an
    inclusive filter then also requires the domain, an exclusive one lets
    the other domains through.
    """

    def __init__(self, inclusive, filename_pattern,
                 lineno=None, all_frames=False, domain=None):
        super().__init__(inclusive)
        self._filename_pattern = _normalize_filename(filename_pattern)
        self.lineno = lineno
        self.all_frames = all_frames
        self.domain = domain

    @property
    def filename_pattern(self):
        """The fnmatch pattern, normalised (read-only)."""
        return self._filename_pattern

    def _frame_matches(self, filename, lineno):
        """Whether a frame matches the pattern and line, whatever *inclusive*."""
        if not fnmatch.fnmatch(_normalize_filename(filename),
                               self._filename_pattern):
            return False
        return self.lineno is None or lineno == self.lineno

    def _match_frame(self, filename, lineno):
        """Whether a trace allocated at this frame passes the filter."""
        return self._frame_matches(filename, lineno) ^ (not self.inclusive)

    def _match_traceback(self, frames):
        """Whether raw *frames* (most recent first) pass the filter."""
        if not self.all_frames:
            filename, lineno = frames[0]
            return self._match_frame(filename, lineno)
        if any(self._frame_matches(filename, lineno)
               for filename, lineno in frames):
            return self.inclusive
        return not self.inclusive

    def _match(self, trace):
        domain, _size, frames, _total_nframe = trace
        passed = self._match_traceback(frames)
        if self.domain is None:
            return passed
        if self.inclusive:
            return passed and domain == self.domain
        return passed or domain != self.domain


class DomainFilter(BaseFilter):
    """Filter traces on their address space (domain)."""

    def __init__(self, inclusive, domain):
        super().__init__(inclusive)
        self._domain = domain

    @property
    def domain(self):
        """The domain this filter is about (read-only)."""
        return self._domain

    def _match(self, trace):
        domain, _size, _frames, _total_nframe = trace
        return (domain == self.domain) ^ (not self.inclusive)


def _equal_domains(domains, domain):
    """The domains of *domains* that compare equal to *domain*."""
    return tuple(value for value in domains if value == domain)


def _filter_specs(data, filters):
    """Describe *filters* for SnapshotData.filter(), or return None when one
    of them needs the Python code (a subclass, or a line number that is not
    an int).

    The file name pattern of a Filter is matched once per distinct file name
    of the snapshot, exactly as Filter._frame_matches would match it.
    """
    specs = []
    strings = domains = None
    for trace_filter in filters:
        kind = type(trace_filter)
        if kind is DomainFilter:
            if domains is None:
                domains = data.domains()
            specs.append((True, bool(trace_filter.inclusive), None, None,
                          False, _equal_domains(domains, trace_filter.domain)))
        elif kind is Filter:
            lineno = trace_filter.lineno
            if lineno is not None and type(lineno) not in (int, bool):
                return None
            if strings is None:
                strings = data.strings()
            if lineno is not None and not 0 <= lineno < 2**32:
                lineno = None
                match = bytes(len(strings))    # no frame has that line
            else:
                if lineno is not None:
                    lineno = int(lineno)
                pattern = trace_filter._filename_pattern
                match = bytes(
                    fnmatch.fnmatch(_normalize_filename(name), pattern)
                    for name in strings)
            if trace_filter.domain is None:
                equal = None
            else:
                if domains is None:
                    domains = data.domains()
                equal = _equal_domains(domains, trace_filter.domain)
            specs.append((False, bool(trace_filter.inclusive), match, lineno,
                          bool(trace_filter.all_frames), equal))
        else:
            return None
    return specs


def _keeps(trace, include, exclude):
    """Whether a raw trace survives a list of filters.

    It must pass at least one inclusive filter (when there is any) and every
    exclusive one.
    """
    if include and not any(f._match(trace) for f in include):
        return False
    return all(f._match(trace) for f in exclude)


# -- Snapshots -----------------------------------------------------------------


def _check_grouping(key_type, cumulative):
    """Raise ValueError for a key type that statistics cannot group by."""
    if key_type not in ("traceback", "filename", "lineno"):
        raise ValueError("unknown key_type: %r" % (key_type,))
    if cumulative and key_type not in ("lineno", "filename"):
        raise ValueError("cumulative mode cannot by used with key type %r"
                         % (key_type,))


def _group_of(key_type, cumulative):
    """The function that maps one unit of a raw traceback to its group.

    Without *cumulative* the unit is the whole traceback, and its group is
    the traceback itself, its most recent frame, or that frame's file (with
    line 0).  With *cumulative* every frame is a unit, once per occurrence,
    so a recursive call counts as many times as it appears on the stack.
    The group is given as the frames of its Traceback.
    """
    if cumulative:
        if key_type == "lineno":
            return lambda frame: (frame,)
        return lambda frame: ((frame[0], 0),)
    if key_type == "traceback":
        return lambda frames: frames
    if key_type == "lineno":
        return lambda frames: frames[:1]
    return lambda frames: ((frames[0][0], 0),)


def _diff_groups(old, new):
    """Pair two groupings into StatisticDiff objects.

    Groups of *new* come first, in their order; then the groups that only
    *old* has, with a size and count of zero.
    """
    diffs = []
    for traceback, stat in new.items():
        before = old.get(traceback)
        if before is None:
            diffs.append(StatisticDiff(traceback, stat.size, stat.size,
                                       stat.count, stat.count))
        else:
            diffs.append(StatisticDiff(traceback,
                                       stat.size, stat.size - before.size,
                                       stat.count, stat.count - before.count))
    for traceback, stat in old.items():
        if traceback not in new:
            diffs.append(StatisticDiff(traceback, 0, -stat.size,
                                       0, -stat.count))
    return diffs


# -- Snapshot files ---------------------------------------------------------------
#
# Snapshot.dump writes heaptrace's own format (docs/format.md) with the
# snapshot's other attributes as JSON in its meta section.  Snapshot.load
# reads that, and the pickles the standard module's Snapshot.dump writes,
# through an unpickler that can only rebuild plain data and stand-ins for
# the two snapshot classes.

_MAGIC = b"\x89HTSNAP\n"
# The header of a heaptrace file: its size, and where the five u64 section
# lengths are (docs/format.md); the file is the header, the sections and a
# 4-byte checksum.
_HEADER_SIZE = 84
_SECTION_LENGTHS = struct.Struct("<5Q")
_SECTION_LENGTHS_AT = 40
# The most bytes Snapshot.load takes from a pipe, FIFO, socket or device,
# whose size is not known before reading (a regular file is read up to its
# size).  Far above any real snapshot piped in, far below running out of
# memory on an endless stream.
_STREAM_LIMIT = 1 << 30
# Nesting deeper than this in an attribute's value is refused.
_MAX_DEPTH = 100
# The attributes the file itself stores.
_OWN_ATTRIBUTES = ("traces", "traceback_limit", "sampling_interval")
_PLAIN = "str, int, float, bool, None, lists and dicts with str keys"
_MISSING = object()


def _check_json_plain(name, value):
    """Raise TypeError unless *value* is data that JSON gives back equal."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if item is None or kind in (str, bool, float):
            continue
        if kind is int:
            if item.bit_length() > 13000:   # int('...') limit on load
                raise TypeError("Snapshot.dump: attribute %r holds an int too "
                                "large to store" % (name,))
            continue
        if depth >= _MAX_DEPTH:
            raise TypeError("Snapshot.dump: attribute %r is nested more than %d "
                            "levels deep (or holds a cycle)" % (name, _MAX_DEPTH))
        if kind is list:
            stack.extend((x, depth + 1) for x in item)
        elif kind is dict:
            for key, x in item.items():
                if type(key) is not str:
                    raise TypeError("Snapshot.dump: attribute %r holds a dict "
                                    "with a %s key; only %s can be stored"
                                    % (name, type(key).__name__, _PLAIN))
                stack.append((x, depth + 1))
        else:
            raise TypeError("Snapshot.dump: attribute %r holds a %s; only %s "
                            "can be stored" % (name, kind.__name__, _PLAIN))


def _encode_meta(snapshot):
    """The meta bytes of *snapshot*'s file: its other attributes as JSON."""
    attributes = {}
    for name, value in vars(snapshot).items():
        if name in _OWN_ATTRIBUTES:
            continue
        if type(name) is not str:
            raise TypeError("Snapshot.dump: attribute name %r is not a str"
                            % (name,))
        _check_json_plain(name, value)
        attributes[name] = value
    meta = {"attributes": attributes}
    limit = snapshot.traceback_limit
    if not (type(limit) is int and 0 <= limit < 2**31):
        _check_json_plain("traceback_limit", limit)
        meta["traceback_limit"] = limit
    return json.dumps(meta, ensure_ascii=True, separators=(",", ":")).encode()


def _decode_meta(meta):
    """The (attributes, traceback_limit or _MISSING) stored in meta bytes."""
    if not meta:
        return {}, _MISSING
    try:
        value = json.loads(meta.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise SnapshotFormatError("the meta section of the snapshot is not "
                                  "valid JSON (%s)" % (error,)) from None
    if type(value) is not dict or type(value.get("attributes", {})) is not dict:
        raise SnapshotFormatError("the meta section of the snapshot is not a "
                                  "JSON object with an 'attributes' object")
    attributes = value.get("attributes", {})
    for name, item in attributes.items():
        if name in _OWN_ATTRIBUTES:
            raise SnapshotFormatError("the meta section of the snapshot sets "
                                      "the attribute %r" % (name,))
        try:
            _check_json_plain(name, item)
        except TypeError as error:
            raise SnapshotFormatError(str(error).replace(
                "Snapshot.dump", "snapshot file")) from None
    return attributes, value.get("traceback_limit", _MISSING)


class _PickledObject:
    """What the restricted unpickler makes for one of the snapshot classes.

    It holds the pickled state in its dict and nothing else: it cannot be
    called with arguments, and takes only a dict of str keys as state.  The
    loader then checks that state and builds the real objects from it.
    """

    def __new__(cls, *args, **kwargs):
        if args or kwargs:
            raise SnapshotFormatError("the pickle passes arguments to %s"
                                      % cls._pickled_name)
        return object.__new__(cls)

    def __init__(self):
        pass

    def __setstate__(self, state):
        if type(state) is not dict or any(type(key) is not str
                                          or key.startswith("__")
                                          for key in state):
            raise SnapshotFormatError("the pickle gives %s a state that is not "
                                      "a dict of attributes" % self._pickled_name)
        self.__dict__.update(state)


class _PickledSnapshot(_PickledObject):
    _pickled_name = "Snapshot"


class _PickledTraces(_PickledObject):
    _pickled_name = "_Traces"


_PICKLE_CLASSES = {
    ("tracemalloc", "Snapshot"): _PickledSnapshot,
    ("tracemalloc", "_Traces"): _PickledTraces,
    # pickle.dump of heaptrace's own Snapshot
    (__name__, "Snapshot"): _PickledSnapshot,
    (__name__, "_Traces"): _PickledTraces,
}


class _SnapshotUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain data and the two snapshot classes."""

    def find_class(self, module, name):
        cls = _PICKLE_CLASSES.get((module, name))
        if cls is None:
            raise SnapshotFormatError(
                "the snapshot loader refuses to load global '%s.%s': a "
                "tracemalloc snapshot pickle only names tracemalloc.Snapshot "
                "and tracemalloc._Traces" % (module, name))
        return cls

    def persistent_load(self, pid):
        raise SnapshotFormatError("the snapshot loader refuses persistent ids")


def _check_pickled_plain(name, value):
    """Raise SnapshotFormatError unless *value* is plain data (scalars,
    bytes, and tuples, lists, dicts, sets of them), nested at most
    _MAX_DEPTH levels.  Each container is looked at once."""
    seen = set()
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if item is None or kind in (str, bool, int, float, bytes):
            continue
        if kind not in (tuple, list, dict, set, frozenset):
            raise SnapshotFormatError(
                "attribute %r of the pickled snapshot holds a %s object; the "
                "loader only reads plain data there" % (name, kind.__name__))
        if id(item) in seen:
            continue
        seen.add(id(item))
        if depth >= _MAX_DEPTH:
            raise SnapshotFormatError("attribute %r of the pickled snapshot is "
                                      "nested more than %d levels deep"
                                      % (name, _MAX_DEPTH))
        if kind is dict:
            stack.extend((x, depth + 1) for pair in item.items() for x in pair)
        else:
            stack.extend((x, depth + 1) for x in item)


def _snapshot_from_pickle(data):
    """Rebuild a Snapshot from the bytes of a snapshot pickle, or raise
    SnapshotFormatError."""
    _SnapshotData.check_pickle(data)
    try:
        obj = _SnapshotUnpickler(io.BytesIO(data)).load()
    except (SnapshotFormatError, MemoryError):
        raise
    except Exception as error:  # whatever the unpickler trips on
        raise SnapshotFormatError("invalid snapshot pickle (%s: %s)"
                                  % (type(error).__name__, error)) from None
    if type(obj) is not _PickledSnapshot:
        raise SnapshotFormatError("the pickle holds a %s, not a tracemalloc "
                                  "Snapshot" % type(obj).__name__)
    state = dict(obj.__dict__)
    traces = state.pop("traces", None)
    limit = state.pop("traceback_limit", None)
    if type(traces) is not _PickledTraces:
        raise SnapshotFormatError("the pickled snapshot's traces are a %s, not "
                                  "a tracemalloc _Traces" % type(traces).__name__)
    raw = traces.__dict__.get("_traces")
    if type(raw) is not list or len(traces.__dict__) != 1:
        raise SnapshotFormatError("the pickled snapshot's _Traces does not "
                                  "hold just a list of traces")
    if type(limit) is not int or not 0 <= limit < 2**31:
        raise SnapshotFormatError("the pickled snapshot's traceback_limit is "
                                  "not an int from 0 to 2**31-1: %.100r" % (limit,))
    for name, value in state.items():
        _check_pickled_plain(name, value)
    try:
        snapdata = _SnapshotData.from_raw(raw, limit, legacy=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise SnapshotFormatError("invalid trace in the pickled snapshot (%s)"
                                  % (error,)) from None
    snapshot = Snapshot._from_data(snapdata, limit)
    snapshot.__dict__.update(state)
    return snapshot


def _known_start(head):
    """Whether *head*, the first bytes of a file (at most len(_MAGIC)), can
    start a heaptrace snapshot or a snapshot pickle."""
    if not head:
        return False
    if head == _MAGIC[:len(head)]:
        return True
    return head[:1] == b"\x80" and (len(head) == 1 or head[1] in (2, 3, 4, 5))


def _read_at_most(stream, limit):
    """Up to limit + 1 bytes of *stream*, read in chunks so that memory
    follows what actually arrives."""
    chunks = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_snapshot_file(filename):
    """The bytes Snapshot.load decodes, read with a bound.

    The first bytes decide: a file that starts like neither kind of snapshot
    is not read further (so /dev/zero or an endless stream is refused at
    once).  A regular file is then read up to its size.  Anything else (a
    pipe, FIFO, socket or device) is read up to the length a heaptrace
    header declares, or for a pickle up to _STREAM_LIMIT bytes; more than
    that raises SnapshotFormatError.
    """
    with open(filename, "rb") as stream:
        head = stream.read(len(_MAGIC))
        if len(head) < len(_MAGIC) or not _known_start(head):
            return head
        info = os.fstat(stream.fileno())
        if stat.S_ISREG(info.st_mode):
            return head + stream.read(max(info.st_size - len(head), 0))
        name = os.fsdecode(filename) if isinstance(
            filename, (str, bytes, os.PathLike)) else str(filename)
        if head == _MAGIC:
            head += stream.read(_HEADER_SIZE - len(head))
            if len(head) < _HEADER_SIZE:
                return head         # the decoder says it is truncated
            total = (_HEADER_SIZE + 4
                     + sum(_SECTION_LENGTHS.unpack_from(head, _SECTION_LENGTHS_AT)))
            if total > _STREAM_LIMIT:
                raise SnapshotFormatError(
                    "%s is not a regular file and its header declares a "
                    "%d-byte snapshot, more than the %d bytes read from a "
                    "pipe or device; save it to a file first"
                    % (name, total, _STREAM_LIMIT))
            # One byte more than declared, so that trailing data is seen.
            return head + _read_at_most(stream, total - _HEADER_SIZE)
        data = head + _read_at_most(stream, _STREAM_LIMIT - len(head))
        if len(data) > _STREAM_LIMIT:
            raise SnapshotFormatError(
                "%s is not a regular file and gave more than %d bytes without "
                "ending; save the snapshot to a file first"
                % (name, _STREAM_LIMIT))
        return data


def _snapshot_from_bytes(data, filename):
    """Rebuild a Snapshot from the contents of a snapshot file."""
    if data and data[:len(_MAGIC)] == _MAGIC[:len(data)]:
        snapdata, meta = _SnapshotData.from_bytes(data)
        attributes, limit = _decode_meta(meta)
        if limit is _MISSING:
            limit = snapdata.traceback_limit
        snapshot = Snapshot._from_data(snapdata, limit)
        snapshot.__dict__.update(attributes)
        return snapshot
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return _snapshot_from_pickle(data)
    if data == b"\x80":
        error = SnapshotFormatError("truncated pickle: it ends after its first "
                                    "byte")
        error.status = "TRUNCATED"
        raise error
    what = "it is empty" if not data else "it starts with %r" % (data[:8],)
    raise SnapshotFormatError(
        "%s is neither a heaptrace snapshot nor a tracemalloc snapshot pickle "
        "(%s)" % (os.fsdecode(filename) if isinstance(filename, (str, bytes, os.PathLike))
                  else filename, what))


# The largest sampling interval (as the engine's HT_SAMPLE_MAX_INTERVAL).
_MAX_INTERVAL = 1 << 40


def _estimate(size, interval):
    """(bytes, blocks) one sampled block of *size* bytes stands for at
    *interval*: size / p and 1 / p with p = 1 - exp(-size / interval), bytes
    rounded as the engine rounds them (sampling.h)."""
    p = -math.expm1(-max(size, 1) / interval)
    return round(size / p), 1.0 / p


def _describe_interval(interval):
    return "exact" if not interval else "sampled every %d bytes" % interval


class Snapshot:
    """The traces of all the memory blocks traced at one moment.

    *traces* is a sequence of raw trace tuples (see the module docstring)
    and *traceback_limit* the number of frames the tracer kept per trace.
    take_snapshot() is the usual way to get one.

    *sampling_interval* is None when every block was traced.  Otherwise the
    traces are a sample (one per sampling_interval bytes allocated, on
    average): each trace keeps the real size of its block, while
    statistics() and compare_to() report estimates of all the blocks, each
    sampled block of size s standing for s / (1 - exp(-s / interval)) bytes.
    """

    def __init__(self, traces, traceback_limit, sampling_interval=None):
        self.traces = _Traces(traces)
        self.traceback_limit = traceback_limit
        self.sampling_interval = sampling_interval

    @classmethod
    def _from_data(cls, data, traceback_limit):
        """A Snapshot over a SnapshotData of the C engine."""
        self = cls.__new__(cls)
        self.traces = _Traces._from_data(data)
        self.traceback_limit = traceback_limit
        self.sampling_interval = data.sampling_interval or None
        return self

    def _interval(self):
        """The sampling interval as an int, 0 when exact; ValueError when the
        attribute holds anything but None or an int from 1 to 2**40."""
        value = self.__dict__.get("sampling_interval")
        if value is None:
            return 0
        if type(value) is not int or not 1 <= value <= _MAX_INTERVAL:
            raise ValueError("Snapshot.sampling_interval must be None (exact) "
                             "or an int from 1 to %d bytes, not %.100r"
                             % (_MAX_INTERVAL, value))
        return value

    def _snapdata(self):
        """The SnapshotData to analyse in C, or None when the traces need the
        Python code (no engine, or raw tuples the C tables cannot hold)."""
        traces = self.traces
        interval = self._interval()
        if _SnapshotData is None or type(traces) is not _Traces:
            return None
        try:
            return traces._snapdata(self.traceback_limit, interval)
        except (TypeError, ValueError, OverflowError):
            return None

    def dump(self, filename):
        """Write the snapshot to the file *filename*, in heaptrace's format.

        The snapshot's other attributes are stored too; they must be plain
        data (str, int, float, bool, None, lists and dicts with str keys),
        or TypeError names the first one that is not.  I/O errors raise
        OSError.
        """
        meta = _encode_meta(self)
        data = self._snapdata()
        if data is None:
            limit = self.traceback_limit
            if not (type(limit) is int and 0 <= limit < 2**31):
                limit = 0
            data = _SnapshotData.from_raw(list(self.traces._traces), limit,
                                          legacy=False,
                                          sampling_interval=self._interval())
        blob = data.to_bytes(meta)
        with open(filename, "wb") as stream:
            stream.write(blob)

    @staticmethod
    def load(filename):
        """Read a snapshot written by dump(), or by tracemalloc's dump().

        A heaptrace file is decoded and checked in C.  A pickle is read by
        an unpickler that can only rebuild plain data and the snapshot
        classes, after a check of its opcodes; nothing it names is called.
        A file that is truncated, corrupted, hostile, or neither kind raises
        SnapshotFormatError (a ValueError) saying what is wrong; I/O errors
        raise OSError.
        """
        return _snapshot_from_bytes(_read_snapshot_file(filename), filename)

    def filter_traces(self, filters):
        """Return a new Snapshot with only the traces that pass *filters*.

        *filters* is an iterable of BaseFilter objects.  A trace is kept if
        it passes at least one inclusive filter (when there is one) and all
        the exclusive ones.  With no filter the new snapshot gets a copy of
        the traces.
        """
        if not isinstance(filters, Iterable):
            raise TypeError("filters must be a list of filters, not %s"
                            % type(filters).__name__)
        if filters:
            filters = list(filters)
            data = self._snapdata()
            specs = _filter_specs(data, filters) if data is not None else None
            if specs is not None:
                try:
                    return Snapshot._from_data(data.filter(specs),
                                               self.traceback_limit)
                except IndexError:
                    pass    # an empty traceback: let the Python code raise
        else:
            data = self._snapdata()
            if data is not None:
                return Snapshot._from_data(data, self.traceback_limit)
        raw = self.traces._traces
        if filters:
            include, exclude = [], []
            for trace_filter in filters:
                if trace_filter.inclusive:
                    include.append(trace_filter)
                else:
                    exclude.append(trace_filter)
            kept = [trace for trace in raw if _keeps(trace, include, exclude)]
        else:
            kept = raw[:]
        return Snapshot(kept, self.traceback_limit,
                        self.__dict__.get("sampling_interval"))

    def _grouped(self, key_type, cumulative):
        """Sum the traces per group: a dict mapping Traceback to Statistic.

        Groups appear in the order in which the traces first reach them.
        """
        _check_grouping(key_type, cumulative)
        group_of = _group_of(key_type, cumulative)
        interval = self._interval()
        stats = {}
        groups = {}
        for _domain, size, frames, _total_nframe in self.traces._traces:
            count = 1
            if interval:
                size, count = _estimate(size, interval)
            for unit in (frames if cumulative else (frames,)):
                key = groups.get(unit)
                if key is None:
                    key = groups[unit] = Traceback(group_of(unit))
                stat = stats.get(key)
                if stat is None:
                    stats[key] = Statistic(key, size, count)
                else:
                    stat.size += size
                    stat.count += count
        if interval:
            # Blocks are summed as reals and rounded per group (at least 1).
            for stat in stats.values():
                stat.count = max(1, round(stat.count))
        return stats

    def statistics(self, key_type, cumulative=False):
        """Return Statistic objects grouped by *key_type*, biggest first.

        *key_type* is 'filename', 'lineno' or 'traceback'.  With *cumulative*
        (not for 'traceback') each block counts for every frame of its
        traceback, not only the most recent one.
        """
        _check_grouping(key_type, cumulative)
        data = self._snapdata()
        if data is not None:
            try:
                # The engine builds the Statistic objects itself.
                return data.statistics(key_type, bool(cumulative),
                                       (Statistic, Traceback))
            except (IndexError, OverflowError, ValueError):
                pass    # let the Python code give the standard outcome
        stats = list(self._grouped(key_type, cumulative).values())
        stats.sort(key=Statistic._sort_key, reverse=True)
        return stats

    def _native_paths(self, key_type, cumulative=False):
        """The C call paths of the native blocks, per group of statistics().

        A dict mapping each group's Traceback to a list of (size, count,
        native_frames) of the distinct call paths of its blocks, biggest
        first.  Only blocks with native frames count; a snapshot without
        any (or of raw tuples) gives {}.
        """
        _check_grouping(key_type, cumulative)
        data = self._snapdata()
        if data is None:
            return {}
        group_of = _group_of(key_type, cumulative)
        sums = {}
        for index, stack in data.native_index():
            _domain, size, frames, _total = data.raw(index)
            if not frames:
                continue
            for unit in (frames if cumulative else (frames,)):
                key = (group_of(unit), stack)
                entry = sums.get(key)
                if entry is None:
                    sums[key] = [size, 1]
                else:
                    entry[0] += size
                    entry[1] += 1
        paths = {}
        for (group, stack), (size, count) in sums.items():
            paths.setdefault(Traceback(group), []).append((size, count, stack))
        for group, items in paths.items():
            items.sort(key=lambda item: (-item[0], -item[1], item[2]))
            paths[group] = [(size, count, _native_frames(data.native_stack(stack)))
                            for size, count, stack in items]
        return paths

    def compare_to(self, old_snapshot, key_type, cumulative=False):
        """Return StatisticDiff objects from *old_snapshot* to this one.

        Grouping works as in statistics(); the biggest change comes first.
        """
        _check_grouping(key_type, cumulative)
        if isinstance(old_snapshot, Snapshot):
            new_interval = self._interval()
            old_interval = old_snapshot._interval()
            if new_interval != old_interval:
                raise ValueError(
                    "cannot compare snapshots taken with different sampling "
                    "intervals (%s and %s): their estimates do not mix; take "
                    "both with the same sampling_interval"
                    % (_describe_interval(new_interval),
                       _describe_interval(old_interval)))
        data = self._snapdata()
        old_data = (old_snapshot._snapdata()
                    if data is not None and isinstance(old_snapshot, Snapshot)
                    else None)
        if old_data is not None:
            try:
                return data.compare_to(old_data, key_type, bool(cumulative),
                                       (StatisticDiff, Traceback))
            except (IndexError, OverflowError, ValueError):
                pass    # let the Python code give the standard outcome
        new = self._grouped(key_type, cumulative)
        old = old_snapshot._grouped(key_type, cumulative)
        diffs = _diff_groups(old, new)
        diffs.sort(key=StatisticDiff._sort_key, reverse=True)
        return diffs


# -- Functions that talk to the engine -------------------------------------------


def _package():
    """The heaptrace package, through which the engine is always called.

    Looking engine functions up there at call time, rather than binding them
    here, lets callers patch ``heaptrace.is_tracing`` and friends, as
    CPython's own tracemalloc tests do.
    """
    return sys.modules[__package__]


def take_snapshot():
    """Return a Snapshot of the blocks traced so far.

    Raise RuntimeError if tracing is not on.
    """
    engine = _package()
    if not engine.is_tracing():
        raise RuntimeError("the tracemalloc module must be tracing memory "
                           "allocations to take a snapshot")
    core = getattr(engine, "_core", None)
    if (_SnapshotData is not None and core is not None
            and engine._get_traces is core._get_traces
            and engine.get_traceback_limit is core.get_traceback_limit):
        # The real engine: copy its tables into C arrays, no tuple per trace.
        take = getattr(core, "_take_snapshot_data", None)
        if take is not None:
            data = take()
            snapshot = Snapshot._from_data(data, data.traceback_limit)
            native_on, _, lost = core._native_status()
            if native_on:
                # Native blocks the tracer could not record (its tables
                # could not grow): the program got them, untraced.  Kept by
                # dump/load like any other attribute.
                snapshot.untraced_native_blocks = lost
            return snapshot
        limit = core.get_traceback_limit()
        data = _SnapshotData.from_raw(core._get_traces(), limit)
        return Snapshot._from_data(data, limit)
    traces = engine._get_traces()
    interval = getattr(engine, "get_sampling_interval", None)
    return Snapshot(traces, engine.get_traceback_limit(),
                    interval() if interval is not None else None)


def get_object_traceback(obj):
    """Return the Traceback where *obj* was allocated.

    Return None if tracing is off or the allocation was not traced.
    """
    frames = _package()._get_object_traceback(obj)
    if frames is None:
        return None
    return Traceback(frames)
