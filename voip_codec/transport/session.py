"""The one send loop and the one receive loop, over any :class:`~voip_codec.transport.link.Link`.

::

    PCM frame -> SendSession.encode_frame -> SendSession.send_frame -> Link.send(bytes)
                 (codec, VAD)                (DTX, packetise, K copies,
                                              K from loss reports)
    Link receiver -> ReceiveSession.on_datagram(bytes, now)
                     (classify once: audio -> jitter buffer, loss report -> paired SendSession)
    ReceiveSession.poll(now) -> PlayoutFrame -> ReceiveSession.decode -> PCM frame
    (decode on arrival: a frame as soon as it is playable; concealment only when the output
     queue would run dry) -> ReceiveSession.output (PlayoutQueue) -> read n samples on demand
    (loss reports back through the link every N played frames)

A caller that plays one whole frame per frame period may call ``tick(now)`` instead of
``poll`` (the in-memory simulation does).

Both sessions are synchronous and never read a clock: the caller passes ``now`` (seconds, any
monotonic clock) and decides where the codec runs. ``encode_frame`` and ``decode`` touch only
the encoder or decoder, so an event loop can run them in a worker thread while it keeps feeding
datagrams and reports to the same session (this is what the aiortc tracks do).

:func:`read_datagram` (and its one-message form :func:`classify_datagram`) is the only place
that decides whether a datagram is audio, a loss report or garbage; garbage is counted in the
stats and dropped, never raised. Both packet versions are accepted; a ``SendSession`` writes the
compact version 2 unless told ``packet_version=1``, and a ``ReceiveSession`` paired with a
sending session piggybacks its loss reports on that session's version-2 audio packets instead
of sending packets of their own.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..codecs.base import CodecInfo, FrameDecoder, FrameEncoder
from ..wire.compact import COMPACT_MAX_HEADER_SIZE, CompactLossReport, WireReader
from ..wire.packet import (
    AUDIO_HEADER_SIZE,
    MAX_REDUNDANCY,
    AudioPacket,
    LossReport,
    PacketError,
)
from .jitter import FrameSource, JitterBuffer, JitterConfig, PlayoutFrame
from .link import Link
from .packetizer import PACKET_VERSIONS, Packetizer
from .playout import PlayoutQueue
from .redundancy import LossStatistics, RedundancyController
from .trace import FrameTrace

__all__ = [
    "DEFAULT_VAD_DBFS",
    "DUPLICATE_MAX_BYTES",
    "EncodedFrame",
    "ReceiveSession",
    "ReceiveStats",
    "SendSession",
    "SendStats",
    "classify_datagram",
    "read_datagram",
]

logger = logging.getLogger(__name__)

DEFAULT_VAD_DBFS = -50.0
"""Default voice-activity threshold: frames with a lower RMS level count as silence."""

TRIM_HOLDOFF_FRAMES = 25
"""Frames played after a stretch before :meth:`ReceiveSession.trim_output` shrinks the delay
again (2 s of 80 ms frames), so that growing and shrinking do not chase each other."""

DEFAULT_PACKET_VERSION = 2
"""Packet version a :class:`SendSession` writes unless told otherwise (2: compact)."""


DUPLICATE_MAX_BYTES = 256
"""Largest packet sent twice when the controller asks for duplicates. Duplicates are for the
low-rate codecs (a FocalCodec packet is 4-12 bytes, Codec2 700C 11-35), where a second copy
costs mostly headers; doubling a PCM or high-rate Opus stream would add real load to a path
that may be losing packets because it is congested."""


def read_datagram(data: bytes | bytearray | memoryview | str, reader: WireReader,
                  name: str = "session") -> tuple[AudioPacket | None, LossReport | None] | None:
    """Decide what one received datagram is (either packet version).

    Args:
        data: the datagram (a text message, as a data channel can deliver, is garbage).
        reader: the stream's reader (restores the short counters of version 2).
        name: log prefix.

    Returns:
        ``(audio, report)`` (a version-2 audio packet may carry a report too), or None for
        garbage (logged at debug level).
    """
    if isinstance(data, str):
        logger.debug("%s: dropping a text message", name)
        return None
    try:
        return reader.read(data)
    except PacketError as exc:
        logger.debug("%s: dropping bad datagram: %s", name, exc)
        return None


def classify_datagram(data: bytes | bytearray | memoryview | str, name: str = "session",
                      reader: WireReader | None = None) -> AudioPacket | LossReport | None:
    """Decide what one received datagram is, as one message.

    Args:
        data: the datagram (either packet version).
        name: log prefix.
        reader: the stream's reader (default: a fresh one, which takes version-2 counters as
            they are).

    Returns:
        The audio packet or loss report (a report piggybacked on audio is left out: use
        :func:`read_datagram` for both), or None for garbage.
    """
    read = read_datagram(data, reader if reader is not None else WireReader(), name)
    if read is None:
        return None
    audio, report = read
    return audio if audio is not None else report


# ---------------------------------------------------------------------------------------- send
@dataclass(frozen=True)
class EncodedFrame:
    """One encoded frame, ready for :meth:`SendSession.send_frame`."""

    payload: bytes
    """The codec's ``bytes_per_frame`` bytes."""
    silent: bool
    """The voice activity detector found no speech (the packet's ``SILENCE`` flag; DTX)."""


