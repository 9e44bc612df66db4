"""Folded stacks, the input of flamegraph.pl, inferno and speedscope.

One line per distinct traceback: its frames from the outermost call to the
allocating line, joined by ``;``, a space and the bytes it holds.  A frame
reads ``qualname (package/module.py:LINE)``, or ``package/module.py:LINE``
when the source cannot be read.  The numbers add up to the snapshot's total.
"""

from __future__ import annotations

from . import Unsupported
from .model import FunctionNames, Profile, frame_label

FORMAT = "collapsed"
BINARY = False


def _clean(label: str) -> str:
    # ';' separates frames and a line ends a stack: neither may occur in one.
    return label.replace(";", ":").replace("\n", " ").replace("\r", " ")


def render(data, names: FunctionNames = None) -> str:
    if not isinstance(data, Profile):
        raise Unsupported("folded stacks show one snapshot, not a series")
    if data.is_diff:
        raise Unsupported("folded stacks show one snapshot, not a diff")
    names = names or FunctionNames()
    labels = {}
    lines = []
    for stack in data.stacks:
        if not stack.size:
            continue
        parts = []
        for frame in stack.frames:
            label = labels.get(frame)
            if label is None:
                label = labels[frame] = _clean(frame_label(names, *frame))
            parts.append(label)
        lines.append(f"{';'.join(parts) or '<no frame>'} {stack.size}\n")
    return "".join(lines)
