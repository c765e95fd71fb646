#!/usr/bin/env bash
# The accuracy evaluation (on demand, not in CI): installs the reference tools (Debian ffmpeg; a
# virtualenv in target/evalenv with pyloudnorm, soundfile, numpy, soxr and webrtcvad), builds
# speechmill-eval and writes docs/accuracy.md. Extra arguments go to speechmill-eval
# (e.g. `--only snr`). Safe to run again: it installs only what is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"

if ! command -v ffmpeg >/dev/null 2>&1; then
    echo "eval: installing ffmpeg" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ffmpeg >/dev/null
fi

target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/evalenv"
if ! "$venv/bin/python" -c 'import pyloudnorm, soundfile, numpy, soxr, webrtcvad' >/dev/null 2>&1; then
    echo "eval: creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pyloudnorm soundfile numpy soxr
    # webrtcvad builds from source; webrtcvad-wheels is the same code prebuilt.
    "$venv/bin/pip" install --quiet --disable-pip-version-check webrtcvad \
        || "$venv/bin/pip" install --quiet --disable-pip-version-check webrtcvad-wheels
fi

cargo run --quiet -p speechmill-eval -- \
    --data "$root/testdata/real-speech" \
    --work "$target/eval-work" \
    --python "$venv/bin/python" \
    --out "$root/docs/accuracy.md" \
    "$@"
