"""Mouth-to-ear latency, its budget per stage, and wire bitrates of real aiortc calls on
127.0.0.1.

Latency: a source track plays bursts of real speech (half a second each, from the bundled
sample) separated by half a second of silence, paced like a microphone (20 ms frames at 48 kHz).
A sample is "spoken" when the source hands over its 20 ms frame plus its offset in that frame,
and "heard" when the receiving track returns the frame it is in plus its offset there. Both
peers run in one process on one monotonic clock, so the envelopes of what went in and what came
out can be laid on one time axis: for each burst the lag that best aligns the two envelopes
(normalised cross-correlation, 1 ms bins) is its mouth-to-ear latency. Envelopes, not markers:
a neural speech codec does not reproduce tone bursts, but it keeps the envelope of speech.
The detector is checked on a delay line that bypasses the codec and the call (a known 120 ms).

Budget: the sender and receiver record in a shared :class:`~voip_codec.transport.trace.
FrameTrace` when each frame was complete, encoded, sent, arrived, handed to the decoder,
decoded (and resampled), queued and first heard; the differences are the stages. Two delays
are not visible as timestamps and are measured apart: the resamplers' (the sender's frame-grid
shift, the receiver's held-back samples) and the codec's own algorithmic delay (the envelope
lag of its offline decode). The stage means, over the frames that start inside a speech burst,
add up to the measured mean.

Bitrates: the bundled speech sample is sent with fixed K and frames per packet; packet bytes are
counted at the sender, wire bytes (IPv4) at the relay in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from collections import deque
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError

from voip_codec.codecs.base import Codec
from voip_codec.transport.jitter import JitterConfig
from voip_codec.transport.netsim import NetworkConditions, loss_model
from voip_codec.transport.trace import FrameTrace
from voip_codec.webrtc.call import CallOptions, CallPeer, run_demo
from voip_codec.webrtc.commands import SAMPLE_SPEECH, jitter_config
from voip_codec.webrtc.contrib.loopback import loopback_candidates
from voip_codec.webrtc.contrib.relay import ImpairmentRelay

from .sources import PacedTrack

__all__ = ["codec_delay_ms", "envelope_lags", "measure_bitrates", "measure_detector",
           "measure_latency", "render_markdown", "speech_bursts"]

RATE = 48000
PTIME = 960  # samples per 20 ms source frame
STAGES_OUT: tuple[str, ...] = ("capture_framing", "encode", "packetise_send", "network",
                               "jitter_wait", "decode", "output_queue", "resampling",
                               "codec_algorithmic")
"""Stages of the budget, in pipeline order."""


def speech_bursts(bursts: int, burst_s: float = 0.5, gap_s: float = 0.5) -> tuple[np.ndarray,
                                                                                  list[int]]:
    """The source signal: ``bursts`` times (silence, speech), 48 kHz mono float32.

    Returns:
        The signal and the sample index where each burst begins.
    """
    from voip_codec.audio import read_audio

    speech, _ = read_audio(SAMPLE_SPEECH, RATE)
    n_burst, n_gap = int(burst_s * RATE), int(gap_s * RATE)
    # burst starts at the loudest 20 ms onsets of the sample, taken in turn
    env = np.convolve(np.abs(speech), np.ones(PTIME) / PTIME, "same")
    candidates = [i for i in range(PTIME, len(speech) - n_burst, PTIME // 2)
                  if env[i] > 0.25 * env.max() and env[i - PTIME] < env[i]]
    candidates = candidates or [0]
    parts, onsets, pos = [], [], 0
    for b in range(bursts):
        start = candidates[(b * 7) % len(candidates)]
        parts += [np.zeros(n_gap, np.float32), speech[start:start + n_burst]]
        onsets.append(pos + n_gap)
        pos += n_gap + n_burst
    parts.append(np.zeros(n_gap, np.float32))
    return np.concatenate(parts).astype(np.float32), onsets


class _SourceTrack(PacedTrack):
    """Plays a signal in 20 ms frames at 48 kHz, paced in real time; records hand-over times."""

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__(len(signal) // PTIME, record_handover=True)
        self.signal = signal

    def frame_pcm(self, index: int) -> np.ndarray:
        return self.signal[index * PTIME:(index + 1) * PTIME]


def _envelope(times: np.ndarray, pcm: np.ndarray, t_ref: float, n_bins: int) -> np.ndarray:
    """Mean |x| per 1 ms bin of wall time since ``t_ref``, smoothed over 5 ms."""
    bins = np.floor((times - t_ref) * 1000).astype(np.int64)
    ok = (bins >= 0) & (bins < n_bins)
    acc = np.zeros(n_bins)
    cnt = np.zeros(n_bins)
    np.add.at(acc, bins[ok], np.abs(pcm[ok]))
    np.add.at(cnt, bins[ok], 1)
    env = np.where(cnt > 0, acc / np.maximum(cnt, 1), 0.0)
    return np.convolve(env, np.ones(5) / 5, "same")


def envelope_lags(mouth: tuple[np.ndarray, np.ndarray], ear: tuple[np.ndarray, np.ndarray],
                  onsets_s: list[float], burst_s: float = 0.5, max_lag_ms: int = 1000,
                  min_corr: float = 0.5) -> list[float | None]:
    """Mouth-to-ear lag of each burst by envelope cross-correlation on one time axis.

    Args:
        mouth: (wall time of each input sample, samples).
        ear: (wall time of each output sample, samples).
        onsets_s: wall time of each burst's first sample.
        burst_s: burst length, seconds.
        max_lag_ms: largest lag searched.
        min_corr: bursts whose best normalised correlation is below this are not detected.

    Returns:
        The lag in milliseconds per burst, None where not detected.
    """
    t_ref = float(min(mouth[0][0], ear[0][0] if len(ear[0]) else mouth[0][0]))
    n_bins = int((max(mouth[0][-1], ear[0][-1] if len(ear[0]) else 0) - t_ref) * 1000) + 2
    e_in = _envelope(mouth[0], mouth[1], t_ref, n_bins)
    e_out = _envelope(ear[0], ear[1], t_ref, n_bins)
    lags: list[float | None] = []
    width = int(burst_s * 1000) + 100
    for onset in onsets_s:
        a = int((onset - t_ref) * 1000) - 50
        seg = e_in[a:a + width]
        if a < 0 or len(seg) < width or not seg.any():
            lags.append(None)
            continue
        seg = seg - seg.mean()
        best, best_lag = -1.0, None
        for lag in range(0, max_lag_ms + 1):
            out = e_out[a + lag:a + lag + width]
            if len(out) < width:
                break
            out = out - out.mean()
            den = float(np.linalg.norm(seg) * np.linalg.norm(out))
            c = float(np.dot(seg, out) / den) if den > 0 else -1.0
            if c > best:
                best, best_lag = c, lag
        lags.append(float(best_lag) if best_lag is not None and best >= min_corr else None)
    return lags


def _mouth_axis(source: _SourceTrack) -> tuple[np.ndarray, np.ndarray]:
    hand = np.asarray(source.handover)
    n = len(hand) * PTIME
    i = np.arange(n)
    return hand[i // PTIME] + (i % PTIME) / RATE, source.signal[:n]


def _percentiles(values: list[float]) -> dict[str, float | None]:
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return {"latency_ms_p50": None, "latency_ms_p95": None, "latency_ms_mean": None}
    return {"latency_ms_p50": round(float(np.percentile(arr, 50)), 1),
            "latency_ms_p95": round(float(np.percentile(arr, 95)), 1),
            "latency_ms_mean": round(float(arr.mean()), 1)}


async def measure_detector(bursts: int = 6, delay_frames: int = 6) -> dict[str, Any]:
    """The detector on a delay line that bypasses codec and call: the source's frames come out
    exactly ``delay_frames`` frames (20 ms each) later, so the lag is known."""
    signal, onsets = speech_bursts(bursts)
    source = _SourceTrack(signal)
    held: deque[np.ndarray] = deque()
    ear_t: list[np.ndarray] = []
    ear_x: list[np.ndarray] = []
    for _ in range(source.total + delay_frames):
        try:
            frame = await source.recv()
            held.append(frame.to_ndarray().reshape(-1).astype(np.float32) / 32768)
        except MediaStreamError:
            held.append(np.zeros(PTIME, np.float32))
            await asyncio.sleep(PTIME / RATE)
        out = held.popleft() if len(held) > delay_frames else np.zeros(PTIME, np.float32)
        now = time.monotonic()
        ear_t.append(now + np.arange(PTIME) / RATE)
        ear_x.append(out)
    mouth = _mouth_axis(source)
    lags = envelope_lags(mouth, (np.concatenate(ear_t), np.concatenate(ear_x)),
                         [float(mouth[0][o]) for o in onsets])
    found = [x for x in lags if x is not None]
    return {"known_ms": delay_frames * PTIME / RATE * 1000, "bursts": bursts,
            "detected": len(found), **_percentiles(found)}


def codec_delay_ms(codec: Codec, seconds: float = 3.0) -> float:
    """The codec's own delay: envelope lag of its frame-by-frame decode against its input."""
    from voip_codec.audio import read_audio, resample

    info = codec.info
    x, _ = read_audio(SAMPLE_SPEECH, info.input_sample_rate)
    n = info.input_frame_samples
    frames = int(seconds * info.input_sample_rate) // n
    x = x[:frames * n]
    enc, dec = codec.new_encoder(), codec.new_decoder()
    y = np.concatenate([dec.decode(enc.encode(x[i * n:(i + 1) * n])) for i in range(frames)])
    y = resample(y, info.output_sample_rate, info.input_sample_rate)[:len(x)]
    per_ms = info.input_sample_rate // 1000

    def env(s: np.ndarray) -> np.ndarray:
        m = len(s) // per_ms
        return np.abs(s[:m * per_ms]).reshape(m, per_ms).mean(axis=1)

    a, b = env(x), env(y)
    best, best_lag = -2.0, 0
    for lag in range(0, 200):
        if len(b) - lag < 100:
            break
        c = float(np.corrcoef(a[:len(a) - lag], b[lag:])[0, 1])
        if c > best:
            best, best_lag = c, lag
    return float(best_lag)


