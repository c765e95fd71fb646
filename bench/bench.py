#!/usr/bin/env python3
"""speechmill against the tools users would pick instead, on the same files, in the same run.

Driven by `bench/run`, which installs the tools and builds speechmill first. This script:

1. builds (or reuses) a corpus from the real recordings in testdata/real-speech: utterances
   resampled to 48 kHz, concatenated with pauses, gain-changed, mixed with the recorded pink
   noise at 5-35 dB SNR, and written in four formats (48 kHz WAV, 44.1 kHz stereo MP3, 16 kHz
   FLAC, 8 kHz mu-law telephone); two shapes, dataset-like clips of 2-15 s and long files;
2. runs every tool over each shape `--reps` times, round-robin, under `/usr/bin/time -v`, the
   one-core figures pinned with `taskset -c 0`;
3. prints real-time factors (audio seconds per wall second, and per CPU second), peak resident
   memory and the ratios, and writes them with the machine description into the results
   section of docs/performance.md (quick runs go to target/bench/ instead).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal as sps

ROOT = Path(__file__).resolve().parent.parent
SPEECH_DIR = ROOT / 'testdata' / 'real-speech'
# Real human speech only: the TTS-like pytest-audioeval samples, the webrtcvad clip of unstated
# origin and the re-encodes of the same utterances are left out.
SPEECH_FILES = [
    'alsa-utils/Front_Center.wav',
    'alsa-utils/Front_Left.wav',
    'alsa-utils/Side_Right.wav',
    'pocketsphinx-testdata/cards_001.wav',
    'pocketsphinx-testdata/cards_005.wav',
    'pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav',
    'pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav',
    'pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0890.wav',
    'pocketsphinx-testdata/goforward.raw',
]
NOISE_FILE = 'alsa-utils/Noise.wav'
POOL_RATE = 48000
CORPUS_VERSION = 1

# Seconds of audio per shape, and the length range of the files in it.
SHAPES = {
    'full': {
        'short': {'total_s': 1800.0, 'lengths_s': (2.0, 15.0), 'extra_s': []},
        # One 12-minute file shows memory staying bounded with file length.
        'long': {'total_s': 1800.0, 'lengths_s': (60.0, 150.0), 'extra_s': [720.0]},
    },
    'quick': {
        'short': {'total_s': 120.0, 'lengths_s': (2.0, 15.0), 'extra_s': []},
        'long': {'total_s': 130.0, 'lengths_s': (60.0, 70.0), 'extra_s': []},
    },
}

# The long files run with the gate's duration limit raised, so that they are standardised,
# measured and encoded like the short ones instead of being rejected as too long.
SPEECHMILL_ENV = {'SPEECHMILL_GATE__MAX_DURATION_S': '7200'}


# --------------------------------------------------------------------------------------------
# Corpus


def load_mono(path: Path) -> tuple[np.ndarray, int]:
    if path.suffix == '.raw':
        data = np.fromfile(path, dtype='<i2').astype(np.float32) / 32768.0
        return data, 16000
    data, rate = sf.read(path, dtype='float32', always_2d=True)
    return data.mean(axis=1), rate


def speech_pool() -> tuple[list[np.ndarray], np.ndarray]:
    utterances = []
    for name in SPEECH_FILES:
        data, rate = load_mono(SPEECH_DIR / name)
        if rate != POOL_RATE:
            data = soxr.resample(data, rate, POOL_RATE, quality='VHQ').astype(np.float32)
        rms = float(np.sqrt(np.mean(data.astype(np.float64) ** 2)))
        utterances.append((data * (10 ** (-24 / 20) / rms)).astype(np.float32))
    noise, rate = load_mono(SPEECH_DIR / NOISE_FILE)
    assert rate == POOL_RATE
    noise = noise - noise.mean()
    noise = noise / float(np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    return utterances, noise.astype(np.float32)


def noise_track(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """The recorded noise tiled to `length`, each tile circularly shifted and of random polarity."""
    out = np.empty(length, dtype=np.float32)
    pos = 0
    while pos < length:
        tile = np.roll(noise, int(rng.integers(len(noise)))) * rng.choice([-1.0, 1.0])
        take = min(len(tile), length - pos)
        out[pos:pos + take] = tile[:take]
        pos += take
    return out


def make_clip(seconds: float, utterances, noise, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    length = int(round(seconds * POOL_RATE))
    clip = np.zeros(length, dtype=np.float32)
    pos = int(rng.uniform(0.05, 0.5) * POOL_RATE)
    while pos < length:
        utterance = utterances[int(rng.integers(len(utterances)))]
        take = min(len(utterance), length - pos)
        clip[pos:pos + take] += utterance[:take] * 10 ** (rng.uniform(-4, 4) / 20)
        pos += take + int(rng.uniform(0.15, 0.8) * POOL_RATE)
    speech_rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    snr_db = None
    if rng.random() >= 0.15:
        snr_db = float(rng.uniform(5, 35))
        clip += noise_track(noise, length, rng) * (speech_rms * 10 ** (-snr_db / 20))
    gain_db = float(rng.uniform(-20, 4))
    clip *= 10 ** (gain_db / 20)
    return np.clip(clip, -1.0, 1.0), {'gain_db': round(gain_db, 2), 'snr_db': snr_db and round(snr_db, 2)}


def write_clip(path_stem: Path, clip48: np.ndarray, kind: str, tmp: Path) -> tuple[Path, float]:
    """Writes the clip in one of the corpus formats; returns the path and its duration in seconds."""
    if kind == 'wav48':
        path = path_stem.with_suffix('.wav')
        sf.write(path, clip48, 48000, subtype='PCM_16')
        return path, len(clip48) / 48000
    if kind == 'wav48_stereo24':
        path = path_stem.with_suffix('.wav')
        stereo = np.stack([clip48, clip48 * 0.9], axis=1)
        sf.write(path, stereo, 48000, subtype='PCM_24')
        return path, len(clip48) / 48000
    if kind == 'mp3_44k':
        clip = soxr.resample(clip48, 48000, 44100, quality='HQ')
        wav = tmp / 'mp3-source.wav'
        sf.write(wav, np.stack([clip, clip], axis=1), 44100, subtype='PCM_16')
        path = path_stem.with_suffix('.mp3')
        subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-y', '-i', str(wav), '-c:a', 'libmp3lame',
                        '-b:a', '128k', str(path)], check=True)
        return path, len(clip) / 44100
    if kind == 'flac16':
        clip = soxr.resample(clip48, 48000, 16000, quality='HQ')
        path = path_stem.with_suffix('.flac')
        sf.write(path, np.clip(clip, -1, 1), 16000, subtype='PCM_16')
        return path, len(clip) / 16000
    if kind == 'tel8':
        clip = soxr.resample(clip48, 48000, 8000, quality='HQ')
        sos = sps.butter(4, [300, 3400], btype='bandpass', fs=8000, output='sos')
        clip = sps.sosfilt(sos, clip).astype(np.float32)
        path = path_stem.with_suffix('.wav')
        sf.write(path, np.clip(clip, -1, 1), 8000, subtype='ULAW')
        return path, len(clip) / 8000
    raise ValueError(kind)


# 40 % 48 kHz WAV (a quarter of them stereo 24-bit), 20 % each MP3, FLAC, telephone.
FORMAT_CYCLE = ['wav48', 'mp3_44k', 'wav48', 'flac16', 'tel8', 'wav48', 'mp3_44k', 'wav48_stereo24', 'flac16', 'tel8']


def build_corpus(base: Path, mode: str) -> dict:
    spec = {'version': CORPUS_VERSION, 'mode': mode, 'shapes': SHAPES[mode], 'files': SPEECH_FILES}
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    stamp = base / 'corpus.json'
    if stamp.exists():
        existing = json.loads(stamp.read_text())
        if existing.get('spec_hash') == spec_hash:
            return existing
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    tmp = base / 'tmp'
    tmp.mkdir()
    utterances, noise = speech_pool()
    rng = np.random.default_rng(20261204)
    shapes = {}
    for shape, cfg in SHAPES[mode].items():
        folder = base / shape
        folder.mkdir()
        lengths = list(cfg['extra_s'])
        while sum(lengths) < cfg['total_s']:
            lengths.append(float(rng.uniform(*cfg['lengths_s'])))
        files = []
        total = 0.0
        counts: dict[str, int] = {}
        for index, seconds in enumerate(lengths):
            kind = FORMAT_CYCLE[index % len(FORMAT_CYCLE)]
            clip, info = make_clip(seconds, utterances, noise, rng)
            path, duration = write_clip(folder / f'{shape}-{index:04d}-{kind}', clip, kind, tmp)
            files.append({'file': path.name, 'kind': kind, 'duration_s': round(duration, 4), **info})
            total += duration
            counts[kind] = counts.get(kind, 0) + 1
        shapes[shape] = {'files': len(files), 'audio_seconds': total, 'formats': counts, 'list': files}
        print(f'corpus: {shape}: {len(files)} files, {total / 60:.1f} min', file=sys.stderr)
    shutil.rmtree(tmp)
    licences = [line for line in (SPEECH_DIR / 'MANIFEST.tsv').read_text().splitlines()
                if line.split('\t')[0] in SPEECH_FILES + [NOISE_FILE]]
    (base / 'SOURCES.tsv').write_text(
        '# Made by bench/bench.py from these recordings (testdata/real-speech; licences in its licenses/):\n'
        + '\n'.join('\t'.join(line.split('\t')[:3]) for line in licences) + '\n')
    corpus = {'spec_hash': spec_hash, 'shapes': shapes}
    stamp.write_text(json.dumps(corpus, indent=1))
    return corpus


# --------------------------------------------------------------------------------------------
# Running


class Tool:
    """One way of processing a corpus folder: a command, whether it is pinned, what it needs."""

    def __init__(self, key: str, label: str, command, pinned: bool = True, env: dict | None = None,
                 ok_codes=(0,)):
        self.key, self.label, self.command, self.pinned = key, label, command, pinned
        self.env, self.ok_codes = env or {}, ok_codes


def tools(args) -> list[Tool]:
    speechmill = str(args.speechmill)
    peers = ROOT / 'bench' / 'peers'
    python = sys.executable
    return [
        Tool('speechmill_j1', 'speechmill process --jobs 1',
             lambda src, out: [speechmill, 'process', str(src), '--out', str(out), '--jobs', '1', '--quiet', '--no-cache'],
             env=SPEECHMILL_ENV, ok_codes=(0, 3)),
        Tool('speechmill_j2', 'speechmill process --jobs 2 (unpinned)',
             lambda src, out: [speechmill, 'process', str(src), '--out', str(out), '--jobs', '2', '--quiet', '--no-cache'],
             pinned=False, env=SPEECHMILL_ENV, ok_codes=(0, 3)),
        Tool('python', 'Python pipeline (soundfile, soxr, pyloudnorm, webrtcvad)',
             lambda src, out: [python, str(peers / 'python_pipeline.py'), str(src), str(out)]),
        Tool('ffmpeg', 'ffmpeg loudnorm, one process per file',
             lambda src, out: [str(peers / 'ffmpeg_loudnorm.sh'), str(src), str(out)]),
        Tool('sox', 'sox rate + gain, one process per file',
             lambda src, out: [str(peers / 'sox_rate_gain.sh'), str(src), str(out)]),
        Tool('decode', 'decode only: speechmill decoder, one process',
             lambda src, out: [str(args.decode_only), str(src)]),
        Tool('ffmpeg_decode', 'decode only: ffmpeg -f null, one process per file',
             lambda src, out: [str(peers / 'ffmpeg_decode.sh'), str(src)]),
    ]


def parse_time_v(text: str) -> dict:
    def field(name):
        match = re.search(rf'^\s*{re.escape(name)}:\s*(.+)$', text, re.M)
        return match.group(1).strip() if match else None
    return {
        'user_s': float(field('User time (seconds)') or 'nan'),
        'sys_s': float(field('System time (seconds)') or 'nan'),
        'max_rss_kb': int(field('Maximum resident set size (kbytes)') or 0),
    }


def run_once(tool: Tool, src: Path, work: Path) -> dict:
    out = work / f'out-{tool.key}'
    if out.exists():
        shutil.rmtree(out)
    time_file = work / f'time-{tool.key}.txt'
    command = ['/usr/bin/time', '-v', '-o', str(time_file)] + tool.command(src, out)
    if tool.pinned:
        command = ['taskset', '-c', '0'] + command
    env = {**os.environ, **tool.env}
    started = time.monotonic()
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - started
    if proc.returncode not in tool.ok_codes:
        raise RuntimeError(f'{tool.key} failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}')
    result = {'wall_s': wall, **parse_time_v(time_file.read_text())}
    result['cpu_s'] = result['user_s'] + result['sys_s']
    if tool.key.startswith('speechmill'):
        report = json.loads((out / 'report.json').read_text())
        result['report'] = {k: report[k] for k in report if k in ('counts', 'accepted', 'rejected', 'clips')}
        manifest = (out / 'manifest.jsonl').read_text().splitlines()
        result['accepted'] = len(manifest)
    elif tool.key in ('python', 'ffmpeg', 'sox'):
        result['outputs'] = sum(1 for p in out.iterdir() if p.suffix == '.flac')
    if out.exists():
        shutil.rmtree(out)
    return result


def median(values):
    return statistics.median(values) if values else float('nan')


def summarise(runs: list[dict], audio_s: float) -> dict:
    wall = median([r['wall_s'] for r in runs])
    cpu = median([r['cpu_s'] for r in runs])
    return {
        'runs': len(runs),
        'wall_s': wall,
        'cpu_s': cpu,
        'rtf_wall': audio_s / wall,
        'rtf_cpu': audio_s / cpu if cpu > 0 else float('nan'),
        'walls': [round(r['wall_s'], 3) for r in runs],
        'peak_rss_mb': max(r['max_rss_kb'] for r in runs) / 1024,
        'accepted': runs[-1].get('accepted'),
        'outputs': runs[-1].get('outputs'),
    }


# --------------------------------------------------------------------------------------------
# Reporting


def sh(command: list[str]) -> str:
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    except OSError:
        return 'unavailable'


def machine_description() -> list[str]:
    cpu = re.search(r'model name\s*:\s*(.+)', Path('/proc/cpuinfo').read_text())
    mem_kb = int(re.search(r'MemTotal:\s*(\d+)', Path('/proc/meminfo').read_text()).group(1))
    os_name = re.search(r'PRETTY_NAME="(.+)"', Path('/etc/os-release').read_text())
    return [
        f'- CPU: {cpu.group(1) if cpu else "unknown"}, {os.cpu_count()} cores visible; {mem_kb / 1048576:.0f} GiB memory',
        f'- OS: {os_name.group(1) if os_name else "unknown"}, kernel {platform.release()}',
        f'- Load average at start: {os.getloadavg()[0]:.2f} (other agents compile on this machine)',
        f'- {sh(["rustc", "--version"])}; {sh(["ffmpeg", "-version"]).splitlines()[0]}; '
        f'{sh(["sox", "--version"]).splitlines()[-1].strip()}; Python {platform.python_version()}',
    ]


TARGETS_HELP = {
    'rtf': '>= 1,000x real time per core (speechmill --jobs 1, pinned)',
    'python': '>= 3x the Python pipeline',
    'ffmpeg': '>= 20x the ffmpeg path on short clips, >= 10x on long files',
    'decode': 'within 8x of decode-only (speechmill decoder, in process)',
    'scaling': '1 -> 2 jobs >= 85 % efficient',
    'rss': 'peak resident memory < 300 MB',
}


def fmt_x(value: float) -> str:
    if value != value:
        return 'n/a'
    return f'{value:,.0f}x' if value >= 100 else f'{value:.1f}x' if value >= 10 else f'{value:.2f}x'


def render(results: dict, corpus: dict, args, started: str) -> str:
    lines = []
    lines.append(f'Measured {started} with `{args.command_line}` ({args.reps} runs per tool and shape, '
                 'round-robin; medians of wall time; peak RSS is the largest of the runs).')
    lines.append('')
    lines.append('Machine:')
    lines.extend(machine_description())
    lines.append('')
    lines.append('Corpus (built from `testdata/real-speech`, see `bench/bench.py`):')
    for shape, info in corpus['shapes'].items():
        formats = ', '.join(f'{k} {v}' for k, v in sorted(info['formats'].items()))
        lines.append(f'- {shape}: {info["files"]} files, {info["audio_seconds"] / 60:.1f} min of audio ({formats})')
    lines.append('')
    for shape, per_tool in results.items():
        audio_s = corpus['shapes'][shape]['audio_seconds']
        lines.append(f'### {shape} ({corpus["shapes"][shape]["files"]} files, {audio_s / 60:.1f} min)')
        lines.append('')
        lines.append('| tool | pinned | wall s (median) | real-time factor (wall) | per CPU second | peak RSS MB | speechmill --jobs 1 is faster by (per CPU second) |')
        lines.append('|---|---|---|---|---|---|---|')
        ours = per_tool.get('speechmill_j1')
        for key, summary in per_tool.items():
            tool = next(t for t in tools(args) if t.key == key)
            ratio = ours['rtf_cpu'] / summary['rtf_cpu'] if ours and not key.startswith('speechmill') else float('nan')
            extra = ''
            if summary.get('accepted') is not None:
                extra = f' ({summary["accepted"]} accepted)'
            lines.append(f'| {tool.label}{extra} | {"core 0" if tool.pinned else "no"} | {summary["wall_s"]:.2f} | '
                         f'{fmt_x(summary["rtf_wall"])} | {fmt_x(summary["rtf_cpu"])} | {summary["peak_rss_mb"]:.0f} | '
                         f'{fmt_x(ratio) if ratio == ratio else "-"} |')
        lines.append('')
    lines.append('### Targets (issue 7)')
    lines.append('')
    lines.append('Judged on audio seconds per CPU second (user + system time of the command and its children), '
                 'which other work on the machine disturbs least; the wall-clock figure follows in parentheses. '
                 'Scaling is wall-clock by nature: 2 jobs against 2 x 1 job.')
    lines.append('')
    lines.append('| target | short clips | long files | met |')
    lines.append('|---|---|---|---|')
    checks = targets(results)
    for key, (short, long_, met) in checks.items():
        lines.append(f'| {TARGETS_HELP[key]} | {short} | {long_} | {met} |')
    lines.append('')
    return '\n'.join(lines)


def targets(results: dict) -> dict:
    """Each target on per-CPU-second figures (robust to other work on the machine), with the
    wall-clock figure in parentheses; scaling can only be judged on wall time."""
    def get(shape, key, field):
        return results.get(shape, {}).get(key, {}).get(field, float('nan'))

    def both(fn, limit_short, limit_long=None, fmt=fmt_x, lower_is_better=False, wall_too=True):
        limit_long = limit_short if limit_long is None else limit_long
        values = [fn('short', 'rtf_cpu'), fn('long', 'rtf_cpu')]
        walls = [fn('short', 'rtf_wall'), fn('long', 'rtf_wall')]
        oks = [(v <= lim) if lower_is_better else (v >= lim) for v, lim in zip(values, [limit_short, limit_long])]
        met = 'yes' if all(oks) else ('no' if not any(oks) else 'short: ' + ('yes' if oks[0] else 'no')
                                       + ', long: ' + ('yes' if oks[1] else 'no'))
        shown = [fmt(v) + (f' ({fmt(w)})' if wall_too else '') for v, w in zip(values, walls)]
        return shown[0], shown[1], met

    return {
        'rtf': both(lambda s, f: get(s, 'speechmill_j1', f), 1000),
        'python': both(lambda s, f: get(s, 'speechmill_j1', f) / get(s, 'python', f), 3),
        'ffmpeg': both(lambda s, f: get(s, 'speechmill_j1', f) / get(s, 'ffmpeg', f), 20, 10),
        'decode': both(lambda s, f: get(s, 'decode', f) / get(s, 'speechmill_j1', f), 8, lower_is_better=True,
                       fmt=lambda v: f'{v:.1f}x slower'),
        'scaling': both(lambda s, f: get(s, 'speechmill_j2', 'rtf_wall') / (2 * get(s, 'speechmill_j1', 'rtf_wall')),
                        0.85, fmt=lambda v: f'{100 * v:.0f} %', wall_too=False),
        'rss': both(lambda s, f: max(get(s, 'speechmill_j1', 'peak_rss_mb'), get(s, 'speechmill_j2', 'peak_rss_mb')),
                    300, lower_is_better=True, fmt=lambda v: f'{v:.0f} MB', wall_too=False),
    }


BEGIN = '<!-- bench:begin (written by bench/run; edit around it) -->'
END = '<!-- bench:end -->'


def write_results(path: Path, section: str):
    text = path.read_text() if path.exists() else '# Performance\n\n## Results\n\n' + BEGIN + '\n' + END + '\n'
    if BEGIN not in text:
        text = text.rstrip() + '\n\n## Results\n\n' + BEGIN + '\n' + END + '\n'
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(head + BEGIN + '\n' + section + '\n' + END + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='a few minutes of audio, results in target/bench/')
    parser.add_argument('--reps', type=int, default=None, help='runs per tool and shape (default 3, quick 1)')
    parser.add_argument('--only', default='', help='comma-separated tool keys to run (default: all)')
    parser.add_argument('--speechmill', type=Path, required=True)
    parser.add_argument('--decode-only', type=Path, required=True)
    parser.add_argument('--work', type=Path, required=True, help='folder for the corpus and outputs')
    parser.add_argument('--output', type=Path, default=None, help='markdown file to write the results into')
    parser.add_argument('--command-line', default='bench/run')
    args = parser.parse_args()
    mode = 'quick' if args.quick else 'full'
    args.reps = args.reps or (1 if args.quick else 3)
    output = args.output or (args.work / 'performance-quick.md' if args.quick else ROOT / 'docs' / 'performance.md')
    started = dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')

    corpus = build_corpus(args.work / f'corpus-{mode}', mode)
    selected = [t for t in tools(args) if not args.only or t.key in args.only.split(',')]
    work = args.work / 'runs'
    work.mkdir(parents=True, exist_ok=True)
    raw: dict[str, dict[str, list]] = {shape: {t.key: [] for t in selected} for shape in corpus['shapes']}
    for rep in range(args.reps):
        for shape in corpus['shapes']:
            src = args.work / f'corpus-{mode}' / shape
            for tool in selected:
                result = run_once(tool, src, work)
                raw[shape][tool.key].append(result)
                audio_s = corpus['shapes'][shape]['audio_seconds']
                print(f'run {rep + 1}/{args.reps} {shape:5} {tool.key:14} wall {result["wall_s"]:8.2f} s  '
                      f'{audio_s / result["wall_s"]:8.0f}x  cpu {result["cpu_s"]:8.2f} s  '
                      f'rss {result["max_rss_kb"] / 1024:6.0f} MB', file=sys.stderr, flush=True)
    results = {shape: {key: summarise(runs, corpus['shapes'][shape]['audio_seconds'])
                       for key, runs in per_tool.items()} for shape, per_tool in raw.items()}
    (args.work / f'results-{mode}.json').write_text(json.dumps({'started': started, 'results': results}, indent=1))
    section = render(results, corpus, args, started)
    print(section)
    write_results(output, section)
    print(f'bench: results written to {output}', file=sys.stderr)


if __name__ == '__main__':
    main()
