#!/usr/bin/env bash
# Build heaptrace and run its whole test suite on every CPython 3.11+ found
# (pyenv versions, else python3), each in a fresh virtual environment, so
# that what is tested is what `pip install .` gives a user.
#
#   scripts/test-all.sh [pytest args...]
#
# Environment: HEAPTRACE_PYTHONS="python3.11 /path/to/python3.13" overrides
# the interpreter list; HEAPTRACE_VENVS (default .venvs) is where the
# environments go.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/variant-env.sh

find_pythons() {
    if [ -n "${HEAPTRACE_PYTHONS:-}" ]; then
        echo "$HEAPTRACE_PYTHONS"
        return
    fi
    local found=""
    for dir in "$HOME"/.pyenv/versions/*; do
        py="$dir/bin/python3"
        [ -x "$py" ] || continue
        if "$py" -c 'import sys; import sysconfig; sys.exit(sys.version_info < (3, 11) or bool(sysconfig.get_config_var("Py_GIL_DISABLED")))' 2>/dev/null; then
            found="$found $py"
        fi
    done
    [ -n "$found" ] || found="python3"
    echo "$found"
}

venvs=${HEAPTRACE_VENVS:-.venvs}
status=0
for py in $(find_pythons); do
    version=$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
    env="$venvs/$version"
    echo "=== CPython $version ($py)"
    rm -rf "$env"
    "$py" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check ".[test]"
    if ! "$env/bin/python" -m pytest -p no:cacheprovider "$@"; then
        status=1
    fi
done
# The public-API fallback (used by CPython versions without a shim in
# compat.h) must keep passing the engine and compatibility tests too.
if [ -z "${HEAPTRACE_SKIP_FALLBACK:-}" ]; then
    py=$(find_pythons | awk '{print $1}')
    env="$venvs/public-api"
    echo "=== public-API fallback ($py)"
    variant_env "$env" "$py" HEAPTRACE_PUBLIC_API=1
    if ! "$env/bin/python" -c 'import heaptrace._core as c, sys; sys.exit(c.FAST_FRAMES)'; then
        echo "the fallback build still uses the fast frame shims" >&2
        status=1
    elif ! "$env/bin/python" -m pytest -p no:cacheprovider tests/unit tests/compat tests/integration; then
        status=1
    fi
fi
exit $status
