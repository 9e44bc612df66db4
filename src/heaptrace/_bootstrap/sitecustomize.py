"""heaptrace's bootstrap for Python child processes of `heaptrace run`.

`heaptrace run` puts this folder first on the PYTHONPATH of the program it
runs, and the settings of the run in the HEAPTRACE_CHILD environment
variable.  Any Python process started from the program with exec (a
subprocess running sys.executable, a multiprocessing child under the spawn
or forkserver start methods, even a Python started by a shell script the
program ran) imports this module at start-up, as every Python imports
``sitecustomize``, and so traces itself with the run's settings, writing
its own snapshot series named by its pid.

This module hides any other ``sitecustomize`` further down the path, so it
runs that one too, right after, as that module itself (it gets
``sys.modules["sitecustomize"]``).  Nothing here may fail a child: an
error is reported on one line and the child runs untraced.
"""

import os
import sys


def _heaptrace_bootstrap():
    here = os.path.dirname(os.path.abspath(__file__))
    config = os.environ.get("HEAPTRACE_CHILD")
    if config:
        try:
            try:
                from heaptrace.cli import _child
            except ImportError:
                # heaptrace itself is found beside this folder.
                sys.path.append(os.path.dirname(os.path.dirname(here)))
                from heaptrace.cli import _child
            _child.start(config)
        except Exception as error:  # never fail the child
            sys.stderr.write("heaptrace: this child process (pid %d) runs untraced: "
                             "%s\n" % (os.getpid(), str(error).splitlines()[0]
                                       if str(error) else type(error).__name__))
    # Run the sitecustomize this one hides, if any.
    import importlib.machinery
    import importlib.util
    rest = [entry for entry in sys.path
            if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_heaptrace_bootstrap()
del _heaptrace_bootstrap
