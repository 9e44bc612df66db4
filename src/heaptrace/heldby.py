"""What keeps leaked objects alive: roots, the search, and naming each step.

The search itself is in C (``_core._held_by``, refpath.c): it builds the
reverse index of the object graph once, finds the live objects allocated at
each suspect's call paths, and walks referrers from them to the nearest
root.  This module gives it the roots (module namespaces, the locals of every
thread's frames) and turns the chain of objects it returns into readable
steps, root first: ``["module app.cache", "_CACHE", "[1234]"]``.
"""

from __future__ import annotations

import os
import reprlib
import sys
import types
from typing import Callable, NamedTuple, Optional

#: Kinds of owned blocks (refpath.c): dict key tables, list item arrays,
#: set tables, bytearray buffers.
OWN_DICT, OWN_LIST, OWN_SET, OWN_BYTEARRAY = 1, 2, 4, 8
#: Budget of one search of the reference graph.
SEARCH_SECONDS = 2.0
#: Budget of one pass that pairs owned blocks with their owners.
OWNED_SECONDS = 1.0
#: Memory the graph may take (bytes, outside the traced heap).
MAX_BYTES = 1 << 30
#: Live objects per suspect that the search starts from.
MAX_TARGETS = 64

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40


class Found(NamedTuple):
    paths: list          # per site: list of steps, or None
    complete: bool
    limit: str           # what ran out when not complete


def search(core, sites: dict, nsites: int, own: Callable[[str], bool],
           seconds: float = SEARCH_SECONDS, max_bytes: int = MAX_BYTES) -> Found:
    """Search the paths for ``nsites`` sites (see _core._held_by for
    ``sites``); frames in files for which ``own`` is true are not roots."""
    roots, labels = _roots(own)
    result = core._held_by(sites, nsites, roots, (labels,), float(seconds), max_bytes,
                           MAX_TARGETS)
    paths = []
    for entry in result["paths"]:
        if entry is None:
            paths.append(None)
            continue
        root_index, chain = entry
        paths.append(list(labels[root_index]) + describe(chain))
    limit = "time" if result["seconds"] >= seconds else "memory"
    return Found(paths, bool(result["complete"]), limit)


def format_path(steps: list) -> str:
    return " -> ".join(steps)


def _roots(own) -> tuple:
    """The roots, and for each the steps naming it."""
    roots, labels = [], []
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict):
            roots.append(namespace)
            labels.append([f"module {name}"])
    threads = {}
    try:
        import threading

        threads = {t.ident: t.name for t in threading.enumerate()}
    except Exception:   # noqa: BLE001 - naming threads is a nicety
        pass
    for ident, frame in sys._current_frames().items():
        thread = threads.get(ident, f"thread {ident}")
        while frame is not None:
            code = frame.f_code
            if not own(code.co_filename) and code.co_name != "<module>":
                where = (f"thread {thread}: {code.co_name}() at "
                         f"{os.path.basename(code.co_filename)}:{frame.f_lineno}")
                for name, value in list(frame.f_locals.items()):
                    roots.append(value)
                    labels.append([where, name])
            frame = frame.f_back
    del frame
    return roots, labels


def describe(chain: list) -> list:
    """Name each reference of a chain of objects (root first), as steps."""
    steps = []
    for index in range(1, len(chain)):
        parent, child = chain[index - 1], chain[index]
        before = chain[index - 2] if index >= 2 else None
        step = _step(parent, child, before)
        if step:
            steps.append(step)
    return steps


def _step(parent, child, before) -> Optional[str]:
    if isinstance(parent, dict):
        if before is None:
            style = "name"      # a module's namespace, the root
        elif isinstance(before, type) or getattr(before, "__dict__", None) is parent:
            style = "attribute"
        else:
            style = "item"
        for key, value in parent.items():
            if value is child:
                if isinstance(key, str) and style == "name":
                    return key
                if isinstance(key, str) and style == "attribute":
                    return f".{key}"
                return f"[{_repr.repr(key)}]"
        for key in parent:
            if key is child:
                return f"key {_repr.repr(key)}"
        return "<dict>"
    if isinstance(parent, (list, tuple)):
        for i, value in enumerate(parent):
            if value is child:
                if isinstance(before, types.FunctionType) and parent is before.__closure__:
                    names = before.__code__.co_freevars
                    return f"<closure {names[i]}>" if i < len(names) else f"[{i}]"
                return f"[{i}]"
        return f"<{type(parent).__name__}>"
    if isinstance(parent, (set, frozenset)):
        return f"{{{_repr.repr(child)}}}"
    if isinstance(parent, type):
        if isinstance(child, dict):
            return None    # the class's namespace: the next step names the attribute
        return f"<{type(child).__name__} of class {parent.__qualname__}>"
    if isinstance(parent, types.FunctionType):
        if child is parent.__closure__:
            return None
        if child is parent.__defaults__:
            return "__defaults__"
        return f"<{type(child).__name__} of {parent.__qualname__}()>"
    if isinstance(parent, types.CellType):
        return None if isinstance(before, tuple) else "cell_contents"
    if isinstance(parent, types.FrameType):
        try:
            for name, value in parent.f_locals.items():
                if value is child:
                    return f"{parent.f_code.co_name}() local {name}"
        except Exception:   # noqa: BLE001
            pass
        return f"<frame of {parent.f_code.co_name}()>"
    if isinstance(parent, types.TracebackType):
        return "tb_frame" if child is parent.tb_frame else "tb_next"
    if isinstance(parent, BaseException):
        for name in ("__traceback__", "__context__", "__cause__"):
            if getattr(parent, name, None) is child:
                return name
        if child is parent.args:
            return "args"
    if isinstance(parent, types.MethodType) and child is parent.__self__:
        return "__self__"
    attrs = getattr(parent, "__dict__", None)
    if isinstance(attrs, dict):
        if attrs is child:
            return None    # the object's namespace: the next step names the attribute
        for name, value in attrs.items():
            if value is child:
                return f".{name}"
    return f"<{type(child).__name__}>"
