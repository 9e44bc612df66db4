"""The snapshot writer of `heaptrace run`: periodic (SIGALRM), on a signal,
and at exit, from the program's main thread.

It lives in a file of its own so that its work can be told apart from the
program's: the snapshots leave out every block with a frame of this file or
of the API's module (take_snapshot, dump) anywhere in its traceback (the
program never runs below one of them; a signal handler only runs above the
program's frames), as well as blocks whose most recent frame is any of
heaptrace's files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys
import time
from typing import Optional

from ..measure import own_filters, own_locations
from ._common import CLIError, one_line, plural

class Snapshotter:
    """Writes snapshots into a folder: periodically (SIGALRM), on a signal,
    and at exit.

    Everything here runs in the main thread (signal handlers and atexit),
    so no lock is needed; ``busy`` stops a signal that arrives during a
    snapshot from starting another one inside it.  Everything it keeps is
    made before tracing starts, or is an int set by this file's code (a
    block whose most recent frame is heaptrace's, which the snapshot
    filters leave out): the names of the files are computed, not stored.
    Only the process that owns it writes.  After fork(), the child's copy
    becomes the child's own snapshotter (with ``follow``): it starts a new
    series named by the child's pid, re-arms the timer (fork does not copy
    it), and writes its exit snapshot at exit, or, in a multiprocessing
    child (which leaves with os._exit), from multiprocessing's exit hook.
    Without ``follow`` the child's copy does nothing.
    """

    def __init__(self, api, folder: str, keep: int, emit, follow: bool = False):
        self.follow = follow
        self.interval = 0.0
        self.api = api
        self.folder = folder
        self.keep = keep
        self.emit = emit
        self.pid = os.getpid()
        self.sequence = 0      # the last sequence number used
        self.first = 1         # the oldest sequence number not removed by --keep
        self.written = 0
        self.busy = False
        self.started = False   # tracing has started; before, a signal is pending
        self.pending = False
        self.stopping = False
        self.timer = False     # the SIGALRM timer is armed
        self.previous: dict = {}   # signal number -> handler before ours
        self.exit_code: Optional[int] = None
        # The program's exception (SystemExit, KeyboardInterrupt...), kept
        # until the exit snapshot: its traceback holds the program's frames.
        self.held: Optional[BaseException] = None
        # Blocks with a frame of this file, or of the API's module (the
        # program never runs below either), anywhere in their traceback are
        # heaptrace's work; so are those whose most recent frame is any of
        # heaptrace's files.
        self.filters = own_filters(api) + [
            api.Filter(False, filename, all_frames=True)
            for filename in sorted({_this_file()} | set(own_locations(api)[1]))]
        # Compile the patterns now, before tracing starts: fnmatch caches
        # them, and that cache would otherwise show up in the snapshots.
        for trace_filter in self.filters:
            fnmatch.fnmatch("", trace_filter.filename_pattern)
        self._real_signal = signal.signal
        self._real_setitimer = signal.setitimer if hasattr(signal, "setitimer") else None
        self._real_alarm = getattr(signal, "alarm", None)
        # Bound methods made once, now, so that nothing is allocated for
        # them while tracing.
        self._on_alarm = self._alarm_handler
        self._on_signal = self._signal_handler
        self._in_child = self._after_fork_in_child

    def warm_up(self, nframe: int) -> None:
        """Take one snapshot, filter it and dump it to the null device, with
        tracing on only for that, before the program's tracing starts: the
        caches this fills (abc's isinstance cache, the filters' compiled
        patterns...) are filled now, and stop() discards their traces, so
        they never show up in the program's snapshots."""
        if self.api.is_tracing():
            return
        self.api.start(nframe)
        try:
            snapshot = self.api.take_snapshot().filter_traces(self.filters)
            snapshot.timestamp = time.time()
            snapshot.dump(os.devnull)
        except Exception:
            pass   # the real snapshots will report what is wrong
        finally:
            snapshot = None
            self.api.stop()

    def _name(self, sequence: int) -> str:
        return os.path.join(self.folder, f"heaptrace-{self.pid}-{sequence:06d}.snap")

    def take(self, reason: str) -> Optional[str]:
        """Write one snapshot; on failure, say so and carry on."""
        if self.busy or os.getpid() != self.pid:
            return None
        self.busy = True
        try:
            return self._take(reason)
        finally:
            self.busy = False

    def _take(self, reason: str) -> Optional[str]:
        self.sequence += 1
        try:
            # First the snapshot, then the file names: they must not be in it.
            snapshot = self.api.take_snapshot().filter_traces(self.filters)
            snapshot.timestamp = time.time()
        except Exception as error:
            self.emit("error", f"could not take a snapshot: {one_line(error)}")
            return None
        path = self._name(self.sequence)
        partial = os.path.join(self.folder, f".{os.path.basename(path)}.partial")
        try:
            snapshot.dump(partial)
            os.replace(partial, path)
        except Exception as error:
            self.emit("error", f"could not write {path}: {one_line(error)}", path=path)
            return None
        finally:
            del snapshot
        self.written += 1
        while self.keep and self.sequence - self.first >= self.keep:
            try:
                os.remove(self._name(self.first))
            except OSError:
                pass
            self.first += 1
        self.emit("snapshot", None, path=path, reason=reason, timestamp=time.time())
        return path

    def kept(self) -> list:
        return [path for path in map(self._name, range(self.first, self.sequence + 1))
                if os.path.exists(path)]

    # -- signals and the timer (all set up before tracing starts) --------

    def install(self, signum: Optional[signal.Signals], interval: float) -> None:
        """Install the signal handlers; raise CLIError if one cannot be."""
        try:
            if signum is not None:
                self.previous[signum] = self._real_signal(signum, self._on_signal)
            if interval > 0:
                self.previous[signal.SIGALRM] = self._real_signal(signal.SIGALRM,
                                                                  self._on_alarm)
                self._guard_sigalrm()
        except (OSError, ValueError) as error:
            self.restore_signals()
            raise CLIError(f"--signal: cannot handle {signum.name if signum else 'SIGALRM'}"
                           f" ({one_line(error)})") from None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._in_child)

    def begin(self, interval: float) -> None:
        """Tracing has started: arm the timer, and write the snapshot asked
        for by a signal that came before."""
        self.started = True
        self.interval = interval
        if interval > 0:
            self.timer = True
            self._real_setitimer(signal.ITIMER_REAL, interval, interval)
        if self.pending:
            self.pending = False
            self.take("signal")

    def _signal_handler(self, signum, frame) -> None:
        if not self.started:
            self.pending = True
        elif not self.stopping:
            self.take("signal")

    def _alarm_handler(self, signum, frame) -> None:
        if self.started and not self.stopping:
            self.take("periodic")

    def restore_signals(self) -> None:
        for signum, handler in self.previous.items():
            try:
                self._real_signal(signum, handler if handler is not None else signal.SIG_DFL)
            except (OSError, ValueError):
                pass

    def _after_fork_in_child(self) -> None:
        if self.follow and self.started and not self.stopping:
            self._become_child()
            return
        # The child is not the snapshotter: it keeps no timer (fork does not
        # copy it) and gets back the signal handlers it would have had.
        self.stopping = True
        self.timer = False
        self.restore_signals()

    def _become_child(self) -> None:
        """In a fork child: a new series, under the child's pid."""
        self.pid = os.getpid()
        self.sequence = 0
        self.first = 1
        self.written = 0
        self.busy = False
        self.pending = False
        self.held = None
        if self.timer:
            self._real_setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # multiprocessing clears its finalizers in the child, then runs
            # the after-fork hooks: register the exit snapshot from there.
            mp_util.register_after_fork(self, Snapshotter._mp_child)

    def _mp_child(self) -> None:
        import multiprocessing.util as mp_util
        mp_util.Finalize(None, self.finish, exitpriority=-1000)

    def release_alarm(self) -> None:
        """The program takes SIGALRM for itself: stop the timer, hand it back."""
        if not self.timer:
            return
        self.timer = False
        self._real_setitimer(signal.ITIMER_REAL, 0)
        handler = self.previous.pop(signal.SIGALRM, signal.SIG_DFL)
        self._real_signal(signal.SIGALRM, handler if handler is not None else signal.SIG_DFL)
        self.emit("note", "the program uses SIGALRM: no more periodic snapshots "
                          "(the signal and the exit snapshot still work)")

    def _guard_sigalrm(self) -> None:
        """Wrap signal.signal, alarm and setitimer: if the program touches
        SIGALRM (the timer of --interval), the timer gives way to it."""
        snapshotter = self
        real_signal, real_alarm, real_setitimer = (self._real_signal, self._real_alarm,
                                                   self._real_setitimer)

        def signal_(signalnum, handler):
            if signalnum == signal.SIGALRM and os.getpid() == snapshotter.pid:
                snapshotter.release_alarm()
            return real_signal(signalnum, handler)

        def alarm(seconds):
            if os.getpid() == snapshotter.pid:
                snapshotter.release_alarm()
            return real_alarm(seconds)

        def setitimer(which, seconds, interval=0.0):
            if which == signal.ITIMER_REAL and os.getpid() == snapshotter.pid:
                snapshotter.release_alarm()
            return real_setitimer(which, seconds, interval)

        for name, wrapper, real in (("signal", signal_, real_signal), ("alarm", alarm, real_alarm),
                                    ("setitimer", setitimer, real_setitimer)):
            if real is not None:
                wrapper.__name__ = name
                wrapper.__doc__ = real.__doc__
                setattr(signal, name, wrapper)

    def finish(self) -> None:
        """At exit: stop the timer, write the final snapshot, say where they went."""
        if os.getpid() != self.pid or not self.started or self.stopping:
            return
        self.stopping = True
        if self.timer:
            self.timer = False
            self._real_setitimer(signal.ITIMER_REAL, 0)
        self.take("exit")
        self.held = None
        files = self.kept()
        text = f"wrote {plural(self.written, 'snapshot')} to {self.folder}"
        if files:
            text += (f" ({os.path.basename(files[0])} to {os.path.basename(files[-1])})"
                     if len(files) > 1 else f" ({os.path.basename(files[0])})")
        if self.keep and self.written > len(files):
            text += f"; kept the newest {len(files)}"
        self.emit("exit", text, folder=self.folder, snapshots=files,
                  written=self.written, exit_code=self.exit_code)


def make_emitter(as_json: bool):
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
        except (OSError, ValueError, RuntimeError):
            # RuntimeError: a signal arrived while the program itself was
            # writing to standard error (a reentrant write).
            pass

    return emit




def _this_file() -> str:
    """This file, as the frames of its code name it."""
    return _this_file.__code__.co_filename
