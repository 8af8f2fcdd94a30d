"""Per-codec speed: encode/decode CPU time per audio second, per-frame latency, peak memory.

Each (codec, thread count) runs in a fresh Python process (``python -m
voip_codec_bench.codec_speed --one NAME --threads N``) so that its peak resident memory is its
own and thread settings cannot leak between runs. The child streams ``seconds`` of speech (the
first clips of the eval split, repeated; seeded noise bursts when the split is absent) frame by
frame through a fresh encoder and decoder and reports:

* encode and decode CPU seconds per second of audio (process CPU time, all threads);
* wall-clock latency of one frame (encode + decode), p50 and p95, in ms;
* peak RSS of the process (imports included: torch for FocalCodec), in MiB.

Codec2, Opus and AMR-NB are single-threaded, so their 1- and 2-thread figures differ only by
noise; the thread count matters for FocalCodec (torch intra-op threads).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["CodecSpeed", "format_speed_table", "measure_codec_in_process", "measure_codecs"]


@dataclass
class CodecSpeed:
    """Speed of one codec at one thread count (or why it could not be measured)."""

    codec: str
    """Codec name."""
    threads: int
    """Thread count (torch intra-op threads, OMP/MKL threads)."""
    status: str
    """``"ok"`` or ``"missing"`` / ``"error"``."""
    reason: str = ""
    """Why it is not ok."""
    frame_ms: float = 0.0
    """Codec frame duration, ms."""
    audio_seconds: float = 0.0
    """Audio streamed."""
    encode_cpu_per_s: float | None = None
    """Encoder CPU seconds per audio second."""
    decode_cpu_per_s: float | None = None
    """Decoder CPU seconds per audio second."""
    frame_ms_p50: float | None = None
    """Median wall time of encode + decode of one frame, ms."""
    frame_ms_p95: float | None = None
    """95th percentile of the same, ms."""
    peak_rss_mib: float | None = None
    """Peak resident memory of the measuring process, MiB."""


def _speech(seconds: float) -> np.ndarray:
    from .paths import default_clip_dir

    rate = 16000
    need = int(seconds * rate)
    clip_dir = default_clip_dir()
    parts: list[np.ndarray] = []
    if clip_dir.is_dir():
        from voip_codec.audio import read_audio

        for path in sorted(clip_dir.rglob("*.flac"))[:4]:
            parts.append(read_audio(path, rate)[0])
    if not parts:  # seeded noise bursts shaped like syllables
        rng = np.random.default_rng(0)
        t = np.arange(need) / rate
        env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None)
        parts.append((0.1 * env * rng.standard_normal(need)).astype(np.float32))
    x = np.concatenate(parts)
    reps = -(-need // x.shape[0])
    return np.tile(x, reps)[:need].astype(np.float32)


def _peak_rss_mib() -> float:
    """Peak RSS of this process image in MiB.

    ``VmHWM`` is reset by ``exec``, unlike ``ru_maxrss``, which keeps the high-water mark of
    the parent that forked the measuring process.
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_codec_in_process(name: str, threads: int, seconds: float) -> CodecSpeed:
    """Measure one codec in this process (call it in a fresh process for a clean RSS).

    Args:
        name: codec name or checkpoint path (see :func:`~voip_codec_bench.peers.resolve_codec`).
        threads: torch intra-op threads.
        seconds: audio seconds streamed.

    Returns:
        The figures, or a ``missing`` row with the reason.
    """
    from .peers import MissingCodec, resolve_codec

    transcoder = resolve_codec(name)
    if isinstance(transcoder, MissingCodec):
        return CodecSpeed(transcoder.name, threads, "missing", transcoder.reason)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    stream = transcoder.open_stream()
    x = _speech(seconds)
    n = stream.frame_samples
    frames = x.shape[0] // n
    enc_cpu = dec_cpu = 0.0
    walls = []
    for i in range(frames + 2):  # two warm-up frames, not counted
        frame = x[(i % frames) * n:((i % frames) + 1) * n]
        c0, w0 = time.process_time(), time.perf_counter()
        packets = stream.encode(frame)
        c1 = time.process_time()
        stream.decode(packets)
        c2, w2 = time.process_time(), time.perf_counter()
        if i >= 2:
            enc_cpu += c1 - c0
            dec_cpu += c2 - c1
            walls.append(1000.0 * (w2 - w0))
    audio = frames * n / 16000.0
    return CodecSpeed(
        codec=transcoder.name, threads=threads, status="ok", frame_ms=transcoder.frame_ms,
        audio_seconds=audio, encode_cpu_per_s=enc_cpu / audio, decode_cpu_per_s=dec_cpu / audio,
        frame_ms_p50=float(np.percentile(walls, 50)), frame_ms_p95=float(np.percentile(walls, 95)),
        peak_rss_mib=_peak_rss_mib())


