"""A UDP impairment relay on 127.0.0.1 between two WebRTC peers.

Each peer is told (by rewriting the loopback ICE candidates in the SDP it receives) that the other
lives at one of the relay's two sockets. A datagram from peer A arriving at the socket advertised
to A is forwarded to B's real address *from* the socket advertised to B, and vice versa, so both
ICE agents see consistent addresses. After :meth:`ImpairmentRelay.impair` is called (typically
once the data channel is open, so the DTLS/SCTP handshake is never disturbed) each direction goes
through a seeded :class:`~voip_codec.transport.netsim.NetworkSimulator`: loss (Bernoulli or
Gilbert-Elliott), delay, jitter, reordering, duplication, rate cap. Bytes are counted both ways,
as UDP payload and as IPv4 wire bytes (+28 bytes of IP and UDP headers per datagram).

Only 127.0.0.1 is ever bound or targeted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from ...transport.netsim import NetworkConditions, NetworkSimulator

__all__ = ["DirectionStats", "ImpairmentRelay"]

logger = logging.getLogger(__name__)

_IP_UDP_OVERHEAD = 28
_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )127\.0\.0\.1 (\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


@dataclass
class DirectionStats:
    """Counters of one direction through the relay."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    payload_bytes_in: int = 0
    payload_bytes_out: int = 0
    dropped: int = 0
    started_at: float | None = field(default=None, repr=False)

    @property
    def wire_bytes_out(self) -> int:
        """Bytes on an IPv4 wire for what was delivered (UDP payload + 28 header bytes)."""
        return self.payload_bytes_out + _IP_UDP_OVERHEAD * self.datagrams_out

    def wire_kbps(self, now: float) -> float:
        """Delivered wire bitrate since the first datagram, kbit/s."""
        if self.started_at is None or now <= self.started_at:
            return 0.0
        return 8 * self.wire_bytes_out / (now - self.started_at) / 1000


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a datagram endpoint's transport; asyncio's selector class does not subclass
        # DatagramTransport at run time, so this is a cast, not an isinstance check
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)


class ImpairmentRelay:
    """Two UDP sockets on 127.0.0.1 relaying between peers A and B.

    Args:
        a_to_b: impairments applied to A -> B datagrams once impairing.
        b_to_a: impairments applied to B -> A datagrams once impairing.
        seed: seed of both simulators (B -> A uses ``seed + 1``).
    """

    def __init__(self, a_to_b: NetworkConditions | None = None,
                 b_to_a: NetworkConditions | None = None, seed: int = 0) -> None:
        self._sims = {"ab": NetworkSimulator(a_to_b or NetworkConditions(delay_ms=0.0), seed),
                      "ba": NetworkSimulator(b_to_a or NetworkConditions(delay_ms=0.0), seed + 1)}
        self.stats = {"ab": DirectionStats(), "ba": DirectionStats()}
        self._impairing = False
        self._t0 = 0.0
        self._addr: dict[str, tuple[str, int] | None] = {"a": None, "b": None}
        self._sock: dict[str, _Socket] = {}

    async def start(self) -> None:
        """Bind the two sockets on 127.0.0.1 (ephemeral ports)."""
        loop = asyncio.get_running_loop()
        for side in ("a", "b"):
            # socket "a" is what B is told A's address is; it receives B's datagrams for A
            _, proto = await loop.create_datagram_endpoint(
                functools.partial(_Socket, functools.partial(self._received, side)),
                local_addr=("127.0.0.1", 0))
            self._sock[side] = proto
        self._t0 = time.monotonic()

    def port(self, side: str) -> int:
        """Port of the socket that stands for peer ``side`` ("a" or "b")."""
        transport = self._sock[side].transport
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    def rewrite(self, sdp: str, sender: str) -> str:
        """Rewrite the loopback host candidates of ``sender``'s SDP to the relay socket.

        Records the sender's real loopback port(s) and returns the SDP to give the other peer.

        Raises:
            ValueError: the SDP carries no 127.0.0.1 host candidate (use loopback candidates).
        """
        port = self.port(sender)
        real: list[int] = []

        def repl(m: re.Match[str]) -> str:
            real.append(int(m.group(2)))
            return f"{m.group(1)}127.0.0.1 {port}{m.group(3)}"

        out = _CANDIDATE.sub(repl, sdp)
        if not real:
            raise ValueError("SDP has no 127.0.0.1 host candidate to relay; gather candidates "
                             "with voip_codec.webrtc.contrib.loopback.loopback_candidates()")
        self._addr[sender] = ("127.0.0.1", real[0])
        out = re.sub(r"^(m=application )\d+", rf"\g<1>{port}", out, flags=re.MULTILINE)
        return out

    def impair(self, enabled: bool = True) -> None:
        """Start (or stop) applying the network models."""
        self._impairing = enabled

    def _received(self, side: str, data: bytes, addr: tuple[str, int]) -> None:
        # a datagram arriving at socket `side` is addressed to peer `side`
        direction = "ba" if side == "a" else "ab"
        target = self._addr[side]
        stats = self.stats[direction]
        now = time.monotonic()
        if stats.started_at is None:
            stats.started_at = now
        stats.datagrams_in += 1
        stats.payload_bytes_in += len(data)
        if target is None:
            stats.dropped += 1
            return
        out_sock = self._sock["b" if side == "a" else "a"].transport
        if out_sock is None:
            return
        if not self._impairing:
            self._deliver(out_sock, data, target, stats)
            return
        deliveries = self._sims[direction].send(now - self._t0, data)
        if not deliveries:
            stats.dropped += 1
        loop = asyncio.get_running_loop()
        for when, datagram in deliveries:
            delay = max(0.0, when - (now - self._t0))
            loop.call_later(delay, self._deliver, out_sock, datagram, target, stats)

    @staticmethod
    def _deliver(sock: asyncio.DatagramTransport, data: bytes, target: tuple[str, int],
                 stats: DirectionStats) -> None:
        if sock.is_closing():
            return
        sock.sendto(data, target)
        stats.datagrams_out += 1
        stats.payload_bytes_out += len(data)

    def close(self) -> None:
        """Close both sockets."""
        for proto in self._sock.values():
            if proto.transport is not None:
                proto.transport.close()
