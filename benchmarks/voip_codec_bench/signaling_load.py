"""The signaling server under load, on 127.0.0.1: the real server in its own process.

Phases (a prober GETs ``/health`` every 20 ms throughout, timed per phase):

1. ``idle``: ``idle`` connections join (valid tokens, two per room) and stay silent;
2. ``churn``: ``clients`` concurrent clients join and leave ``clients // 2`` rooms for
   ``rounds`` rounds; in each room the two peers exchange an offer naming the room and must
   receive exactly their partner's (room mixing would show as a foreign offer);
3. ``abuse``: for each kind of abuse (bad signature, expired, wrong room, wrong peer, no token,
   malformed JSON, oversized message, a message over the hard frame limit, a binary frame,
   relaying before joining) ``abuse`` connections try it; each must get its documented error
   code (and close code).

The server and the prober run at normal priority, the load generator in its own process at
nice 10: in a deployment the clients are other machines, and on a small box the generator would
otherwise take the server's CPU and the figures would measure the generator. Server RSS is read
from ``/proc/<pid>/status`` after each phase and after every connection is
closed.

On a shared box /health also waits whenever another process has the CPU, so the server process
watches its own event loop too: a task that sleeps 5 ms at a time records how late it woke up
(the loop's stall) and how much CPU time the server's thread used meanwhile (the part of the
stall that was the server's own work, whatever else runs on the machine), and it times its full
garbage collections, which stall the loop for a time that grows with the objects alive.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .long_call import rss_mb

__all__ = ["ABUSES", "SignalingLoadResult", "run_signaling_load"]

_SECRET = "robustness-signaling-secret-0123456789"

ABUSES: dict[str, tuple[str | None, int]] = {
    "bad_signature": ("invalid_token", 1008),
    "expired_token": ("token_expired", 1008),
    "wrong_room": ("wrong_room", 1008),
    "wrong_peer": ("wrong_peer", 1008),
    "no_token": ("auth_required", 1008),
    "malformed_json": ("bad_json", 1008),
    "oversized": ("message_too_large", 1009),
    "over_frame_limit": (None, 1009),
    "binary_frame": ("unsupported_frame", 1008),
    "relay_before_join": ("not_joined", 1008),
}
"""Abuse -> (documented error code, or None for a bare close; WebSocket close code)."""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


@dataclass
class SignalingLoadResult:
    """Figures of one load run."""

    idle_connections: int = 0
    clients: int = 0
    rooms: int = 0
    rounds: int = 0
    pairs_ok: int = 0
    """Room pairings where both peers got exactly their partner's offer."""
    pairs_expected: int = 0
    room_mixing: int = 0
    """Messages received from a peer of another room (must be 0)."""
    client_failures: list[str] = field(default_factory=list)
    abuse: dict[str, dict[str, Any]] = field(default_factory=dict)
    health_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Phase -> {n, p50, p95, p99, max} of /health latency, milliseconds."""
    loop_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Phase -> {stall, busy, gc_full}: the server loop's longest stall (a 5 ms sleep woke up
    that much late), the most CPU time the server used within one such wake-up (its own work)
    and its longest full (generation 2) garbage collection, milliseconds."""
    server_rss_mb: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def health_p99_ms(self) -> float:
        """Worst per-phase p99 of /health."""
        return max((v["p99"] for v in self.health_ms.values()), default=0.0)

    @property
    def abuse_ok(self) -> bool:
        """Every abuse attempt got its documented error."""
        return all(v["ok"] == v["tries"] for v in self.abuse.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = dict(vars(self))
        out["client_failures"] = self.client_failures[:10]
        out["health_p99_ms"] = round(self.health_p99_ms, 2)
        out["abuse_ok"] = self.abuse_ok
        out["wall_seconds"] = round(self.wall_seconds, 1)
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _token(room: str, peer: str, ttl: float = 600, now: float | None = None) -> str:
    from signaling.tokens import make_join_token

    return make_join_token(_SECRET.encode(), room, peer, ttl, now=now)


_PROBER = """
import http.client, json, sys, time
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
out = []
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    t0 = time.perf_counter()
    conn.request("GET", "/health")
    conn.getresponse().read()
    out.append((time.time(), (time.perf_counter() - t0) * 1000))
    time.sleep(0.02)
    try:
        with open(sys.argv[3]) as f:
            if f.read() == "stop":
                break
    except OSError:
        pass
json.dump(out, sys.stdout)
"""
"""The /health prober: its own process, so that it times the server and not the load
generator's event loop. It stops when its stop file says ``stop``."""


_SERVER = """
import asyncio, gc, json, logging, sys, time
from signaling import server
from signaling.tokens import secret_from_env

logging.basicConfig(level=logging.ERROR)
port, out = int(sys.argv[1]), sys.argv[2]
samples = []
gc_runs = []
gc_start = [0.0]


def on_gc(phase, info):
    if phase == "start":
        gc_start[0] = time.perf_counter()
    elif info["generation"] == 2:
        gc_runs.append((time.time(), round((time.perf_counter() - gc_start[0]) * 1000, 2)))


gc.callbacks.append(on_gc)


async def watch():
    while True:
        wall, cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(0.005)
        stall = (time.perf_counter() - wall - 0.005) * 1000
        busy = (time.thread_time() - cpu) * 1000
        if stall > 1.0 or busy > 1.0:
            samples.append((time.time(), round(stall, 2), round(busy, 2)))


async def main():
    app = server.create_app(secret_from_env(), idle_timeout_s=600)
    watcher = asyncio.ensure_future(watch())
    try:
        await server.serve_app(app, "127.0.0.1", port)
    finally:
        watcher.cancel()
        with open(out, "w") as f:
            json.dump({"loop": samples, "gc": gc_runs}, f)


asyncio.run(main())
"""
"""The server process: ``signaling.server.serve_app`` (the code ``voip-codec serve`` runs) with
a watcher of its own event loop; it writes the watcher's samples to its second argument when
it stops (SIGTERM)."""


async def _receive_json(ws: Any, timeout: float) -> dict[str, Any] | None:
    from aiohttp import WSMsgType

    msg = await ws.receive(timeout=timeout)
    if msg.type != WSMsgType.TEXT:
        return None
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _drain(ws: Any) -> None:
    from aiohttp import WSMsgType

    while True:
        msg = await ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


async def _pair_client(session: Any, ws_url: str, room: str, me: str, partner: str,
                       result: SignalingLoadResult, barrier: asyncio.Semaphore) -> bool:
    """Join, exchange offers with the partner, leave; True when everything matched."""
    async with barrier:
        ws = await session.ws_connect(ws_url)
    try:
        await ws.send_json({"type": "join", "room": room, "peer_id": me,
                            "token": _token(room, me)})
        sent = False
        got_offer = False
        deadline = time.monotonic() + 60.0
        while not got_offer and time.monotonic() < deadline:
            msg = await _receive_json(ws, max(0.1, deadline - time.monotonic()))
            if msg is None:
                result.client_failures.append(f"{room}/{me}: connection ended")
                return False
            mtype = msg.get("type")
            if mtype == "error":
                result.client_failures.append(f"{room}/{me}: {msg.get('code')}")
                return False
            if (mtype == "joined" and len(msg.get("peers", [])) == 2) or mtype == "peer_joined":
                if not sent:
                    await ws.send_json({"type": "offer", "sdp": f"room={room};from={me}"})
                    sent = True
            elif mtype == "offer":
                if msg.get("from") != partner or msg.get("sdp") != f"room={room};from={partner}":
                    result.room_mixing += 1
                    return False
                got_offer = True
        if not got_offer:
            result.client_failures.append(f"{room}/{me}: no offer from the partner")
            return False
        # wait for the partner's offer to have been sent before leaving
        if not sent:
            await ws.send_json({"type": "offer", "sdp": f"room={room};from={me}"})
        await asyncio.sleep(0.2)
        await ws.send_json({"type": "bye"})
        return True
    finally:
        await ws.close()


async def _abuse_one(session: Any, ws_url: str, kind: str, i: int, max_bytes: int) -> bool:
    from aiohttp import WSMsgType

    code, close_code = ABUSES[kind]
    room, peer = f"abuse-{i}", f"p{i}"
    ws = await session.ws_connect(ws_url, max_msg_size=0)
    try:
        if kind == "bad_signature":
            tok = _token(room, peer)
            await ws.send_json({"type": "join", "room": room, "peer_id": peer,
                                "token": tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")})
        elif kind == "expired_token":
            await ws.send_json({"type": "join", "room": room, "peer_id": peer,
                                "token": _token(room, peer, 1, now=time.time() - 100)})
        elif kind == "wrong_room":
            await ws.send_json({"type": "join", "room": room, "peer_id": peer,
                                "token": _token("elsewhere", peer)})
        elif kind == "wrong_peer":
            await ws.send_json({"type": "join", "room": room, "peer_id": peer,
                                "token": _token(room, "someone-else")})
        elif kind == "no_token":
            await ws.send_json({"type": "join", "room": room, "peer_id": peer})
        elif kind == "malformed_json":
            await ws.send_str('{"type": "join", "room": ')
        elif kind == "oversized":
            await ws.send_str(json.dumps({"type": "offer", "sdp": "x" * (max_bytes + 10)}))
        elif kind == "over_frame_limit":
            await ws.send_str("x" * (2 * max_bytes + 10))
        elif kind == "binary_frame":
            await ws.send_bytes(b"\x00\x01binary")
        elif kind == "relay_before_join":
            await ws.send_json({"type": "offer", "sdp": "v=0"})
        got_code: str | None = None
        while True:
            msg = await ws.receive(timeout=10.0)
            if msg.type == WSMsgType.TEXT:
                got_code = json.loads(msg.data).get("code")
                continue
            break
        return got_code == code and ws.close_code == close_code
    except (asyncio.TimeoutError, ConnectionError):
        return False
    finally:
        await ws.close()


async def _run(port: int, server_pid: int, clients: int, rounds: int, idle: int, abuse: int,
               result: SignalingLoadResult, marks: list[tuple[float, str]]) -> None:
    """The load generator (run in its own, lower-priority process by
    :func:`run_signaling_load`): the three phases against the server at ``port``."""
    import aiohttp

    ws_url = f"ws://127.0.0.1:{port}/ws"
    base = f"http://127.0.0.1:{port}"
    max_bytes = 64 * 1024
    connector = aiohttp.TCPConnector(limit=0)
    pid = server_pid
    async with aiohttp.ClientSession(connector=connector) as session:
        result.server_rss_mb["start"] = rss_mb(pid)
        gate = asyncio.Semaphore(100)  # connects in flight at once

        # 1. idle connections, joined, silent
        marks.append((time.time(), "idle"))
        idle_ws: list[Any] = []
        readers: list[asyncio.Task[None]] = []

        async def join_idle(i: int) -> None:
            room, peer = f"idle-{i // 2}", f"i{i}"
            async with gate:
                ws = await session.ws_connect(ws_url)
                await ws.send_json({"type": "join", "room": room, "peer_id": peer,
                                    "token": _token(room, peer)})
                msg = await _receive_json(ws, 30.0)
            if msg is None or msg.get("type") != "joined":
                result.client_failures.append(f"idle {i}: {msg}")
            idle_ws.append(ws)
            # reading answers the server's heartbeat pings; nothing else arrives
            readers.append(asyncio.create_task(_drain(ws)))

        await asyncio.gather(*(join_idle(i) for i in range(idle)))
        result.idle_connections = len(idle_ws)
        await asyncio.sleep(1.0)
        result.server_rss_mb["idle"] = rss_mb(pid)

        # 2. churn: pairs join and leave rooms, concurrently
        marks.append((time.time(), "churn"))
        n_rooms = clients // 2
        result.clients, result.rooms, result.rounds = clients, n_rooms, rounds
        for r in range(rounds):
            jobs = []
            for k in range(n_rooms):
                room = f"room-{k}"
                a, b = f"a{r}-{k}", f"b{r}-{k}"
                jobs += [_pair_client(session, ws_url, room, a, b, result, gate),
                         _pair_client(session, ws_url, room, b, a, result, gate)]
            oks = await asyncio.gather(*jobs, return_exceptions=True)
            for ok in oks:
                if isinstance(ok, BaseException):
                    result.client_failures.append(f"{type(ok).__name__}: {ok}")
            result.pairs_ok += sum(1 for j in range(0, len(oks), 2)
                                   if oks[j] is True and oks[j + 1] is True)
            result.pairs_expected += n_rooms
        result.server_rss_mb["churn"] = rss_mb(pid)

        # 3. abuse
        marks.append((time.time(), "abuse"))
        for kind in ABUSES:
            oks = await asyncio.gather(
                *(_abuse_one(session, ws_url, kind, i, max_bytes) for i in range(abuse)),
                return_exceptions=True)
            result.abuse[kind] = {
                "tries": abuse, "ok": sum(1 for ok in oks if ok is True),
                "expected_code": ABUSES[kind][0], "expected_close": ABUSES[kind][1]}
        result.server_rss_mb["abuse"] = rss_mb(pid)

        marks.append((time.time(), "closing"))
        await asyncio.gather(*(ws.close() for ws in idle_ws))
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.sleep(1.0)
        async with session.get(base + "/health") as resp:
            health = await resp.json()
        result.server_rss_mb["end"] = rss_mb(pid)
        result.server_rss_mb["end_connections"] = float(health.get("connections", -1))
        result.server_rss_mb["end_rooms"] = float(health.get("rooms", -1))


def run_signaling_load(clients: int = 500, rounds: int = 2, idle: int = 1000,
                       abuse: int = 50, client_nice: int = 10) -> SignalingLoadResult:
    """Run the three phases against a fresh server process on 127.0.0.1.

    The server and the /health prober run at normal priority; the load generator runs in a
    process of its own at ``client_nice`` (in a deployment the clients are other machines: on
    one small box the generator would otherwise take the server's CPU).

    Args:
        clients: concurrent churn clients (two per room).
        rounds: churn rounds.
        idle: idle connections held open throughout.
        abuse: connections per kind of abuse.
        client_nice: niceness added to the load generator's process.

    Returns:
        The figures.
    """
    from signaling.tokens import SECRET_ENV

    start = time.perf_counter()
    port = _free_port()
    path = os.pathsep.join(p for p in sys.path if p)
    env = dict(os.environ, PYTHONPATH=path, **{SECRET_ENV: _SECRET})
    stop_file = tempfile.NamedTemporaryFile("w", suffix=".stop", delete=False)
    stop_file.close()
    loop_file = Path(stop_file.name).with_suffix(".loop")
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port), str(loop_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    prober: subprocess.Popen[str] | None = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the signaling server did not start") from None
                time.sleep(0.1)
        prober = subprocess.Popen(
            [sys.executable, "-c", _PROBER, str(port), "3600", stop_file.name],
            stdout=subprocess.PIPE, text=True)
        load = subprocess.run(
            [sys.executable, "-m", "voip_codec_bench.signaling_load", str(port), str(server.pid),
             str(clients), str(rounds), str(idle), str(abuse)],
            capture_output=True, text=True, env=env, timeout=1800, check=False,
            preexec_fn=(lambda: os.nice(client_nice)) if client_nice else None)
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed: {load.stderr.strip()[-500:]}")
        data = json.loads(load.stdout)
    finally:
        Path(stop_file.name).write_text("stop")
        out = ""
        if prober is not None:
            out, _ = prober.communicate(timeout=30)
        Path(stop_file.name).unlink(missing_ok=True)
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    marks = [(float(t), str(n)) for t, n in data.pop("marks")]
    result = SignalingLoadResult(**data)

    def phase(when: float) -> str:
        return [n for t, n in marks if t <= when][-1] if marks[0][0] <= when else "start"

    try:
        watched = json.loads(loop_file.read_text())
    except (OSError, ValueError):
        watched = {"loop": [], "gc": []}
    finally:
        loop_file.unlink(missing_ok=True)
    for when, stall, busy in watched["loop"]:
        figures = result.loop_ms.setdefault(phase(when),
                                            {"stall": 0.0, "busy": 0.0, "gc_full": 0.0})
        figures["stall"] = max(figures["stall"], stall)
        figures["busy"] = max(figures["busy"], busy)
    for when, ms in watched["gc"]:
        figures = result.loop_ms.setdefault(phase(when),
                                            {"stall": 0.0, "busy": 0.0, "gc_full": 0.0})
        figures["gc_full"] = max(figures["gc_full"], ms)
    samples: dict[str, list[float]] = {}
    for when, ms in json.loads(out or "[]"):
        samples.setdefault(phase(when), []).append(ms)
    for name, values in samples.items():
        result.health_ms[name] = {"n": len(values), "p50": round(_percentile(values, 50), 2),
                                  "p95": round(_percentile(values, 95), 2),
                                  "p99": round(_percentile(values, 99), 2),
                                  "max": round(max(values), 2)}
    result.wall_seconds = time.perf_counter() - start
    return result


def _load_main(argv: list[str]) -> None:
    """Load generator entry: ``PORT SERVER_PID CLIENTS ROUNDS IDLE ABUSE``; prints JSON."""
    port, pid, clients, rounds, idle, abuse = (int(a) for a in argv)
    result = SignalingLoadResult()
    marks: list[tuple[float, str]] = [(time.time(), "start")]
    asyncio.run(_run(port, pid, clients, rounds, idle, abuse, result, marks))
    print(json.dumps({**vars(result), "marks": marks}))


if __name__ == "__main__":
    _load_main(sys.argv[1:])
