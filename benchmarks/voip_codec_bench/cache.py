"""On-disk cache of benchmark results, one small JSON file per (codec, clip, condition).

The key is a SHA-256 of a JSON object built by the caller; it always includes the codec's
fingerprint (config, weights digest, library versions), the clip's content hash and the
condition, plus :data:`CACHE_VERSION`, so a re-run only computes what changed (a new codec, a
new metric, a retrained model). Entries are written atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["CACHE_VERSION", "DEFAULT_CACHE_DIR", "ResultCache", "file_digest"]

CACHE_VERSION = 2
"""Bump when alignment, metric plumbing or the stored layout changes (2: dWER against the
transcript of the whole original clip)."""

DEFAULT_CACHE_DIR = Path(".cache") / "voip-codec-bench"
"""Default cache folder (relative to the working directory)."""


def file_digest(path: Path) -> str:
    """SHA-256 (hex, 16 characters) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _encode(value: Any) -> Any:
    """JSON cannot hold NaN portably: store it as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


class ResultCache:
    """JSON results keyed by a dict of key parts.

    Args:
        root: cache folder, created on first write; None disables caching (every lookup misses,
            nothing is written).
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        """Lookups answered from disk."""
        self.misses = 0
        """Lookups not found (or disabled)."""

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        """The hex key of ``parts`` (plus :data:`CACHE_VERSION`)."""
        blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, parts: dict[str, Any]) -> dict[str, Any] | None:
        """The stored entry for ``parts``, or None (unreadable entries count as misses)."""
        if self.root is None:
            self.misses += 1
            return None
        path = self._path(self.key(parts))
        try:
            with open(path, encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return value if isinstance(value, dict) else None

    def put(self, parts: dict[str, Any], value: dict[str, Any]) -> None:
        """Store ``value`` (JSON-serialisable; NaN becomes null) under ``parts``."""
        if self.root is None:
            return
        path = self._path(self.key(parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(_encode(value), f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
