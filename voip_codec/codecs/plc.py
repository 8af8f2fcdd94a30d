"""Packet-loss concealment behind a replaceable interface.

A :class:`Concealer` sees the last good payloads and how many frames in a row are missing, and
proposes a substitute payload plus an output gain. The default :class:`RepeatFadeConcealer`
repeats the last good payload (for FocalCodec this is concealment in the token domain: the
stateful decoder keeps running on repeated tokens) and fades: -6 dB per lost frame, muted from
the 5th lost frame on. A learned predictor (e.g. a token model) can replace it by implementing
:meth:`Concealer.conceal`.

:class:`ConcealingDecoder` turns any raw payload decoder (``decode_payload(bytes)``) into a
:class:`~voip_codec.codecs.base.FrameDecoder` whose ``decode(None)`` conceals one lost frame.
Gains never jump: each output frame is multiplied by a linear ramp from the previous frame's end
gain to the new gain, so fading out, muting and the return to full level after a loss (ramped
back to 1 within the first good frame) are click-free.
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .base import CodecInfo, FrameDecoder, check_payload

__all__ = [
    "Concealer",
    "Concealment",
    "ConcealingDecoder",
    "PayloadDecoder",
    "RepeatFadeConcealer",
]


class PayloadDecoder(Protocol):
    """A raw stateful decoder without loss handling (e.g. ``FocalCodecFrameDecoder``)."""

    info: CodecInfo

    def decode_payload(self, payload: bytes) -> np.ndarray:
        """Decode one ``info.bytes_per_frame``-byte payload to ``(info.output_frame_samples,)``
        float32 samples."""
        ...

    def reset(self) -> None:
        """Forget all stream state."""
        ...


@dataclass(frozen=True)
class Concealment:
    """What to play for one lost frame."""

    payload: bytes | None
    """Substitute payload to run through the decoder, or None to output silence without
    touching the decoder state."""
    gain: float
    """Linear output gain to reach by the end of this frame, in [0, 1]."""


class Concealer(abc.ABC):
    """Strategy that proposes a substitute for a lost frame."""

    @abc.abstractmethod
    def conceal(self, history: Sequence[bytes], lost_count: int) -> Concealment:
        """Propose what to play for a lost frame.

        Args:
            history: the last good payloads, oldest first (may be empty at stream start).
            lost_count: 1 for the first frame of a loss burst, 2 for the second, ...

        Returns:
            The substitute payload and the gain to reach at the end of the frame.
        """

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless concealers need nothing
        """Forget stream state (default: nothing to forget)."""


class RepeatFadeConcealer(Concealer):
    """Repeat the last good payload while fading out, then mute.

    Args:
        fade_db: attenuation per lost frame in dB (default 6 dB, i.e. the gain halves).
        mute_after: number of lost frames after which the output is silent (default 4: the
            4th lost frame fades to 0 and later ones stay at 0).
    """

    def __init__(self, fade_db: float = 6.0, mute_after: int = 4) -> None:
        if fade_db <= 0:
            raise ValueError(f"fade_db must be > 0 dB, got {fade_db}")
        if mute_after < 1:
            raise ValueError(f"mute_after must be >= 1 frame, got {mute_after}")
        self.fade_db = fade_db
        self.mute_after = mute_after

    def conceal(self, history: Sequence[bytes], lost_count: int) -> Concealment:
        """See :meth:`Concealer.conceal`."""
        if lost_count < 1:
            raise ValueError(f"lost_count must be >= 1, got {lost_count}")
        gain = 0.0 if lost_count >= self.mute_after else 10.0 ** (-self.fade_db * lost_count / 20)
        return Concealment(payload=history[-1] if history else None, gain=gain)


class ConcealingDecoder(FrameDecoder):
    """Adds ``decode(None)`` concealment and click-free gain ramps to a raw payload decoder.

    Args:
        raw: the codec's payload decoder.
        concealer: concealment strategy (default :class:`RepeatFadeConcealer`).
        history: how many good payloads to keep for the concealer.
    """

    def __init__(self, raw: PayloadDecoder, concealer: Concealer | None = None,
                 history: int = 8) -> None:
        if history < 1:
            raise ValueError(f"history must keep at least 1 payload, got {history}")
        self.raw = raw
        self.info = raw.info
        self.concealer = concealer if concealer is not None else RepeatFadeConcealer()
        self._history: deque[bytes] = deque(maxlen=history)
        self._lost = 0
        self._gain = 1.0
        self.concealed_frames = 0
        """Number of frames concealed since the last reset."""

    @property
    def lost_in_a_row(self) -> int:
        """Consecutive lost frames so far (0 after a good frame)."""
        return self._lost

    def decode(self, payload: bytes | None) -> np.ndarray:
        """Decode one frame or conceal one lost frame (``payload=None``).

        Args:
            payload: ``info.bytes_per_frame`` bytes, or None for a lost frame.

        Returns:
            ``(info.output_frame_samples,)`` float32 samples at ``info.output_sample_rate``.

        Raises:
            CodecError: if ``payload`` has the wrong size.
        """
        n = self.info.output_frame_samples
        if payload is not None:
            data = check_payload(payload, self.info)
            pcm = np.asarray(self.raw.decode_payload(data), dtype=np.float32)
            self._history.append(data)
            self._lost = 0
            target = 1.0
        else:
            self._lost += 1
            self.concealed_frames += 1
            sub = self.concealer.conceal(tuple(self._history), self._lost)
            if sub.payload is not None:
                pcm = np.asarray(self.raw.decode_payload(check_payload(sub.payload, self.info)),
                                 dtype=np.float32)
            else:
                pcm = np.zeros(n, dtype=np.float32)
            target = float(min(max(sub.gain, 0.0), 1.0))
        start = self._gain
        self._gain = target
        if start == 1.0 and target == 1.0:
            return pcm
        ramp = np.linspace(start, target, n, endpoint=True, dtype=np.float32)
        return (pcm * ramp).astype(np.float32)

    def reset(self) -> None:
        """Start a new stream."""
        self.raw.reset()
        self.concealer.reset()
        self._history.clear()
        self._lost = 0
        self._gain = 1.0
        self.concealed_frames = 0
