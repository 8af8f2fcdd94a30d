"""Speed and memory of FocalCodec-Stream streaming vs offline, measured in one process.

Streams ``seconds`` of audio through encoder + decoder in 80 ms chunks (the real-time path: one
chunk in, 4 tokens, 1920 output samples out) and reports per-chunk wall time (p50/p95), the
streaming real-time factor, the offline real-time factor of the same audio in the same run, and
the peak resident memory after streaming (before the offline pass, which needs more memory).
Random weights are fine: speed does not depend on their values.

Each requested precision (``--precision fp32 bf16 int8 int4``, all four by default) is measured in
the same run, followed by *calls per box*: the largest number N of full-duplex calls (N encode
streams + N decode streams stepped together by :class:`~voip_codec.codec.batch.StreamBatch`
every tick) whose tick time stays under the 80 ms chunk at p95. ``--agreement`` instead
measures accuracy: token agreement with fp32 and STOI of the decoded output against the fp32
output, streaming real speech through the default, conformance and full-size models.

``--backend torch onnx`` adds the onnxruntime paths (:mod:`voip_codec.export`: the exported step
graphs, fp32 and with int8 weights from :func:`~voip_codec.export.quantize.quantize_export`) and
measures every path *side by side*: one stream per path, each 80 ms chunk going through every
path in turn (the order rotating from chunk to chunk), so that a shared, noisy machine slows them
alike; each path is reported as a ratio to the first one (the torch path at the first
precision). With int8 among the precisions, the side-by-side run also steps the previous
int8 path (``torch int8 (previous kernels)``, :func:`~voip_codec.codec.precision.
reference_kernels`) where this CPU runs newer ones: the same weights on oneDNN's and fbgemm's
products and convolutions where the own kernels (:mod:`voip_codec.codec.kernels`) run, else on
fbgemm's int8 product and fp32 weights for the floating-point layers. The onnxruntime calls per box run the N encoders and N decoders of a tick on
``--threads`` worker threads at one onnxruntime thread each, so a call's encoder and decoder
overlap on two cores.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from voip_codec.codec.batch import StreamBatch
from voip_codec.codec.config import full_size_config, tiny_config
from voip_codec.codec.loading import from_pretrained
from voip_codec.codec.model import DecoderState, EncoderState, FocalCodec
from voip_codec.codec.precision import (
    check_precision,
    previous_kernel_path,
    reference_kernels,
    set_precision,
)

from .cpu_profile import (
    StageProfile,
    cpu_info,
    format_cpu_info,
    format_stage_profile,
    int8_layer_gbps,
    profile_stages,
    read_bandwidth_gbps,
)
from .paths import conformance_model_dir, default_clip_dir

if TYPE_CHECKING:
    from voip_codec.export.runtime import OnnxCodecModel

__all__ = ["Agreement", "CallsPerBox", "ModelSpeed", "SideBySide", "measure_agreement",
           "measure_calls_per_box", "measure_model_speed", "measure_side_by_side"]

_TICK_MS = 80.0


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
    precision: str = "fp32"
    weights_mb: float = 0.0
    """Megabytes of parameters and buffers: what a batch-1 step reads per chunk (every weight
    is used once per chunk; the few that are not, e.g. the relative-position table, are small)."""


@dataclass
class CallsPerBox:
    """Full-duplex calls one process serves within the tick budget."""

    precision: str
    calls: int
    """Largest N measured with tick p95 under the budget (0: not even one call)."""
    tick_ms_p95: float
    """p95 tick time at ``calls`` (at 1 call when ``calls`` is 0)."""
    budget_ms: float
    tried: dict[int, float] = field(default_factory=dict)
    """N -> p95 tick ms, for every N measured."""


@dataclass
class SideBySide:
    """Streaming times of one path, measured interleaved with the other paths of the run."""

    path: str
    """``"torch int8"``, ``"onnx int8"``, ..."""
    chunks: int
    encode_ms_p50: float
    decode_ms_p50: float
    chunk_ms_p50: float
    chunk_ms_p95: float
    streaming_rtf: float
    ratio: float
    """This path's total streaming time over the first path's (the baseline), same chunks."""


class _StreamPath(Protocol):
    """One encoder + one decoder stream on some backend."""

    def reset(self) -> None: ...

    def encode(self, pcm: np.ndarray) -> np.ndarray: ...

    def decode(self, tokens: np.ndarray) -> None: ...

    def decode_output(self, tokens: np.ndarray) -> np.ndarray: ...


class _TorchPath:
    def __init__(self, model: FocalCodec, threads: int | None = None) -> None:
        self.model = model
        self.threads = threads
        """torch threads to step with (set before every step), or None to leave them be"""
        self.dtype = model.encoder.norm.weight.dtype
        self.es: EncoderState | None = None
        self.ds: DecoderState | None = None

    def reset(self) -> None:
        self.es = self.ds = None

    @torch.inference_mode()
    def encode(self, pcm: np.ndarray) -> np.ndarray:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        toks, self.es = self.model.encode_step(torch.from_numpy(pcm)[None].to(self.dtype),
                                               self.es)
        return toks[0].numpy()

    def decode(self, tokens: np.ndarray) -> None:
        self.decode_output(tokens)

    @torch.inference_mode()
    def decode_output(self, tokens: np.ndarray) -> np.ndarray:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        out, self.ds = self.model.decode_step(torch.from_numpy(tokens)[None], self.ds)
        return out[0].float().numpy()


class _OnnxPath:
    def __init__(self, model: OnnxCodecModel) -> None:
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.es = self.model.new_encoder_state()
        self.ds = self.model.new_decoder_state()

    def encode(self, pcm: np.ndarray) -> np.ndarray:
        toks, self.es = self.model.encode_step(pcm, self.es)
        return toks

    def decode(self, tokens: np.ndarray) -> None:
        self.decode_output(tokens)

    def decode_output(self, tokens: np.ndarray) -> np.ndarray:
        out, self.ds = self.model.decode_step(tokens, self.ds)
        return out


def measure_side_by_side(paths: dict[str, _StreamPath], seconds: float = 10.0,
                         warmup_chunks: int = 3, chunk: int = 1280, sample_rate: int = 16000
                         ) -> list[SideBySide]:
    """Stream the same audio through every path, interleaved chunk by chunk.

    Chunk ``i`` runs the paths in the order rotated by ``i``, so no path always follows the
    same neighbour. Ratios are to the first path.
    """
    names = list(paths)
    n = int(seconds * sample_rate) // chunk
    sig = _noise((n + warmup_chunks) * chunk).numpy()
    for path in paths.values():
        path.reset()
        for i in range(warmup_chunks):
            path.decode(path.encode(sig[i * chunk:(i + 1) * chunk]))
        path.reset()
    enc: dict[str, list[float]] = {k: [] for k in names}
    dec: dict[str, list[float]] = {k: [] for k in names}
    for i in range(n):
        x = sig[(warmup_chunks + i) * chunk:(warmup_chunks + i + 1) * chunk]
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            t0 = time.perf_counter()
            toks = paths[name].encode(x)
            t1 = time.perf_counter()
            paths[name].decode(toks)
            t2 = time.perf_counter()
            enc[name].append((t1 - t0) * 1e3)
            dec[name].append((t2 - t1) * 1e3)
    audio_s = n * chunk / sample_rate
    base = float(np.sum(enc[names[0]]) + np.sum(dec[names[0]]))
    out = []
    for name in names:
        total = np.array(enc[name]) + np.array(dec[name])
        out.append(SideBySide(
            path=name, chunks=n, encode_ms_p50=float(np.percentile(enc[name], 50)),
            decode_ms_p50=float(np.percentile(dec[name], 50)),
            chunk_ms_p50=float(np.percentile(total, 50)),
            chunk_ms_p95=float(np.percentile(total, 95)),
            streaming_rtf=float(total.sum() / 1e3 / audio_s), ratio=float(total.sum()) / base))
    return out


def format_side_by_side(rows: list[SideBySide], calls: list[CallsPerBox]) -> str:
    """Markdown table of a side-by-side run, with the calls per box of each path."""
    by = {c.precision: c for c in calls}
    out = ["| path | encode / decode p50 ms | chunk p50 / p95 ms | streaming RTF | "
           f"time vs {rows[0].path} | calls per box (tick p95 ms) |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = by.get(r.path)
        cell = "-" if c is None else f"{c.calls} ({c.tick_ms_p95:.0f})"
        out.append(f"| {r.path} | {r.encode_ms_p50:.1f} / {r.decode_ms_p50:.1f} | "
                   f"{r.chunk_ms_p50:.1f} / {r.chunk_ms_p95:.1f} | {r.streaming_rtf:.3f} | "
                   f"{r.ratio:.2f}x | {cell} |")
    return "\n".join(out)


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


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32))


@torch.inference_mode()
def _tick_p95(model: FocalCodec, calls: int, ticks: int, warmup: int = 2) -> float:
    """p95 wall time of a tick serving ``calls`` full-duplex calls (encode + decode each)."""
    chunk = model.chunk_size
    sig = _noise(chunk * (ticks + warmup + calls), seed=1).numpy()
    batch = StreamBatch(model)
    times = []
    toks: dict[int, np.ndarray] = {}
    for t in range(ticks + warmup):
        # call c sends its own audio and decodes the tokens its peer sent last tick
        pcm = {c: sig[(t + c) * chunk:(t + c + 1) * chunk] for c in range(calls)}
        t0 = time.perf_counter()
        out, _ = batch.step(pcm=pcm, tokens=toks or None)
        dt = time.perf_counter() - t0
        toks = {c: out[(c + 1) % calls] for c in range(calls)}
        if t >= warmup + 1:  # tick `warmup` is the decoders' join tick (each runs alone)
            times.append(dt * 1e3)
    return float(np.percentile(times, 95))


def measure_calls_per_box(model: FocalCodec, threads: int = 2, budget_ms: float = _TICK_MS,
                          ticks: int = 12, max_calls: int = 256, progress: bool = False
                          ) -> CallsPerBox:
    """Largest N whose tick p95 < ``budget_ms``: doubling, then bisection."""
    torch.set_num_threads(threads)
    return _search_calls(lambda n: _tick_p95(model, n, ticks), model.precision, budget_ms,
                         max_calls, progress)


def _search_calls(tick_p95: Callable[[int], float], label: str, budget_ms: float,
                  max_calls: int, progress: bool) -> CallsPerBox:
    tried: dict[int, float] = {}

    def ok(n: int) -> bool:
        if n not in tried:
            tried[n] = tick_p95(n)
            if progress:
                print(f"  {label}: {n} calls -> tick p95 {tried[n]:.1f} ms", file=sys.stderr)
        return tried[n] < budget_ms

    good, bad = 0, None
    n = 1
    while n <= max_calls:
        if ok(n):
            good, n = n, 2 * n
        else:
            bad = n
            break
    if bad is not None:
        while bad - good > 1:
            mid = (good + bad) // 2
            if ok(mid):
                good = mid
            else:
                bad = mid
    return CallsPerBox(label, good, tried[max(good, 1)], budget_ms, dict(tried))


def _onnx_tick_p95(model: OnnxCodecModel, calls: int, ticks: int, workers: int,
                   warmup: int = 2) -> float:
    """p95 wall time of a tick serving ``calls`` full-duplex calls on onnxruntime: the tick's
    ``2 * calls`` steps (each call's encoder on its new chunk, its decoder on the tokens its peer
    sent last tick) spread over ``workers`` threads."""
    chunk = model.chunk_size
    sig = _noise(chunk * (ticks + warmup + calls), seed=1).numpy()
    enc = [model.new_encoder_state() for _ in range(calls)]
    dec = [model.new_decoder_state() for _ in range(calls)]
    toks: list[np.ndarray | None] = [None] * calls

    def encode(c: int, t: int) -> np.ndarray:
        out, enc[c] = model.encode_step(sig[(t + c) * chunk:(t + c + 1) * chunk], enc[c])
        return out

    def decode(c: int, tokens: np.ndarray) -> None:
        _, dec[c] = model.decode_step(tokens, dec[c])

    times = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for t in range(ticks + warmup):
            t0 = time.perf_counter()
            # encoders and decoders alternate in the queue, so each worker gets both kinds
            encoded: list[Future[np.ndarray]] = []
            decoded: list[Future[None]] = []
            for c in range(calls):
                encoded.append(pool.submit(encode, c, t))
                peer = toks[(c + 1) % calls]
                if peer is not None:
                    decoded.append(pool.submit(decode, c, peer))
            toks = [f.result() for f in encoded]
            for f in decoded:
                f.result()
            dt = time.perf_counter() - t0
            if t >= warmup:
                times.append(dt * 1e3)
    return float(np.percentile(times, 95))


def measure_onnx_calls_per_box(model: OnnxCodecModel, path: str, workers: int = 2,
                               budget_ms: float = _TICK_MS, ticks: int = 12,
                               max_calls: int = 64, progress: bool = False) -> CallsPerBox:
    """:func:`measure_calls_per_box` for an onnxruntime path (batch-1 graphs, ``workers``
    threads stepping the streams)."""
    return _search_calls(lambda n: _onnx_tick_p95(model, n, ticks, workers), path, budget_ms,
                         max_calls, progress)


@torch.inference_mode()
def measure_model_speed(model: FocalCodec, name: str, seconds: float = 10.0, threads: int = 2,
                        warmup_chunks: int = 3, progress: bool = False) -> ModelSpeed:
    """Run the streaming and offline passes and collect the figures."""
    torch.set_num_threads(threads)
    n = int(seconds * model.sample_rate_input)
    n -= n % model.chunk_size
    sig = _noise(n)[None]
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
        precision=model.precision, weights_mb=weights_mb(model),
    )


def weights_mb(model: torch.nn.Module) -> float:
    """Megabytes of a model's parameters and buffers at their stored precision."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def format_model_speed(r: ModelSpeed) -> str:
    """Human-readable report."""
    chunk_ms = _TICK_MS
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
        f"weights read per chunk: {r.weights_mb:.0f} MB, {r.weights_mb / r.chunk_ms_p50:.1f} GB/s "
        f"at the chunk p50",
        f"peak RSS: {r.peak_rss_mb_streaming:.0f} MB after streaming, "
        f"{r.peak_rss_mb_total:.0f} MB after the offline pass; stream state "
        f"{r.state_mb_per_stream:.1f} MB",
    ])


