"""Wire format of codec frames and receiver reports (version 1).

Every message starts with the same 4-byte preamble; all integers are big-endian (network order).

Preamble (all message types):

======  ====  ===========================================================================
offset  size  field
======  ====  ===========================================================================
0       2     magic ``b"VC"`` (0x56 0x43)
2       1     version, currently 1; any other value is rejected
3       1     message type: 1 = audio packet, 2 = loss report
======  ====  ===========================================================================

Audio packet (type 1), sender -> receiver; a 16-byte header, then the frames:

======  ====  ===========================================================================
offset  size  field
======  ====  ===========================================================================
4       1     codec id (0..255, see :mod:`voip_codec.codecs.registry`)
5       1     flags: bit 0 ``START`` (first packet of a stream), bit 1 ``SILENCE`` (the new
              frames are silence, so the receiver may drop them to shrink its delay),
              bit 2 ``END`` (last packet of the stream: no frame follows its last new
              frame, so the receiver stops playing instead of concealing), bits 3..7
              reserved and must be 0
6       2     sequence number (uint16, +1 per packet, wraps 65535 -> 0)
8       4     frame index of the first *new* frame (uint32 frame counter, wraps)
12      2     ``frame_bytes``: size of every frame payload in bytes (1..65535)
14      1     ``n_new``: number of new frames bundled in this packet (1..16)
15      1     ``n_red``: number of redundant copies of preceding frames (0..3)
16      ...   ``n_red`` redundant payloads, oldest first (frame indices ``first - n_red`` ..
              ``first - 1``, modulo 2**32), then ``n_new`` new payloads (``first`` ..
              ``first + n_new - 1``); each exactly ``frame_bytes`` bytes
======  ====  ===========================================================================

The packet length must be exactly ``16 + (n_red + n_new) * frame_bytes``.

Loss report (type 2), receiver -> sender; 22 bytes in all:

======  ====  ===========================================================================
offset  size  field
======  ====  ===========================================================================
4       2     report number (uint16, +1 per report, wraps)
6       2     highest sequence number received (uint16)
8       2     packets expected in the report interval (uint16, saturates at 65535)
10      2     packets received in the report interval (uint16, saturates at 65535)
12      2     packet loss fraction in the interval, ``round(loss * 65535)``
14      2     mean loss-burst length in packets, 8.8 fixed point (``round(burst * 256)``)
16      2     residual frame loss after redundancy (concealed fraction), ``round(x * 65535)``
18      2     arrival jitter in milliseconds (uint16, saturates)
20      2     current playout delay in milliseconds (uint16, saturates)
======  ====  ===========================================================================

:func:`parse_packet` accepts exactly these layouts and raises :class:`PacketError` (a
``ValueError``) for anything else; for every accepted message ``to_bytes()`` gives back the very
same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "AUDIO_HEADER_SIZE",
    "FLAG_END",
    "FLAG_SILENCE",
    "FLAG_START",
    "LOSS_REPORT_SIZE",
    "MAGIC",
    "MAX_FRAME_BYTES",
    "MAX_NEW_FRAMES",
    "MAX_REDUNDANCY",
    "TYPE_AUDIO",
    "TYPE_LOSS_REPORT",
    "VERSION",
    "AudioPacket",
    "LossReport",
    "PacketError",
    "parse_packet",
    "payload_size",
]

MAGIC = b"VC"
VERSION = 1
TYPE_AUDIO = 1
TYPE_LOSS_REPORT = 2

FLAG_START = 0x01
FLAG_SILENCE = 0x02
FLAG_END = 0x04
_KNOWN_FLAGS = FLAG_START | FLAG_SILENCE | FLAG_END

MAX_NEW_FRAMES = 16
MAX_REDUNDANCY = 3
MAX_FRAME_BYTES = 0xFFFF

_PREAMBLE = struct.Struct(">2sBB")
_AUDIO = struct.Struct(">2sBBBBHIHBB")
_REPORT = struct.Struct(">2sBBHHHHHHHHH")
AUDIO_HEADER_SIZE = _AUDIO.size  # 16
LOSS_REPORT_SIZE = _REPORT.size  # 22


class PacketError(ValueError):
    """A message that is not valid in this wire format (the text says what is wrong)."""


def _q16(value: float, name: str) -> int:
    if not 0.0 <= value <= 1.0:
        raise PacketError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return round(value * 0xFFFF)


def _u16(value: int, name: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise PacketError(f"{name} must be in 0..65535, got {value!r}")
    return value


def payload_size(frames: tuple[bytes, ...], redundant: tuple[bytes, ...]) -> int:
    """The common size of an audio packet's frame payloads, after checking the frame counts
    (1..16 new, 0..3 redundant) and that every payload has that size (both packet versions).

    Raises:
        PacketError: a count out of range or payloads of different sizes.
    """
    if not 1 <= len(frames) <= MAX_NEW_FRAMES:
        raise PacketError(f"an audio packet carries 1..{MAX_NEW_FRAMES} new frames, "
                          f"got {len(frames)}")
    if len(redundant) > MAX_REDUNDANCY:
        raise PacketError(f"at most {MAX_REDUNDANCY} redundant frames, got {len(redundant)}")
    sizes = {len(p) for p in frames + redundant}
    if len(sizes) != 1:
        raise PacketError(f"all frame payloads must have the same size, got sizes "
                          f"{sorted(sizes)}")
    return sizes.pop()


@dataclass(frozen=True)
class AudioPacket:
    """One audio packet: ``n_new`` new frames plus up to 3 redundant copies of earlier frames."""

    codec_id: int
    """Codec variant id (0..255)."""
    seq: int
    """Packet sequence number (0..65535, wraps)."""
    frame_index: int
    """Frame counter of the first new frame (0..2**32-1, wraps)."""
    frames: tuple[bytes, ...]
    """New frame payloads, in frame order (1..16 of them, all the same length)."""
    redundant: tuple[bytes, ...] = ()
    """Copies of the frames just before ``frame_index``, oldest first (0..3 of them)."""
    flags: int = 0
    """Bit set of ``FLAG_START`` / ``FLAG_SILENCE`` / ``FLAG_END``."""

    def __post_init__(self) -> None:
        if not 0 <= self.codec_id <= 0xFF:
            raise PacketError(f"codec id must be in 0..255, got {self.codec_id!r}")
        _u16(self.seq, "sequence number")
        if not 0 <= self.frame_index <= 0xFFFFFFFF:
            raise PacketError(f"frame index must be in 0..2**32-1, got {self.frame_index!r}")
        if self.flags & ~_KNOWN_FLAGS or self.flags < 0:
            raise PacketError(f"unknown flag bits in 0x{self.flags:02x}")
        size = payload_size(self.frames, self.redundant)
        if not 1 <= size <= MAX_FRAME_BYTES:
            raise PacketError(f"frame payload size must be 1..{MAX_FRAME_BYTES} bytes, got {size}")

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame payload."""
        return len(self.frames[0])

    @property
    def last_frame_index(self) -> int:
        """Frame counter of the last new frame (wrapped to 32 bits)."""
        return (self.frame_index + len(self.frames) - 1) & 0xFFFFFFFF

    def to_bytes(self) -> bytes:
        """Serialise to the wire format (see the module docstring)."""
        header = _AUDIO.pack(MAGIC, VERSION, TYPE_AUDIO, self.codec_id, self.flags, self.seq,
                             self.frame_index, self.frame_bytes, len(self.frames),
                             len(self.redundant))
        return header + b"".join(self.redundant) + b"".join(self.frames)


