"""A tiny request handler with a memory leak, to try heaptrace on.

Find the leak in the handler:

    heaptrace leaks examples/leaky_app.py:handle_request

Or run it as a service, with a snapshot every second, and read the trend:

    heaptrace run --interval 1 -o /tmp/leaky-snaps examples/leaky_app.py --seconds 10
    heaptrace trend /tmp/leaky-snaps

The handler keeps every session forever (the leak), renders pages from a
template cache that fills once (not a leak: it stops growing), and builds
a response body that it drops after each request (not a leak either).
"""

import argparse
import itertools
import random
import time

_request_ids = itertools.count()
_pages = random.Random(42)
_sessions = {}    # never evicted: the leak
_templates = {}   # one entry per page template, 40 of them: a cache that fills once


def load_template(name):
    if name not in _templates:
        _templates[name] = bytearray(64 * 1024)
    return _templates[name]


def remember_session(request_id):
    _sessions[request_id] = {"id": request_id, "token": bytearray(256)}


def handle_request():
    request_id = next(_request_ids)
    template = load_template(f"page-{_pages.randrange(40)}")
    body = bytes(template[:4096])
    remember_session(request_id)
    return len(body)


def serve(seconds, rate):
    """Handle about ``rate`` requests per second for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(rate // 10):
            handle_request()
        time.sleep(0.1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=100, help="requests per second")
    options = parser.parse_args()
    serve(options.seconds, options.rate)
    print(f"handled {len(_sessions)} requests")
