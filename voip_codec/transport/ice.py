"""An ICE/UDP :class:`~voip_codec.transport.link.Link`: our datagrams straight on the UDP path
that ICE (aioice, the agent aiortc uses) found, without DTLS and SCTP.

Every byte of a data-channel message costs about 93 bytes of DTLS, SCTP, UDP and IPv4 headers,
plus a SACK back; on this link a datagram costs its own bytes plus 28 (UDP + IPv4). There is no
hop-by-hop encryption here: wrap the link in the end-to-end encryption link for privacy.

Flow (:func:`connect_ice`), through the signaling server's ordinary ``offer`` / ``answer``
messages (their ``sdp`` field carries an :class:`IceDescription`, so the server needs nothing
new)::

    offerer (controlling)                 answerer (controlled)
    gather candidates                     gather candidates
    offer  {ufrag, pwd, candidates, codec} ------------------>
                                          check the codec
          <------------------------------ answer {ufrag, pwd, candidates, codec}
    check the codec
    connectivity checks both ways, nomination (aioice ``connect``)
    datagrams both ways; consent (RFC 7675, see below)

aioice leaves 127.0.0.1 out of its host candidates: for calls within one machine gather inside
:func:`voip_codec.webrtc.contrib.loopback.loopback_candidates`.

Bytes per datagram. With end-to-end encryption (:func:`secure_ice`) a datagram is our compact
packet + 1 counter byte + an 8-byte tag + 28 bytes of IPv4 and UDP: 49 bytes for one 8-byte
FocalCodec frame, 4.9 kbit/s at 12.5 packets/s, loss reports riding on the audio (8 bytes per
second). The counter is one byte on this link (the receiver restores the rest; reordering up
to 128 packets and loss bursts up to 4096 are covered, see :mod:`.secure`).

Consent freshness. RFC 7675 asks an ICE agent to keep sending only while the peer keeps
consenting: the peer must have shown within the last 30 s that it still wants the traffic,
with a proof an attacker off the path cannot forge. aioice proves it with a STUN binding
request every ~5 s, answered with a message-integrity check keyed by the ICE password: about
0.3 kbit/s per direction with headers, 6 % of an encrypted 0.8 kbit/s call. When the call is
end-to-end encrypted, the peer's own datagrams are a stronger proof of the same thing: each
one passed authentication under this call's keys (which only the peer holds; a replay is
rejected), so it shows the peer is alive, on this path and still in the call, and its loss
reports (at least one a second, also when it does not talk) acknowledge our packets
explicitly. :func:`secure_ice` therefore stops aioice's checks and runs
:meth:`IceLink.take_over_consent`: the link stops sending (closes) when no datagram has passed
authentication for :data:`CONSENT_EXPIRY_S` (30 s, RFC 7675 section 5.1). aioice still answers
the peer's STUN checks, so a peer that keeps them works too. Without encryption there is no such
proof and aioice's STUN checks stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import aioice

from .link import Link, LinkBase

if TYPE_CHECKING:
    from .secure import E2EKeys, KeyExchange

__all__ = [
    "CONSENT_EXPIRY_S",
    "ICE_COUNTER_BYTES",
    "ICE_MTU",
    "IceDescription",
    "IceLink",
    "IceLinkError",
    "IceServers",
    "IceSignaling",
    "connect_ice",
    "parse_server",
]

logger = logging.getLogger(__name__)

ICE_MTU = 1200
"""Largest datagram on an ICE link: fits any path's MTU with room for IPv6 and tunnels."""

ICE_COUNTER_BYTES = 1
"""Packet counter bytes of the end-to-end encryption on ICE links (see the module docstring)."""

CONSENT_EXPIRY_S = 30.0
"""Seconds without an authenticated datagram from the peer after which the link stops sending
(RFC 7675 section 5.1)."""

MARKER = "a=voip-codec-link:ice"
"""First line of an :class:`IceDescription`: tells it apart from a WebRTC SDP."""


class IceLinkError(Exception):
    """The ICE link could not be set up (codec or link mismatch, no answer, ICE failed); the
    message is one line."""


