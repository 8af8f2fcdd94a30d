"""Sender: any aiortc audio track -> 80 ms codec frames -> packets on a data channel."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..codecs.base import Codec
from ..packet import LossReport, PacketError, parse_packet
from ..transport.packetizer import Packetizer
from ..transport.redundancy import RedundancyController

__all__ = ["CodecSender", "SenderStats"]

logger = logging.getLogger(__name__)


@dataclass
class SenderStats:
    """What the sender did so far."""

    frames: int = 0
    """Frames encoded."""
    packets: int = 0
    """Packets sent."""
    payload_bytes: int = 0
    """Packet bytes handed to the data channel (headers of our format included)."""
    dtx_frames: int = 0
    """Silent frames not sent (DTX)."""
    redundancy: int = 0
    """Current K."""
    reports: int = 0
    """Loss reports received."""
    encode_ms_max: float = 0.0
    """Slowest frame encode."""


class CodecSender:
    """Reads ``track``, encodes 80 ms frames in a worker thread, sends packets via ``send``.

    Args:
        track: any aiortc audio track (MediaPlayer, microphone, a remote track, ...).
        codec: the frame codec.
        send: called with each packet's bytes (e.g. ``channel.send``); runs on the event loop.
        frames_per_packet: new frames bundled per packet.
        redundancy: initial K (redundant copies of previous frames per packet).
        adaptive: adapt K from the receiver's loss reports.
        dtx: send nothing during silence (a one-frame keep-alive every ``keepalive_frames``).
        vad_threshold_dbfs: frames quieter than this (RMS) count as silence for DTX.
        executor: worker for the encoder (default: a private single thread), so the event loop
            never blocks on the model.
    """

    def __init__(self, track: MediaStreamTrack, codec: Codec, send: Callable[[bytes], None], *,
                 frames_per_packet: int = 1, redundancy: int = 1, adaptive: bool = True,
                 dtx: bool = False, vad_threshold_dbfs: float = -50.0,
                 keepalive_frames: int = 12,
                 executor: concurrent.futures.Executor | None = None) -> None:
        if track.kind != "audio":
            raise ValueError(f"CodecSender needs an audio track, got kind={track.kind!r}")
        self.track = track
        self.codec = codec
        self.info = codec.info
        self._send = send
        self.packetizer = Packetizer(self.info.codec_id, frames_per_packet, redundancy)
        self.controller = RedundancyController(initial=redundancy) if adaptive else None
        self.dtx = dtx
        self.vad_level = 10.0 ** (vad_threshold_dbfs / 20.0)
        self.keepalive_frames = keepalive_frames
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="voip-codec-encode")
        self._own_executor = executor is None
        self._encoder = codec.new_encoder()
        self._resampler = av.AudioResampler(format="flt", layout="mono",
                                            rate=self.info.input_sample_rate,
                                            frame_size=self.info.input_frame_samples)
        self._task: asyncio.Task[None] | None = None
        self._silent_run = 0
        self.stats = SenderStats(redundancy=redundancy)
        self.finished = asyncio.Event()

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
        """Feed a data-channel message from the receiver (loss reports adapt K)."""
        if isinstance(data, str):
            return
        try:
            message = parse_packet(data)
        except PacketError as exc:
            logger.debug("sender: dropped bad control message: %s", exc)
            return
        if isinstance(message, LossReport):
            self.stats.reports += 1
            if self.controller is not None:
                self.packetizer.redundancy = self.controller.on_report(message)
                self.stats.redundancy = self.packetizer.redundancy

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.info.input_frame_samples
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                for out in self._resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1)[:n].astype(np.float32)
                    if pcm.shape[0] < n:
                        pcm = np.pad(pcm, (0, n - pcm.shape[0]))
                    await self._frame(loop, pcm)
            for out in self._resampler.resample(None):  # the last, zero-padded partial frame
                pcm = out.to_ndarray().reshape(-1)[:n].astype(np.float32)
                await self._frame(loop, np.pad(pcm, (0, n - pcm.shape[0])))
            data = self.packetizer.flush(end=True)
            if data is None and self.stats.frames:
                # nothing pending (the last packet is out, or the last frames were DTX-skipped):
                # announce the end with one silent frame
                silence = np.zeros(n, dtype=np.float32)
                payload = await loop.run_in_executor(self._executor, self._encoder.encode,
                                                     silence)
                data = self.packetizer.push(payload, silence=True, end=True)
            if data is not None:
                self._emit(data)
        finally:
            self.finished.set()

    async def _frame(self, loop: asyncio.AbstractEventLoop, pcm: np.ndarray) -> None:
        start = loop.time()
        payload = await loop.run_in_executor(self._executor, self._encoder.encode, pcm)
        self.stats.encode_ms_max = max(self.stats.encode_ms_max, (loop.time() - start) * 1e3)
        self.stats.frames += 1
        silent = float(np.sqrt(np.mean(pcm ** 2))) < self.vad_level
        if self.dtx and silent:
            self._silent_run += 1
            if self._silent_run % self.keepalive_frames != 1:
                # skip the frame: its index is consumed so the receiver's timeline stays right
                pending = self.packetizer.flush()
                if pending is not None:
                    self._emit(pending)
                self.packetizer.frame_index = (self.packetizer.frame_index + 1) & 0xFFFFFFFF
                self.stats.dtx_frames += 1
                return
        else:
            self._silent_run = 0
        data = self.packetizer.push(payload, silence=silent)
        if data is not None:
            self._emit(data)

    def _emit(self, data: bytes) -> None:
        try:
            self._send(data)
        except Exception as exc:  # noqa: BLE001 - a closed channel must not kill the sender
            logger.warning("sender: send failed: %s", exc)
            return
        self.stats.packets += 1
        self.stats.payload_bytes += len(data)
