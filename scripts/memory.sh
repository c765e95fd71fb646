#!/usr/bin/env bash
# Measures the peak resident memory of `speechmill process` as file length and file count grow,
# and prints a Markdown table (docs/memory.md holds the figures measured here).
#
#   scripts/memory.sh [WORK_DIR [INPUT...]]
#
# Inputs are made from the real recordings in testdata/ by scripts/make_memory_inputs.py:
# single 48 kHz WAV files of 1 minute, 10 minutes, 30 minutes and 2 hours (speech from
# alsa-utils, repeated with gaps and gain changes), and folders of 1,000, 10,000 and 20,000 short 16 kHz
# clips (slices of the LibriVox recordings). Each is processed twice: with the default gate
# (which rejects files over 60 s as too_long, after measuring them) and with --no-gate (every
# clip standardised, encoded and written to Parquet). Needs about 2 GB of disk in WORK_DIR.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="${1:-$root/target/memory}"
mkdir -p "$work"

if [ ! -x /usr/bin/time ]; then
    echo "memory: installing time" >&2
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null
fi
"$root/scripts/setup.sh"
cargo build --release --quiet --manifest-path "$root/Cargo.toml"
speechmill="$root/target/release/speechmill"

python3 "$root/scripts/make_memory_inputs.py" "$root/testdata/real-speech" "$work/inputs"

# Prints "peak_MiB wall_s" for one run.
measure() {
    local out="$1"
    shift
    rm -rf "$out"
    /usr/bin/time -f '%M %e' -o "$work/time.txt" "$speechmill" process "$@" --out "$out" --quiet --no-cache >/dev/null 2>"$work/stderr.txt" || {
        local code=$?
        if [ "$code" -ne 0 ] && [ "$code" -ne 3 ]; then
            cat "$work/stderr.txt" >&2
            exit "$code"
        fi
    }
    awk '{ printf "%.0f %.1f", $1 / 1024, $2 }' "$work/time.txt"
}

echo "| input | audio | peak RSS, default gate | peak RSS, --no-gate | wall time, --no-gate |"
echo "|---|---|---|---|---|"
shift || true
inputs=("$@")
if [ "${#inputs[@]}" -eq 0 ]; then
    inputs=(long_1min.wav long_10min.wav long_30min.wav long_2h.wav clips_1000 clips_10000 clips_20000)
fi
for input in "${inputs[@]}"; do
    path="$work/inputs/$input"
    audio="$(python3 "$root/scripts/make_memory_inputs.py" --duration "$path")"
    read -r gated_mib _ <<<"$(measure "$work/out" "$path")"
    read -r open_mib open_s <<<"$(measure "$work/out" "$path" --no-gate)"
    echo "| \`$input\` | $audio | $gated_mib MiB | $open_mib MiB | $open_s s |"
done
rm -rf "$work/out"
