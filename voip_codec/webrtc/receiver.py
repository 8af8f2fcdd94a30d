"""Receiver: codec packets from a data channel -> an aiortc audio track (48 kHz, 20 ms frames).

Packets are pushed into the jitter buffer as they arrive. ``recv()`` is paced to real time by the
track itself (like aiortc's own audio sources): every 20 ms it returns one 960-sample frame at
48 kHz with ``pts`` = running sample count and ``time_base`` = 1/48000. Every 80 ms of output it
asks the jitter buffer for the next frame and decodes it in a worker thread; a missing frame is
concealed by the decoder (``decode(None)``). Before the first packet, and after the sender's
end-of-stream packet (``FLAG_END``) has been played out, it plays silence without counting it as
concealment, so the track never stalls. It can be recorded with aiortc's ``MediaRecorder`` or relayed to a peer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import soxr
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..codecs.base import Codec
from ..packet import is_loss_report
from ..transport.jitter import FrameSource, JitterBuffer, JitterConfig
from ..transport.redundancy import LossStatistics

__all__ = ["CodecReceiverTrack"]

logger = logging.getLogger(__name__)


class CodecReceiverTrack(MediaStreamTrack):
    """An audio track fed by codec packets.

    Args:
        codec: the frame codec (must match the sender's).
        jitter: jitter buffer settings (frame size and codec id are taken from the codec).
        sample_rate: output rate (48000 for WebRTC).
        ptime_ms: output frame duration (20 ms).
        send_report: called with loss-report bytes every ``report_interval`` frames (e.g. the
            data channel's ``send``), so the sender can adapt its redundancy.
        executor: worker for the decoder (default: a private single thread).
        clock: monotonic clock in seconds (tests may pass their own).
    """

    kind = "audio"

    def __init__(self, codec: Codec, *, jitter: JitterConfig | None = None,
                 sample_rate: int = 48000, ptime_ms: int = 20,
                 send_report: Callable[[bytes], None] | None = None, report_interval: int = 12,
                 executor: concurrent.futures.Executor | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        info = codec.info
        self.info = info
        cfg = jitter if jitter is not None else JitterConfig()
        self.buffer = JitterBuffer(JitterConfig(**{**cfg.__dict__, "frame_ms": info.frame_ms,
                                                   "codec_id": info.codec_id,
                                                   "frame_bytes": info.bytes_per_frame}))
        self.decoder = codec.new_decoder()
        self.rate = sample_rate
        self.samples_per_frame = sample_rate * ptime_ms // 1000
        self._silence_samples = max(1, info.output_sample_rate * ptime_ms // 1000)
        self._resampler = soxr.ResampleStream(info.output_sample_rate, sample_rate, 1,
                                              dtype="float32")
        self._fifo = np.zeros(0, dtype=np.float32)
        self._pushed = 0
        self._pts = 0
        self._t0: float | None = None
        self._clock = clock
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="voip-codec-decode")
        self._own_executor = executor is None
        self._send_report = send_report
        self._report_interval = report_interval
        self._ticks = 0
        self.loss = LossStatistics()
        self.frame0_sample: int | None = None
        """Output sample (at ``sample_rate``) where the audio of frame 0 begins, once known."""
        self.decode_ms_max = 0.0
        self.frames_played = 0
        self.last_index_played = -1
        """Highest frame index played so far (decoded or concealed); -1 before the first."""

    # ------------------------------------------------------------------ input
    def on_message(self, data: bytes | str) -> None:
        """Feed one data-channel message (bad ones are counted and dropped, never raised)."""
        if isinstance(data, str):
            self.buffer.stats.invalid += 1
            return
        if is_loss_report(data):  # a report travelling the other way: not for the player
            return
        packet = self.buffer.push(data, self._clock())
        if packet is not None:
            self.loss.on_packet(packet.seq)

    # ------------------------------------------------------------------ output
    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, paced to real time."""
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        wait = self._t0 + self._pts / self.rate - now
        if wait > 0:
            await asyncio.sleep(wait)
        while self._fifo.shape[0] < self.samples_per_frame:
            await self._tick()
            if self.readyState != "live":
                raise MediaStreamError
        samples, self._fifo = (self._fifo[:self.samples_per_frame],
                               self._fifo[self.samples_per_frame:])
        pcm16 = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self.samples_per_frame
        return frame

    async def _tick(self) -> None:
        played = self.buffer.tick(self._clock())
        if played.source in (FrameSource.BUFFERING, FrameSource.ENDED):
            # one output period of silence, not a whole codec frame: the jitter buffer is asked
            # again 20 ms later, so playout starts within 20 ms of the first frame being due
            # instead of waiting for the next 80 ms boundary
            pcm = np.zeros(self._silence_samples, dtype=np.float32)
        else:
            self._ticks += 1
            loop = asyncio.get_running_loop()
            start = loop.time()
            pcm = await loop.run_in_executor(self._executor, self.decoder.decode, played.payload)
            self.decode_ms_max = max(self.decode_ms_max, (loop.time() - start) * 1e3)
            self.loss.on_tick(played.payload is None)
            if self.frame0_sample is None and played.index is not None:
                per_frame = round(self.info.frame_ms * self.rate / 1000)
                self.frame0_sample = self._pushed - played.index * per_frame
            self.frames_played += 1
            if played.index is not None:
                self.last_index_played = max(self.last_index_played, played.index)
            if self._send_report is not None and self._ticks % self._report_interval == 0:
                self._report()
        out = self._resampler.resample_chunk(np.asarray(pcm, dtype=np.float32))
        self._fifo = np.concatenate([self._fifo, out])
        self._pushed += out.shape[0]

    def _report(self) -> None:
        assert self._send_report is not None
        report = self.loss.make_report(self.buffer.stats.jitter_ms,
                                       self.buffer.stats.current_delay_ms)
        if report is not None:
            try:
                self._send_report(report.to_bytes())
            except Exception as exc:  # noqa: BLE001 - a closed channel must not stop audio
                logger.debug("receiver: report not sent: %s", exc)

    @property
    def ended(self) -> bool:
        """Whether the sender ended its stream (``FLAG_END``) and all of it has been played."""
        return self.buffer.ended

    def stop(self) -> None:
        """End the track; ``recv`` then raises MediaStreamError."""
        super().stop()
        if self._own_executor:
            self._executor.shutdown(wait=False)

    def stats(self) -> dict[str, Any]:
        """Jitter-buffer and playout counters."""
        s = self.buffer.stats
        return {
            "packets_received": s.packets_received, "frames_received": s.frames_received,
            "recovered_from_redundancy": s.recovered_from_redundancy, "concealed": s.concealed,
            "late": s.late, "duplicate": s.duplicate, "invalid": s.invalid,
            "playout_delay_ms": round(s.current_delay_ms, 1),
            "target_delay_ms": round(s.target_delay_ms, 1), "jitter_ms": round(s.jitter_ms, 1),
            "frames_played": self.frames_played, "decode_ms_max": round(self.decode_ms_max, 2),
            "ended": self.buffer.ended,
        }
