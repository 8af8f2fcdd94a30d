"""Evaluation harness: quality, robustness to loss and speed of our codecs and their peers.

Three measurements share one clip loader, one metric set and one result cache:

* **quality** (:func:`run_quality`): every clip through every codec once (no network), the
  codec's fixed delay removed (estimated once per codec on a few clips), outputs resampled to
  16 kHz, then STOI, WB-PESQ, DistillMOS, dWER and speaker similarity;
* **loss** (:func:`run_loss`): the same clips through the real packet / jitter buffer /
  concealment path (:func:`~voip_codec.transport.pipeline.simulate`) under random and bursty
  loss for each redundancy setting, scored against the lossless decode and against the original;
* **speed**: see :mod:`voip_codec_bench.codec_speed`.

``voip-codec bench report`` runs all three and writes a Markdown report with PNG plots and a
JSON file (:mod:`voip_codec_bench.report`). Results are cached per (codec, clip, condition) in
``.cache/voip-codec-bench/``: a re-run with one new codec only computes that codec.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import DEFAULT_CACHE_DIR, ResultCache, file_digest
from .metrics import METRIC_RATE, METRICS, MetricSet, align, estimate_delay, to_metric_rate
from .paths import default_clip_dir
from .peers import DEFAULT_CODECS, MissingCodec, Transcoder, fingerprint_digest, resolve_codec

__all__ = [
    "DEFAULT_LOSS_CODECS",
    "DEFAULT_LOSS_CONDITIONS",
    "DEFAULT_REDUNDANCY",
    "QUALITY_METRICS",
    "Clip",
    "CodecQuality",
    "LossRow",
    "add_codec_speed_arguments",
    "add_loss_parser",
    "add_quality_parser",
    "add_report_parser",
    "codec_delay",
    "default_clip_dir",
    "load_clips",
    "run_codec_speed",
    "run_loss",
    "run_loss_command",
    "run_quality",
    "run_quality_command",
    "run_report_command",
    "set_threads",
]

QUALITY_METRICS: tuple[str, ...] = ("stoi", "pesq", "distillmos", "dwer", "speaker")
"""Metrics of the quality table."""

LOSS_METRICS: tuple[str, ...] = ("stoi", "pesq", "plcmos")
"""Metrics of the loss table (intrusive ones are computed against two references)."""

DEFAULT_LOSS_CONDITIONS: tuple[tuple[str, float], ...] = (
    ("random", 0.0), ("random", 0.05), ("random", 0.10), ("random", 0.20),
    ("bursty", 0.10), ("bursty", 0.20),
)
"""(loss model, loss rate) pairs of the loss benchmark; bursty = Gilbert-Elliott."""

DEFAULT_REDUNDANCY: tuple[str, ...] = ("0", "1", "2", "adaptive")
"""Redundancy settings: fixed K (earlier frames repeated per packet) or adaptive."""

DEFAULT_LOSS_CODECS: tuple[str, ...] = (
    "focalcodec-default", "focalcodec-conformance", "codec2-700c", "codec2-3200",
    "opus-8k-20ms", "opus-8k-20ms-cbr", "amrnb-4.75k",
)
"""Codecs of ``bench loss`` when none are named (VBR Opus is listed to show it as not run)."""

NOT_FRAME_CODEC = ("VBR packets vary in size and the frame contract carries fixed-size "
                   "payloads; see the hard-CBR Opus row")
"""Why a peer without a frame-contract codec has no loss rows."""

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3", ".m4a", ".opus", ".aac", ".webm")
"""File types picked up from a clip folder."""

MAX_DELAY_MS = 300.0
"""Largest codec delay searched by cross-correlation, in milliseconds."""

MAX_STOI_DELAY_MS = 150.0
"""Largest codec delay searched by STOI (Codec2), in milliseconds (STOI is slow)."""


@dataclass
class Clip:
    """One evaluation clip at :data:`~voip_codec_bench.metrics.METRIC_RATE`."""

    path: Path
    """Source file."""
    digest: str
    """Content hash of the file (cache key part)."""
    pcm: np.ndarray
    """float32 mono samples ``(n,)`` at 16 kHz."""

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.pcm.shape[0] / METRIC_RATE


def load_clips(clip_dir: Path, max_clips: int | None = None) -> list[Clip]:
    """Load audio files found recursively under ``clip_dir``, resampled to 16 kHz mono.

    Args:
        clip_dir: folder of audio files (any format :func:`~voip_codec.audio.read_audio` reads).
        max_clips: keep at most this many, picked evenly from the sorted list (deterministic,
            spread over sources and speakers); None keeps all.

    Returns:
        The clips, in sorted path order.

    Raises:
        FileNotFoundError: the folder does not exist or holds no audio files.
        ValueError: ``max_clips`` < 1.
    """
    from voip_codec.audio import read_audio

    if max_clips is not None and max_clips < 1:
        raise ValueError(f"max_clips must be >= 1, got {max_clips}")
    if not clip_dir.is_dir():
        raise FileNotFoundError(f"clip folder {clip_dir} does not exist")
    paths = sorted(p for p in clip_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {clip_dir}")
    if max_clips is not None and max_clips < len(paths):
        paths = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, max_clips)]
    clips = []
    for path in paths:
        pcm, _ = read_audio(path, METRIC_RATE)
        clips.append(Clip(path, file_digest(path), pcm))
    return clips


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr,
                dynamic_ncols=True)


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


# --------------------------------------------------------------------------------------------
# delay


@dataclass
class Decoded:
    """One clip decoded by one codec, resampled to 16 kHz (not delay-compensated)."""

    audio: np.ndarray
    """float32 ``(m,)`` at 16 kHz."""
    payload_bits: int
    """Payload sent for the clip, bits."""
    seconds: float
    """Coded duration, seconds."""


def _decode(transcoder: Transcoder, clip: Clip) -> Decoded:
    out = transcoder.transcode(clip.pcm)
    return Decoded(to_metric_rate(out.audio, out.sample_rate), out.payload_bits, out.seconds)


def codec_delay(transcoder: Transcoder, clips: Sequence[Clip], cache: ResultCache,
                decoded: dict[str, Decoded] | None = None, probe_clips: int = 3) -> int:
    """The codec's fixed delay in samples at 16 kHz, estimated once on the first clips.

    Args:
        transcoder: the codec.
        clips: evaluation clips; the first ``probe_clips`` are used.
        cache: result cache (the delay is stored per codec fingerprint and probe clips).
        decoded: optional memo ``clip digest -> Decoded``, filled with the probes' decodes.
        probe_clips: clips used for the estimate.

    Returns:
        Delay in samples (>= 0).
    """
    probes = list(clips[:probe_clips])
    parts = {"kind": "delay", "codec": transcoder.fingerprint(),
             "method": transcoder.align_method, "clips": [c.digest for c in probes]}
    hit = cache.get(parts)
    if hit is not None and isinstance(hit.get("delay"), int):
        return int(hit["delay"])
    memo = decoded if decoded is not None else {}
    degs = []
    for clip in probes:
        if clip.digest not in memo:
            memo[clip.digest] = _decode(transcoder, clip)
        degs.append(memo[clip.digest].audio)
    max_ms = MAX_STOI_DELAY_MS if transcoder.align_method == "stoi" else MAX_DELAY_MS
    delay = estimate_delay([c.pcm for c in probes], degs, int(max_ms * METRIC_RATE / 1000),
                           transcoder.align_method)
    cache.put(parts, {"delay": delay})
    return delay


# --------------------------------------------------------------------------------------------
# quality


@dataclass
class CodecQuality:
    """Quality of one codec over the clips (means), or why it is missing."""

    name: str
    """Codec name."""
    label: str
    """Description."""
    status: str
    """``"ok"`` or ``"missing"``."""
    reason: str = ""
    """Why it is missing (empty when ok)."""
    fingerprint: str = ""
    """Short digest of the codec fingerprint."""
    kbps: float | None = None
    """Measured payload bitrate, kbit/s (packet headers excluded)."""
    delay_ms: float | None = None
    """Estimated fixed delay removed before scoring, ms."""
    clips: int = 0
    """Clips scored."""
    metrics: dict[str, float | None] = field(default_factory=dict)
    """Metric name -> mean over clips (None: no finite value)."""
    missing_metrics: dict[str, str] = field(default_factory=dict)
    """Metric name -> ``"missing (pip install X)"``."""
    per_clip: list[dict[str, Any]] = field(default_factory=list)
    """Per-clip values (file, metrics)."""


def _quality_one(transcoder: Transcoder, clips: Sequence[Clip], metrics: MetricSet,
                 cache: ResultCache, progress: Any) -> CodecQuality:
    decoded: dict[str, Decoded] = {}
    bits_total, seconds_total = 0, 0.0
    delay = codec_delay(transcoder, clips, cache, decoded)
    fp = transcoder.fingerprint()
    per_clip: list[dict[str, Any]] = []
    for clip in clips:
        parts = {"kind": "quality", "codec": fp, "clip": clip.digest, "delay": delay}
        entry: dict[str, Any] = cache.get(parts) or {}
        values: dict[str, float | None] = dict(entry.get("metrics", {}))
        todo = [m for m in metrics.available if m not in values]
        if todo or "payload_bits" not in entry:
            dec = decoded.pop(clip.digest, None) or _decode(transcoder, clip)
            entry["payload_bits"], entry["seconds"] = dec.payload_bits, dec.seconds
            ref, deg = align(clip.pcm, dec.audio, delay)
            for name in todo:
                values[name] = metrics.score(
                    name, clip.pcm if METRICS[name].whole_reference else ref, deg)
            entry["metrics"] = values
            cache.put(parts, entry)
        bits_total += int(entry["payload_bits"])
        seconds_total += float(entry["seconds"])
        per_clip.append({"file": str(clip.path), "metrics": values})
        progress.update(1)
    means = {m: _mean([pc["metrics"].get(m) for pc in per_clip]) for m in metrics.available}
    return CodecQuality(
        name=transcoder.name, label=transcoder.label, status="ok",
        fingerprint=fingerprint_digest(transcoder),
        kbps=bits_total / seconds_total / 1000.0 if seconds_total else None,
        delay_ms=1000.0 * delay / METRIC_RATE, clips=len(clips), metrics=means,
        missing_metrics=dict(metrics.missing), per_clip=per_clip)


def run_quality(codecs: Sequence[str | Transcoder], clips: Sequence[Clip],
                metrics: Sequence[str] = QUALITY_METRICS, cache: ResultCache | None = None,
                progress: bool = True) -> list[CodecQuality]:
    """Score every codec on every clip (no network).

    Args:
        codecs: codec names or checkpoint paths (see
            :func:`~voip_codec_bench.peers.resolve_codec`), or transcoder objects.
        clips: clips from :func:`load_clips`.
        metrics: metric names (keys of :data:`~voip_codec_bench.metrics.METRICS`).
        cache: result cache (default: disabled).
        progress: show a tqdm progress bar on stderr.

    Returns:
        One :class:`CodecQuality` per codec, in order; codecs that cannot run here have
        ``status == "missing"`` and a reason.

    Raises:
        ValueError: an unknown codec or metric name, or no clips.
    """
    if not clips:
        raise ValueError("run_quality needs at least one clip")
    store = cache if cache is not None else ResultCache(None)
    metric_set = MetricSet(metrics, store)
    resolved = [resolve_codec(c) if isinstance(c, str) else c for c in codecs]
    results = []
    runnable = sum(not isinstance(r, MissingCodec) for r in resolved)
    with _progress(runnable * len(clips), "quality", progress) as bar:
        for item in resolved:
            if isinstance(item, MissingCodec):
                results.append(CodecQuality(item.name, item.name, "missing", item.reason,
                                            missing_metrics=dict(metric_set.missing)))
                continue
            bar.set_description(f"quality {item.name}")
            results.append(_quality_one(item, clips, metric_set, store, bar))
    return results


# --------------------------------------------------------------------------------------------
# loss


@dataclass
class LossRow:
    """Means over clips of one (codec, loss model, loss rate, redundancy) scenario."""

    codec: str
    """Codec name."""
    loss_model: str
    """``"random"`` (Bernoulli) or ``"bursty"`` (Gilbert-Elliott)."""
    loss_rate: float
    """Configured loss rate (fraction)."""
    redundancy: str
    """``"0"``..``"3"`` (fixed K) or ``"adaptive"``."""
    metrics: dict[str, float | None]
    """``stoi_lossless``, ``pesq_lossless`` (vs the lossless decode), ``stoi_original``,
    ``pesq_original`` (vs the original, delay removed), ``plcmos`` (no reference)."""
    concealed_pct: float
    """Frames concealed, percent."""
    measured_loss_pct: float
    """Packets the network dropped, percent."""
    kbps: float
    """Packet bitrate (our headers and redundancy included, transport headers not), kbit/s."""
    clips: int
    """Clips averaged."""


@dataclass
class CodecLoss:
    """Loss results of one codec, or why it is missing."""

    name: str
    """Codec name."""
    label: str
    """Description."""
    status: str
    """``"ok"``, ``"missing"`` (cannot run here) or ``"not run"`` (no frame-contract codec)."""
    reason: str = ""
    """Why it is missing or not run."""
    fingerprint: str = ""
    """Short digest of the codec fingerprint."""
    lossless_plcmos: float | None = None
    """Mean PLCMOS of the lossless decode (the 'no loss' anchor)."""
    rows: list[LossRow] = field(default_factory=list)
    """One row per scenario."""
    missing_metrics: dict[str, str] = field(default_factory=dict)
    """Metric name -> ``"missing (pip install X)"``."""


def _loss_scores(metrics: MetricSet, original: np.ndarray, lossless: np.ndarray,
                 degraded: np.ndarray, delay: int) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    ref_o, deg_o = align(original, degraded, delay)
    n = min(lossless.shape[0], degraded.shape[0])
    for name in metrics.available:
        if METRICS[name].intrusive:
            whole = METRICS[name].whole_reference
            values[f"{name}_lossless"] = metrics.score(name, lossless if whole else lossless[:n],
                                                       degraded[:n])
            values[f"{name}_original"] = metrics.score(name, original if whole else ref_o, deg_o)
        else:
            values[name] = metrics.score(name, deg_o, deg_o)
    return values


def _loss_one(transcoder: Transcoder, clips: Sequence[Clip], metrics: MetricSet,
              cache: ResultCache, conditions: Sequence[tuple[str, float]],
              redundancy: Sequence[str], burst: float, playout_delay_ms: float, seed: int,
              progress: Any) -> CodecLoss:
    from voip_codec.transport.jitter import JitterConfig
    from voip_codec.transport.netsim import (
        BernoulliLoss,
        GilbertElliottLoss,
        LossModel,
        NetworkConditions,
    )
    from voip_codec.transport.pipeline import simulate
    from voip_codec.transport.redundancy import RedundancyController

    codec = transcoder.codec
    assert codec is not None
    rate = codec.info.output_sample_rate
    delay = codec_delay(transcoder, clips, cache)
    fp = transcoder.fingerprint()
    jitter = JitterConfig(initial_delay_ms=playout_delay_ms, min_delay_ms=playout_delay_ms,
                          max_delay_ms=playout_delay_ms)
    lossless: dict[str, np.ndarray] = {}

    def lossless_of(clip: Clip) -> np.ndarray:
        if clip.digest not in lossless:
            out = simulate(clip.pcm, codec, jitter=jitter, seed=seed)
            lossless[clip.digest] = to_metric_rate(out.audio, rate)
        return lossless[clip.digest]

    base = {"codec": fp, "delay": delay, "playout_ms": playout_delay_ms, "seed": seed}
    anchors = []
    for clip in clips:
        parts = {"kind": "loss-anchor", "clip": clip.digest, **base}
        entry = cache.get(parts)
        if entry is None or ("plcmos" in metrics.available and "plcmos" not in entry):
            ll = lossless_of(clip)
            entry = {"plcmos": metrics.score("plcmos", ll, ll)
                     if "plcmos" in metrics.available else None}
            cache.put(parts, entry)
        anchors.append(entry.get("plcmos"))

    rows = []
    for model, loss in conditions:
        for setting in redundancy:
            per_clip: list[dict[str, Any]] = []
            for i, clip in enumerate(clips):
                parts = {"kind": "loss", "clip": clip.digest, "model": model, "loss": loss,
                         "redundancy": setting, "burst": burst, **base}
                entry = cache.get(parts)
                need = [m for m in metrics.available
                        if not any(k.startswith(m) for k in (entry or {}).get("metrics", {}))]
                if entry is None or need:
                    lm: LossModel = (BernoulliLoss(loss) if model == "random"
                                     else GilbertElliottLoss(loss, burst))
                    adaptive = RedundancyController() if setting == "adaptive" else None
                    res = simulate(clip.pcm, codec, network=NetworkConditions(loss=lm),
                                   seed=seed + i, redundancy=0 if adaptive else int(setting),
                                   adaptive=adaptive, jitter=jitter)
                    deg = to_metric_rate(res.audio, rate)
                    entry = {
                        "metrics": _loss_scores(metrics, clip.pcm, lossless_of(clip), deg,
                                                delay),
                        "concealed_pct": 100.0 * res.concealed_fraction,
                        "measured_loss_pct": 100.0 * res.network.lost / max(res.network.sent, 1),
                        "kbps": res.bitrate_bps / 1000.0,
                    }
                    cache.put(parts, entry)
                per_clip.append(entry)
                progress.update(1)
            keys = list(dict.fromkeys(k for e in per_clip for k in e["metrics"]))
            rows.append(LossRow(
                codec=transcoder.name, loss_model=model, loss_rate=loss, redundancy=setting,
                metrics={k: _mean([e["metrics"].get(k) for e in per_clip]) for k in keys},
                concealed_pct=float(np.mean([e["concealed_pct"] for e in per_clip])),
                measured_loss_pct=float(np.mean([e["measured_loss_pct"] for e in per_clip])),
                kbps=float(np.mean([e["kbps"] for e in per_clip])), clips=len(clips)))
    return CodecLoss(transcoder.name, transcoder.label, "ok",
                     fingerprint=fingerprint_digest(transcoder),
                     lossless_plcmos=_mean(anchors), rows=rows,
                     missing_metrics=dict(metrics.missing))


def run_loss(codecs: Sequence[str], clips: Sequence[Clip],
             conditions: Sequence[tuple[str, float]] = DEFAULT_LOSS_CONDITIONS,
             redundancy: Sequence[str] = DEFAULT_REDUNDANCY, burst: float = 3.0,
             playout_delay_ms: float = 240.0, seed: int = 0,
             metrics: Sequence[str] = LOSS_METRICS, cache: ResultCache | None = None,
             progress: bool = True) -> list[CodecLoss]:
    """Score codecs under packet loss through the real packet / jitter / concealment path.

    The playout delay is fixed (jitter buffer bounds pinned) so that every output frame stays
    aligned with the lossless decode. Clip ``i`` uses network seed ``seed + i``.

    Args:
        codecs: codec names or checkpoint paths; peers without a frame-contract codec (VBR
            Opus) get a ``"not run"`` entry with the reason.
        clips: clips from :func:`load_clips`.
        conditions: ``(loss model, rate)`` pairs, model ``"random"`` or ``"bursty"``.
        redundancy: settings among ``"0"``..``"3"`` and ``"adaptive"``.
        burst: mean burst length of the bursty model, in packets.
        playout_delay_ms: fixed playout delay.
        seed: base network seed.
        metrics: metric names (intrusive ones are computed against both references).
        cache: result cache (default: disabled).
        progress: show a tqdm progress bar on stderr.

    Returns:
        One :class:`CodecLoss` per codec.

    Raises:
        ValueError: bad loss model, rate or redundancy setting, or no clips.
    """
    if not clips:
        raise ValueError("run_loss needs at least one clip")
    for model, loss in conditions:
        if model not in ("random", "bursty") or not 0.0 <= loss < 1.0:
            raise ValueError(f"bad loss condition ({model!r}, {loss}); the model must be "
                             "'random' or 'bursty' and the rate in [0, 1)")
    allowed = ("0", "1", "2", "3", "adaptive")
    for setting in redundancy:
        if setting not in allowed:
            raise ValueError(f"redundancy setting {setting!r} is not one of {', '.join(allowed)}")
    store = cache if cache is not None else ResultCache(None)
    metric_set = MetricSet(metrics, store)
    results = []
    resolved = [resolve_codec(c) for c in codecs]
    runnable = [r for r in resolved if not isinstance(r, MissingCodec) and r.codec is not None]
    total = len(runnable) * len(conditions) * len(redundancy) * len(clips)
    with _progress(total, "loss", progress) as bar:
        for item in resolved:
            if isinstance(item, MissingCodec):
                results.append(CodecLoss(item.name, item.name, "missing", item.reason))
            elif item.codec is None:
                results.append(CodecLoss(item.name, item.label, "not run", NOT_FRAME_CODEC))
            else:
                bar.set_description(f"loss {item.name}")
                results.append(_loss_one(item, clips, metric_set, store, conditions,
                                         redundancy, burst, playout_delay_ms, seed, bar))
    return results


# --------------------------------------------------------------------------------------------
# command line


def set_threads(threads: int) -> None:
    """Use ``threads`` torch intra-op threads (FocalCodec, DistillMOS) in this process.

    One thread is the default of the benchmark commands: on a shared 2-core machine two torch
    threads contend with other load and a FocalCodec decode got ~20x slower.
    """
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)


def _common_arguments(parser: argparse.ArgumentParser, default_codecs: Sequence[str],
                      default_clips: int | None) -> None:
    parser.add_argument("--codecs", nargs="+", default=list(default_codecs), metavar="CODEC",
                        help="codec names, Opus/AMR peers, 'focalcodec-conformance', or "
                             "FocalCodec checkpoint paths as PATH or NAME=PATH "
                             f"(default: {' '.join(default_codecs)})")
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="add a FocalCodec checkpoint directory (repeatable)")
    parser.add_argument("--clip-dir", type=Path, default=None,
                        help="folder of audio files, searched recursively "
                             "(default $VOIP_CODEC_SHARED/speech/eval, else "
                             "../shared/speech/eval beside the checkout)")
    parser.add_argument("--clips", type=int, default=default_clips,
                        help="use at most N clips, picked evenly from the sorted list "
                             f"(default {default_clips or 'all'})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"result cache folder (default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cache")
    parser.add_argument("--out", type=Path, default=None,
                        help="write report.md, results.json and PNG plots to this folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (default 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _loss_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--random", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.20],
                        metavar="RATE", help="random loss rates (default 0 0.05 0.1 0.2)")
    parser.add_argument("--bursty", type=float, nargs="*", default=[0.10, 0.20],
                        metavar="RATE", help="Gilbert-Elliott loss rates (default 0.1 0.2)")
    parser.add_argument("--redundancy", nargs="+", default=list(DEFAULT_REDUNDANCY),
                        choices=["0", "1", "2", "3", "adaptive"],
                        help="settings to compare (default 0 1 2 adaptive)")
    parser.add_argument("--burst", type=float, default=3.0,
                        help="mean burst length of the bursty model, packets (default 3)")
    parser.add_argument("--delay-ms", type=float, default=240.0,
                        help="fixed playout delay, ms (default 240)")
    parser.add_argument("--seed", type=int, default=0, help="base network seed")


def add_quality_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``quality`` (``voip-codec bench quality``); its ``func`` is
    :func:`run_quality_command`."""
    parser = subparsers.add_parser(
        "quality", help="STOI/PESQ/DistillMOS/dWER/speaker similarity vs bitrate, all codecs",
        description="Quality of our codecs and peers (Codec2, Opus, AMR-NB) on a folder of "
                    "speech, delay-aligned, scored at 16 kHz.")
    _common_arguments(parser, DEFAULT_CODECS, None)
    parser.add_argument("--metrics", nargs="+", default=list(QUALITY_METRICS),
                        choices=list(METRICS), help="metrics to compute")
    parser.set_defaults(func=run_quality_command)
    return parser


