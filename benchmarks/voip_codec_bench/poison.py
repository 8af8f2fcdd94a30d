"""State poisoning: bad input mid-call into the bundled model, then real speech again.

Encoder side: speech A, then a bad stretch (one 80 ms chunk of NaN or +inf, a full-scale square
wave, full-scale DC, digital silence), then speech B. Decoder side: the tokens of A, then bad
token sequences (random, all zeros, all ones, alternating), then the tokens of B. Each run is
frame by frame through the codec objects a call uses (``FocalCodecFrameEncoder`` /
``FocalCodecFrameDecoder``), and compared with the clean run A + B:

* every tensor of the encoder and decoder state is finite after the bad stretch;
* every output sample is within [-1, 1];
* STOI of the decoded B (against the original B) minus that of the clean run's decoded B: the
  codec recovers when the difference is within ``STOI_TOLERANCE``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STOI_TOLERANCE", "PoisonResult", "run_poisoning", "state_is_finite"]

STOI_TOLERANCE = 0.02
"""Largest accepted STOI loss of the speech after the bad input, against a clean run."""


@dataclass
class PoisonResult:
    """One bad-input condition."""

    side: str
    """``encoder`` or ``decoder``."""
    condition: str
    bad_seconds: float
    state_finite: bool
    peak_abs: float
    """Largest absolute output sample over the whole run."""
    stoi_clean: float
    """STOI of the decoded B in the clean run."""
    stoi_after: float
    """STOI of the decoded B after the bad input."""

    @property
    def stoi_delta(self) -> float:
        """``stoi_after - stoi_clean``."""
        return self.stoi_after - self.stoi_clean

    @property
    def ok(self) -> bool:
        """Finite state, output in [-1, 1], STOI within the tolerance."""
        return (self.state_finite and self.peak_abs <= 1.0
                and self.stoi_delta >= -STOI_TOLERANCE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dataclasses.asdict(self)
        for key in ("peak_abs", "stoi_clean", "stoi_after"):
            out[key] = round(out[key], 4)
        out["stoi_delta"] = round(self.stoi_delta, 4)
        out["ok"] = self.ok
        return out


def _tensors(obj: object) -> list[Any]:
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name))]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def state_is_finite(state: object) -> bool:
    """Whether every floating-point tensor inside a (nested) stream state is finite."""
    import torch

    return all(bool(torch.isfinite(t).all()) for t in _tensors(state) if t.is_floating_point())


def _speech(clip_dir: Path, seconds: float) -> np.ndarray:
    """``seconds`` of eval speech at 16 kHz (clips concatenated, evenly picked)."""
    from .harness import load_clips

    clips = load_clips(clip_dir, max_clips=12)
    x = np.concatenate([c.pcm for c in clips])
    need = int(seconds * 16000)
    if x.shape[0] < need:
        x = np.tile(x, need // x.shape[0] + 1)
    return x[:need].astype(np.float32)


def _bad_pcm(condition: str, frames: int, frame: int) -> np.ndarray:
    n = frames * frame
    t = np.arange(n)
    if condition == "nan":
        return np.full(n, np.nan, dtype=np.float32)
    if condition == "inf":
        return np.full(n, np.inf, dtype=np.float32)
    if condition == "square":  # 200 Hz, full scale
        return np.where((t // 40) % 2 == 0, 1.0, -1.0).astype(np.float32)
    if condition == "dc":
        return np.ones(n, dtype=np.float32)
    if condition == "silence":
        return np.zeros(n, dtype=np.float32)
    raise ValueError(condition)


def _bad_tokens(condition: str, frames: int, per_frame: int, bits: int,
                rng: np.random.Generator) -> np.ndarray:
    n = frames * per_frame
    top = (1 << bits) - 1
    if condition == "random":
        return rng.integers(0, top + 1, n)
    if condition == "zeros":
        return np.zeros(n, dtype=np.int64)
    if condition == "ones":
        return np.full(n, top, dtype=np.int64)
    if condition == "alternating":
        return np.where(np.arange(n) % 2 == 0, 0, top).astype(np.int64)
    raise ValueError(condition)


ENCODER_CONDITIONS: tuple[tuple[str, float], ...] = (
    ("nan", 0.08), ("inf", 0.08), ("square", 1.0), ("dc", 1.0), ("silence", 10.0))
"""(condition, seconds of bad input) into the encoder."""

DECODER_CONDITIONS: tuple[tuple[str, float], ...] = (
    ("random", 2.0), ("zeros", 2.0), ("ones", 2.0), ("alternating", 2.0))
"""(condition, seconds of bad tokens) into the decoder."""


def run_poisoning(clip_dir: Path, *, before_s: float = 4.0, after_s: float = 8.0,
                  model: str = "default") -> list[PoisonResult]:
    """Every condition of :data:`ENCODER_CONDITIONS` and :data:`DECODER_CONDITIONS`.

    Args:
        clip_dir: folder of eval speech.
        before_s: seconds of speech A before the bad input.
        after_s: seconds of speech B after it (the part scored).
        model: checkpoint of the codec (the bundled model by default).

    Returns:
        One result per condition.
    """
    import torch
    from pystoi import stoi

    from voip_codec.codecs.focalcodec import load_focalcodec_codec
    from voip_codec.wire.bitpack import pack_tokens, unpack_tokens

    from .metrics import METRIC_RATE, estimate_delay, to_metric_rate

    torch.manual_seed(0)
    codec = load_focalcodec_codec(model, "focalcodec-robustness", 35)
    info = codec.info
    frame = info.input_frame_samples
    out_frame = info.output_frame_samples
    fm = codec.model
    per_frame, bits = fm.chunk_frames, fm.bits_per_token
    a_frames = max(1, round(before_s * 1000 / info.frame_ms))
    b_frames = max(1, round(after_s * 1000 / info.frame_ms))
    speech = _speech(clip_dir, (a_frames + b_frames) * frame / 16000)
    a, b = speech[:a_frames * frame], speech[a_frames * frame:]

    def encode(pcm: np.ndarray) -> tuple[list[bytes], object]:
        enc = codec.new_encoder()
        payloads = [enc.encode(pcm[i * frame:(i + 1) * frame])
                    for i in range(pcm.shape[0] // frame)]
        return payloads, enc.state

    def decode(payloads: list[bytes]) -> tuple[np.ndarray, object]:
        dec = codec.new_payload_decoder()
        out = [dec.decode_payload(p) for p in payloads]
        return np.concatenate(out), dec.state

    clean_payloads, _ = encode(np.concatenate([a, b]))
    clean_out, _ = decode(clean_payloads)
    # the codec's fixed delay, from the clean run
    ref16 = np.concatenate([a, b])
    clean16 = to_metric_rate(clean_out, info.output_sample_rate)
    # (STOI search: the waveform of this codec does not cross-correlate reliably)
    delay = estimate_delay([ref16], [clean16], int(0.15 * METRIC_RATE), method="stoi")

    def score_b(out: np.ndarray, b_start_frame: int) -> float:
        seg = out[b_start_frame * out_frame:]
        deg = to_metric_rate(seg, info.output_sample_rate)[delay:]
        n = min(b.shape[0], deg.shape[0])
        return float(stoi(b[:n], deg[:n], METRIC_RATE, extended=False))

    stoi_clean = score_b(clean_out, a_frames)
    results: list[PoisonResult] = []
    for condition, seconds in ENCODER_CONDITIONS:
        bad_frames = max(1, round(seconds * 1000 / info.frame_ms))
        pcm = np.concatenate([a, _bad_pcm(condition, bad_frames, frame), b])
        enc = codec.new_encoder()
        payloads = []
        finite = True
        for i in range(pcm.shape[0] // frame):
            payloads.append(enc.encode(pcm[i * frame:(i + 1) * frame]))
            if i == a_frames + bad_frames - 1:
                finite = state_is_finite(enc.state)
        out, dec_state = decode(payloads)
        results.append(PoisonResult(
            "encoder", condition, bad_frames * info.frame_ms / 1000,
            finite and state_is_finite(enc.state) and state_is_finite(dec_state),
            float(np.max(np.abs(out))), stoi_clean, score_b(out, a_frames + bad_frames)))
    rng = np.random.default_rng(0)
    clean_tokens = [unpack_tokens(p, bits, per_frame) for p in clean_payloads]
    for condition, seconds in DECODER_CONDITIONS:
        bad_frames = max(1, round(seconds * 1000 / info.frame_ms))
        bad = _bad_tokens(condition, bad_frames, per_frame, bits, rng)
        bad_payloads = [pack_tokens(bad[i * per_frame:(i + 1) * per_frame], bits)
                        for i in range(bad_frames)]
        payloads = clean_payloads[:a_frames] + bad_payloads + clean_payloads[a_frames:]
        dec = codec.new_payload_decoder()
        outs = []
        finite = True
        for i, p in enumerate(payloads):
            outs.append(dec.decode_payload(p))
            if i == a_frames + bad_frames - 1:
                finite = state_is_finite(dec.state)
        out = np.concatenate(outs)
        results.append(PoisonResult(
            "decoder", condition, bad_frames * info.frame_ms / 1000,
            finite and state_is_finite(dec.state), float(np.max(np.abs(out))), stoi_clean,
            score_b(out, a_frames + bad_frames)))
    del clean_tokens
    return results