async def _connect(a: CallPeer, b: CallPeer, relay: ImpairmentRelay) -> None:
    offer = await b.create_offer()
    answer = await a.accept_offer(relay.rewrite(offer, "b"))
    await b.accept_answer(relay.rewrite(answer, "a"))
    await asyncio.gather(a.wait_open(), b.wait_open())


def _budget(trace: FrameTrace, source: _SourceTrack, codec: Codec, align: int,
            receiver_resample_s: float, codec_ms: float, bursts: list[tuple[int, int]]
            ) -> dict[str, float]:
    """Mean milliseconds per stage over the frames traced end to end whose first sample lies
    in a speech burst (``bursts``: 48 kHz sample ranges), the frames the measured total is
    about."""
    info = codec.info
    per_frame = round(info.frame_ms * RATE / 1000)
    shift = align * RATE / info.input_sample_rate  # 48 kHz samples the grid is shifted by
    hand = np.asarray(source.handover)
    rows: dict[str, list[float]] = {k: [] for k in STAGES_OUT}
    for f in trace.complete_frames():
        i = f * per_frame - shift
        k = int(np.floor(i / PTIME))
        if not 0 <= k < len(hand) or not any(a <= i < b for a, b in bursts):
            continue
        mouth = hand[k] + (i - k * PTIME) / RATE
        t = trace.get(f)
        rows["capture_framing"].append(t["complete"] - mouth - shift / RATE)
        rows["encode"].append(t["encoded"] - t["complete"])
        rows["packetise_send"].append(t["sent"] - t["encoded"])
        rows["network"].append(t["arrived"] - t["sent"])
        rows["jitter_wait"].append(t["decode"] - t["arrived"])
        rows["decode"].append(t["decoded"] - t["decode"])
        rows["output_queue"].append(t["played"] - t["queued"] - receiver_resample_s)
        rows["resampling"].append(shift / RATE + receiver_resample_s)
        rows["codec_algorithmic"].append(codec_ms / 1000)
    return {k: round(1000 * float(np.mean(v)), 1) if v else float("nan")
            for k, v in rows.items()}