def measure_codecs(codecs: Sequence[str], threads: Sequence[int] = (1, 2),
                   seconds: float = 10.0, progress: bool = False,
                   timeout_s: float = 600.0) -> list[CodecSpeed]:
    """Measure each codec at each thread count, each in a fresh process.

    Args:
        codecs: codec names or checkpoint paths.
        threads: thread counts.
        seconds: audio seconds streamed per run.
        progress: show a tqdm progress bar on stderr.
        timeout_s: per-run time limit.

    Returns:
        One :class:`CodecSpeed` per (codec, threads), in order.

    Raises:
        ValueError: a thread count < 1 or ``seconds`` <= 0.
    """
    from tqdm import tqdm

    if any(t < 1 for t in threads) or seconds <= 0:
        raise ValueError("thread counts must be >= 1 and seconds > 0")
    rows = []
    jobs = [(c, t) for c in codecs for t in threads]
    for name, n_threads in tqdm(jobs, desc="speed", disable=not progress, leave=False,
                                file=sys.stderr):
        env = {**os.environ, "OMP_NUM_THREADS": str(n_threads),
               "MKL_NUM_THREADS": str(n_threads), "OPENBLAS_NUM_THREADS": str(n_threads),
               "PYTHONPATH": _child_pythonpath()}
        cmd = [sys.executable, "-m", "voip_codec_bench.codec_speed", "--one", name,
               "--threads", str(n_threads), "--seconds", str(seconds)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            rows.append(CodecSpeed(name, n_threads, "error", f"timed out after {timeout_s:g} s"))
            continue
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append(CodecSpeed(name, n_threads, "error", tail))
            continue
        rows.append(CodecSpeed(**json.loads(done.stdout.strip().splitlines()[-1])))
    return rows


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _child_pythonpath() -> str:
    """PYTHONPATH for the child processes: the folders this process imported ``voip_codec`` and
    ``voip_codec_bench`` from come first, so a child times the same code (a source checkout run
    with ``python -m`` included)."""
    import voip_codec

    first = [str(Path(voip_codec.__file__).resolve().parents[1]),
             str(Path(__file__).resolve().parents[1])]
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(first + rest))


def format_speed_table(rows: Sequence[CodecSpeed]) -> str:
    """A Markdown table of speed rows."""
    lines = ["| codec | threads | frame ms | encode CPU s/s | decode CPU s/s | "
             "frame p50 ms | frame p95 ms | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.codec} | {r.threads} | {r.status}: {r.reason} ||||||")
            continue
        lines.append(f"| {r.codec} | {r.threads} | {r.frame_ms:g} | "
                     f"{_fmt(r.encode_cpu_per_s, 4)} | {_fmt(r.decode_cpu_per_s, 4)} | "
                     f"{_fmt(r.frame_ms_p50, 2)} | {_fmt(r.frame_ms_p95, 2)} | "
                     f"{_fmt(r.peak_rss_mib, 0)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: measure one codec and print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m voip_codec_bench.codec_speed",
                                     description="time one codec (child of measure_codecs)")
    parser.add_argument("--one", required=True, help="codec name or checkpoint path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        row = measure_codec_in_process(args.one, args.threads, args.seconds)
    except (ValueError, OSError) as exc:
        row = CodecSpeed(args.one, args.threads, "error", str(exc).splitlines()[0])
    print(json.dumps(asdict(row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
