"""Join tokens: HMAC-SHA256 over (room, peer id, expiry) with a shared secret.

Token layout (ASCII, URL-safe)::

    v1.<claims>.<mac>

* ``claims`` is unpadded base64url of the compact JSON object
  ``{"exp": <unix seconds, int>, "peer": <peer id>, "room": <room>}`` (sorted keys).
* ``mac`` is unpadded base64url of ``HMAC-SHA256(secret, "v1." + claims)``, so the
  version prefix is covered by the signature too.

The issuer (an application backend that knows who may call whom) mints a token per
peer and room; the signaling server only verifies it. Stdlib only.

Run ``python -m signaling.tokens --room R --peer P`` with ``VOIP_CODEC_SIGNALING_SECRET``
set to print a token.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .protocol import check_name, is_valid_name

TOKEN_VERSION: Final = "v1"
"""Prefix of every token this module mints."""

SECRET_ENV: Final = "VOIP_CODEC_SIGNALING_SECRET"
"""Environment variable that holds the shared secret for the CLI helpers."""

MIN_SECRET_BYTES: Final = 16
"""Shortest accepted secret; use 32 random bytes (``secrets.token_urlsafe(32)``)."""

MAX_TOKEN_CHARS: Final = 1024
"""Longer strings are rejected before any decoding work."""

MAX_TTL_S: Final = 7 * 24 * 3600
"""Longest lifetime :func:`make_join_token` accepts (one week)."""


class TokenError(Exception):
    """A join token was refused.

    Args:
        code: Error code sent to the client: ``invalid_token``, ``token_expired``,
            ``wrong_room`` or ``wrong_peer``.
        message: Explanation for the client and the log (never contains the secret).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JoinClaims:
    """What a join token grants."""

    room: str
    """Room the holder may join."""

    peer: str
    """Peer id the holder must use in the room."""

    expires_at: int
    """Unix time in seconds after which the token is refused."""


def check_secret(secret: bytes) -> bytes:
    """Validate a shared secret.

    Args:
        secret: Raw secret bytes.

    Returns:
        ``secret`` unchanged.

    Raises:
        TypeError: When ``secret`` is not bytes.
        ValueError: When it is shorter than :data:`MIN_SECRET_BYTES`.
    """
    if not isinstance(secret, bytes | bytearray):
        raise TypeError(
            f"secret must be bytes, got {type(secret).__name__}; encode str secrets as UTF-8"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return bytes(secret)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)


def _mac(secret: bytes, signed_part: str) -> bytes:
    return hmac.new(secret, signed_part.encode("ascii"), hashlib.sha256).digest()


def make_join_token(
    secret: bytes, room: str, peer: str, ttl_s: float, *, now: float | None = None
) -> str:
    """Mint a token that lets ``peer`` join ``room`` for ``ttl_s`` seconds.

    Args:
        secret: Shared secret, at least :data:`MIN_SECRET_BYTES` bytes.
        room: Room name (see :data:`signaling.protocol.NAME_PATTERN`).
        peer: Peer id the holder must announce in its ``join`` message.
        ttl_s: Lifetime in seconds, in (0, :data:`MAX_TTL_S`].
        now: Current Unix time in seconds; defaults to ``time.time()`` (for tests).

    Returns:
        The token string ``v1.<claims>.<mac>``.

    Raises:
        ValueError: On a short secret, a badly spelt room or peer, or a bad ``ttl_s``.
    """
    secret = check_secret(secret)
    check_name("room", room)
    check_name("peer", peer)
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be in (0, {MAX_TTL_S}] seconds, got {ttl_s}")
    issued = time.time() if now is None else now
    claims = {"exp": int(issued + ttl_s), "peer": peer, "room": room}
    body = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    signed_part = f"{TOKEN_VERSION}.{body}"
    return f"{signed_part}.{_b64encode(_mac(secret, signed_part))}"


def _decode_claims(body: str) -> JoinClaims:
    try:
        claims = json.loads(_b64decode(body))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise TokenError("invalid_token", "malformed token: claims are not base64url JSON") from exc
    if not isinstance(claims, dict):
        raise TokenError("invalid_token", "malformed token: claims are not a JSON object")
    room, peer, exp = claims.get("room"), claims.get("peer"), claims.get("exp")
    if not is_valid_name(room) or not is_valid_name(peer):
        raise TokenError("invalid_token", "malformed token: bad 'room' or 'peer' claim")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise TokenError("invalid_token", "malformed token: 'exp' claim is not an integer")
    return JoinClaims(room=room, peer=peer, expires_at=exp)


def _split(token: object) -> tuple[str, str, str]:
    if not isinstance(token, str) or not token:
        raise TokenError("invalid_token", "token must be a non-empty string")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenError(
            "invalid_token", f"malformed token: over {MAX_TOKEN_CHARS} chars or not ASCII"
        )
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("invalid_token", "malformed token: expected 'v1.<claims>.<mac>'")
    version, body, mac = parts
    if version != TOKEN_VERSION:
        raise TokenError(
            "invalid_token",
            f"unsupported token version {version[:8]!r}; expected {TOKEN_VERSION!r}",
        )
    return version, body, mac


def peek_join_token(token: str) -> JoinClaims:
    """Read a token's claims WITHOUT checking its signature or expiry.

    Only for clients that need their own peer id; never use it to authorise anything.

    Args:
        token: Token string.

    Returns:
        The unverified claims.

    Raises:
        TokenError: ``invalid_token`` when the token cannot be parsed.
    """
    _, body, _ = _split(token)
    return _decode_claims(body)


def verify_join_token(
    secret: bytes,
    token: object,
    room: str,
    peer: str | None = None,
    *,
    now: float | None = None,
) -> JoinClaims:
    """Check a join token and that it grants ``room`` (and ``peer`` when given).

    The signature is compared in constant time (``hmac.compare_digest``) before the
    claims are decoded.

    Args:
        secret: Shared secret the token was minted with.
        token: Token as received from the network (any type; non-str is refused).
        room: Room the client asks to join.
        peer: Peer id the client announces, or None to skip the peer check.
        now: Current Unix time in seconds; defaults to ``time.time()`` (for tests).

    Returns:
        The verified claims.

    Raises:
        TokenError: ``invalid_token`` (malformed, tampered or signed with another secret),
            ``token_expired``, ``wrong_room`` or ``wrong_peer``.
    """
    version, body, mac = _split(token)
    try:
        given_mac = _b64decode(mac)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("invalid_token", "malformed token: signature is not base64url") from exc
    expected_mac = _mac(check_secret(secret), f"{version}.{body}")
    if not hmac.compare_digest(given_mac, expected_mac):
        raise TokenError(
            "invalid_token", "token signature does not match (tampered token or wrong secret)"
        )
    claims = _decode_claims(body)
    current = time.time() if now is None else now
    if current >= claims.expires_at:
        raise TokenError(
            "token_expired",
            f"token expired {int(current - claims.expires_at)} s ago; request a new one",
        )
    if claims.room != room:
        raise TokenError("wrong_room", "token was issued for another room")
    if peer is not None and claims.peer != peer:
        raise TokenError(
            "wrong_peer", "token was issued for another peer id; join with the id in the token"
        )
    return claims


def secret_from_env(name: str = SECRET_ENV) -> bytes | None:
    """Read the shared secret from an environment variable.

    Args:
        name: Variable name.

    Returns:
        The UTF-8 bytes of the value, or None when unset or empty.
    """
    value = os.environ.get(name, "")
    return value.encode("utf-8") if value else None


def main(argv: Sequence[str] | None = None) -> int:
    """Print a join token; the secret comes from ``VOIP_CODEC_SIGNALING_SECRET``.

    Args:
        argv: Command-line arguments without the program name; None reads ``sys.argv``.

    Returns:
        Process exit status (0 on success, 2 when no secret is set).
    """
    parser = argparse.ArgumentParser(
        prog="python -m signaling.tokens",
        description=f"Mint a signaling join token (secret from ${SECRET_ENV}).",
    )
    parser.add_argument("--room", required=True, help="room name")
    parser.add_argument("--peer", required=True, help="peer id the holder will use")
    parser.add_argument(
        "--ttl", type=float, default=3600.0, help="lifetime in seconds (default: 3600)"
    )
    args = parser.parse_args(argv)
    secret = secret_from_env()
    if secret is None:
        print(f"error: set ${SECRET_ENV} to the server's shared secret", file=sys.stderr)
        return 2
    try:
        print(make_join_token(secret, args.room, args.peer, args.ttl))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