@dataclass(frozen=True)
class LossReport:
    """Receiver -> sender statistics for one report interval."""

    report_seq: int
    """Report counter (0..65535, wraps)."""
    highest_seq: int
    """Highest packet sequence number received so far (0..65535)."""
    expected: int
    """Packets the sender sent in the interval, as far as the receiver can tell (0..65535)."""
    received: int
    """Packets that arrived in the interval (0..65535)."""
    loss_rate: float
    """Packet loss fraction in the interval, in [0, 1] (quantised to 1/65535)."""
    mean_burst: float
    """Mean length of runs of consecutive lost packets, in packets (0..255.996, 1/256 steps)."""
    residual_loss: float = 0.0
    """Fraction of frames that had to be concealed after redundancy, in [0, 1]."""
    jitter_ms: int = 0
    """Arrival jitter estimate in milliseconds (0..65535)."""
    playout_delay_ms: int = 0
    """Receiver's current playout delay in milliseconds (0..65535)."""

    def __post_init__(self) -> None:
        for name in ("report_seq", "highest_seq", "expected", "received", "jitter_ms",
                     "playout_delay_ms"):
            _u16(getattr(self, name), name)
        _q16(self.loss_rate, "loss_rate")
        _q16(self.residual_loss, "residual_loss")
        if not 0.0 <= self.mean_burst <= 0xFFFF / 256:
            raise PacketError(f"mean_burst must be in [0, 255.99], got {self.mean_burst!r}")

    def to_bytes(self) -> bytes:
        """Serialise to the wire format (see the module docstring)."""
        return _REPORT.pack(MAGIC, VERSION, TYPE_LOSS_REPORT, self.report_seq, self.highest_seq,
                            self.expected, self.received, _q16(self.loss_rate, "loss_rate"),
                            round(self.mean_burst * 256),
                            _q16(self.residual_loss, "residual_loss"), self.jitter_ms,
                            self.playout_delay_ms)


