"""The serial and ICE/UDP links under the same SendSession / ReceiveSession as every call.

Serial: two pseudo-terminals joined by a 2400 bit/s 8N1 line (240 bytes/s) that flips bits and
drops bytes; one end opened as a plain file descriptor, the other through pyserial.
ICE: two peers on 127.0.0.1 through the real signaling server, with the UDP impairment relay
between them; the same loss and jitter scenario gives the same results as over a memory link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_cli_errors import ROOT, SECRET, cli_env
from tests.unit.test_transport_pipeline import DropSet
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import FrameSource, JitterConfig
from voip_codec.transport.link import memory_link_pair
from voip_codec.transport.netsim import NetworkConditions
from voip_codec.transport.realtime import CallSide, run_link_call
from voip_codec.transport.serial import SerialLink, SerialLinkError, open_serial_link
from voip_codec.transport.serial_line import LineConditions, PtyLine
from voip_codec.wire.kiss import kiss_frame_size

CODEC = get_codec("codec2-700c")  # 7 bytes per 80 ms frame
FIXED_160 = JitterConfig(initial_delay_ms=160, min_delay_ms=160, max_delay_ms=160)


def payloads(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [bytes(rng.randrange(256) for _ in range(CODEC.info.bytes_per_frame))
            for _ in range(n)]


def serial_call(line: LineConditions, frames: int, frames_per_packet: int,
                seed: int = 0) -> tuple[CallSide, CallSide, SerialLink, SerialLink, PtyLine]:
    """A full-duplex call over a PtyLine: side A on the plain fd, side B through pyserial."""
    async def main() -> tuple[CallSide, CallSide, SerialLink, SerialLink]:
        a = SerialLink(pty.fds[0], baud=line.baud, name="serial:a")
        b = open_serial_link(f"{pty.paths[1]}@{line.baud}", name="serial:b")
        try:
            sa, sb = await run_link_call(
                CODEC, (CallSide(a, payloads(frames, seed)), CallSide(b, payloads(frames, seed + 1))),
                frames_per_packet=frames_per_packet, jitter=JitterConfig(initial_delay_ms=240),
                extra_ticks=12)
        finally:
            a.close()
            b.close()
        return sa, sb, a, b

    with PtyLine(line, seed=seed) as pty:
        sa, sb, a, b = asyncio.run(main())
    return sa, sb, a, b, pty


def test_serial_full_duplex_survives_bit_errors_and_dropped_bytes() -> None:
    frames = 48
    sa, sb, a, b, pty = serial_call(
        LineConditions(2400, bit_error_rate=4e-4, byte_drop_rate=1e-3), frames, 3, seed=3)
    for side, link, direction in ((sb, b, "ab"), (sa, a, "ba")):
        assert side.receive is not None and side.send is not None
        line = pty.stats[direction]
        assert line.bits_flipped + line.bytes_dropped > 0  # the line did damage this direction
        rx, kiss = side.receive.stats, link.decoder.stats
        # damaged frames were caught by the framing and counted: none reached the session
        assert kiss.dropped > 0 and rx.invalid == 0
        assert link.backlog_drops == 0  # 3 frames per packet fit 2400 bit/s
        # the stream never wedged: frames kept arriving up to the end of the call
        got = [f.index for f, _ in side.played if f.payload is not None and f.index is not None]
        assert len(got) >= frames // 2 and max(got) >= frames - 4
        assert side.receive.last_index_played >= frames - 4


def test_serial_line_rate_paces_the_sender_and_fits_one_frame_per_packet() -> None:
    frames = 36
    # compact (v2) packets: one Codec2 700C frame is 4 + 7 bytes, + 4 bytes of framing = 15
    # bytes per 80 ms (188 bytes/s, loss reports riding along) on a 240 bytes/s line
    assert kiss_frame_size(4 + 7) == 15
    sa, sb, a, b, pty = serial_call(LineConditions(2400), frames, 1, seed=5)
    for side in (sa, sb):
        assert side.receive is not None
        rx = side.receive.stats
        assert rx.frames_received == frames and rx.concealed == 0 and rx.ended
        assert rx.invalid == 0
    assert a.backlog_drops == b.backlog_drops == 0
    # at 1200 bit/s (120 bytes/s) one frame per packet overloads the line: the link drops
    # packets instead of queueing, so the delay on the line stays bounded
    sa, sb, a, b, pty = serial_call(LineConditions(1200), 24, 1, seed=6)
    assert a.backlog_drops > 0 and b.backlog_drops > 0
    for direction in ("ab", "ba"):
        # at most max_backlog_s (0.3 s = 36 bytes) plus one packet (a start packet carries its
        # codec id, a report may ride along: <= 4 + 1 + 8 + 7 bytes + framing) waits for the
        # line, plus a few escaped bytes; without the bound 24 frames would queue ~360 bytes
        one_packet = kiss_frame_size(4 + 1 + 8 + 7)
        assert pty.stats[direction].max_queue_bytes <= 36 + one_packet + 4


def test_encrypted_focalcodec_call_over_a_noisy_2400_bit_line() -> None:
    """Both ends agree on keys by the in-band handshake on the line itself (no signaling),
    then carry FocalCodec 0.8 kbps full duplex at 2 frames per packet, 2400 bit/s 8N1, with
    bit errors and dropped bytes: frames are lost, never the stream, and nothing damaged
    reaches the sessions (the CRC or the AEAD drops it)."""
    from voip_codec.transport.handshake import (
        HandshakeLink,
        handshake_interval_s,
        handshake_link,
    )
    from voip_codec.transport.secure import SecureLink

    focal = get_codec("focalcodec-default")
    assert focal.info.bytes_per_frame == 8
    frames = 60
    line = LineConditions(2400, bit_error_rate=2e-4, byte_drop_rate=5e-4)

    def focal_payloads(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        return [rng.randbytes(8) for _ in range(frames)]

    async def main() -> tuple[CallSide, CallSide, SecureLink, SecureLink, SerialLink,
                              SerialLink]:
        a = SerialLink(pty.fds[0], baud=2400, name="serial:a")
        b = open_serial_link(f"{pty.paths[1]}@2400", name="serial:b")
        try:
            interval = handshake_interval_s(2400)
            sa, sb = await asyncio.gather(*(
                handshake_link(link, timeout_s=20, interval_s=interval, counter_bytes=0)
                for link in (a, b)))
            assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
            handshake_bytes.extend((a.bytes_sent, b.bytes_sent))
            side_a, side_b = await run_link_call(
                focal, (CallSide(sa, focal_payloads(1)), CallSide(sb, focal_payloads(2))),
                frames_per_packet=2, jitter=JitterConfig(initial_delay_ms=240),
                extra_ticks=12)
        finally:
            a.close()
            b.close()
        return side_a, side_b, sa, sb, a, b

    handshake_bytes: list[int] = []
    with PtyLine(line, seed=11) as pty:
        side_a, side_b, sa, sb, a, b = asyncio.run(main())
    assert sa.keys.sas == sb.keys.sas and sa.overhead == 8
    for inner in (sa.inner, sb.inner):
        assert isinstance(inner, HandshakeLink) and inner.handshake.done
    damaged = 0
    for side, secure, serial, seed in ((side_b, sb, b, 1), (side_a, sa, a, 2)):
        assert side.receive is not None
        rx = side.receive.stats
        assert serial.backlog_drops == 0  # 2 frames per packet fit the line with encryption
        assert rx.invalid == 0 and secure.stats.forged == 0  # damage stopped at the CRC
        damaged += serial.decoder.stats.dropped
        sent = focal_payloads(seed)
        got = {f.index: f.payload for f, _ in side.played
               if f.payload is not None and f.index is not None}
        assert all(got[i] == sent[i] for i in got)  # what arrived decrypted bit-exact
        assert len(got) >= frames * 3 // 4 and max(got) >= frames - 2  # never wedged
    assert damaged > 0  # the line did damage frames
    for link, before in zip((a, b), handshake_bytes, strict=True):
        assert before < 4 * 80  # the handshake took a few hellos of ~58 framed bytes
        # ~34 framed bytes per 160 ms (6 + 16 + 8 bytes, KISS), reports riding along
        assert (link.bytes_sent - before) / (frames * 0.08) < 240  # the line's bytes/s


def test_serial_open_errors_are_one_line(tmp_path: os.PathLike[str]) -> None:
    async def open_(spec: str) -> None:
        open_serial_link(spec).close()

    with pytest.raises(SerialLinkError, match=r"^serial device /nonexistent/tty does not exist"):
        asyncio.run(open_("/nonexistent/tty@2400"))
    with pytest.raises(SerialLinkError, match=r"^bad baud rate 'fast'"):
        asyncio.run(open_("/dev/ttyUSB0@fast"))
    plain = os.path.join(tmp_path, "not-a-tty")
    open(plain, "w").close()
    with pytest.raises(SerialLinkError, match=r"not-a-tty is not a serial device$"):
        asyncio.run(open_(f"{plain}@2400"))


# -------------------------------------------------------------------------------------- ICE
FRAMES = 40
LOSS = {4, 5, 17, 29, 30}  # audio packets A -> B lost; K = 2 bridges them


@contextlib.asynccontextmanager
async def ice_pair(room: str, connect_kwargs: Callable[[int, Any], dict[str, Any]]
                   ) -> AsyncIterator[list[Any]]:
    """Two ICE links on 127.0.0.1, set up through a real signaling server: peer ``i`` (0, 1)
    joins ``room`` and calls ``connect_ice`` with ``connect_kwargs(i, its role)``; the links,
    clients and server are closed on exit."""
    from signaling.client import SignalingClient
    from signaling.server import create_app, start_server
    from voip_codec.transport.ice import connect_ice
    from voip_codec.webrtc.contrib.loopback import loopback_candidates

    secret = os.urandom(32)
    server = await start_server(create_app(secret), "127.0.0.1", 0)
    clients = [SignalingClient(server.ws_url, room, n, secret=secret) for n in "ab"]
    links: list[Any] = []
    try:
        with loopback_candidates():
            roles = []
            for c in clients:
                await c.connect()
                roles.append(await c.join())
            links = list(await asyncio.gather(*(
                connect_ice(c, r, CODEC.info.name, **connect_kwargs(i, r))
                for i, (c, r) in enumerate(zip(clients, roles, strict=True)))))
        yield links
    finally:
        for link in links:
            await link.wait_closed()
        for c in clients:
            await c.close()
        await server.close()


def ice_call(forward: NetworkConditions) -> tuple[CallSide, CallSide, dict[str, object]]:
    from voip_codec.webrtc.contrib.relay import ImpairmentRelay

    async def main() -> tuple[CallSide, CallSide, dict[str, object]]:
        relay = ImpairmentRelay(forward, NetworkConditions(delay_ms=2), seed=1)
        await relay.start()
        try:
            async with ice_pair("ice", lambda i, _r: {
                    "advertise": lambda t: relay.rewrite(t, "ab"[i])}) as (a, b):
                relay.impair(True)
                sides = await run_link_call(
                    CODEC, (CallSide(a, payloads(FRAMES, 1)), CallSide(b)), redundancy=2,
                    jitter=FIXED_160, report_interval=6, speed=2.0)
                return sides[0], sides[1], {"relay": relay.stats, "a": a.stats(),
                                            "b": b.stats()}
        finally:
            relay.close()

    return asyncio.run(main())


def memory_call(forward: NetworkConditions) -> tuple[CallSide, CallSide]:
    """The same call over a memory link pair (simulated time, no real clock)."""
    from voip_codec.transport.session import EncodedFrame, ReceiveSession, SendSession

    a, b = memory_link_pair(forward, NetworkConditions(delay_ms=2), seed=1)
    info = CODEC.info
    tx = SendSession(info, CODEC.new_encoder(), a, redundancy=2)
    rx_a = ReceiveSession(info, CODEC.new_decoder(), a, jitter=FIXED_160, report_interval=6)
    rx_a.sender = tx
    rx = ReceiveSession(info, CODEC.new_decoder(), b, jitter=FIXED_160, report_interval=6)
    a.set_receiver(lambda d: rx_a.on_datagram(d, a.clock.now))
    b.set_receiver(lambda d: rx.on_datagram(d, b.clock.now))
    side_a, side_b = CallSide(a, payloads(FRAMES, 1), tx, rx_a), CallSide(b, None, None, rx)
    data = payloads(FRAMES, 1)
    for k in range(FRAMES + 10):
        t = (k + 1) * info.frame_ms / 1000
        a.deliver(t)
        if k < FRAMES:
            tx.send_frame(EncodedFrame(data[k], False), end=k == FRAMES - 1)
        b.deliver(t)
        side_b.played.append((rx.tick(t), None))
        rx_a.tick(t)
    return side_a, side_b


def test_ice_link_sessions_behave_as_over_a_memory_link() -> None:
    forward = NetworkConditions(delay_ms=5, jitter_ms=5, loss=DropSet(LOSS))
    ice_a, ice_b, stats = ice_call(forward)
    mem_a, mem_b = memory_call(NetworkConditions(delay_ms=5, jitter_ms=5, loss=DropSet(LOSS)))
    relay = stats["relay"]
    assert isinstance(relay, dict) and relay["ab"].dropped == len(LOSS)
    for (a, b) in ((ice_a, ice_b), (mem_a, mem_b)):
        assert a.send is not None and b.receive is not None
        rx = b.receive.stats
        # every frame played once, in order, bit-exact; K = 2 bridged each loss
        played = [(f.index, f.payload) for f, _ in b.played
                  if f.source not in (FrameSource.BUFFERING, FrameSource.ENDED)]
        assert played == list(enumerate(payloads(FRAMES, 1)))
        assert rx.recovered_from_redundancy == len(LOSS) and rx.concealed == 0
        assert rx.ended and rx.invalid == 0 and rx.duplicate == 0
        # loss reports came back over the same link and reached the sender
        assert b.receive.reports_sent >= 5 and a.send.stats.reports == b.receive.reports_sent
    ice_rx, mem_rx = ice_b.receive, mem_b.receive
    assert ice_rx is not None and mem_rx is not None
    assert ice_rx.stats.frames_received == mem_rx.stats.frames_received
    assert ice_a.send is not None and mem_a.send is not None
    assert ice_a.send.stats.packets == mem_a.send.stats.packets == FRAMES


class _StunResponder(asyncio.DatagramProtocol):
    """A STUN server for tests on 127.0.0.1: answers Binding requests with the sender's
    address (XOR-MAPPED-ADDRESS), counts them."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # a datagram transport (not a DatagramTransport subclass)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        try:
            msg = stun.parse_message(data)
        except ValueError:
            return
        if (msg.message_method, msg.message_class) != (stun.Method.BINDING,
                                                       stun.Class.REQUEST):
            return
        self.requests += 1
        reply = stun.Message(message_method=stun.Method.BINDING,
                             message_class=stun.Class.RESPONSE,
                             transaction_id=msg.transaction_id)
        reply.attributes["XOR-MAPPED-ADDRESS"] = addr
        assert self.transport is not None
        self.transport.sendto(bytes(reply), addr)


