"""A serial line (radio modem, serial port, pseudo-terminal, pipe) as a datagram
:class:`~voip_codec.transport.link.Link`.

Datagrams travel as KISS-style frames (:mod:`voip_codec.wire.kiss`: ``FEND``-delimited, byte
stuffed, CRC-16 checked), so a frame hit by a bit error or a dropped byte is dropped and counted
and the receiver resynchronises at the next delimiter: bit errors lose frames, never the stream.

:class:`SerialLink` works on any file descriptor (a pyserial port's, a pty's, a pipe's), read
with ``loop.add_reader`` and written without blocking. When the line rate is known it paces
itself: it tracks when the line will have sent what it was given and drops (and counts) a
datagram that would wait more than ``max_backlog_s`` behind the others, so a sender faster than
the line loses packets instead of building up seconds of delay in the kernel's buffer.

:func:`open_serial_link` opens a device with pyserial (8N1, raw) from a spec such as
``/dev/ttyUSB0@2400``; its errors are :class:`SerialLinkError` with a one-line message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..wire.kiss import KissDecoder, kiss_frame
from .link import LinkBase

__all__ = [
    "DEFAULT_BAUD",
    "SERIAL_MTU",
    "SerialLink",
    "SerialLinkError",
    "SerialSpec",
    "open_serial_link",
    "parse_serial_spec",
]

logger = logging.getLogger(__name__)

SERIAL_MTU = 255
"""Default largest datagram on a serial link, bytes (a v1 packet of 16 frames of 14 bytes)."""

DEFAULT_BAUD = 2400
"""Line rate of a serial spec without ``@BAUD``."""

BITS_PER_BYTE_8N1 = 10
"""Bits on the line per byte with one start bit, 8 data bits, no parity and one stop bit."""

_READ_SIZE = 4096


class SerialLinkError(Exception):
    """A serial link cannot be opened (bad spec, missing device, no permission, no pyserial).

    The message is one line that says what to fix.
    """


@dataclass(frozen=True)
class SerialSpec:
    """A parsed ``DEVICE[@BAUD]`` spec."""

    device: str
    """Path of the serial device, e.g. ``/dev/ttyUSB0``."""
    baud: int
    """Line rate in bit/s."""


def parse_serial_spec(text: str) -> SerialSpec:
    """Parse ``DEVICE[@BAUD]`` (the part after ``serial:`` of ``--link serial:...``).

    Args:
        text: e.g. ``"/dev/ttyUSB0@2400"``; without ``@BAUD`` the rate is :data:`DEFAULT_BAUD`.

    Returns:
        The device and line rate.

    Raises:
        SerialLinkError: no device, or a baud rate that is not a whole number of bit/s in
            50..4000000.
    """
    device, sep, baud_text = text.rpartition("@")
    if not sep:
        device, baud_text = text, str(DEFAULT_BAUD)
    if not device:
        raise SerialLinkError(f"serial link {text!r} names no device; write it as "
                              "serial:/dev/ttyUSB0@2400")
    try:
        baud = int(baud_text)
    except ValueError:
        raise SerialLinkError(f"bad baud rate {baud_text!r} in serial:{text}: give a whole "
                              "number of bit/s, e.g. serial:/dev/ttyUSB0@2400") from None
    if not 50 <= baud <= 4_000_000:
        raise SerialLinkError(f"bad baud rate {baud} in serial:{text}: it must be in "
                              "50..4000000 bit/s")
    return SerialSpec(device, baud)


class SerialLink(LinkBase):
    """Datagrams as KISS-style frames on a byte stream.

    Create it inside a running event loop: it starts reading at once.

    Args:
        fd: file descriptor to read (and, without ``write_fd``, to write); it is switched to
            non-blocking mode. The caller keeps ownership (see ``on_close``).
        write_fd: a separate descriptor to write (e.g. the other end of a pipe pair).
        baud: line rate in bit/s, for pacing; None: unknown, write as fast as the stream takes.
        bits_per_byte: line bits per byte (10 for 8N1).
        max_backlog_s: a datagram that would wait longer than this behind the bytes already
            given to the line is dropped (only with ``baud``).
        mtu: largest datagram, bytes (larger frames from the peer are dropped as oversize).
        name: name for logs.
        on_close: called once by :meth:`close` (e.g. a pyserial port's ``close``).
    """

    def __init__(self, fd: int, *, write_fd: int | None = None, baud: int | None = None,
                 bits_per_byte: int = BITS_PER_BYTE_8N1, max_backlog_s: float = 0.3,
                 mtu: int = SERIAL_MTU, name: str = "serial",
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__(name, mtu)
        if baud is not None and baud <= 0:
            raise ValueError(f"baud must be > 0, got {baud}")
        self._loop = asyncio.get_running_loop()
        self._rfd = fd
        self._wfd = fd if write_fd is None else write_fd
        for f in {self._rfd, self._wfd}:
            os.set_blocking(f, False)
        self.baud = baud
        self.byte_time_s = None if baud is None else bits_per_byte / baud
        """Seconds the line needs per byte (None when the rate is unknown)."""
        self.max_backlog_s = max_backlog_s
        self.decoder = KissDecoder(mtu)
        self._on_close = on_close
        self._out = bytearray()
        self._writing = False
        self._line_free_at = 0.0
        self.datagrams_sent = 0
        """Datagrams framed and written."""
        self.bytes_sent = 0
        """Bytes given to the stream (delimiters, stuffing and CRC included)."""
        self.backlog_drops = 0
        """Datagrams dropped because the line was too far behind (also in ``dropped``)."""
        self.datagrams_received = 0
        """Good frames received and handed to the receiver."""
        self.read_error: str | None = None
        """Why reading stopped (the device went away), or None."""
        self._loop.add_reader(self._rfd, self._on_readable)
        self._reading = True

    # ------------------------------------------------------------------ send
    def send(self, data: bytes) -> None:
        """Frame and write one datagram (see :class:`Link`); dropped and counted when the link
        is closed or the line is more than ``max_backlog_s`` behind."""
        self._check_size(data)
        if self.closed:
            self.dropped += 1
            return
        frame = kiss_frame(data)
        if self.byte_time_s is not None:
            now = self._loop.time()
            start = max(now, self._line_free_at)
            if start - now > self.max_backlog_s:
                self.dropped += 1
                self.backlog_drops += 1
                return
            self._line_free_at = start + len(frame) * self.byte_time_s
        elif len(self._out) > 64 * 1024:  # unknown rate and the stream stopped taking bytes
            self.dropped += 1
            return
        self.datagrams_sent += 1
        self.bytes_sent += len(frame)
        self._out += frame
        self._flush()

    @property
    def backlog_s(self) -> float:
        """Seconds until the line has sent what it was given (0 when the rate is unknown)."""
        if self.byte_time_s is None:
            return 0.0
        return max(0.0, self._line_free_at - self._loop.time())

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self._wfd, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                logger.debug("%s: write failed: %s", self.name, exc)
                self.dropped += 1
                self._out.clear()
                break
            del self._out[:n]
        if self._out and not self._writing:
            self._loop.add_writer(self._wfd, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._wfd)
            self._writing = False

    # ------------------------------------------------------------------ receive
    def _on_readable(self) -> None:
        try:
            data = os.read(self._rfd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the other end of a pty closed; the device was unplugged
            self._stop_reading(os.strerror(exc.errno) if exc.errno else str(exc))
            return
        if not data:
            self._stop_reading("end of stream")
            return
        for datagram in self.decoder.feed(data):
            self.datagrams_received += 1
            self._receive(datagram)

    def _stop_reading(self, reason: str) -> None:
        if self._reading:
            self._loop.remove_reader(self._rfd)
            self._reading = False
            self.read_error = reason
            logger.info("%s: stopped reading: %s", self.name, reason)

    # ------------------------------------------------------------------ close
    def close(self) -> None:
        """Stop reading and writing (pending bytes are discarded) and call ``on_close``."""
        if self.closed:
            return
        super().close()
        if self._reading:
            self._loop.remove_reader(self._rfd)
            self._reading = False
        if self._writing:
            self._loop.remove_writer(self._wfd)
            self._writing = False
        self._out.clear()
        if self._on_close is not None:
            self._on_close()

    def stats(self) -> dict[str, Any]:
        """Counters of both directions as a JSON-ready dict (the decoder's under ``rx``)."""
        return {"baud": self.baud, "datagrams_sent": self.datagrams_sent,
                "bytes_sent": self.bytes_sent, "dropped": self.dropped,
                "backlog_drops": self.backlog_drops,
                "datagrams_received": self.datagrams_received,
                "rx": self.decoder.stats.to_dict()}


def open_serial_link(spec: str | SerialSpec, *, name: str | None = None,
                     **kwargs: Any) -> SerialLink:
    """Open a serial device with pyserial (8N1, raw, non-blocking) as a :class:`SerialLink`.

    Call it inside a running event loop. The port is closed with the link.

    Args:
        spec: ``DEVICE[@BAUD]`` (see :func:`parse_serial_spec`) or a parsed spec.
        name: link name (default ``serial:DEVICE@BAUD``).
        **kwargs: passed to :class:`SerialLink` (``max_backlog_s``, ``mtu``).

    Raises:
        SerialLinkError: bad spec, no such device, permission denied, device busy, a rate the
            device refuses, or pyserial not installed (one-line message each).
    """
    if isinstance(spec, str):
        spec = parse_serial_spec(spec)
    try:
        import serial
    except ImportError:
        raise SerialLinkError("serial links need pyserial: pip install 'voip-codec[serial]'"
                              ) from None
    where = f"serial:{spec.device}@{spec.baud}"
    if not os.path.exists(spec.device):
        raise SerialLinkError(f"serial device {spec.device} does not exist (is the modem "
                              "plugged in? `ls /dev/tty*` lists the ports)")
    try:
        port = serial.Serial(spec.device, spec.baud, bytesize=serial.EIGHTBITS,
                             parity=serial.PARITY_NONE, stopbits=serial.STOPBITS_ONE,
                             timeout=0, write_timeout=0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialLinkError(_open_error(spec, exc)) from None
    return SerialLink(port.fileno(), baud=spec.baud, name=name or where, on_close=port.close,
                      **kwargs)


def _errno(exc: BaseException | None) -> int | None:
    """The errno behind an exception, also where pyserial wrapped an OSError or a
    ``termios.error`` (whose first argument is the errno)."""
    while exc is not None:
        code = getattr(exc, "errno", None)
        if isinstance(code, int):
            return code
        if exc.args and isinstance(exc.args[0], int) and type(exc).__name__ == "error":
            return int(exc.args[0])
        exc = exc.__cause__ or exc.__context__
    return None


def _open_error(spec: SerialSpec, exc: Exception) -> str:
    code = _errno(exc)
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied on serial device {spec.device} (add your user to the "
                "group that owns it, e.g. `sudo usermod -aG dialout $USER`, then log in again)")
    if code == errno.ENOENT:
        return f"serial device {spec.device} does not exist"
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK):
        return f"serial device {spec.device} is in use by another program"
    if code == errno.ENOTTY:
        return f"{spec.device} is not a serial device"
    if code == errno.EINVAL or isinstance(exc, ValueError):
        return f"serial device {spec.device} refuses the line rate {spec.baud} bit/s"
    text = " ".join(str(exc).split())
    return f"cannot open serial device {spec.device}: {text}"
