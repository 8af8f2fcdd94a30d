"""Locate ``../shared`` (beside the project root) for tests that need its data.

In CI (``CI=true``) missing data is a failure, never a skip; elsewhere such tests skip with a
reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def in_ci() -> bool:
    """True when running under CI (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_path(*parts: str) -> Path:
    """Path under ``../shared``; fails in CI / skips elsewhere when it does not exist."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"shared data missing: {path} (expected ../shared beside the project root)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def conformance_dir() -> Path:
    """The tiny_causal conformance folder."""
    return shared_path("conformance", "tiny_causal")


def speech_clips(split: str = "eval") -> list[Path]:
    """Sorted FLAC clips of a split of ``../shared/speech``."""
    clips = sorted(shared_path("speech", split).rglob("*.flac"))
    if not clips:
        message = f"no FLAC clips under {SHARED / 'speech' / split}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return clips


def shared_dir() -> Path:
    """``../shared`` beside the project root; fails in CI / skips elsewhere when missing."""
    return shared_path()
