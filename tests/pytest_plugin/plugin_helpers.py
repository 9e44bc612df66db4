"""Helpers for the pytest plugin's tests (named apart from conftest.py, which
other test folders have too)."""

import os
import textwrap

import heaptrace

# Where the heaptrace under test is imported from (the source tree or an
# installed copy); the runs in subprocesses import the same one.
HEAPTRACE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(heaptrace.__file__)))


def installed() -> bool:
    """Whether heaptrace is installed (as scripts/test-all.sh does it), so
    that its pytest11 entry point loads the plugin."""
    return "site-packages" in heaptrace.__file__.split(os.sep)


def line_of(source: str, text: str) -> int:
    """The line number of the first line of ``source`` containing ``text``."""
    for number, line in enumerate(textwrap.dedent(source).strip("\n").splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in the source")


def glob_escape(text: str) -> str:
    """``text`` as an fnmatch pattern matching itself (test ids have [])."""
    return text.replace("[", "[[]")


def outcomes(result) -> dict:
    """{test name: outcome} from the -rA summary lines of a run."""
    found = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
            found[rest.split(" - ")[0].strip()] = word
    return found