def format_table(speeds: list[ModelSpeed], calls: list[CallsPerBox]) -> str:
    """One Markdown table row per precision (streaming, offline, calls per box)."""
    by = {c.precision: c for c in calls}
    rows = ["| precision | weights MB | chunk p50 ms | chunk p95 ms | streaming RTF | offline RTF | "
            "streaming/offline | calls per box (tick p95 ms) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in speeds:
        c = by.get(r.precision)
        cell = "-" if c is None else f"{c.calls} ({c.tick_ms_p95:.0f})"
        rows.append(f"| {r.precision} | {r.weights_mb:.0f} | {r.chunk_ms_p50:.1f} | "
                    f"{r.chunk_ms_p95:.1f} | {r.streaming_rtf:.3f} | {r.offline_rtf:.3f} | "
                    f"{r.streaming_over_offline:.2f}x | {cell} |")
    return "\n".join(rows)


@dataclass
class Agreement:
    """Accuracy of one model at one precision against the same model at fp32."""

    model: str
    precision: str
    clips: int
    tokens: int
    token_agreement: float
    """Fraction of streamed tokens equal to the fp32 model's tokens."""
    token_agreement_min: float
    """Worst clip."""
    bit_agreement: float
    """Fraction of token bits equal."""
    stoi_vs_fp32: float
    """Mean STOI of the decoded output against the fp32 model's decoded output."""
    stream_vs_offline: float | None = None
    """Fraction of streamed tokens equal to the same model's offline tokens (``sig_to_toks``)
    at the same precision, on this CPU; None where there is no offline path (onnxruntime)."""


def _stream(model: FocalCodec, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    es = ds = None
    toks, outs = [], []
    for i in range(0, x.shape[1], model.chunk_size):
        t, es = model.encode_step(x[:, i:i + model.chunk_size], es)
        o, ds = model.decode_step(t, ds)
        toks.append(t)
        outs.append(o)
    return torch.cat(toks, 1)[0], torch.cat(outs, 1)[0].float().numpy()


def speech_clips(root: Path, count: int, seconds: float, sample_rate: int = 16000
                 ) -> list[torch.Tensor]:
    """The first ``count`` FLAC clips under ``root`` (sorted), cut to whole chunks."""
    from voip_codec.audio import read_audio

    paths = sorted(root.rglob("*.flac"))[:count]
    if not paths:
        raise FileNotFoundError(f"no FLAC clips under {root}")
    out = []
    for p in paths:
        pcm, _ = read_audio(p, sample_rate)
        pcm = pcm[:int(seconds * sample_rate)]
        pcm = pcm[:len(pcm) // 1280 * 1280]
        out.append(torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))[None])
    return out


@torch.inference_mode()
def measure_agreement(base: FocalCodec, name: str, clips: list[torch.Tensor],
                      precisions: tuple[str, ...] = ("bf16", "int8"), threads: int = 2
                      ) -> list[Agreement]:
    """Stream each clip through ``base`` (fp32) and its lower-precision copies; compare."""
    from pystoi import stoi

    torch.set_num_threads(threads)
    bits = base.bits_per_token
    shifts = torch.arange(bits - 1, -1, -1)
    refs = [_stream(base, x) for x in clips]
    results = []
    for precision in precisions:
        model = set_precision(copy.deepcopy(base), precision)
        agree, bit_agree, scores, per_clip = 0, 0, [], []
        total = offline_same = 0
        for x, (ref_t, ref_o) in zip(clips, refs, strict=True):
            t, o = _stream(model, x)
            offline_same += int((model.sig_to_toks(x)[0] == t).sum())  # cast by encode_step
            same = int((t == ref_t).sum())
            per_clip.append(same / len(t))
            agree += same
            total += len(t)
            bit_agree += int((((t ^ ref_t)[:, None] >> shifts) & 1 == 0).sum())
            scores.append(float(stoi(ref_o, o, model.sample_rate_output)))
        results.append(Agreement(name, precision, len(clips), total, agree / total,
                                 min(per_clip), bit_agree / (total * bits),
                                 float(np.mean(scores)), offline_same / total))
        del model
        gc.collect()
    return results


def _stream_path(path: _StreamPath, x: torch.Tensor, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and decoded output of one clip through a :class:`_StreamPath`."""
    path.reset()
    pcm = x[0].numpy()
    toks, outs = [], []
    for i in range(0, len(pcm), chunk):
        t = path.encode(pcm[i:i + chunk])
        toks.append(t)
        outs.append(path.decode_output(t))
    return np.concatenate(toks), np.concatenate(outs)


@torch.inference_mode()
def measure_onnx_agreement(base: FocalCodec, name: str, clips: list[torch.Tensor],
                           precisions: tuple[str, ...] = ("fp32", "int8"), threads: int = 1,
                           int8_convs: bool = False) -> list[Agreement]:
    """:func:`measure_agreement` for the onnxruntime paths: each clip streamed through the
    exported graphs (fp32 and int8 weights) against the torch fp32 model."""
    from pystoi import stoi

    from voip_codec.export.runtime import OnnxCodecModel

    torch.set_num_threads(threads)
    bits = base.bits_per_token
    refs = [_stream(base, x) for x in clips]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-agreement-onnx-") as tmp:
        folders = onnx_models(base, precisions, Path(tmp), threads, int8_convs)
        for label, folder in folders.items():
            path = _OnnxPath(OnnxCodecModel(folder, threads=threads))
            agree = bit_agree = total = 0
            scores, per_clip = [], []
            for x, (ref_t, ref_o) in zip(clips, refs, strict=True):
                t, o = _stream_path(path, x, base.chunk_size)
                ref = ref_t.numpy()
                same = int((t == ref).sum())
                per_clip.append(same / len(t))
                agree += same
                total += len(t)
                diff = np.bitwise_xor(t, ref)
                bit_agree += int(bits * len(t) - sum(int(v).bit_count() for v in diff))
                scores.append(float(stoi(ref_o, o, base.sample_rate_output)))
            results.append(Agreement(name, label, len(clips), total, agree / total,
                                     min(per_clip), bit_agree / (total * bits),
                                     float(np.mean(scores))))
    return results


def format_agreement(rows: list[Agreement]) -> str:
    """Markdown table of agreement results."""
    out = ["| model | precision | clips | tokens | token agreement (worst clip) | "
           "bit agreement | STOI vs fp32 output | streaming vs offline tokens |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for a in rows:
        offline = "-" if a.stream_vs_offline is None else f"{100 * a.stream_vs_offline:.2f} %"
        out.append(f"| {a.model} | {a.precision} | {a.clips} | {a.tokens} | "
                   f"{100 * a.token_agreement:.2f} % ({100 * a.token_agreement_min:.2f} %) | "
                   f"{100 * a.bit_agreement:.3f} % | {a.stoi_vs_fp32:.4f} | {offline} |")
    return "\n".join(out)


def _run_agreement(args: argparse.Namespace, precisions: tuple[str, ...]) -> int:
    speech = Path(args.speech) if args.speech else default_clip_dir()
    clips = speech_clips(speech, args.clips, min(args.seconds, 8.0))
    models = ["default", str(conformance_model_dir()), "full"]
    if args.model not in ("full", "default"):
        models = [args.model]
    rows = []
    for spec in models:
        if not args.json:
            print(f"agreement: {spec} ...", file=sys.stderr)
        base, name = build_model(spec)
        n = len(clips) if spec != "full" else max(1, len(clips) // 2)
        if "torch" in args.backend:
            rows += measure_agreement(base, name, clips[:n], precisions, args.threads)
        if "onnx" in args.backend:
            rows += measure_onnx_agreement(base, name, clips[:n], ("fp32", *precisions),
                                           args.threads, args.onnx_int8_convs)
        del base
        gc.collect()
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_cpu_info(cpu_info()))
        print(format_agreement(rows))
    return 0


ONNX_PRECISIONS = ("fp32", "int8")
"""Precisions the onnxruntime paths offer (bf16 graphs are not exported)."""


def onnx_models(base: FocalCodec, precisions: tuple[str, ...], folder: Path, threads: int,
                int8_convs: bool = False) -> dict[str, Path]:
    """Export ``base`` into ``folder`` and quantise it: ``{"onnx <precision>": export folder}``
    for each of ``precisions`` that onnxruntime offers (``"onnx int8+conv"`` too with
    ``int8_convs``)."""
    from voip_codec.export.onnx import export_onnx
    from voip_codec.export.quantize import quantize_export

    export_onnx(base, folder / "fp32")
    out = {}
    for p in precisions:
        if p not in ONNX_PRECISIONS:
            continue
        if p == "int8":
            quantize_export(base, folder / "fp32", folder / "int8")
        out[f"onnx {p}"] = folder / p
        if p == "int8" and int8_convs:
            quantize_export(base, folder / "fp32", folder / "int8c", grouped_convs=True)
            out["onnx int8+conv"] = folder / "int8c"
    return out


def _calls_threads(args: argparse.Namespace) -> int:
    return int(getattr(args, "calls_threads", None) or args.threads)


def _compare_threads(args: argparse.Namespace) -> list[int]:
    """The ``--compare-threads`` counts other than ``--threads``, in order."""
    return [n for n in dict.fromkeys(getattr(args, "compare_threads", None) or [])
            if n != args.threads]


def _run_side_by_side(args: argparse.Namespace, torch_models: dict[str, FocalCodec],
                      base: FocalCodec) -> tuple[list[SideBySide], list[CallsPerBox]]:
    with tempfile.TemporaryDirectory(prefix="bench-speed-onnx-") as tmp:
        folders: dict[str, Path] = {}
        if "onnx" in args.backend:
            if not args.json:
                print("[onnx] export + int8 weights ...", file=sys.stderr)
            folders = onnx_models(base, tuple(torch_models), Path(tmp), args.threads,
                                  args.onnx_int8_convs)
        paths: dict[str, _StreamPath] = {}
        for p, m in torch_models.items():
            paths[f"torch {p}"] = _TorchPath(m, args.threads)
            for n in _compare_threads(args):
                paths[f"torch {p} ({n} threads)"] = _TorchPath(m, n)
            previous = previous_kernel_path(m) if p == "int8" else None
            if previous is not None:
                # the previous int8 path beside it, same weights: oneDNN's and fbgemm's products
                # and convolutions (the own kernels off), or before that fbgemm's int8 product
                # and fp32 weights for the floating-point layers
                ref = reference_kernels(copy.deepcopy(m), previous)
                for n in [args.threads, *_compare_threads(args)]:
                    suffix = "" if n == args.threads else f", {n} threads"
                    paths[f"torch int8 (previous kernels{suffix})"] = _TorchPath(ref, n)
        from voip_codec.export.runtime import OnnxCodecModel

        for label, folder in folders.items():
            paths[label] = _OnnxPath(OnnxCodecModel(folder, threads=args.threads))
        if not args.json:
            print(f"[side by side] {', '.join(paths)} ...", file=sys.stderr)
        rows = measure_side_by_side(paths, args.seconds)
        torch.set_num_threads(args.threads)
        calls = []
        if not args.no_calls:
            for label, folder in folders.items():
                model = OnnxCodecModel(folder, threads=1)
                calls.append(measure_onnx_calls_per_box(
                    model, label, workers=_calls_threads(args), budget_ms=args.calls_budget_ms,
                    progress=not args.json))
                del model
    return rows, calls


def run(args: argparse.Namespace) -> int:
    """Entry point of ``voip-codec bench speed``."""
    if args.seconds <= 0 or args.threads <= 0 or args.calls_budget_ms <= 0:
        raise ValueError("--seconds, --threads and --calls-budget-ms must be positive")
    precisions = tuple(dict.fromkeys(check_precision(p) for p in args.precision))
    if args.agreement:
        return _run_agreement(args, tuple(p for p in precisions if p != "fp32"))
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    base, name = build_model(args.model)
    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    counts = dict.fromkeys([args.threads, *_compare_threads(args), _calls_threads(args)])
    cpu.read_gbps = {n: read_bandwidth_gbps(n) for n in counts}  # each restores the threads
    if "int8" in precisions:
        cpu.layer_gbps = {n: int8_layer_gbps(n) for n in counts}
    if not args.json:
        print(format_cpu_info(cpu))
    speeds, calls = [], []
    profiles: list[StageProfile] = []
    side_by_side = "onnx" in args.backend or bool(_compare_threads(args))
    kept: dict[str, FocalCodec] = {}
    for precision in precisions:
        model = base if precision == "fp32" else set_precision(copy.deepcopy(base), precision)
        if not args.json:
            print(f"[{precision}] streaming + offline ...", file=sys.stderr)
        speeds.append(measure_model_speed(model, name, args.seconds, args.threads,
                                          progress=False))
        if not args.no_profile:
            if not args.json:
                print(f"[{precision}] per-stage profile ...", file=sys.stderr)
            profiles.append(profile_stages(model, _noise(int(args.seconds * 16000))[None]))
        if not args.no_calls:
            calls.append(measure_calls_per_box(model, _calls_threads(args),
                                               budget_ms=args.calls_budget_ms,
                                               progress=not args.json))
            torch.set_num_threads(args.threads)
        if side_by_side:
            kept[precision] = model
        elif model is not base:
            del model
            gc.collect()
    rows: list[SideBySide] = []
    onnx_calls: list[CallsPerBox] = []
    if side_by_side:
        rows, onnx_calls = _run_side_by_side(args, kept, base)
    if args.json:
        print(json.dumps({"cpu": asdict(cpu), "speed": [asdict(r) for r in speeds],
                          "stages": [asdict(p) for p in profiles],
                          "calls_per_box": [asdict(c) for c in calls],
                          "side_by_side": [asdict(r) for r in rows],
                          "onnx_calls_per_box": [asdict(c) for c in onnx_calls]}, indent=2))
        return 0
    for r in speeds:
        print(f"--- {r.precision}")
        print(format_model_speed(r))
    print()
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{name}, {args.threads} threads, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, "
          f"1-min load average {load_start:.1f} at start / {load_end:.1f} at end; calls per "
          f"box = full-duplex calls (1 encode + 1 decode stream each) stepped together per "
          f"{_TICK_MS:.0f} ms tick with tick p95 < {args.calls_budget_ms:.0f} ms, on "
          f"{_calls_threads(args)} thread(s)")
    print(format_table(speeds, calls))
    if rows:
        print()
        print(f"side by side: one stream per path, every 80 ms chunk through each path in turn "
              f"({rows[0].chunks} chunks, {args.threads} thread(s) per path unless named); "
              f"calls per box "
              f"on {_calls_threads(args)} thread(s): torch threads, or onnxruntime worker "
              f"threads stepping the streams (1 onnxruntime thread each)")
        by_path = {f"torch {c.precision}": c for c in calls}
        by_path.update({c.precision: c for c in onnx_calls})
        print(format_side_by_side(rows, [CallsPerBox(k, c.calls, c.tick_ms_p95, c.budget_ms,
                                                     c.tried) for k, c in by_path.items()]))
    if profiles:
        print()
        print(f"per-stage profile: mean ms per 80 ms chunk (encode + decode of one stream), "
              f"forward hooks on the model's modules ({profiles[0].chunks} chunks per precision)")
        print(format_stage_profile(profiles))
    return 0
