"""Delayed and bundled SACKs for aiortc's SCTP transport (a lighter WebRTC data channel).

aiortc 1.16 acknowledges every SCTP packet that carries DATA with a SACK packet of its own
(``RTCSctpTransport._handle_data`` ends with ``_send_sack()``) and sends every chunk in a packet
of its own (``_send_chunk``). At 0.8 kbps of codec payload that doubles the packet rate of a
call: each SACK costs about 93 bytes on an IPv4 wire (IP 20 + UDP 8 + DTLS 37 + SCTP common
header 12 + SACK chunk 16).

:func:`tune_sctp` changes one ``RTCSctpTransport`` instance (never the class, so other
connections in the process keep aiortc's behaviour):

* **Delayed SACKs** (RFC 4960 section 6.2): a SACK is due for every second received packet
  carrying DATA (or FORWARD TSN), and goes out at the latest 200 ms after the first packet it
  acknowledges. It goes out at once, as the RFC asks, when a packet leaves a gap in the TSN
  sequence, fills one, or carries only duplicates (or an out-of-date FORWARD TSN), so loss
  detection, and with it the abandonment of ``maxRetransmits=0`` messages and the FORWARD TSN
  that moves the peer past them (RFC 3758), is as quick as with aiortc's own SACKs.
* **Bundled SACKs** (section 6.10): a pending SACK rides in the same SCTP packet as our next DATA
  chunk, ahead of it. While this side sends DATA itself (a full-duplex call), a due SACK waits
  for that next chunk instead of leaving alone, still within the 200 ms bound; a chunk takes the
  SACK along when it is due or when the timer would otherwise send it alone before the chunk
  after. At one packet every 80 ms each way, every second audio packet carries a SACK and no
  SACK-only packets remain. This is the one liberty taken with the RFC's "SHOULD ... at least
  every second packet": the SACK for the second packet waits for our next DATA chunk (at most
  one packet interval, never past 200 ms), as a SACK-frequency setting of RFC 6458 would allow.
  A side that only receives SACKs every second packet, exactly as the RFC says.

Nothing changes on the wire format: a stock peer parses bundled packets (aiortc's
``parse_packet`` reads every chunk of a packet) and cannot tell a delayed SACK from a late one.

The change reaches into aiortc's private members, so it is applied only to the aiortc versions
it was tested on (:data:`TESTED_AIORTC`); with any other version :func:`tune_sctp` leaves the
transport alone and logs why, once per process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from struct import pack

import aiortc
from aiortc.rtcsctptransport import (
    SCTP_COMMON_HEADER_LENGTH,
    SCTP_MAX_PACKET_LENGTH,
    Chunk,
    DataChunk,
    ForwardTsnChunk,
    RTCSctpTransport,
    SackChunk,
    crc32c,
    parse_packet,
)

__all__ = [
    "SACK_DELAY_S",
    "SACK_EVERY_PACKETS",
    "TESTED_AIORTC",
    "SackTuning",
    "SackTuningStats",
    "SctpPacketCounter",
    "SctpPacketStats",
    "sack_tuning_unsupported",
    "tune_sctp",
]

logger = logging.getLogger(__name__)

TESTED_AIORTC = ((1, 16), (1, 17))
"""aiortc versions the extension is applied to: ``>= 1.16, < 1.17`` (major, minor)."""

SACK_DELAY_S = 0.2
"""Longest delay of a SACK (RFC 4960 section 6.2: "SHOULD ... 200 ms", at most 500 ms)."""

SACK_EVERY_PACKETS = 2
"""A SACK at least for every this many received packets carrying DATA (RFC 4960: 2)."""

_PRIVATE_MEMBERS = ("_send_sack", "_send_chunk", "_receive_chunk", "_sack_needed",
                    "_sack_misordered", "_sack_duplicates", "_last_received_tsn",
                    "_association_state", "_local_port", "_remote_port",
                    "_remote_verification_tag", "transport")
"""aiortc internals the extension relies on (checked on each transport it is applied to)."""

_warned = False


def _version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def sack_tuning_unsupported(version: str | None = None) -> str | None:
    """Why the extension cannot be applied with this aiortc, or None when it can.

    Args:
        version: an aiortc version string (default: the installed one).
    """
    version = aiortc.__version__ if version is None else version
    low, high = TESTED_AIORTC
    if not low <= _version_tuple(version) < high:
        return (f"aiortc {version} is outside the range the SACK tuning was tested on "
                f"(>= {low[0]}.{low[1]}, < {high[0]}.{high[1]}); using aiortc's own SCTP "
                "acknowledgements")
    return None


@dataclass
class SackTuningStats:
    """What the extension did on one transport."""

    immediate: int = 0
    """SACKs sent alone at once (every second packet while not sending, gaps, duplicates)."""
    delayed: int = 0
    """SACKs sent alone when the delay timer ran out."""
    bundled: int = 0
    """SACKs that went out in the same packet as one of our DATA chunks."""


class SackTuning:
    """Delayed and bundled SACKs on one aiortc SCTP transport (see the module docstring).

    Build it with :func:`tune_sctp`, which checks the aiortc version first. The instance
    replaces the transport's ``_send_sack``, ``_send_chunk`` and ``_receive_chunk`` with its own
    methods (instance attributes: the class and every other transport are untouched) and calls
    the originals to build and send SACKs, so the SACK contents (cumulative TSN, gap blocks,
    duplicates, window) stay aiortc's.

    Args:
        sctp: the transport (``RTCPeerConnection.sctp``), before its association carries data.
        delay_s: longest SACK delay in seconds.
        every_packets: a SACK for at least every this many received packets with DATA.
    """

    def __init__(self, sctp: RTCSctpTransport, *, delay_s: float = SACK_DELAY_S,
                 every_packets: int = SACK_EVERY_PACKETS) -> None:
        if delay_s <= 0 or every_packets < 1:
            raise ValueError(f"delay_s must be > 0 and every_packets >= 1, got {delay_s} "
                             f"and {every_packets}")
        self.sctp = sctp
        self.delay_s = delay_s
        self.every_packets = every_packets
        self.stats = SackTuningStats()
        self._send_sack_now: Callable[[], Awaitable[None]] = sctp._send_sack
        self._send_chunk_alone: Callable[[Chunk], Awaitable[None]] = sctp._send_chunk
        self._receive_chunk_inner: Callable[[Chunk], Awaitable[None]] = sctp._receive_chunk
        self._packet_has_data = False
        """The packet being handled carried DATA or FORWARD TSN (aiortc calls ``_send_sack``
        after every packet while a SACK is pending, also after SACK-only ones)."""
        self._unacked_packets = 0
        self._had_gaps = False
        self._inbound_mark: tuple[int | None, int] = (None, 0)
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        """Loop time at which the pending SACK goes out alone (None: no SACK pending)."""
        self._last_data_at: float | None = None
        self._data_interval: float | None = None
        """Time between this side's last two DATA chunks, seconds."""
        self._capture: list[SackChunk] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        sctp._send_sack = self._sack_due  # type: ignore[method-assign]
        sctp._receive_chunk = self._receive_chunk  # type: ignore[method-assign]
        sctp._send_chunk = self._send_chunk  # type: ignore[method-assign]

    def close(self) -> None:
        """Stop the delay timer (a pending SACK is then never sent; for closing calls)."""
        self._cancel_timer()

    def _established(self) -> bool:
        return bool(self.sctp._association_state == RTCSctpTransport.State.ESTABLISHED)

    async def _receive_chunk(self, chunk: Chunk) -> None:
        """Stands in for ``_receive_chunk``: notes packets that need acknowledging."""
        if isinstance(chunk, (DataChunk, ForwardTsnChunk)):
            self._packet_has_data = True
        await self._receive_chunk_inner(chunk)

    async def _sack_due(self) -> None:
        """Stands in for ``_send_sack`` at the end of each received packet while a SACK is
        pending."""
        if not self._packet_has_data:  # e.g. a SACK-only packet: the pending SACK waits on
            return
        self._packet_has_data = False
        sctp = self.sctp
        loop = asyncio.get_running_loop()
        self._unacked_packets += 1
        gaps = bool(sctp._sack_misordered)
        filled = self._had_gaps and not gaps
        self._had_gaps = gaps
        mark = (sctp._last_received_tsn, len(sctp._sack_misordered))
        stale = mark == self._inbound_mark  # nothing new: duplicates or an old FORWARD TSN
        self._inbound_mark = mark
        if gaps or filled or stale or sctp._sack_duplicates or not self._established():
            self.stats.immediate += 1
            await self._send_now()
            return
        if self._timer is None:
            self._deadline = loop.time() + self.delay_s
            self._timer = loop.call_later(self.delay_s, self._expired)
        if self._unacked_packets >= self.every_packets and not self._sending(loop.time()):
            self.stats.immediate += 1
            await self._send_now()

    def _sending(self, now: float) -> bool:
        """Whether this side sends DATA itself (then our next DATA chunk carries the SACK)."""
        return self._last_data_at is not None and now - self._last_data_at < self.delay_s

    async def _send_now(self) -> None:
        self._cancel_timer()
        self._unacked_packets = 0
        self._packet_has_data = False
        await self._send_sack_now()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadline = None

    def _expired(self) -> None:
        self._timer = None
        self._deadline = None
        if not self.sctp._sack_needed or not self._established():
            return
        task = asyncio.ensure_future(self._send_delayed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_delayed(self) -> None:
        if not self.sctp._sack_needed:  # a DATA chunk carried it meanwhile
            return
        self.stats.delayed += 1
        try:
            await self._send_now()
        except ConnectionError:  # DTLS closed under us: the call is ending
            logger.debug("delayed SACK not sent: the DTLS transport is closed")

    def _bundle_now(self, now: float) -> bool:
        """Whether a DATA chunk sent now takes the pending SACK along.

        It does when the SACK is due (``every_packets`` packets unacknowledged), or when it
        would otherwise be sent alone by the timer before this side's next DATA chunk (expected
        one send interval from now, with a margin).
        """
        if self._unacked_packets >= self.every_packets or self._deadline is None:
            return True
        interval = self._data_interval
        return interval is None or self._deadline - now < 1.25 * interval

    async def _send_chunk(self, chunk: Chunk) -> None:
        """Stands in for ``_send_chunk``: a pending SACK rides along with a DATA chunk."""
        if self._capture is not None and isinstance(chunk, SackChunk):
            self._capture.append(chunk)
            return
        if not isinstance(chunk, DataChunk):
            await self._send_chunk_alone(chunk)
            return
        now = asyncio.get_running_loop().time()
        if self._last_data_at is not None and now > self._last_data_at:
            self._data_interval = now - self._last_data_at
        self._last_data_at = now
        if not (self.sctp._sack_needed and self._established() and self._bundle_now(now)):
            await self._send_chunk_alone(chunk)
            return
        captured: list[SackChunk] = []
        self._capture = captured
        try:
            await self._send_sack_now()  # builds the SACK and clears the pending state
        finally:
            self._capture = None
        self._cancel_timer()
        self._unacked_packets = 0
        self._packet_has_data = False
        body = b"".join(bytes(c) for c in (*captured, chunk))
        if len(body) > SCTP_MAX_PACKET_LENGTH - SCTP_COMMON_HEADER_LENGTH:
            for c in (*captured, chunk):  # too big together: one packet each, as aiortc does
                await self._send_chunk_alone(c)
            self.stats.immediate += len(captured)
            return
        self.stats.bundled += len(captured)
        await self._send_packet(body)

    async def _send_packet(self, body: bytes) -> None:
        sctp = self.sctp
        header = pack("!HHL", sctp._local_port, sctp._remote_port, sctp._remote_verification_tag)
        checksum = crc32c(header + b"\x00\x00\x00\x00" + body)
        await sctp.transport._send_data(header + pack("<L", checksum) + body)


def tune_sctp(sctp: RTCSctpTransport, *, delay_s: float = SACK_DELAY_S,
              every_packets: int = SACK_EVERY_PACKETS) -> SackTuning | None:
    """Delayed and bundled SACKs on ``sctp`` if this aiortc is one the extension was tested on.

    Call it once the peer connection has its SCTP transport (after ``createDataChannel`` on the
    offerer, after ``setRemoteDescription`` on the answerer) and before data flows. A second
    call on the same transport returns the first tuning.

    Args:
        sctp: ``RTCPeerConnection.sctp``.
        delay_s: longest SACK delay in seconds.
        every_packets: a SACK for at least every this many received packets with DATA.

    Returns:
        The tuning, or None when the installed aiortc is outside :data:`TESTED_AIORTC` (the
        transport then keeps aiortc's behaviour; the reason is logged once per process).
    """
    global _warned
    existing = getattr(sctp, "_voip_codec_sack_tuning", None)
    if isinstance(existing, SackTuning):
        return existing
    reason = sack_tuning_unsupported()
    if reason is None:
        missing = [m for m in _PRIVATE_MEMBERS if not hasattr(sctp, m)]
        if missing:
            reason = (f"aiortc {aiortc.__version__}'s RTCSctpTransport lacks "
                      f"{', '.join(missing)}; using aiortc's own SCTP acknowledgements")
    if reason is not None:
        if not _warned:
            logger.warning("SACK tuning off: %s", reason)
            _warned = True
        return None
    tuning = SackTuning(sctp, delay_s=delay_s, every_packets=every_packets)
    sctp._voip_codec_sack_tuning = tuning  # type: ignore[attr-defined]
    return tuning


@dataclass
class SctpPacketStats:
    """Outgoing SCTP packets of one transport, by what they carry (bytes are SCTP packets,
    common header included; DTLS, UDP and IP come on top)."""

    data_packets: int = 0
    """Packets with at least one DATA chunk."""
    data_bytes: int = 0
    bundled_sacks: int = 0
    """SACK chunks that rode in a packet with DATA."""
    sack_packets: int = 0
    """Packets carrying only SACK chunks."""
    sack_bytes: int = 0
    forward_tsn_packets: int = 0
    """Packets with a FORWARD TSN chunk (and no DATA): abandoned ``maxRetransmits`` messages."""
    forward_tsn_bytes: int = 0
    other_packets: int = 0
    """Everything else: handshake, heartbeats, stream resets, shutdown."""
    other_bytes: int = 0

    @property
    def packets(self) -> int:
        """All packets."""
        return (self.data_packets + self.sack_packets + self.forward_tsn_packets
                + self.other_packets)

    @property
    def bytes(self) -> int:
        """All bytes."""
        return self.data_bytes + self.sack_bytes + self.forward_tsn_bytes + self.other_bytes

    def to_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


class SctpPacketCounter:
    """Counts the SCTP packets a transport sends, by kind (works on stock and tuned transports).

    Wraps the ``_send_data`` of the transport's DTLS transport (an instance attribute, removed
    by :meth:`close`), through which every SCTP packet leaves; the packets are parsed again to
    see their chunks. For tests and benchmarks.

    Args:
        sctp: the SCTP transport whose outgoing packets to count.
    """

    def __init__(self, sctp: RTCSctpTransport) -> None:
        self.stats = SctpPacketStats()
        self._dtls = sctp.transport
        send: Callable[[bytes], Awaitable[None]] = self._dtls._send_data

        async def counting_send(data: bytes) -> None:
            self.count(data)
            await send(data)

        self._dtls._send_data = counting_send  # type: ignore[method-assign]

    def reset(self) -> None:
        """Zero the counters."""
        self.stats = SctpPacketStats()

    def count(self, packet: bytes) -> None:
        """Count one outgoing SCTP packet."""
        try:
            _, _, _, chunks = parse_packet(packet)
        except ValueError:
            chunks = []
        s, n = self.stats, len(packet)
        if any(isinstance(c, DataChunk) for c in chunks):
            s.data_packets += 1
            s.data_bytes += n
            s.bundled_sacks += sum(isinstance(c, SackChunk) for c in chunks)
        elif chunks and all(isinstance(c, SackChunk) for c in chunks):
            s.sack_packets += 1
            s.sack_bytes += n
        elif any(isinstance(c, ForwardTsnChunk) for c in chunks):
            s.forward_tsn_packets += 1
            s.forward_tsn_bytes += n
        else:
            s.other_packets += 1
            s.other_bytes += n

    def close(self) -> None:
        """Stop counting (restores the DTLS transport's own method)."""
        vars(self._dtls).pop("_send_data", None)