def add_loss_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``loss`` (``voip-codec bench loss``); its ``func`` is :func:`run_loss_command`."""
    parser = subparsers.add_parser(
        "loss", help="quality under random/bursty packet loss per redundancy setting",
        description="Clips through the packet/jitter-buffer/concealment simulation under "
                    "random and Gilbert-Elliott loss, per redundancy setting: STOI/WB-PESQ vs "
                    "the lossless decode and vs the original, and PLCMOS.")
    _common_arguments(parser, DEFAULT_LOSS_CODECS, 8)
    parser.add_argument("--metrics", nargs="+", default=list(LOSS_METRICS),
                        choices=list(METRICS), help="metrics to compute (default stoi pesq "
                                                    "plcmos)")
    _loss_arguments(parser)
    parser.set_defaults(func=run_loss_command)
    return parser


def add_report_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``report`` (``voip-codec bench report``: quality + loss + speed in one run); its
    ``func`` is :func:`run_report_command`."""
    parser = subparsers.add_parser(
        "report", help="quality + loss + per-codec speed, Markdown/PNG/JSON report",
        description="Runs bench quality, bench loss and the per-codec speed measurement and "
                    "writes one report (report.md, results.json, PNG plots); or re-renders a "
                    "saved results.json (--from-json).")
    _common_arguments(parser, DEFAULT_CODECS, None)
    parser.add_argument("--metrics", nargs="+", default=list(QUALITY_METRICS),
                        choices=list(METRICS), help="quality metrics to compute")
    parser.add_argument("--loss-codecs", nargs="+", default=None, metavar="CODEC",
                        help="codecs of the loss benchmark (default: "
                             f"{' '.join(DEFAULT_LOSS_CODECS)} plus --model paths)")
    parser.add_argument("--loss-clips", type=int, default=10,
                        help="clips of the loss benchmark, picked evenly from the whole folder "
                             "(default 10)")
    parser.add_argument("--loss-metrics", nargs="+", default=list(LOSS_METRICS),
                        choices=list(METRICS), help="metrics of the loss benchmark")
    _loss_arguments(parser)
    parser.add_argument("--speed-codecs", nargs="*", default=None, metavar="CODEC",
                        help="codecs timed (default: every runnable codec of the quality run)")
    parser.add_argument("--speed-seconds", type=float, default=10.0,
                        help="audio seconds per speed run (default 10)")
    parser.add_argument("--speed-threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts timed (default 1 2)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for quality and loss, one codec per task; speed "
                             "always runs afterwards, alone (default 1)")
    parser.add_argument("--note", default="",
                        help="free text for the report header (e.g. what else ran)")
    parser.add_argument("--from-json", type=Path, default=None, metavar="RESULTS",
                        help="re-render a saved results.json instead of running anything")
    parser.add_argument("--readme", type=Path, default=None, metavar="README",
                        help="rewrite the quality table between the <!-- bench-quality:begin "
                             "--> and <!-- bench-quality:end --> markers of this file")
    parser.set_defaults(func=run_report_command)
    return parser


