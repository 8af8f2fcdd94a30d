"""Audio sources for the benchmarks' real-time calls: 48 kHz mono tracks of 20 ms frames."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = ["FRAME", "RATE", "PacedTrack"]

RATE = 48000
"""Sample rate of the tracks, Hz."""
FRAME = 960
"""Samples per frame (20 ms)."""


class PacedTrack(MediaStreamTrack):
    """``frames`` frames of 20 ms at 48 kHz, handed out at ``speed`` x real time from the first
    ``recv``; a subclass says what each frame holds (:meth:`frame_pcm`). With
    ``record_handover`` the time each frame was handed out is kept in :attr:`handover` (a list
    that grows with the call, so only for short ones).
    """

    kind = "audio"

    def __init__(self, frames: int, speed: float = 1.0, record_handover: bool = False) -> None:
        super().__init__()
        self.total = frames
        self.speed = speed
        self.index = 0
        self.t0: float | None = None
        self.record_handover = record_handover
        self.handover: list[float] = []
        """``time.monotonic()`` at which each frame was handed out (with ``record_handover``)."""

    def frame_pcm(self, index: int) -> np.ndarray:
        """Float samples (``FRAME`` of them, nominally within [-1, 1]) of frame ``index``."""
        raise NotImplementedError

    async def recv(self) -> av.AudioFrame:
        if self.index >= self.total:
            raise MediaStreamError
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        wait = self.t0 + self.index * FRAME / RATE / self.speed - now
        if wait > 0:
            await asyncio.sleep(wait)
        pcm = np.clip(self.frame_pcm(self.index), -1, 1)
        frame = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16).reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate, frame.pts = RATE, self.index * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        if self.record_handover:
            self.handover.append(time.monotonic())
        self.index += 1
        return frame
