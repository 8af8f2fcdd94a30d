"""Calls over links other than the WebRTC data channel: ICE/UDP and serial lines.

A :class:`LinkPeer` is the same pair as a :class:`~voip_codec.webrtc.call.CallPeer` (a
:class:`~voip_codec.webrtc.sender.CodecSender` and a
:class:`~voip_codec.webrtc.receiver.CodecReceiverTrack`, i.e. one ``SendSession`` and one
``ReceiveSession``) on any :class:`~voip_codec.transport.link.Link`: aiortc supplies only the
audio tracks (file player, microphone, recorder), no peer connection.

:func:`run_link_demo` is ``voip-codec demo --link ice|serial``: the same call as the WebRTC demo,
over an ICE link through the local signaling server and UDP impairment relay, or over a serial
line simulated between two pseudo-terminals (rate cap, bit errors, dropped bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from ..codecs.base import Codec
from ..transport.link import Link
from ..transport.serial import SerialLink
from .call import CallError, CallOptions, DemoResult, collect, drain_call, write_demo_output
from .receiver import CodecReceiverTrack
from .sender import CodecSender

__all__ = ["LinkPeer", "run_link_demo"]


def _serial(link: Link) -> bool:
    """Whether ``link`` (or the link an encrypting wrapper sends on) is a serial line: its bit
    rate has no room for duplicate packets."""
    return isinstance(getattr(link, "inner", link), SerialLink)


class LinkPeer:
    """One side of a call over ``link``.

    Args:
        codec: the frame codec (both sides must use the same one).
        link: a connected link; this peer sets its receiver and closes it.
        options: transport settings.
        source: audio track to send, or None to only receive.
        name: used in log messages.
    """

    def __init__(self, codec: Codec, link: Link, options: CallOptions | None = None,
                 source: MediaStreamTrack | None = None, name: str = "peer") -> None:
        self.codec = codec
        self.link = link
        self.options = o = options or CallOptions()
        self.name = name
        self.track = CodecReceiverTrack(codec, jitter=o.jitter, send_report=link.send)
        link.set_receiver(self.track.on_message)
        self.sender: CodecSender | None = None
        if source is not None:
            self.sender = CodecSender(source, codec, link, frames_per_packet=o.frames_per_packet,
                                      redundancy=o.redundancy, adaptive=o.adaptive,
                                      duplicates=o.duplicates and not _serial(link), dtx=o.dtx)
            self.track.session.sender = self.sender.session  # loss reports adapt its K

    def start(self) -> None:
        """Start sending (when there is a source)."""
        if self.sender is not None:
            self.sender.start()

    async def close(self) -> None:
        """Stop sending and receiving and close the link."""
        if self.sender is not None:
            await self.sender.stop()
        self.track.stop()
        self.link.close()
        wait_closed = (getattr(self.link, "wait_closed", None)
                       or getattr(getattr(self.link, "inner", None), "wait_closed", None))
        if wait_closed is not None:
            await wait_closed()


async def _play_out(alice: LinkPeer, bob: LinkPeer, options: CallOptions, timeout_s: float,
                    delay_ms: float, jitter_ms: float) -> np.ndarray:
    """Alice plays her source into the call; returns what Bob's track played."""
    stop = asyncio.Event()
    recording = asyncio.ensure_future(collect(bob.track, stop))
    # Alice's own track must be pulled too, so that her session ticks (and sends reports)
    listening = asyncio.ensure_future(collect(alice.track, stop))
    assert alice.sender is not None
    alice.start()
    try:
        await drain_call(alice.sender, bob.track, options, delay_ms, jitter_ms, timeout_s)
    finally:
        stop.set()
        audio = await recording
        await listening
    return audio


