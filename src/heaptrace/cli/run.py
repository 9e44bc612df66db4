"""Run a Python program with tracing on, writing snapshots while it runs.

Examples:
  heaptrace run --interval 10 --keep 100 app.py --port 8000
  heaptrace run -o /tmp/snaps -m myservice
  kill -USR1 <pid>          # write a snapshot now
  heaptrace trend /tmp/snaps

Tracing starts before the program's first line, with --nframe frames per
traceback; the program gets the __file__, sys.argv and sys.path[0] that
python would give it.  Snapshots go into the --output folder (checked
before the program starts): every --interval seconds, each time the
process gets --signal, and at exit (after the program's other threads and
its atexit handlers, while its module globals - and, if it ended with an
exception or Ctrl-C, the locals of the frames it was in - are still
alive).  They are named heaptrace-<pid>-<sequence>.snap, so their names
sort by time, and each stores the time it was taken (snapshot.timestamp).
A snapshot is written under a temporary name and then renamed, so readers
never see half a file; nothing heaptrace keeps for itself is in it.  With
--keep K, only the newest K snapshots are kept.  Read them with
`heaptrace top`, `diff` and `trend`.

heaptrace starts no thread: the --interval timer is SIGALRM
(setitimer), and snapshots are written by the program's main thread
between two of its Python instructions.  If the program sets up SIGALRM
itself, the timer stops and heaptrace says so.

With --sample SIZE (e.g. 512KiB; or the environment variable
HEAPTRACE_SAMPLE), only a random sample of the blocks is traced, about one
per SIZE bytes allocated, and every size and count is an estimate: a
fraction of the overhead, for production services.

Child processes are followed: a child made by fork() (a pre-fork server's
workers, multiprocessing with fork) and a Python child started with exec
(multiprocessing with spawn or forkserver, subprocess running
sys.executable) trace with the same settings and write their own series,
heaptrace-<child pid>-<sequence>.snap, into the same folder.  Exec'd
children are reached through their environment: HEAPTRACE_CHILD holds the
settings, and a folder holding a sitecustomize module that starts tracing
(and then runs the program's own sitecustomize, if any) comes first on
PYTHONPATH.  --no-follow leaves children untraced.

Everything after the script (or after -m MODULE, or after --) is the
program's: it may use the same option names as run.

heaptrace's own messages go to standard error (with --json, as one JSON
object per line); the exit status is the program's.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import importlib.machinery
import importlib.util
import io
import marshal
import os
import signal
import sys
import tempfile
import traceback
import types
import zipfile

from ..measure import _api
from ._common import EXIT_TARGET_FAILED, CLIError, one_line
from .._sizes import parse_size
from ._child import environment as child_environment
from ._snapshotter import Snapshotter, make_emitter

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Where it exists (not on Windows); elsewhere no signal is used by default.
DEFAULT_SIGNAL = "SIGUSR1"
#: Signals --signal cannot use, and why.
_UNUSABLE_SIGNALS = {
    "SIGKILL": "cannot be caught",
    "SIGSTOP": "cannot be caught",
    "SIGSEGV": "reports a crash",
    "SIGBUS": "reports a crash",
    "SIGFPE": "reports a crash",
    "SIGILL": "reports a crash",
}


def add_arguments(parser) -> None:
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a library module as a script, like python -m")
    parser.add_argument("-f", "--nframe", type=int, default=10, metavar="N",
                        help="frames per traceback (default 10)")
    parser.add_argument("--native", action="store_true",
                        help="also trace the memory C extensions and libraries take "
                             "with malloc and mmap (heaptrace.start(native=True))")
    parser.add_argument("-o", "--output", default="heaptrace-snapshots", metavar="FOLDER",
                        help="where to write the snapshots (default ./heaptrace-snapshots, "
                             "created if needed)")
    parser.add_argument("--interval", type=float, default=60.0, metavar="SECONDS",
                        help="write a snapshot every SECONDS (default 60; 0: never); "
                             "uses SIGALRM")
    parser.add_argument("-s", "--signal", default=DEFAULT_SIGNAL, metavar="SIGNAL",
                        help="write a snapshot when the process gets SIGNAL "
                             "(default SIGUSR1)")
    parser.add_argument("--no-signal", action="store_true",
                        help="do not install a signal handler")
    parser.add_argument("-k", "--keep", type=int, default=0, metavar="K",
                        help="keep only the newest K snapshots (default 0: keep all)")
    parser.add_argument("--sample", metavar="SIZE",
                        default=os.environ.get("HEAPTRACE_SAMPLE") or None,
                        help="trace a random sample of about one block per SIZE bytes "
                             "allocated (e.g. 512KiB) and report estimates; default: "
                             "$HEAPTRACE_SAMPLE, else every block")
    parser.add_argument("--no-follow", action="store_true",
                        help="do not trace child processes")
    parser.add_argument("--json", action="store_true",
                        help="write heaptrace's messages as JSON lines on standard error "
                             "(see docs/json.md)")
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="script.py [args]",
                        help="the program to run and its arguments")


USAGE = ("heaptrace run [options] script.py [args...]\n"
         "       heaptrace run [options] -m module [args...]")

#: Options of `run` that take a value (the next argument, unless given as
#: --option=value).
_VALUE_OPTIONS = {"-f", "--nframe", "-o", "--output", "--interval", "-s", "--signal",
                  "-k", "--keep", "--sample"}


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
        if arg.startswith("-i") and not arg.startswith("--"):
            # -i is --include in top, diff and trend; run has no short
            # form for --interval, so that -i never means two things.
            raise CLIError("run has no option -i: write --interval SECONDS "
                           "(-i is --include in top, diff and trend)")
        if not arg.startswith("-") or arg == "-":
            return argv[:index], argv[index:]
        index += 2 if arg in _VALUE_OPTIONS else 1
    return argv, []


def _parse_signal(name: str, interval: float) -> signal.Signals:
    text = name.upper()
    try:
        signum = signal.Signals(int(text)) if text.isdigit() else signal.Signals[
            text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise CLIError(f"--signal: unknown signal {name!r}") from None
    if signum not in signal.valid_signals():
        raise CLIError(f"--signal: {signum.name} is not a signal of this system")
    why = _UNUSABLE_SIGNALS.get(signum.name)
    if why is not None:
        raise CLIError(f"--signal: {signum.name} {why}; choose another signal "
                       f"(default {DEFAULT_SIGNAL})")
    if signum.name == "SIGALRM" and interval > 0:
        raise CLIError("--signal: SIGALRM is the timer of --interval; choose another "
                       "signal, or give --interval 0")
    return signum


def _check_folder(shown: str, folder: str) -> None:
    """Create the output folder and make sure a file can be written there."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CLIError(f"{shown}: cannot create the folder ({one_line(error)})") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=".heaptrace-probe-", dir=folder)
    except OSError as error:
        raise CLIError(f"{shown}: cannot write snapshots there ({one_line(error)})") from None
    os.close(handle)
    try:
        os.remove(probe)
    except OSError:
        pass