@dataclass
class SendStats:
    """What a :class:`SendSession` did so far."""

    frames: int = 0
    """Frames passed to :meth:`SendSession.send_frame` (sent or left out by DTX)."""
    packets: int = 0
    """Packets handed to the link (a duplicated packet counts once)."""
    duplicates: int = 0
    """Second datagrams sent for packets while the controller asked for duplicates."""
    payload_bytes: int = 0
    """Bytes handed to the link (duplicates and headers of our format included, the link's
    not)."""
    dtx_frames: int = 0
    """Silent frames left out (DTX)."""
    redundancy: int = 0
    """Current K."""
    reports: int = 0
    """Loss reports received."""
    encode_ms_max: float = 0.0
    """Slowest frame encode in milliseconds, as recorded by the caller."""
    invalid: int = 0
    """Datagrams received by :meth:`SendSession.on_datagram` that were not loss reports."""

    def to_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (same keys as the fields)."""
        return dataclasses.asdict(self)


class SendSession:
    """PCM frames in, packets out on a link: encode, VAD/DTX, bundling, K copies, adaptive K.

    Args:
        info: the codec's description.
        encoder: a fresh encoder for this stream.
        link: where packets go.
        frames_per_packet: new frames bundled per packet (1..16).
        redundancy: K, copies of the previous frames per packet (0..3); ignored when
            ``controller`` is given (its current K is used).
        controller: adapts K from loss reports (None: K stays fixed).
        dtx: leave silent frames out, except one keep-alive frame every ``keepalive_frames``
            (its frame index is still consumed, so the receiver's timeline stays right).
        vad_threshold_dbfs: frames with an RMS level below this are silent (flagged
            ``SILENCE``; left out under DTX); None: no frame is silent.
        keepalive_frames: under DTX, the first silent frame of every ``keepalive_frames`` is
            sent.
        packet_version: 2 (compact, the default; piggybacks loss reports) or 1.
        name: log prefix.

    Raises:
        ValueError: bad bundle size, K, keep-alive interval, DTX without a VAD threshold, or a
            largest packet that does not fit the link's MTU.
    """

    def __init__(self, info: CodecInfo, encoder: FrameEncoder, link: Link, *,
                 frames_per_packet: int = 1, redundancy: int = 0,
                 controller: RedundancyController | None = None, dtx: bool = False,
                 vad_threshold_dbfs: float | None = None, keepalive_frames: int = 12,
                 packet_version: int = DEFAULT_PACKET_VERSION, name: str = "send") -> None:
        if keepalive_frames < 1:
            raise ValueError(f"keepalive_frames must be >= 1, got {keepalive_frames}")
        if dtx and vad_threshold_dbfs is None:
            raise ValueError("dtx needs a vad_threshold_dbfs to tell silence from speech")
        if packet_version not in PACKET_VERSIONS:
            raise ValueError(f"packet_version must be one of {PACKET_VERSIONS}, "
                             f"got {packet_version!r}")
        k = controller.k if controller is not None else redundancy
        self.packetizer = Packetizer(info.codec_id, frames_per_packet, k,
                                     version=packet_version)
        k_max = controller.k_max if controller is not None else k
        header = COMPACT_MAX_HEADER_SIZE if packet_version == 2 else AUDIO_HEADER_SIZE
        largest = header + (frames_per_packet + min(k_max, MAX_REDUNDANCY)) * \
            info.bytes_per_frame
        if largest > link.mtu:
            raise ValueError(f"{name}: packets of up to {largest} bytes ({frames_per_packet} "
                             f"frames + {k_max} copies of {info.bytes_per_frame} bytes) do not "
                             f"fit {link.name} (MTU {link.mtu}); bundle fewer frames")
        self.info = info
        self.encoder = encoder
        self.link = link
        self.controller = controller
        self.dtx = dtx
        self.keepalive_frames = keepalive_frames
        self.name = name
        self._vad_level = (None if vad_threshold_dbfs is None
                           else 10.0 ** (vad_threshold_dbfs / 20.0))
        self._silent_run = 0
        self._reader = WireReader(info.codec_id)
        self.ended = False
        """Whether the stream's last packet (``FLAG_END``) has gone out."""
        self.stats = SendStats(redundancy=k)

    # -- may run in a worker thread: touches only the encoder
    def encode_frame(self, pcm: np.ndarray) -> EncodedFrame:
        """Encode one frame and run the voice activity detector on it.

        Args:
            pcm: float32 mono samples, shape ``(info.input_frame_samples,)``, at
                ``info.input_sample_rate``.

        Returns:
            The payload and whether the frame is silent.

        Raises:
            CodecError: wrong frame shape.
        """
        payload = self.encoder.encode(pcm)
        silent = (self._vad_level is not None
                  and float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))) < self._vad_level)
        return EncodedFrame(payload, silent)

    def record_encode_ms(self, ms: float) -> None:
        """Note how long the caller's :meth:`encode_frame` took (for ``stats.encode_ms_max``)."""
        self.stats.encode_ms_max = max(self.stats.encode_ms_max, ms)

    # -- the rest runs where the link and the reports are (the event loop)
    def send_frame(self, frame: EncodedFrame, *, end: bool = False) -> None:
        """Send (or, under DTX, leave out) the next frame.

        Args:
            frame: from :meth:`encode_frame`.
            end: this is the stream's last frame: it goes out at once, flagged ``FLAG_END``,
                with the frames pending in its bundle.
        """
        if self.ended:
            raise ValueError(f"{self.name}: the stream has ended")
        self.stats.frames += 1
        if self.dtx and frame.silent and not end:
            self._silent_run += 1
            if (self._silent_run - 1) % self.keepalive_frames:
                self.stats.dtx_frames += 1
                self._emit(self.packetizer.skip())
                self._send_waiting_report()
                return
        else:
            self._silent_run = 0
        self._emit(self.packetizer.push(frame.payload, silence=frame.silent, end=end))
        self.ended = end
        if end:
            self._send_waiting_report()

    @property
    def end_needs_frame(self) -> bool:
        """Whether :meth:`finish` needs a frame to carry ``FLAG_END``: frames were sent, none is
        pending, and the end has not been announced yet."""
        return not self.ended and self.stats.frames > 0 and not self.packetizer.pending

    def finish(self, filler: EncodedFrame | None = None) -> None:
        """End the stream: the pending frames go out flagged ``FLAG_END``.

        Args:
            filler: an encoded silent frame to carry the flag when nothing is pending
                (:attr:`end_needs_frame`); it is not counted in ``stats.frames``. Without it
                the end is not announced and the receiver conceals after the last frame.
        """
        if self.ended:
            return
        if self.packetizer.pending:
            self._emit(self.packetizer.flush(end=True))
            self.ended = True
        elif filler is not None and self.stats.frames:
            self._emit(self.packetizer.push(filler.payload, silence=True, end=True))
            self.ended = True

    @property
    def can_piggyback(self) -> bool:
        """Whether a loss report for the other direction can ride on this session's next
        audio packet (version 2, stream not ended)."""
        return self.packetizer.version == 2 and not self.ended

    def piggyback_report(self, report: LossReport) -> None:
        """Carry a loss report of the paired receiver on the next audio packet (see
        :attr:`can_piggyback`; under DTX or at the end it goes out alone instead)."""
        self.packetizer.attach_report(report)

    def _send_waiting_report(self) -> None:
        report = self.packetizer.take_report()
        if report is not None:
            self.link.send(CompactLossReport.from_report(report).to_bytes())

    def on_report(self, report: LossReport) -> None:
        """Apply a loss report from the receiver (adapts K when there is a controller)."""
        self.stats.reports += 1
        if self.controller is not None:
            self.packetizer.redundancy = self.controller.on_report(report)
            self.stats.redundancy = self.packetizer.redundancy

    def on_datagram(self, data: bytes | str) -> None:
        """Link receiver of a send-only endpoint: loss reports are applied, anything else is
        counted in ``stats.invalid`` and dropped."""
        read = read_datagram(data, self._reader, self.name)
        if read is not None and read[1] is not None:
            self.on_report(read[1])
        else:
            self.stats.invalid += 1

    def _emit(self, data: bytes | None) -> None:
        if data is None:
            return
        self.link.send(data)
        self.stats.packets += 1
        self.stats.payload_bytes += len(data)
        if (self.controller is not None and self.controller.duplicates
                and len(data) <= DUPLICATE_MAX_BYTES):
            self.link.send(data)  # same sequence number: the receiver keeps the first to come
            self.stats.duplicates += 1
            self.stats.payload_bytes += len(data)


