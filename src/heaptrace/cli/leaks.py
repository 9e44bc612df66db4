"""Call a function many times and report the allocation sites that leak.

Examples:
  heaptrace leaks examples/leaky_app.py:handle_request
  heaptrace leaks myapp.handlers:reload_config --iterations 2000
  heaptrace leaks tests/helpers.py:client.ping --json

TARGET is FILE.py:FUNC or package.module:FUNC; FUNC may be dotted (the
method of an object the module holds, client.ping) and must be callable
with no arguments: to measure a call that needs some, or a method of a
new object, write a function of no arguments that makes the call, and
name that.  A file is imported as a
module named after it, with its folder first on sys.path; a module is
imported with the current folder first on sys.path, as `python -m` does.

heaptrace warms the function up, then calls it in a series of batches with
a garbage collection and a snapshot after each, and reports the sites whose
memory kept growing: most likely leak first, with growth per call, the call
path that keeps the memory, and a confidence.  Sites that grew and stopped
(caches), that give back what they take (buffers) or that only held garbage
are listed as not leaks.  See find_leaks() in the Python API.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys

from ..leaks import DEFAULT_DURATION, DEFAULT_SNAPSHOTS, find_leaks
from ._common import EXIT_TARGET_FAILED, CLIError, Progress, one_line, print_json


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="TARGET",
                        help="FILE.py:FUNC or package.module:FUNC")
    parser.add_argument("-n", "--iterations", type=int, metavar="N",
                        help="calls to measure (default: as many as fit in --duration, "
                             "at most 5000)")
    parser.add_argument("-w", "--warmup", type=int, metavar="N",
                        help="calls before the baseline (default: automatic, at least 2)")
    parser.add_argument("-f", "--nframe", type=int, default=25, metavar="N",
                        help="frames per traceback (default 25)")
    parser.add_argument("--snapshots", type=int, default=DEFAULT_SNAPSHOTS, metavar="N",
                        help=f"measurement intervals, one snapshot after each "
                             f"(default {DEFAULT_SNAPSHOTS})")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION,
                        metavar="SECONDS",
                        help=f"time to spend calling the function when --iterations is "
                             f"not given (default {DEFAULT_DURATION:g})")
    parser.add_argument("--native", action="store_true",
                        help="also trace what C extensions and libraries take with "
                             "malloc and mmap")
    parser.add_argument("-l", "--limit", type=int, default=5, metavar="N",
                        help="show at most N suspects (default 5; the JSON has all)")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON (see docs/json.md)")


def load_target(target: str):
    """Import TARGET and return the function it names, or raise CLIError."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise CLIError(f"{target}: expected FILE.py:FUNC or package.module:FUNC")
    if where.endswith(".py") or os.sep in where or os.path.isfile(where):
        module = _import_file(where)
    else:
        module = _import_module(where)
    obj = owner = module
    for part in name.split("."):
        owner = obj
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CLIError(f"{target}: {where} has no attribute {name!r}") from None
    if not callable(obj):
        raise CLIError(f"{target}: {name} is not callable")
    _check_no_arguments(target, name, obj, owner)
    return obj


def _check_no_arguments(target: str, name: str, func, owner) -> None:
    """Raise CLIError if ``func`` cannot be called with no arguments."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return   # no signature to check (some builtins): let the call tell
    try:
        signature.bind()
    except TypeError:
        pass
    else:
        return
    needed = [p.name for p in signature.parameters.values()
              if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if inspect.isclass(owner) and inspect.isfunction(func) and needed[:1] == ["self"]:
        raise CLIError(f"{target}: {name} is a method of a class, and the target must be "
                       f"callable with no arguments: name the method of an object "
                       f"(FILE.py:obj.method), or a function of no arguments that "
                       f"calls it")
    raise CLIError(f"{target}: the target must be callable with no arguments, and "
                   f"{name} needs {', '.join(needed)}: write a function of no "
                   f"arguments that calls it (def run(): {name}(...)) and name that")


def _import_file(path: str):
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a Python file")
    folder = os.path.dirname(os.path.abspath(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    name = stem if stem.isidentifier() and stem not in sys.modules else "__heaptrace_target__"
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        raise CLIError(f"importing {path} failed: {one_line(error)}",
                       EXIT_TARGET_FAILED) from None
    return module


def _import_module(name: str):
    sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise CLIError(f"{name}: no such module")
    try:
        return importlib.import_module(name)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        raise CLIError(f"importing {name} failed: {one_line(error)}",
                       EXIT_TARGET_FAILED) from None


def execute(args) -> int:
    if args.snapshots < 3:
        raise CLIError("--snapshots must be at least 3")
    # One rule, one message, whatever the value (0 or -5 alike).
    if args.iterations is not None and args.iterations < args.snapshots:
        raise CLIError(f"--iterations must be at least --snapshots ({args.snapshots}), "
                       f"got {args.iterations}")
    if args.warmup is not None and args.warmup < 0:
        raise CLIError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.nframe < 1:
        raise CLIError(f"--nframe must be at least 1, got {args.nframe}")
    if not args.duration > 0:
        raise CLIError(f"--duration must be more than 0, got {args.duration:g}")
    if args.limit < 0:
        raise CLIError(f"--limit must be 0 or more, got {args.limit}")
    func = load_target(args.target)
    progress = Progress()

    def show(phase, done, total):
        if phase == "warm-up":
            progress.update(f"heaptrace: warming up {args.target}"
                            + (f" ({done}/{total} calls)" if total else ""))
        else:
            progress.update(f"heaptrace: measuring {args.target}: snapshot {done}/{total}")

    if args.native:
        _check_native()
    try:
        report = find_leaks(func, iterations=args.iterations, warmup=args.warmup,
                            snapshots=args.snapshots, nframe=args.nframe,
                            duration=args.duration, progress=show, native=args.native)
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        raise CLIError(f"{args.target} raised {one_line(error)}",
                       EXIT_TARGET_FAILED) from None
    finally:
        progress.clear()
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format(limit=args.limit))
    return 0


def _check_native() -> None:
    """Fail before the target runs if native tracing cannot work here."""
    import heaptrace

    if heaptrace.is_tracing():
        return
    try:
        heaptrace.start(1, native=True)
    except RuntimeError as error:
        raise CLIError(f"--native: {error}") from None
    finally:
        heaptrace.stop()
