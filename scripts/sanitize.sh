#!/usr/bin/env bash
# Build the C engine with AddressSanitizer and UndefinedBehaviorSanitizer
# (HEAPTRACE_SANITIZE=1, see setup.py) into a fresh virtual environment and
# run the whole test suite against it.
#
#   scripts/sanitize.sh [pytest args...]
#
# The interpreter itself is not instrumented, so the ASan runtime has to be
# loaded before anything else: it is put in LD_PRELOAD (with the UBSan
# runtime).  Leak detection is off because CPython does not free everything
# at exit; any other report stops the process with an error.
#
# Environment: PYTHON (default python3), CC (default cc),
# HEAPTRACE_VENVS (default .venvs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/variant-env.sh

py=${PYTHON:-python3}
cc=${CC:-cc}
env="${HEAPTRACE_VENVS:-.venvs}/sanitize"

runtime() {
    local path
    path=$("$cc" -print-file-name="$1")
    if [ "$path" = "$1" ] || [ ! -e "$path" ]; then
        echo "sanitize.sh: $cc has no $1 (install the compiler's sanitizer runtimes)" >&2
        exit 2
    fi
    echo "$path"
}
asan=$(runtime libasan.so)
ubsan=$(runtime libubsan.so)

echo "=== ASan + UBSan build ($("$py" -c 'import sys; print(sys.version.split()[0])'), $cc)"
variant_env "$env" "$py" CC="$cc" HEAPTRACE_SANITIZE=1

export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"

# Check that the instrumented engine is the one being tested: a sanitized
# build refuses to load without the runtime preloaded.
LD_PRELOAD="$asan $ubsan" "$env/bin/python" - <<'PY'
import heaptrace._core as core, subprocess, sys
so = core.__file__
libs = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
if "libasan" not in libs:
    sys.exit("sanitize.sh: %s is not linked with ASan" % so)
print("engine:", so)
PY

# --capture=sys: a sanitizer report goes to file descriptor 2 as the process
# dies, so pytest must not be capturing that descriptor.
LD_PRELOAD="$asan $ubsan" "$env/bin/python" -m pytest -p no:cacheprovider --capture=sys "$@"