# ------------------------------------------------------------------------------------- receive
@dataclass
class ReceiveStats:
    """Counters and gauges of a :class:`ReceiveSession` (a snapshot)."""

    packets_received: int = 0
    """Valid audio packets accepted (duplicates excluded)."""
    frames_received: int = 0
    """New frames accepted into the jitter buffer in time."""
    recovered_from_redundancy: int = 0
    """Played frames that came from a redundant copy only."""
    concealed: int = 0
    """Ticks after playout start that had no payload (lost frames plus stretches)."""
    late: int = 0
    """New frames that arrived after their tick."""
    duplicate: int = 0
    """Packets seen before."""
    invalid: int = 0
    """Datagrams dropped as garbage, or audio of another codec or frame size."""
    playout_delay_ms: float = 0.0
    """Playout delay of the last frame due, milliseconds."""
    target_delay_ms: float = 0.0
    """Target playout delay, milliseconds."""
    jitter_ms: float = 0.0
    """Smoothed inter-arrival jitter, milliseconds."""
    frames_played: int = 0
    """Ticks that played a frame (decoded or concealed)."""
    decode_ms_max: float = 0.0
    """Slowest frame decode in milliseconds, as recorded by the caller."""
    ended: bool = False
    """The sender ended the stream and all of it has been played."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (same keys as the fields; gauges rounded for display)."""
        out = dataclasses.asdict(self)
        for key in ("playout_delay_ms", "target_delay_ms", "jitter_ms"):
            out[key] = round(out[key], 1)
        out["decode_ms_max"] = round(out["decode_ms_max"], 2)
        return out


