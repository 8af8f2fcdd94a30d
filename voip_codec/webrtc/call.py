"""Peers, the loopback demo and two-process calls.

A :class:`CallPeer` owns one ``RTCPeerConnection`` (``RTCConfiguration(iceServers=[])``: no STUN
on closed networks) and one data channel created with ``ordered=False, maxRetransmits=0`` whose
label names the codec (``voip-codec/<codec name>``), wrapped as a
:class:`~voip_codec.webrtc.datachannel.DataChannelLink`. Outgoing audio goes through
:class:`~voip_codec.webrtc.sender.CodecSender` (a ``SendSession``); every incoming datagram goes
to :class:`~voip_codec.webrtc.receiver.CodecReceiverTrack` (a ``ReceiveSession``), which
classifies it: audio is played, loss reports go to the paired ``SendSession`` so it adapts its
redundancy, and its own reports go back on the same channel.

End-to-end encryption is on by default (``CallOptions.e2e``): each peer puts an X25519 public
key into its SDP (:func:`~voip_codec.transport.secure.sdp_with_e2e_key`), takes the other's out
before handing the SDP to aiortc, and wraps the data channel in a
:class:`~voip_codec.transport.secure.SecureLink`. DTLS protects each hop; this protects the
audio from the signaling server and any relay. :attr:`CallPeer.sas` is the code both users
compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ..codecs.base import Codec
from ..transport.jitter import JitterConfig
from ..transport.link import Link
from ..transport.secure import (
    E2EKeys,
    KeyExchange,
    SecureLink,
    sdp_take_e2e_key,
    sdp_with_e2e_key,
)
from ..transport.trace import FrameTrace
from .datachannel import DataChannelLink
from .frames import recv_audio
from .receiver import CodecReceiverTrack
from .sctp import SackTuning, tune_sctp
from .sender import CodecSender

__all__ = ["CallError", "CallOptions", "CallPeer", "DemoResult", "recv_message", "run_demo"]

logger = logging.getLogger(__name__)

LABEL_PREFIX = "voip-codec/"


class CallError(RuntimeError):
    """The call could not be set up (codec mismatch, timeout, signaling failure)."""


@dataclass
class CallOptions:
    """Transport settings of one peer."""

    frames_per_packet: int = 1
    """New 80 ms frames per packet (more = fewer packets on the wire, more delay)."""
    redundancy: int = 1
    """Initial K: redundant copies of the previous frames in each packet (0..3)."""
    adaptive: bool = True
    """Adapt K (and duplicates) from the receiver's loss reports."""
    duplicates: bool = True
    """With ``adaptive``: send every packet twice while the loss rate is 4 % or more (no extra
    delay, at twice the packets; off on serial lines, whose rate has no room for them)."""
    dtx: bool = False
    """Send nothing during silence (one keep-alive frame per second)."""
    jitter: JitterConfig = field(default_factory=JitterConfig)
    """Receiver jitter buffer settings."""
    sack_tuning: bool = True
    """Delayed and bundled SCTP SACKs (:mod:`voip_codec.webrtc.sctp`); False keeps aiortc's."""
    packet_version: int = 2
    """Packet version sent: 2 (compact) or 1 (for peers that read only version 1); both are
    always received."""
    e2e: bool = True
    """Encrypt end to end (keys through the SDP; both peers must agree)."""
    psk: bytes | None = None
    """Optional pre-shared secret mixed into the end-to-end keys (both peers the same)."""


