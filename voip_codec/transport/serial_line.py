"""A simulated serial line between two pseudo-terminals: rate cap, bit errors, dropped bytes.

:class:`PtyLine` opens two pty pairs and relays, in a thread, what is written to one pty's
device to the other's, and back, as a UART at ``baud`` would carry it: one byte every
``bits_per_byte / baud`` seconds (10 bits per byte for 8N1), bytes waiting their turn in a queue
like a modem's buffer. On the way it flips bits (``bit_error_rate`` per bit) and drops bytes
(``byte_drop_rate`` per byte), both seeded. Each side opens its end by path (:attr:`paths`,
e.g. with pyserial) or uses the file descriptor (:attr:`fds`) as a plain byte stream.

Used by ``voip-codec demo --link serial`` and the serial link tests; it touches only the ptys it
opened.
"""

from __future__ import annotations

import math
import os
import random
import select
import threading
import time
import tty
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LineConditions", "LineDirectionStats", "PtyLine"]


@dataclass(frozen=True)
class LineConditions:
    """What the simulated line does to the bytes of one direction."""

    baud: int = 2400
    """Line rate in bit/s."""
    bits_per_byte: int = 10
    """Line bits per byte (8N1: start + 8 data + stop = 10)."""
    bit_error_rate: float = 0.0
    """Probability that a bit is flipped."""
    byte_drop_rate: float = 0.0
    """Probability that a byte is lost (e.g. a UART overrun)."""

    def __post_init__(self) -> None:
        if self.baud <= 0 or self.bits_per_byte <= 0:
            raise ValueError(f"baud and bits_per_byte must be > 0, got {self.baud}, "
                             f"{self.bits_per_byte}")
        for name in ("bit_error_rate", "byte_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class LineDirectionStats:
    """Counters of one direction of a :class:`PtyLine`."""

    bytes_in: int = 0
    """Bytes written by the sending side."""
    bytes_out: int = 0
    """Bytes delivered to the receiving side."""
    bits_flipped: int = 0
    bytes_dropped: int = 0
    overflow: int = 0
    """Bytes the receiving side's pty did not take (nobody reading)."""
    max_queue_bytes: int = 0
    """Longest queue of bytes waiting for the line."""
    first_byte_at: float | None = field(default=None, repr=False)
    last_byte_at: float | None = field(default=None, repr=False)

    def utilisation(self, baud: int, bits_per_byte: int = 10) -> float:
        """Share of the line rate used between the first and the last byte delivered."""
        if self.first_byte_at is None or self.last_byte_at is None:
            return 0.0
        span = self.last_byte_at - self.first_byte_at
        if span <= 0:
            return 0.0
        return min(1.0, self.bytes_out * bits_per_byte / baud / span)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters (times left out)."""
        out = asdict(self)
        out.pop("first_byte_at")
        out.pop("last_byte_at")
        return out


class _Direction:
    def __init__(self, src: int, dst: int, cond: LineConditions, rng: random.Random) -> None:
        self.src, self.dst, self.cond, self.rng = src, dst, cond, rng
        self.byte_time = cond.bits_per_byte / cond.baud
        self.queue = bytearray()
        self.sent_until = 0.0  # when the line finished the last byte taken from the queue
        self.stats = LineDirectionStats()
        self.open = True
        self._next_flip = self._skip(cond.bit_error_rate)
        self._next_drop = self._skip(cond.byte_drop_rate)

    def _skip(self, p: float) -> float:
        """Events to wait until the next one (geometric), or inf for p = 0."""
        if p <= 0.0:
            return math.inf
        return math.floor(math.log(1.0 - self.rng.random()) / math.log(1.0 - p))

    def take(self, data: bytes, now: float) -> None:
        if not self.queue:
            self.sent_until = max(self.sent_until, now)
        self.queue += data
        self.stats.bytes_in += len(data)
        self.stats.max_queue_bytes = max(self.stats.max_queue_bytes, len(self.queue))

    def due_in(self, now: float) -> float | None:
        if not self.queue:
            return None
        return max(0.0, self.sent_until + self.byte_time - now)

    def deliver(self, now: float) -> None:
        n = min(len(self.queue), int((now - self.sent_until) / self.byte_time + 1e-9))
        if n <= 0:
            return
        chunk = bytearray(self.queue[:n])
        del self.queue[:n]
        self.sent_until += n * self.byte_time
        out = self._impair(chunk)
        self.stats.first_byte_at = self.stats.first_byte_at or now
        self.stats.last_byte_at = now
        if out:
            try:
                written = os.write(self.dst, out)
            except BlockingIOError:
                written = 0
            except OSError:
                written, self.open = 0, False
            self.stats.overflow += len(out) - written
            self.stats.bytes_out += written

    def _impair(self, chunk: bytearray) -> bytes:
        bits = 8 * len(chunk)
        while self._next_flip < bits:
            pos = int(self._next_flip)
            chunk[pos // 8] ^= 1 << (pos % 8)
            self.stats.bits_flipped += 1
            self._next_flip += 1 + self._skip(self.cond.bit_error_rate)
        self._next_flip -= bits
        if self._next_drop >= len(chunk):
            self._next_drop -= len(chunk)
            return bytes(chunk)
        keep = bytearray()
        for byte in chunk:
            if self._next_drop == 0:
                self.stats.bytes_dropped += 1
                self._next_drop = self._skip(self.cond.byte_drop_rate)
            else:
                keep.append(byte)
                self._next_drop -= 1
        return bytes(keep)


class PtyLine:
    """Two pseudo-terminals joined by a simulated serial line (see the module docstring).

    Args:
        a_to_b: conditions of what side A writes, as side B reads it.
        b_to_a: conditions of the other direction (default: the same as ``a_to_b``).
        seed: seed of the impairments (``b_to_a`` uses ``seed + 1``).
    """

    def __init__(self, a_to_b: LineConditions | None = None,
                 b_to_a: LineConditions | None = None, seed: int = 0) -> None:
        self.a_to_b = a_to_b or LineConditions()
        self.b_to_a = b_to_a or self.a_to_b
        self.seed = seed
        self._fds: list[int] = []
        self._thread: threading.Thread | None = None
        self._stop = False
        self._dirs: dict[str, _Direction] = {}
        self._wake = (-1, -1)
        self.paths: tuple[str, str] = ("", "")
        """Device paths of side A's and side B's pty."""
        self.fds: tuple[int, int] = (-1, -1)
        """File descriptors of side A's and side B's pty device (raw mode)."""

    def start(self) -> None:
        """Open the ptys (raw mode) and start the relay thread."""
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        self._fds = [master_a, slave_a, master_b, slave_b]
        wake_r, wake_w = os.pipe()
        self._fds += [wake_r, wake_w]
        self._wake = (wake_r, wake_w)
        for fd in (slave_a, slave_b):
            tty.setraw(fd)
        for fd in (master_a, master_b, wake_r):
            os.set_blocking(fd, False)
        self.paths = (os.ttyname(slave_a), os.ttyname(slave_b))
        self.fds = (slave_a, slave_b)
        self._dirs = {"ab": _Direction(master_a, master_b, self.a_to_b, random.Random(self.seed)),
                      "ba": _Direction(master_b, master_a, self.b_to_a,
                                       random.Random(self.seed + 1))}
        self._thread = threading.Thread(target=self._run, name="pty-line", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict[str, LineDirectionStats]:
        """Counters per direction: ``"ab"`` (A writes, B reads) and ``"ba"``."""
        return {k: d.stats for k, d in self._dirs.items()}

    def _run(self) -> None:
        dirs = list(self._dirs.values())
        wake_r = self._wake[0]
        while not self._stop:
            now = time.monotonic()
            waits = [w for w in (d.due_in(now) for d in dirs) if w is not None]
            timeout = min(waits) if waits else 0.5
            readers = [d.src for d in dirs if d.open] + [wake_r]
            try:
                ready, _, _ = select.select(readers, [], [], timeout)
            except (OSError, ValueError):
                return
            now = time.monotonic()
            for d in dirs:
                if d.src in ready:
                    try:
                        data = os.read(d.src, 4096)
                    except BlockingIOError:
                        data = b""
                    except OSError:  # EIO: every holder of the pty device closed it
                        d.open = False
                        data = b""
                    if data:
                        d.take(data, now)
                d.deliver(now)

    def close(self) -> None:
        """Stop the thread and close the ptys (idempotent)."""
        self._stop = True
        if self._thread is not None:
            os.write(self._wake[1], b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    def __enter__(self) -> PtyLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
