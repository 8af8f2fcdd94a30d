"""Deterministic in-memory call simulation: audio -> encoder -> packets -> network -> jitter
buffer -> decoder -> audio.

Timing model (all times in seconds on one simulated clock, frame period ``T``):

* frame ``i`` covers capture time ``[i*T, (i+1)*T)``; it is encoded at ``(i+1)*T`` and, when its
  bundle is complete, sent at once (encoding time is not modelled);
* the forward path is a :class:`~voip_codec.transport.netsim.NetworkSimulator`;
* the receiver's playout clock ticks at ``k*T + tick_offset``; before each tick every datagram
  that has arrived by then is pushed into the jitter buffer, then exactly one frame is decoded;
* with adaptive redundancy the receiver sends a loss report every ``report_interval`` ticks over
  a reverse path (fixed delay, no loss) and the sender's controller sets K for later packets.

The output starts with the first tick that plays a frame and is exactly as long as the input
(converted to the output rate): frames before the first one received are silence, and ticks
continue until every input frame's slot has been produced.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from ..codecs.base import Codec, FrameDecoder
from ..packet import LossReport
from .jitter import FrameSource, JitterBuffer, JitterConfig, JitterStats
from .netsim import NetworkConditions, NetworkSimulator, NetworkStats
from .packetizer import Packetizer
from .redundancy import LossStatistics, RedundancyController

__all__ = ["SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    """Outcome of :func:`simulate`."""

    audio: np.ndarray
    """Decoded float32 mono audio, shape ``(n,)`` at ``sample_rate``; ``n`` is the input length
    converted to the output rate."""
    sample_rate: int
    """Output sample rate in Hz."""
    frame_ms: float
    """Codec frame duration in milliseconds."""
    frames: int
    """Number of 80 ms (codec) frames in the input (last one zero-padded)."""
    sources: list[FrameSource]
    """What each output frame came from (``frames`` entries; frames never received before
    playout started are ``BUFFERING``)."""
    jitter: JitterStats
    """Jitter buffer counters at the end."""
    network: NetworkStats
    """Forward-path counters."""
    packets_sent: int
    """Audio packets sent."""
    payload_bytes_sent: int
    """Bytes of audio packets sent (our headers included, transport headers not)."""
    redundancy_per_packet: list[int] = field(default_factory=list)
    """K used for each packet sent."""
    reports: list[LossReport] = field(default_factory=list)
    """Loss reports the receiver sent."""

    @property
    def concealed_frames(self) -> int:
        """Output frames produced by concealment (lost or stretched)."""
        return sum(s in (FrameSource.CONCEALED, FrameSource.STRETCH) for s in self.sources)

    @property
    def concealed_fraction(self) -> float:
        """``concealed_frames / frames``."""
        return self.concealed_frames / self.frames if self.frames else 0.0

    @property
    def bitrate_bps(self) -> float:
        """Packet bytes per second of input audio, in bits per second."""
        seconds = self.frames * self.frame_ms / 1000.0
        return self.payload_bytes_sent * 8 / seconds if seconds else 0.0


def simulate(
    pcm: np.ndarray,
    codec: Codec,
    *,
    network: NetworkConditions | None = None,
    seed: int = 0,
    frames_per_packet: int = 1,
    redundancy: int = 0,
    adaptive: RedundancyController | None = None,
    jitter: JitterConfig | None = None,
    report_interval: int = 12,
    reverse_delay_ms: float = 40.0,
    tick_offset_ms: float = 0.0,
    vad_threshold_dbfs: float | None = None,
    decoder: FrameDecoder | None = None,
) -> SimulationResult:
    """Run one simulated one-way call.

    Args:
        pcm: float32 mono input at ``codec.info.input_sample_rate``, shape ``(n,)``.
        codec: the codec (a fresh encoder and decoder are made for this call).
        network: forward-path impairments (default: 40 ms delay, nothing else).
        seed: seed of the network simulator.
        frames_per_packet: new frames bundled per packet (1..16).
        redundancy: fixed K (0..3); the initial K when ``adaptive`` is given.
        adaptive: a controller that updates K from the receiver's loss reports (reports are
            generated either way and returned in the result).
        jitter: jitter buffer settings (its ``frame_ms`` is replaced by the codec's).
        report_interval: ticks between loss reports (12 = 0.96 s).
        reverse_delay_ms: delay of the (lossless) report path.
        tick_offset_ms: phase of the receiver's playout clock against the sender's frames.
        vad_threshold_dbfs: frames whose RMS is below this are flagged as silence (the jitter
            buffer may drop them to shrink its delay, which shifts the timing of later frames);
            None (default) disables the flag.
        decoder: use this decoder instead of ``codec.new_decoder()`` (e.g. another concealer).

    Returns:
        A :class:`SimulationResult` whose audio has exactly the input's duration.

    Raises:
        ValueError: bad arguments (not mono, bad K or bundle size).
    """
    info = codec.info
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"pcm must be mono with shape (n,), got {x.shape}")
    if report_interval < 1:
        raise ValueError(f"report_interval must be >= 1 tick, got {report_interval}")
    period = info.frame_ms / 1000.0
    n_in = info.input_frame_samples
    n_frames = max(1, math.ceil(x.shape[0] / n_in))
    padded = np.zeros(n_frames * n_in, dtype=np.float32)
    padded[:x.shape[0]] = x
    out_len = round(x.shape[0] * info.output_sample_rate / info.input_sample_rate)

    jcfg = jitter if jitter is not None else JitterConfig()
    jcfg = JitterConfig(**{**jcfg.__dict__, "frame_ms": info.frame_ms,
                           "codec_id": info.codec_id, "frame_bytes": info.bytes_per_frame})
    encoder = codec.new_encoder()
    dec = decoder if decoder is not None else codec.new_decoder()
    packetizer = Packetizer(info.codec_id, frames_per_packet,
                            adaptive.k if adaptive is not None else redundancy)
    net = NetworkSimulator(network, seed=seed)
    buffer = JitterBuffer(jcfg)
    loss_stats = LossStatistics()
    vad_level = None if vad_threshold_dbfs is None else 10.0 ** (vad_threshold_dbfs / 20.0)

    arrivals: list[tuple[float, int, bytes]] = []  # heap of (time, order, datagram)
    reports_in_flight: list[tuple[float, LossReport]] = []
    order = 0
    k_used: list[int] = []
    reports: list[LossReport] = []
    out_frames: list[np.ndarray] = []
    sources: list[FrameSource] = []
    silence = np.zeros(info.output_frame_samples, dtype=np.float32)
    last_send = n_frames * period
    give_up = last_send + jcfg.max_delay_ms / 1000 + 10.0
    tick = 0
    sent = 0
    while len(out_frames) < n_frames:
        now = tick * period + tick_offset_ms / 1000.0
        # Sender: every frame captured by now is encoded and, bundle permitting, sent.
        while sent < n_frames and (sent + 1) * period <= now + 1e-9:
            if adaptive is not None:
                while reports_in_flight and reports_in_flight[0][0] <= (sent + 1) * period:
                    packetizer.redundancy = adaptive.on_report(reports_in_flight.pop(0)[1])
            frame = padded[sent * n_in:(sent + 1) * n_in]
            quiet = vad_level is not None and float(np.sqrt(np.mean(frame ** 2))) < vad_level
            data = packetizer.push(encoder.encode(frame), silence=quiet)
            if data is None and sent == n_frames - 1:
                data = packetizer.flush()
            sent += 1
            if data is not None:
                k_used.append(packetizer.last_redundancy)
                for when, datagram in net.send(sent * period, data):
                    heapq.heappush(arrivals, (when, order, datagram))
                    order += 1
        # Receiver: deliver what has arrived, then one playout tick.
        while arrivals and arrivals[0][0] <= now + 1e-9:
            when, _, datagram = heapq.heappop(arrivals)
            packet = buffer.push(datagram, when)
            if packet is not None:
                loss_stats.on_packet(packet.seq)
        played = buffer.tick(now)
        tick += 1
        if played.source is FrameSource.BUFFERING:
            if now > give_up:
                out_frames.append(silence)
                sources.append(FrameSource.BUFFERING)
            continue
        if not out_frames and played.index is not None and played.index > 0:
            lead = min(played.index, n_frames)
            out_frames.extend([silence] * lead)
            sources.extend([FrameSource.BUFFERING] * lead)
            if len(out_frames) >= n_frames:
                break
        out_frames.append(dec.decode(played.payload))
        sources.append(played.source)
        loss_stats.on_tick(played.payload is None)
        if tick % report_interval == 0:
            report = loss_stats.make_report(buffer.stats.jitter_ms, buffer.stats.current_delay_ms)
            if report is not None:
                reports.append(report)
                if adaptive is not None:
                    reports_in_flight.append((now + reverse_delay_ms / 1000.0, report))
    audio = np.concatenate(out_frames[:n_frames])[:out_len].astype(np.float32)
    if audio.shape[0] < out_len:
        audio = np.pad(audio, (0, out_len - audio.shape[0]))
    return SimulationResult(
        audio=audio, sample_rate=info.output_sample_rate, frame_ms=info.frame_ms,
        frames=n_frames,
        sources=sources[:n_frames], jitter=buffer.stats, network=net.stats,
        packets_sent=packetizer.packets, payload_bytes_sent=packetizer.bytes,
        redundancy_per_packet=k_used, reports=reports)
