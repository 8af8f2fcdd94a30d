"""FocalCodec-Stream: our own implementation of the causal streaming model."""

from __future__ import annotations

from .config import ConfigError, FocalCodecConfig
from .model import DecoderState, EncoderState, FocalCodec

__all__ = ["ConfigError", "DecoderState", "EncoderState", "FocalCodec", "FocalCodecConfig"]
