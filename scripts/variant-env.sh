# Sourced by the test scripts: build one variant of heaptrace into a fresh
# virtual environment.
#
#   variant_env ENV PYTHON [VAR=VALUE...]
#
# Creates the environment ENV with PYTHON and installs heaptrace[test] into
# it, built with the given environment variables (HEAPTRACE_SANITIZE=1,
# HEAPTRACE_PUBLIC_API=1, ...).  The build is made from a copy of the tree:
# pip builds in ./build, and setuptools would reuse objects compiled there
# with other flags.

variant_env() {
    local env=$1 py=$2
    shift 2
    rm -rf "$env"
    "$py" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    local src
    src=$(mktemp -d)
    tar --exclude=./build --exclude=./.venvs --exclude=./.git --exclude=./fuzz/out \
        -cf - . | tar -C "$src" -xf -
    if ! env "$@" "$env/bin/python" -m pip install --quiet --no-cache-dir \
            --disable-pip-version-check "$src[test]"; then
        rm -rf "$src"
        return 1
    fi
    rm -rf "$src"
}