def add_codec_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--codecs`` (and its options) to the existing ``bench speed`` parser.

    With ``--codecs`` the command times each named codec (see :func:`run_codec_speed`);
    without it, ``bench speed`` keeps measuring the FocalCodec model as before.
    """
    parser.add_argument("--codecs", nargs="+", default=None, metavar="CODEC",
                        help="time these codecs frame by frame instead of the model: encode and "
                             "decode CPU seconds per audio second, per-frame latency p50/p95, "
                             "peak RSS (each in a fresh process)")
    parser.add_argument("--codec-threads", type=int, nargs="+", default=[1, 2],
                        help="thread counts for --codecs (default 1 2)")


def _codecs_with_models(args: argparse.Namespace, codecs: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*codecs, *[str(m) for m in args.model]]))


def _open_cache(args: argparse.Namespace) -> ResultCache:
    return ResultCache(None if args.no_cache else args.cache_dir)


def _conditions(args: argparse.Namespace) -> list[tuple[str, float]]:
    return ([("random", r) for r in args.random] + [("bursty", r) for r in args.bursty])


def _emit(report: dict[str, Any], args: argparse.Namespace) -> None:
    from .report import render_markdown, write_report

    if args.out is not None:
        write_report(report, args.out)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_markdown(report, plots=False))


def _context(args: argparse.Namespace, clips: Sequence[Clip]) -> dict[str, Any]:
    from .report import machine_description

    clip_dir = args.clip_dir or default_clip_dir()
    return {"clip_dir": str(clip_dir), "clips": len(clips),
            "clips_available": len(load_clips_paths(clip_dir)),
            "audio_seconds": round(sum(c.seconds for c in clips), 1),
            "clip_files": [str(c.path.relative_to(clip_dir)) for c in clips],
            "threads": args.threads, "machine": machine_description()}


def load_clips_paths(clip_dir: Path) -> list[Path]:
    """The audio files :func:`load_clips` would pick from (all of them, sorted)."""
    return sorted(p for p in clip_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)


def _user_errors() -> tuple[type[BaseException], ...]:
    from voip_codec.audio import AudioError

    return (ValueError, FileNotFoundError, AudioError)


def run_quality_command(args: argparse.Namespace) -> int:
    """``voip-codec bench quality``: run and print (or write) the report; returns the status."""
    try:
        set_threads(args.threads)
        clips = load_clips(args.clip_dir or default_clip_dir(), args.clips)
        cache = _open_cache(args)
        rows = run_quality(_codecs_with_models(args, args.codecs), clips, args.metrics, cache,
                           progress=not args.quiet)
    except _user_errors() as exc:
        print(f"voip-codec: error: {exc}", file=sys.stderr)
        return 1
    report = {"context": _context(args, clips), "quality": [asdict(r) for r in rows],
              "cache": {"hits": cache.hits, "misses": cache.misses}}
    _emit(report, args)
    return 0


def _loss_context(args: argparse.Namespace, loss_clips: Sequence[Clip]) -> dict[str, Any]:
    clip_dir = args.clip_dir or default_clip_dir()
    return {"loss_clips": len(loss_clips),
            "loss_audio_seconds": round(sum(c.seconds for c in loss_clips), 1),
            "loss_clip_files": [str(c.path.relative_to(clip_dir)) for c in loss_clips],
            "burst": args.burst, "playout_delay_ms": args.delay_ms, "seed": args.seed}


def run_loss_command(args: argparse.Namespace) -> int:
    """``voip-codec bench loss``: run and print (or write) the report; returns the status."""
    try:
        set_threads(args.threads)
        clips = load_clips(args.clip_dir or default_clip_dir(), args.clips)
        cache = _open_cache(args)
        rows = run_loss(_codecs_with_models(args, args.codecs), clips, _conditions(args),
                        args.redundancy, args.burst, args.delay_ms, args.seed, args.metrics,
                        cache=cache, progress=not args.quiet)
    except _user_errors() as exc:
        print(f"voip-codec: error: {exc}", file=sys.stderr)
        return 1
    report = {"context": {**_context(args, clips), **_loss_context(args, clips)},
              "loss": [asdict(r) for r in rows],
              "cache": {"hits": cache.hits, "misses": cache.misses}}
    _emit(report, args)
    return 0


def run_codec_speed(args: argparse.Namespace) -> int:
    """``voip-codec bench speed --codecs ...``: time each codec and print a table (or JSON).

    Uses ``args.codecs``, ``args.codec_threads``, ``args.seconds`` and ``args.json`` (the
    existing ``bench speed`` options).
    """
    from .codec_speed import format_speed_table, measure_codecs

    try:
        rows = measure_codecs(args.codecs, args.codec_threads, seconds=args.seconds)
    except _user_errors() as exc:
        print(f"voip-codec: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(format_speed_table(rows))
    return 0


def _iter_speed_codecs(quality: Sequence[CodecQuality]) -> Iterator[str]:
    for row in quality:
        if row.status == "ok" and row.name != "original":
            yield row.name


@dataclass(frozen=True)
class _Plan:
    """Everything a report task needs (picklable: sent once to each worker process)."""

    clip_dir: Path
    clips: int | None
    loss_clips: int
    metrics: tuple[str, ...]
    loss_metrics: tuple[str, ...]
    conditions: tuple[tuple[str, float], ...]
    redundancy: tuple[str, ...]
    burst: float
    playout_delay_ms: float
    seed: int
    cache_dir: Path | None
    threads: int


_WORKER: dict[str, Any] = {}


def _worker_init(plan: _Plan) -> None:
    set_threads(plan.threads)
    _WORKER.clear()
    _WORKER["plan"] = plan


def _plan_clips(plan: _Plan, loss: bool) -> list[Clip]:
    """The quality clips, or the loss clips: picked evenly from the whole folder, so that they
    (and their cached results) do not depend on ``--clips``."""
    key = "loss_clips" if loss else "clips"
    if key not in _WORKER:
        _WORKER[key] = load_clips(plan.clip_dir, plan.loss_clips if loss else plan.clips)
    return list(_WORKER[key])


def _run_task(task: tuple[str, str, int], progress: bool = False) -> tuple[str, int, Any,
                                                                          float, int, int]:
    """Run one report task ``(kind, codec, index)`` with the worker's plan; returns ``(kind,
    index, result, seconds, cache hits, cache misses)``."""
    import time

    plan: _Plan = _WORKER["plan"]
    kind, codec, index = task
    cache = ResultCache(plan.cache_dir)
    start = time.perf_counter()
    result: Any
    if kind == "transcripts":  # the originals' transcripts, shared by every codec's dWER
        metric_set = MetricSet(["dwer"], cache)
        clips = _plan_clips(plan, loss=False)[index::int(codec)]
        if "dwer" in metric_set.available:
            for clip in clips:
                metric_set.score("dwer", clip.pcm, clip.pcm)
        result = None
    elif kind == "quality":
        [result] = run_quality([codec], _plan_clips(plan, loss=False), plan.metrics, cache,
                               progress=progress)
    else:
        [result] = run_loss([codec], _plan_clips(plan, loss=True), plan.conditions,
                            plan.redundancy, plan.burst, plan.playout_delay_ms, plan.seed,
                            plan.loss_metrics, cache, progress=progress)
    return kind, index, result, time.perf_counter() - start, cache.hits, cache.misses


def _run_tasks(plan: _Plan, codecs: Sequence[str], loss_codecs: Sequence[str], jobs: int,
               progress: bool) -> tuple[list[CodecQuality], list[CodecLoss], ResultCache]:
    """Quality and loss of every codec, in ``jobs`` worker processes (1: in this process)."""
    tasks: list[tuple[str, str, int]] = []
    if jobs > 1 and "dwer" in plan.metrics:
        tasks += [("transcripts", str(jobs), i) for i in range(jobs)]
    tasks += [("loss", c, i) for i, c in enumerate(loss_codecs)]
    tasks += [("quality", c, i) for i, c in enumerate(codecs)]
    quality: list[Any] = [None] * len(codecs)
    loss: list[Any] = [None] * len(loss_codecs)
    totals = ResultCache(None)
    totals.misses = 0

    def collect(done: tuple[str, int, Any, float, int, int], codec: str) -> None:
        kind, index, result, seconds, hits, misses = done
        totals.hits += hits
        totals.misses += misses
        if kind == "quality":
            quality[index] = result
        elif kind == "loss":
            loss[index] = result
        print(f"bench report: {kind} {codec} done in {seconds:.0f} s", file=sys.stderr)

    if jobs <= 1:
        _worker_init(plan)
        for task in tasks:
            collect(_run_task(task, progress), task[1])
        return quality, loss, totals
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # no torch state inherited through fork
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init,
                             initargs=(plan,)) as pool, \
            _progress(len(tasks), "report tasks", progress) as bar:
        futures = {pool.submit(_run_task, task): task for task in tasks}
        for future in as_completed(futures):
            collect(future.result(), futures[future][1])
            bar.update(1)
    return quality, loss, totals


def run_report_command(args: argparse.Namespace) -> int:
    """``voip-codec bench report``: quality + loss + speed, written to ``--out`` (default
    ``bench-report/``) and printed; or a saved ``results.json`` re-rendered (``--from-json``).
    ``--readme`` also rewrites the README's quality table. Returns the exit status."""
    import time

    from .codec_speed import measure_codecs
    from .report import update_readme

    if args.from_json is not None:
        try:
            report = json.loads(args.from_json.read_text(encoding="utf-8"))
            if args.readme is not None:
                update_readme(args.readme, report)
        except (OSError, ValueError) as exc:
            print(f"voip-codec: error: {exc}", file=sys.stderr)
            return 1
        _emit(report, args)
        return 0
    out = args.out or Path("bench-report")
    args.out = out
    try:
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        set_threads(args.threads)
        clip_dir = args.clip_dir or default_clip_dir()
        clips = load_clips(clip_dir, args.clips)
        loss_clips = load_clips(clip_dir, args.loss_clips)
        plan = _Plan(clip_dir, args.clips, args.loss_clips, tuple(args.metrics),
                     tuple(args.loss_metrics), tuple(_conditions(args)), tuple(args.redundancy),
                     args.burst, args.delay_ms, args.seed,
                     None if args.no_cache else args.cache_dir, args.threads)
        codecs = _codecs_with_models(args, args.codecs)
        loss_codecs = _codecs_with_models(args, args.loss_codecs or DEFAULT_LOSS_CODECS)
        load_start = os.getloadavg()[0]
        t0 = time.perf_counter()
        quality, loss, cache = _run_tasks(plan, codecs, loss_codecs, args.jobs,
                                          not args.quiet)
        t1 = time.perf_counter()
        speed_names = (args.speed_codecs if args.speed_codecs is not None
                       else list(_iter_speed_codecs(quality)))
        speed = measure_codecs(speed_names, args.speed_threads, seconds=args.speed_seconds,
                               progress=not args.quiet)
        t2 = time.perf_counter()
    except _user_errors() as exc:
        print(f"voip-codec: error: {exc}", file=sys.stderr)
        return 1
    report = {
        "context": {**_context(args, clips), **_loss_context(args, loss_clips),
                    "speed_seconds": args.speed_seconds, "jobs": args.jobs, "note": args.note,
                    "loadavg_start": round(load_start, 2),
                    "loadavg_end": round(os.getloadavg()[0], 2),
                    "wall_s": {"quality_and_loss": round(t1 - t0, 1),
                               "speed": round(t2 - t1, 1)}},
        "quality": [asdict(r) for r in quality],
        "loss": [asdict(r) for r in loss],
        "speed": [asdict(r) for r in speed],
        "cache": {"hits": cache.hits, "misses": cache.misses},
    }
    _emit(report, args)
    if args.readme is not None:
        update_readme(args.readme, report)
    print(f"report written to {out}/report.md", file=sys.stderr)
    return 0
