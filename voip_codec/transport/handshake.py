"""An in-band key exchange for links without signaling (serial lines, radio modems).

On a WebRTC or ICE link each peer's X25519 public key rides in the description the signaling
server relays. A serial line has no signaling: the two ends exchange their keys as datagrams on
the link itself, then wrap it in a :class:`~voip_codec.transport.secure.SecureLink` with keys
from the same :func:`~voip_codec.transport.secure.derive_keys` (HKDF over the X25519 secret,
the optional pre-shared secret mixed into the salt, the same SAS).

Hello datagram (21 bytes, + 32 with encryption, + 16 with a pre-shared secret)::

    magic   4  b"VCHS"
    flags   1  0x10 (version 1) | 0x01 encrypt | 0x02 pre-shared secret | 0x04 done
    nonce   8  this end's random call nonce (never zero)
    echo    8  the nonce of the latest peer hello this end saw (zero: none yet)
    public 32  this end's X25519 public key (encrypting ends only)
    mac    16  HMAC-SHA256(SHA-256("voip-codec handshake psk" || psk), all of the above)[:16]
               (with a pre-shared secret only)

Each end sends its hello every ``interval_s`` (with +-20 % jitter) and answers a new peer's
first hello at once. An end is *done* when it receives a peer hello whose ``echo`` is its own
nonce: the peer has seen this call's hello (so a hello recorded in an earlier call, which
cannot echo a fresh nonce, never completes a handshake), and the hello carries the peer's key.
On completion the end sends one more hello (``done`` set, echoing the peer); afterwards it
answers every second peer hello that is not ``done`` (the first may just have crossed the done
hello on the line; a second means the peer missed it), so the last message of the exchange may
be lost any number of times, and a narrow line carries no needless hello in mid-call. Three
hellos suffice without loss.

Roles need no flag: the end with the smaller public key is the "offerer" of
:func:`~voip_codec.transport.secure.derive_keys`. Keys are fresh per call (new X25519 key
pairs), so a packet counter that restarts at 0 never meets the same key twice; a static
pre-shared key with restarting counters would (and is never used on its own).

Authentication. Without a pre-shared secret anyone on the channel can take part (as anyone
can on an unauthenticated radio channel); a man in the middle holds two different secrets and
the users see different SAS numbers. With a pre-shared secret every hello carries a MAC keyed
by it: hellos without it, or with a wrong one (a stranger, a peer with another secret), are
dropped and counted (:attr:`HandshakeStats.unauthenticated`) and, if nothing better arrives,
the handshake times out with a line that says so. Hellos that echo back this end's own nonce
or key (a line that loops back) are counted as ``reflected``.

Mismatch. Both ends run the handshake, also with ``--no-e2e`` (a hello without key: the call
starts only once both are there), so an end that encrypts and one that does not find out at
once and stop with one line, instead of decoding ciphertext as audio.

:func:`handshake_link` drives the exchange on the event loop and returns the link the sessions
use: a :class:`HandshakeLink` (which answers the peer's late hellos and passes every other
datagram on), inside a :class:`~voip_codec.transport.secure.SecureLink` when encrypting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import os
import random
from dataclasses import dataclass
from typing import Any

from .link import Link, LinkBase
from .secure import E2EKeys, KeyExchange, SecureLink

__all__ = [
    "HELLO_MAGIC",
    "Handshake",
    "HandshakeError",
    "HandshakeLink",
    "HandshakeStats",
    "handshake_interval_s",
    "handshake_link",
    "hello_size",
]

HELLO_MAGIC = b"VCHS"
"""First bytes of every hello datagram."""

_VERSION = 0x10
_ENCRYPT, _PSK, _DONE = 0x01, 0x02, 0x04
_NONCE = 8
_PUBLIC = 32
_MAC = 16
_BASE = len(HELLO_MAGIC) + 1 + 2 * _NONCE
_ZERO_NONCE = bytes(_NONCE)


def hello_size(encrypt: bool, psk: bool) -> int:
    """Bytes of a hello datagram (21, 37, 53 or 69)."""
    return _BASE + (_PUBLIC if encrypt else 0) + (_MAC if psk else 0)


def handshake_interval_s(bit_rate: float | None, encrypt: bool = True,
                         psk: bool = False) -> float:
    """Mean time between hellos on a link of ``bit_rate`` bit/s: 0.5 s, or three times a
    hello's time on the line (8N1, framing included) where that is longer, so a hello and its
    answer cross the line before the next one is due (0.73 s for 53 bytes at 2400 bit/s).

    Args:
        bit_rate: line rate in bit/s (None: fast, e.g. UDP).
        encrypt: the hellos carry a key.
        psk: the hellos carry a MAC.
    """
    if bit_rate is None:
        return 0.5
    airtime = (hello_size(encrypt, psk) + 5) * 10 / bit_rate
    return max(0.5, 3 * airtime)


class HandshakeError(Exception):
    """The in-band handshake failed (timeout, mismatched settings); one-line message."""


@dataclass
class HandshakeStats:
    """What a :class:`Handshake` saw and did."""

    hellos_sent: int = 0
    """Hellos handed to the link (periodic, answers and after completion)."""
    hellos_received: int = 0
    """Well-formed, authenticated peer hellos."""
    unauthenticated: int = 0
    """Dropped: hellos without the pre-shared secret's MAC or with a wrong one."""
    reflected: int = 0
    """Dropped: this end's own hello coming back (a looped line)."""
    stray: int = 0
    """Dropped: after completion, hellos from another end than the peer."""
    early: int = 0
    """Dropped: other datagrams before completion (the peer's first audio)."""

    def to_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Hello:
    flags: int
    nonce: bytes
    echo: bytes
    public: bytes | None


