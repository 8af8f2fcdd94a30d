"""A long call on an accelerated clock: the real Send/ReceiveSession pair over a MemoryLink.

The input is eval speech with pauses, looped to the call length and generated frame by frame
(the hour is never held in memory). The forward path has bursty (Gilbert-Elliott) loss, jitter,
reordering and one outage in the middle (every datagram sent during it is lost); loss reports
travel back over a clean path and drive adaptive redundancy, as in a real call. The loop is the
one of :func:`voip_codec.transport.pipeline.simulate`: capture, encode and send each frame at its
time, deliver what has arrived, one playout tick per frame period.

Figures: output frames against input frames (must be equal), what each output frame came from,
the concealed fraction (whole call and outside the outage), the resync time (outage end to the
first frame played from a packet again), and RSS sampled every simulated minute.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LongCallResult", "rss_mb", "run_long_call", "speech_loop"]


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of process ``pid`` (default: this one) in MiB (Linux ``/proc``; 0
    where unavailable)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@dataclass
class LongCallResult:
    """Figures of one long simulated call."""

    codec: str
    call_seconds: float
    outage_seconds: float
    input_frames: int
    output_frames: int
    sources: dict[str, int]
    concealed_fraction: float
    """Concealed or stretched output frames over input frames (whole call)."""
    concealed_fraction_outside_outage: float
    """The same, leaving out the frames sent during the outage."""
    resync_seconds: float | None
    """Outage end to the first frame played from a packet again (None: never)."""
    network: dict[str, int]
    redundancy_mean: float
    """Mean K (redundant copies per packet) chosen by the adaptive controller."""
    rss_mb: list[float] = field(default_factory=list)
    """RSS sampled every simulated minute."""
    wall_seconds: float = 0.0

    @property
    def exact_length(self) -> bool:
        """Output frames == input frames."""
        return self.output_frames == self.input_frames

    @property
    def rss_growth_mb(self) -> float:
        """Largest RSS after the first minute minus the RSS at the first minute."""
        if len(self.rss_mb) < 2:
            return 0.0
        return max(self.rss_mb[1:]) - self.rss_mb[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "codec": self.codec, "call_seconds": self.call_seconds,
            "outage_seconds": self.outage_seconds, "input_frames": self.input_frames,
            "output_frames": self.output_frames, "exact_length": self.exact_length,
            "sources": self.sources,
            "concealed_fraction": round(self.concealed_fraction, 4),
            "concealed_fraction_outside_outage": round(
                self.concealed_fraction_outside_outage, 4),
            "resync_seconds": None if self.resync_seconds is None else round(
                self.resync_seconds, 3),
            "network": self.network, "redundancy_mean": round(self.redundancy_mean, 3),
            "rss_first_minute_mb": round(self.rss_mb[0], 1) if self.rss_mb else None,
            "rss_growth_mb": round(self.rss_growth_mb, 2),
            "rss_samples": len(self.rss_mb),
            "speed_x_realtime": round(self.call_seconds / self.wall_seconds, 1)
            if self.wall_seconds else None,
        }


def speech_loop(clip_dir: Path | None, seconds: float = 120.0, pause_s: float = 1.5
                 ) -> np.ndarray:
    """About ``seconds`` of eval speech with ``pause_s`` of silence after each clip (16 kHz);
    a synthetic voiced signal when no clip folder is given."""
    if clip_dir is None:
        t = np.arange(int(seconds * 16000)) / 16000
        env = (np.sin(2 * np.pi * 0.4 * t) > -0.3).astype(np.float32)
        return (0.2 * env * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    from .harness import load_clips

    parts: list[np.ndarray] = []
    total = 0
    for clip in load_clips(clip_dir, max_clips=24):
        parts += [clip.pcm, np.zeros(int(pause_s * 16000), dtype=np.float32)]
        total += parts[-2].shape[0] + parts[-1].shape[0]
        if total >= seconds * 16000:
            break
    return np.concatenate(parts).astype(np.float32)


def run_long_call(codec_name: str, seconds: float, *, outage_s: float = 30.0,
                  loss: float = 0.05, burst: float = 3.0, delay_ms: float = 14.0,
                  jitter_ms: float = 20.0, reorder: float = 0.02, seed: int = 0,
                  clip_dir: Path | None = None) -> LongCallResult:
    """Run one long call.

    Args:
        codec_name: registry name of the codec.
        seconds: call length (simulated).
        outage_s: length of the outage centred in the call (0: none).
        loss: mean packet loss rate (bursty).
        burst: mean loss burst length in packets.
        delay_ms: fixed one-way delay; with the half-normal ``jitter_ms`` on top the mean delay
            is ``delay_ms + 0.8 * jitter_ms`` (30 ms by default), its standard deviation
            ``0.6 * jitter_ms``.
        jitter_ms: scale of the half-normal jitter.
        reorder: probability that a datagram is held back 100 ms (reordered).
        seed: network seed.
        clip_dir: eval speech folder (None: a synthetic voiced signal).

    Returns:
        The figures.
    """
    from voip_codec.codecs.registry import get_codec
    from voip_codec.transport.jitter import FrameSource
    from voip_codec.transport.link import memory_link_pair
    from voip_codec.transport.netsim import GilbertElliottLoss, NetworkConditions, NetworkSimulator
    from voip_codec.transport.redundancy import RedundancyController
    from voip_codec.transport.session import ReceiveSession, SendSession

    codec = get_codec(codec_name)
    info = codec.info
    period = info.frame_ms / 1000.0
    n_in = info.input_frame_samples
    n_frames = int(round(seconds / period))
    source = speech_loop(clip_dir)
    outage_start = (n_frames * period - outage_s) / 2
    outage_end = outage_start + outage_s

    class _OutagePath(NetworkSimulator):
        """The forward path, plus: every datagram sent during the outage is lost."""

        outage_lost = 0

        def send(self, send_time: float, data: bytes) -> list[tuple[float, bytes]]:
            if outage_start <= send_time < outage_end:
                self.outage_lost += 1
                return []
            return super().send(send_time, data)

    conditions = NetworkConditions(loss=GilbertElliottLoss(loss, burst), delay_ms=delay_ms,
                                   jitter_ms=jitter_ms, reorder_prob=reorder)
    tx_link, rx_link = memory_link_pair(None, NetworkConditions(delay_ms=30.0), seed=seed)
    path = _OutagePath(conditions, seed=seed)
    tx_link.path = path
    clock = tx_link.clock
    sender = SendSession(info, codec.new_encoder(), tx_link, controller=RedundancyController(),
                         name="long-call-send")
    receiver = ReceiveSession(info, codec.new_decoder(), rx_link, name="long-call-receive")
    tx_link.set_receiver(sender.on_datagram)
    rx_link.set_receiver(lambda data: receiver.on_datagram(data, clock.now))

    sources: Counter[str] = Counter()
    out_frames = 0
    concealed_outside = 0
    outage_frames = 0
    k_total = 0
    resync: float | None = None
    rss: list[float] = []
    next_rss = 60.0
    give_up = n_frames * period + 30.0
    tick = 0
    sent = 0
    started = False
    start = time.perf_counter()
    while out_frames < n_frames:
        now = tick * period
        while sent < n_frames and (sent + 1) * period <= now + 1e-9:
            tx_link.deliver((sent + 1) * period)
            pos = (sent * n_in) % (source.shape[0] - n_in)
            frame = sender.encode_frame(source[pos:pos + n_in])
            packets = sender.stats.packets
            sender.send_frame(frame, end=sent == n_frames - 1)
            if sender.stats.packets > packets:
                k_total += sender.packetizer.last_redundancy
            sent += 1
        rx_link.deliver(now)
        played = receiver.tick(now)
        tick += 1
        if now >= next_rss:
            rss.append(rss_mb())
            next_rss += 60.0
        if played.source is FrameSource.BUFFERING:
            if now > give_up:
                out_frames += 1
                sources["buffering"] += 1
            continue
        if not started and played.index is not None and played.index > 0:
            lead = min(played.index, n_frames)
            out_frames += lead
            sources["buffering"] += lead
        started = True
        if out_frames >= n_frames:
            break
        if played.source is not FrameSource.ENDED:
            receiver.decode(played)
        sources[played.source.value] += 1
        out_frames += 1
        in_outage = (played.index is not None
                     and outage_start <= (played.index + 1) * period < outage_end)
        outage_frames += in_outage
        concealed = played.source in (FrameSource.CONCEALED, FrameSource.STRETCH)
        if concealed and not in_outage and not (outage_s and outage_start <= now < outage_end):
            concealed_outside += 1
        if (resync is None and outage_s and now >= outage_end
                and played.source in (FrameSource.PRIMARY, FrameSource.REDUNDANT)):
            resync = now - outage_end
    wall = time.perf_counter() - start
    concealed_all = sources["concealed"] + sources["stretch"]
    stats = path.stats
    network = {"sent": stats.sent + path.outage_lost, "lost": stats.lost,
               "outage_lost": path.outage_lost, "reordered": stats.reordered,
               "delivered": stats.delivered}
    return LongCallResult(
        codec=codec_name, call_seconds=n_frames * period, outage_seconds=outage_s,
        input_frames=n_frames, output_frames=out_frames, sources=dict(sources),
        concealed_fraction=concealed_all / n_frames,
        concealed_fraction_outside_outage=concealed_outside / max(1, n_frames - outage_frames),
        resync_seconds=resync, network=network,
        redundancy_mean=k_total / max(1, sender.stats.packets), rss_mb=rss, wall_seconds=wall)