def test_ice_gathers_a_server_reflexive_candidate_from_a_stun_server() -> None:
    """``--stun``: both peers ask a STUN server (ours, on 127.0.0.1) for their address and
    offer the answer as a srflx candidate; the call connects. TURN is not tested here: no
    TURN server runs on this machine (the option reaches aioice the same way)."""
    from voip_codec.transport.ice import IceServers

    async def main() -> tuple[int, list[tuple[str, ...]], list[str]]:
        loop = asyncio.get_running_loop()
        transport, stun_server = await loop.create_datagram_endpoint(
            _StunResponder, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        sent: list[str] = []

        def keep(text: str) -> str:
            sent.append(text)
            return text

        try:
            async with ice_pair("stun", lambda _i, _r: {
                    "advertise": keep,
                    "servers": IceServers(stun=("127.0.0.1", port))}) as links:
                return stun_server.requests, [link.candidate_types for link in links], sent
        finally:
            transport.close()

    requests, types, descriptions = asyncio.run(main())
    assert requests >= 2
    assert types == [("host", "srflx"), ("host", "srflx")]
    assert all("typ srflx raddr 127.0.0.1" in d for d in descriptions)


def test_encrypted_ice_keeps_consent_by_authenticated_traffic_and_stops_when_it_ends() -> None:
    """With end-to-end keys, secure_ice stops aioice's STUN consent checks (1 counter byte, 49
    bytes per FocalCodec packet on the wire); the link then closes once no authenticated
    datagram arrived for the expiry time (RFC 7675's 30 s, shortened here)."""
    from voip_codec.transport.ice import secure_ice
    from voip_codec.transport.secure import KeyExchange, SecureLink

    async def main() -> None:
        async with ice_pair("consent", lambda _i, r: {"exchange": KeyExchange(r)}) as (a, b):
            sa = secure_ice(a)
            sb = secure_ice(b, stun_consent=True)
            assert isinstance(sa, SecureLink) and isinstance(sb, SecureLink)
            assert sa.overhead == 9 and a.consent == "authenticated-traffic"
            assert a.connection._query_consent_task is None  # aioice's checks stopped
            assert b.consent == "stun" and b.connection._query_consent_task is not None
            got: list[bytes] = []
            sb.set_receiver(got.append)
            sa.set_receiver(lambda d: None)
            for _ in range(5):
                sa.send(b"\x80" + bytes(11))
                sb.send(b"\x81" + bytes(11))
                await asyncio.sleep(0.02)
            assert len(got) == 5 and sa.last_authenticated_at is not None
            assert a.bytes_sent == 5 * (12 + 9)  # + 28 of IPv4/UDP each: 49 bytes
            # b now keeps consent by traffic too, with a short expiry; a sends nothing more
            assert b.take_over_consent(lambda: sb.last_authenticated_at, expiry_s=0.5)
            await asyncio.sleep(1.6)
            assert b.closed and b.consent_expired and not a.closed

    asyncio.run(main())


def test_ice_server_options_fail_in_one_line() -> None:
    from tests.integration.test_cli_errors import error_line, run_cli

    ice = ["call", "--link", "ice", "--room", "r", "--server", "ws://127.0.0.1:9/ws",
           "--codec", "codec2-700c"]
    assert "--stun 'stun.example.org': write it as HOST:PORT" in error_line(
        run_cli(*ice, "--stun", "stun.example.org"))
    assert "the port must be a number in 1..65535" in error_line(
        run_cli(*ice, "--turn", "turn.example.org:99999"))
    assert "--turn needs the server's credentials in VOIP_CODEC_TURN_USERNAME" in error_line(
        run_cli(*ice, "--turn", "127.0.0.1:3478"))
    assert "--stun and --turn apply to --link ice" in error_line(
        run_cli("call", "--link", "serial:/dev/ttyUSB9", "--codec", "codec2-700c", "--stun",
                "127.0.0.1:3478"))


def test_ice_description_round_trip_and_mismatch_errors() -> None:
    from voip_codec.transport.ice import IceDescription, IceLinkError

    d = IceDescription("codec2-700c", "abcd", "p" * 22,
                       ("1 1 udp 2130706431 127.0.0.1 40000 typ host",))
    assert IceDescription.from_text(d.to_text()) == d
    assert IceDescription.from_text(d.to_text() + "a=future-field:1\r\n") == d
    with pytest.raises(IceLinkError, match="--link webrtc"):
        IceDescription.from_text("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n")
    with pytest.raises(IceLinkError, match="lacks ice-pwd"):
        IceDescription.from_text("a=voip-codec-link:ice\r\na=codec:x\r\na=ice-ufrag:u\r\n")


# ------------------------------------------------------------------------- the CLI, end to end
def _tone(path: os.PathLike[str], seconds: float) -> None:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)


