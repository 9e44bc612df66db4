"""Output formats of heaptrace's reports, one module per format.

Every format module provides ``FORMAT`` (its name, as ``--format`` spells
it), ``BINARY`` (whether it writes bytes) and ``render(data)``, which turns
one of the report models of :mod:`heaptrace.reports.model` into a str (or
bytes when ``BINARY``).  A format that cannot show a kind of model raises
:class:`Unsupported`.  A new format is one new module plus its name in
:data:`FORMATS`.

The models are built by the commands (``heaptrace report``, ``export``,
``top``, ``diff``, ``trend``) from snapshots; the format modules never read
a file or a snapshot themselves.
"""

from __future__ import annotations

import importlib

__all__ = ["FORMATS", "Unsupported", "formatter", "render", "write"]

#: Format name -> module name (under heaptrace.reports).
FORMATS = {
    "text": "text",
    "json": "json",
    "html": "html",
    "pprof": "pprof",
    "collapsed": "collapsed",
}


class Unsupported(ValueError):
    """The format cannot show this kind of report."""


def formatter(name: str):
    """The module of the format *name*; KeyError for an unknown name."""
    return importlib.import_module(f"{__name__}.{FORMATS[name]}")


def render(name: str, data):
    """*data* in the format *name*: a str, or bytes for a binary format."""
    return formatter(name).render(data)


def write(name: str, data, path: str) -> None:
    """Write *data* in the format *name* to the file *path* (OSError on failure)."""
    module = formatter(name)
    output = module.render(data)
    if module.BINARY:
        with open(path, "wb") as stream:
            stream.write(output)
    else:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(output)
