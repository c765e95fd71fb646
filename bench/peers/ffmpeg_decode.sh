#!/usr/bin/env bash
# Decode-only floor with process start-up: one `ffmpeg -f null` per file.
# Usage: ffmpeg_decode.sh IN_DIR
set -uo pipefail
in_dir=$1
failed=0
for f in "$in_dir"/*; do
    [ -f "$f" ] || continue
    ffmpeg -nostdin -v error -threads 1 -i "$f" -f null - || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || { echo "ffmpeg_decode: $failed files failed" >&2; exit 1; }