def execute(args) -> int:
    if args.module is None and not args.program:
        raise CLIError("run: give a script to run, or -m MODULE")
    if args.nframe < 1:
        raise CLIError("--nframe must be at least 1")
    if args.interval < 0:
        raise CLIError("--interval must be 0 or more")
    if args.interval > 0 and not hasattr(signal, "setitimer"):
        raise CLIError("--interval needs signal.setitimer, which this system lacks; "
                       "give --interval 0")
    if args.keep < 0:
        raise CLIError("--keep must be 0 or more")
    sample = _parse_sample(args.sample)
    signum = None
    if not args.no_signal and (args.signal != DEFAULT_SIGNAL or hasattr(signal, DEFAULT_SIGNAL)):
        signum = _parse_signal(args.signal, args.interval)
    if args.module is not None:
        shown = f"-m {args.module}"
        code, module, path0, argv0 = _prepare_module(args.module)
    else:
        shown = args.program[0]
        code, module, path0, argv0 = _prepare_script(args.program[0])
    argv = [argv0] + list(args.program[1:] if args.module is None else args.program)
    folder = os.path.abspath(args.output)
    _check_folder(args.output, folder)
    api = _api()
    emit = make_emitter(args.json)
    # Everything heaptrace keeps is made before tracing starts.
    snapshotter = Snapshotter(api, folder, args.keep, emit, follow=not args.no_follow)
    snapshotter.install(signum, args.interval)
    snapshotter.warm_up(args.nframe)
    atexit.register(snapshotter.finish)
    when = []
    if args.interval > 0:
        when.append(f"every {args.interval:g} s")
    if signum is not None:
        when.append(f"on {signum.name} (kill -{signum.name[3:]} {os.getpid()})")
    when.append("at exit")
    how = f"sampling every {args.sample} (estimates)" if sample else "every block"
    emit("start", f"tracing {shown} with {args.nframe} frames, {how}; snapshots go to "
                  f"{folder} {', '.join(when)}",
         pid=os.getpid(), folder=folder, nframe=args.nframe, interval=args.interval,
         signal=signum.name if signum else None, keep=args.keep, sample=sample)
    if not args.no_follow:
        os.environ.update(child_environment(folder, args.nframe, sample, args.interval,
                                            signum, args.keep, args.json, args.native))
    sys.argv = argv
    if sys.path:
        sys.path[0] = path0
    else:
        sys.path.append(path0)
    sys.modules["__main__"] = module
    if not api.is_tracing():
        try:
            api.start(args.nframe, native=args.native, sampling_interval=sample)
        except RuntimeError as error:
            raise CLIError(f"--native: {error}") from None
    snapshotter.begin(args.interval)
    code = _run_program(code, module, snapshotter)
    snapshotter.exit_code = code
    return code


