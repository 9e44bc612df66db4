"""Leaks whose line is easy to get wrong, and who keeps them (issue 10).

Each leaking scenario marks the lines that may be named with ``# LEAK``, and
names what must appear in the chain of references that keeps the memory
(``HOLDERS``, steps expected in ``Suspect.held_by``, in order).  Controls have
no mark: nothing may be named.  Module state is cleared by reset().
"""

import asyncio
import collections
import functools
import itertools
import logging
import threading

_counter = itertools.count()

# -- A logger per request (the allocation is inside logging) -------------------


def loggers_per_request():
    logging.getLogger(f"heaptrace-tenant.{next(_counter)}")  # LEAK


# -- functools.lru_cache on a method keeps every self --------------------------


class PriceService:
    @functools.lru_cache(maxsize=None)
    def quote(self, item):
        return item * 2


def lru_cache_on_a_method():
    PriceService().quote(3)  # LEAK


# -- Saved exceptions keep their frames and locals ----------------------------

_errors = []


def _parse(n):
    payload = bytearray(256)  # LEAK
    raise ValueError(n, len(payload))  # LEAK


def saved_exceptions():
    try:
        _parse(next(_counter))
    except ValueError as error:
        _errors.append(error)


# -- Closures registered on an event bus ----------------------------------------


class EventBus:
    def __init__(self):
        self.handlers = []

    def subscribe(self, handler):
        self.handlers.append(handler)


bus = EventBus()


def closures_on_an_event_bus():
    state = bytearray(200)  # LEAK
    bus.subscribe(lambda: len(state))  # LEAK


# -- Finished asyncio tasks kept in a list --------------------------------------

_finished = []
_loop = None


async def _handle(n):
    return {"request": n, "body": bytearray(160)}  # LEAK


def finished_tasks_in_a_list():
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    task = _loop.create_task(_handle(next(_counter)))  # LEAK
    _loop.run_until_complete(task)
    _finished.append(task)


# -- Suspended generators -------------------------------------------------------

_streams = []


def _stream():
    buffer = bytearray(300)  # LEAK
    yield len(buffer)
    yield 0


def suspended_generators():
    stream = _stream()  # LEAK
    next(stream)
    _streams.append(stream)


# -- A thread-local list that only grows ------------------------------------------

_local = threading.local()


def thread_local_list():
    items = getattr(_local, "items", None)
    if items is None:
        items = _local.items = []
    items.append(bytearray(120))  # LEAK


# -- NumPy arrays in a list (their data is traced in domain 389047) --------------

_arrays = []


def numpy_arrays_in_a_list():
    import numpy

    _arrays.append(numpy.ones(512))  # LEAK


# -- Controls -----------------------------------------------------------------------

_recent = collections.deque(maxlen=200)


def bounded_deque():
    _recent.append(bytearray(100))


_batch = []


def batch_flushed_every_300_calls():
    _batch.append({"row": bytearray(80)})
    if len(_batch) >= 300:
        _batch.clear()


def numpy_temporaries():
    import numpy

    return float((numpy.ones(512) * 2).sum())


def loggers_reused():
    logging.getLogger(f"heaptrace-shared.{next(_counter) % 20}")


HOLDERS = {
    loggers_per_request: [".manager", ".loggerDict", "heaptrace-tenant."],
    lru_cache_on_a_method: ["PriceService", ".quote"],
    saved_exceptions: ["_errors"],
    closures_on_an_event_bus: ["bus", ".handlers"],
    finished_tasks_in_a_list: ["_finished"],
    suspended_generators: ["_streams"],
    thread_local_list: ["_local"],
    numpy_arrays_in_a_list: ["_arrays"],
}


def reset():
    manager = logging.Logger.manager
    with threading.Lock():
        for name in [n for n in manager.loggerDict if n.startswith("heaptrace-")]:
            del manager.loggerDict[name]
    PriceService.quote.cache_clear()
    _errors.clear()
    bus.handlers.clear()
    _finished.clear()
    for stream in _streams:
        stream.close()
    _streams.clear()
    if getattr(_local, "items", None) is not None:
        _local.items.clear()
    _arrays.clear()
    _recent.clear()
    _batch.clear()
