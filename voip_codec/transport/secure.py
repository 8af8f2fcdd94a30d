"""End-to-end encryption of datagrams: a :class:`SecureLink` wraps any other link.

Keys. Each peer makes an X25519 key pair per call (:class:`KeyExchange`) and sends its public
key inside its SDP (offer or answer) or ICE description through the signaling server
(:func:`sdp_with_e2e_key`, :func:`sdp_take_e2e_key`); on links without signaling (serial
lines) the two ends send it in hello datagrams on the link itself
(:mod:`voip_codec.transport.handshake`: the end with the smaller public key is the offerer,
hellos are MACed with the pre-shared secret when there is one). Both compute the X25519 shared
secret and run HKDF-SHA256 over it:

* salt: ``SHA-256("voip-codec e2e psk" || psk)`` when the users share a secret, else none;
* info: ``"voip-codec e2e v1" || transcript``, where ``transcript`` = ``SHA-256("voip-codec e2e
  v1" || offerer public key || answerer public key)``;
* output: a 32-byte base key and a 12-byte nonce salt per direction (offerer -> answerer,
  answerer -> offerer), and 5 bytes for the short authentication string.

SAS. :attr:`E2EKeys.sas` is 8 decimal digits (``"1234 5678"``, 26.6 bits) both users read to each
other. It depends on the shared secret and both public keys, so a relay that swapped the keys
(a man in the middle) holds two different secrets and the two screens show different numbers
unless it finds, while the other peer waits for the answer, a key pair whose SAS matches by
chance: about one try in 10**8, each try an X25519 operation. A commitment to the first key
(as in ZRTP) would remove that grinding; it needs a third signaling message and is not done.

Per packet. A datagram is ``counter (2 bytes, big-endian) || ciphertext || tag (8 bytes)``: 10
bytes of overhead, so :attr:`SecureLink.mtu` is the inner MTU minus 10. Narrow links send fewer
counter bytes: 1 on ICE/UDP (9 bytes of overhead: 49 bytes per encrypted 8-byte frame with IPv4
and UDP, 4.9 kbit/s at 12.5 packets/s), none on a serial line, which never reorders (8 bytes:
the receiver tries the counters after the highest it accepted, up to :data:`ORDERED_SEARCH`).
The tag stays 8 bytes: shorter tags are specified for AES-CCM (4 or 6 bytes), not for GCM
beyond NIST SP 800-38D's 64-bit floor for short packets, and a browser peer has no CCM. The AEAD is AES-128-GCM
with the tag truncated to 64 bits: it is what a browser can also do (WebCrypto's AES-GCM takes
``tagLength: 64``; WebCrypto has no AES-CCM and no ChaCha20-Poly1305). The nonce is implicit:
the direction's 12-byte salt XOR (a direction byte, three zero bytes, the 64-bit packet
counter). The sender's counter starts at 0 and only grows, so a (key, nonce) pair is never used
twice; only its low 16 (or 8) bits travel, and the receiver restores the rest as the counter
nearest to the highest one it has authenticated (SRTP's rollover counter). That guess is right
while fewer than half the span (32768 packets, or 128 with one byte) are lost in a row; when it
fails authentication the receiver also tries the next 16 spans ahead, never behind (so one byte
covers bursts of up to 4096 lost packets, 5.5 min of 80 ms packets, and two bytes about 2**20).
Each try is one GCM check, so a forgery's chance grows to at most 17 x 2**-64. Every ``rekey_interval`` packets (default 2**24) both ends move
to the next key, ``HMAC-SHA256(base key, "voip-codec e2e epoch" || epoch)[:16]``, and a sender
stops (drops and counts) at 2**48 packets rather than wrap. The counter bytes are the
associated data.

Never the same (key, nonce) across calls: every call derives new keys from new X25519 key
pairs, so a counter that starts at 0 again meets a new key. A key made from the pre-shared
secret alone would repeat nonces from call to call; it is only ever mixed into the salt.

Consent. On an ICE link the peer's authenticated datagrams stand in for the STUN consent checks
of RFC 7675 (:attr:`SecureLink.last_authenticated_at`, used by
:meth:`voip_codec.transport.ice.IceLink.take_over_consent`): about 0.3 kbit/s per direction
saved.

A 64-bit tag means an attacker who sends forged packets is accepted with probability about
2**-64 per try (NIST SP 800-38D allows 64-bit GCM tags for short packets under a bound on
decryption attempts); at any packet rate a call can carry that is negligible, and a forgery
would buy one garbled 80 ms frame, not the key.

Receiving. Datagrams shorter than the overhead (``truncated``), failing authentication
(``forged``: tampered, truncated inside the ciphertext, wrong key or pre-shared secret),
already accepted (``replayed``, a 64-packet sliding window) or older than the window
(``stale``) are counted in :attr:`SecureLink.stats` and dropped; nothing raises and nothing
unauthenticated reaches the receiver.

Threat model: the signaling server and any relay on the path can drop, delay, reorder and
replay datagrams, and see their sizes and timing; they cannot read the audio or make a receiver
accept audio they made or changed. An active signaling server can swap the public keys; the
users detect it by comparing the SAS (or it fails when they share a pre-shared secret).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .link import Link, LinkBase

__all__ = [
    "COUNTER_BYTES",
    "COUNTER_SEARCH",
    "DEFAULT_REKEY_INTERVAL",
    "E2E_OVERHEAD",
    "ORDERED_SEARCH",
    "REPLAY_WINDOW",
    "TAG_BYTES",
    "DirectionKeys",
    "E2EKeys",
    "KeyExchange",
    "SecureLink",
    "SecureStats",
    "derive_keys",
    "sdp_take_e2e_key",
    "sdp_with_e2e_key",
]

logger = logging.getLogger(__name__)

Role = Literal["offerer", "answerer"]

LABEL = b"voip-codec e2e v1"
TAG_BYTES = 8
"""Bytes of the truncated GCM tag."""
COUNTER_BYTES = 2
"""Default bytes of the packet counter sent in clear (its low bits); 1 is an option."""
E2E_OVERHEAD = COUNTER_BYTES + TAG_BYTES
"""Bytes a :class:`SecureLink` adds to every datagram by default (9 with a 1-byte counter, 8
with none)."""
REPLAY_WINDOW = 64
"""Packets below the highest authenticated counter still accepted once (out of order)."""
DEFAULT_REKEY_INTERVAL = 1 << 24
"""Packets per key epoch."""
MAX_PACKETS = 1 << 48
"""A sender stops here rather than reuse a counter."""
SDP_ATTRIBUTE = "x-voip-codec-e2e"
"""SDP session attribute carrying a peer's public key (``a=x-voip-codec-e2e:<base64>``)."""