def _json_of(proc: subprocess.Popen[str], timeout: float = 90) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return dict(json.loads(out))


def test_call_over_a_serial_line_between_two_processes(tmp_path: Path) -> None:
    """``voip-codec call --link serial:...`` at both ends of a 2400 bit/s pty line: no
    signaling, the ends agree on keys on the line (with a pre-shared secret from the
    environment), Alice plays a file, Bob records it."""
    _tone(tmp_path / "in.wav", 3.0)
    common = ["--codec", "codec2-700c", "--frames-per-packet", "3", "--redundancy", "0",
              "--no-adaptive", "--json"]
    env = cli_env(VOIP_CODEC_PSK="horse battery staple")
    with PtyLine(LineConditions(2400), seed=2) as line:
        bob = subprocess.Popen(
            [sys.executable, "-m", "voip_codec.cli", "call", "--link",
             f"serial:{line.paths[1]}@2400", "--output", str(tmp_path / "out.wav"),
             "--duration", "9", *common],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Bob's interpreter starts and opens his port (seconds on a loaded box)
            assert bob.stderr is not None
            ready, _, _ = select.select([bob.stderr], [], [], 60.0)
            assert ready, "Bob never opened his port"
            assert "open at 2400 bit/s" in bob.stderr.readline()
            alice = subprocess.Popen(
                [sys.executable, "-m", "voip_codec.cli", "call", "--link",
                 f"serial:{line.paths[0]}@2400", "--input", str(tmp_path / "in.wav"), *common],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            try:
                sent = _json_of(alice)
            finally:
                if alice.poll() is None:
                    alice.kill()
            got = _json_of(bob)
        finally:
            if bob.poll() is None:
                bob.kill()
        line_stats = line.stats
    assert sent["link"] == got["link"] == "serial"
    assert sent["sender"]["frames"] == 38 and sent["serial"]["backlog_drops"] == 0
    # end-to-end encrypted by default: the same SAS at both ends, nothing rejected
    assert sent["e2e"]["sas"] == got["e2e"]["sas"]
    assert got["e2e"]["link"]["forged"] == got["e2e"]["link"]["replayed"] == 0
    assert got["e2e"]["link"]["received"] >= 13 and got["handshake"]["unauthenticated"] == 0
    rx = got["receiver"]
    assert rx["frames_received"] >= 36 and rx["invalid"] == 0  # the handshake aligned the start
    # 13 compact packets of 3 frames (~30 bytes framed each) crossed the line
    assert got["serial"]["rx"]["dropped"] == 0 and line_stats["ab"].bytes_out > 300
    assert got["sender"] is None and rx["frames_played"] > 0
    assert (tmp_path / "out.wav").stat().st_size > 0


def test_serial_call_with_another_pre_shared_secret_fails_in_one_line() -> None:
    """A peer with another VOIP_CODEC_PSK never gets in: each end drops the other's hellos
    (counted) and stops at --wait with one line that names the cause."""
    def start(path: str, psk: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "voip_codec.cli", "call", "--link", f"serial:{path}@2400",
             "--codec", "codec2-700c", "--wait", "10"],
            cwd=ROOT, env=cli_env(VOIP_CODEC_PSK=psk), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    with PtyLine(LineConditions(2400), seed=4) as line:
        bob = start(line.paths[1], "one secret")
        try:
            assert bob.stderr is not None
            ready, _, _ = select.select([bob.stderr], [], [], 60.0)
            assert ready and "open at 2400 bit/s" in bob.stderr.readline()
            alice = start(line.paths[0], "another secret")
            try:
                _, alice_err = alice.communicate(timeout=90)
            finally:
                if alice.poll() is None:
                    alice.kill()
            _, bob_err = bob.communicate(timeout=90)
        finally:
            if bob.poll() is None:
                bob.kill()
    for proc, err in ((alice, alice_err), (bob, bob_err)):
        assert proc.returncode == 1 and "Traceback" not in err
        last = err.strip().splitlines()[-1]
        assert last.startswith("voip-codec: error: no handshake with the other peer"), err
        assert "failed the pre-shared secret check" in last


def _serve() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "voip_codec.cli", "serve", "--port", "0"],
                            cwd=ROOT, env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET),
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "Signaling listening on ws://127.0.0.1:" in line, line
    return proc, line.strip().rsplit(" ", 1)[1]


