"""Compact wire format (version 2): a 4-byte audio header for narrow links.

Version 1 (:mod:`voip_codec.wire.packet`) spends 16 header bytes on a 7-byte Codec2 frame.
Version 2 keeps everything v1 can say but writes only what the receiver cannot work out itself.

Telling the versions apart: a v1 message starts with the magic ``b"VC"`` (first byte 0x56 =
``0b01010110``); every v2 message has ``0b10`` in the top two bits of its first byte
(0x80..0xBF). No first byte is valid in both, so :func:`parse_any` needs only byte 0.

All multi-byte integers are big-endian. Bit 7 is the most significant bit of a byte.

Audio packet (byte 0 bit 5 = 0), sender -> receiver:

=======  =====  ==========================================================================
offset   size   field
=======  =====  ==========================================================================
0        1      ``1 0 0 X R S K K``: bits 7..6 = ``10`` (version 2), bit 5 = 0 (audio),
                bit 4 ``X``: an extension byte follows the fixed header; bit 3 ``R``: a
                piggybacked loss report follows; bit 2 ``S``: ``SILENCE`` (as in v1);
                bits 1..0 ``K``: redundant copies of earlier frames (0..3)
1        3      24 bits: sequence number modulo 4096 in bits 23..12, frame index of the
                first new frame modulo 4096 in bits 11..0
(4)      1      only if ``X``: extension flags: bit 7 ``START``, bit 6 ``END`` (as in v1),
                bit 5 ``C``: a codec-id byte follows, bit 4 ``B``: a bundle byte follows,
                bits 3..0 reserved (0); an extension byte of 0 is not allowed
(.)      1      only if ``C``: codec id (0..255); every ``START`` packet carries it
(.)      1      only if ``B``: ``n_new - 1`` in bits 3..0 (bits 7..4 reserved, 0); present
                exactly when the packet bundles 2..16 new frames (``n_new = 1`` otherwise)
(.)      8      only if ``R``: a compact loss report (the body of the report message below)
...      ...    ``K`` redundant payloads (frames ``first - K .. first - 1``), then ``n_new`` new
                payloads (``first .. first + n_new - 1``), all of one size
=======  =====  ==========================================================================

The common case (one new frame, K = 0, no report, not the first or last packet) is a 4-byte
header. Frame size is not written: every payload has the same size, so it is the remaining
length divided by ``K + n_new``, which must divide evenly and give at least one byte. The
receiver knows its codec's frame size (from the codec id, negotiated at call setup) and drops a
packet whose frames have another size, so a truncated datagram is caught there.

Sequence number and frame index: a v2 packet carries the low 12 bits of both, and the receiver
restores the high bits the way SRTP restores its rollover counter (:class:`WireReader`: the
unwrapped value nearest to the highest one seen). Both counters are sent rather than one
derived from the other because their ratio changes with bundling, partial bundles at the end
and DTX gaps, and a rule that derives the frame index from the sequence number needs the
packet that announced the last change: lose that one and every later frame is misplaced. With
both low parts every packet places itself, whatever was lost before it. The rule is exact as
long as fewer than 2048 packets (sequence) and 2048 frame periods (index) pass between two
packets that arrive (164 s of 80 ms frames).

The codec id is written only in ``START`` packets (and whenever ``C`` is set); other packets are
of the stream's codec, which the receiver knows from call setup (a ``START`` packet of another
codec is dropped as foreign).

Loss report alone (byte 0 = ``0xA0``: bits 7..6 ``10``, bit 5 = 1, bits 4..0 reserved 0),
receiver -> sender; 9 bytes in all. The same 8-byte body is piggybacked on audio packets going
the same way (flag ``R``), so a full-duplex call sends no extra packets for reports.

=======  =====  ==========================================================================
offset   size   field
=======  =====  ==========================================================================
1        1      report number modulo 256 (restored to 16 bits by :class:`WireReader`)
2        1      packets expected in the interval (saturates at 255)
3        1      packets received in the interval (saturates at 255)
4        1      packet loss fraction, ``round(loss * 255)``
5        1      mean loss-burst length in packets, 4.4 fixed point (``round(burst * 16)``,
                saturates at 15.94)
6        1      residual frame loss after redundancy, ``round(x * 255)``
7        1      arrival jitter in milliseconds (saturates at 255)
8        1      playout delay in units of 4 ms (saturates at 1020 ms)
=======  =====  ==========================================================================

v2 reports do not carry v1's ``highest_seq`` (nothing acts on it; parsed reports give 0).

:func:`parse_compact` accepts exactly these layouts and raises
:class:`~voip_codec.wire.packet.PacketError` for anything else; every accepted message's
``to_bytes()`` gives back the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .packet import (
    FLAG_END,
    FLAG_SILENCE,
    FLAG_START,
    MAGIC,
    AudioPacket,
    LossReport,
    PacketError,
    parse_packet,
    payload_size,
)

__all__ = [
    "COMPACT_HEADER_SIZE",
    "COMPACT_MAX_HEADER_SIZE",
    "COMPACT_REPORT_SIZE",
    "CompactAudioPacket",
    "CompactLossReport",
    "WireReader",
    "parse_any",
    "parse_compact",
    "to_compact",
]

_V2_MASK = 0xC0
_V2_BITS = 0x80
_TYPE_REPORT = 0x20
_X = 0x10
_R = 0x08
_S = 0x04
_EXT_START = 0x80
_EXT_END = 0x40
_EXT_CODEC = 0x20
_EXT_BUNDLE = 0x10
_EXT_KNOWN = _EXT_START | _EXT_END | _EXT_CODEC | _EXT_BUNDLE

COMPACT_HEADER_SIZE = 4
"""Header of the common case: one new frame, K = 0, no extension, no report."""
COMPACT_REPORT_SIZE = 9
"""A loss report on its own (1 type byte + the 8-byte body)."""
_REPORT_BODY = 8
COMPACT_MAX_HEADER_SIZE = COMPACT_HEADER_SIZE + 3 + _REPORT_BODY
"""Largest header: extension, codec and bundle bytes and a piggybacked report (15 bytes)."""

_MOD12 = 0xFFF


def _q8(value: float) -> int:
    return min(255, max(0, round(value * 255)))


@dataclass(frozen=True)
class CompactLossReport:
    """A v2 loss report: the v1 statistics at 8-bit resolution (integers as on the wire)."""

    report_seq: int
    """Report counter modulo 256."""
    expected: int
    """Packets expected in the interval (0..255, saturated)."""
    received: int
    """Packets received in the interval (0..255, saturated)."""
    loss_q: int
    """Loss fraction times 255 (0..255)."""
    burst_q: int
    """Mean burst length times 16 (0..255)."""
    residual_q: int
    """Residual (concealed) frame fraction times 255 (0..255)."""
    jitter_ms: int
    """Arrival jitter in milliseconds (0..255, saturated)."""
    playout_4ms: int
    """Playout delay in 4 ms units (0..255, saturated)."""

    def __post_init__(self) -> None:
        for name in ("report_seq", "expected", "received", "loss_q", "burst_q", "residual_q",
                     "jitter_ms", "playout_4ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 255:
                raise PacketError(f"compact report field {name} must be in 0..255, got {value!r}")

    @classmethod
    def from_report(cls, report: LossReport) -> CompactLossReport:
        """Quantise a report to v2 resolution (counts and times saturate)."""
        return cls(report_seq=report.report_seq & 0xFF, expected=min(report.expected, 255),
                   received=min(report.received, 255), loss_q=_q8(report.loss_rate),
                   burst_q=min(255, round(report.mean_burst * 16)),
                   residual_q=_q8(report.residual_loss),
                   jitter_ms=min(report.jitter_ms, 255),
                   playout_4ms=min(255, round(report.playout_delay_ms / 4)))

    def to_report(self, report_seq: int | None = None) -> LossReport:
        """The report as a :class:`LossReport` (``highest_seq`` 0: v2 does not carry it).

        Args:
            report_seq: the restored 16-bit report number (default: the 8 bits carried).
        """
        return LossReport(report_seq=self.report_seq if report_seq is None else report_seq,
                          highest_seq=0, expected=self.expected, received=self.received,
                          loss_rate=self.loss_q / 255, mean_burst=self.burst_q / 16,
                          residual_loss=self.residual_q / 255, jitter_ms=self.jitter_ms,
                          playout_delay_ms=self.playout_4ms * 4)

    def body(self) -> bytes:
        """The 8-byte body (as piggybacked on audio packets)."""
        return bytes((self.report_seq, self.expected, self.received, self.loss_q, self.burst_q,
                      self.residual_q, self.jitter_ms, self.playout_4ms))

    def to_bytes(self) -> bytes:
        """The report on its own (9 bytes)."""
        return bytes((_V2_BITS | _TYPE_REPORT,)) + self.body()


@dataclass(frozen=True)
class CompactAudioPacket:
    """A v2 audio packet: counters modulo 4096, optional codec id, optional report."""

    seq: int
    """Sequence number modulo 4096."""
    frame_index: int
    """Frame index of the first new frame, modulo 4096."""
    frames: tuple[bytes, ...]
    """New frame payloads (1..16, all of one size)."""
    redundant: tuple[bytes, ...] = ()
    """Copies of the frames just before ``frame_index``, oldest first (0..3)."""
    flags: int = 0
    """Bit set of ``FLAG_START`` / ``FLAG_SILENCE`` / ``FLAG_END`` (as in v1)."""
    codec_id: int | None = None
    """Codec id; required on ``START`` packets, None elsewhere means "the stream's codec"."""
    report: CompactLossReport | None = None
    """A loss report for the other direction, piggybacked."""

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= _MOD12:
            raise PacketError(f"compact sequence number must be in 0..4095, got {self.seq!r}")
        if not 0 <= self.frame_index <= _MOD12:
            raise PacketError(f"compact frame index must be in 0..4095, got "
                              f"{self.frame_index!r}")
        if self.flags < 0 or self.flags & ~(FLAG_START | FLAG_SILENCE | FLAG_END):
            raise PacketError(f"unknown flag bits in 0x{self.flags:02x}")
        if self.codec_id is not None and not 0 <= self.codec_id <= 0xFF:
            raise PacketError(f"codec id must be in 0..255, got {self.codec_id!r}")
        if self.flags & FLAG_START and self.codec_id is None:
            raise PacketError("a START packet must carry its codec id")
        if payload_size(self.frames, self.redundant) < 1:
            raise PacketError("frame payloads must not be empty")

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame payload."""
        return len(self.frames[0])

    def to_bytes(self) -> bytes:
        """Serialise (see the module docstring)."""
        ext = ((_EXT_START if self.flags & FLAG_START else 0)
               | (_EXT_END if self.flags & FLAG_END else 0)
               | (_EXT_CODEC if self.codec_id is not None else 0)
               | (_EXT_BUNDLE if len(self.frames) > 1 else 0))
        b0 = (_V2_BITS | (_X if ext else 0) | (_R if self.report is not None else 0)
              | (_S if self.flags & FLAG_SILENCE else 0) | len(self.redundant))
        out = bytearray((b0,))
        out += ((self.seq << 12) | self.frame_index).to_bytes(3, "big")
        if ext:
            out.append(ext)
        if self.codec_id is not None:
            out.append(self.codec_id)
        if len(self.frames) > 1:
            out.append(len(self.frames) - 1)
        if self.report is not None:
            out += self.report.body()
        for payload in self.redundant + self.frames:
            out += payload
        return bytes(out)