def parse_packet(data: bytes | bytearray | memoryview) -> AudioPacket | LossReport:
    """Parse one message.

    Args:
        data: the bytes of one datagram.

    Returns:
        An :class:`AudioPacket` or a :class:`LossReport`.

    Raises:
        PacketError: the message is truncated, has a bad magic, version, type, length or
            field value. No other exception escapes for any input bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PacketError(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < _PREAMBLE.size:
        raise PacketError(f"truncated: {len(raw)} bytes, a message has at least "
                          f"{_PREAMBLE.size}")
    magic, version, kind = _PREAMBLE.unpack_from(raw)
    if magic != MAGIC:
        raise PacketError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise PacketError(f"unsupported version {version}, expected {VERSION}")
    if kind == TYPE_AUDIO:
        return _parse_audio(raw)
    if kind == TYPE_LOSS_REPORT:
        return _parse_report(raw)
    raise PacketError(f"unknown message type {kind}, expected {TYPE_AUDIO} (audio) or "
                      f"{TYPE_LOSS_REPORT} (loss report)")



def _parse_audio(raw: bytes) -> AudioPacket:
    if len(raw) < AUDIO_HEADER_SIZE:
        raise PacketError(f"truncated audio header: {len(raw)} of {AUDIO_HEADER_SIZE} bytes")
    (_, _, _, codec_id, flags, seq, frame_index, frame_bytes, n_new,
     n_red) = _AUDIO.unpack_from(raw)
    if flags & ~_KNOWN_FLAGS:
        raise PacketError(f"reserved flag bits set in 0x{flags:02x}")
    if frame_bytes == 0:
        raise PacketError("bad frame size 0")
    if not 1 <= n_new <= MAX_NEW_FRAMES:
        raise PacketError(f"bad new-frame count {n_new}, expected 1..{MAX_NEW_FRAMES}")
    if n_red > MAX_REDUNDANCY:
        raise PacketError(f"bad redundancy count {n_red}, expected 0..{MAX_REDUNDANCY}")
    want = AUDIO_HEADER_SIZE + (n_new + n_red) * frame_bytes
    if len(raw) < want:
        raise PacketError(f"truncated audio packet: {len(raw)} bytes, header announces {want}")
    if len(raw) > want:
        raise PacketError(f"bad length: {len(raw)} bytes, header announces {want}")
    chunks = [raw[AUDIO_HEADER_SIZE + i * frame_bytes:AUDIO_HEADER_SIZE + (i + 1) * frame_bytes]
              for i in range(n_red + n_new)]
    return AudioPacket(codec_id=codec_id, seq=seq, frame_index=frame_index,
                       frames=tuple(chunks[n_red:]), redundant=tuple(chunks[:n_red]),
                       flags=flags)


def _parse_report(raw: bytes) -> LossReport:
    if len(raw) < LOSS_REPORT_SIZE:
        raise PacketError(f"truncated loss report: {len(raw)} of {LOSS_REPORT_SIZE} bytes")
    if len(raw) > LOSS_REPORT_SIZE:
        raise PacketError(f"bad length: loss report of {len(raw)} bytes, expected "
                          f"{LOSS_REPORT_SIZE}")
    (_, _, _, report_seq, highest, expected, received, loss_q, burst_q, resid_q, jitter,
     playout) = _REPORT.unpack(raw)
    return LossReport(report_seq=report_seq, highest_seq=highest, expected=expected,
                      received=received, loss_rate=loss_q / 0xFFFF, mean_burst=burst_q / 256,
                      residual_loss=resid_q / 0xFFFF, jitter_ms=jitter,
                      playout_delay_ms=playout)
