"""Running the real `heaptrace` command in a subprocess, for the CLI tests."""

import json
import os
import subprocess
import sys

TARGETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets")


def heaptrace(*args, cwd=None, timeout=60):
    """Run ``python -m heaptrace ARGS``; return the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "heaptrace", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def heaptrace_json(*args, **options):
    result = heaptrace(*args, "--json", **options)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result, exit_code, *words):
    """The command failed with ``exit_code`` and said why in one line."""
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    message = result.stderr.strip()
    assert "Traceback" not in message, message
    assert len(message.splitlines()) == 1, message
    assert message.startswith("heaptrace: error: "), message
    for word in words:
        assert word in message, message
    return message


def marked_line(path, mark):
    """The line number of the first line of ``path`` containing ``mark``."""
    with open(path) as source:
        for number, line in enumerate(source, 1):
            if mark in line:
                return number
    raise AssertionError(f"{mark!r} not in {path}")
