"""Helpers of the native tests: the stop fixture, a C compiler, and shared
libraries built from source at test time."""
import os
import shutil
import subprocess
import tracemalloc

import pytest

import heaptrace


@pytest.fixture(autouse=True)
def stopped():
    """Every native test starts and ends with heaptrace and the standard
    module stopped.  (Imported by each test module: a conftest.py here
    would shadow tests/stress/conftest.py, which the stress tests import
    from.)"""
    heaptrace.stop()
    tracemalloc.stop()
    yield
    heaptrace.stop()
    tracemalloc.stop()


def compiler():
    """The C compiler to build test libraries with (skips the test if there
    is none)."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    pytest.skip("no C compiler")


def build_shared(source_text, out, flags=()):
    """Compile source_text into the shared library out; returns out."""
    src = str(out) + ".c"
    with open(src, "w") as f:
        f.write(source_text)
    subprocess.run([compiler(), "-shared", "-fPIC", "-o", str(out), src, *flags],
                   check=True, capture_output=True)
    return str(out)
