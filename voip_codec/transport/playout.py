"""The receiver's output queue: decoded audio waiting to be played, served in small reads.

Frames are decoded the moment they become playable and their audio is appended here; the
output device (an aiortc track, a sound card callback, a simulation) takes ``n`` samples at a
time with :meth:`PlayoutQueue.read`. The queue's depth is therefore the part of the playout delay
that sits after the decoder; it is kept near the jitter buffer's target because the receive
session decodes a frame early only when it is already there, and conceals only when a read
would otherwise run dry (see :meth:`~voip_codec.transport.session.ReceiveSession.poll`).

The queue also remembers where each frame's first sample lies in the output stream, so a read
can say which frames started playing in it (the "ear" timestamps of the latency budget).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["PlayoutQueue", "ReadResult"]


@dataclass(frozen=True)
class ReadResult:
    """What one :meth:`PlayoutQueue.read` returned."""

    pcm: np.ndarray
    """float32 mono samples, shape ``(n,)`` (zero-filled where the queue ran dry)."""
    missing: int
    """Samples that had to be zero-filled (0 when the queue held enough)."""
    starts: list[tuple[int, int]]
    """``(frame index, sample offset in pcm)`` of every frame whose first sample is in ``pcm``."""


class PlayoutQueue:
    """A FIFO of decoded samples at the output rate.

    Args:
        sample_rate: rate of the samples pushed and read, Hz.
    """

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        self.sample_rate = sample_rate
        self._chunks: deque[np.ndarray] = deque()
        self._queued = 0
        self._written = 0  # samples ever pushed (stream position of the queue's tail)
        self._read_pos = 0  # samples ever read out of the queue (stream position of the head)
        self._starts: deque[tuple[int, int]] = deque()  # (stream position, frame index)
        self.underrun_samples = 0
        """Samples zero-filled because the queue ran dry after the first push."""
        self.trimmed_samples = 0
        """Samples dropped by :meth:`trim` (the delay shrunk in silence)."""

    @property
    def queued(self) -> int:
        """Samples waiting to be played."""
        return self._queued

    @property
    def queued_seconds(self) -> float:
        """Seconds of audio waiting to be played."""
        return self._queued / self.sample_rate

    def push(self, pcm: np.ndarray, index: int | None = None, first_sample_at: int = 0) -> None:
        """Append decoded audio.

        Args:
            pcm: float32 mono samples at ``sample_rate``, shape ``(n,)``.
            index: frame index whose audio this is (None for audio of no particular frame).
            first_sample_at: offset in ``pcm`` (may be past its end) of the frame's first sample:
                a streaming resampler holds back a few samples, so a frame starts a little after
                the audio it hands out with the frame.
        """
        arr = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if index is not None:
            self._starts.append((self._written + first_sample_at, index))
        if arr.shape[0]:
            self._chunks.append(arr)
            self._queued += arr.shape[0]
            self._written += arr.shape[0]

    def read(self, n: int) -> ReadResult:
        """Take the next ``n`` samples (zeros where the queue runs dry)."""
        out = np.zeros(n, dtype=np.float32)
        got = 0
        while got < n and self._chunks:
            head = self._chunks[0]
            take = min(n - got, head.shape[0])
            out[got:got + take] = head[:take]
            got += take
            if take == head.shape[0]:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        self._queued -= got
        missing = n - got
        if missing and self._written:
            self.underrun_samples += missing
        start = self._read_pos
        self._read_pos += got
        starts = []
        while self._starts and self._starts[0][0] < self._read_pos:
            pos, index = self._starts.popleft()
            starts.append((index, max(0, pos - start)))
        return ReadResult(out, missing, starts)

    def trim(self, n: int, level: float) -> int:
        """Drop up to ``n`` samples from the head if all of them are quieter than ``level``.

        Used to shrink the playout delay in silence without a click: only a stretch whose
        peak is below ``level`` is dropped, whole.

        Returns:
            Samples dropped (0 or ``n``).
        """
        if n <= 0 or self._queued < n:
            return 0
        peek = np.concatenate(list(self._chunks))[:n] if len(self._chunks) > 1 \
            else self._chunks[0][:n]
        if float(np.max(np.abs(peek), initial=0.0)) >= level:
            return 0
        self.read(n)
        self.trimmed_samples += n
        return n

    def clear(self) -> None:
        """Drop everything queued (positions of frames not yet played are forgotten)."""
        self._chunks.clear()
        self._read_pos += self._queued
        self._queued = 0
        self._starts.clear()
