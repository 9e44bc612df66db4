"""heaptrace: trace the memory blocks Python allocates, and find leaks.

heaptrace is a drop-in replacement for the standard ``tracemalloc`` module:
``import heaptrace as tracemalloc`` gives the same functions and classes,
with the same results, backed by a faster engine written in C
(``heaptrace._core``).  The API objects live in ``heaptrace._api``.
"""

# CPython's tracemalloc tests patch ``tracemalloc.linecache.getline``; the
# attribute must exist here for them to run against heaptrace.
import linecache  # noqa: F401

# The private names come along: code written for tracemalloc reaches them,
# and patches them, on the module (take_snapshot() calls _get_traces()
# through the package for that reason).
from heaptrace._api import (  # noqa: F401
    BaseFilter,
    DomainFilter,
    Filter,
    Frame,
    NativeFrame,
    Snapshot,
    SnapshotFormatError,
    Statistic,
    StatisticDiff,
    Trace,
    Traceback,
    _format_size,
    _normalize_filename,
    _Traces,
    get_object_traceback,
    take_snapshot,
)
try:
    from heaptrace import _core
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "heaptrace's C engine (heaptrace._core) is missing or was built for "
        "another Python; reinstall heaptrace with 'pip install heaptrace' "
        "(or 'pip install .' in a checkout) using this interpreter "
        f"({exc})") from exc
if not hasattr(_core, "start"):  # the C source folder imported as a package
    raise ImportError(
        "heaptrace's C engine is not built: this is a source checkout; "
        "install it with 'pip install .' first")

from heaptrace._core import (  # noqa: F401,E402
    _get_object_traceback,
    _get_traceback,
    _get_traces,
    clear_traces,
    get_sampling_interval,
    get_traceback_limit,
    get_traced_memory,
    get_tracemalloc_memory,
    is_tracing,
    reset_peak,
    stop,
    track,
    untrack,
    NATIVE_DOMAIN,
)


def start(nframe=1, /, *, native=False, native_frames=False, sampling_interval=None,
          sampling_seed=None):
    """Start tracing Python memory allocations.

    Also set the maximum number of frames stored in the traceback of a
    trace to nframe.

    With ``sampling_interval=N`` (bytes), record a random sample of the
    allocations, on average one per N bytes allocated, and report unbiased
    estimates of sizes and counts everywhere (``sampling_seed`` makes the
    draw repeatable).

    With ``native=True``, also trace the memory that C extensions and the
    libraries they load take from ``malloc`` and its family and from
    anonymous ``mmap``, under the domain ``NATIVE_DOMAIN``, each block with
    the Python traceback of the thread that asked for it.  Raises
    RuntimeError where that cannot be done (not Linux with glibc), leaving
    tracing as it was.  Already tracing: the traceback limit stays, and
    ``native=True`` adds native tracing.

    With ``native_frames=True`` (with ``native=True``), each native block
    also keeps its C call path, up to 16 return addresses: a snapshot's
    traces then have ``native_frames`` (see NativeFrame), symbolized when
    the snapshot is taken.
    """
    if native_frames and not native:
        raise ValueError("native_frames=True needs native=True")
    was_tracing = _core.is_tracing()
    _core.start(nframe, sampling_interval=sampling_interval, sampling_seed=sampling_seed)
    if native:
        try:
            _core._native_start(bool(native_frames))
        except BaseException:
            if not was_tracing:
                _core.stop()
            raise


def trace_reuse(enabled=True):
    """Re-trace objects that CPython hands out again from its free lists
    (dicts, lists, tuples, floats...) to the line that reuses them, as the
    standard module does on Python 3.13 and newer (through the interpreter's
    reference tracer).  Off by default because it costs about 15-25% more
    on object-heavy code; find_leaks() turns it on for its hunt.  Returns
    whether it was on.  Before 3.13 the interpreter offers no such hook:
    enabling it raises RuntimeError."""
    if not getattr(_core, "RETRACE_AVAILABLE", 0):
        if enabled:
            raise RuntimeError("re-tracing reused objects needs Python 3.13 or newer "
                               "(the interpreter's reference tracer)")
        return False
    return _core._set_retrace(bool(enabled))


def is_native():
    """Return True if native memory (malloc, mmap) is being traced."""
    return _core._native_status()[0]

__version__ = "0.1.0"


def get_include():
    """Return the directory of ``heaptrace.h``, the C API for extension
    modules that want their own allocations traced (see that header)."""
    import os
    return os.path.join(os.path.dirname(__file__), "include")


__all__ = [
    # The API of the standard tracemalloc module.
    "BaseFilter",
    "DomainFilter",
    "Filter",
    "Frame",
    "Snapshot",
    "Statistic",
    "StatisticDiff",
    "Trace",
    "Traceback",
    "clear_traces",
    "get_object_traceback",
    "get_traceback_limit",
    "get_traced_memory",
    "get_tracemalloc_memory",
    "is_tracing",
    "reset_peak",
    "start",
    "stop",
    "take_snapshot",
    # heaptrace extras: trace blocks of other allocators (PyTraceMalloc_Track).
    "track",
    "untrack",
    "get_include",
    # heaptrace extras: native memory (start(native=True)).
    "NATIVE_DOMAIN",
    "NativeFrame",
    "is_native",
    # heaptrace extra: the sampling interval of the tracing in progress.
    "get_sampling_interval",
    # Raised by Snapshot.load for a file that is not a valid snapshot.
    "SnapshotFormatError",
]

# --- Leak hunting ---------------------------------------------------------------
# measure is imported eagerly: the submodule heaptrace.measure has the same
# name, and the context manager must win.  The leak finder is loaded on first
# use (its import costs a few milliseconds of dataclass set-up).
from heaptrace.measure import Measurement, measure, measured  # noqa: E402

_LAZY = {"find_leaks", "LeakReport", "Suspect"}


def __getattr__(name):
    if name in _LAZY:
        from heaptrace import leaks
        return getattr(leaks, name)
    raise AttributeError(f"module 'heaptrace' has no attribute {name!r}")


__all__ += ["find_leaks", "LeakReport", "Suspect", "measure", "measured",
            "Measurement"]
