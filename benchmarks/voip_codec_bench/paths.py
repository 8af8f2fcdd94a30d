"""Where the benchmarks find their speech and reference models by default.

Nothing in the runtime package knows about these folders: they are defaults of the benchmark
commands only, each overridable on the command line (``--clip-dir``, ``--speech``) or, for all of
them at once, with ``$VOIP_CODEC_SHARED``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_ENV", "conformance_model_dir", "default_clip_dir", "shared_dir"]

SHARED_ENV = "VOIP_CODEC_SHARED"
"""Environment variable naming the shared data folder (``speech/``, ``conformance/``)."""


def shared_dir() -> Path:
    """``$VOIP_CODEC_SHARED``, else ``shared/`` beside the repository checkout these benchmarks
    are installed from (``benchmarks/`` sits in the repository root)."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared"


def default_clip_dir() -> Path:
    """The evaluation speech: ``<shared>/speech/eval``."""
    return shared_dir() / "speech" / "eval"


def conformance_model_dir() -> Path:
    """The random-weight conformance model: ``<shared>/conformance/tiny_causal``."""
    return shared_dir() / "conformance" / "tiny_causal"
