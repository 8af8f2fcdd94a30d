"""aiohttp WebSocket signaling relay with two-peer rooms and HMAC join tokens.

Endpoints:

* ``GET /ws``: WebSocket; see docs/signaling.md for the message protocol.
* ``GET /health``: JSON ``{"status": "ok", "rooms": N, "peers": N, ...}``.

The relay never looks inside SDP; it checks message shape, authenticates the join,
pairs two peers per room, tells them who offers, and forwards offer/answer/candidate.
Needs only aiohttp and the standard library.

Run it with ``python -m signaling.server --host 127.0.0.1 --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import itertools
import json
import logging
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from . import protocol as p
from .cli import DEFAULT_HOST, DEFAULT_PORT, DESCRIPTION, add_arguments, add_parser
from .tokens import SECRET_ENV, TokenError, check_secret, secret_from_env, verify_join_token
from .web import WebAssets, add_web_routes

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HEALTH_PATH",
    "STATE_KEY",
    "WS_PATH",
    "RunningServer",
    "ServerConfig",
    "SignalingState",
    "add_parser",
    "create_app",
    "main",
    "resolve_secret",
    "run",
    "run_server",
    "serve",
    "start_server",
]

logger = logging.getLogger("signaling.server")

WS_PATH: Final = "/ws"
HEALTH_PATH: Final = "/health"

_FRAME_LIMIT_FACTOR: Final = 2
"""aiohttp's own frame limit is this multiple of max_message_bytes: messages between the
two limits get a JSON ``message_too_large`` error, larger ones a bare 1009 close."""

CLOSES_PER_TURN: Final = 16
"""Connection teardowns (``peer_left`` to the partner, the close handshake, releasing the
socket and the request) started per event-loop iteration; the rest wait for later iterations."""


class _TurnBudget:
    """Lets at most ``per_turn`` callers of :meth:`acquire` through per event-loop iteration;
    later callers wait, in arrival order, for the following iterations.

    Without it a burst of disconnects (a thousand clients closing at once) runs every
    connection's teardown in the same iteration, and every other request, ``/health``
    included, waits behind all of them. Callers let through from the waiting line run one
    iteration after they are woken, so one iteration runs at most ``2 * per_turn`` of them.
    """

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self._used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._turn_pending = False
        self.deferred = 0
        """Callers that had to wait for a later iteration (since start)."""

    def _take(self) -> None:
        self._used += 1
        if not self._turn_pending:
            self._turn_pending = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        self._used = 0
        while self._waiters and self._used < self.per_turn:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter gives its place up
                waiter.set_result(None)
                self._take()

    async def acquire(self) -> None:
        """Return in this iteration if the budget allows, else in a later one."""
        if self._used < self.per_turn and not self._waiters:
            self._take()
            return
        self.deferred += 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if not self._turn_pending:
            self._turn_pending = True
            asyncio.get_running_loop().call_soon(self._next_turn)
        await waiter


@dataclass(frozen=True)
class ServerConfig:
    """Limits and authentication of one signaling server."""

    secret: bytes | None
    """Shared HMAC secret for join tokens; None only together with ``insecure_no_auth``."""

    insecure_no_auth: bool = False
    """Accept joins without tokens. Must be set explicitly to run without a secret."""

    max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES
    """Largest accepted client message in bytes."""

    max_rooms: int = 1000
    """Rooms that may exist at once; further joins that would create one get ``server_full``."""

    max_connections: int = 2000
    """Open WebSockets at once (joined or not); beyond it the upgrade gets HTTP 503."""

    join_timeout_s: float = 10.0
    """Seconds a new connection has to send a valid ``join``."""

    idle_timeout_s: float = 300.0
    """Seconds a joined connection may stay silent (send ``ping`` to stay longer)."""

    heartbeat_s: float = 20.0
    """WebSocket ping interval; a peer that misses the pong is disconnected."""

    max_errors: int = 10
    """Protocol errors tolerated on one joined connection before it is closed."""

    def __post_init__(self) -> None:
        if self.secret is None:
            if not self.insecure_no_auth:
                raise ValueError(
                    f"a secret is required (set ${SECRET_ENV}); pass insecure_no_auth=True "
                    "to run an open server on a trusted network"
                )
        else:
            if self.insecure_no_auth:
                raise ValueError("give either a secret or insecure_no_auth=True, not both")
            object.__setattr__(self, "secret", check_secret(self.secret))
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        for name in ("max_rooms", "max_connections", "max_errors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("join_timeout_s", "idle_timeout_s", "heartbeat_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")


@dataclass
class _Room:
    name: str
    peers: dict[str, _Session] = field(default_factory=dict)
    """Peers by id, in join order (at most two)."""

    def other(self, peer_id: str) -> _Session | None:
        for pid, session in self.peers.items():
            if pid != peer_id:
                return session
        return None


@dataclass
class SignalingState:
    """Mutable server state, stored in the application under :data:`STATE_KEY`."""

    config: ServerConfig
    rooms: dict[str, _Room] = field(default_factory=dict)
    sessions: set[_Session] = field(default_factory=set)
    relayed: int = 0
    """Messages forwarded between peers since start."""
    errors: int = 0
    """Error messages sent since start."""
    closes: _TurnBudget = field(default_factory=lambda: _TurnBudget(CLOSES_PER_TURN))
    """Paces connection teardowns (see :data:`CLOSES_PER_TURN`)."""
    peer_count: int = 0
    """Peers in rooms now (kept by join and leave, so that ``/health`` is O(1))."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_label(self) -> str:
        return f"c{next(self._ids)}"


