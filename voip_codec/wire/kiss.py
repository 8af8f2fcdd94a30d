"""KISS-style framing of datagrams on a byte stream (serial ports, radio modems, pipes).

A byte stream has no datagram boundaries and, on a radio or a noisy serial line, no integrity
check. Each datagram is sent as one frame::

    FEND | stuffed(datagram | CRC-16) | FEND

* ``FEND`` (0xC0) opens and closes every frame. Both delimiters are sent so that line noise
  between frames (or a lost closing ``FEND``) costs at most the frame it touches: the receiver
  always resynchronises at the next ``FEND``. Empty frames (``FEND FEND``) are ignored.
* Byte stuffing as in KISS (and SLIP): a ``FEND`` byte inside the frame is sent as
  ``FESC TFEND`` (0xDB 0xDC), a ``FESC`` byte as ``FESC TFESC`` (0xDB 0xDD). No other byte is
  changed, so on random payloads stuffing costs 2/256 of a byte per byte on average.
* CRC-16/X-25 (the HDLC and AX.25 frame check: polynomial 0x1021 reflected, initial value and
  final XOR 0xFFFF) of the datagram, appended least significant byte first, because the modem
  gives none. KISS's command byte is left out: the stream carries only our datagrams.

:class:`KissDecoder` takes bytes as they arrive, in chunks of any size, and returns the good
datagrams. Frames with a bad CRC, a bad escape, fewer than 3 bytes, or more than its
``max_datagram + 2`` bytes are dropped and counted (an overlong run of garbage is discarded
until the next ``FEND``, so memory stays bounded); none of them raises.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "FEND",
    "FESC",
    "TFEND",
    "TFESC",
    "KissDecoder",
    "KissStats",
    "crc16_x25",
    "kiss_frame",
    "kiss_frame_size",
]

FEND = 0xC0
"""Frame delimiter."""
FESC = 0xDB
"""Escape: the next byte is TFEND or TFESC."""
TFEND = 0xDC
"""After FESC: a data byte 0xC0."""
TFESC = 0xDD
"""After FESC: a data byte 0xDB."""

CRC_SIZE = 2
"""Bytes of frame check appended to each datagram."""


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16_x25(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X-25 of ``data`` (``crc16_x25(b"123456789") == 0x906E``).

    Args:
        data: the bytes to check.

    Returns:
        The 16-bit frame check value.
    """
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _stuff(data: bytes) -> bytes:
    return data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def kiss_frame(datagram: bytes | bytearray | memoryview) -> bytes:
    """The bytes that carry one datagram on the stream (delimiters, stuffing and CRC included).

    Args:
        datagram: the datagram, at least one byte.

    Returns:
        ``FEND + stuffed(datagram + crc) + FEND``.

    Raises:
        ValueError: ``datagram`` is empty (the decoder would count it as a runt).
    """
    body = bytes(datagram)
    if not body:
        raise ValueError("an empty datagram cannot be framed")
    crc = crc16_x25(body)
    return b"\xc0" + _stuff(body + bytes((crc & 0xFF, crc >> 8))) + b"\xc0"


def kiss_frame_size(datagram_bytes: int) -> int:
    """Bytes on the stream for a datagram of ``datagram_bytes`` bytes without any byte to stuff
    (two delimiters, the datagram, two CRC bytes); each 0xC0 or 0xDB byte adds one more."""
    return datagram_bytes + CRC_SIZE + 2


@dataclass
class KissStats:
    """What a :class:`KissDecoder` saw."""

    bytes_in: int = 0
    """Bytes fed."""
    frames: int = 0
    """Good frames (CRC correct) returned as datagrams."""
    crc_errors: int = 0
    """Frames dropped for a bad CRC."""
    bad_escapes: int = 0
    """Frames dropped for an escape byte followed by anything but TFEND or TFESC."""
    runts: int = 0
    """Frames dropped for being too short to hold a CRC and one byte."""
    oversize: int = 0
    """Runs of more than ``max_datagram + 2`` bytes without a delimiter, discarded."""

    @property
    def dropped(self) -> int:
        """Frames dropped, whatever the reason."""
        return self.crc_errors + self.bad_escapes + self.runts + self.oversize

    def to_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (``dropped`` included)."""
        return {**asdict(self), "dropped": self.dropped}


class KissDecoder:
    """Finds frames in a byte stream, checks them and returns their datagrams.

    Args:
        max_datagram: largest datagram accepted; longer frames are discarded.
    """

    def __init__(self, max_datagram: int = 1024) -> None:
        if max_datagram < 1:
            raise ValueError(f"max_datagram must be >= 1, got {max_datagram}")
        self.max_datagram = max_datagram
        self.stats = KissStats()
        self._buf = bytearray()
        self._escaped = False
        self._bad_escape = False
        self._discarding = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next bytes of the stream.

        Args:
            data: any number of bytes, cut anywhere.

        Returns:
            The datagrams of the frames that ended in ``data`` and passed the check, in order.
        """
        out: list[bytes] = []
        data = bytes(data)
        self.stats.bytes_in += len(data)
        limit = self.max_datagram + CRC_SIZE
        start = 0
        while start <= len(data):
            end = data.find(b"\xc0", start)
            chunk = data[start:] if end < 0 else data[start:end]
            if chunk and not self._discarding:
                self._unstuff(chunk)
                if len(self._buf) > limit:
                    self.stats.oversize += 1
                    self._reset()
                    self._discarding = True
            if end < 0:
                break
            datagram = self._end_frame()
            if datagram is not None:
                out.append(datagram)
            start = end + 1
        return out

    def _unstuff(self, chunk: bytes) -> None:
        buf = self._buf
        i = 0
        if self._escaped:
            self._escaped = False
            self._escape_byte(chunk[0])
            i = 1
        while i < len(chunk):
            j = chunk.find(b"\xdb", i)
            if j < 0:
                buf += chunk[i:]
                return
            buf += chunk[i:j]
            if j + 1 == len(chunk):
                self._escaped = True
                return
            self._escape_byte(chunk[j + 1])
            i = j + 2

    def _escape_byte(self, byte: int) -> None:
        if byte == TFEND:
            self._buf.append(FEND)
        elif byte == TFESC:
            self._buf.append(FESC)
        else:
            self._bad_escape = True

    def _end_frame(self) -> bytes | None:
        """A delimiter: close the frame in progress (if any) and check it."""
        if self._discarding:
            self._discarding = False
            self._reset()
            return None
        buf, bad_escape = self._buf, self._bad_escape or self._escaped
        self._reset()
        if not buf and not bad_escape:
            return None  # FEND FEND: an empty frame between delimiters
        if bad_escape:
            self.stats.bad_escapes += 1
            return None
        if len(buf) <= CRC_SIZE:
            self.stats.runts += 1
            return None
        body = bytes(buf[:-CRC_SIZE])
        if crc16_x25(body) != buf[-2] | (buf[-1] << 8):
            self.stats.crc_errors += 1
            return None
        self.stats.frames += 1
        return body

    def _reset(self) -> None:
        self._buf = bytearray()
        self._escaped = False
        self._bad_escape = False
