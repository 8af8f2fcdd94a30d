"""Deterministic in-memory call simulation: audio -> encoder -> packets -> network -> jitter
buffer -> decoder -> audio.

Timing model (all times in seconds on one simulated clock, frame period ``T``):

* frame ``i`` covers capture time ``[i*T, (i+1)*T)``; it is encoded at ``(i+1)*T`` and, when its
  bundle is complete, sent at once (encoding time is not modelled); the last frame goes out
  flagged ``END``;
* a :class:`~voip_codec.transport.session.SendSession` and a
  :class:`~voip_codec.transport.session.ReceiveSession` (the same pair the aiortc tracks use)
  talk over a :func:`~voip_codec.transport.link.memory_link_pair`: the forward path is a
  :class:`~voip_codec.transport.netsim.NetworkSimulator`, the reverse path a fixed delay;
* the receiver's playout clock ticks at ``k*T + tick_offset``; before each tick every datagram
  that has arrived by then is handed to the receive session, then exactly one frame is played;
* the receiver sends a loss report every ``report_interval`` played frames; before encoding a
  frame the sender applies the reports that have arrived (with ``adaptive``, they set K);
* with ``dtx`` silent frames are left out (one keep-alive frame every ``keepalive_frames``); the
  receiver conceals the gaps like lost frames (the jitter buffer cannot tell them apart).

The output starts with the first tick that plays a frame and is exactly as long as the input
(converted to the output rate): frames before the first one received are silence, and ticks
continue until every input frame's slot has been produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..codecs.base import Codec, FrameDecoder
from ..wire.packet import LossReport
from .jitter import FrameSource, JitterConfig, JitterStats
from .link import memory_link_pair
from .netsim import NetworkConditions, NetworkStats
from .redundancy import RedundancyController
from .session import DEFAULT_VAD_DBFS, ReceiveSession, SendSession

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
    playout started are ``BUFFERING``, silence after the sender's last frame is ``ENDED``)."""
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
    dtx_frames: int = 0
    """Silent frames the sender left out (DTX)."""
    duplicates_sent: int = 0
    """Packets sent a second time (the controller asked for duplicates under loss)."""

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
    dtx: bool = False,
    keepalive_frames: int = 12,
    decoder: FrameDecoder | None = None,
) -> SimulationResult:
    """Run one simulated one-way call.

    Args:
        pcm: float32 mono input at ``codec.info.input_sample_rate``, shape ``(n,)``.
        codec: the codec (a fresh encoder and decoder are made for this call).
        network: forward-path impairments (default: 40 ms delay, nothing else).
        seed: seed of the network simulator.
        frames_per_packet: new frames bundled per packet (1..16).
        redundancy: fixed K (0..3); ignored when ``adaptive`` is given (its K is used).
        adaptive: a controller that updates K from the receiver's loss reports (reports are
            generated either way and returned in the result).
        jitter: jitter buffer settings (its ``frame_ms`` is replaced by the codec's).
        report_interval: played frames between loss reports (12 = 0.96 s).
        reverse_delay_ms: delay of the (lossless) report path.
        tick_offset_ms: phase of the receiver's playout clock against the sender's frames.
        vad_threshold_dbfs: frames whose RMS is below this are flagged as silence (the jitter
            buffer may drop them to shrink its delay, which shifts the timing of later frames);
            None (default) disables the flag, or uses ``DEFAULT_VAD_DBFS`` (-50) with ``dtx``.
        dtx: leave silent frames out, except one keep-alive frame every ``keepalive_frames``.
        keepalive_frames: DTX keep-alive interval in frames.
        decoder: use this decoder instead of ``codec.new_decoder()`` (e.g. another concealer).

    Returns:
        A :class:`SimulationResult` whose audio has exactly the input's duration.

    Raises:
        ValueError: bad arguments (not mono, bad K, bundle size or keep-alive interval).
    """
    info = codec.info
    x = np.asarray(pcm, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"pcm must be mono with shape (n,), got {x.shape}")
    period = info.frame_ms / 1000.0
    n_in = info.input_frame_samples
    n_frames = max(1, math.ceil(x.shape[0] / n_in))
    padded = np.zeros(n_frames * n_in, dtype=np.float32)
    padded[:x.shape[0]] = x
    out_len = round(x.shape[0] * info.output_sample_rate / info.input_sample_rate)
    if dtx and vad_threshold_dbfs is None:
        vad_threshold_dbfs = DEFAULT_VAD_DBFS

    tx_link, rx_link = memory_link_pair(
        network if network is not None else NetworkConditions(),
        NetworkConditions(delay_ms=reverse_delay_ms), seed=seed)
    clock = tx_link.clock
    sender = SendSession(info, codec.new_encoder(), tx_link,
                         frames_per_packet=frames_per_packet, redundancy=redundancy,
                         controller=adaptive, dtx=dtx, vad_threshold_dbfs=vad_threshold_dbfs,
                         keepalive_frames=keepalive_frames, name="simulate-send")
    receiver = ReceiveSession(info, decoder if decoder is not None else codec.new_decoder(),
                              rx_link, jitter=jitter, report_interval=report_interval,
                              name="simulate-receive")
    tx_link.set_receiver(sender.on_datagram)
    rx_link.set_receiver(lambda data: receiver.on_datagram(data, clock.now))

    k_used: list[int] = []
    reports: list[LossReport] = []
    out_frames: list[np.ndarray] = []
    sources: list[FrameSource] = []
    silence = np.zeros(info.output_frame_samples, dtype=np.float32)
    give_up = n_frames * period + receiver.buffer.config.max_delay_ms / 1000 + 10.0
    tick = 0
    sent = 0
    while len(out_frames) < n_frames:
        now = tick * period + tick_offset_ms / 1000.0
        # Sender: every frame captured by now is encoded and, bundle permitting, sent.
        while sent < n_frames and (sent + 1) * period <= now + 1e-9:
            tx_link.deliver((sent + 1) * period)  # reports that are back by then set K
            frame = sender.encode_frame(padded[sent * n_in:(sent + 1) * n_in])
            packets = sender.stats.packets
            sender.send_frame(frame, end=sent == n_frames - 1)
            if sender.stats.packets > packets:
                k_used.append(sender.packetizer.last_redundancy)
            sent += 1
        # Receiver: take what has arrived, then one playout tick.
        rx_link.deliver(now)
        reports_sent = receiver.reports_sent
        played = receiver.tick(now)
        if receiver.reports_sent > reports_sent and receiver.last_report is not None:
            reports.append(receiver.last_report)
        tick += 1
        if played.source is FrameSource.BUFFERING:
            if now > give_up:
                out_frames.append(silence)
                sources.append(FrameSource.BUFFERING)
            continue
        if played.source is FrameSource.ENDED:
            out_frames.append(silence)
            sources.append(FrameSource.ENDED)
            continue
        if not out_frames and played.index is not None and played.index > 0:
            lead = min(played.index, n_frames)
            out_frames.extend([silence] * lead)
            sources.extend([FrameSource.BUFFERING] * lead)
            if len(out_frames) >= n_frames:
                break
        out_frames.append(receiver.decode(played))
        sources.append(played.source)
    audio = np.concatenate(out_frames[:n_frames])[:out_len].astype(np.float32)
    if audio.shape[0] < out_len:
        audio = np.pad(audio, (0, out_len - audio.shape[0]))
    assert tx_link.path is not None
    return SimulationResult(
        audio=audio, sample_rate=info.output_sample_rate, frame_ms=info.frame_ms,
        frames=n_frames,
        sources=sources[:n_frames], jitter=receiver.buffer.stats, network=tx_link.path.stats,
        packets_sent=sender.stats.packets, payload_bytes_sent=sender.stats.payload_bytes,
        redundancy_per_packet=k_used, reports=reports, dtx_frames=sender.stats.dtx_frames,
        duplicates_sent=sender.stats.duplicates)