@dataclass(frozen=True)
class IceDescription:
    """What one peer tells the other through signaling (the ``sdp`` field of offer/answer).

    Text form, one attribute per line::

        a=voip-codec-link:ice
        a=codec:codec2-700c
        a=ice-ufrag:XXXX
        a=ice-pwd:YYYYYYYYYYYYYYYYYYYYYY
        a=candidate:<foundation> 1 udp <priority> <address> <port> typ host
        a=end-of-candidates

    The candidate lines are the SDP attribute of RFC 8839, so tools that rewrite SDP
    candidates (the demo's impairment relay) work on this text too. Unknown lines are ignored,
    so later fields can be added.
    """

    codec: str
    """The codec name this peer sends and expects."""
    ufrag: str
    """ICE username fragment."""
    pwd: str
    """ICE password."""
    candidates: tuple[str, ...] = field(default=())
    """Candidates as SDP attribute values (without ``a=candidate:``)."""

    def to_text(self) -> str:
        """The text form (see the class docstring)."""
        lines = [MARKER, f"a=codec:{self.codec}", f"a=ice-ufrag:{self.ufrag}",
                 f"a=ice-pwd:{self.pwd}"]
        lines += [f"a=candidate:{c}" for c in self.candidates]
        lines.append("a=end-of-candidates")
        return "\r\n".join(lines) + "\r\n"

    @classmethod
    def from_text(cls, text: str) -> IceDescription:
        """Parse the text form.

        Raises:
            IceLinkError: not an ICE link description (e.g. a WebRTC SDP: the other peer uses
                ``--link webrtc``), or a field is missing.
        """
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if not lines or lines[0] != MARKER:
            raise IceLinkError("the other peer is not on an ICE link (does it use "
                               "--link webrtc? start both peers with the same --link)")
        attrs: dict[str, str] = {}
        candidates = []
        for line in lines[1:]:
            key, _, value = line.partition(":")
            if key == "a=candidate":
                candidates.append(value)
            else:
                attrs[key.removeprefix("a=")] = value
        missing = [k for k in ("codec", "ice-ufrag", "ice-pwd") if not attrs.get(k)]
        if missing:
            raise IceLinkError(f"the other peer's ICE description lacks {', '.join(missing)}")
        return cls(attrs["codec"], attrs["ice-ufrag"], attrs["ice-pwd"], tuple(candidates))


