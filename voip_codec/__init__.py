"""voip-codec: FocalCodec-Stream streaming neural speech codec for real-time calls."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
