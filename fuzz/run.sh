#!/bin/sh
# Build the libFuzzer target for the snapshot reader and run it.
#
#   fuzz/run.sh SECONDS [extra libFuzzer flags...]
#
# Needs clang with the fuzzer runtime (Debian: apt-get install clang
# libclang-rt-dev, or clang-14 libclang-rt-14-dev); CC overrides the
# compiler.  Builds into fuzz/out/, regenerates the seed corpus in
# fuzz/corpus/, keeps new inputs in fuzz/out/corpus/ (not committed) and
# writes any crashing input to fuzz/out/crash-*.  Exits non-zero if the
# fuzzer found a crash.
set -eu
SECONDS_TO_RUN=${1:-60}
[ $# -gt 0 ] && shift
HERE=$(cd "$(dirname "$0")" && pwd)
CORE="$HERE/../src/heaptrace/_core"
OUT="$HERE/out"

if [ -z "${CC:-}" ]; then
    for c in clang clang-19 clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
    done
fi
if [ -z "${CC:-}" ]; then
    echo "run.sh: clang not found (apt-get install clang libclang-rt-dev)" >&2
    exit 2
fi

mkdir -p "$OUT/corpus" "$HERE/corpus"
COMMON="-std=c11 -Wall -Wextra -Werror -g -I$CORE"
SRCS="$CORE/format.c $CORE/snapdata.c"
# shellcheck disable=SC2086
"$CC" $COMMON -O1 "$HERE/gen_corpus.c" $SRCS -o "$OUT/gen_corpus"
"$OUT/gen_corpus" "$HERE/corpus" >/dev/null
# shellcheck disable=SC2086
"$CC" $COMMON -O1 -DHT_FORMAT_ALLOC_HOOK \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -fno-omit-frame-pointer "$HERE/fuzz_format.c" $SRCS -o "$OUT/fuzz_format"

cd "$OUT"
exec ./fuzz_format -max_total_time="$SECONDS_TO_RUN" -max_len=4096 \
    -dict="$HERE/format.dict" -artifact_prefix="$OUT/" -print_final_stats=1 \
    "$@" "$OUT/corpus" "$HERE/corpus"
