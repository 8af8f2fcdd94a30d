"""Wire protocol of the signaling relay: message types, error codes and field checks.

Every WebSocket message is one UTF-8 JSON object with a string ``type``. This module
holds only constants and pure validation helpers (stdlib only) so that the server, the
client and the token code agree on names without importing each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

PROTOCOL_VERSION: Final = 1
"""Version of the message protocol, reported by ``GET /health``."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest accepted client message in bytes (UTF-8 encoded JSON text)."""

ROLE_OFFERER: Final = "offerer"
"""Role of the peer that joins a room where another peer is already waiting."""

ROLE_ANSWERER: Final = "answerer"
"""Role of the peer that was in the room first."""

# Client -> server message types.
JOIN: Final = "join"
OFFER: Final = "offer"
ANSWER: Final = "answer"
CANDIDATE: Final = "candidate"
BYE: Final = "bye"
PING: Final = "ping"

CLIENT_TYPES: Final = (JOIN, OFFER, ANSWER, CANDIDATE, BYE, PING)
"""Every type a client may send, in documentation order."""

RELAYED_TYPES: Final = (OFFER, ANSWER, CANDIDATE)
"""Client types that the server forwards to the other peer of the room."""

# Server -> client message types.
JOINED: Final = "joined"
PEER_JOINED: Final = "peer_joined"
PEER_LEFT: Final = "peer_left"
PONG: Final = "pong"
ERROR: Final = "error"

NAME_PATTERN: Final = r"[A-Za-z0-9._~-]{1,64}"
"""Allowed spelling of room names and peer ids (URL-safe, 1 to 64 characters)."""

_NAME_RE: Final = re.compile(NAME_PATTERN)

# WebSocket close codes used by the server (RFC 6455, section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_TRY_AGAIN_LATER: Final = 1013


@dataclass(frozen=True)
class ErrorSpec:
    """How the server reacts to one error code."""

    close_code: int | None
    """WebSocket close code sent after the error message, or None when the connection
    stays open (only once joined: before a successful join every error closes with
    1008)."""

    description: str
    """One-line meaning, used in docs/signaling.md."""


ERRORS: Final[dict[str, ErrorSpec]] = {
    "bad_json": ErrorSpec(None, "text frame is not a JSON object"),
    "unsupported_frame": ErrorSpec(None, "binary frame received; only JSON text is accepted"),
    "message_too_large": ErrorSpec(CLOSE_MESSAGE_TOO_BIG, "message exceeds max_message_bytes"),
    "missing_field": ErrorSpec(None, "a required field is absent"),
    "bad_field": ErrorSpec(None, "a field has the wrong type or spelling"),
    "unknown_type": ErrorSpec(None, "'type' is not one of the client message types"),
    "not_joined": ErrorSpec(CLOSE_POLICY_VIOLATION, "a message other than 'join' came first"),
    "already_joined": ErrorSpec(None, "'join' sent twice on one connection"),
    "auth_required": ErrorSpec(CLOSE_POLICY_VIOLATION, "server needs a token and none was given"),
    "invalid_token": ErrorSpec(CLOSE_POLICY_VIOLATION, "token is malformed or its signature fails"),
    "token_expired": ErrorSpec(CLOSE_POLICY_VIOLATION, "token expiry is in the past"),
    "wrong_room": ErrorSpec(CLOSE_POLICY_VIOLATION, "token was issued for another room"),
    "wrong_peer": ErrorSpec(CLOSE_POLICY_VIOLATION, "token was issued for another peer id"),
    "room_full": ErrorSpec(CLOSE_TRY_AGAIN_LATER, "the room already holds two peers"),
    "peer_id_taken": ErrorSpec(CLOSE_POLICY_VIOLATION, "another peer in the room uses this id"),
    "server_full": ErrorSpec(CLOSE_TRY_AGAIN_LATER, "max_rooms reached; no room can be created"),
    "no_peer": ErrorSpec(None, "relay requested while alone in the room; message dropped"),
    "join_timeout": ErrorSpec(CLOSE_POLICY_VIOLATION, "no 'join' within join_timeout_s"),
    "idle_timeout": ErrorSpec(CLOSE_GOING_AWAY, "no message within idle_timeout_s"),
    "too_many_errors": ErrorSpec(
        CLOSE_POLICY_VIOLATION, "max_errors protocol errors on one connection"
    ),
}
"""Closed set of error codes the server sends, with the reaction to each."""


