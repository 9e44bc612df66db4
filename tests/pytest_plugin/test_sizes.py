"""Sizes written the usual ways, and the one-line errors for the others."""

import pytest

from heaptrace._sizes import parse_size


@pytest.mark.parametrize("text, size", [
    ("512 KB", 512_000),
    ("24 MB", 24_000_000),
    ("24MB", 24_000_000),
    ("24 mb", 24_000_000),
    ("1.5 GiB", 1536 * 1024 * 1024),
    ("512 KiB", 512 * 1024),
    ("100", 100),
    ("100 B", 100),
    (".5 KiB", 512),
    (4096, 4096),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["24 XB", "", "MB", "-1 MB", "1e3 MB", "1,5 MB", "24 MB 3"])
def test_bad_sizes(text):
    with pytest.raises(ValueError, match="cannot read"):
        parse_size(text)


@pytest.mark.parametrize("value", [1.5, True, None, [24]])
def test_bad_types(value):
    with pytest.raises(TypeError, match="expected a size"):
        parse_size(value)


def test_negative_and_huge():
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)
    with pytest.raises(ValueError, match="too large"):
        parse_size("99999999999 TiB")