COUNTER_SEARCH = 16
"""Counter spans tried ahead of the nearest guess when it fails authentication (a loss burst
longer than half the span: 128 packets with a 1-byte counter, 32768 with 2 bytes)."""

ORDERED_SEARCH = 1024
"""With no counter bytes (in-order links): counters tried after the highest one accepted, i.e.
the longest run of lost datagrams the receiver resynchronises after (82 s of 80 ms packets)."""


@dataclass(frozen=True)
class DirectionKeys:
    """Keys of one direction."""

    base_key: bytes
    """32 bytes; the AES key of each epoch is derived from it."""
    nonce_salt: bytes
    """12 bytes XORed into every nonce."""
    direction: int
    """0: offerer -> answerer, 1: answerer -> offerer (part of the nonce)."""

    def epoch_key(self, epoch: int) -> bytes:
        """The 16-byte AES key of a key epoch."""
        return hmac.new(self.base_key, b"voip-codec e2e epoch" + epoch.to_bytes(8, "big"),
                        hashlib.sha256).digest()[:16]

    def nonce(self, counter: int) -> bytes:
        """The 12-byte GCM nonce of a packet counter."""
        block = bytes((self.direction, 0, 0, 0)) + counter.to_bytes(8, "big")
        return bytes(a ^ b for a, b in zip(block, self.nonce_salt, strict=True))


@dataclass(frozen=True)
class E2EKeys:
    """The keys of one end of a call (its sending and receiving direction) and the SAS."""

    send: DirectionKeys
    receive: DirectionKeys
    sas: str
    """Short authentication string, ``"dddd dddd"``: equal on both ends unless the keys were
    swapped on the way."""
    psk: bool = False
    """Whether a pre-shared secret was mixed in."""


