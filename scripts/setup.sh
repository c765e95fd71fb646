#!/usr/bin/env bash
# Installs what building and testing speechmill needs on a fresh Debian machine:
#   - cmake (the bundled libopus decoder is built with it),
#   - promtool (Debian's prometheus package), which checks the metrics page in the tests,
#   - with --python: a virtualenv in target/pyenv with Hugging Face `datasets` and `soundfile`,
#     used by the tests that load the Parquet output as a user would, `opentelemetry-proto`,
#     used by the tests' trace receiver, and `moto[server]`, the S3-compatible server the object
#     storage tests run against.
# Safe to run again: it installs only what is missing.
set -euo pipefail

want_python=false
for arg in "$@"; do
    case "$arg" in
        --python) want_python=true ;;
        *) echo "usage: scripts/setup.sh [--python]" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if "$want_python"; then
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
fi
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if "$want_python"; then
    venv="$root/target/pyenv"
    if ! "$venv/bin/python" -c 'import datasets, soundfile, numpy, opentelemetry.proto, moto.server' >/dev/null 2>&1; then
        echo "setup: creating $venv with datasets, soundfile, opentelemetry-proto and moto[server]" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check datasets soundfile numpy opentelemetry-proto 'moto[server]'
    fi
fi
