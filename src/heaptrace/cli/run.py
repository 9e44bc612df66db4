"""Run a Python program with tracing on, writing snapshots while it runs.

Examples:
  heaptrace run --interval 10 --keep 100 app.py --port 8000
  heaptrace run -o /tmp/snaps -m myservice
  kill -USR1 <pid>          # write a snapshot now
  heaptrace trend /tmp/snaps

Tracing starts before the program's first line, with --nframe frames per
traceback.  Snapshots go into the --output folder: every --interval
seconds, each time the process gets --signal, and at exit (after the
program's other threads have ended).  They are named
heaptrace-<pid>-<sequence>.snap, so their names sort by time, and each
stores the time it was taken (snapshot.timestamp).  A snapshot is written
under a temporary name and then renamed, so readers never see half a file;
heaptrace's own blocks are left out of it.  With --keep K, only the newest
K snapshots are kept.  Read them with `heaptrace top`, `diff` and `trend`.

Everything after the script (or after -m MODULE, or after --) is the
program's: it may use the same option names as run.

heaptrace's own messages go to standard error (with --json, as one JSON
object per line); the exit status is the program's.
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import importlib.util
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Optional

from ..measure import _api, own_filters
from ._common import EXIT_TARGET_FAILED, CLIError, one_line, plural

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where it exists (not on Windows); elsewhere no signal is used by default.
DEFAULT_SIGNAL = "SIGUSR1"


def add_arguments(parser) -> None:
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a library module as a script, like python -m")
    parser.add_argument("-f", "--nframe", type=int, default=10, metavar="N",
                        help="frames per traceback (default 10)")
    parser.add_argument("-o", "--output", default="heaptrace-snapshots", metavar="FOLDER",
                        help="where to write the snapshots (default ./heaptrace-snapshots, "
                             "created if needed)")
    parser.add_argument("-i", "--interval", type=float, default=60.0, metavar="SECONDS",
                        help="write a snapshot every SECONDS (default 60; 0: never)")
    parser.add_argument("-s", "--signal", default=DEFAULT_SIGNAL, metavar="SIGNAL",
                        help="write a snapshot when the process gets SIGNAL "
                             "(default SIGUSR1)")
    parser.add_argument("--no-signal", action="store_true",
                        help="do not install a signal handler")
    parser.add_argument("-k", "--keep", type=int, default=0, metavar="K",
                        help="keep only the newest K snapshots (default 0: keep all)")
    parser.add_argument("--json", action="store_true",
                        help="write heaptrace's messages as JSON lines on standard error "
                             "(see docs/json.md)")
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="script.py [args]",
                        help="the program to run and its arguments")


USAGE = ("heaptrace run [options] script.py [args...]\n"
         "       heaptrace run [options] -m module [args...]")

#: Options of `run` that take a value (the next argument, unless given as
#: --option=value).
_VALUE_OPTIONS = {"-f", "--nframe", "-o", "--output", "-i", "--interval", "-s", "--signal",
                  "-k", "--keep"}


def split_argv(argv: list) -> tuple:
    """Split run's arguments into (heaptrace's options, the program's arguments).

    The program starts at the first argument that is not an option of run
    (the script), or right after ``-m MODULE``; ``--`` ends run's options.
    Everything from there on belongs to the program, even if it looks like
    one of run's options.
    """
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return argv[:index], argv[index + 1:]
        if arg == "-m":
            return argv[:index + 2], argv[index + 2:]
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:index + 1], argv[index + 1:]
        if not arg.startswith("-") or arg == "-":
            return argv[:index], argv[index:]
        index += 2 if arg in _VALUE_OPTIONS else 1
    return argv, []


def _parse_signal(name: str) -> signal.Signals:
    text = name.upper()
    try:
        return signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise CLIError(f"--signal: unknown signal {name!r}") from None


class Snapshotter:
    """Writes snapshots into a folder: on demand, periodically, on a signal.

    ``take`` is serialised by a lock, so the periodic thread, the signal
    and the exit never write at the same time.
    """

    def __init__(self, api, folder: str, keep: int, emit):
        self.api = api
        self.folder = folder
        self.keep = keep
        self.emit = emit
        self.lock = threading.Lock()   # protects sequence and files
        self.sequence = 0
        self.files: list = []
        self.written = 0
        self.wake = threading.Event()
        self.stopping = False
        self.exit_code: Optional[int] = None
        self.filters = own_filters(api)
        # Compile the patterns now, before tracing starts: fnmatch caches
        # them, and that cache would otherwise show up in the snapshots.
        for trace_filter in self.filters:
            fnmatch.fnmatch("", trace_filter.filename_pattern)

    def take(self, reason: str) -> Optional[str]:
        """Write one snapshot; on failure, say so and carry on."""
        with self.lock:
            self.sequence += 1
            name = f"heaptrace-{os.getpid()}-{self.sequence:06d}.snap"
            path = os.path.join(self.folder, name)
            partial = os.path.join(self.folder, f".{name}.partial")
            try:
                # heaptrace's own blocks (this thread's work) are left out.
                snapshot = self.api.take_snapshot().filter_traces(self.filters)
                snapshot.timestamp = time.time()
                snapshot.dump(partial)
                os.replace(partial, path)
            except Exception as error:
                self.emit("error", f"could not write {path}: {one_line(error)}", path=path)
                return None
            del snapshot
            self.written += 1
            self.files.append(path)
            while self.keep and len(self.files) > self.keep:
                try:
                    os.remove(self.files.pop(0))
                except OSError:
                    pass
            self.emit("snapshot", None, path=path, reason=reason,
                      timestamp=time.time())
            return path

    def start(self, interval: float, signum: Optional[signal.Signals]) -> None:
        """Start the background thread (if anything needs it) and the signal handler."""
        if signum is not None:
            signal.signal(signum, lambda number, frame: self.wake.set())
        if interval > 0 or signum is not None:
            thread = threading.Thread(target=self._loop, args=(interval,),
                                      name="heaptrace-snapshots", daemon=True)
            thread.start()

    def _loop(self, interval: float) -> None:
        while True:
            woken = self.wake.wait(interval if interval > 0 else None)
            if self.stopping:
                return
            self.wake.clear()
            self.take("signal" if woken else "periodic")

    def finish(self) -> None:
        """At exit: stop the thread, write the final snapshot, say where they went."""
        self.stopping = True
        self.wake.set()
        self.take("exit")
        kept = len(self.files)
        text = (f"wrote {plural(self.written, 'snapshot')} to {self.folder}")
        if kept:
            text += (f" ({os.path.basename(self.files[0])} to "
                     f"{os.path.basename(self.files[-1])})" if kept > 1
                     else f" ({os.path.basename(self.files[0])})")
        if self.keep and self.written > kept:
            text += f"; kept the newest {kept}"
        self.emit("exit", text, folder=self.folder, snapshots=list(self.files),
                  written=self.written, exit_code=self.exit_code)


def _make_emitter(as_json: bool):
    """Messages to stderr: plain lines, or one JSON object per line."""

    def emit(event: str, text: Optional[str], **fields) -> None:
        if as_json:
            line = json.dumps({"event": event, **fields, **({"message": text} if text else {})})
        elif text is None:
            return
        else:
            line = f"heaptrace: {text}"
        try:
            print(line, file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    return emit


def execute(args) -> int:
    if args.module is None and not args.program:
        raise CLIError("run: give a script to run, or -m MODULE")
    if args.nframe < 1:
        raise CLIError("--nframe must be at least 1")
    if args.interval < 0:
        raise CLIError("--interval must be 0 or more")
    if args.keep < 0:
        raise CLIError("--keep must be 0 or more")
    signum = None
    if not args.no_signal and (args.signal != DEFAULT_SIGNAL or hasattr(signal, DEFAULT_SIGNAL)):
        signum = _parse_signal(args.signal)
    if args.module is not None:
        _check_module(args.module)
        shown = f"-m {args.module}"
        argv = [args.module] + list(args.program)
    else:
        script = args.program[0]
        if not os.path.exists(script):
            raise CLIError(f"{script}: no such file")
        shown = script
        argv = list(args.program)
    folder = os.path.abspath(args.output)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CLIError(f"{args.output}: cannot create the folder ({one_line(error)})") from None
    api = _api()
    emit = _make_emitter(args.json)
    snapshotter = Snapshotter(api, folder, args.keep, emit)
    if not api.is_tracing():
        api.start(args.nframe)
    atexit.register(snapshotter.finish)
    snapshotter.start(args.interval, signum)
    when = []
    if args.interval > 0:
        when.append(f"every {args.interval:g} s")
    if signum is not None:
        when.append(f"on {signum.name} (kill -{signum.name[3:]} {os.getpid()})")
    when.append("at exit")
    emit("start", f"tracing {shown} with {args.nframe} frames; snapshots go to {folder} "
                  f"{', '.join(when)}",
         pid=os.getpid(), folder=folder, nframe=args.nframe, interval=args.interval,
         signal=signum.name if signum else None, keep=args.keep)
    code = _run_program(args.module, argv)
    snapshotter.exit_code = code
    return code


def _check_module(name: str) -> None:
    sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(name + ".__main__")
    except (ImportError, ValueError):
        spec = None
    finally:
        sys.path.pop(0)
    if spec is None:
        raise CLIError(f"{name}: no such module (or package without __main__)")


def _run_program(module: Optional[str], argv: list) -> int:
    """Run the program as Python would; return its exit status."""
    sys.argv = argv
    try:
        if module is not None:
            sys.path.insert(0, os.getcwd())
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    except KeyboardInterrupt as error:
        _print_program_error(error)
        return 130
    except BaseException as error:
        _print_program_error(error)
        return EXIT_TARGET_FAILED
    return 0


def _exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_program_error(error: BaseException) -> None:
    """Print the program's traceback, without heaptrace's and runpy's frames."""
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith(_PACKAGE_DIR + os.sep) or "runpy" in filename):
            break
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)
