"""Sender: any aiortc audio track -> 80 ms codec frames -> a :class:`SendSession` on a link.

This module only adapts aiortc: it resamples the track to the codec's input rate, cuts frames,
runs the encoder in a worker thread, and measures encode time. Packetising, redundancy and its
adaptation, DTX and the end-of-stream packet are the session's
(:class:`~voip_codec.transport.session.SendSession`).

Framing never waits for more audio than a frame: the resampler (libswresample) holds back about
a millisecond of audio, so the frame grid is shifted by exactly that much (silence is prepended
once) and a frame is complete, and encoded, the moment the track hands over its last 20 ms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from ..codecs.base import Codec
from ..transport.link import CallbackLink, Link
from ..transport.redundancy import DUPLICATE_LOSS, RedundancyController
from ..transport.session import (
    DEFAULT_PACKET_VERSION,
    DEFAULT_VAD_DBFS,
    SendSession,
    SendStats,
)
from ..transport.trace import DeadlineWarner, FrameTrace
from .frames import recv_audio

logger = logging.getLogger(__name__)

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
        duplicates: with ``adaptive``, send every packet twice while the reported loss is at
            least ``DUPLICATE_LOSS`` (:mod:`voip_codec.transport.redundancy`).
        dtx: send nothing during silence (a one-frame keep-alive every ``keepalive_frames``).
        vad_threshold_dbfs: frames quieter than this (RMS) count as silence for DTX.
        packet_version: 2 (compact, the default) or 1 (for peers that only read version 1).
        executor: worker for the encoder (default: a private single thread), so the event loop
            never blocks on the model.
        trace: per-frame timestamps (``complete``, ``encoded``, ``sent``) for the latency budget.
        clock: monotonic clock in seconds (for the trace and the deadline warning).
    """

    def __init__(self, track: MediaStreamTrack, codec: Codec,
                 send: Callable[[bytes], None] | Link, *,
                 frames_per_packet: int = 1, redundancy: int = 1, adaptive: bool = True,
                 duplicates: bool = True, dtx: bool = False, vad_threshold_dbfs: float = DEFAULT_VAD_DBFS,
                 keepalive_frames: int = 12, packet_version: int = DEFAULT_PACKET_VERSION,
                 executor: concurrent.futures.Executor | None = None,
                 trace: FrameTrace | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if track.kind != "audio":
            raise ValueError(f"CodecSender needs an audio track, got kind={track.kind!r}")
        self.track = track
        self.codec = codec
        self.info = codec.info
        link = send if isinstance(send, Link) else CallbackLink(send, name="sender")
        self.session = SendSession(
            self.info, codec.new_encoder(), link, frames_per_packet=frames_per_packet,
            redundancy=redundancy,
            controller=RedundancyController(
                initial=redundancy, duplicate_loss=DUPLICATE_LOSS if duplicates else None)
            if adaptive else None,
            dtx=dtx, vad_threshold_dbfs=vad_threshold_dbfs, keepalive_frames=keepalive_frames,
            packet_version=packet_version, name="sender")
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="voip-codec-encode")
        self._own_executor = executor is None
        self._resampler = av.AudioResampler(format="flt", layout="mono",
                                            rate=self.info.input_sample_rate)
        self._pending = np.zeros(0, dtype=np.float32)  # resampled audio not yet in a frame
        self._in_seconds = 0.0  # track audio received so far
        self._out_samples = 0  # resampled samples received so far
        self.align_samples: int | None = None
        """Silence prepended to the frame grid (the resampler's hold-back at the first frame),
        in codec input samples; None before the first frame."""
        self.trace = trace
        self._clock = clock
        self._deadline = DeadlineWarner(logger, "sender: encoding a frame")
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

    def _resample(self, frame: av.AudioFrame | None) -> np.ndarray:
        """Resample one track frame (None: flush) to mono float32 at the codec's input rate."""
        outs = [o.to_ndarray().reshape(-1) for o in self._resampler.resample(frame)]
        pcm = np.concatenate(outs).astype(np.float32) if outs else np.zeros(0, np.float32)
        if frame is not None:
            self._in_seconds += frame.samples / frame.sample_rate
        self._out_samples += pcm.shape[0]
        if self.align_samples is None and frame is not None:
            # shift the grid by what the resampler holds back, so that frames complete together
            # with the track's frames instead of one track frame later
            held = round(self._in_seconds * self.info.input_sample_rate) - self._out_samples
            self.align_samples = max(0, held)
            pcm = np.concatenate([np.zeros(self.align_samples, np.float32), pcm])
        return pcm

    def _warm_up(self) -> None:
        """Worker thread: run a throwaway encoder once, so the first real frame does not pay
        for the model's lazy set-up (tens of milliseconds on a loaded machine)."""
        self.codec.new_encoder().encode(np.zeros(self.info.input_frame_samples, np.float32))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.info.input_frame_samples
        await loop.run_in_executor(self._executor, self._warm_up)
        try:
            while True:
                frame = await recv_audio(self.track)
                if frame is None:
                    break
                self._pending = np.concatenate([self._pending, self._resample(frame)])
                while self._pending.shape[0] >= n:
                    chunk, self._pending = self._pending[:n], self._pending[n:]
                    await self._frame(loop, chunk)
            rest = np.concatenate([self._pending, self._resample(None)])
            for i in range(0, rest.shape[0], n):  # the last, zero-padded partial frame(s)
                await self._frame(loop, rest[i:i + n])
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
        index = self.session.stats.frames
        start = self._clock()
        if self.trace is not None:
            self.trace.mark("complete", index, start)
        encoded = await loop.run_in_executor(self._executor, self.session.encode_frame, pcm)
        done = self._clock()
        self.session.record_encode_ms((done - start) * 1e3)
        self._deadline.check(done - start, self.info.frame_ms / 1000, done)
        if self.trace is not None:
            self.trace.mark("encoded", index, done)
        self.session.send_frame(encoded)
        if self.trace is not None:
            self.trace.mark("sent", index, self._clock())
