#!/bin/sh
# Instruction counts of one workload: untraced, under tracemalloc and under
# heaptrace, counted by valgrind's callgrind.  Unlike timings, the counts
# barely change from one run to the next, even on a busy machine.
#
# Usage: bench/callgrind.sh [--only-stdlib] [--nframe N] [--scale S]
#                           [--sampling BYTES] [WORKLOAD]
#
#   WORKLOAD       one of the workloads of bench/workloads.py
#                  (default: small_objects)
#   --nframe N     traceback limit passed to start() (default: 1)
#   --scale S      amount of work, as in workloads.py (default: 0.1; callgrind
#                  runs about 50 times slower than the bare interpreter)
#   --only-stdlib  leave heaptrace out
#   --sampling B   also count heaptrace sampling every B bytes on average
#                  (start(sampling_interval=B, sampling_seed=1)); repeatable
#                  (may be given more than once)
#
# The interpreter is $PYTHON (default: python3); heaptrace must be importable
# from it.  Each mode is run twice, once with the measured run and once
# without (workloads.py --runs 0: same imports, setup, warm-up, start and
# stop), and the difference is what the table shows, so the interpreter's
# start-up and the workload's setup do not dilute the ratios.
set -eu

workload=small_objects
nframe=1
scale=0.1
modules="none tracemalloc heaptrace"
samplings=""
while [ $# -gt 0 ]; do
    case "$1" in
        --only-stdlib) modules="none tracemalloc" ;;
        --nframe) nframe=$2; shift ;;
        --scale) scale=$2; shift ;;
        --sampling) samplings="$samplings $2"; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option: $1" >&2; exit 2 ;;
        *) workload=$1 ;;
    esac
    shift
done

command -v valgrind >/dev/null || {
    echo "error: valgrind is not installed (apt-get install -y valgrind)" >&2
    exit 2
}
bench=$(cd "$(dirname "$0")" && pwd)
# Resolve shims (pyenv) to the interpreter itself, which valgrind must run.
python=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')
case "$modules" in
    *heaptrace*)
        "$python" -c 'import heaptrace' 2>/dev/null || {
            echo "error: cannot import heaptrace with $python; set PYTHON" \
                 "or pass --only-stdlib" >&2
            exit 2
        } ;;
esac
# String hashes are randomised per process; fix them for repeatable counts.
export PYTHONHASHSEED=0

# count MODULE RUNS [SAMPLING]: instructions executed by the whole process.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$python" "$bench/workloads.py" "$workload" --module "$1" \
        --nframe "$nframe" --scale "$scale" --runs "$2" \
        ${3:+--sampling "$3"} 2>&1 >/dev/null |
        sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}

echo "callgrind: $workload, nframe=$nframe, scale=$scale" >&2
echo "| mode | instructions | ratio to untraced |"
echo "|------|--------------|-------------------|"
for module in $modules; do
    echo "  $module..." >&2
    work=$(( $(count "$module" 1) - $(count "$module" 0) ))
    if [ "$module" = none ]; then
        base=$work label=untraced
    else
        label="$module.start($nframe)"
    fi
    ratio=$(awk -v a="$work" -v b="$base" 'BEGIN { printf "%.3fx", a / b }')
    echo "| $label | $work | $ratio |"
done
case "$modules" in *heaptrace*) ;; *) samplings="" ;; esac
for interval in $samplings; do
    echo "  heaptrace sampling_interval=$interval..." >&2
    work=$(( $(count heaptrace 1 "$interval") - $(count heaptrace 0 "$interval") ))
    ratio=$(awk -v a="$work" -v b="$base" 'BEGIN { printf "%.3fx", a / b }')
    echo "| heaptrace.start($nframe, sampling_interval=$interval) | $work | $ratio |"
done