STATE_KEY: Final = web.AppKey("signaling_state", SignalingState)
WEB_KEY: Final = web.AppKey("web_assets", WebAssets)
"""What ``serve --web`` serves, when it does."""


class _Session:
    """One WebSocket connection: receive loop, join, relay and clean-up."""

    def __init__(self, state: SignalingState, ws: web.WebSocketResponse, label: str) -> None:
        self._state = state
        self._config = state.config
        self.ws = ws
        self.label = label
        self.room: _Room | None = None
        self.peer_id: str | None = None
        self._errors = 0

    def _log(self, level: int, msg: str, *args: object) -> None:
        logger.log(level, "Session(%s) " + msg, self.label, *args)

    async def send(self, message: dict[str, Any]) -> bool:
        """Send one JSON message; returns False when the connection is already gone."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(json.dumps(message, separators=(",", ":")))
        except ConnectionError as exc:
            self._log(logging.DEBUG, "send failed: %s", exc)
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode("utf-8")[:120])

    async def run(self) -> None:
        """Receive loop; returns when the connection ends (never raises for bad input)."""
        while not self.ws.closed:
            joined = self.room is not None
            timeout = self._config.idle_timeout_s if joined else self._config.join_timeout_s
            try:
                msg = await self.ws.receive(timeout=timeout)
            except asyncio.TimeoutError:
                code = "idle_timeout" if joined else "join_timeout"
                await self._error(p.ProtocolError(code, f"no message within {timeout:g} s"))
                break
            if msg.type == WSMsgType.TEXT:
                try:
                    await self._on_text(msg.data)
                except p.ProtocolError as exc:
                    await self._error(exc)
            elif msg.type == WSMsgType.BINARY:
                await self._error(p.ProtocolError("unsupported_frame", "send JSON as text frames"))
            elif msg.type == WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
                    self._log(logging.WARNING, "frame over the hard limit, closed with 1009")
                else:
                    self._log(logging.INFO, "connection error: %s", error)
                break
            else:  # CLOSE, CLOSING, CLOSED
                break

    async def _error(self, exc: p.ProtocolError) -> None:
        """Report a protocol error and close when its spec (or the error budget) says so."""
        self._errors += 1
        self._state.errors += 1
        spec = p.ERRORS[exc.code]
        self._log(logging.INFO, "error %s: %s", exc.code, exc.message)
        await self.send({"type": p.ERROR, "code": exc.code, "message": exc.message})
        if spec.close_code is not None:
            await self.close(spec.close_code, exc.code)
        elif self.room is None:
            await self.close(p.CLOSE_POLICY_VIOLATION, exc.code)
        elif self._errors >= self._config.max_errors:
            message = f"{self._errors} protocol errors on this connection"
            await self.send({"type": p.ERROR, "code": "too_many_errors", "message": message})
            await self.close(p.CLOSE_POLICY_VIOLATION, "too_many_errors")

    async def _on_text(self, data: str) -> None:
        msg = p.parse_client_message(data, self._config.max_message_bytes)
        mtype = msg["type"]
        if mtype == p.JOIN:
            await self._on_join(msg)
            return
        if self.room is None or self.peer_id is None:
            raise p.ProtocolError("not_joined", f"send 'join' before '{mtype}'")
        if mtype == p.PING:
            await self.send({"type": p.PONG})
        elif mtype == p.BYE:
            self._log(logging.INFO, "bye from %s", self.peer_id)
            await self.leave("bye")
            await self.close(p.CLOSE_NORMAL, "bye")
        else:
            await self._relay(msg)

    async def _on_join(self, msg: dict[str, Any]) -> None:
        if self.room is not None:
            raise p.ProtocolError("already_joined", f"already in room {self.room.name!r}")
        room_name = p.require_name(msg, "room")
        peer_id = p.require_name(msg, "peer_id")
        secret = self._config.secret
        if secret is not None:
            token = msg.get("token")
            if token is None:
                raise p.ProtocolError("auth_required", "this server requires a 'token' in 'join'")
            try:
                verify_join_token(secret, token, room_name, peer_id)
            except TokenError as exc:
                raise p.ProtocolError(exc.code, exc.message) from exc
        # From here to the end of the registration there is no await: no other session
        # can interleave, so the room limits below cannot be raced.
        room = self._state.rooms.get(room_name)
        if room is None:
            if len(self._state.rooms) >= self._config.max_rooms:
                raise p.ProtocolError("server_full", "too many rooms open; try again later")
            room = _Room(room_name)
            self._state.rooms[room_name] = room
        elif peer_id in room.peers:
            raise p.ProtocolError("peer_id_taken", f"peer id {peer_id!r} is already in this room")
        elif len(room.peers) >= 2:
            raise p.ProtocolError("room_full", "this room already has two peers")
        room.peers[peer_id] = self
        self._state.peer_count += 1
        self.room, self.peer_id = room, peer_id
        peers = list(room.peers)
        other = room.other(peer_id)
        role = p.ROLE_ANSWERER if other is None else p.ROLE_OFFERER
        self._log(
            logging.INFO, "%s joined room %s as %s (%d/2)", peer_id, room_name, role, len(peers)
        )
        await self.send(
            {"type": p.JOINED, "room": room_name, "peer_id": peer_id, "peers": peers, "role": role}
        )
        if other is not None:
            await other.send(
                {"type": p.PEER_JOINED, "peer_id": peer_id, "peers": peers, "role": p.ROLE_ANSWERER}
            )

    async def _relay(self, msg: dict[str, Any]) -> None:
        assert self.room is not None and self.peer_id is not None
        out = p.relay_payload(msg)
        other = self.room.other(self.peer_id)
        if other is None:
            raise p.ProtocolError("no_peer", f"no other peer in the room; '{out['type']}' dropped")
        out["from"] = self.peer_id
        if await other.send(out):
            self._state.relayed += 1
            self._log(
                logging.DEBUG, "relayed %s %s -> %s", out["type"], self.peer_id, other.peer_id
            )

    async def leave(self, reason: str) -> None:
        """Remove this peer from its room (idempotent) and tell the other peer."""
        other = self.detach(reason)
        if other is not None and self.peer_id is not None:
            await other.send({"type": p.PEER_LEFT, "peer_id": self.peer_id, "reason": reason})

    def detach(self, reason: str) -> _Session | None:
        """Remove this peer from its room (idempotent, O(1), no await).

        Returns:
            The other peer of the room, who should be told with ``peer_left``; None when
            there is none or this peer was in no room.
        """
        room, peer_id = self.room, self.peer_id
        if room is None or peer_id is None:
            return None
        self.room = None
        if room.peers.pop(peer_id, None) is not None:
            self._state.peer_count -= 1
        other = room.other(peer_id)
        if not room.peers and self._state.rooms.get(room.name) is room:
            del self._state.rooms[room.name]
        self._log(logging.INFO, "%s left room %s (%s)", peer_id, room.name, reason)
        return other


async def _handle_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    config = state.config
    if len(state.sessions) >= config.max_connections:
        logger.warning(
            "Signaling refused %s: %d connections open", request.remote, len(state.sessions)
        )
        return web.json_response(
            {
                "type": p.ERROR,
                "code": "server_full",
                "message": "too many connections; try again later",
            },
            status=503,
        )
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat_s,
        max_msg_size=_FRAME_LIMIT_FACTOR * config.max_message_bytes,
        # a client's close frame ends run(); the reply is part of the paced teardown below
        autoclose=False,
    )
    session = _Session(state, ws, state.next_label())
    # Registered before the first await so concurrent upgrades cannot pass the limit.
    state.sessions.add(session)
    try:
        await ws.prepare(request)
        session._log(logging.DEBUG, "connected from %s", request.remote)
        await session.run()
    finally:
        try:
            # the room is left at once (no await): a new peer may take the place
            other = session.detach("disconnected")
            # the rest (a message to the partner, the close handshake, releasing the
            # socket and the request) waits for its turn, so that a burst of disconnects
            # is spread over several loop iterations instead of stalling one
            await state.closes.acquire()
            if other is not None and session.peer_id is not None:
                await other.send(
                    {"type": p.PEER_LEFT, "peer_id": session.peer_id, "reason": "disconnected"}
                )
            if ws.prepared:
                await session.close(p.CLOSE_NORMAL, "")
        finally:
            state.sessions.discard(session)
        session._log(logging.DEBUG, "closed with %s", ws.close_code)
    return ws


async def _handle_health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "status": "ok",
            "protocol": p.PROTOCOL_VERSION,
            "auth": "disabled" if state.config.secret is None else "hmac-sha256",
            "rooms": len(state.rooms),
            "peers": state.peer_count,
            "connections": len(state.sessions),
            "relayed": state.relayed,
            "errors": state.errors,
        }
    )


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE_KEY]
    sessions = list(state.sessions)
    if sessions:
        logger.info("Signaling closing %d connections for shutdown", len(sessions))
    await asyncio.gather(*(s.close(p.CLOSE_GOING_AWAY, "server shutdown") for s in sessions))


def create_app(
    secret: bytes | None,
    *,
    insecure_no_auth: bool = False,
    max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES,
    max_rooms: int = 1000,
    max_connections: int = 2000,
    join_timeout_s: float = 10.0,
    idle_timeout_s: float = 300.0,
    heartbeat_s: float = 20.0,
    max_errors: int = 10,
    web_assets: WebAssets | None = None,
) -> web.Application:
    """Build the signaling application.

    Args:
        secret: Shared HMAC secret (at least 16 bytes) that join tokens must be signed
            with, or None together with ``insecure_no_auth=True``.
        insecure_no_auth: Run an open server that accepts joins without a token.
        max_message_bytes: Largest accepted client message in bytes.
        max_rooms: Rooms that may exist at once.
        max_connections: Open WebSockets at once.
        join_timeout_s: Seconds a new connection has to join.
        idle_timeout_s: Seconds a joined connection may stay silent.
        heartbeat_s: WebSocket ping interval in seconds.
        max_errors: Protocol errors tolerated per joined connection.
        web_assets: Also serve the browser page, its model and onnxruntime-web
            (``serve --web``, see :mod:`signaling.web`).

    Returns:
        An ``aiohttp.web.Application`` serving ``/ws`` and ``/health``; its state is
        ``app[STATE_KEY]``.

    Raises:
        ValueError: On a missing or short secret (without ``insecure_no_auth``) or a
            limit out of range.
    """
    config = ServerConfig(
        secret=secret,
        insecure_no_auth=insecure_no_auth,
        max_message_bytes=max_message_bytes,
        max_rooms=max_rooms,
        max_connections=max_connections,
        join_timeout_s=join_timeout_s,
        idle_timeout_s=idle_timeout_s,
        heartbeat_s=heartbeat_s,
        max_errors=max_errors,
    )
    app = web.Application()
    app[STATE_KEY] = SignalingState(config)
    app.router.add_get(WS_PATH, _handle_ws)
    app.router.add_get(HEALTH_PATH, _handle_health)
    if web_assets is not None:
        add_web_routes(app, web_assets)
        app[WEB_KEY] = web_assets
    app.on_shutdown.append(_on_shutdown)
    return app


@dataclass
class RunningServer:
    """A started server, returned by :func:`start_server`."""

    runner: web.AppRunner
    host: str
    port: int
    """Bound TCP port (the real one when 0 was asked for)."""

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        """Close every connection and stop listening."""
        await self.runner.cleanup()


async def start_server(
    app: web.Application, host: str = DEFAULT_HOST, port: int = 0
) -> RunningServer:
    """Start ``app`` on the running event loop without blocking.

    Args:
        app: Application from :func:`create_app`.
        host: Address to bind.
        port: TCP port; 0 picks a free one (see ``RunningServer.port``).

    Returns:
        The running server; call ``await server.close()`` to stop it.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1] if runner.addresses else port
    return RunningServer(runner=runner, host=host, port=bound_port)


