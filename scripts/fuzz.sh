#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ for SECONDS (default 30), seeded from testdata.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Installs cargo-fuzz if it is missing. The stable toolchain is enough: RUSTC_BOOTSTRAP=1 lets it
# take the nightly-only flags cargo-fuzz passes (-Zsanitizer=address and friends). Exits non-zero
# as soon as a target finds a crash, hang (>10 s for one input) or excessive allocation; the input
# is left in fuzz/artifacts/TARGET/ and should become a regression test (docs/fuzzing.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${1:-30}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(decode process_clip)
fi

export RUSTC_BOOTSTRAP=1
# The fuzz workspace keeps its sanitizer-instrumented build in fuzz/target.
unset CARGO_TARGET_DIR
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# Seeds: the bad-inputs corpus and a few small real recordings in other codecs. Copied at run
# time (the corpus folder is not in git); libFuzzer keeps what it learns there between runs.
seed_files=(
    testdata/bad-inputs/files/*
    testdata/real-speech/derived/librivox0870.opus
    testdata/real-speech/derived/librivox0870.ogg
    testdata/real-speech/derived/librivox0870.m4a
    testdata/real-speech/derived/librivox0870.flac
    testdata/real-speech/derived/librivox0870_16k_vbr_lame.mp3
    testdata/real-speech/derived/librivox0870_8k_u8.wav
    testdata/real-speech/derived/librivox0870_8k_alaw.wav
    testdata/real-speech/pocketsphinx-testdata/cards_001.wav
    testdata/real-speech/sound-theme-freedesktop/audio-test-signal.oga
)

cd fuzz
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    for file in "${seed_files[@]}"; do
        # The decode target reads its first byte as a selector: 0 means "no raw format".
        if [ "$target" = decode ]; then
            { printf '\0'; cat "$root/$file"; } >"$corpus/seed-$(basename "$file")"
        else
            cp "$root/$file" "$corpus/seed-$(basename "$file")"
        fi
    done
    echo "fuzzing $target for $seconds s" >&2
    cargo fuzz run --release "$target" "$corpus" -- \
        -max_total_time="$seconds" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 \
        -max_len=65536 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/"
done
