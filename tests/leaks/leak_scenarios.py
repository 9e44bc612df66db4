"""Leaking and non-leaking functions for the find_leaks tests.

Each leaking scenario marks the lines that hold the leaked memory with a
``# LEAK`` comment; a test passes when the first suspect is one of them.
Scenarios that are not leaks have no mark, and nothing may be named.
Module state is cleared by reset() between tests.
"""

import functools
import importlib
import itertools
import queue
import threading

_counter = itertools.count()


# -- An unbounded dict cache ---------------------------------------------------

_user_cache = {}


def fetch_user(user_id):
    if user_id not in _user_cache:
        _user_cache[user_id] = {"id": user_id, "avatar": bytearray(512)}  # LEAK
    return _user_cache[user_id]


def dict_cache():
    fetch_user(next(_counter))  # LEAK (the key)


# -- A list that grows behind a shared helper ----------------------------------

_audit_log = []


def make_record(value):
    """The shared helper: both callers below use it, only one keeps the result."""
    return {"value": value, "body": bytearray(300)}  # LEAK


def validate(value):
    record = make_record(value)
    return len(record["body"]) > 0


def audit(value):
    _audit_log.append(make_record(value))  # LEAK (the list itself)


def shared_helper():
    value = next(_counter)  # LEAK (kept in each record)
    validate(value)
    audit(value)


# -- An unbounded functools.lru_cache --------------------------------------------


@functools.lru_cache(maxsize=None)
def render_page(page):
    return bytearray(400) + page.to_bytes(8, "little")  # LEAK


def unbounded_lru_cache():
    render_page(next(_counter))  # LEAK (keys and the cache's table)


# -- A bounded functools.lru_cache (control) -------------------------------------


@functools.lru_cache(maxsize=256)
def render_thumbnail(page):
    return bytearray(400) + page.to_bytes(8, "little")


def bounded_lru_cache():
    render_thumbnail(next(_counter))


# -- Closures kept in a global list ----------------------------------------------

_callbacks = []


def register_callbacks():
    ticket = next(_counter)  # LEAK (captured)
    _callbacks.append(lambda: ticket + 1)  # LEAK


# -- A slow leak behind a large cache that fills once ----------------------------

_tiles = {}
_history = []


def render_tile():
    n = next(_counter)
    key = n % 2000
    if key not in _tiles:
        _tiles[key] = bytearray(4096)  # the cache: 8 MiB, full after 2000 calls
    if n % 4 == 0:
        _history.append(str(n))  # LEAK: a few bytes per call


# -- A sawtooth buffer (control) ---------------------------------------------------

_pending = []


def buffered_write():
    _pending.append(bytearray(200))
    if len(_pending) >= 100:
        _pending.clear()  # the flush


# -- Garbage cycles (control) ------------------------------------------------------


def make_cycle():
    node = {"payload": bytearray(1000)}
    node["self"] = node


# -- A lazy import (control) -------------------------------------------------------

lazy_module_name = None  # set by the test to a module it wrote


def lazy_import():
    module = importlib.import_module(lazy_module_name)
    return module.TABLE[0]


# -- A leak in a worker thread -------------------------------------------------------

_jobs = queue.Queue()
_results = []
_worker = None


def _work():
    while True:
        job = _jobs.get()
        if job is None:
            _jobs.task_done()
            return
        _results.append(bytearray(300))  # LEAK
        _jobs.task_done()


def submit_job():
    global _worker
    if _worker is None:
        _worker = threading.Thread(target=_work, daemon=True)
        _worker.start()
    _jobs.put(1)
    _jobs.join()


def stop_worker():
    global _worker
    if _worker is not None:
        _jobs.put(None)
        _worker.join()
        _worker = None


# -- A block that reallocates larger ---------------------------------------------------

_journal = bytearray()


def append_journal():
    _journal.extend(b"entry-0123456789" * 4)  # LEAK


# -- Nothing kept (control) -------------------------------------------------------------


def pure_work():
    words = [str(i) for i in range(50)]
    return len(" ".join(words))


def reset():
    """Forget everything the scenarios kept."""
    _user_cache.clear()
    _audit_log.clear()
    render_page.cache_clear()
    render_thumbnail.cache_clear()
    _callbacks.clear()
    _tiles.clear()
    _history.clear()
    _pending.clear()
    stop_worker()
    _results.clear()
    del _journal[:]
