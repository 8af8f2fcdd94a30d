"""Per-frame timestamps through the pipeline, and a rate-limited deadline warning.

A :class:`FrameTrace` records, for each frame index, the first time it passed each stage
(``complete``: its 80 ms of audio were captured; ``encoded``; ``sent``; ``arrived``;
``decode``: popped from the jitter buffer; ``decoded``; ``queued``: in the output queue;
``played``: its first sample left the output). When both ends of a call run in one process on
one clock (the latency benchmark), the differences between consecutive stages are the latency
budget; the sessions and tracks record into the trace they are given and do nothing otherwise.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

__all__ = ["STAGES", "DeadlineWarner", "FrameTrace"]

STAGES: tuple[str, ...] = ("complete", "encoded", "sent", "arrived", "decode", "decoded",
                           "queued", "played")
"""Stage names in pipeline order."""


class FrameTrace:
    """First time (seconds, one monotonic clock) each frame reached each stage.

    Args:
        max_frames: frames remembered (oldest forgotten first), so a long call stays bounded.
    """

    def __init__(self, max_frames: int = 4096) -> None:
        self.max_frames = max_frames
        self._frames: OrderedDict[int, dict[str, float]] = OrderedDict()
        self.stretches: Counter[int] = Counter()
        """Frame index -> playout ticks the receiver waited for that frame (stretches: each
        one is a concealed period that grew the delay)."""

    def mark(self, stage: str, index: int, t: float) -> None:
        """Record that frame ``index`` reached ``stage`` at ``t`` (later repeats are ignored).

        Raises:
            ValueError: unknown stage.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        row = self._frames.get(index)
        if row is None:
            row = self._frames[index] = {}
            while len(self._frames) > self.max_frames:
                self._frames.popitem(last=False)
        row.setdefault(stage, t)

    def stretch(self, index: int) -> None:
        """Record one tick spent waiting for frame ``index`` (a stretch)."""
        self.stretches[index] += 1
        while len(self.stretches) > self.max_frames:
            del self.stretches[min(self.stretches)]

    def get(self, index: int) -> dict[str, float]:
        """The stages frame ``index`` reached, with their times (empty if unknown)."""
        return dict(self._frames.get(index, {}))

    def complete_frames(self) -> list[int]:
        """Indices of the remembered frames that reached every stage, ascending."""
        return sorted(i for i, row in self._frames.items() if len(row) == len(STAGES))


class DeadlineWarner:
    """Logs one warning line when a frame misses its real-time deadline, at most once per
    ``interval_s`` (the line counts the misses since the last one).

    Args:
        logger: where the warning goes.
        what: the kind of work, e.g. ``"encode"``.
        interval_s: least time between two warnings.
    """

    def __init__(self, logger: logging.Logger, what: str, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.what = what
        self.interval_s = interval_s
        self.missed = 0
        """Deadlines missed so far."""
        self._unreported = 0
        self._last: float | None = None

    def check(self, took_s: float, budget_s: float, now: float) -> bool:
        """Note one frame's work; warn if it took longer than its budget.

        Args:
            took_s: how long the work took, seconds.
            budget_s: the real-time budget, seconds.
            now: clock for the rate limit, seconds.

        Returns:
            Whether the deadline was missed.
        """
        if took_s <= budget_s:
            return False
        self.missed += 1
        self._unreported += 1
        if self._last is None or now - self._last >= self.interval_s:
            self.logger.warning(
                "%s missed its real-time deadline %d time(s): %.0f ms for a %.0f ms frame "
                "(the machine is overloaded, or --threads asks for more cores than are free)",
                self.what, self._unreported,
                took_s * 1e3, budget_s * 1e3)
            self._last = now
            self._unreported = 0
        return True
