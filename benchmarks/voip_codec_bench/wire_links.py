"""The ICE/UDP and serial entries of ``voip-codec bench wire`` (see :mod:`.wire_bench`).

ICE/UDP: two :class:`~voip_codec.webrtc.linkcall.LinkPeer` s connect through an in-process
signaling server on 127.0.0.1 (:func:`~voip_codec.transport.ice.connect_ice`), both send
speech, and every UDP datagram of each peer's ICE agent is counted at its socket: our
datagrams and the STUN consent checks and answers (none are left when encryption takes consent
over; see :mod:`voip_codec.transport.ice`).

Serial: the two peers talk over a :class:`~voip_codec.transport.serial_line.PtyLine` (8N1, no
bit errors) after the in-band handshake (:mod:`voip_codec.transport.handshake`); the line's
bytes per direction (KISS framing, CRC and stuffing included) are counted as the simulated
UART delivers them, and reported as line bit rate (10 bits per byte). The lowest line rate at
which the call holds is then searched among the usual serial rates: from the first rate above
the measured bit rate upwards, a transport-only call of up to 6 s
(:func:`~voip_codec.transport.realtime.run_link_call`: the same sessions and packets, random
payloads of the codec's frame size, no model) runs at each rate until one holds: no packet
dropped for want of line rate and at least 97 % of the frames received in each direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from typing import Any

from voip_codec.codecs.base import Codec

from .wire_bench import CountingSocket, DirectionCounts, WireConfig

__all__ = ["SERIAL_RATES", "lowest_serial_rate", "measure_ice", "measure_serial"]

SERIAL_RATES = (300, 600, 1200, 1800, 2400, 3600, 4800, 7200, 9600, 14400, 19200)
"""Line rates (bit/s) the lowest-rate search tries."""

MEASURE_BAUD = 9600
"""Line rate of the measured serial call (ample for every configuration of the table)."""


def _speech_peers(codec: Codec, config: WireConfig, links: tuple[Any, Any]) -> tuple[Any, Any]:
    from voip_codec.audio import read_audio
    from voip_codec.webrtc.call import CallOptions
    from voip_codec.webrtc.commands import SAMPLE_SPEECH
    from voip_codec.webrtc.linkcall import LinkPeer

    from .wire_datachannel import TRACK_RATE, SpeechTrack

    pcm, _ = read_audio(SAMPLE_SPEECH, TRACK_RATE)
    length = config.warmup_s + config.seconds + 1.0
    options = CallOptions(frames_per_packet=config.frames_per_packet,
                          redundancy=config.redundancy, adaptive=False, e2e=config.e2e)
    phase_s = config.frames_per_packet * 0.040  # the two callers' packets out of phase
    a = LinkPeer(codec, links[0], options, source=SpeechTrack(pcm, length), name="a")
    b = LinkPeer(codec, links[1], options, name="b",
                 source=SpeechTrack(pcm, length, offset_s=1.3, start_delay_s=phase_s))
    return a, b


async def _run_peers(a: Any, b: Any, config: WireConfig, on_start: Any, on_end: Any) -> None:
    """Start both peers, play their received audio out, call ``on_start()`` after the warm-up
    and ``on_end()`` after the measured seconds."""
    from .wire_datachannel import playing_out

    async with playing_out(a.track, b.track):
        a.start()
        b.start()
        await asyncio.sleep(config.warmup_s)
        on_start()
        await asyncio.sleep(config.seconds)
        on_end()


def _sender_counts(peer: Any) -> tuple[int, int]:
    return peer.sender.stats.packets, peer.sender.stats.payload_bytes


async def measure_ice(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    """A full-duplex call on ICE/UDP links (encrypted or not, as ``config.e2e``).

    Returns:
        ``{"forward": ..., "back": ...}``: what the offerer and the answerer sent.
    """
    from signaling.client import SignalingClient
    from signaling.server import create_app, start_server
    from voip_codec.transport.ice import IceLink, connect_ice, secure_ice
    from voip_codec.transport.secure import KeyExchange, Role
    from voip_codec.webrtc.contrib.loopback import loopback_candidates

    secret = os.urandom(32)
    server = await start_server(create_app(secret), "127.0.0.1", 0)
    clients = [SignalingClient(server.ws_url, "wire", name, secret=secret)
               for name in ("a", "b")]
    ice: list[IceLink] = []
    peers: list[Any] = []
    try:
        with loopback_candidates():
            roles: list[Role] = []
            for c in clients:
                await c.connect()
                role = await c.join()
                assert role in ("offerer", "answerer")
                roles.append("offerer" if role == "offerer" else "answerer")
            ice = list(await asyncio.gather(*(
                connect_ice(c, role, codec.info.name,
                            exchange=KeyExchange(role, None) if config.e2e else None)
                for c, role in zip(clients, roles, strict=True))))
        a, b = _speech_peers(codec, config, (secure_ice(ice[0]), secure_ice(ice[1])))
        peers = [a, b]
        sockets = {key: [CountingSocket.install(p) for p in link.connection._protocols]
                   for key, link in (("forward", ice[0]), ("back", ice[1]))}
        start: dict[str, tuple[int, int]] = {}
        result: dict[str, DirectionCounts] = {}

        def on_start() -> None:
            for key, peer in (("forward", a), ("back", b)):
                for s in sockets[key]:
                    s.reset()
                start[key] = _sender_counts(peer)

        def on_end() -> None:
            for key, peer in (("forward", a), ("back", b)):
                socks = sockets[key]
                peer_socks = sockets["back" if key == "forward" else "forward"]
                datagrams = sum(s.datagrams for s in socks)
                sent = sum(s.bytes for s in socks)
                stun = (sum(s.stun[0] for s in socks), sum(s.stun[1] for s in socks))
                packets, payload = _sender_counts(peer)
                result[key] = DirectionCounts(
                    datagrams=datagrams, udp_bytes=sent,
                    stun_datagrams=stun[0], stun_bytes=stun[1],
                    by_kind={"data": (datagrams - stun[0], sent - stun[1])},
                    packets=packets - start[key][0], packet_bytes=payload - start[key][1],
                    delivered_datagrams=sum(s.received[0] for s in peer_socks),
                    delivered_bytes=sum(s.received[1] for s in peer_socks))

        await _run_peers(a, b, config, on_start, on_end)
        for key, link in (("forward", ice[0]), ("back", ice[1])):
            result[key].consent = link.consent
        return result
    finally:
        for peer in peers:
            await peer.close()
        for link in ice:
            await link.wait_closed()
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        await server.close()


async def _serial_links(baud: int, line_fds: tuple[int, int], e2e: bool) -> tuple[Any, Any,
                                                                                   Any, Any]:
    """Two serial links on the line's ends after the in-band handshake (raw and call links)."""
    from voip_codec.transport.handshake import handshake_interval_s, handshake_link
    from voip_codec.transport.serial import SerialLink

    raw = (SerialLink(line_fds[0], baud=baud, name="serial:a"),
           SerialLink(line_fds[1], baud=baud, name="serial:b"))
    try:
        call = await asyncio.gather(*(
            handshake_link(link, encrypt=e2e, timeout_s=20,
                           interval_s=handshake_interval_s(baud, e2e), counter_bytes=0)
            for link in raw))
    except BaseException:
        for link in raw:
            link.close()
        raise
    return raw[0], raw[1], call[0], call[1]


