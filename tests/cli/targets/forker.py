"""Forks a child that writes nothing of its own and ends with sys.exit(0)
(so it runs atexit handlers, as a child that returns normally does).  The
parent waits for it, then grows its data and exits.  Used by the CLI tests."""

import os
import sys

kept = [bytearray(5000) for _ in range(20)]
pid = os.fork()
if pid == 0:
    kept.append(bytearray(1))
    sys.exit(0)
os.waitpid(pid, 0)
kept.extend(bytearray(5000) for _ in range(20))
print("parent done", flush=True)
