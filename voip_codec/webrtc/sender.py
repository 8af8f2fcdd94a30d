"""Sender: any aiortc audio track -> 80 ms codec frames -> a :class:`SendSession` on a link.

This module only adapts aiortc: it resamples the track to the codec's input rate and frame
size, runs the encoder in a worker thread, and measures encode time. Packetising, redundancy and
its adaptation, DTX and the end-of-stream packet are the session's
(:class:`~voip_codec.transport.session.SendSession`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from ..codecs.base import Codec
from ..transport.link import CallbackLink, Link
from ..transport.redundancy import RedundancyController
from ..transport.session import (
    DEFAULT_PACKET_VERSION,
    DEFAULT_VAD_DBFS,
    SendSession,
    SendStats,
)
from .frames import recv_audio

__all__ = ["CodecSender", "SenderStats"]

SenderStats = SendStats
"""The sender's counters (the session's :class:`SendStats`)."""


class CodecSender:
    """Reads ``track``, encodes 80 ms frames in a worker thread, sends packets on a link.

    Args:
        track: any aiortc audio track (MediaPlayer, microphone, a remote track, ...).
        codec: the frame codec.
        send: the link to send on, or a function called with each packet's bytes (e.g.
            ``channel.send``); runs on the event loop.
        frames_per_packet: new frames bundled per packet.
        redundancy: initial K (redundant copies of previous frames per packet).
        adaptive: adapt K from the receiver's loss reports.
        dtx: send nothing during silence (a one-frame keep-alive every ``keepalive_frames``).
        vad_threshold_dbfs: frames quieter than this (RMS) count as silence for DTX.
        packet_version: 2 (compact, the default) or 1 (for peers that only read version 1).
        executor: worker for the encoder (default: a private single thread), so the event loop
            never blocks on the model.
    """

    def __init__(self, track: MediaStreamTrack, codec: Codec,
                 send: Callable[[bytes], None] | Link, *,
                 frames_per_packet: int = 1, redundancy: int = 1, adaptive: bool = True,
                 dtx: bool = False, vad_threshold_dbfs: float = DEFAULT_VAD_DBFS,
                 keepalive_frames: int = 12, packet_version: int = DEFAULT_PACKET_VERSION,
                 executor: concurrent.futures.Executor | None = None) -> None:
        if track.kind != "audio":
            raise ValueError(f"CodecSender needs an audio track, got kind={track.kind!r}")
        self.track = track
        self.codec = codec
        self.info = codec.info
        link = send if isinstance(send, Link) else CallbackLink(send, name="sender")
        self.session = SendSession(
            self.info, codec.new_encoder(), link, frames_per_packet=frames_per_packet,
            redundancy=redundancy,
            controller=RedundancyController(initial=redundancy) if adaptive else None,
            dtx=dtx, vad_threshold_dbfs=vad_threshold_dbfs, keepalive_frames=keepalive_frames,
            packet_version=packet_version, name="sender")
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="voip-codec-encode")
        self._own_executor = executor is None
        self._resampler = av.AudioResampler(format="flt", layout="mono",
                                            rate=self.info.input_sample_rate,
                                            frame_size=self.info.input_frame_samples)
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    @property
    def stats(self) -> SendStats:
        """What the sender did so far (the session's live counters)."""
        return self.session.stats

    def start(self) -> None:
        """Start reading the track (idempotent)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop reading and release the worker."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def on_message(self, data: bytes | str) -> None:
        """Feed a message from the receiver (loss reports adapt K; anything else is counted in
        ``stats.invalid``). A :class:`~voip_codec.webrtc.call.CallPeer` routes reports through
        its receive session instead."""
        self.session.on_datagram(data)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.info.input_frame_samples
        try:
            while True:
                frame = await recv_audio(self.track)
                if frame is None:
                    break
                for out in self._resampler.resample(frame):
                    await self._frame(loop, out.to_ndarray().reshape(-1)[:n])
            for out in self._resampler.resample(None):  # the last, zero-padded partial frame
                await self._frame(loop, out.to_ndarray().reshape(-1)[:n])
            filler = None
            if self.session.end_needs_frame:  # announce the end with one silent frame
                filler = await loop.run_in_executor(self._executor, self.session.encode_frame,
                                                    np.zeros(n, dtype=np.float32))
            self.session.finish(filler)
        finally:
            self.finished.set()

    async def _frame(self, loop: asyncio.AbstractEventLoop, samples: np.ndarray) -> None:
        n = self.info.input_frame_samples
        pcm = np.pad(samples.astype(np.float32), (0, n - samples.shape[0]))
        start = loop.time()
        encoded = await loop.run_in_executor(self._executor, self.session.encode_frame, pcm)
        self.session.record_encode_ms((loop.time() - start) * 1e3)
        self.session.send_frame(encoded)
