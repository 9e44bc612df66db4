#!/usr/bin/env bash
# Build heaptrace with fault injection (HEAPTRACE_FAULT_INJECTION=1: the
# tracer's own allocations can be made to fail) in a fresh virtual
# environment and run the out-of-memory tests, then the engine's other
# tests against the same build.
#
#   scripts/test-faults.sh [pytest args...]
#
# Environment: PYTHON (default python3), HEAPTRACE_VENVS (default .venvs).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/variant-env.sh
py=${PYTHON:-python3}
env="${HEAPTRACE_VENVS:-.venvs}/faults"
echo "=== fault-injection build ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
variant_env "$env" "$py" HEAPTRACE_FAULT_INJECTION=1
if ! "$env/bin/python" -c 'import heaptrace._core as c, sys; sys.exit(not c.FAULT_INJECTION)'; then
    echo "test-faults.sh: the build has no fault injection" >&2
    exit 1
fi
# -rs shows any skip; none is expected with this build.
"$env/bin/python" -m pytest -p no:cacheprovider -rsx "$@" tests/faults tests/integration tests/stress