class ReceiveSession:
    """Datagrams in, one frame per tick out: classification, jitter buffer, concealment
    (``decoder.decode(None)``), decoding, loss reports.

    Args:
        info: the codec's description (packets of other codecs or frame sizes are dropped).
        decoder: a fresh decoder for this stream (it conceals on ``decode(None)``).
        link: where loss reports go back (None: no reports).
        jitter: jitter buffer settings (frame duration, codec id and frame size are taken from
            ``info``).
        report_interval: played frames between loss reports (12 = 0.96 s of 80 ms frames).
        output_sample_rate: rate of the audio the caller puts in :attr:`output` (default: the
            codec's output rate; an aiortc track resamples to 48 kHz first).
        trace: records when each frame arrived (``arrived``) and was handed out for decoding
            (``decode``), on the caller's clock (None: nothing is recorded).
        name: log prefix.
    """

    def __init__(self, info: CodecInfo, decoder: FrameDecoder, link: Link | None, *,
                 jitter: JitterConfig | None = None, report_interval: int = 12,
                 output_sample_rate: int | None = None, trace: FrameTrace | None = None,
                 name: str = "receive") -> None:
        if report_interval < 1:
            raise ValueError(f"report_interval must be >= 1 frame, got {report_interval}")
        cfg = dataclasses.replace(jitter if jitter is not None else JitterConfig(),
                                  frame_ms=info.frame_ms, codec_id=info.codec_id,
                                  frame_bytes=info.bytes_per_frame)
        self.info = info
        self.decoder = decoder
        self.link = link
        self.report_interval = report_interval
        self.name = name
        self.buffer = JitterBuffer(cfg, name=name)
        self.loss = LossStatistics()
        self.sender: SendSession | None = None
        """The session sending the other way on the same link: loss reports go to it."""
        self.frames_played = 0
        self.last_index_played = -1
        """Highest frame index played so far (decoded or concealed); -1 before the first."""
        self.reports_sent = 0
        self.last_report: LossReport | None = None
        """The last loss report sent."""
        self._garbage = 0
        self._decode_ms_max = 0.0
        self._last_stretch = -TRIM_HOLDOFF_FRAMES  # frames_played at the last stretch
        self.output = PlayoutQueue(output_sample_rate or info.output_sample_rate)
        """Decoded audio waiting to be played (the caller pushes what :meth:`decode` returns,
        resampled to ``output_sample_rate``, and reads it on demand)."""
        self.trace = trace
        self._reader = WireReader(info.codec_id)
        self._peer_version = 1
        """Version of the last audio packet received: standalone reports use it."""

    def on_datagram(self, data: bytes | str, now: float) -> None:
        """Take one received datagram (garbage is counted and dropped, never raised).

        Args:
            data: the datagram.
            now: arrival time in seconds (the clock :meth:`tick` gets).
        """
        read = read_datagram(data, self._reader, self.name)
        if read is None:
            self._garbage += 1
            return
        audio, report = read
        if report is not None:
            if self.sender is not None:
                self.sender.on_report(report)
            else:
                logger.debug("%s: loss report with no sender to adapt", self.name)
        if audio is None:
            return
        self._peer_version = 2 if isinstance(data, (bytes, bytearray, memoryview)) \
            and data[0] & 0xC0 == 0x80 else 1
        duplicates = self.buffer.stats.duplicate
        if self.buffer.push_packet(audio, now):
            self.loss.on_packet(audio.seq)
            if self.trace is not None:  # first arrival of each frame, own packet or copy
                first = self.buffer.unwrap_index(audio.frame_index)
                for i in range(-len(audio.redundant), len(audio.frames)):
                    self.trace.mark("arrived", first + i, now)
        elif self.buffer.stats.duplicate > duplicates:
            self.loss.on_duplicate(audio.seq)

    def poll(self, now: float, *, urgent: bool = False, lead: float = 0.0
             ) -> PlayoutFrame | None:
        """The next frame to decode, if one should be decoded now (decode on arrival).

        A frame is handed out the moment it is playable (it is the one due next, and, before
        playout starts, the playout delay has been reached). When it is missing, nothing is
        handed out until the output is about to run dry (``urgent``): then the jitter buffer
        decides between waiting a frame longer (``STRETCH``, the delay grows) and giving the
        frame up (``CONCEALED``); both are concealed by the decoder. The delays the jitter
        buffer sees are those of the frame's deadline: ``now`` plus the audio already queued in
        :attr:`output`, less ``lead`` (the time decoding and the next read need).

        Args:
            now: seconds, the clock of :meth:`on_datagram`.
            urgent: the output needs audio soon (:attr:`output` holds ``lead`` or less).
            lead: seconds before its first sample is heard by which a frame must be here: the
                caller's read period plus its decode time.

        Returns:
            A frame to pass to :meth:`decode` (and push into :attr:`output`); or None: nothing
            to decode now (the caller plays what is queued, or silence before playout starts
            and after the stream ended).
        """
        if not urgent and not self.buffer.playable:
            return None
        if not urgent and self.output.queued_seconds * 1000 >= self.buffer.config.max_delay_ms:
            # the output queue holds at most the largest playout delay: a sender faster than
            # real time would otherwise move every frame into it at once and the queue would
            # grow without end (a burst after a stall is still decoded at once); frames wait in
            # the jitter buffer instead, whose resync bounds what it holds
            return None
        frame = self.tick(now + self.output.queued_seconds - lead)
        if frame.source in (FrameSource.BUFFERING, FrameSource.ENDED):
            return None
        if self.trace is not None:
            if frame.index is not None:
                self.trace.mark("decode", frame.index, now)
            elif frame.source is FrameSource.STRETCH and self.buffer.next_index is not None:
                self.trace.stretch(self.buffer.next_index)
        return frame

    def tick(self, now: float) -> PlayoutFrame:
        """The frame for this frame period (call once per period).

        Args:
            now: tick time in seconds.

        Returns:
            What to play: for ``BUFFERING`` and ``ENDED`` the caller plays silence without
            decoding; for every other source it calls :meth:`decode`.
        """
        played = self.buffer.tick(now)
        if played.source in (FrameSource.BUFFERING, FrameSource.ENDED):
            return played
        self.frames_played += 1
        if played.source is FrameSource.STRETCH:
            self._last_stretch = self.frames_played
        if played.index is not None:
            self.last_index_played = max(self.last_index_played, played.index)
        self.loss.on_tick(played.payload is None)
        if self.link is not None and self.frames_played % self.report_interval == 0:
            self._report()
        return played

    def trim_output(self, n: int, level: float = 0.003) -> int:
        """Shrink the delay in silence: drop the next ``n`` queued samples of :attr:`output` if
        they are all quieter than ``level`` and the playout delay exceeds its target by more
        than ``n`` samples. Nothing audible is cut, so there is no click.

        Returns:
            Samples dropped (0 or ``n``).
        """
        s = self.buffer.stats
        ms = 1000.0 * n / self.output.sample_rate
        if not self.buffer.started or s.current_delay_ms - s.target_delay_ms <= ms:
            return 0
        if self.frames_played - self._last_stretch < TRIM_HOLDOFF_FRAMES:
            return 0  # the delay just had to grow: do not take it back at once
        dropped = self.output.trim(n, level)
        if dropped:
            s.current_delay_ms -= ms
        return dropped

    # -- may run in a worker thread: touches only the decoder
    def decode(self, frame: PlayoutFrame) -> np.ndarray:
        """Decode the frame of a tick, or conceal it (payload None). The silent frames the
        jitter buffer skipped just before it are decoded first and their audio dropped.

        Returns:
            float32 samples, shape ``(info.output_frame_samples,)``, at
            ``info.output_sample_rate``.
        """
        if frame.source in (FrameSource.BUFFERING, FrameSource.ENDED):
            raise ValueError(f"{self.name}: a {frame.source.value} tick plays silence, "
                             "there is nothing to decode")
        for payload in frame.skipped_payloads:
            # dropped to shrink the delay, so not heard; decoded all the same, or a stateful
            # decoder would go on from a context that misses these frames (the sender's
            # encoder did not)
            self.decoder.decode(payload)
        return self.decoder.decode(frame.payload)

    def record_decode_ms(self, ms: float) -> None:
        """Note how long the caller's :meth:`decode` took (for ``stats.decode_ms_max``)."""
        self._decode_ms_max = max(self._decode_ms_max, ms)

    @property
    def ended(self) -> bool:
        """Whether the sender ended the stream and all of it has been played."""
        return self.buffer.ended

    @property
    def stats(self) -> ReceiveStats:
        """A snapshot of the counters."""
        s = self.buffer.stats
        return ReceiveStats(
            packets_received=s.packets_received, frames_received=s.frames_received,
            recovered_from_redundancy=s.recovered_from_redundancy, concealed=s.concealed,
            late=s.late, duplicate=s.duplicate, invalid=s.invalid + self._garbage,
            playout_delay_ms=s.current_delay_ms, target_delay_ms=s.target_delay_ms,
            jitter_ms=s.jitter_ms, frames_played=self.frames_played,
            decode_ms_max=self._decode_ms_max, ended=self.buffer.ended)

    def _report(self) -> None:
        assert self.link is not None
        s = self.buffer.stats
        # the delay is measured at the frame's deadline, which a caller's lead can put before
        # the fastest arrival: the report carries 0 then
        report = self.loss.make_report(s.jitter_ms, max(0.0, s.current_delay_ms))
        if report is not None:
            if self.sender is not None and self.sender.can_piggyback:
                self.sender.piggyback_report(report)
            elif self._peer_version == 2:
                self.link.send(CompactLossReport.from_report(report).to_bytes())
            else:
                self.link.send(report.to_bytes())
            self.reports_sent += 1
            self.last_report = report
