#!/usr/bin/env bash
# The per-file ffmpeg path a user would script (issue 7): one ffmpeg process per file.
# Usage: ffmpeg_loudnorm.sh IN_DIR OUT_DIR
set -uo pipefail
in_dir=$1 out_dir=$2
mkdir -p "$out_dir"
failed=0
for f in "$in_dir"/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    ffmpeg -nostdin -v error -threads 1 -i "$f" -af loudnorm=I=-23:TP=-1,aresample=16000 -ac 1 -c:a flac "$out_dir/${name%.*}.flac" || failed=$((failed + 1))
done
[ "$failed" -eq 0 ] || { echo "ffmpeg_loudnorm: $failed files failed" >&2; exit 1; }
