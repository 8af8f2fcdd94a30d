"""``pcm16``: a lossless reference codec (raw 16-bit PCM) for transport tests.

Not a speech codec: 80 ms of 16 kHz audio as 1280 big-endian int16 samples (2560 bytes, 256 kbps).
It makes transport behaviour (timing, reordering, redundancy) exactly checkable because a decoded
frame equals its input up to 16-bit quantisation. Lost frames are concealed by the generic
:class:`~voip_codec.codecs.plc.ConcealingDecoder`.
"""

from __future__ import annotations

import numpy as np

from .base import Codec, CodecInfo, FrameDecoder, FrameEncoder, check_payload, check_pcm_frame
from .plc import ConcealingDecoder

__all__ = ["Pcm16Codec", "Pcm16Encoder", "Pcm16PayloadDecoder"]


class Pcm16Encoder(FrameEncoder):
    """float32 frame -> big-endian int16 bytes (stateless)."""

    def __init__(self, info: CodecInfo) -> None:
        self.info = info

    def encode(self, pcm: np.ndarray) -> bytes:
        """See :meth:`FrameEncoder.encode`."""
        frame = check_pcm_frame(pcm, self.info)
        ints = np.clip(np.round(frame * 32768.0), -32768, 32767).astype(">i2")
        return ints.tobytes()

    def reset(self) -> None:
        """Nothing to reset."""


class Pcm16PayloadDecoder:
    """Big-endian int16 bytes -> float32 frame (stateless, no concealment)."""

    def __init__(self, info: CodecInfo) -> None:
        self.info = info

    def decode_payload(self, payload: bytes) -> np.ndarray:
        """Decode one payload to ``(info.output_frame_samples,)`` float32 samples."""
        data = check_payload(payload, self.info)
        return (np.frombuffer(data, dtype=">i2").astype(np.float32) / 32768.0)

    def reset(self) -> None:
        """Nothing to reset."""


class Pcm16Codec(Codec):
    """Lossless 16-bit PCM at 16 kHz in 80 ms frames (reference for tests).

    Args:
        codec_id: id carried in packet headers.
    """

    def __init__(self, codec_id: int = 1) -> None:
        self.info = CodecInfo(name="pcm16", codec_id=codec_id, frame_ms=80.0,
                              bits_per_frame=1280 * 16, input_sample_rate=16000,
                              output_sample_rate=16000)

    def new_encoder(self) -> Pcm16Encoder:
        """A fresh encoder."""
        return Pcm16Encoder(self.info)

    def new_decoder(self) -> FrameDecoder:
        """A decoder with repeat-and-fade concealment."""
        return ConcealingDecoder(Pcm16PayloadDecoder(self.info))
