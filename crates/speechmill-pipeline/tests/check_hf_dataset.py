#!/usr/bin/env python3
"""Checks that Hugging Face `datasets` loads a speechmill Parquet dataset as intended.

Usage: check_hf_dataset.py DIR EXPECTED_ROWS

Loads DIR/data/*.parquet with `datasets.load_dataset("parquet", ...)` and checks that:
  - the split has EXPECTED_ROWS rows and `audio` is its first column;
  - `features["audio"]` is `Audio(sampling_rate=16000)` (restored from the `huggingface`
    Parquet metadata);
  - every row's audio bytes decode with `soundfile` to a mono 16 kHz array, whose length is
    `duration_s * 16000` (within one sample) when the dataset has a `duration_s` column.

`datasets` 4 and later decode audio through torchcodec (PyTorch), so the audio column is cast
to `Audio(decode=False)` and decoded here with soundfile instead.

Exits 0 when every check passes; otherwise prints what failed to stderr and exits 1.
Needs: pip install datasets soundfile
"""

import glob
import io
import os
import sys
import tempfile

SAMPLING_RATE = 16_000


def fail(message: str) -> None:
    print(f"check_hf_dataset: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    dataset_dir = sys.argv[1]
    try:
        expected_rows = int(sys.argv[2])
    except ValueError:
        fail(f"EXPECTED_ROWS must be an integer, got {sys.argv[2]!r}")

    # Local files only: never reach for the Hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
        import soundfile
    except ImportError as error:
        fail(f"cannot import {error.name}: pip install datasets soundfile")
    datasets.disable_progress_bars()

    pattern = os.path.join(dataset_dir, "data", "*.parquet")
    files = sorted(glob.glob(pattern))
    if not files:
        fail(f"no files match {pattern}")

    # A fresh cache, so that an earlier run's Arrow cache can never stand in for these files.
    with tempfile.TemporaryDirectory(prefix="check_hf_dataset-") as cache_dir:
        try:
            dataset = datasets.load_dataset(
                "parquet", data_files=files, split="train", cache_dir=cache_dir
            )
        except Exception as error:  # noqa: BLE001 - any loading error is a failed check
            fail(f"load_dataset failed on {len(files)} files: {type(error).__name__}: {error}")

        if dataset.num_rows != expected_rows:
            fail(f"expected {expected_rows} rows, found {dataset.num_rows}")
        if not dataset.column_names or dataset.column_names[0] != "audio":
            fail(f"audio must be the first column, columns are {dataset.column_names}")

        audio_feature = dataset.features["audio"]
        expected_feature = datasets.Audio(sampling_rate=SAMPLING_RATE)
        if audio_feature != expected_feature:
            fail(f"features['audio'] is {audio_feature!r}, expected {expected_feature!r}")

        has_duration = "duration_s" in dataset.column_names
        undecoded = dataset.cast_column("audio", datasets.Audio(decode=False))
        for index, row in enumerate(undecoded):
            audio = row["audio"]
            if not audio or audio.get("bytes") is None:
                fail(f"row {index}: no audio bytes")
            try:
                samples, rate = soundfile.read(io.BytesIO(audio["bytes"]), dtype="int16")
            except Exception as error:  # noqa: BLE001 - any decoding error is a failed check
                fail(f"row {index} ({audio.get('path')}): soundfile cannot decode: {error}")
            if rate != SAMPLING_RATE:
                fail(f"row {index} ({audio.get('path')}): sample rate {rate}, expected {SAMPLING_RATE}")
            if samples.ndim != 1:
                fail(f"row {index} ({audio.get('path')}): {samples.shape[1]} channels, expected mono")
            duration_s = row.get("duration_s") if has_duration else None
            if duration_s is not None:
                expected_samples = duration_s * SAMPLING_RATE
                if abs(len(samples) - expected_samples) > 1:
                    fail(
                        f"row {index} ({audio.get('path')}): {len(samples)} samples, "
                        f"duration_s {duration_s} means {expected_samples:.1f}"
                    )

    print(
        f"check_hf_dataset: ok: {expected_rows} rows in {len(files)} files, "
        f"features {dataset.features!r}"
    )


if __name__ == "__main__":
    main()