def derive_keys(shared_secret: bytes, offerer_public: bytes, answerer_public: bytes,
                role: Role, psk: bytes | None = None) -> E2EKeys:
    """Keys for one end from the X25519 shared secret (see the module docstring).

    Args:
        shared_secret: 32-byte X25519 output.
        offerer_public: the offerer's raw 32-byte public key.
        answerer_public: the answerer's raw 32-byte public key.
        role: which end these keys are for.
        psk: optional pre-shared secret both users typed in (any length; empty = none).
    """
    if role not in ("offerer", "answerer"):
        raise ValueError(f"role must be 'offerer' or 'answerer', got {role!r}")
    transcript = hashlib.sha256(LABEL + offerer_public + answerer_public).digest()
    salt = hashlib.sha256(b"voip-codec e2e psk" + psk).digest() if psk else None
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * (32 + 12) + 5, salt=salt,
               info=LABEL + transcript).derive(shared_secret)
    forward = DirectionKeys(okm[0:32], okm[32:44], 0)
    backward = DirectionKeys(okm[44:76], okm[76:88], 1)
    number = int.from_bytes(okm[88:93], "big") % 10**8
    sas = f"{number // 10**4:04d} {number % 10**4:04d}"
    send, receive = (forward, backward) if role == "offerer" else (backward, forward)
    return E2EKeys(send=send, receive=receive, sas=sas, psk=bool(psk))


class KeyExchange:
    """One end's X25519 key pair for one call.

    Args:
        role: ``"offerer"`` (sends the SDP offer) or ``"answerer"``.
        psk: optional pre-shared secret mixed into the keys (both ends must use the same).
    """

    def __init__(self, role: Role, psk: bytes | None = None) -> None:
        if role not in ("offerer", "answerer"):
            raise ValueError(f"role must be 'offerer' or 'answerer', got {role!r}")
        self.role: Role = role
        self.psk = psk
        self._private = X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        """This end's raw 32-byte public key."""

    def derive(self, peer_public: bytes, role: Role | None = None) -> E2EKeys:
        """The call's keys, given the other end's public key.

        Args:
            peer_public: the other end's raw 32-byte public key.
            role: this end's role when it is only known now (an in-band handshake decides it
                by comparing the public keys); None: the role given at construction.

        Raises:
            ValueError: the peer's key is not a valid X25519 public key (wrong length, or a
                low-order point giving an all-zero secret).
        """
        if len(peer_public) != 32:
            raise ValueError(f"an X25519 public key has 32 bytes, got {len(peer_public)}")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            raise ValueError(f"unusable X25519 public key from the other peer: {exc}") from exc
        if not any(shared):
            raise ValueError("unusable X25519 public key from the other peer (all-zero secret)")
        role = self.role if role is None else role
        offerer, answerer = ((self.public, peer_public) if role == "offerer"
                             else (peer_public, self.public))
        return derive_keys(shared, offerer, answerer, role, self.psk)


_SDP_LINE = re.compile(r"^a=" + re.escape(SDP_ATTRIBUTE) + r":(.*)$")


def sdp_with_e2e_key(sdp: str, public: bytes) -> str:
    """The SDP with this end's public key as a session attribute (before the first ``m=``).

    Args:
        sdp: an SDP offer or answer.
        public: the raw 32-byte public key.
    """
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    newline = "\r\n" if "\r\n" in sdp else "\n"
    line = f"a={SDP_ATTRIBUTE}:{base64.b64encode(public).decode('ascii')}"
    at = next((i for i, text in enumerate(lines) if text.startswith("m=")), len(lines))
    return newline.join(lines[:at] + [line] + lines[at:])


def sdp_take_e2e_key(sdp: str) -> tuple[str, bytes | None]:
    """Split the peer's public key off an SDP.

    Returns:
        The SDP without the key line (to hand to the WebRTC stack), and the raw 32-byte key or
        None when the SDP has none.

    Raises:
        ValueError: the key line is there but not a base64 32-byte key, or there are several.
    """
    newline = "\r\n" if "\r\n" in sdp else "\n"
    kept, keys = [], []
    for text in sdp.split(newline):
        match = _SDP_LINE.match(text)
        if match:
            keys.append(match.group(1).strip())
        else:
            kept.append(text)
    if not keys:
        return sdp, None
    if len(keys) > 1:
        raise ValueError(f"the SDP carries {len(keys)} end-to-end keys, expected one")
    try:
        key = base64.b64decode(keys[0], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"bad end-to-end key in the SDP: {exc}") from exc
    if len(key) != 32:
        raise ValueError(f"bad end-to-end key in the SDP: {len(key)} bytes, expected 32")
    return newline.join(kept), key


