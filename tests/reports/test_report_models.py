"""The pieces of the report formats that need no outside tool."""

import gzip
import textwrap

from heaptrace.reports import Unsupported, render
from heaptrace.reports.model import FunctionNames, Profile, Stack
from heaptrace.reports.pprof import encode, varint

SOURCE = textwrap.dedent('''\
    import os

    class Cache:
        def fill(self):
            data = bytearray(10)
            return data

        class Inner:
            def deep(self):
                return [1]

    def outer():
        def inner():
            return bytearray(5)
        square = lambda x: x * x
        return inner

    async def fetch():
        return b"x"
    ''')


def test_function_names_are_qualified_names(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(SOURCE)
    names = FunctionNames()
    lines = {text.strip(): number for number, text in enumerate(SOURCE.splitlines(), 1)}
    name = lambda text: names.lookup(str(path), lines[text])
    assert name("import os") == ("<module>", 1)
    assert name("data = bytearray(10)") == ("Cache.fill", lines["def fill(self):"])
    assert name("return [1]") == ("Cache.Inner.deep", lines["def deep(self):"])
    assert name("return bytearray(5)") == ("outer.<locals>.inner", lines["def inner():"])
    assert name("square = lambda x: x * x")[0] == "outer.<locals>.<lambda>"
    assert name("return inner")[0] == "outer"
    assert name('return b"x"')[0] == "fetch"


def test_unreadable_sources_are_named_by_file_and_line(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")
    names = FunctionNames()
    assert names.lookup(str(broken), 1) is None
    assert names.name(str(broken), 1).endswith("broken.py:1")
    assert names.lookup("<frozen abc>", 12) is None
    assert names.name("<frozen abc>", 12) == "<frozen abc>:12"
    assert names.lookup(str(tmp_path / "gone.py"), 3) is None


def test_varints_match_the_protobuf_encoding():
    assert varint(0) == b"\x00"
    assert varint(1) == b"\x01"
    assert varint(127) == b"\x7f"
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"      # int64 -1: ten bytes


def test_pprof_string_table_starts_empty_and_output_is_gzipped():
    profile = Profile("x.snap", [Stack((("/a/m.py", 3), ("/a/m.py", 7)), 100, 2)], 1.5)
    message = encode(profile, FunctionNames(enabled=False))
    # The first string (field 6, length 0) is "", then the sample types.
    assert message.index(b"\x32\x00") < message.index(b"inuse_space")
    assert b"inuse_objects" in message and b"/a/m.py" in message
    data = render("pprof", profile)
    assert gzip.decompress(data) == encode(profile)


def test_formats_refuse_what_they_cannot_show():
    diff = Profile("new.snap", [Stack((("/a/m.py", 3),), 10, 1, 5, 1)], None, "old.snap")
    for name in ("pprof", "collapsed"):
        try:
            render(name, diff)
        except Unsupported as error:
            assert "diff" in str(error) or "one snapshot" in str(error)
        else:
            raise AssertionError(f"{name} rendered a diff")
