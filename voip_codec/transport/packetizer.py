"""Sender side of the wire format: frames -> audio packets (bundling and redundancy), in
packet version 1 (:mod:`voip_codec.wire.packet`) or the compact version 2
(:mod:`voip_codec.wire.compact`), which can also carry a loss report for the other direction."""

from __future__ import annotations

from collections import deque

from ..wire.compact import to_compact
from ..wire.packet import (
    FLAG_END,
    FLAG_SILENCE,
    FLAG_START,
    MAX_NEW_FRAMES,
    MAX_REDUNDANCY,
    AudioPacket,
    LossReport,
)

__all__ = ["PACKET_VERSIONS", "Packetizer"]

PACKET_VERSIONS = (1, 2)
"""Packet versions a :class:`Packetizer` can write."""


class Packetizer:
    """Groups encoded frames into packets of ``frames_per_packet`` new frames plus up to
    ``redundancy`` copies of the frames sent just before them.

    Args:
        codec_id: codec id written into every packet.
        frames_per_packet: new frames per packet, 1..16 (more = fewer packets, more delay).
        redundancy: K, redundant copies per packet, 0..3; may be changed between packets.
        first_seq: sequence number of the first packet (0..65535).
        first_frame_index: frame index of the first frame (0..2**32-1).
        version: packet version written, 1 or 2 (compact; see :mod:`voip_codec.wire.compact`).
    """

    def __init__(self, codec_id: int, frames_per_packet: int = 1, redundancy: int = 0,
                 first_seq: int = 0, first_frame_index: int = 0, version: int = 1) -> None:
        if version not in PACKET_VERSIONS:
            raise ValueError(f"packet version must be one of {PACKET_VERSIONS}, got {version!r}")
        if not 1 <= frames_per_packet <= MAX_NEW_FRAMES:
            raise ValueError(f"frames_per_packet must be in 1..{MAX_NEW_FRAMES}, "
                             f"got {frames_per_packet}")
        self.codec_id = codec_id
        self.version = version
        self._report: LossReport | None = None
        self.frames_per_packet = frames_per_packet
        self.redundancy = redundancy
        self.seq = first_seq & 0xFFFF
        self.frame_index = first_frame_index & 0xFFFFFFFF
        self._pending: list[bytes] = []
        self._pending_silence = True
        self._sent: deque[bytes] = deque(maxlen=MAX_REDUNDANCY)
        self._first_packet = True
        self.packets = 0
        """Packets emitted so far."""
        self.bytes = 0
        """Bytes emitted so far."""
        self.last_redundancy = 0
        """K actually used in the last packet (less than ``redundancy`` at stream start)."""

    @property
    def pending(self) -> int:
        """New frames waiting for their packet."""
        return len(self._pending)

    @property
    def redundancy(self) -> int:
        """K, redundant copies per packet (0..3)."""
        return self._redundancy

    @redundancy.setter
    def redundancy(self, k: int) -> None:
        if not 0 <= k <= MAX_REDUNDANCY:
            raise ValueError(f"redundancy must be in 0..{MAX_REDUNDANCY}, got {k}")
        self._redundancy = k

    @property
    def report_pending(self) -> bool:
        """Whether a loss report waits for the next packet."""
        return self._report is not None

    def attach_report(self, report: LossReport) -> None:
        """Piggyback a loss report on the next packet (version 2 only; replaces one still
        waiting).

        Raises:
            ValueError: this packetizer writes version 1, which cannot carry reports.
        """
        if self.version != 2:
            raise ValueError("only packet version 2 can piggyback loss reports")
        self._report = report

    def take_report(self) -> LossReport | None:
        """Remove and return the report waiting for the next packet (to send it alone)."""
        report, self._report = self._report, None
        return report

    def push(self, payload: bytes, silence: bool = False, end: bool = False) -> bytes | None:
        """Add one encoded frame.

        Args:
            payload: the frame's bytes (same size for every frame).
            silence: the sender's voice activity detector found no speech in this frame.
            end: this is the stream's last frame: emit the pending frames now, flagged
                ``FLAG_END`` (see :meth:`flush`).

        Returns:
            A packet when ``frames_per_packet`` frames are pending or ``end`` is set, else None.
        """
        self._pending.append(bytes(payload))
        self._pending_silence = self._pending_silence and silence
        if end or len(self._pending) >= self.frames_per_packet:
            return self.flush(end=end)
        return None

    def skip(self) -> bytes | None:
        """Leave the next frame out (DTX): its index is consumed, nothing is sent for it.

        The pending frames go out first, since the skipped index cannot join their bundle. The
        frames sent so far are forgotten as redundancy: a later packet's copies are addressed
        by the indices just before its first frame, which are now skipped ones.

        Returns:
            The packet of the pending frames, or None if none was pending.
        """
        data = self.flush()
        self.frame_index = (self.frame_index + 1) & 0xFFFFFFFF
        self._sent.clear()
        return data

    def flush(self, end: bool = False) -> bytes | None:
        """Emit the pending frames now; None if nothing is pending.

        Args:
            end: mark the packet as the stream's last (``FLAG_END``): the receiver then stops
                playing after its last frame instead of concealing the silence that follows.
        """
        if not self._pending:
            return None
        k = min(self._redundancy, len(self._sent))
        redundant = tuple(self._sent)[len(self._sent) - k:] if k else ()
        flags = (FLAG_START if self._first_packet else 0) | (
            FLAG_SILENCE if self._pending_silence else 0) | (FLAG_END if end else 0)
        packet = AudioPacket(codec_id=self.codec_id, seq=self.seq, frame_index=self.frame_index,
                             frames=tuple(self._pending), redundant=redundant, flags=flags)
        if self.version == 2:
            data = to_compact(packet, report=self.take_report()).to_bytes()
        else:
            data = packet.to_bytes()
        self.last_redundancy = k
        self._sent.extend(self._pending)
        self.seq = (self.seq + 1) & 0xFFFF
        self.frame_index = (self.frame_index + len(self._pending)) & 0xFFFFFFFF
        self._pending = []
        self._pending_silence = True
        self._first_packet = False
        self.packets += 1
        self.bytes += len(data)
        return data