class ProtocolError(Exception):
    """A client message broke the protocol.

    Args:
        code: One of the keys of :data:`ERRORS`.
        message: Human-readable explanation that tells the client what to fix.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in ERRORS:
            raise ValueError(f"unknown error code {code!r}; allowed: {sorted(ERRORS)}")
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_message(data: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode one client text message and check its size, JSON shape and ``type``.

    Args:
        data: The text of one WebSocket message.
        max_bytes: Largest accepted size of ``data`` in UTF-8 bytes.

    Returns:
        The decoded JSON object; its ``type`` is one of :data:`CLIENT_TYPES`.

    Raises:
        ProtocolError: ``message_too_large``, ``bad_json``, ``missing_field``, ``bad_field``
            or ``unknown_type``. No other exception escapes for any input text.
    """
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(
            "message_too_large", f"message is {size} bytes; the limit is {max_bytes}"
        )
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", "message is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "message must be a JSON object")
    if "type" not in msg:
        raise ProtocolError("missing_field", "every message needs a 'type' field")
    mtype = msg["type"]
    if not isinstance(mtype, str):
        raise ProtocolError("bad_field", "'type' must be a string")
    if mtype not in CLIENT_TYPES:
        raise ProtocolError(
            "unknown_type", f"unknown type {mtype[:32]!r}; allowed: {', '.join(CLIENT_TYPES)}"
        )
    return msg


def is_valid_name(value: object) -> TypeGuard[str]:
    """Tell whether ``value`` is a valid room name or peer id.

    Args:
        value: Candidate name, of any type.

    Returns:
        True when ``value`` is a str matching :data:`NAME_PATTERN`.
    """
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def check_name(kind: str, value: object) -> str:
    """Validate a room name or peer id given by a caller (not by the network).

    Args:
        kind: What the value is ("room" or "peer"), used in the error message.
        value: The value to check.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: When ``value`` does not match :data:`NAME_PATTERN`.
    """
    if not is_valid_name(value):
        raise ValueError(
            f"{kind} must match {NAME_PATTERN} (1-64 URL-safe characters), got {value!r}"
        )
    return value


def require_name(msg: dict[str, Any], field: str) -> str:
    """Read a room name or peer id field from a client message.

    Args:
        msg: Decoded client message.
        field: Field name, e.g. "room" or "peer_id".

    Returns:
        The field value.

    Raises:
        ProtocolError: ``missing_field`` when absent, ``bad_field`` when misspelt.
    """
    if field not in msg:
        raise ProtocolError("missing_field", f"'{msg.get('type')}' needs a '{field}' field")
    value = msg[field]
    if not is_valid_name(value):
        raise ProtocolError("bad_field", f"'{field}' must be a string matching {NAME_PATTERN}")
    return value


def require_str(msg: dict[str, Any], field: str) -> str:
    """Read a required non-empty string field (e.g. ``sdp``) from a client message.

    Args:
        msg: Decoded client message.
        field: Field name.

    Returns:
        The field value.

    Raises:
        ProtocolError: ``missing_field`` when absent, ``bad_field`` when not a non-empty str.
    """
    if field not in msg:
        raise ProtocolError("missing_field", f"'{msg.get('type')}' needs a '{field}' field")
    value = msg[field]
    if not isinstance(value, str) or not value:
        raise ProtocolError("bad_field", f"'{field}' must be a non-empty string")
    return value


def relay_payload(msg: dict[str, Any]) -> dict[str, Any]:
    """Validate a relayed message and rebuild it from its known fields only.

    Unknown extra fields are dropped so a peer cannot smuggle data past the checks.

    Args:
        msg: Decoded client message whose type is in :data:`RELAYED_TYPES`.

    Returns:
        The message to forward (without the ``from`` field, which the server adds).

    Raises:
        ProtocolError: ``missing_field`` or ``bad_field`` on a malformed message.
    """
    mtype = msg["type"]
    if mtype in (OFFER, ANSWER):
        return {"type": mtype, "sdp": require_str(msg, "sdp")}
    assert mtype == CANDIDATE, mtype
    if "candidate" not in msg:
        raise ProtocolError(
            "missing_field", "'candidate' needs a 'candidate' field (null ends candidates)"
        )
    candidate = msg["candidate"]
    if candidate is not None and not isinstance(candidate, str):
        raise ProtocolError("bad_field", "'candidate' must be a string or null")
    sdp_mid = msg.get("sdpMid")
    if sdp_mid is not None and not isinstance(sdp_mid, str):
        raise ProtocolError("bad_field", "'sdpMid' must be a string or null")
    index = msg.get("sdpMLineIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or index < 0):
        raise ProtocolError("bad_field", "'sdpMLineIndex' must be a non-negative integer or null")
    return {"type": CANDIDATE, "candidate": candidate, "sdpMid": sdp_mid, "sdpMLineIndex": index}
