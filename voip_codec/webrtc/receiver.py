"""Receiver: codec packets from a link -> an aiortc audio track (48 kHz, 20 ms frames).

Datagrams go to a :class:`~voip_codec.transport.session.ReceiveSession` as they arrive (it
classifies them, fills the jitter buffer, hands loss reports to its paired sender and sends its
own back). This module only adapts the session to aiortc: ``recv()`` is paced to real time by
the track itself (like aiortc's own audio sources): every 20 ms it returns one 960-sample frame
at 48 kHz with ``pts`` = running sample count and ``time_base`` = 1/48000. Every 80 ms of output
it asks the session for the next frame and decodes it in a worker thread; a missing frame is
concealed by the decoder (``decode(None)``). Before the first packet, and after the sender's
end-of-stream packet (``FLAG_END``) has been played out, it plays silence without counting it as
concealment, so the track never stalls. It can be recorded with aiortc's ``MediaRecorder`` or
relayed to a peer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import soxr
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..codecs.base import Codec
from ..transport.jitter import FrameSource, JitterBuffer, JitterConfig
from ..transport.link import CallbackLink
from ..transport.session import ReceiveSession, ReceiveStats

__all__ = ["CodecReceiverTrack"]


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
        link = (CallbackLink(send_report, name="receiver-reports")
                if send_report is not None else None)
        self.session = ReceiveSession(info, codec.new_decoder(), link, jitter=jitter,
                                      report_interval=report_interval, name="receiver")
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

    # ------------------------------------------------------------------ input
    def on_message(self, data: bytes | str) -> None:
        """Feed one received datagram to the session (the link's receiver; bad ones are counted
        and dropped, never raised; loss reports go to the session's paired sender)."""
        self.session.on_datagram(data, self._clock())

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
        played = self.session.tick(self._clock())
        if played.source in (FrameSource.BUFFERING, FrameSource.ENDED):
            # one output period of silence, not a whole codec frame: the session is asked
            # again 20 ms later, so playout starts within 20 ms of the first frame being due
            # instead of waiting for the next 80 ms boundary
            pcm = np.zeros(self._silence_samples, dtype=np.float32)
        else:
            loop = asyncio.get_running_loop()
            start = loop.time()
            pcm = await loop.run_in_executor(self._executor, self.session.decode, played)
            self.session.record_decode_ms((loop.time() - start) * 1e3)
            if self.frame0_sample is None and played.index is not None:
                per_frame = round(self.info.frame_ms * self.rate / 1000)
                self.frame0_sample = self._pushed - played.index * per_frame
        out = self._resampler.resample_chunk(np.asarray(pcm, dtype=np.float32))
        self._fifo = np.concatenate([self._fifo, out])
        self._pushed += out.shape[0]

    @property
    def ended(self) -> bool:
        """Whether the sender ended its stream (``FLAG_END``) and all of it has been played."""
        return self.session.ended

    def stop(self) -> None:
        """End the track; ``recv`` then raises MediaStreamError."""
        super().stop()
        if self._own_executor:
            self._executor.shutdown(wait=False)

    @property
    def receive_stats(self) -> ReceiveStats:
        """Jitter-buffer and playout counters (a snapshot of the session's)."""
        return self.session.stats

    def stats(self) -> dict[str, Any]:
        """:attr:`receive_stats` as a JSON-ready dict (what ``demo`` and ``call`` print)."""
        return self.session.stats.to_dict()