class IceLink(LinkBase):
    """Datagrams on a connected aioice :class:`aioice.Connection` (component 1).

    Create it inside a running event loop once ``connection.connect()`` has returned; it starts
    reading at once. Sending before that or after :meth:`close` drops and counts.

    Args:
        connection: the connected ICE agent (closed with the link).
        name: name for logs.
        mtu: largest datagram, bytes.
    """

    def __init__(self, connection: aioice.Connection, *, name: str = "ice",
                 mtu: int = ICE_MTU) -> None:
        super().__init__(name, mtu)
        self.connection = connection
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.bytes_received = 0
        self._loop = asyncio.get_running_loop()
        self._reader = self._loop.create_task(self._read())
        self._closing: asyncio.Task[None] | None = None
        self._consent: asyncio.Task[None] | None = None
        self.e2e_keys: E2EKeys | None = None
        """End-to-end keys agreed by :func:`connect_ice` (None: not encrypted)."""
        self.consent = "stun"
        """How consent to send is kept: ``"stun"`` (aioice's checks every ~5 s) or
        ``"authenticated-traffic"`` (:meth:`take_over_consent`)."""
        self.consent_expired = False
        """The link closed because the peer's consent expired."""
        self.candidate_types: tuple[str, ...] = ()
        """Types of the candidates this end gathered (``host``, ``srflx``, ``relay``)."""

    def take_over_consent(self, last_authenticated: Callable[[], float | None],
                          expiry_s: float = CONSENT_EXPIRY_S) -> bool:
        """Keep consent from the peer's authenticated datagrams instead of STUN checks.

        Args:
            last_authenticated: ``time.monotonic()`` of the last datagram from the peer that
                passed end-to-end authentication, or None (e.g.
                ``SecureLink.last_authenticated_at``).
            expiry_s: the link closes after this long without one (counted from now while
                there was none).

        Returns:
            True, or False when this aioice has no consent task to stop (its STUN checks
            then stay).
        """
        task = getattr(self.connection, "_query_consent_task", None)
        if not isinstance(task, asyncio.Task) or self.closed:
            logger.info("%s: aioice's consent task not found; keeping its STUN checks",
                        self.name)
            return False
        task.cancel()
        self.connection._query_consent_task = None  # aioice's close() then skips it
        self.consent = "authenticated-traffic"
        self._consent = self._loop.create_task(self._watch_consent(last_authenticated,
                                                                   expiry_s))
        return True

    async def _watch_consent(self, last_authenticated: Callable[[], float | None],
                             expiry_s: float) -> None:
        start = time.monotonic()
        while not self.closed:
            await asyncio.sleep(min(1.0, expiry_s / 4))
            heard = max(start, last_authenticated() or start)
            if time.monotonic() - heard > expiry_s:
                logger.info("%s: no authenticated datagram for %.0f s: consent expired, "
                            "the link stops sending", self.name, expiry_s)
                self.consent_expired = True
                self.close()
                return

    def send(self, data: bytes) -> None:
        """Send one datagram (see :class:`Link`)."""
        self._check_size(data)
        if self.closed:
            self.dropped += 1
            return
        # aioice's send is a coroutine that writes to the socket without waiting; tasks run in
        # the order they were created, so datagrams leave in order
        task = self._loop.create_task(self.connection.send(bytes(data)))
        task.add_done_callback(self._sent)
        self.datagrams_sent += 1
        self.bytes_sent += len(data)

    def _sent(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.dropped += 1
            logger.debug("%s: send failed: %s", self.name,
                         None if task.cancelled() else task.exception())

    async def _read(self) -> None:
        while True:
            try:
                data = await self.connection.recv()
            except ConnectionError as exc:
                logger.info("%s: stopped reading: %s", self.name, exc)
                return
            self.datagrams_received += 1
            self.bytes_received += len(data)
            self._receive(data)

    def close(self) -> None:
        """Stop sending and receiving and close the ICE agent (in the background; await
        :meth:`wait_closed` to know its sockets are released)."""
        if self.closed:
            return
        super().close()
        self._reader.cancel()
        if self._consent is not None and self._consent is not asyncio.current_task():
            self._consent.cancel()
        self._closing = self._loop.create_task(self.connection.close())

    async def wait_closed(self) -> None:
        """Close (if not done yet) and wait until the ICE agent has released its sockets."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self._consent is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._consent
        if self._closing is not None:
            await self._closing

    def stats(self) -> dict[str, Any]:
        """Datagram and byte counters of both directions (our datagrams only, no headers)."""
        return {"datagrams_sent": self.datagrams_sent, "bytes_sent": self.bytes_sent,
                "datagrams_received": self.datagrams_received,
                "bytes_received": self.bytes_received, "dropped": self.dropped}


class IceSignaling(Protocol):
    """What :func:`connect_ice` needs of a signaling client (e.g.
    :class:`signaling.client.SignalingClient`)."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def recv(self, timeout_s: float | None = None) -> dict[str, Any]: ...


async def _wait_for(signaling: IceSignaling, wanted: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {wanted!r} from the other peer within {timeout_s:g} s")
        msg = await signaling.recv(timeout_s=left)
        if msg.get("type") == wanted:
            return str(msg.get("sdp", ""))


@dataclass(frozen=True)
class IceServers:
    """STUN and TURN servers for gathering (aioice's ``stun_server`` / ``turn_*`` options)."""

    stun: tuple[str, int] | None = None
    """A STUN server: adds a server-reflexive candidate (this peer's address as the server
    sees it, e.g. outside a NAT)."""
    turn: tuple[str, int] | None = None
    """A TURN server (UDP): adds a relayed candidate, for paths no direct pair crosses."""
    turn_username: str | None = None
    turn_password: str | None = None


def parse_server(text: str, option: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[V6ADDR]:PORT`` for IPv6) of ``--stun`` / ``--turn``.

    Raises:
        ValueError: no port, or a port outside 1..65535 (one-line message naming ``option``).
    """
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host:
        raise ValueError(f"{option} {text!r}: write it as HOST:PORT, e.g. "
                         "stun.example.org:3478")
    try:
        port = int(port_text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{option} {text!r}: the port must be a number in 1..65535")
    return host, port


async def connect_ice(signaling: IceSignaling, role: str, codec: str, *,
                      answer_timeout_s: float = 60.0, offer_timeout_s: float = 60.0,
                      connect_timeout_s: float = 15.0,
                      advertise: Callable[[str], str] | None = None,
                      exchange: KeyExchange | None = None,
                      servers: IceServers | None = None) -> IceLink:
    """Set up an ICE link with the other peer of a signaling room (see the module docstring).

    Args:
        signaling: a joined signaling client.
        role: ``"offerer"`` (sends the offer, ICE controlling) or ``"answerer"``.
        codec: this peer's codec name; both peers must use the same.
        answer_timeout_s: how long the offerer waits for the answer.
        offer_timeout_s: how long the answerer waits for the offer.
        connect_timeout_s: how long the connectivity checks may take.
        advertise: rewrites this peer's description text before it is sent (e.g. the demo's
            impairment relay puts its own address in the candidates).
        exchange: this end's end-to-end key pair: its public key rides in the description
            (``a=x-voip-codec-e2e:``, as in a WebRTC SDP) and the call's keys are left in
            :attr:`IceLink.e2e_keys` (wrap the link with :func:`secure_ice`). Both peers must
            encrypt or neither.
        servers: STUN/TURN servers to gather server-reflexive and relayed candidates from
            (None: host candidates only). A server that does not answer within aioice's
            gathering time (5 s) adds no candidate; :attr:`IceLink.candidate_types` tells.

    Returns:
        The connected link.

    Raises:
        IceLinkError: codec or link mismatch, or the checks failed or timed out.
        TimeoutError: no offer or answer in time.
    """
    if role not in ("offerer", "answerer"):
        raise ValueError(f"role must be 'offerer' or 'answerer', got {role!r}")
    servers = servers or IceServers()
    conn = aioice.Connection(ice_controlling=role == "offerer", components=1,
                             stun_server=servers.stun, turn_server=servers.turn,
                             turn_username=servers.turn_username,
                             turn_password=servers.turn_password)
    try:
        await conn.gather_candidates()
        local = IceDescription(codec, conn.local_username, conn.local_password,
                               tuple(c.to_sdp() for c in conn.local_candidates))
        text = local.to_text()
        if exchange is not None:
            from .secure import sdp_with_e2e_key

            text = sdp_with_e2e_key(text, exchange.public)
        if advertise is not None:
            text = advertise(text)
        if role == "offerer":
            await signaling.send({"type": "offer", "sdp": text})
            remote_text = await _wait_for(signaling, "answer", answer_timeout_s)
        else:
            remote_text = await _wait_for(signaling, "offer", offer_timeout_s)
            await signaling.send({"type": "answer", "sdp": text})  # tells a WebRTC offerer too
        remote = IceDescription.from_text(remote_text)
        keys = _e2e_keys(remote_text, exchange)
        if remote.codec != codec:
            raise IceLinkError(f"the other peer sends codec {remote.codec!r} but this peer "
                               f"uses {codec!r}")
        conn.remote_username, conn.remote_password = remote.ufrag, remote.pwd
        for line in remote.candidates:
            try:
                await conn.add_remote_candidate(aioice.Candidate.from_sdp(line))
            except ValueError as exc:
                logger.debug("ice: skipping a bad remote candidate %r: %s", line, exc)
        await conn.add_remote_candidate(None)
        try:
            await asyncio.wait_for(conn.connect(), connect_timeout_s)
        except (ConnectionError, asyncio.TimeoutError):
            raise IceLinkError(f"ICE found no working path to the other peer within "
                               f"{connect_timeout_s:g} s (on a closed network both peers need "
                               "reachable host candidates; on one machine use --loopback)"
                               ) from None
    except BaseException:
        await conn.close()
        raise
    link = IceLink(conn, name=f"ice:{role}")
    link.e2e_keys = keys
    link.candidate_types = tuple(sorted({c.type for c in conn.local_candidates}))
    return link


def _e2e_keys(remote_text: str, exchange: KeyExchange | None) -> E2EKeys | None:
    from .secure import sdp_take_e2e_key

    try:
        _, key = sdp_take_e2e_key(remote_text)
    except ValueError as exc:
        raise IceLinkError(str(exc)) from None
    if exchange is not None and key is None:
        raise IceLinkError("the other peer has end-to-end encryption off (--no-e2e); both "
                           "peers must turn it off or neither")
    if exchange is None and key is not None:
        raise IceLinkError("the other peer encrypts end to end but this one runs with "
                           "--no-e2e; both peers must turn it off or neither")
    if exchange is None or key is None:
        return None
    try:
        return exchange.derive(key)
    except ValueError as exc:
        raise IceLinkError(str(exc)) from None


def secure_ice(link: IceLink, *, stun_consent: bool = False) -> Link:
    """The link the sessions use: ``link`` inside a :class:`~.secure.SecureLink` (1 counter
    byte) when :func:`connect_ice` agreed end-to-end keys, else ``link`` itself.

    Args:
        link: the connected ICE link.
        stun_consent: keep aioice's STUN consent checks (default: when encrypting, consent
            comes from the peer's authenticated datagrams; see the module docstring).
    """
    if link.e2e_keys is None:
        return link
    from .secure import SecureLink

    secure = SecureLink(link, link.e2e_keys, counter_bytes=ICE_COUNTER_BYTES)
    if not stun_consent:
        link.take_over_consent(lambda: secure.last_authenticated_at)
    return secure
