"""Keeps its data in module globals only, with no reference cycle (no
function or class is defined here), then ends the way argv[1] says:
"normal", "exit" (sys.exit) or "interrupt" (a real Ctrl-C, SIGINT).
Used by the CLI tests of the exit snapshot."""

import os
import signal
import sys
import time

HOW = sys.argv[1] if len(sys.argv) > 1 else "normal"
kept = [bytearray(10000) for _ in range(100)]  # GLOBALS
if HOW == "exit":
    sys.exit(0)
if HOW == "interrupt":
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        time.sleep(0.01)   # KeyboardInterrupt arrives here
