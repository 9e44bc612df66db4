"""Native tracing under load: threads calling malloc and free in a C
library without the GIL while the main thread switches native tracing off
and on (which rewrites the slots those threads call through) and takes
snapshots.  The failures guarded against are crashes, deadlocks and
corrupt totals, so the work runs in a child process, a fixed number of
times."""
import os
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "native"))
from native_helpers import build_shared  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="native tracing is Linux-only")

LIB_C = r"""
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
long churn(int rounds, size_t size) {
    void *live[16] = {0};
    long sum = 0;
    for (int i = 0; i < rounds; i++) {
        int k = i & 15;
        free(live[k]);
        live[k] = (i % 7 == 0) ? calloc(1, size) : malloc(size + (size_t)(i & 255));
        if (i % 5 == 0) live[k] = realloc(live[k], size * 2);
        memset(live[k], 1, 8);
        sum += ((char *)live[k])[0];
        if (i % 97 == 0) {
            void *m = mmap(0, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (m != MAP_FAILED) munmap(m, 1 << 16);
        }
    }
    for (int k = 0; k < 16; k++) free(live[k]);
    return sum;
}
"""

SCRIPT = textwrap.dedent("""
    import ctypes, sys, threading
    import heaptrace
    lib = ctypes.CDLL(sys.argv[1])
    lib.churn.argtypes = [ctypes.c_int, ctypes.c_size_t]
    lib.churn.restype = ctypes.c_long
    frames = sys.argv[2] == "1"
    done = threading.Event()
    errors = []

    def work(size):
        try:
            while not done.is_set():
                lib.churn(2000, size)
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(100 + 50 * k,)) for k in range(4)]
    for t in threads:
        t.start()
    for i in range(200):
        heaptrace.start(5, native=True, native_frames=frames)
        snap = heaptrace.take_snapshot()
        snap.statistics("lineno")
        if i % 3 == 0:
            heaptrace.clear_traces()
        heaptrace.stop()
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors
    # After all that, tracing is exact again: a fresh start sees the C
    # library's blocks come and go, and the totals match the traces.
    heaptrace.start(1, native=True)
    lib.churn(1000, 300)
    native = [t for t in heaptrace.take_snapshot().traces
              if t.domain == heaptrace.NATIVE_DOMAIN and 300 <= t.size < 600]
    assert native == [], len(native)
    # (The two reads are not atomic: the objects made in between differ.)
    current = heaptrace.get_traced_memory()[0]
    total = sum(t[1] for t in heaptrace._get_traces())
    assert abs(current - total) < 64 * 1024, (current, total)
    heaptrace.stop()
    print("OK")
""")


@pytest.mark.parametrize("frames", [False, True], ids=["native", "native-frames"])
def test_native_threads_while_tracing_starts_and_stops(tmp_path, frames):
    so = build_shared(LIB_C, tmp_path / "libchurn.so", ["-O1"])
    proc = subprocess.run([sys.executable, "-c", SCRIPT, so, "1" if frames else "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
