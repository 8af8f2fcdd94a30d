"""Check an ONNX export against the torch path on speech: agreement and speed, one run.

Both paths stream the same clips chunk by chunk; for every chunk the torch step and the
onnxruntime step run back to back (same thread count), so their timings share the machine's
load. The decoders get the torch tokens, so output SNR measures the decoder graph alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import read_audio
from ..codec.model import FocalCodec
from .runtime import OnnxCodecModel

__all__ = ["ParityReport", "check_export"]


@dataclass(frozen=True)
class ParityReport:
    """Agreement and per-chunk compute time of torch vs onnxruntime."""

    clips: int
    """Clips compared."""
    chunks: int
    """80 ms chunks compared."""
    tokens_equal: float
    """Fraction of tokens the ONNX encoder got equal to the torch encoder."""
    snr_db_min: float
    """Lowest per-clip SNR of the ONNX decoder's output against the torch decoder's, dB."""
    snr_db_median: float
    """Median per-clip SNR, dB."""
    threads: int
    """Threads of both runtimes."""
    ms: dict[str, tuple[float, float]]
    """``{"torch encode": (p50, p95), "onnx encode": ..., "torch decode": ...,
    "onnx decode": ...}`` per 80 ms chunk, milliseconds."""

    def lines(self) -> list[str]:
        """A human-readable summary."""
        out = [f"{self.clips} clips, {self.chunks} chunks of 80 ms, {self.threads} thread(s)",
               f"tokens equal: {100 * self.tokens_equal:.3f} %",
               f"decoder output SNR (ONNX vs torch): min {self.snr_db_min:.1f} dB, "
               f"median {self.snr_db_median:.1f} dB",
               "per chunk, ms:     p50     p95"]
        out += [f"  {name:14s} {p50:7.2f} {p95:7.2f}" for name, (p50, p95) in self.ms.items()]
        return out


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference - test) ** 2))
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(float(np.sum(reference ** 2)), 1e-30) / noise))


@torch.inference_mode()
def check_export(model: FocalCodec, onnx: OnnxCodecModel, clips: Sequence[Path],
                 threads: int = 1) -> ParityReport:
    """Stream ``clips`` through both paths and compare.

    Args:
        model: the torch model that was exported (fp32).
        onnx: its export.
        clips: audio files (any format :func:`~voip_codec.audio.read_audio` reads).
        threads: torch threads (the ONNX model's own count was set when it was loaded).

    Returns:
        The report.

    Raises:
        ValueError: no clip is at least one chunk long.
    """
    torch.set_num_threads(threads)
    chunk = model.chunk_size
    times: dict[str, list[float]] = {k: [] for k in ("torch encode", "onnx encode",
                                                     "torch decode", "onnx decode")}
    equal = total = 0
    snrs: list[float] = []
    for clip in clips:
        pcm, _ = read_audio(clip, model.sample_rate_input)
        n = len(pcm) // chunk * chunk
        if n == 0:
            continue
        enc = dec = None
        oenc, odec = onnx.new_encoder_state(), onnx.new_decoder_state()
        ref, got = [], []
        for i in range(0, n, chunk):
            piece = pcm[i:i + chunk]
            t0 = time.perf_counter()
            toks, enc = model.encode_step(torch.from_numpy(piece)[None], enc)
            t1 = time.perf_counter()
            otoks, oenc = onnx.encode_step(piece, oenc)
            t2 = time.perf_counter()
            wave, dec = model.decode_step(toks, dec)
            t3 = time.perf_counter()
            owave, odec = onnx.decode_step(toks[0].numpy(), odec)
            t4 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key].append(1000 * dt)
            equal += int((toks[0].numpy() == otoks).sum())
            total += toks.shape[1]
            ref.append(wave[0].numpy())
            got.append(owave)
        snrs.append(_snr_db(np.concatenate(ref), np.concatenate(got)))
    if not total:
        raise ValueError("no clip is at least one 80 ms chunk long")
    return ParityReport(
        clips=len(snrs), chunks=total // model.chunk_frames, tokens_equal=equal / total,
        snr_db_min=float(np.min(snrs)), snr_db_median=float(np.median(snrs)), threads=threads,
        ms={k: (float(np.percentile(v, 50)), float(np.percentile(v, 95)))
            for k, v in times.items()},
    )