def _mac_key(psk: bytes) -> bytes:
    return hashlib.sha256(b"voip-codec handshake psk" + psk).digest()


class Handshake:
    """The exchange as a state machine without I/O (see the module docstring).

    Feed it every datagram the link receives (:meth:`receive`), send what it returns, and send
    :meth:`hello` periodically until :attr:`done` or :attr:`error`.

    Args:
        encrypt: exchange keys (False: only agree that neither end encrypts).
        psk: optional pre-shared secret (MACs the hellos and is mixed into the keys).
    """

    def __init__(self, *, encrypt: bool = True, psk: bytes | None = None) -> None:
        self.encrypt = encrypt
        self.psk = psk or None
        self._mac_key = _mac_key(self.psk) if self.psk else None
        self._exchange = KeyExchange("offerer", self.psk) if encrypt else None
        nonce = os.urandom(_NONCE)
        while nonce == _ZERO_NONCE:
            nonce = os.urandom(_NONCE)
        self.nonce = nonce
        """This end's call nonce."""
        self.public = self._exchange.public if self._exchange is not None else None
        """This end's X25519 public key (None without encryption)."""
        self.peer_nonce: bytes | None = None
        """Nonce of the latest peer hello (after completion: of the peer it completed with)."""
        self._peer_public: bytes | None = None
        self.done = False
        """Both keys are known and the peer has seen this end's hello."""
        self.keys: E2EKeys | None = None
        """The call's keys once done (None without encryption)."""
        self.role: str | None = None
        """``"offerer"`` or ``"answerer"`` once done (the smaller public key offers)."""
        self.error: str | None = None
        """Why the handshake cannot succeed (mismatched settings), or None."""
        self.stats = HandshakeStats()
        self._late = 0  # peer hellos not marked done, received after completion

    # ------------------------------------------------------------------ messages
    def hello(self) -> bytes:
        """This end's current hello datagram (counted as sent)."""
        flags = (_VERSION | (_ENCRYPT if self.encrypt else 0) | (_PSK if self.psk else 0)
                 | (_DONE if self.done else 0))
        body = (HELLO_MAGIC + bytes((flags,)) + self.nonce + (self.peer_nonce or _ZERO_NONCE)
                + (self.public or b""))
        if self._mac_key is not None:
            body += hmac.new(self._mac_key, body, hashlib.sha256).digest()[:_MAC]
        self.stats.hellos_sent += 1
        return body

    @staticmethod
    def looks_like_hello(data: bytes) -> bool:
        """Whether ``data`` has a hello's magic, version and a length its flags allow."""
        if len(data) < _BASE or data[:4] != HELLO_MAGIC or data[4] & 0xF0 != _VERSION:
            return False
        flags = data[4]
        return len(data) == hello_size(bool(flags & _ENCRYPT), bool(flags & _PSK))

    def _parse(self, data: bytes) -> _Hello | None:
        """The hello in ``data`` when it is one this end may act on (else counted, None)."""
        flags = data[4]
        if self._mac_key is not None:
            if not flags & _PSK or not hmac.compare_digest(
                    hmac.new(self._mac_key, data[:-_MAC], hashlib.sha256).digest()[:_MAC],
                    data[-_MAC:]):
                self.stats.unauthenticated += 1
                return None
        elif flags & _PSK:
            self.error = ("the other peer uses a pre-shared secret and this one does not: set "
                          "the same VOIP_CODEC_PSK on both sides")
            return None
        at = len(HELLO_MAGIC) + 1
        nonce, echo = data[at:at + _NONCE], data[at + _NONCE:at + 2 * _NONCE]
        public = data[_BASE:_BASE + _PUBLIC] if flags & _ENCRYPT else None
        if nonce == self.nonce or (public is not None and public == self.public):
            self.stats.reflected += 1
            return None
        if bool(flags & _ENCRYPT) != self.encrypt:
            self.error = ("the other peer has end-to-end encryption off (--no-e2e); both peers "
                          "must turn it off or neither" if self.encrypt else
                          "the other peer encrypts end to end but this one runs with --no-e2e; "
                          "both peers must turn it off or neither")
            return None
        return _Hello(flags, nonce, echo, public)

    def receive(self, data: bytes) -> bytes | None:
        """Handle one datagram from the link.

        Returns:
            A hello to send now in answer, or None.
        """
        if not self.looks_like_hello(data):
            if not self.done:
                self.stats.early += 1
            return None
        hello = self._parse(bytes(data))
        if hello is None or self.error is not None:
            return None
        if self.done:
            if hello.nonce != self.peer_nonce:
                self.stats.stray += 1
                return None
            self.stats.hellos_received += 1
            if hello.flags & _DONE:
                return None
            # the peer is not done: our done hello was lost, or it is still on its way (the
            # peer's periodic hello crossed it). Answer every second one: a crossing hello
            # costs nothing, and a lost done hello is made up one interval later. On a
            # narrow line an answer in mid-call delays the audio behind it.
            self._late += 1
            return self.hello() if self._late % 2 == 0 else None
        self.stats.hellos_received += 1
        new_peer = hello.nonce != self.peer_nonce
        self.peer_nonce, self._peer_public = hello.nonce, hello.public
        if hello.echo == self.nonce:
            self._complete()
            if self.error is not None:
                return None
            return None if hello.flags & _DONE else self.hello()
        return self.hello() if new_peer else None

    def _complete(self) -> None:
        if self._exchange is not None:
            assert self.public is not None and self._peer_public is not None
            self.role = "offerer" if self.public < self._peer_public else "answerer"
            try:
                self.keys = self._exchange.derive(
                    self._peer_public, "offerer" if self.role == "offerer" else "answerer")
            except ValueError as exc:
                self.error = str(exc)
                return
        else:
            self.role = "offerer" if self.nonce < (self.peer_nonce or b"") else "answerer"
        self.done = True


