"""Mouth-to-ear latency and wire bitrates of real aiortc calls on 127.0.0.1.

Latency: a source track emits silence with a short 1 kHz burst every ``period_s``; the time at
which the source hands a burst's first frame to the sender is its "mouth" time; the time at
which the receiving track returns the first 20 ms frame whose level rises above a threshold is
its "ear" time. Both peers run in one process on one monotonic clock, so the difference is the
mouth-to-ear latency: 80 ms of frame capture, encoding, the link, the jitter buffer and the
receiver's 20 ms pacing.

Bitrates: the bundled speech sample is sent with fixed K and frames per packet; packet bytes are
counted at the sender, wire bytes (IPv4) at the relay in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import time
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voip_codec.codecs.base import Codec
from voip_codec.transport.jitter import JitterConfig
from voip_codec.transport.netsim import NetworkConditions
from voip_codec.webrtc.call import CallOptions, CallPeer, run_demo
from voip_codec.webrtc.commands import SAMPLE_SPEECH, default_codec_name, jitter_config
from voip_codec.webrtc.contrib.loopback import loopback_candidates
from voip_codec.webrtc.contrib.relay import ImpairmentRelay

__all__ = ["measure_bitrates", "measure_latency"]

class _MarkerTrack(MediaStreamTrack):
    """48 kHz mono, 20 ms frames, paced in real time; a 1 kHz burst every ``period`` frames."""

    kind = "audio"

    def __init__(self, bursts: int, period: int = 30, burst_frames: int = 3) -> None:
        super().__init__()
        self.period, self.burst_frames, self.total = period, burst_frames, bursts * period
        self.index = 0
        self.t0: float | None = None
        self.mouth: list[float] = []

    async def recv(self) -> av.AudioFrame:
        if self.index >= self.total:
            raise MediaStreamError
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        wait = self.t0 + self.index * 0.02 - now
        if wait > 0:
            await asyncio.sleep(wait)
        phase = self.index % self.period
        t = np.arange(960) / 48000
        if 2 <= phase < 2 + self.burst_frames:
            pcm = 0.5 * np.sin(2 * np.pi * 1000 * (t + self.index * 0.02))
            if phase == 2:
                self.mouth.append(time.monotonic())
        else:
            pcm = np.zeros(960)
        frame = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48000, self.index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.index += 1
        return frame

async def _connect(a: CallPeer, b: CallPeer, relay: ImpairmentRelay) -> None:
    offer = await b.create_offer()
    answer = await a.accept_offer(relay.rewrite(offer, "b"))
    await b.accept_answer(relay.rewrite(answer, "a"))
    await asyncio.gather(a.wait_open(), b.wait_open())

async def measure_latency(codec: Codec, bursts: int = 12, delay_ms: float = 0.0,
                          jitter_ms: float = 0.0, jitter: JitterConfig | None = None
                          ) -> dict[str, Any]:
    """Mouth-to-ear latency over a real call (see the module docstring)."""
    source = _MarkerTrack(bursts)
    with loopback_candidates():
        relay = ImpairmentRelay(NetworkConditions(delay_ms=delay_ms, jitter_ms=jitter_ms),
                                NetworkConditions(delay_ms=delay_ms))
        await relay.start()
        alice = CallPeer(codec, CallOptions(redundancy=0, adaptive=False), source=source)
        bob = CallPeer(codec, CallOptions(redundancy=0, adaptive=False,
                                          jitter=jitter or JitterConfig()))
        try:
            await _connect(alice, bob, relay)
            relay.impair(True)
            ear: list[float] = []
            level_prev = 0.0
            deadline = time.monotonic() + bursts * 0.6 + 5
            while time.monotonic() < deadline and len(ear) < bursts:
                try:
                    frame = await bob.track.recv()
                except MediaStreamError:
                    break
                x = frame.to_ndarray().astype(np.float32).reshape(-1) / 32768
                level = float(np.sqrt(np.mean(x ** 2)))
                if level > 0.05 and level_prev <= 0.05:
                    ear.append(time.monotonic())
                level_prev = level
        finally:
            await alice.close()
            await bob.close()
            relay.close()
    pairs = []
    for m in source.mouth:  # each ear event belongs to the latest mouth event before it
        later = [e for e in ear if e > m]
        if later:
            pairs.append((later[0] - m) * 1000)
    lat = np.array(pairs)
    return {"codec": codec.info.name, "markers": len(source.mouth), "detected": len(pairs),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
            "link_delay_ms": delay_ms}

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

def run(args: argparse.Namespace) -> int:
    """``voip-codec bench call``."""
    from voip_codec.codecs.registry import get_codec

    codec = get_codec(args.codec or default_codec_name())
    result: dict[str, Any] = {"latency": [
        {"playout_delay_ms": d,
         **asyncio.run(measure_latency(codec, args.bursts, jitter=jitter_config(d)))}
        for d in args.playout_delay]}
    if not args.no_bitrates:
        result["bitrates"] = asyncio.run(measure_bitrates(codec))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for lat in result["latency"]:
        print(f"mouth-to-ear latency on loopback ({lat['codec']}, playout delay "
              f"{lat['playout_delay_ms']:g} ms, {lat['detected']}/{lat['markers']} markers): "
              f"p50 {lat['latency_ms_p50']} ms, p95 {lat['latency_ms_p95']} ms")
    if "bitrates" in result:
        print("frames/packet  K  codec kbps  packet kbps  wire kbps fwd  wire kbps back")
        for r in result["bitrates"]:
            print(f"{r['frames_per_packet']:13d} {r['redundancy']:2d} {r['codec_kbps']:10.2f} "
                  f"{r['packet_kbps']:12.2f} {r['wire_kbps_forward']:14.2f} "
                  f"{r['wire_kbps_back']:15.2f}")
    return 0
