"""Subinterpreters with a GIL of their own (3.12+) allocating and freeing
while the main interpreter is traced.

Such an interpreter runs in parallel with the main one, so its hooks must
not touch the table that the main GIL protects.  The failure guarded
against is a race (a use-after-free under ASan, a crash or a corrupt table
without it), so the work runs in a child process, a fixed number of times.
"""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="a GIL per interpreter is new in 3.12")

SCRIPT = textwrap.dedent("""
    import sys, threading
    import heaptrace

    if sys.version_info >= (3, 13):
        import _interpreters as interpreters
        def isolated():
            return interpreters.create("isolated")
        def run(i, code):
            err = interpreters.exec(i, code)
            assert err is None, err
    else:
        import _xxsubinterpreters as interpreters
        def isolated():
            return interpreters.create(isolated=True)
        def run(i, code):
            interpreters.run_string(i, code)

    CODE = "x = [str(n) for n in range(20000)]\\ny = {n: bytes(n % 64) for n in range(5000)}\\ndel x, y"
    ROUNDS = int(sys.argv[1])

    class Obj:
        __slots__ = ("a",)

    heaptrace.start(5)
    errors = []

    def worker():
        try:
            for _ in range(ROUNDS):
                i = isolated()
                run(i, CODE)
                interpreters.destroy(i)
        except BaseException as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    # The main thread makes the GIL table grow and shrink all the time
    # (pages made and freed, the region map resized).
    kept = []
    while any(t.is_alive() for t in threads):
        batch = [Obj() for _ in range(20000)]
        kept.append(batch)
        if len(kept) > 3:
            kept.pop(0)
        if len(kept) == 3:
            kept.clear()
            # (Clearing makes the table start again from nothing, so it
            # grows again: its region map is resized, its pages freed.)
            heaptrace.clear_traces()
        heaptrace.get_traced_memory()
    for t in threads:
        t.join()
    assert not errors, errors
    # The main interpreter is still traced correctly.
    o = Obj()
    assert heaptrace.get_object_traceback(o) is not None
    snap = heaptrace.take_snapshot()
    assert snap.statistics("lineno")
    heaptrace.stop()
    print("OK")
""")


def test_isolated_subinterpreters_beside_traced_main():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "15"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout
