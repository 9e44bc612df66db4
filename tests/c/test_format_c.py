"""Build tests/c/test_format.c (the snapshot file format's C test program)
with AddressSanitizer and UBSan and run it, so that CI runs the C tests.

Skipped, with the reason, only when no C compiler is installed.  If the
compiler cannot link the sanitizer runtimes, the program is built and run
without them (and the test says so in its output) rather than not at all.
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join(HERE, "..", "..", "src", "heaptrace", "_core")
SOURCES = [os.path.join(HERE, "test_format.c"),
           os.path.join(CORE, "format.c"),
           os.path.join(CORE, "snapdata.c")]
BASE = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g",
        "-DHT_FORMAT_ALLOC_HOOK", "-I" + CORE]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer"]


def find_compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(cc, exe, extra):
    cmd = [cc] + BASE + extra + SOURCES + ["-lm", "-o", exe]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_format_c_program(tmp_path):
    cc = find_compiler()
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    exe = str(tmp_path / "test_format")
    res = build(cc, exe, SANITIZE)
    sanitized = res.returncode == 0
    if not sanitized:
        # Compile errors are failures; only a missing sanitizer runtime
        # (a link error) falls back to a plain build.
        plain = build(cc, exe, [])
        assert plain.returncode == 0, plain.stderr
        print("sanitizers unavailable, running unsanitized:\n" + res.stderr)
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    run = subprocess.run([exe], capture_output=True, text=True, env=env,
                         timeout=600)
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr[-20000:])
    assert run.returncode == 0, "test_format failed:\n" + run.stderr[-5000:]
    assert "runtime error" not in run.stderr, run.stderr[-5000:]
    assert "0 failed" in run.stdout.splitlines()[-1]
