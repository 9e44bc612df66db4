"""A pre-fork server in miniature (as gunicorn runs one): the master forks
two workers; worker 0 leaks 4 KiB per request, worker 1 frees what it
allocates.  Each worker prints "<pid> leaky|steady".  Used by the CLI
tests of `heaptrace run` following processes."""

import os
import sys
import time

LEAK = []


def serve(leaky):
    end = time.time() + 1.5
    while time.time() < end:
        if leaky:
            LEAK.append(bytes(4096))          # LEAK
        else:
            scratch = [bytes(4096) for _ in range(2)]   # STEADY
            del scratch
        time.sleep(0.002)
    # One write: atomic on a pipe, so the other worker's line (or a line
    # heaptrace prints from its timer) cannot split it.
    sys.stdout.flush()
    os.write(1, f"{os.getpid()} {'leaky' if leaky else 'steady'}\n".encode())


workers = []
for number in range(2):
    pid = os.fork()
    if pid == 0:
        serve(number == 0)
        sys.exit(0)
    workers.append(pid)
for pid in workers:
    os.waitpid(pid, 0)
print("master", os.getpid(), flush=True)
