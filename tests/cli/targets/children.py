"""Children of every kind: a multiprocessing pool under each start method
(fork, spawn, forkserver) and a subprocess running sys.executable.  Prints
"<method> <worker pid>" per pool and "subprocess <pid>".  Used by the CLI
tests of `heaptrace run` following processes."""

import multiprocessing
import os
import subprocess
import sys


def task(n):
    kept = [bytes(1000) for _ in range(2000)]   # TASK
    return os.getpid(), len(kept) + n


if __name__ == "__main__":
    for method in ("fork", "spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            pids = {pid for pid, _ in pool.map(task, range(3))}
            pool.close()
            pool.join()
        print(method, *pids, flush=True)
    child = subprocess.run(
        [sys.executable, "-c",
         "import os; kept = [bytes(1000) for _ in range(2000)]; print(os.getpid())"],
        capture_output=True, text=True, check=True)
    print("subprocess", child.stdout.strip(), flush=True)