START_FRAMES = 25
"""Frames (2 s) counted as the call's start in ``concealed_at_start``: before the first loss
reports are back, the sender's K and duplicates and the receiver's delay target are still at
their start values."""


async def measure_latency(codec: Codec, bursts: int = 60, *, loss: float = 0.0,
                          delay_ms: float = 0.0, jitter_ms: float = 0.0,
                          jitter: JitterConfig | None = None, redundancy: int = 1,
                          adaptive: bool = True, codec_ms: float | None = None,
                          seed: int = 0, trace: FrameTrace | None = None) -> dict[str, Any]:
    """Mouth-to-ear latency and its budget over a real call (see the module docstring)."""
    signal, onsets = speech_bursts(bursts)
    source = _SourceTrack(signal)
    trace = trace if trace is not None else FrameTrace()
    if codec_ms is None:
        codec_ms = codec_delay_ms(codec)
    options = CallOptions(redundancy=redundancy, adaptive=adaptive,
                          jitter=jitter or JitterConfig())
    with loopback_candidates():
        relay = ImpairmentRelay(NetworkConditions(loss=loss_model(loss), delay_ms=delay_ms,
                                                  jitter_ms=jitter_ms),
                                NetworkConditions(delay_ms=delay_ms), seed=seed)
        await relay.start()
        alice = CallPeer(codec, options, source=source, name="alice", trace=trace)
        bob = CallPeer(codec, options, name="bob", trace=trace)
        ear_t: list[np.ndarray] = []
        ear_x: list[np.ndarray] = []
        try:
            await _connect(alice, bob, relay)
            relay.impair(True)
            deadline = time.monotonic() + len(signal) / RATE + 10
            quiet_since: float | None = None
            while time.monotonic() < deadline:
                try:
                    frame = await bob.track.recv()
                except MediaStreamError:
                    break
                now = time.monotonic()
                x = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768
                ear_t.append(now + np.arange(len(x)) / RATE)
                ear_x.append(x)
                if alice.sender is not None and alice.sender.finished.is_set():
                    quiet_since = quiet_since or now
                    if now - quiet_since > 1.0:
                        break
            sender = alice.sender
            align = sender.align_samples or 0 if sender is not None else 0
            stats = bob.track.stats()
            sent_frames = sender.stats.frames if sender is not None else 0
            k_now = sender.stats.redundancy if sender is not None else 0
            resample_s = bob.track.resampler_delay_s
        finally:
            await alice.close()
            await bob.close()
            relay.close()
    mouth = _mouth_axis(source)
    lags = envelope_lags(mouth, (np.concatenate(ear_t), np.concatenate(ear_x)),
                         [float(mouth[0][o]) for o in onsets])
    found = [x for x in lags if x is not None]
    n_burst = int(0.5 * RATE)
    budget = _budget(trace, source, codec, align, resample_s, codec_ms,
                     [(o, o + n_burst) for o in onsets])
    # concealment within the stream: frames given up (handed to the decoder before any copy of
    # them arrived) plus stretches; ticks after the last frame (an END packet lost) do not count
    lost = at_start = 0
    for f in range(sent_frames):
        t = trace.get(f)
        if "decode" in t and ("arrived" not in t or t["arrived"] > t["decode"]):
            lost += 1
            at_start += f < START_FRAMES
    stretched = sum(c for f, c in trace.stretches.items() if f < sent_frames)
    at_start += sum(c for f, c in trace.stretches.items() if f < min(sent_frames, START_FRAMES))
    concealed = (lost + stretched) / max(1, sent_frames)
    return {"codec": codec.info.name, "bursts": bursts, "detected": len(found),
            **_percentiles(found),
            "breakdown_ms": budget,
            "breakdown_sum_ms": round(sum(v for v in budget.values() if v == v), 1),
            "concealed_fraction": round(concealed, 4),
            "concealed_frames": lost + stretched, "concealed_at_start": at_start,
            "frames_sent": sent_frames,
            "frames_played": stats["frames_played"],
            "recovered_from_redundancy": stats["recovered_from_redundancy"],
            "late": stats["late"], "target_delay_ms": stats["target_delay_ms"],
            "redundancy_k_end": k_now,
            "network": {"loss": loss, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                        "seed": seed}}