def _parse_sample(text):
    """The --sample interval in bytes, or None."""
    if text is None or text == "":
        return None
    try:
        size = parse_size(text)
    except ValueError as error:
        raise CLIError(f"--sample: {one_line(error)}") from None
    if not 1 <= size <= 1 << 40:
        raise CLIError(f"--sample: {text!r} is out of range (1 B to 1 TiB)")
    return size


def _compile_failed(what: str, error: BaseException) -> CLIError:
    return CLIError(f"{what}: {one_line(error)}", EXIT_TARGET_FAILED)


def _prepare_script(script: str) -> tuple:
    """(code, __main__ module, sys.path[0], sys.argv[0]) for ``python script``."""
    if not os.path.exists(script):
        raise CLIError(f"{script}: no such file")
    if os.path.isdir(script) or zipfile.is_zipfile(script):
        # A folder or zip file with a __main__.py, found on it as python does.
        spec = importlib.machinery.PathFinder.find_spec("__main__", [script])
        if spec is None or spec.loader is None:
            raise CLIError(f"{script}: no __main__ module in it")
        try:
            code = spec.loader.get_code("__main__")
        except (ImportError, SyntaxError, ValueError) as error:
            raise _compile_failed(script, error) from None
        module = _main_module(spec.origin, spec.loader, spec, "", getattr(spec, "cached", None))
        return code, module, script, script
    path = os.path.abspath(script)
    try:
        with io.open_code(path) as stream:
            data = stream.read()
    except OSError as error:
        raise CLIError(f"{script}: cannot read it ({one_line(error)})") from None
    try:
        if data[:4] == importlib.util.MAGIC_NUMBER:
            code = marshal.loads(data[16:])
            loader = importlib.machinery.SourcelessFileLoader("__main__", path)
        else:
            code = compile(data, path, "exec", dont_inherit=True)
            loader = importlib.machinery.SourceFileLoader("__main__", path)
    except (SyntaxError, ValueError, EOFError, TypeError) as error:
        raise _compile_failed(script, error) from None
    module = _main_module(path, loader, None, None, None)
    return code, module, os.path.dirname(os.path.realpath(script)), script


def _prepare_module(name: str) -> tuple:
    """(code, __main__ module, sys.path[0], sys.argv[0]) for ``python -m name``."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = importlib.util.find_spec(name + ".__main__")
    except (ImportError, ValueError):
        spec = None
    except Exception as error:   # the package's __init__ failed
        raise CLIError(f"importing {name} failed: {one_line(error)}",
                       EXIT_TARGET_FAILED) from None
    finally:
        sys.path.pop(0)
    if spec is None or spec.loader is None:
        raise CLIError(f"{name}: no such module (or package without __main__)")
    try:
        code = spec.loader.get_code(spec.name)
    except (ImportError, SyntaxError, ValueError) as error:
        raise _compile_failed(name, error) from None
    if code is None:
        raise CLIError(f"{name}: no code to run (a namespace package?)")
    module = _main_module(spec.origin, spec.loader, spec, spec.parent, spec.cached)
    return code, module, cwd, spec.origin


def _main_module(filename, loader, spec, package, cached) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=filename, __cached__=cached, __loader__=loader,
                           __package__=package, __spec__=spec, __builtins__=builtins)
    return module


def _run_program(code, module, snapshotter: Snapshotter) -> int:
    """Run the program in its __main__ module, which stays in sys.modules (as
    python leaves it) so that the exit snapshot sees its globals; return its
    exit status.  Its exception, if any, is kept for the exit snapshot."""
    try:
        exec(code, module.__dict__)
    except SystemExit as exit_:
        snapshotter.held = exit_
        return _exit_status(exit_.code)
    except KeyboardInterrupt as error:
        snapshotter.held = error
        _print_program_error(error)
        return 130
    except BaseException as error:
        snapshotter.held = error
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
    """Print the program's traceback, without heaptrace's frames."""
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not (filename.startswith(_PACKAGE_DIR + os.sep) or "runpy" in filename):
            break
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb)
