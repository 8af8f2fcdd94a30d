"""The WebRTC data-channel entries of ``voip-codec bench wire`` (see :mod:`.wire_bench`)."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import AsyncIterator

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voip_codec.codecs.base import Codec

from .wire_bench import CountingSocket, DirectionCounts, WireConfig

__all__ = ["SpeechTrack", "measure_datachannel"]

TRACK_RATE = 16000
TRACK_FRAME = 320  # 20 ms at 16 kHz


class SpeechTrack(MediaStreamTrack):
    """16 kHz mono 20 ms frames of a looped clip, paced in real time, for ``seconds``.

    Args:
        pcm: the clip, float32 at 16 kHz.
        seconds: how long the track runs.
        offset_s: where in the (looped) clip to start.
        start_delay_s: extra delay of the first frame (the phase of this caller's packets).
    """

    kind = "audio"

    def __init__(self, pcm: np.ndarray, seconds: float, offset_s: float = 0.0,
                 start_delay_s: float = 0.0) -> None:
        super().__init__()
        reps = int(np.ceil((seconds + offset_s) * TRACK_RATE / len(pcm))) + 1
        loop = np.tile(pcm, reps)[int(offset_s * TRACK_RATE):]
        self._pcm = (np.clip(loop, -1, 1) * 32767).astype(np.int16)
        self._frames = int(seconds * TRACK_RATE) // TRACK_FRAME
        self._index = 0
        self._t0: float | None = None
        self._start_delay_s = start_delay_s

    async def recv(self) -> av.AudioFrame:
        if self._index >= self._frames:
            self.stop()
            raise MediaStreamError
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now + self._start_delay_s
        wait = self._t0 + self._index * TRACK_FRAME / TRACK_RATE - now
        if wait > 0:
            await asyncio.sleep(wait)
        start = self._index * TRACK_FRAME
        frame = av.AudioFrame.from_ndarray(
            self._pcm[start:start + TRACK_FRAME].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = TRACK_RATE, start
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        self._index += 1
        return frame


async def _drain(track: MediaStreamTrack, stop: asyncio.Event) -> None:
    """Play a received track out (decoding, as a real call does) and drop the audio."""
    while not stop.is_set():
        try:
            await track.recv()
        except MediaStreamError:
            return


@contextlib.asynccontextmanager
async def playing_out(*tracks: MediaStreamTrack) -> AsyncIterator[None]:
    """Play the received ``tracks`` out (:func:`_drain`) while the body runs; then stop them and
    wait until they have."""
    stop = asyncio.Event()
    drains = [asyncio.ensure_future(_drain(t, stop)) for t in tracks]
    try:
        yield
    finally:
        stop.set()
        for t in drains:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t


async def measure_datachannel(codec: Codec, config: WireConfig, *, sack_tuning: bool
                              ) -> dict[str, DirectionCounts]:
    """A full-duplex call on an aiortc data channel, stock or with tuned SACKs.

    Returns:
        ``{"forward": ..., "back": ...}``: what the offerer and the answerer sent.
    """
    from voip_codec.audio import read_audio
    from voip_codec.webrtc.call import CallOptions, CallPeer
    from voip_codec.webrtc.commands import SAMPLE_SPEECH
    from voip_codec.webrtc.contrib.loopback import loopback_candidates
    from voip_codec.webrtc.sctp import SctpPacketCounter

    pcm, _ = read_audio(SAMPLE_SPEECH, TRACK_RATE)
    length = config.warmup_s + config.seconds + 1.0
    options = CallOptions(frames_per_packet=config.frames_per_packet,
                          redundancy=config.redundancy, adaptive=False, sack_tuning=sack_tuning,
                          e2e=config.e2e)
    # two callers' packets are out of phase: b sends half a packet period after a (with equal
    # phases, small timing noise reorders who sends first, which no real pair of callers shows
    # for long)
    phase_s = config.frames_per_packet * 0.040
    with loopback_candidates():
        a = CallPeer(codec, options, source=SpeechTrack(pcm, length), name="a")
        b = CallPeer(codec, options, name="b",
                     source=SpeechTrack(pcm, length, offset_s=1.3, start_delay_s=phase_s))
        try:
            await b.accept_answer(await a.accept_offer(await b.create_offer()))
            await asyncio.gather(a.wait_open(), b.wait_open())
            sockets: dict[str, list[CountingSocket]] = {}
            sctp: dict[str, SctpPacketCounter] = {}
            for key, peer in (("forward", a), ("back", b)):
                transport = peer.pc.sctp
                assert transport is not None
                sctp[key] = SctpPacketCounter(transport)
                connection = transport.transport.transport.iceGatherer._connection
                sockets[key] = [CountingSocket.install(p) for p in connection._protocols]
            async with playing_out(a.track, b.track):
                await asyncio.sleep(config.warmup_s)
                start: dict[str, tuple[int, int]] = {}
                for key, peer in (("forward", a), ("back", b)):
                    for s in sockets[key]:
                        s.reset()
                    sctp[key].reset()
                    assert peer.sender is not None
                    start[key] = (peer.sender.stats.packets, peer.sender.stats.payload_bytes)
                await asyncio.sleep(config.seconds)
                result: dict[str, DirectionCounts] = {}
                for key, peer in (("forward", a), ("back", b)):
                    assert peer.sender is not None
                    st, socks = sctp[key].stats, sockets[key]
                    peer_socks = sockets["back" if key == "forward" else "forward"]
                    result[key] = DirectionCounts(
                        datagrams=sum(s.datagrams for s in socks),
                        udp_bytes=sum(s.bytes for s in socks),
                        stun_datagrams=sum(s.stun[0] for s in socks),
                        stun_bytes=sum(s.stun[1] for s in socks),
                        dtls_app_datagrams=sum(s.dtls_app[0] for s in socks),
                        dtls_app_bytes=sum(s.dtls_app[1] for s in socks),
                        other_datagrams=sum(s.other[0] for s in socks),
                        other_bytes=sum(s.other[1] for s in socks),
                        by_kind={"data": (st.data_packets, st.data_bytes),
                                 "sack": (st.sack_packets, st.sack_bytes),
                                 "forward_tsn": (st.forward_tsn_packets, st.forward_tsn_bytes),
                                 "control": (st.other_packets, st.other_bytes),
                                 "bundled_sacks": (st.bundled_sacks, 0)},
                        packets=peer.sender.stats.packets - start[key][0],
                        packet_bytes=peer.sender.stats.payload_bytes - start[key][1],
                        delivered_datagrams=sum(s.received[0] for s in peer_socks),
                        delivered_bytes=sum(s.received[1] for s in peer_socks))
                return result
        finally:
            await a.close()
            await b.close()