class BindError(OSError):
    """The server could not listen on the asked address (port taken, no permission, bad host).

    ``str()`` is the one-line reason, without the ``[Errno N]`` prefix of an OSError.
    """

    def __str__(self) -> str:
        return str(self.strerror)


async def serve_app(app: web.Application, host: str = DEFAULT_HOST,
                    port: int = DEFAULT_PORT) -> None:
    """Listen, log the URL once bound, and serve until SIGINT or SIGTERM.

    Once bound it moves every object that exists to the garbage collector's permanent
    generation (``gc.freeze()``), so that full collections, which stall the event loop, scan
    only what connections allocate.

    Args:
        app: Application from :func:`create_app`.
        host: Address to bind.
        port: TCP port; 0 picks a free one (the log line names the real one).

    Raises:
        BindError: When the address cannot be bound; nothing is logged as listening then.
    """
    try:
        server = await start_server(app, host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason = "address already in use (another server? pick another --port)"
        raise BindError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
    # What exists now (modules, the application) lives as long as the process: keep it out
    # of the cyclic GC's full collections, whose pause grows with the objects they scan
    # (about a third fewer with 1,000 connections open; see docs/robustness.md)
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if app[STATE_KEY].config.secret is None:
        logger.warning("Signaling running WITHOUT authentication on %s:%d", host, server.port)
    logger.info("Signaling listening on %s", server.ws_url)
    if app.get(WEB_KEY) is not None:
        logger.info("Call from a browser: %s/?room=demo", server.http_url)
    try:
        await stop.wait()
    finally:
        await server.close()
        logger.info("Signaling stopped")


def run_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    secret: bytes | None = None,
    insecure_no_auth: bool = False,
    **limits: Any,
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), blocking the calling thread.

    Args:
        host: Address to bind; the default is loopback only.
        port: TCP port.
        secret: Shared HMAC secret; None reads ``$VOIP_CODEC_SIGNALING_SECRET``.
        insecure_no_auth: Run without authentication (only when no secret is set).
        **limits: Other keyword arguments of :func:`create_app`.

    Raises:
        ValueError: When no secret is available and ``insecure_no_auth`` is False.
        BindError: When the address cannot be bound.
    """
    if secret is None and not insecure_no_auth:
        secret = secret_from_env()
    app = create_app(secret, insecure_no_auth=insecure_no_auth, **limits)
    asyncio.run(serve_app(app, host, port))


def resolve_secret(args: argparse.Namespace) -> bytes | None:
    """Pick the secret from ``--secret-file`` or the environment.

    Args:
        args: Parsed arguments from :func:`add_parser` or :func:`main`.

    Returns:
        The secret, or None when ``--insecure-no-auth`` is set.

    Raises:
        ValueError: When no secret is found without ``--insecure-no-auth``, or both are given.
    """
    secret: bytes | None = None
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            secret = f.read().strip()
    else:
        secret = secret_from_env()
    if args.insecure_no_auth:
        if args.secret_file:
            raise ValueError("--secret-file and --insecure-no-auth exclude each other")
        return None
    if secret is None:
        raise ValueError(
            f"no secret: set ${SECRET_ENV}, pass --secret-file, or use --insecure-no-auth"
        )
    return secret


def serve(args: argparse.Namespace) -> int:
    """Run the server from parsed arguments (the ``voip-codec serve`` body).

    Args:
        args: Namespace from :func:`~signaling.cli.add_parser` or :func:`main`.

    Returns:
        0 after a clean shutdown (SIGINT or SIGTERM).

    Raises:
        ValueError: no secret and no ``--insecure-no-auth``, or a bad limit.
        BindError: the address cannot be bound (an OSError; nothing is logged as listening).
        OSError: the secret file cannot be read.
    """
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    secret = resolve_secret(args)
    web_assets = None
    if getattr(args, "web", None) is not None:
        from voip_codec.export.web import web_assets_for

        web_assets = web_assets_for(args.web, args.web_model)
    run_server(
        args.host,
        args.port,
        secret=secret,
        insecure_no_auth=args.insecure_no_auth,
        max_message_bytes=args.max_message_bytes,
        max_rooms=args.max_rooms,
        max_connections=args.max_connections,
        join_timeout_s=args.join_timeout,
        idle_timeout_s=args.idle_timeout,
        heartbeat_s=args.heartbeat,
        web_assets=web_assets,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """:func:`serve`, with configuration errors printed as one line (``python -m
    signaling.server``).

    Returns:
        Exit status: 0 after a clean shutdown, 2 on a configuration error, 1 when the address
        cannot be bound.
    """
    try:
        return serve(args)
    except BindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m signaling.server``.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv``.

    Returns:
        Process exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m signaling.server", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
