"""Codec2 (via pycodec2) behind the frame codec contract, as a low-bitrate classical peer.

Codec2 works on 8 kHz speech in 40 ms frames (modes 700C, 1200, 1300, 1400, 1600) or 20 ms frames
(2400, 3200). One 80 ms frame of this contract is 2 or 4 Codec2 frames: the encoder resamples the
16 kHz input to 8 kHz with a streaming FIR (filter history carried between frames, so the result
does not depend on how the stream is cut), encodes each Codec2 frame separately (pycodec2 handles
exactly one Codec2 frame per call) and concatenates their bits MSB-first without padding; only
the last byte of the payload is zero-padded. 700C: 2 x 28 = 56 bits = 7 bytes per 80 ms.

The decoder reverses this and, by default, resamples back to 16 kHz with the same kind of
streaming FIR (``output_sample_rate=8000`` returns Codec2's own output). Lost frames are concealed
by :class:`~voip_codec.codecs.plc.ConcealingDecoder` (repeat the last payload with a fade).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..wire.bitpack import pack_tokens, unpack_tokens
from .base import Codec, CodecInfo, FrameDecoder, FrameEncoder, check_payload, check_pcm_frame
from .plc import ConcealingDecoder

__all__ = [
    "CODEC2_MODES",
    "Codec2Codec",
    "Codec2Encoder",
    "Codec2PayloadDecoder",
    "StreamingFIRResampler",
]

FRAME_MS = 80.0
INPUT_RATE = 16000
CODEC2_RATE = 8000


@dataclass(frozen=True)
class _Mode:
    pycodec2_mode: int
    """Mode key understood by ``pycodec2.Codec2``."""
    frame_ms: int
    """Duration of one Codec2 frame."""
    bits: int
    """Bits per Codec2 frame."""


CODEC2_MODES: dict[str, _Mode] = {
    "700C": _Mode(700, 40, 28),
    "1200": _Mode(1200, 40, 48),
    "1300": _Mode(1300, 40, 52),
    "1400": _Mode(1400, 40, 56),
    "1600": _Mode(1600, 40, 64),
    "2400": _Mode(2400, 20, 48),
    "3200": _Mode(3200, 20, 64),
}
"""Supported Codec2 modes (upper-case names) and their frame geometry."""


def _lowpass(num_taps: int, cutoff_hz: float, rate_hz: float) -> np.ndarray:
    """Kaiser-windowed sinc low-pass with unit DC gain, shape ``(num_taps,)``."""
    n = np.arange(num_taps) - (num_taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate_hz * n) * np.kaiser(num_taps, 8.0)
    return (h / h.sum()).astype(np.float64)


class StreamingFIRResampler:
    """Resample by a factor of 2 up or down, block by block, with carried filter history.

    Args:
        up: 2 to double the rate (zero-stuff, then filter), 1 otherwise.
        down: 2 to halve the rate (filter, then keep every other sample), 1 otherwise.
        num_taps: FIR length; the delay is ``(num_taps - 1) / 2`` samples at the higher rate.
    """

    def __init__(self, up: int, down: int, num_taps: int = 64) -> None:
        if (up, down) not in ((1, 2), (2, 1)):
            raise ValueError(f"only factor-2 resampling is supported, got up={up} down={down}")
        self.up, self.down = up, down
        self.taps = _lowpass(num_taps, 3700.0, 2 * CODEC2_RATE) * up
        self._history = np.zeros(num_taps - 1)
        self._phase = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample one block.

        Args:
            x: float samples, shape ``(n,)``.

        Returns:
            ``(n * up // down,)`` float32 samples (for ``down=2`` the count follows the carried
            phase, so odd blocks alternate between ``n // 2`` and ``n // 2 + 1``).
        """
        x = np.asarray(x, dtype=np.float64)
        if self.up == 2:
            stuffed = np.zeros(2 * x.shape[0])
            stuffed[::2] = x
            x = stuffed
        buf = np.concatenate([self._history, x])
        y = np.convolve(buf, self.taps, mode="valid")
        self._history = buf[buf.shape[0] - self._history.shape[0]:]
        if self.down == 2:
            y = y[self._phase::2]
            self._phase = (self._phase + x.shape[0]) % 2
        return y.astype(np.float32)

    def reset(self) -> None:
        """Clear the filter history."""
        self._history[:] = 0.0
        self._phase = 0


def _new_pycodec2(mode: _Mode):  # type: ignore[no-untyped-def]
    try:
        import pycodec2
    except ImportError as exc:
        raise ImportError("Codec2 needs pycodec2: pip install 'voip-codec[codec]' "
                          "(or pip install pycodec2)") from exc
    return pycodec2.Codec2(mode.pycodec2_mode)


