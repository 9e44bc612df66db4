"""Interrupted with Ctrl-C (a real SIGINT) while its data is a local of
main().  Used by the CLI tests of the exit snapshot."""

import os
import signal
import time


def main():
    local_data = [bytearray(10000) for _ in range(100)]  # LOCALS
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        time.sleep(0.01)   # KeyboardInterrupt arrives here
    return local_data


main()
