"""Where voip-codec keeps what it makes on first use (exported graphs, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_home"]


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/voip-codec``, or ``~/.cache/voip-codec`` where that is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voip-codec"
