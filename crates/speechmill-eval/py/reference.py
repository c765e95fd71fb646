"""Reference tools for speechmill-eval: pyloudnorm, webrtcvad and soxr, driven by JSON on stdin.

Each request is one JSON object on stdin; the answer is one JSON object on stdout.
  {"task": "loudness", "files": [...]}                 -> {"lufs": [...]}  (pyloudnorm, BS.1770-4)
  {"task": "vad", "file": f, "modes": [m...], "frame_ms": n}
                                                       -> {"speech": {"m": [0/1, ...]}}  (webrtcvad, 16-bit PCM)
  {"task": "resample", "jobs": [{"file": f, "out": g, "rate": r}, ...]}
                                                       -> {}  (soxr VHQ in float64, written as float32 WAV)
"""
import json
import sys

import numpy as np
import soundfile as sf


def loudness(request):
    import pyloudnorm

    values = []
    for path in request["files"]:
        data, rate = sf.read(path, dtype="float64", always_2d=True)
        meter = pyloudnorm.Meter(rate)
        value = meter.integrated_loudness(data if data.shape[1] > 1 else data[:, 0])
        values.append(None if not np.isfinite(value) else float(value))
    return {"lufs": values}


def vad(request):
    import webrtcvad

    data, rate = sf.read(request["file"], dtype="int16")
    frame = rate * int(request["frame_ms"]) // 1000
    answer = {}
    for mode in request["modes"]:
        detector = webrtcvad.Vad(int(mode))
        answer[str(mode)] = [
            int(detector.is_speech(data[start:start + frame].tobytes(), rate))
            for start in range(0, len(data) - frame + 1, frame)
        ]
    return {"speech": answer}


def resample(request):
    import soxr

    for job in request["jobs"]:
        data, rate = sf.read(job["file"], dtype="float64")
        out = soxr.resample(data, rate, int(job["rate"]), quality="VHQ")
        sf.write(job["out"], out.astype(np.float32), int(job["rate"]), subtype="FLOAT")
    return {}


TASKS = {"loudness": loudness, "vad": vad, "resample": resample}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(TASKS[request["task"]](request), sys.stdout)
