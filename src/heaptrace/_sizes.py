"""Read memory sizes written the way people write them: "512 KB", "24 MB", "1.5 GiB"."""

from __future__ import annotations

import math
import re

__all__ = ["parse_size"]

# Decimal units are powers of 1000 and binary ones powers of 1024, as in
# the SI and IEC standards; the letter case does not matter.
_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
    "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3,
    "t": 1000 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4,
}

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")


def parse_size(text) -> int:
    """The number of bytes ``text`` stands for.

    ``text`` is a number of bytes (an ``int``) or a string: a number, then
    an optional unit among B, KB, MB, GB, TB (powers of 1000) and KiB, MiB,
    GiB, TiB (powers of 1024), in any letter case.  Raises ``ValueError``
    with a one-line message for anything else (negative or fractional byte
    counts, unknown units) and ``TypeError`` for other types.
    """
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise TypeError(f"expected a size such as \"24 MB\" or a number of bytes, "
                        f"got {text!r} ({type(text).__name__})")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE.fullmatch(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read {text!r} as a size "
                         f"(write it like \"512 KB\", \"24 MB\" or \"1.5 GiB\")")
    number = float(match.group(1))
    size = number * _UNITS[match.group(2).lower()]
    if not math.isfinite(size) or size >= 2 ** 63:
        raise ValueError(f"size {text!r} is too large")
    return int(round(size))