async def measure_bitrates(codec: Codec) -> list[dict[str, Any]]:
    """Packet and wire kbit/s for 1, 2, 3 frames per packet and K = 0..3 (fixed)."""
    import tempfile

    rows = []
    scratch = tempfile.mkdtemp(prefix="voip-codec-bench-")
    for fpp in (1, 2, 3):
        for k in range(4):
            options = CallOptions(frames_per_packet=fpp, redundancy=k, adaptive=False)
            r = await run_demo(SAMPLE_SPEECH, f"{scratch}/out.wav", codec, options=options,
                               delay_ms=5.0)
            rows.append({"frames_per_packet": fpp, "redundancy": k,
                         "codec_kbps": round(codec.info.bitrate / 1000, 3),
                         "packet_kbps": r.wire["packet_kbps"],
                         "wire_kbps_forward": r.wire["forward_wire_kbps"],
                         "wire_kbps_back": r.wire["reverse_wire_kbps"]})
    return rows

CONDITIONS: dict[str, dict[str, float]] = {
    "clean": {"loss": 0.0, "delay_ms": 0.0, "jitter_ms": 0.0},
    "loss10_jitter": {"loss": 0.10, "delay_ms": 20.0, "jitter_ms": 10.0},
}
"""Network conditions of ``bench call``: a clean loopback, and 10% random loss with 20 ms delay
plus half-normal jitter of scale 10 ms (20 +- 10 ms), forward direction."""

