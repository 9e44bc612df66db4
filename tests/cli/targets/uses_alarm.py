"""Sets up SIGALRM for itself and waits for it (CLI tests: the timer of
`heaptrace run --interval` must give way)."""

import signal
import time

fired = []
signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
signal.setitimer(signal.ITIMER_REAL, 0.05)
deadline = time.monotonic() + 10
while not fired and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.3)   # several --interval periods: no more SIGALRM may come
print(f"alarms: {len(fired)}", flush=True)