async def run_link_demo(input_path: str | Path, output_path: str | Path, codec: Codec,
                        link: str, *, options: CallOptions | None = None, loss: float = 0.0,
                        burst: float = 1.0, delay_ms: float = 20.0, jitter_ms: float = 0.0,
                        rate_kbps: float | None = None, baud: int = 2400,
                        bit_error_rate: float = 0.0, byte_drop_rate: float = 0.0,
                        seed: int = 0, timeout_s: float = 120.0) -> DemoResult:
    """The loopback demo over an ICE link (``link="ice"``) or a simulated serial line
    (``link="serial"``); see :func:`~voip_codec.webrtc.call.run_demo` for the rest.

    Impairments: for ``ice`` ``loss``/``burst``/``delay_ms``/``jitter_ms``/``rate_kbps`` apply
    to Alice -> Bob at the UDP relay; for ``serial`` the line runs at ``baud`` (8N1) both ways
    and flips bits and drops bytes at the given rates.
    """
    from aiortc.contrib.media import MediaPlayer

    from ..audio import read_audio

    pcm, _ = read_audio(input_path, codec.info.input_sample_rate)
    input_seconds = len(pcm) / codec.info.input_sample_rate
    options = options or CallOptions()
    player = MediaPlayer(str(input_path))
    if player.audio is None:
        raise CallError(f"{input_path} has no audio stream")
    wire: dict[str, Any]
    network: dict[str, Any]
    if link == "ice":
        alice, bob, audio, wire = await _ice_demo(codec, options, player.audio, loss=loss,
                                                  burst=burst, delay_ms=delay_ms,
                                                  jitter_ms=jitter_ms, rate_kbps=rate_kbps,
                                                  seed=seed, timeout_s=timeout_s)
        network = {"loss": loss, "burst": burst, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
                   "rate_kbps": rate_kbps, "seed": seed}
    elif link == "serial":
        alice, bob, audio, wire = await _serial_demo(codec, options, player.audio, baud=baud,
                                                     bit_error_rate=bit_error_rate,
                                                     byte_drop_rate=byte_drop_rate, seed=seed,
                                                     timeout_s=timeout_s)
        network = {"baud": baud, "bit_error_rate": bit_error_rate,
                   "byte_drop_rate": byte_drop_rate, "seed": seed}
    else:
        raise ValueError(f"link must be 'ice' or 'serial', got {link!r}")
    rate = bob.track.rate
    out = write_demo_output(output_path, audio, bob.track, input_seconds)
    sender = alice.sender.stats.to_dict() if alice.sender is not None else {}
    sent_seconds = max(1e-9, sender.get("frames", 0) * codec.info.frame_ms / 1000)
    wire["packet_kbps"] = round(8 * sender.get("payload_bytes", 0) / sent_seconds / 1000, 3)
    from ..transport.secure import SecureLink

    la, lb = alice.link, bob.link
    e2e = None
    if isinstance(la, SecureLink) and isinstance(lb, SecureLink):
        e2e = {"sas": la.keys.sas, "sas_match": la.keys.sas == lb.keys.sas,
               "alice": la.stats.to_dict(), "bob": lb.stats.to_dict()}
    return DemoResult(
        output=str(output_path), input_seconds=round(input_seconds, 3),
        output_seconds=round(len(out) / rate, 3), codec=codec.info.name,
        codec_kbps=codec.info.bitrate / 1000, sender=dict(sender), receiver=bob.track.stats(),
        wire=wire, network=network, link=link, e2e=e2e)


