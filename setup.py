"""Build the C engine of heaptrace.

The engine reads interpreter internals (frames, thread state), so it is
compiled against the internal headers of the Python that builds it.  Those
headers are passed with -isystem so that their own warnings do not trip
-Werror; our code gets -Wall -Wextra -Werror.
"""
import os
import sysconfig

from setuptools import Extension, setup

CORE = os.path.join("src", "heaptrace", "_core")
SOURCES = [
    os.path.join(CORE, name)
    for name in ("module.c", "hooks.c", "tracer.c", "traces.c", "intern.c",
                 "snapbuild.c", "snapdata.c",
                 "analysis.c", "snapobj.c", "snapraw.c", "pickscan.c", "slots.c",
                 "format.c", "got.c", "pytrack.c", "native.c", "refpath.c",
                 "nstack.c")
]

include = sysconfig.get_paths()["include"]
cflags = [
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fvisibility=hidden",
    "-isystem", include,
    "-isystem", os.path.join(include, "internal"),
]
ldflags = ["-pthread", "-lm"]

# HEAPTRACE_SANITIZE=1 builds with AddressSanitizer and UBSan (see Makefile).
if os.environ.get("HEAPTRACE_SANITIZE"):
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined", "-O1", "-g"]
    ldflags += ["-fsanitize=address,undefined"]
# HEAPTRACE_PUBLIC_API=1 builds the public-API fallback that versions without
# a shim in compat.h use, so that it can be tested on one that has a shim.
if os.environ.get("HEAPTRACE_PUBLIC_API"):
    cflags += ["-DHT_FORCE_PUBLIC_API=1"]
# HEAPTRACE_FAULT_INJECTION=1 compiles in the allocation-failure switch used
# by the out-of-memory tests.
if os.environ.get("HEAPTRACE_FAULT_INJECTION"):
    cflags += ["-DHT_FAULT_INJECTION=1"]

setup(
    ext_modules=[
        Extension(
            "heaptrace._core",
            sources=SOURCES,
            depends=[os.path.join(CORE, n) for n in os.listdir(CORE) if n.endswith(".h")],
            extra_compile_args=cflags,
            extra_link_args=ldflags,
        )
    ],
)