def _parse_report_body(raw: bytes, at: int) -> CompactLossReport:
    return CompactLossReport(*raw[at:at + _REPORT_BODY])


def parse_compact(data: bytes | bytearray | memoryview) -> CompactAudioPacket | CompactLossReport:
    """Parse one v2 message.

    Args:
        data: the bytes of one datagram.

    Returns:
        A :class:`CompactAudioPacket` or a :class:`CompactLossReport`.

    Raises:
        PacketError: not v2, truncated, reserved bits set, a non-canonical encoding or a length
            that does not split into equal frames. No other exception escapes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise PacketError("truncated: empty datagram")
    b0 = raw[0]
    if b0 & _V2_MASK != _V2_BITS:
        raise PacketError(f"not a version 2 message: first byte 0x{b0:02x}")
    if b0 & _TYPE_REPORT:
        if b0 & 0x1F:
            raise PacketError(f"reserved bits set in report type byte 0x{b0:02x}")
        if len(raw) < COMPACT_REPORT_SIZE:
            raise PacketError(f"truncated loss report: {len(raw)} of {COMPACT_REPORT_SIZE} bytes")
        if len(raw) > COMPACT_REPORT_SIZE:
            raise PacketError(f"bad length: loss report of {len(raw)} bytes, expected "
                              f"{COMPACT_REPORT_SIZE}")
        return _parse_report_body(raw, 1)
    if len(raw) < COMPACT_HEADER_SIZE:
        raise PacketError(f"truncated audio header: {len(raw)} of {COMPACT_HEADER_SIZE} bytes")
    counters = int.from_bytes(raw[1:4], "big")
    seq, index = counters >> 12, counters & _MOD12
    at = COMPACT_HEADER_SIZE
    ext = 0
    if b0 & _X:
        if len(raw) <= at:
            raise PacketError("truncated audio header: extension byte missing")
        ext = raw[at]
        at += 1
        if ext & ~_EXT_KNOWN:
            raise PacketError(f"reserved extension bits set in 0x{ext:02x}")
        if ext == 0:
            raise PacketError("empty extension byte (X set, no extension flag)")
    codec_id: int | None = None
    if ext & _EXT_CODEC:
        if len(raw) <= at:
            raise PacketError("truncated audio header: codec id missing")
        codec_id = raw[at]
        at += 1
    n_new = 1
    if ext & _EXT_BUNDLE:
        if len(raw) <= at:
            raise PacketError("truncated audio header: bundle byte missing")
        bundle = raw[at]
        at += 1
        if bundle & 0xF0:
            raise PacketError(f"reserved bundle bits set in 0x{bundle:02x}")
        if bundle == 0:
            raise PacketError("bundle byte for a single frame (omit it)")
        n_new = bundle + 1
    report = None
    if b0 & _R:
        if len(raw) < at + _REPORT_BODY:
            raise PacketError(f"truncated piggybacked report: {len(raw) - at} of "
                              f"{_REPORT_BODY} bytes")
        report = _parse_report_body(raw, at)
        at += _REPORT_BODY
    flags = ((FLAG_START if ext & _EXT_START else 0) | (FLAG_END if ext & _EXT_END else 0)
             | (FLAG_SILENCE if b0 & _S else 0))
    if flags & FLAG_START and codec_id is None:
        raise PacketError("START packet without codec id")
    n_red = b0 & 0x03
    count = n_red + n_new
    body = len(raw) - at
    if body < count:
        raise PacketError(f"truncated audio packet: {body} payload bytes for {count} frames")
    if body % count:
        raise PacketError(f"bad length: {body} payload bytes do not split into {count} "
                          f"equal frames")
    size = body // count
    chunks = tuple(raw[at + i * size:at + (i + 1) * size] for i in range(count))
    return CompactAudioPacket(seq=seq, frame_index=index, frames=chunks[n_red:],
                              redundant=chunks[:n_red], flags=flags, codec_id=codec_id,
                              report=report)


def parse_any(data: bytes | bytearray | memoryview) -> (
        AudioPacket | LossReport | CompactAudioPacket | CompactLossReport):
    """Parse a message of either version, told apart by its first byte.

    Raises:
        PacketError: neither version, or invalid in its version.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"expected bytes, got {type(data).__name__}")
    if len(data) and data[0] & _V2_MASK == _V2_BITS:
        return parse_compact(data)
    if len(data) and data[0] != MAGIC[0]:
        raise PacketError(f"unknown packet version: first byte 0x{data[0]:02x}")
    return parse_packet(data)