class CallPeer:
    """One side of a call.

    Args:
        codec: the frame codec (both peers must use the same one).
        options: transport settings.
        source: audio track to send, or None to only receive.
        name: used in log messages.
        trace: per-frame timestamps of this peer's sender and receiver (latency budget).
    """

    def __init__(self, codec: Codec, options: CallOptions | None = None,
                 source: MediaStreamTrack | None = None, name: str = "peer",
                 trace: FrameTrace | None = None) -> None:
        self.codec = codec
        self.options = options or CallOptions()
        self.source = source
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: RTCDataChannel | None = None
        self.channel_link: DataChannelLink | None = None
        """The data channel as a link (what :attr:`link` wraps when encrypting)."""
        self.link: Link | None = None
        """The link the sessions use: a SecureLink around :attr:`channel_link` under E2E."""
        self.keys: E2EKeys | None = None
        """End-to-end keys, once both public keys are known."""
        self._exchange: KeyExchange | None = None
        self.sender: CodecSender | None = None
        self.trace = trace
        self.track = CodecReceiverTrack(codec, jitter=self.options.jitter,
                                        send_report=self._send, trace=trace)
        self.opened = asyncio.Event()
        self.error: str | None = None
        self.sack_tuning: SackTuning | None = None
        self.pc.on("datachannel", self._on_datachannel)

    def _tune_sctp(self) -> None:
        if self.options.sack_tuning and self.pc.sctp is not None:
            self.sack_tuning = tune_sctp(self.pc.sctp)

    def _send(self, data: bytes) -> None:
        if self.link is not None:
            self.link.send(data)

    @property
    def sas(self) -> str | None:
        """The short authentication string to compare with the other user (None without
        end-to-end encryption)."""
        return self.keys.sas if self.keys is not None else None

    def e2e_stats(self) -> dict[str, Any] | None:
        """Counters of the encrypting link (None without end-to-end encryption)."""
        return self.link.stats.to_dict() if isinstance(self.link, SecureLink) else None

    def _local_sdp(self, role: str) -> str:
        sdp = str(self.pc.localDescription.sdp)
        if not self.options.e2e:
            return sdp
        if self._exchange is None:
            self._exchange = KeyExchange("offerer" if role == "offer" else "answerer",
                                         self.options.psk)
        return sdp_with_e2e_key(sdp, self._exchange.public)

    def _remote_sdp(self, sdp: str, role: str) -> str:
        """Take the peer's key out of its SDP and derive the keys (offer: make our pair)."""
        try:
            clean, key = sdp_take_e2e_key(sdp)
        except ValueError as exc:
            raise CallError(f"the other peer's {role}: {exc}") from None
        if self.options.e2e and key is None:
            raise CallError("the other peer does not encrypt end to end; both peers must "
                            "turn it off (--no-e2e) or neither")
        if not self.options.e2e and key is not None:
            raise CallError("the other peer encrypts end to end but this one was started "
                            "with --no-e2e; both peers must turn it off or neither")
        if key is not None:
            if self._exchange is None:
                self._exchange = KeyExchange("answerer", self.options.psk)
            try:
                self.keys = self._exchange.derive(key)
            except ValueError as exc:
                raise CallError(str(exc)) from None
        return clean

    def _attach(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.channel_link = DataChannelLink(channel)
        if channel.readyState == "open":
            self._on_open()
        else:
            channel.on("open", self._on_open)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = str(channel.label)
        expected = LABEL_PREFIX + self.codec.info.name
        if label != expected:
            self.error = (f"the other peer sends codec {label.removeprefix(LABEL_PREFIX)!r} "
                          f"but this peer uses {self.codec.info.name!r}")
            logger.error("%s: %s", self.name, self.error)
            channel.close()
            self.opened.set()
            return
        self._attach(channel)

    def _on_open(self) -> None:
        logger.info("%s: data channel open", self.name)
        if self.link is None and self.channel_link is not None:
            if self.options.e2e:
                if self.keys is None:  # cannot happen after a completed offer/answer
                    self.error = "the data channel opened before the end-to-end keys were set"
                    logger.error("%s: %s", self.name, self.error)
                    self.opened.set()
                    return
                self.link = SecureLink(self.channel_link, self.keys)
            else:
                self.link = self.channel_link
            self.link.set_receiver(self.track.on_message)
        if self.source is not None and self.sender is None and self.link is not None:
            o = self.options
            self.sender = CodecSender(self.source, self.codec, self.link,
                                      frames_per_packet=o.frames_per_packet,
                                      redundancy=o.redundancy, adaptive=o.adaptive,
                                      duplicates=o.duplicates, dtx=o.dtx,
                                      trace=self.trace,
                                      packet_version=o.packet_version)
            self.track.session.sender = self.sender.session  # loss reports adapt its K
            self.sender.start()
        self.opened.set()

    async def create_offer(self) -> str:
        """Create the data channel and return the offer SDP (ICE candidates included)."""
        channel = self.pc.createDataChannel(LABEL_PREFIX + self.codec.info.name, ordered=False,
                                            maxRetransmits=0)
        self._tune_sctp()
        self._attach(channel)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self._local_sdp("offer")

    async def accept_offer(self, sdp: str) -> str:
        """Apply the other peer's offer and return the answer SDP."""
        sdp = self._remote_sdp(sdp, "offer")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self._tune_sctp()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self._local_sdp("answer")

    async def accept_answer(self, sdp: str) -> None:
        """Apply the other peer's answer."""
        sdp = self._remote_sdp(sdp, "answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def wait_open(self, timeout_s: float = 15.0) -> None:
        """Wait until the data channel is open.

        Raises:
            CallError: timeout, codec mismatch or missing end-to-end keys.
        """
        try:
            await asyncio.wait_for(self.opened.wait(), timeout_s)
        except asyncio.TimeoutError as exc:
            raise CallError(f"{self.name}: data channel did not open within {timeout_s} s "
                            "(ICE failed? on a closed network both peers need reachable "
                            "host candidates)") from exc
        if self.error:
            raise CallError(self.error)

    async def close(self) -> None:
        """Stop sending and receiving and close the connection."""
        if self.sender is not None:
            await self.sender.stop()
        self.track.stop()
        await self.pc.close()


async def collect(track: MediaStreamTrack, stop: asyncio.Event) -> np.ndarray:
    """Read a track's frames until ``stop`` is set (or the track ends); mono float32."""
    parts = []
    while not stop.is_set():
        frame = await recv_audio(track)
        if frame is None:
            break
        data = frame.to_ndarray()
        if data.dtype == np.int16:
            data = data.astype(np.float32) / 32768.0
        parts.append(data.reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


async def recv_message(client: Any, wanted: str, timeout_s: float) -> dict[str, Any]:
    """Wait for the next signaling message of type ``wanted`` (others are skipped).

    Raises:
        CallError: on a signaling ``error`` message or when none arrives within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CallError(f"no {wanted!r} from the other peer within {timeout_s} s")
        msg = await client.recv(timeout_s=left)
        if msg.get("type") == wanted:
            return dict(msg)
        if msg.get("type") == "error":
            raise CallError(f"signaling error: {msg.get('code')}: {msg.get('message')}")


@dataclass
class DemoResult:
    """What the loopback demo measured."""

    output: str
    input_seconds: float
    output_seconds: float
    codec: str
    codec_kbps: float
    sender: dict[str, Any]
    receiver: dict[str, Any]
    wire: dict[str, Any]
    network: dict[str, Any]
    link: str = "webrtc"
    """The link the call ran over: ``webrtc``, ``ice`` or ``serial``."""
    e2e: dict[str, Any] | None = None
    """End-to-end encryption: the SAS and each peer's SecureLink counters (None when off)."""


def write_demo_output(path: str | Path, audio: np.ndarray, track: CodecReceiverTrack,
                      input_seconds: float) -> np.ndarray:
    """Write what ``track`` played, from its first decoded sample, cut or padded with silence to
    the input's length, at the track's rate; returns the written samples."""
    from ..audio import write_audio

    rate = track.rate
    start = track.frame0_sample or 0
    n_out = int(round(input_seconds * rate))
    out = audio[start:start + n_out]
    if out.shape[0] < n_out:
        out = np.pad(out, (0, n_out - out.shape[0]))
    write_audio(path, out, rate)
    return out


async def drain_call(sender: CodecSender, track: CodecReceiverTrack, options: CallOptions,
                     delay_ms: float, jitter_ms: float, timeout_s: float) -> None:
    """Wait for ``sender`` to send its whole input, then let the last packets cross the link
    and the jitter buffer drain: until ``track`` has played the end-of-stream packet, or every
    sent frame has been played (decoded or concealed) and a little more (the end packet may be
    lost), or the longest possible playout delay has passed."""
    await asyncio.wait_for(sender.finished.wait(), timeout_s)
    sent = sender.stats.frames
    drain_end = time.monotonic() + (options.jitter.max_delay_ms + 2 * delay_ms
                                    + 4 * jitter_ms) / 1000 + 0.5
    while (time.monotonic() < drain_end and not track.ended
           and track.last_index_played < sent - 1):
        await asyncio.sleep(0.02)
    grace_end = min(drain_end, time.monotonic() + 0.3)
    while time.monotonic() < grace_end and not track.ended:
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _signaling_server() -> AsyncIterator[tuple[str, bytes]]:
    from signaling.server import create_app, start_server

    secret = os.urandom(32)
    server = await start_server(create_app(secret), "127.0.0.1", 0)
    try:
        yield server.ws_url, secret
    finally:
        await server.close()


async def run_demo(input_path: str | Path, output_path: str | Path, codec: Codec, *,
                   options: CallOptions | None = None, loss: float = 0.0, burst: float = 1.0,
                   delay_ms: float = 20.0, jitter_ms: float = 0.0, rate_kbps: float | None = None,
                   seed: int = 0, timeout_s: float = 120.0) -> DemoResult:
    """A complete call on this machine: signaling server, two aiortc peers, impairment relay.

    Alice plays ``input_path`` into the call; Bob's received track is recorded to
    ``output_path`` (48 kHz mono WAV, trimmed to the input's duration from the first frame on).
    Impairments apply to Alice -> Bob after the data channel opens.
    """
    from aiortc.contrib.media import MediaPlayer

    from signaling.client import SignalingClient

    from ..audio import read_audio
    from ..transport.netsim import NetworkConditions, loss_model
    from .contrib.loopback import loopback_candidates
    from .contrib.relay import ImpairmentRelay

    pcm, _ = read_audio(input_path, codec.info.input_sample_rate)
    input_seconds = len(pcm) / codec.info.input_sample_rate
    forward = NetworkConditions(loss=loss_model(loss, burst), delay_ms=delay_ms,
                                jitter_ms=jitter_ms,
                                rate_bps=None if rate_kbps is None else rate_kbps * 1000)
    relay = ImpairmentRelay(forward, NetworkConditions(delay_ms=delay_ms), seed=seed)
    options = options or CallOptions()
    with loopback_candidates():
        async with _signaling_server() as (url, secret):
            await relay.start()
            player = MediaPlayer(str(input_path))
            alice = CallPeer(codec, options, source=player.audio, name="alice")
            bob = CallPeer(codec, options, source=None, name="bob")
            ca = SignalingClient(url, "demo", "alice", secret=secret)
            cb = SignalingClient(url, "demo", "bob", secret=secret)
            try:
                await ca.connect()
                await ca.join()
                await cb.connect()
                await cb.join()  # second to join: the offerer
                offer = await bob.create_offer()
                await cb.send({"type": "offer", "sdp": relay.rewrite(offer, "b")})
                msg = await recv_message(ca, "offer", 15)
                answer = await alice.accept_offer(msg["sdp"])
                await ca.send({"type": "answer", "sdp": relay.rewrite(answer, "a")})
                msg = await recv_message(cb, "answer", 15)
                await bob.accept_answer(msg["sdp"])
                await asyncio.gather(alice.wait_open(), bob.wait_open())
                relay.impair(True)
                stop = asyncio.Event()
                recording = asyncio.ensure_future(collect(bob.track, stop))
                assert alice.sender is not None
                await drain_call(alice.sender, bob.track, options, delay_ms, jitter_ms,
                                 timeout_s)
                stop.set()
                audio = await recording
            finally:
                for client in (ca, cb):
                    with contextlib.suppress(Exception):
                        await client.close()
                await alice.close()
                await bob.close()
                relay.close()
    rate = bob.track.rate
    out = write_demo_output(output_path, audio, bob.track, input_seconds)
    now = time.monotonic()
    sender = alice.sender.stats.to_dict() if alice.sender is not None else {}
    if alice.sender is not None:  # the frame grid's shift against the input (see sender.py)
        sender["align_samples"] = alice.sender.align_samples or 0
    sent_seconds = max(1e-9, sender.get("frames", 0) * codec.info.frame_ms / 1000)
    wire = {
        "forward_wire_kbps": round(relay.stats["ab"].wire_kbps(now), 2),
        "reverse_wire_kbps": round(relay.stats["ba"].wire_kbps(now), 2),
        "forward_datagrams": relay.stats["ab"].datagrams_in,
        "forward_dropped": relay.stats["ab"].dropped,
        "reverse_datagrams": relay.stats["ba"].datagrams_in,
        "packet_kbps": round(8 * sender.get("payload_bytes", 0) / sent_seconds / 1000, 3),
    }
    return DemoResult(
        output=str(output_path), input_seconds=round(input_seconds, 3),
        output_seconds=round(len(out) / rate, 3), codec=codec.info.name,
        codec_kbps=codec.info.bitrate / 1000, sender=dict(sender), receiver=bob.track.stats(),
        e2e=None if alice.keys is None else {
            "sas": alice.sas, "sas_match": alice.sas == bob.sas,
            "alice": alice.e2e_stats(), "bob": bob.e2e_stats()},
        wire=wire, network={"loss": loss, "burst": burst, "delay_ms": delay_ms,
                            "jitter_ms": jitter_ms, "rate_kbps": rate_kbps, "seed": seed})