class Codec2Encoder(FrameEncoder):
    """80 ms of 16 kHz PCM -> concatenated Codec2 frame bits."""

    def __init__(self, info: CodecInfo, mode: _Mode) -> None:
        self.info = info
        self._mode = mode
        self._c2 = _new_pycodec2(mode)
        self._resampler = StreamingFIRResampler(up=1, down=2)
        self._sub = int(CODEC2_RATE * mode.frame_ms / 1000)

    def encode(self, pcm: np.ndarray) -> bytes:
        """See :meth:`FrameEncoder.encode` (input 1280 samples at 16 kHz)."""
        frame = check_pcm_frame(pcm, self.info)
        narrow = self._resampler.process(frame)
        ints = np.clip(np.round(narrow * 32768.0), -32768, 32767).astype(np.int16)
        bits = []
        for start in range(0, ints.shape[0], self._sub):
            packed = self._c2.encode(np.ascontiguousarray(ints[start:start + self._sub]))
            bits.append(np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[:self._mode.bits])
        return pack_tokens(np.concatenate(bits), 1)

    def reset(self) -> None:
        """Start a new stream."""
        self._c2 = _new_pycodec2(self._mode)
        self._resampler.reset()


class Codec2PayloadDecoder:
    """Raw Codec2 payload decoder (no concealment): bits of 2 or 4 Codec2 frames -> PCM."""

    def __init__(self, info: CodecInfo, mode: _Mode) -> None:
        self.info = info
        self._mode = mode
        self._c2 = _new_pycodec2(mode)
        self._count = int(FRAME_MS // mode.frame_ms)
        self._resampler = (StreamingFIRResampler(up=2, down=1)
                           if info.output_sample_rate == INPUT_RATE else None)

    def decode_payload(self, payload: bytes) -> np.ndarray:
        """Decode one payload to ``(info.output_frame_samples,)`` float32 samples."""
        data = check_payload(payload, self.info)
        bits = unpack_tokens(data, 1, self._count * self._mode.bits).astype(np.uint8)
        parts = []
        for i in range(self._count):
            chunk = np.packbits(bits[i * self._mode.bits:(i + 1) * self._mode.bits]).tobytes()
            parts.append(self._c2.decode(chunk))
        pcm = np.concatenate(parts).astype(np.float32) / 32768.0
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return pcm

    def reset(self) -> None:
        """Start a new stream."""
        self._c2 = _new_pycodec2(self._mode)
        if self._resampler is not None:
            self._resampler.reset()


class Codec2Codec(Codec):
    """A Codec2 mode as an 80 ms frame codec (16 kHz in; 16 or 8 kHz out).

    Args:
        mode: one of :data:`CODEC2_MODES` (case-insensitive, e.g. ``"700C"``).
        codec_id: id carried in packet headers.
        output_sample_rate: 16000 (resampled, default) or 8000 (Codec2's native rate).
        name: registry name; defaults to ``"codec2-<mode>"`` in lower case.

    Raises:
        ValueError: unknown mode or unsupported output rate.
    """

    def __init__(self, mode: str = "700C", codec_id: int = 16, output_sample_rate: int = 16000,
                 name: str | None = None) -> None:
        key = mode.upper()
        if key not in CODEC2_MODES:
            raise ValueError(f"unknown Codec2 mode {mode!r}; choose one of "
                             f"{', '.join(CODEC2_MODES)}")
        if output_sample_rate not in (CODEC2_RATE, INPUT_RATE):
            raise ValueError(f"output_sample_rate must be {CODEC2_RATE} or {INPUT_RATE}, "
                             f"got {output_sample_rate}")
        self.mode = CODEC2_MODES[key]
        self.info = CodecInfo(
            name=name or f"codec2-{key.lower()}",
            codec_id=codec_id,
            frame_ms=FRAME_MS,
            bits_per_frame=int(FRAME_MS // self.mode.frame_ms) * self.mode.bits,
            input_sample_rate=INPUT_RATE,
            output_sample_rate=output_sample_rate,
        )
        _new_pycodec2(self.mode)  # fail early when pycodec2 is missing

    def new_encoder(self) -> Codec2Encoder:
        """A fresh encoder."""
        return Codec2Encoder(self.info, self.mode)

    def new_decoder(self) -> FrameDecoder:
        """A fresh decoder with repeat-and-fade concealment for ``decode(None)``."""
        return ConcealingDecoder(self.new_payload_decoder())

    def new_payload_decoder(self) -> Codec2PayloadDecoder:
        """A fresh raw decoder without concealment."""
        return Codec2PayloadDecoder(self.info, self.mode)

