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
    Snapshot,
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
from heaptrace._core import (  # noqa: F401
    _get_object_traceback,
    _get_traceback,
    _get_traces,
    clear_traces,
    get_traceback_limit,
    get_traced_memory,
    get_tracemalloc_memory,
    is_tracing,
    reset_peak,
    start,
    stop,
    track,
    untrack,
)

__version__ = "0.1.0"

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
]

# --- Exports of heaptrace's other modules -------------------------------------
# The leak-hunting helpers (find_leaks, measure, ...) are imported here and
# their names appended to __all__ by the authors of those modules.
