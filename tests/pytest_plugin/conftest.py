"""Helpers for the pytest plugin's tests: they run pytest on small projects."""

import os
import textwrap

import pytest

import heaptrace

# The pytester fixture comes from "-p pytester" in pyproject.toml's addopts:
# pytest refuses pytest_plugins in a conftest below the root.

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


@pytest.fixture
def run(pytester, monkeypatch):
    """run(*args, subprocess=False): pytest with the plugin on the project."""
    # The plugin is loaded from the module, whether or not the entry point
    # is visible from the project folder (test_entry_point checks that).
    extra = ["-p", "no:cacheprovider", "-p", "no:heaptrace", "-p", "heaptrace.pytest_plugin"]
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", HEAPTRACE_DIR + (os.pathsep + path if path else ""))

    def run(*args, subprocess=False):
        if subprocess:
            return pytester.runpytest_subprocess(*extra, *args)
        return pytester.runpytest_inprocess(*extra, *args)

    return run


@pytest.fixture
def run_sub(run):
    """run(*args) in a subprocess."""
    return lambda *args: run(*args, subprocess=True)


def outcomes(result) -> dict:
    """{test name: outcome} from the -rA summary lines of a run."""
    found = {}
    for line in result.outlines:
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "ERROR", "SKIPPED"):
            found[rest.split(" - ")[0].strip()] = word
    return found
