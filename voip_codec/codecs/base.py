"""The codec contract shared by every transport: frame -> bits -> frame.

A *frame* is a fixed stretch of audio (80 ms for FocalCodec-Stream). A codec turns one frame of
PCM into ``bits_per_frame`` bits, carried as ``bytes_per_frame`` bytes (bits packed MSB-first,
the last byte zero-padded), and back. The transport never looks inside those bytes.

Decoders follow the libopus convention: ``decode(None)`` means "this frame was lost" and must be
called once per missing frame so that decoder state stays aligned with the sender; it returns
exactly one frame of (concealed) audio, like ``decode(payload)``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


class CodecError(ValueError):
    """Bad input to a codec (wrong frame length, wrong payload size, ...)."""


@dataclass(frozen=True)
class CodecInfo:
    """Static description of a codec variant."""

    name: str
    """Stable name used on the command line, e.g. ``"codec2-700c"`` or ``"focalcodec-65k"``."""
    codec_id: int
    """Identifier carried in packet headers (0..255); unique per variant."""
    frame_ms: float
    """Duration of one frame in milliseconds."""
    bits_per_frame: int
    """Payload bits produced per frame (before byte padding)."""
    input_sample_rate: int
    """Sample rate (Hz) of the PCM the encoder accepts."""
    output_sample_rate: int
    """Sample rate (Hz) of the PCM the decoder returns."""

    @property
    def bytes_per_frame(self) -> int:
        """Bytes that carry one frame's bits (MSB-first, zero-padded to a byte)."""
        return (self.bits_per_frame + 7) // 8

    @property
    def input_frame_samples(self) -> int:
        """PCM samples per frame at the encoder input."""
        return round(self.input_sample_rate * self.frame_ms / 1000)

    @property
    def output_frame_samples(self) -> int:
        """PCM samples per frame at the decoder output."""
        return round(self.output_sample_rate * self.frame_ms / 1000)

    @property
    def bitrate(self) -> float:
        """Payload bitrate in bits per second (no headers, no redundancy)."""
        return self.bits_per_frame * 1000.0 / self.frame_ms


class FrameEncoder(abc.ABC):
    """Stateful encoder for one stream."""

    info: CodecInfo

    @abc.abstractmethod
    def encode(self, pcm: np.ndarray) -> bytes:
        """Encode exactly one frame.

        Args:
            pcm: float32 mono samples in [-1, 1], shape ``(info.input_frame_samples,)``,
                at ``info.input_sample_rate``.

        Returns:
            ``info.bytes_per_frame`` bytes.

        Raises:
            CodecError: if ``pcm`` has the wrong shape.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all stream state (start of a new stream)."""


class FrameDecoder(abc.ABC):
    """Stateful decoder for one stream, with loss concealment behind ``decode(None)``."""

    info: CodecInfo

    @abc.abstractmethod
    def decode(self, payload: bytes | None) -> np.ndarray:
        """Decode one frame, or conceal one lost frame when ``payload`` is None.

        Args:
            payload: ``info.bytes_per_frame`` bytes, or None for a lost frame.

        Returns:
            float32 mono samples, shape ``(info.output_frame_samples,)``, at
            ``info.output_sample_rate``.

        Raises:
            CodecError: if ``payload`` has the wrong size.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all stream state (start of a new stream)."""


class Codec(abc.ABC):
    """A codec variant: a factory of per-stream encoders and decoders."""

    info: CodecInfo

    @abc.abstractmethod
    def new_encoder(self) -> FrameEncoder:
        """Create an encoder with fresh state for one stream."""

    @abc.abstractmethod
    def new_decoder(self) -> FrameDecoder:
        """Create a decoder with fresh state for one stream."""


def check_pcm_frame(pcm: np.ndarray, info: CodecInfo) -> np.ndarray:
    """Validate one input frame and return it as contiguous float32.

    Raises:
        CodecError: wrong dimensionality or length.
    """
    arr = np.asarray(pcm)
    if arr.ndim != 1 or arr.shape[0] != info.input_frame_samples:
        raise CodecError(
            f"{info.name}: expected a mono frame of {info.input_frame_samples} samples "
            f"at {info.input_sample_rate} Hz, got shape {tuple(arr.shape)}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_payload(payload: bytes, info: CodecInfo) -> bytes:
    """Validate one payload's size.

    Raises:
        CodecError: wrong type or length.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CodecError(f"{info.name}: payload must be bytes, got {type(payload).__name__}")
    data = bytes(payload)
    if len(data) != info.bytes_per_frame:
        raise CodecError(
            f"{info.name}: expected {info.bytes_per_frame}-byte payload, got {len(data)} bytes"
        )
    return data