async def _ice_demo(codec: Codec, options: CallOptions, source: MediaStreamTrack, *,
                    loss: float, burst: float, delay_ms: float, jitter_ms: float,
                    rate_kbps: float | None, seed: int, timeout_s: float
                    ) -> tuple[LinkPeer, LinkPeer, np.ndarray, dict[str, Any]]:
    from signaling.client import SignalingClient
    from signaling.server import create_app, start_server

    from ..transport.ice import IceLink, IceLinkError, connect_ice, secure_ice
    from ..transport.netsim import NetworkConditions, loss_model
    from ..transport.secure import KeyExchange
    from .contrib.loopback import loopback_candidates
    from .contrib.relay import ImpairmentRelay

    forward = NetworkConditions(loss=loss_model(loss, burst), delay_ms=delay_ms,
                                jitter_ms=jitter_ms,
                                rate_bps=None if rate_kbps is None else rate_kbps * 1000)
    relay = ImpairmentRelay(forward, NetworkConditions(delay_ms=delay_ms), seed=seed)
    secret = os.urandom(32)
    server = await start_server(create_app(secret), "127.0.0.1", 0)
    ca = SignalingClient(server.ws_url, "demo", "alice", secret=secret)
    cb = SignalingClient(server.ws_url, "demo", "bob", secret=secret)
    links: list[IceLink] = []
    peers: list[LinkPeer] = []
    try:
        await relay.start()
        with loopback_candidates():
            await ca.connect()
            role_a = await ca.join()
            await cb.connect()
            role_b = await cb.join()
            ex_a = KeyExchange(role_a, options.psk) if options.e2e else None  # type: ignore[arg-type]
            ex_b = KeyExchange(role_b, options.psk) if options.e2e else None  # type: ignore[arg-type]
            try:
                links = list(await asyncio.gather(
                    connect_ice(ca, role_a, codec.info.name,
                                advertise=lambda t: relay.rewrite(t, "a"), exchange=ex_a),
                    connect_ice(cb, role_b, codec.info.name,
                                advertise=lambda t: relay.rewrite(t, "b"), exchange=ex_b)))
            except (IceLinkError, TimeoutError) as exc:
                raise CallError(str(exc)) from None
        relay.impair(True)
        alice = LinkPeer(codec, secure_ice(links[0]), options, source=source, name="alice")
        bob = LinkPeer(codec, secure_ice(links[1]), options, name="bob")
        peers = [alice, bob]
        audio = await _play_out(alice, bob, options, timeout_s, delay_ms, jitter_ms)
        now = time.monotonic()
        wire = {
            "forward_wire_kbps": round(relay.stats["ab"].wire_kbps(now), 2),
            "reverse_wire_kbps": round(relay.stats["ba"].wire_kbps(now), 2),
            "forward_datagrams": relay.stats["ab"].datagrams_in,
            "forward_dropped": relay.stats["ab"].dropped,
            "reverse_datagrams": relay.stats["ba"].datagrams_in,
        }
        return alice, bob, audio, wire
    finally:
        for peer in peers:
            await peer.close()
        for link in links:
            await link.wait_closed()
        for client in (ca, cb):
            with contextlib.suppress(Exception):
                await client.close()
        relay.close()
        await server.close()


async def _serial_demo(codec: Codec, options: CallOptions, source: MediaStreamTrack, *,
                       baud: int, bit_error_rate: float, byte_drop_rate: float, seed: int,
                       timeout_s: float) -> tuple[LinkPeer, LinkPeer, np.ndarray, dict[str, Any]]:
    from ..transport.handshake import HandshakeError, handshake_interval_s, handshake_link
    from ..transport.serial import SerialLink, SerialLinkError, open_serial_link
    from ..transport.serial_line import LineConditions, PtyLine

    line = PtyLine(LineConditions(baud, bit_error_rate=bit_error_rate,
                                  byte_drop_rate=byte_drop_rate), seed=seed)
    line.start()
    peers: list[LinkPeer] = []
    links: list[SerialLink] = []
    try:
        # Alice writes the pty as a plain file descriptor, Bob opens his like a modem's port
        link_a = SerialLink(line.fds[0], baud=baud, name="serial:alice")
        links.append(link_a)
        try:
            link_b = open_serial_link(f"{line.paths[1]}@{baud}", name="serial:bob")
        except SerialLinkError as exc:
            raise CallError(str(exc)) from None
        links.append(link_b)
        # no signaling: the two ends agree on keys on the line itself (also with --no-e2e,
        # where the handshake only checks that neither end encrypts)
        interval = handshake_interval_s(baud, options.e2e, options.psk is not None)
        try:
            call_a, call_b = await asyncio.gather(*(
                handshake_link(link, encrypt=options.e2e, psk=options.psk, timeout_s=30.0,
                               interval_s=interval, counter_bytes=0)
                for link in (link_a, link_b)))
        except HandshakeError as exc:
            raise CallError(str(exc)) from None
        alice = LinkPeer(codec, call_a, options, source=source, name="alice")
        bob = LinkPeer(codec, call_b, options, name="bob")
        peers = [alice, bob]
        audio = await _play_out(alice, bob, options, timeout_s, 0.0, 0.0)
        ab, ba = line.stats["ab"], line.stats["ba"]
        wire = {
            "forward_line_kbps": round(ab.utilisation(baud) * baud / 1000, 3),
            "forward_line_utilisation": round(ab.utilisation(baud), 3),
            "reverse_line_kbps": round(ba.utilisation(baud) * baud / 1000, 3),
            "forward_bytes": ab.bytes_out, "reverse_bytes": ba.bytes_out,
            "bits_flipped": ab.bits_flipped + ba.bits_flipped,
            "bytes_dropped": ab.bytes_dropped + ba.bytes_dropped,
            "sender_link": link_a.stats(), "receiver_link": link_b.stats(),
        }
        return alice, bob, audio, wire
    finally:
        for peer in peers:
            await peer.close()
        for link in links:
            link.close()
        line.close()
