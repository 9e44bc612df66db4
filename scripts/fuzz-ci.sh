#!/usr/bin/env bash
# Run the snapshot-file fuzzer (fuzz/run.sh) for a bounded time, installing
# clang first if it is missing and apt-get is available.  Fails loudly when
# no clang can be had: the fuzz run is part of CI, not optional.
#
#   scripts/fuzz-ci.sh [SECONDS]      (default: $HEAPTRACE_FUZZ_SECONDS or 90)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-${HEAPTRACE_FUZZ_SECONDS:-90}}

have_fuzzer() {
    local cc
    for cc in ${CC:-} clang clang-19 clang-16 clang-15 clang-14; do
        command -v "$cc" >/dev/null 2>&1 || continue
        if echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { (void)d; return (int)n * 0; }' \
            | "$cc" -x c -fsanitize=fuzzer - -o /tmp/heaptrace-fuzz-probe 2>/dev/null; then
            rm -f /tmp/heaptrace-fuzz-probe
            export CC=$cc
            return 0
        fi
    done
    return 1
}

if ! have_fuzzer; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "=== installing clang for the fuzzer"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev >/dev/null
    fi
    if ! have_fuzzer; then
        echo "fuzz-ci.sh: FAILED: no clang with libFuzzer, and it could not be installed" >&2
        exit 1
    fi
fi
echo "=== fuzzing the snapshot reader for ${seconds}s ($CC)"
fuzz/run.sh "$seconds"
