"""A long-running program for `heaptrace run` (used by the CLI tests).

It leaks a little on every request, fills a cache during its first 0.3 s,
and exits with the status given by --exit.  With --wait-for FILE it runs
until FILE exists (at most 20 s) instead of for --seconds.
"""

import argparse
import os
import sys
import time

sessions = []   # the leak
cache = {}      # fills during the first 0.3 s, then stays
STARTED = time.monotonic()


def handle(n):
    if n % 10 == 0 and time.monotonic() - STARTED < 0.3:
        cache[n] = bytearray(20_000)  # CACHE
    sessions.append(bytearray(500))  # LEAK


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--wait-for")
    parser.add_argument("--fail", action="store_true")
    options = parser.parse_args()
    print("service started", flush=True)
    deadline = time.monotonic() + (20.0 if options.wait_for else options.seconds)
    n = 0
    while time.monotonic() < deadline:
        if options.wait_for and os.path.exists(options.wait_for):
            break
        for _ in range(10):
            handle(n)  # CALL
            n += 1
        time.sleep(0.005)
    if options.fail:
        raise RuntimeError("the service failed")
    print(f"handled {n} requests", flush=True)
    sys.exit(options.exit)


if __name__ == "__main__":
    main()
