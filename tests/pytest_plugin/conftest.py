"""Helpers for the pytest plugin's tests: they run pytest on small projects."""

import importlib.metadata
import os
import textwrap

import pytest

pytest_plugins = ["pytester"]

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "src"))


def plugin_installed() -> bool:
    """Whether heaptrace is installed with its pytest11 entry point (as
    scripts/test-all.sh installs it); otherwise the tests load the plugin
    from the source tree with -p."""
    return any(ep.value == "heaptrace.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


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
    extra = ["-p", "no:cacheprovider"]
    if not plugin_installed():
        extra += ["-p", "heaptrace.pytest_plugin"]
        path = os.environ.get("PYTHONPATH")
        monkeypatch.setenv("PYTHONPATH", SRC + (os.pathsep + path if path else ""))

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
