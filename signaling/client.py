"""Async client for the signaling relay, transport-generic (no aiortc import).

Typical use by a WebRTC peer::

    async with SignalingClient(url, "room1", secret=secret) as sig:
        role = await sig.join()
        await sig.wait_for_peer(timeout_s=60)
        if role == "offerer":
            await sig.send({"type": "offer", "sdp": local_sdp})
            answer = await sig.recv()          # {"type": "answer", "sdp": ..., "from": ...}
        else:
            offer = await sig.recv()           # {"type": "offer", "sdp": ..., "from": ...}
            await sig.send({"type": "answer", "sdp": local_sdp})
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from . import protocol as p
from .tokens import make_join_token, peek_join_token

logger = logging.getLogger("signaling.client")


class SignalingError(Exception):
    """The server answered with an ``error`` message.

    Args:
        code: Server error code (see :data:`signaling.protocol.ERRORS`).
        message: Server explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SignalingClosed(ConnectionError):
    """The signaling connection is closed.

    Args:
        close_code: WebSocket close code, or None when unknown.
    """

    def __init__(self, close_code: int | None) -> None:
        super().__init__(f"signaling connection closed (code {close_code})")
        self.close_code = close_code


class SignalingClient:
    """One peer's connection to a signaling room.

    Args:
        url: WebSocket URL of the server, e.g. ``ws://127.0.0.1:8765/ws``.
        room: Room to join.
        peer_id: Own peer id; None takes it from ``token``, or makes a random one.
        token: Join token from the application backend.
        secret: Shared secret to mint a token locally (trusted peers and tests only);
            excludes ``token``.
        token_ttl_s: Lifetime of a token minted from ``secret``, in seconds.
        timeout_s: Default timeout of ``connect``, ``join`` and ``recv``, in seconds.
        keepalive_s: Interval of ``ping`` messages once joined, keeping the server's idle
            timeout away during long calls; None disables them.
        max_message_bytes: Largest message ``send`` accepts (match the server's limit).
        session: aiohttp session to use; None creates (and later closes) one.

    Raises:
        ValueError: On a badly spelt room or peer id, a token for another room or peer,
            or both ``token`` and ``secret``.
    """

    def __init__(
        self,
        url: str,
        room: str,
        peer_id: str | None = None,
        *,
        token: str | None = None,
        secret: bytes | None = None,
        token_ttl_s: float = 300.0,
        timeout_s: float = 10.0,
        keepalive_s: float | None = 30.0,
        max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if token is not None and secret is not None:
            raise ValueError("give either token or secret, not both")
        self.url = url
        self.room = p.check_name("room", room)
        if peer_id is None:
            peer_id = (
                peek_join_token(token).peer if token is not None else f"peer-{secrets.token_hex(4)}"
            )
        self.peer_id = p.check_name("peer", peer_id)
        if token is not None:
            claims = peek_join_token(token)
            if claims.room != room or claims.peer != peer_id:
                raise ValueError(
                    f"token is for room {claims.room!r} / peer {claims.peer!r}, not {room!r} / {peer_id!r}"
                )
        elif secret is not None:
            token = make_join_token(secret, room, peer_id, token_ttl_s)
        self._token = token
        self._timeout_s = timeout_s
        self._keepalive_s = keepalive_s
        self._max_message_bytes = max_message_bytes
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self.role: str | None = None
        """``"offerer"`` or ``"answerer"`` once joined."""
        self.remote_peer_id: str | None = None
        """Id of the other peer while one is in the room."""

    def _log(self, level: int, msg: str, *args: object) -> None:
        logger.log(level, "SignalingClient(%s/%s) " + msg, self.room, self.peer_id, *args)

    @property
    def closed(self) -> bool:
        """True before ``connect`` and after the connection ended."""
        return self._ws is None or self._ws.closed

    async def connect(self) -> None:
        """Open the WebSocket (does not join).

        Raises:
            TimeoutError: When the server does not answer within ``timeout_s``.
            aiohttp.ClientError: When the connection is refused.
        """
        if self._ws is not None:
            raise RuntimeError("connect() was already called")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            self._ws = await asyncio.wait_for(
                self._session.ws_connect(self.url, max_msg_size=4 * self._max_message_bytes),
                self._timeout_s,
            )
        except BaseException as exc:
            if self._own_session:
                await self._session.close()
                self._session = None
            if isinstance(exc, asyncio.TimeoutError):
                raise TimeoutError(
                    f"no WebSocket handshake from {self.url} within {self._timeout_s:g} s"
                ) from exc
            raise
        self._log(logging.DEBUG, "connected to %s", self.url)

    async def join(self, timeout_s: float | None = None) -> str:
        """Join the room and return this peer's role.

        The peer that finds the other already waiting is the ``"offerer"``; the peer
        that was there first is the ``"answerer"``.

        Args:
            timeout_s: Seconds to wait for the answer; None uses ``timeout_s`` of the client.

        Returns:
            ``"offerer"`` or ``"answerer"``.

        Raises:
            SignalingError: When the server refuses the join (room_full, invalid_token, ...).
            SignalingClosed: When the connection ends first.
            TimeoutError: When no answer comes in time.
        """
        message: dict[str, Any] = {"type": p.JOIN, "room": self.room, "peer_id": self.peer_id}
        if self._token is not None:
            message["token"] = self._token
        await self.send(message)
        while True:
            reply = await self._recv_raw(timeout_s)
            if reply.get("type") == p.JOINED:
                break
            self._track(reply)
            self._pending.append(reply)
        role = str(reply.get("role"))
        if role not in (p.ROLE_OFFERER, p.ROLE_ANSWERER):
            raise SignalingError("bad_json", f"server sent an unknown role {role!r}")
        self.role = role
        others = [peer for peer in reply.get("peers", []) if peer != self.peer_id]
        self.remote_peer_id = others[0] if others else None
        self._log(logging.INFO, "joined as %s (peers: %s)", role, reply.get("peers"))
        if self._keepalive_s is not None and self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(
                self._keepalive_loop(self._keepalive_s)
            )
        return role

    async def wait_for_peer(self, timeout_s: float | None = None) -> str:
        """Wait until another peer is in the room.

        Messages that arrive meanwhile stay queued for :meth:`recv`.

        Args:
            timeout_s: Seconds to wait; None uses ``timeout_s`` of the client.

        Returns:
            The other peer's id.

        Raises:
            TimeoutError: When nobody joins in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout_s if timeout_s is None else timeout_s)
        while True:
            remote = self.remote_peer_id
            if remote is not None:
                return remote
            message = await self._recv_raw(max(0.001, deadline - loop.time()))
            self._track(message)
            if message.get("type") != p.PEER_JOINED:
                self._pending.append(message)

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send one message, e.g. ``{"type": "offer", "sdp": sdp}``.

        Args:
            message: JSON-serialisable mapping with a string ``type``.

        Raises:
            ValueError: When ``type`` is missing or the message is over ``max_message_bytes``.
            SignalingClosed: When the connection is not open.
        """
        if not isinstance(message.get("type"), str):
            raise ValueError("message needs a string 'type'")
        text = json.dumps(dict(message), separators=(",", ":"))
        size = len(text.encode("utf-8"))
        if size > self._max_message_bytes:
            raise ValueError(f"message is {size} bytes; the limit is {self._max_message_bytes}")
        ws = self._ws
        if ws is None or ws.closed:
            raise SignalingClosed(None if ws is None else ws.close_code)
        try:
            await ws.send_str(text)
        except ConnectionError as exc:
            raise SignalingClosed(ws.close_code) from exc

    async def recv(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Receive the next message for the application.

        ``pong`` replies are skipped. ``peer_joined``/``peer_left`` are returned and
        also update :attr:`remote_peer_id`.

        Args:
            timeout_s: Seconds to wait; None uses ``timeout_s`` of the client.

        Returns:
            The decoded message (relayed ones carry ``from``).

        Raises:
            SignalingError: When the server sent an ``error`` message.
            SignalingClosed: When the connection ended.
            TimeoutError: When nothing arrives in time.
        """
        if self._pending:
            return self._pending.popleft()
        message = await self._recv_raw(timeout_s)
        self._track(message)
        return message

    def _track(self, message: dict[str, Any]) -> None:
        mtype = message.get("type")
        if mtype == p.PEER_JOINED:
            peer = message.get("peer_id")
            self.remote_peer_id = peer if isinstance(peer, str) else None
        elif mtype == p.PEER_LEFT and message.get("peer_id") == self.remote_peer_id:
            self.remote_peer_id = None

    async def _recv_raw(self, timeout_s: float | None) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise SignalingClosed(None)
        timeout = self._timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                msg = await ws.receive(timeout=max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError as exc:
                raise TimeoutError(f"no signaling message within {timeout:g} s") from exc
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise SignalingClosed(ws.close_code)
            try:
                message = json.loads(msg.data)
            except ValueError:
                self._log(logging.WARNING, "dropped non-JSON message from the server")
                continue
            if not isinstance(message, dict):
                self._log(logging.WARNING, "dropped non-object message from the server")
                continue
            mtype = message.get("type")
            if mtype == p.PONG:
                continue
            if mtype == p.ERROR:
                raise SignalingError(str(message.get("code")), str(message.get("message")))
            return message

    async def _keepalive_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.send({"type": p.PING})
            except SignalingClosed:
                return

    async def close(self, *, send_bye: bool = True) -> None:
        """Leave the room (``bye``) and close the connection; safe to call twice.

        Args:
            send_bye: Tell the server (and so the other peer) that this peer leaves.
        """
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        ws = self._ws
        if ws is not None and not ws.closed:
            if send_bye and self.role is not None:
                with contextlib.suppress(SignalingClosed):
                    await self.send({"type": p.BYE})
            await ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._log(logging.DEBUG, "closed")

    async def __aenter__(self) -> SignalingClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
