"""Fixtures for the pytest plugin's tests: they run pytest on small projects.

The pytester fixture comes from "-p pytester" in pyproject.toml's addopts:
pytest refuses pytest_plugins in a conftest below the root.
"""

import os

import pytest

from plugin_helpers import HEAPTRACE_DIR


@pytest.fixture
def run(pytester, monkeypatch):
    """run(*args, subprocess=False): pytest with the plugin on the project."""
    # The plugin is loaded from the module, whether or not the entry point
    # is visible from the project folder (test_entry_point checks that).
    # In-process, the module is already imported, which pytest warns about.
    extra = ["-p", "no:cacheprovider", "-p", "no:heaptrace", "-p", "heaptrace.pytest_plugin",
             "-W", "ignore::pytest.PytestAssertRewriteWarning"]
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
