#!/usr/bin/env python3
"""Makes the inputs of scripts/memory.sh from the real recordings in testdata/real-speech.

    make_memory_inputs.py REAL_SPEECH_DIR OUT_DIR   writes the inputs (skips existing ones)
    make_memory_inputs.py --duration PATH           prints the audio duration of a file or folder

Standard library only: long 48 kHz files are the alsa-utils speech prompts repeated with
silences and gain changes; short clips are slices of the 16 kHz LibriVox recordings at varying
offsets and lengths (1 to 3 s), so that no two clips are exact duplicates.
"""

import array
import os
import sys
import wave

LONG_FILES = {"long_1min.wav": 60, "long_10min.wav": 600, "long_30min.wav": 1800, "long_2h.wav": 7200}
CLIP_FOLDERS = {"clips_1000": 1000, "clips_10000": 10000, "clips_20000": 20000}


def read_pcm16(path):
    with wave.open(path) as reader:
        assert reader.getsampwidth() == 2 and reader.getnchannels() == 1, path
        samples = array.array("h")
        samples.frombytes(reader.readframes(reader.getnframes()))
        return reader.getframerate(), samples


def write_pcm16(path, rate, chunks):
    tmp = path + ".tmp"
    with wave.open(tmp, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        for chunk in chunks:
            writer.writeframes(chunk.tobytes())
    os.replace(tmp, path)


def long_file(prompts, seconds):
    """Yields chunks of 48 kHz speech: prompts in turn, each at one of four gains, with gaps."""
    rate = 48000
    total = seconds * rate
    written = 0
    index = 0
    gains = [1.0, 0.5, 0.25, 0.7]
    scaled = {}
    while written < total:
        key = (index % len(prompts), index % len(gains))
        if key not in scaled:
            scaled[key] = array.array("h", (int(sample * gains[key[1]]) for sample in prompts[key[0]]))
        chunk = scaled[key]
        gap = array.array("h", bytes(2 * (rate // 4 + 97 * (index % 7))))
        for piece in (chunk, gap):
            piece = piece[: total - written]
            written += len(piece)
            yield piece
        index += 1


def make(real, out):
    os.makedirs(out, exist_ok=True)
    prompts = []
    for name in ("Front_Center.wav", "Front_Left.wav", "Side_Right.wav"):
        rate, samples = read_pcm16(os.path.join(real, "alsa-utils", name))
        assert rate == 48000
        prompts.append(samples)
    for name, seconds in LONG_FILES.items():
        path = os.path.join(out, name)
        if not os.path.exists(path):
            write_pcm16(path, 48000, long_file(prompts, seconds))
    books = []
    for name in ("0870", "0880", "0890"):
        rate, samples = read_pcm16(
            os.path.join(real, "pocketsphinx-testdata", f"sense_and_sensibility_01_austen_64kb-{name}.wav")
        )
        assert rate == 16000
        books.append(samples)
    for folder, count in CLIP_FOLDERS.items():
        path = os.path.join(out, folder)
        if os.path.isdir(path) and len(os.listdir(path)) == count:
            continue
        os.makedirs(path, exist_ok=True)
        for clip in range(count):
            book = books[clip % len(books)]
            length = 16000 + (clip * 7919) % 32000
            start = (clip * 104729) % max(1, len(book) - length)
            piece = book[start : start + length]
            # A different gain per clip keeps them from being exact duplicates.
            gain = 0.3 + (clip % 97) / 140
            piece = array.array("h", (int(sample * gain) for sample in piece))
            write_pcm16(os.path.join(path, f"clip_{clip:05d}.wav"), 16000, [piece])


def duration(path):
    files = [path] if os.path.isfile(path) else [os.path.join(path, name) for name in sorted(os.listdir(path))]
    seconds = 0.0
    for file in files:
        with wave.open(file) as reader:
            seconds += reader.getnframes() / reader.getframerate()
    return f"{len(files)} file{'s' if len(files) > 1 else ''}, {seconds / 3600:.2f} h"


if __name__ == "__main__":
    if sys.argv[1] == "--duration":
        print(duration(sys.argv[2]))
    else:
        make(sys.argv[1], sys.argv[2])
