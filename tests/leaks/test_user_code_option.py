"""`heaptrace top/diff --user-code` count library allocations at the user's line."""

import json
import logging
import os
import subprocess
import sys

import heaptrace


def _run(*args):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(heaptrace.__file__)))
    return subprocess.run([sys.executable, "-m", "heaptrace", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_top_user_code_puts_logging_memory_on_the_callers_line(tmp_path):
    if heaptrace.is_tracing():
        heaptrace.stop()
    heaptrace.start(25)
    try:
        loggers = [logging.getLogger(f"heaptrace-user-code.{i}") for i in range(300)]  # HERE
        path = str(tmp_path / "a.snap")
        heaptrace.take_snapshot().dump(path)
    finally:
        heaptrace.stop()
        for i in range(len(loggers)):
            logging.Logger.manager.loggerDict.pop(f"heaptrace-user-code.{i}", None)
    plain = _run("top", path, "--json", "--limit", "1")
    mine = _run("top", path, "--json", "--limit", "1", "--user-code")
    assert plain.returncode == 0 and mine.returncode == 0, plain.stderr + mine.stderr
    assert "logging" in plain.stdout
    top = json.loads(mine.stdout)
    text = json.dumps(top)
    assert __file__ in text and "logging/__init__.py" not in text, text
    diff = _run("diff", path, path, "--user-code")
    assert diff.returncode == 0, diff.stderr
