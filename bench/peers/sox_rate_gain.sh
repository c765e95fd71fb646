#!/usr/bin/env bash
# sox, one process per file: mono, resample to 16 kHz (high quality), peak-normalise to -1 dBFS,
# 16-bit FLAC. `gain -n` makes sox read the file twice (through a temporary file), as a user
# normalising with sox would.
# Usage: sox_rate_gain.sh IN_DIR OUT_DIR
set -uo pipefail
in_dir=$1 out_dir=$2
mkdir -p "$out_dir"
failed=0
for f in "$in_dir"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    sox -V1 "$f" -c 1 -b 16 "$out_dir/${name%.*}.flac" rate -h 16k gain -n -1 || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || { echo "sox_rate_gain: $failed files failed" >&2; exit 1; }