def _call(url: str, room: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voip_codec.cli", "call", "--room", room, "--server", url,
         "--loopback", "--codec", "codec2-700c", "--json", *args], cwd=ROOT,
        env=cli_env(VOIP_CODEC_SIGNALING_SECRET=SECRET), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def test_call_over_ice_between_two_processes_and_a_link_mismatch(tmp_path: Path) -> None:
    _tone(tmp_path / "in.wav", 2.0)
    server, url = _serve()
    procs: list[subprocess.Popen[str]] = []
    try:
        bob = _call(url, "ice", "--link", "ice", "--duration", "6")
        procs.append(bob)
        time.sleep(2.0)
        alice = _call(url, "ice", "--link", "ice", "--input", str(tmp_path / "in.wav"))
        procs.append(alice)
        sent, got = _json_of(alice), _json_of(bob)
        assert sent["link"] == got["link"] == "ice"
        assert {sent["role"], got["role"]} == {"offerer", "answerer"}
        assert sent["sender"]["frames"] == 25
        rx = got["receiver"]
        assert rx["frames_received"] == 26 and rx["ended"] and rx["invalid"] == 0
        assert sent["sender"]["reports"] >= 1  # Bob's loss reports came back over ICE
        # encrypted end to end by default: the same SAS on both sides, nothing rejected
        assert sent["e2e"]["sas"] == got["e2e"]["sas"]
        assert got["e2e"]["link"]["received"] >= 25 and got["e2e"]["link"]["forged"] == 0
        assert sent["e2e"]["link"]["received"] >= 1  # the reports, decrypted
        # one peer on WebRTC, the other on ICE: each says so in one line
        ice = _call(url, "mix", "--link", "ice", "--wait", "20")
        procs.append(ice)
        time.sleep(2.0)
        rtc = _call(url, "mix", "--link", "webrtc")
        procs.append(rtc)
        errors = []
        for proc in (ice, rtc):
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 1, err
            lines = [ln for ln in err.strip().splitlines()
                     if not ln.startswith("voip-codec: waiting")]
            assert len(lines) == 1 and "Traceback" not in err, err
            errors.append(lines[0])
        assert errors == [
            "voip-codec: error: the other peer is not on an ICE link (does it use --link "
            "webrtc? start both peers with the same --link)",
            "voip-codec: error: the other peer uses --link ice; start both peers with the same "
            "--link"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
