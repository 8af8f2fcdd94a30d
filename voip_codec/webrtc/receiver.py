"""Receiver: codec packets from a link -> an aiortc audio track (48 kHz, 20 ms frames).

Datagrams go to a :class:`~voip_codec.transport.session.ReceiveSession` as they arrive (it
classifies them, fills the jitter buffer, hands loss reports to its paired sender and sends its
own back). This module only adapts the session to aiortc:

* **decode on arrival**: when a datagram makes the next frame playable, the frame is decoded at
  once in a worker thread, resampled to 48 kHz and appended to the session's output queue;
* **play on demand**: ``recv()`` is paced to real time by the track itself (like aiortc's own
  audio sources) and every 20 ms takes one 960-sample frame from that queue, with ``pts`` =
  running sample count and ``time_base`` = 1/48000. Only when the queue would run dry does it
  ask the session for the frame due (which conceals it, ``decode(None)``, if it is missing).

Before the first packet, and after the sender's end-of-stream packet (``FLAG_END``) has been
played out, it plays silence without counting it as concealment, so the track never stalls. It
can be recorded with aiortc's ``MediaRecorder`` or relayed to a peer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..codecs.base import Codec
from ..transport.jitter import JitterBuffer, JitterConfig, PlayoutFrame
from ..transport.link import CallbackLink
from ..transport.session import ReceiveSession, ReceiveStats
from ..transport.trace import DeadlineWarner, FrameTrace

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
        trace: per-frame timestamps (``arrived`` ... ``played``) for the latency budget.
    """

    kind = "audio"

    def __init__(self, codec: Codec, *, jitter: JitterConfig | None = None,
                 sample_rate: int = 48000, ptime_ms: int = 20,
                 send_report: Callable[[bytes], None] | None = None, report_interval: int = 12,
                 executor: concurrent.futures.Executor | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 trace: FrameTrace | None = None) -> None:
        super().__init__()
        info = codec.info
        self.info = info
        self._codec = codec
        link = (CallbackLink(send_report, name="receiver-reports")
                if send_report is not None else None)
        self.session = ReceiveSession(info, codec.new_decoder(), link, jitter=jitter,
                                      report_interval=report_interval,
                                      output_sample_rate=sample_rate, trace=trace,
                                      name="receiver")
        self.trace = trace
        self.rate = sample_rate
        self.samples_per_frame = sample_rate * ptime_ms // 1000
        # av's resampler (libswresample) streams with a delay of about a millisecond and keeps
        # its output aligned; soxr's high-quality stream hands out audio in 35 ms blocks
        self._resampler = (av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
                           if info.output_sample_rate != sample_rate else None)
        self._in_samples = 0  # decoder samples resampled so far (worker thread only)
        self._out_samples = 0  # output samples they gave
        self._pts = 0
        self._t0: float | None = None
        self._clock = clock
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="voip-codec-decode")
        self._own_executor = executor is None
        self._decode_lock = asyncio.Lock()
        self._drain_task: asyncio.Task[None] | None = None
        self._deadline = DeadlineWarner(logger, "receiver: decoding a frame")
        self._decode_s: deque[float] = deque(maxlen=32)  # recent decode times, seconds
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._executor.submit(self._warm_up)
        self.frame0_sample: int | None = None
        """Output sample (at ``sample_rate``) where the audio of frame 0 begins, once known."""

    @property
    def buffer(self) -> JitterBuffer:
        """The session's jitter buffer."""
        return self.session.buffer

    @property
    def frames_played(self) -> int:
        """Frames played so far (decoded or concealed)."""
        return self.session.frames_played

    @property
    def last_index_played(self) -> int:
        """Highest frame index played so far (decoded or concealed); -1 before the first."""
        return self.session.last_index_played

    @property
    def resampler_delay_s(self) -> float:
        """Delay the output resampler adds, seconds (audio it holds back; 0 without one)."""
        expected = self._in_samples * self.rate / self.info.output_sample_rate
        return max(0.0, expected - self._out_samples) / self.rate

    # ------------------------------------------------------------------ input
    def on_message(self, data: bytes | str) -> None:
        """Feed one received datagram to the session (the link's receiver; bad ones are counted
        and dropped, never raised; loss reports go to the session's paired sender). A frame it
        makes playable is decoded at once."""
        self.session.on_datagram(data, self._clock())
        if self.session.buffer.playable and self.readyState == "live":
            self._kick()

    def _schedule_deadline(self) -> None:
        """Decide about the next frame at its deadline (the queue then holds just :attr:`lead_s`
        of audio), so that its audio, decoded or concealed if it is missing, is ready in time;
        it is decoded earlier if it arrives earlier."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if not self.session.buffer.started:
            return
        slack = self.session.output.queued_seconds - self.lead_s
        if slack <= 0:
            self._kick(urgent=True)
        else:
            loop = asyncio.get_running_loop()
            self._deadline_timer = loop.call_later(slack, self._kick, True)

    def _kick(self, urgent: bool = False) -> None:
        if self._drain_task is not None and not self._drain_task.done() and not urgent:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed outside an event loop: recv() decodes on demand
            return
        self._drain_task = loop.create_task(self._drain(urgent=urgent))

    def _warm_up(self) -> None:
        """Worker thread: run a throwaway decoder once (the model's lazy set-up), so the first
        real frame is decoded at its usual speed."""
        self._codec.new_decoder().decode(None)

    @property
    def lead_s(self) -> float:
        """How long before it is heard a frame must be here: the time a decode takes (90th
        percentile of the recent ones) plus 5 ms for the event loop."""
        decode = float(np.percentile(self._decode_s, 90)) if self._decode_s else 0.0
        return decode + 0.005

    async def _drain(self, urgent: bool) -> None:
        """Decode what the session hands out: every playable frame, and with ``urgent`` (the
        queue holds less than :attr:`lead_s`) the due frame even if it must be concealed."""
        async with self._decode_lock:
            while self.readyState == "live":
                lead = self.lead_s
                if urgent and self.session.output.queued_seconds >= lead + 0.003:
                    urgent = False  # enough queued: go on with the frames already here
                frame = self.session.poll(self._clock(), urgent=urgent, lead=lead)
                if frame is None:
                    break
                await self._decode(frame)

    def _decode_resample(self, frame: PlayoutFrame) -> tuple[np.ndarray, int]:
        """Worker thread: decode (or conceal) one frame and resample it to the output rate.

        Returns:
            The samples and the offset in them of the frame's first sample.
        """
        pcm = np.asarray(self.session.decode(frame), dtype=np.float32)
        if self._resampler is None:
            return pcm, 0
        start = round(self._in_samples * self.rate / self.info.output_sample_rate)
        lead = start - self._out_samples
        src = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="flt", layout="mono")
        src.sample_rate = self.info.output_sample_rate
        src.pts = self._in_samples
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(src)]
        res = np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
        self._in_samples += pcm.shape[0]
        self._out_samples += res.shape[0]
        return res.astype(np.float32, copy=False), lead

    async def _decode(self, frame: PlayoutFrame) -> None:
        loop = asyncio.get_running_loop()
        start = self._clock()
        pcm, lead = await loop.run_in_executor(self._executor, self._decode_resample, frame)
        now = self._clock()
        self.session.record_decode_ms((now - start) * 1e3)
        self._decode_s.append(now - start)
        self._deadline.check(now - start, self.info.frame_ms / 1000, now)
        if self.trace is not None and frame.index is not None:
            self.trace.mark("decoded", frame.index, now)
            self.trace.mark("queued", frame.index, now)
        self.session.output.push(pcm, frame.index, lead)

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
        self.session.trim_output(self.samples_per_frame)  # shrink in silence
        if self.session.output.queued < self.samples_per_frame:
            await self._drain(urgent=True)
        if self.readyState != "live":
            raise MediaStreamError
        got = self.session.output.read(self.samples_per_frame)
        self._schedule_deadline()
        now = self._clock()
        for index, offset in got.starts:
            if self.trace is not None:
                self.trace.mark("played", index, now + offset / self.rate)
            if self.frame0_sample is None:
                per_frame = round(self.info.frame_ms * self.rate / 1000)
                self.frame0_sample = self._pts + offset - index * per_frame
        pcm16 = (np.clip(got.pcm, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm16.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pts += self.samples_per_frame
        return frame

    @property
    def ended(self) -> bool:
        """Whether the sender ended its stream (``FLAG_END``) and all of it has been played."""
        return self.session.ended and self.session.output.queued == 0

    def stop(self) -> None:
        """End the track; ``recv`` then raises MediaStreamError."""
        super().stop()
        if self._drain_task is not None:
            self._drain_task.cancel()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if self._own_executor:
            self._executor.shutdown(wait=False)

    @property
    def receive_stats(self) -> ReceiveStats:
        """Jitter-buffer and playout counters (a snapshot of the session's)."""
        return self.session.stats

    def stats(self) -> dict[str, Any]:
        """:attr:`receive_stats` as a JSON-ready dict (what ``demo`` and ``call`` print)."""
        return self.session.stats.to_dict()
