"""Speed and memory of FocalCodec-Stream streaming vs offline, measured in one process.

Streams ``seconds`` of audio through encoder + decoder in 80 ms chunks (the real-time path: one
chunk in, 4 tokens, 1920 output samples out) and reports per-chunk wall time (p50/p95), the
streaming real-time factor, the offline real-time factor of the same audio in the same run, and
the peak resident memory after streaming (before the offline pass, which needs more memory).
Random weights are fine: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..codec.config import full_size_config, tiny_config
from ..codec.loading import from_pretrained
from ..codec.model import FocalCodec

__all__ = ["ModelSpeed", "measure_model_speed"]


@dataclass
class ModelSpeed:
    """Figures of one speed run."""

    model: str
    parameters: int
    threads: int
    audio_seconds: float
    chunks: int
    chunk_ms_p50: float
    chunk_ms_p95: float
    chunk_ms_max: float
    encode_ms_p50: float
    decode_ms_p50: float
    streaming_rtf: float
    offline_rtf: float
    streaming_over_offline: float
    peak_rss_mb_streaming: float
    peak_rss_mb_total: float
    state_mb_per_stream: float


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_model(spec: str, seed: int = 0) -> tuple[FocalCodec, str]:
    """``"full"`` (random, spec-sized), ``"tiny"`` (random) or a checkpoint source."""
    if spec in ("full", "full-65k"):
        torch.manual_seed(seed)
        return FocalCodec(full_size_config()), "full-size causal 65k (random weights)"
    if spec == "tiny":
        torch.manual_seed(seed)
        return FocalCodec(tiny_config()), "tiny causal 4k (random weights)"
    return from_pretrained(spec), spec


@torch.inference_mode()
def measure_model_speed(model: FocalCodec, name: str, seconds: float = 10.0, threads: int = 2,
                        warmup_chunks: int = 3, progress: bool = False) -> ModelSpeed:
    """Run the streaming and offline passes and collect the figures."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    n = int(seconds * model.sample_rate_input)
    n -= n % model.chunk_size
    sig = torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32))[None]
    chunk = model.chunk_size
    # warm-up on a separate stream so the measured one starts from an empty state
    es = ds = None
    for i in range(warmup_chunks):
        toks, es = model.encode_step(sig[:, i * chunk:(i + 1) * chunk], es)
        _, ds = model.decode_step(toks, ds)
    es = ds = None
    enc_ms, dec_ms = [], []
    for i in range(0, n, chunk):
        t0 = time.perf_counter()
        toks, es = model.encode_step(sig[:, i:i + chunk], es)
        t1 = time.perf_counter()
        _, ds = model.decode_step(toks, ds)
        t2 = time.perf_counter()
        enc_ms.append((t1 - t0) * 1e3)
        dec_ms.append((t2 - t1) * 1e3)
        if progress and (i // chunk) % 25 == 0:
            print(f"  streaming chunk {i // chunk + 1}/{n // chunk}", file=sys.stderr)
    rss_stream = _rss_mb()
    assert es is not None and ds is not None
    state_mb = (es.nbytes() + ds.nbytes()) / 2**20
    total = np.array(enc_ms) + np.array(dec_ms)
    t0 = time.perf_counter()
    model.decode_step(model.encode_step(sig)[0])
    offline_s = time.perf_counter() - t0
    audio_s = n / model.sample_rate_input
    stream_rtf = float(total.sum() / 1e3 / audio_s)
    offline_rtf = offline_s / audio_s
    return ModelSpeed(
        model=name, parameters=model.num_parameters(), threads=threads, audio_seconds=audio_s,
        chunks=len(total), chunk_ms_p50=float(np.percentile(total, 50)),
        chunk_ms_p95=float(np.percentile(total, 95)), chunk_ms_max=float(total.max()),
        encode_ms_p50=float(np.percentile(enc_ms, 50)),
        decode_ms_p50=float(np.percentile(dec_ms, 50)), streaming_rtf=stream_rtf,
        offline_rtf=offline_rtf, streaming_over_offline=stream_rtf / offline_rtf,
        peak_rss_mb_streaming=rss_stream, peak_rss_mb_total=_rss_mb(), state_mb_per_stream=state_mb,
    )


def format_model_speed(r: ModelSpeed) -> str:
    """Human-readable report."""
    chunk_ms = 1000.0 * 1280 / 16000
    return "\n".join([
        f"model: {r.model} ({r.parameters / 1e6:.1f} M parameters), {r.threads} threads, "
        f"{r.audio_seconds:.1f} s of audio in {r.chunks} chunks of {chunk_ms:.0f} ms",
        f"streaming per chunk (encode+decode): p50 {r.chunk_ms_p50:.1f} ms, "
        f"p95 {r.chunk_ms_p95:.1f} ms, max {r.chunk_ms_max:.1f} ms "
        f"(encode p50 {r.encode_ms_p50:.1f} ms, decode p50 {r.decode_ms_p50:.1f} ms)",
        f"streaming RTF {r.streaming_rtf:.3f} | offline RTF {r.offline_rtf:.3f} "
        f"(same run; streaming/offline = {r.streaming_over_offline:.2f}x)",
        f"real time: {'yes' if r.chunk_ms_p95 < chunk_ms else 'NO'} "
        f"(p95 {r.chunk_ms_p95:.1f} ms vs {chunk_ms:.0f} ms budget)",
        f"peak RSS: {r.peak_rss_mb_streaming:.0f} MB after streaming, "
        f"{r.peak_rss_mb_total:.0f} MB after the offline pass; stream state "
        f"{r.state_mb_per_stream:.1f} MB",
    ])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``voip-codec bench speed``."""
    parser.add_argument("--model", default="full",
                        help="'full' (spec-sized, random weights; default), 'tiny', or a "
                             "checkpoint directory / hub id / 'default'")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``voip-codec bench speed``."""
    if args.seconds <= 0 or args.threads <= 0:
        print("error: --seconds and --threads must be positive", file=sys.stderr)
        return 2
    model, name = build_model(args.model)
    result = measure_model_speed(model, name, args.seconds, args.threads,
                                 progress=not args.json)
    print(json.dumps(asdict(result), indent=2) if args.json else format_model_speed(result))
    return 0

