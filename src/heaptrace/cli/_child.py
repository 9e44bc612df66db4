"""Tracing in a Python child process of `heaptrace run` (see
heaptrace/_bootstrap/sitecustomize.py): the child traces with the run's
settings and writes its own snapshot series, named by its pid, into the
run's folder."""

from __future__ import annotations

import atexit
import json
import os
import signal

#: The environment variable that carries a run's settings to its children.
ENV = "HEAPTRACE_CHILD"
#: The folder `heaptrace run` puts first on its program's PYTHONPATH.
BOOTSTRAP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "_bootstrap")


def environment(folder: str, nframe: int, sample, interval: float, signum, keep: int,
                as_json: bool, native: bool = False) -> dict:
    """The variables to add to the program's environment so that its Python
    children trace themselves with these settings."""
    config = {"folder": folder, "nframe": nframe, "sample": sample, "interval": interval,
              "signal": signum.name if signum is not None else None, "keep": keep,
              "json": as_json, "native": native}
    path = os.environ.get("PYTHONPATH")
    return {ENV: json.dumps(config),
            "PYTHONPATH": BOOTSTRAP + (os.pathsep + path if path else "")}


def start(text: str) -> None:
    """Start tracing this process with the settings in *text* (the JSON of
    environment()).  Raises ValueError for settings it cannot read."""
    import heaptrace
    from ._snapshotter import Snapshotter, make_emitter

    try:
        config = json.loads(text)
        folder = str(config["folder"])
        nframe = int(config["nframe"])
        sample = config["sample"]
        interval = float(config["interval"])
        keep = int(config["keep"])
        signum = signal.Signals[config["signal"]] if config["signal"] else None
        as_json = bool(config.get("json"))
        native = bool(config.get("native"))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{ENV} is not a valid heaptrace setting ({error})") from None
    if heaptrace.is_tracing():
        return
    emit = make_emitter(as_json)
    snapshotter = Snapshotter(heaptrace, folder, keep, emit, follow=True)
    snapshotter.install(signum, interval)
    snapshotter.warm_up(nframe)
    atexit.register(snapshotter.finish)
    heaptrace.start(nframe, sampling_interval=sample, native=native)
    snapshotter.begin(interval)
    emit("child", None, pid=os.getpid(), parent=os.getppid())