async def measure_serial(codec: Codec, config: WireConfig) -> dict[str, DirectionCounts]:
    """A full-duplex call on a simulated serial line at :data:`MEASURE_BAUD`, then the search
    for the lowest line rate at which it holds (``lowest_rate`` of both directions)."""
    from voip_codec.transport.serial_line import LineConditions, PtyLine

    result: dict[str, DirectionCounts] = {}
    with PtyLine(LineConditions(MEASURE_BAUD), seed=1) as line:
        raw_a, raw_b, call_a, call_b = await _serial_links(MEASURE_BAUD, line.fds, config.e2e)
        a, b = _speech_peers(codec, config, (call_a, call_b))
        start: dict[str, tuple[int, int, int, int]] = {}
        try:
            def snapshot(key: str, peer: Any, raw: Any) -> tuple[int, int, int, int]:
                direction = "ab" if key == "forward" else "ba"
                return (*_sender_counts(peer), raw.datagrams_sent,
                        line.stats[direction].bytes_out)

            def on_start() -> None:
                start["forward"] = snapshot("forward", a, raw_a)
                start["back"] = snapshot("back", b, raw_b)

            def on_end() -> None:
                for key, peer, raw in (("forward", a, raw_a), ("back", b, raw_b)):
                    now = snapshot(key, peer, raw)
                    d = [x - y for x, y in zip(now, start[key], strict=True)]
                    result[key] = DirectionCounts(
                        datagrams=d[2], udp_bytes=d[3], packets=d[0], packet_bytes=d[1],
                        by_kind={"data": (d[2], d[3])}, delivered_datagrams=d[2],
                        delivered_bytes=d[3])

            await _run_peers(a, b, config, on_start, on_end)
        finally:
            for peer in (a, b):
                await peer.close()
    line_bps = max(c.udp_bytes for c in result.values()) * 10 / config.seconds
    lowest = await lowest_serial_rate(codec, config, line_bps, seconds=min(config.seconds, 6.0))
    for counts in result.values():
        counts.lowest_rate = lowest
    return result


async def lowest_serial_rate(codec: Codec, config: WireConfig, line_bps: float,
                             seconds: float | None = None) -> int | None:
    """The lowest of :data:`SERIAL_RATES` at or above ``line_bps`` at which a full-duplex
    transport-only call of ``config`` holds (see the module docstring); None above them all."""
    from voip_codec.transport.jitter import JitterConfig
    from voip_codec.transport.realtime import CallSide, run_link_call
    from voip_codec.transport.serial_line import LineConditions, PtyLine

    frames = max(12, round((seconds or config.seconds) / (codec.info.frame_ms / 1000)))
    rng = random.Random(0)
    size = codec.info.bytes_per_frame
    for baud in (r for r in SERIAL_RATES if r >= line_bps):
        with PtyLine(LineConditions(baud), seed=2) as line:
            raw_a, raw_b, call_a, call_b = await _serial_links(baud, line.fds, config.e2e)
            try:
                sides = (CallSide(call_a, [rng.randbytes(size) for _ in range(frames)]),
                         CallSide(call_b, [rng.randbytes(size) for _ in range(frames)]))
                await run_link_call(codec, sides, frames_per_packet=config.frames_per_packet,
                                    redundancy=config.redundancy,
                                    jitter=JitterConfig(initial_delay_ms=240), extra_ticks=12)
            finally:
                raw_a.close()
                raw_b.close()
        drops = raw_a.backlog_drops + raw_b.backlog_drops
        received = [s.receive.stats.frames_received for s in sides if s.receive is not None]
        if drops == 0 and min(received) >= 0.97 * frames:
            return baud
    return None