class HandshakeLink(LinkBase):
    """The link after an in-band handshake: hellos that still arrive are answered (the peer
    missed the last one) and kept from the receiver; every other datagram passes on.

    Args:
        inner: the link the handshake ran on; this link takes over its receiver.
        handshake: the completed handshake.
    """

    def __init__(self, inner: Link, handshake: Handshake) -> None:
        super().__init__(inner.name, inner.mtu)
        self.inner = inner
        self.handshake = handshake
        inner.set_receiver(self._on_inner)

    def send(self, data: bytes) -> None:
        """See :class:`~voip_codec.transport.link.Link`."""
        self._check_size(data)
        if self.closed:
            self.dropped += 1
            return
        self.inner.send(data)

    def _on_inner(self, data: bytes) -> None:
        if self.handshake.looks_like_hello(data):
            reply = self.handshake.receive(data)
            if reply is not None and not self.closed:
                self.inner.send(reply)
            return
        self._receive(data)

    def close(self) -> None:
        """Close this link and the inner one."""
        super().close()
        self.inner.close()


async def handshake_link(link: Link, *, encrypt: bool = True, psk: bytes | None = None,
                         timeout_s: float = 30.0, interval_s: float = 0.5,
                         counter_bytes: int = 1) -> Link:
    """Run the in-band handshake on ``link`` and return the link the sessions use.

    Args:
        link: a connected link with nothing else listening yet.
        encrypt: end-to-end encryption (both ends must agree).
        psk: optional pre-shared secret (both ends must use the same).
        timeout_s: how long to wait for the peer.
        interval_s: mean time between hellos (the hello is resent until the peer answers).
        counter_bytes: packet counter bytes of the :class:`SecureLink`: 1 (narrow links), or 0
            on links that never reorder (serial lines).

    Returns:
        ``SecureLink(HandshakeLink(link))`` when encrypting, else ``HandshakeLink(link)``;
        its ``handshake`` (on the inner link when encrypting) holds the stats.

    Raises:
        HandshakeError: no valid answer within ``timeout_s``, or mismatched settings.
    """
    if interval_s <= 0 or timeout_s <= 0:
        raise ValueError(f"interval_s and timeout_s must be > 0, got {interval_s}, {timeout_s}")
    hs = Handshake(encrypt=encrypt, psk=psk)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def on_datagram(data: bytes) -> None:
        reply = hs.receive(data)
        if reply is not None:
            link.send(reply)
        if (hs.done or hs.error is not None) and not finished.done():
            finished.set_result(None)

    link.set_receiver(on_datagram)
    deadline = loop.time() + timeout_s
    jitter = random.Random()
    try:
        while not finished.done():
            link.send(hs.hello())
            wait = min(interval_s * jitter.uniform(0.8, 1.2), deadline - loop.time())
            if wait <= 0:
                break
            await asyncio.wait([finished], timeout=wait)
    finally:
        link.set_receiver(None)
    if hs.error is not None:
        raise HandshakeError(hs.error)
    if not hs.done:
        raise HandshakeError(_timeout_message(link.name, hs, timeout_s))
    after = HandshakeLink(link, hs)
    # a paced narrow link (serial) may still be sending the last hellos: let the call start
    # on an empty line, or its first packets wait behind them (and a full line drops them)
    backlog = float(getattr(link, "backlog_s", 0.0))
    if backlog > 0:
        await asyncio.sleep(backlog)
    if hs.keys is None:
        return after
    return SecureLink(after, hs.keys, counter_bytes=counter_bytes)


def _timeout_message(name: str, hs: Handshake, timeout_s: float) -> str:
    s = hs.stats
    head = f"no handshake with the other peer on {name} within {timeout_s:g} s"
    if s.unauthenticated:
        return (f"{head}: {s.unauthenticated} of its handshake messages failed the pre-shared "
                "secret check (set the same VOIP_CODEC_PSK on both sides)")
    if s.hellos_received:
        return (f"{head}: its messages arrived but it never confirmed this one's (a one-way "
                "line? check the wiring and the line rate)")
    if s.early:
        return (f"{head}: {s.early} datagrams arrived but no handshake (is the other side an "
                "older voip-codec?)")
    return f"{head}: nothing arrived (is it running, on the same line rate?)"
