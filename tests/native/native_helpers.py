"""Helpers of the native tests: a C compiler, and shared libraries built
from source at test time."""
import os
import shutil
import subprocess

import pytest


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