@dataclass
class SecureStats:
    """What a :class:`SecureLink` did."""

    sent: int = 0
    """Datagrams encrypted and handed to the inner link."""
    received: int = 0
    """Datagrams authenticated and handed to the receiver."""
    truncated: int = 0
    """Dropped: shorter than counter + tag."""
    forged: int = 0
    """Dropped: failed authentication (tampered, wrong key, cut inside the ciphertext)."""
    replayed: int = 0
    """Dropped: a counter already accepted."""
    stale: int = 0
    """Dropped: older than the replay window."""
    exhausted: int = 0
    """Not sent: the counter reached its end (2**48 packets)."""

    @property
    def rejected(self) -> int:
        """All dropped incoming datagrams."""
        return self.truncated + self.forged + self.replayed + self.stale

    def to_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict."""
        return dataclasses.asdict(self)


class SecureLink(LinkBase):
    """A link that encrypts and authenticates every datagram of another link.

    Args:
        inner: the link that carries the encrypted datagrams (memory, data channel, UDP,
            serial, ...); this link takes over its receiver.
        keys: this end's keys (:meth:`KeyExchange.derive`).
        counter_bytes: low bytes of the packet counter sent with each datagram, 2 (default),
            1 (one byte less per datagram for the narrowest links) or 0 (links that never
            reorder, e.g. a serial line: the receiver tries the counters after the highest
            one it accepted, up to :data:`ORDERED_SEARCH`); both ends must agree.
        rekey_interval: packets per key epoch.
        first_counter: the sender's first packet counter (tests start near a wrap).
    """

    def __init__(self, inner: Link, keys: E2EKeys, *, counter_bytes: int = COUNTER_BYTES,
                 rekey_interval: int = DEFAULT_REKEY_INTERVAL, first_counter: int = 0) -> None:
        if counter_bytes not in (0, 1, 2):
            raise ValueError(f"counter_bytes must be 0, 1 or 2, got {counter_bytes!r}")
        overhead = counter_bytes + TAG_BYTES
        if inner.mtu <= overhead:
            raise ValueError(f"{inner.name}: MTU {inner.mtu} leaves no room after the "
                             f"{overhead}-byte encryption overhead")
        if rekey_interval < 1:
            raise ValueError(f"rekey_interval must be >= 1, got {rekey_interval}")
        super().__init__(f"e2e+{inner.name}", inner.mtu - overhead)
        self.inner = inner
        self.keys = keys
        self.counter_bytes = counter_bytes
        self.overhead = overhead
        """Bytes added to every datagram."""
        self.rekey_interval = rekey_interval
        self.stats = SecureStats()
        self._span = 1 << (8 * counter_bytes)
        self._counter = first_counter
        self._highest: int | None = None
        self._window = 0  # bit i: counter (highest - i) was accepted
        self._send_epoch: tuple[int, bytes] | None = None
        self._recv_epoch: tuple[int, bytes] | None = None
        self.last_authenticated_at: float | None = None
        """``time.monotonic()`` when the last datagram passed authentication (None: none yet);
        proof that the peer still takes part in the call (the ICE link's consent uses it)."""
        inner.set_receiver(self._on_inner)

    @property
    def send_counter(self) -> int:
        """Counter of the next datagram sent."""
        return self._counter

    @property
    def epoch(self) -> int:
        """Key epoch of the next datagram sent."""
        return self._counter // self.rekey_interval

    def _key(self, direction: DirectionKeys, counter: int, sending: bool) -> bytes:
        epoch = counter // self.rekey_interval
        cached = self._send_epoch if sending else self._recv_epoch
        if cached is not None and cached[0] == epoch:
            return cached[1]
        key = direction.epoch_key(epoch)
        if sending:
            self._send_epoch = (epoch, key)
        elif cached is None or epoch >= cached[0]:
            self._recv_epoch = (epoch, key)  # late packets of an old epoch do not evict it
        return key

    def send(self, data: bytes) -> None:
        """Encrypt and send one datagram (see :class:`~voip_codec.transport.link.Link`)."""
        self._check_size(data)
        if self.closed:
            self.dropped += 1
            return
        counter = self._counter
        if counter >= MAX_PACKETS:
            self.stats.exhausted += 1
            self.dropped += 1
            return
        self._counter += 1
        header = (counter % self._span).to_bytes(self.counter_bytes, "big")
        direction = self.keys.send
        encryptor = Cipher(algorithms.AES(self._key(direction, counter, True)),
                           modes.GCM(direction.nonce(counter))).encryptor()
        encryptor.authenticate_additional_data(header)
        body = encryptor.update(bytes(data)) + encryptor.finalize()
        self.stats.sent += 1
        self.inner.send(header + body + encryptor.tag[:TAG_BYTES])

    def _open(self, counter: int, data: bytes) -> bytes | None:
        """Decrypt under one counter guess; None when authentication fails."""
        direction = self.keys.receive
        cb = self.counter_bytes
        try:
            decryptor = Cipher(algorithms.AES(self._key(direction, counter, False)),
                               modes.GCM(direction.nonce(counter), data[-TAG_BYTES:],
                                         min_tag_length=TAG_BYTES)).decryptor()
            decryptor.authenticate_additional_data(data[:cb])
            return decryptor.update(data[cb:-TAG_BYTES]) + decryptor.finalize()
        except InvalidTag:
            return None

    def _on_inner(self, raw: bytes) -> None:
        if isinstance(raw, str) or len(raw) < self.overhead:
            self.stats.truncated += 1
            return
        data = bytes(raw)
        if self.counter_bytes == 0:
            self._on_ordered(data)
            return
        nearest = self._restore(int.from_bytes(data[:self.counter_bytes], "big"))
        verdict = self._window_verdict(nearest)
        plain = self._open(nearest, data) if verdict is None else None
        counter = nearest
        if plain is None and self._highest is not None:
            # after a loss burst longer than half the counter span the nearest guess is wrong:
            # try the next few spans ahead (never behind: that could only be a replay)
            ahead = nearest + self._span
            while ahead <= self._highest:
                ahead += self._span
            for j in range(COUNTER_SEARCH):
                plain = self._open(ahead + j * self._span, data)
                if plain is not None:
                    counter = ahead + j * self._span
                    break
        if plain is None:
            if verdict == "replayed":
                self.stats.replayed += 1
            elif verdict == "stale":
                self.stats.stale += 1
            else:
                self.stats.forged += 1
                logger.debug("%s: dropping a datagram that failed authentication", self._name)
            return
        self._accept(counter, plain)

    def _on_ordered(self, data: bytes) -> None:
        """No counter on the wire: the next counters after the highest accepted one are tried
        in turn; a datagram that fails them all is a replay when it opens under an accepted
        counter of the window, else forged (or older than the window: stale is not told)."""
        first = 0 if self._highest is None else self._highest + 1
        for counter in range(first, first + ORDERED_SEARCH):
            plain = self._open(counter, data)
            if plain is not None:
                self._accept(counter, plain)
                return
        if self._highest is not None:
            for age in range(min(REPLAY_WINDOW, self._highest + 1)):
                if self._window >> age & 1 and self._open(self._highest - age, data) is not None:
                    self.stats.replayed += 1
                    return
        self.stats.forged += 1
        logger.debug("%s: dropping a datagram that failed authentication", self._name)

    def _accept(self, counter: int, plain: bytes) -> None:
        self.last_authenticated_at = time.monotonic()
        if self._highest is None or counter > self._highest:
            shift = counter - (self._highest if self._highest is not None else counter)
            self._window = ((self._window << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self._highest = counter
        else:
            self._window |= 1 << (self._highest - counter)
        self.stats.received += 1
        self._receive(plain)

    def _window_verdict(self, counter: int) -> str | None:
        """None when ``counter`` may be new; else why it is not ("replayed" or "stale")."""
        if self._highest is None or counter > self._highest:
            return None
        age = self._highest - counter
        if age >= REPLAY_WINDOW:
            return "stale"
        return "replayed" if self._window >> age & 1 else None

    def _restore(self, low: int) -> int:
        reference = self._highest if self._highest is not None else 0
        delta = (low - reference) % self._span
        if delta >= self._span // 2:
            delta -= self._span
        counter = reference + delta
        return counter if counter >= 0 else counter + self._span

    def close(self) -> None:
        """Close this link and the inner one."""
        super().close()
        self.inner.close()