def _unwrap(value: int, reference: int, bits: int) -> int:
    span = 1 << bits
    delta = (value - reference) & (span - 1)
    if delta >= span >> 1:
        delta -= span
    return reference + delta


class WireReader:
    """Turns datagrams of either version into full-width v1 objects for one stream.

    v2 counters are 12 bits (report numbers 8 bits); the reader restores them to the
    unbounded values nearest to the highest ones seen so far (like SRTP's rollover counter)
    and hands out :class:`AudioPacket` / :class:`LossReport` with 16-bit sequence numbers and
    32-bit frame indices, so the jitter buffer and the loss statistics see one format.

    Args:
        codec_id: the codec of packets that do not name one (the stream's codec, negotiated at
            call setup). It is not taken from ``START`` packets: one stray or forged packet
            must not relabel the genuine packets that follow.
    """

    def __init__(self, codec_id: int = 0) -> None:
        self.codec_id = codec_id
        self._seq: int | None = None
        self._index: int | None = None
        self._report: int | None = None

    def read(self, data: bytes | bytearray | memoryview) -> tuple[AudioPacket | None,
                                                                  LossReport | None]:
        """Parse one datagram.

        Returns:
            ``(audio, report)``: a v1 datagram gives one of the two; a v2 audio packet may
            give both (a piggybacked report).

        Raises:
            PacketError: the datagram is not a valid message of either version.
        """
        message = parse_any(data)
        if isinstance(message, AudioPacket):
            return message, None
        if isinstance(message, LossReport):
            return None, message
        if isinstance(message, CompactLossReport):
            return None, self._restore_report(message)
        return self._restore_audio(message), (
            None if message.report is None else self._restore_report(message.report))

    def _restore_report(self, report: CompactLossReport) -> LossReport:
        ext = report.report_seq if self._report is None else _unwrap(report.report_seq,
                                                                     self._report, 8)
        self._report = ext if self._report is None else max(self._report, ext)
        return report.to_report(ext & 0xFFFF)

    def _restore_audio(self, packet: CompactAudioPacket) -> AudioPacket:
        seq = packet.seq if self._seq is None else _unwrap(packet.seq, self._seq, 12)
        index = (packet.frame_index if self._index is None
                 else _unwrap(packet.frame_index, self._index, 12))
        self._seq = seq if self._seq is None else max(self._seq, seq)
        last = index + len(packet.frames) - 1
        self._index = last if self._index is None else max(self._index, last)
        codec_id = packet.codec_id if packet.codec_id is not None else self.codec_id
        return AudioPacket(codec_id=codec_id, seq=seq & 0xFFFF, frame_index=index & 0xFFFFFFFF,
                           frames=packet.frames, redundant=packet.redundant, flags=packet.flags)


def to_compact(packet: AudioPacket, *, with_codec: bool = False,
               report: LossReport | None = None) -> CompactAudioPacket:
    """The v2 form of a v1 packet (counters reduced to 12 bits).

    Args:
        packet: the packet.
        with_codec: write the codec id even when the packet is not a ``START`` packet.
        report: a loss report to piggyback.
    """
    return CompactAudioPacket(
        seq=packet.seq & _MOD12, frame_index=packet.frame_index & _MOD12, frames=packet.frames,
        redundant=packet.redundant, flags=packet.flags,
        codec_id=packet.codec_id if with_codec or packet.flags & FLAG_START else None,
        report=None if report is None else CompactLossReport.from_report(report))