DEFAULT_CODECS: tuple[str, ...] = ("focalcodec-default", "codec2-700c", "opus-6k")


def render_markdown(result: dict[str, Any]) -> str:
    """The README's latency paragraph and table, generated from ``bench call --json`` output."""
    m, det = result["machine"], result["detector_check"]
    lines = [
        f"Mouth-to-ear latency over real aiortc calls on 127.0.0.1 (`voip-codec bench call`, "
        f"{m['cpus']} cores, load average {m['load_1min']} at the start and "
        f"{m.get('load_1min_end', '?')} at the end, {m['torch_threads']} torch thread). "
        f"The detector, checked on a {det['known_ms']:g} ms delay line that bypasses codec "
        f"and call, measured p50 {det['latency_ms_p50']} ms. Budget: mean ms per stage; "
        "`sum` is their total, to compare with the measured mean.",
        "",
        "| codec | network | p50 ms | p95 ms | mean ms | concealed (first 2 s) | framing | "
        "encode | send "
        "| network | jitter wait | decode | output queue | resampling | codec | sum |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    names = {"clean": "clean loopback", "loss10_jitter": "10% loss, 20 +- 10 ms"}
    for lat in result["latency"]:
        b = lat["breakdown_ms"]
        lines.append(
            f"| {lat['codec']} | {names.get(lat['condition'], lat['condition'])} | "
            f"{lat['latency_ms_p50']} | {lat['latency_ms_p95']} | {lat['latency_ms_mean']} | "
            f"{100 * lat['concealed_fraction']:.1f}% ({lat['concealed_frames']} of "
            f"{lat['frames_sent']}; {lat.get('concealed_at_start', '?')}) | "
            + " | ".join(str(b[k]) for k in STAGES_OUT) + f" | {lat['breakdown_sum_ms']} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``voip-codec bench call``."""
    import os

    from voip_codec.codecs.registry import get_codec
    from voip_codec.threads import apply_threads

    if args.from_json:
        from voip_codec.errors import UserError

        try:
            with open(args.from_json, encoding="utf-8") as f:
                print(render_markdown(json.load(f)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"cannot render {args.from_json}: {exc!s} (expected the output of "
                            "`voip-codec bench call --json`)") from None
        return 0
    names = args.codecs or ([args.codec] if args.codec else list(DEFAULT_CODECS))
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch_threads": args.threads},
        "detector_check": asyncio.run(measure_detector()),
        "latency": []}
    for name in names:
        codec = get_codec(name)
        apply_threads(args.threads)
        codec_ms = codec_delay_ms(codec)
        for cond in args.conditions:
            for d in args.playout_delay:
                c = CONDITIONS[cond]
                row = asyncio.run(measure_latency(
                    codec, args.bursts, loss=c["loss"], delay_ms=c["delay_ms"],
                    jitter_ms=c["jitter_ms"], jitter=jitter_config(d), codec_ms=codec_ms))
                result["latency"].append({"condition": cond, "playout_delay_ms": d, **row})
        if not args.no_bitrates:
            result.setdefault("bitrates", {})[name] = asyncio.run(measure_bitrates(codec))
    result["machine"]["load_1min_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if args.markdown:
        print(render_markdown(result))
        return 0
    det = result["detector_check"]
    print(f"detector check: delay line of {det['known_ms']:g} ms measured p50 "
          f"{det['latency_ms_p50']} ms ({det['detected']}/{det['bursts']} bursts)")
    for lat in result["latency"]:
        print(f"{lat['codec']:20s} {lat['condition']:14s} mouth-to-ear p50 "
              f"{lat['latency_ms_p50']} ms, p95 {lat['latency_ms_p95']} ms, mean "
              f"{lat['latency_ms_mean']} ms ({lat['detected']}/{lat['bursts']} bursts); "
              f"concealed {lat['concealed_fraction']:.1%}")
        print("    budget (mean ms): " + ", ".join(f"{k} {v}" for k, v in
                                                 lat["breakdown_ms"].items())
              + f"; sum {lat['breakdown_sum_ms']}")
    for name, rows in result.get("bitrates", {}).items():
        print(f"{name}: frames/packet  K  codec kbps  packet kbps  wire kbps fwd  wire kbps back")
        for r in rows:
            print(f"{r['frames_per_packet']:13d} {r['redundancy']:2d} {r['codec_kbps']:10.2f} "
                  f"{r['packet_kbps']:12.2f} {r['wire_kbps_forward']:14.2f} "
                  f"{r['wire_kbps_back']:15.2f}")
    return 0
