"""Names and the state description of an exported model folder (standard library only, so
onnxruntime users need no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DECODER_FILE", "ENCODER_FILE", "GRAPH_REVISION", "MANIFEST_FILE", "MANIFEST_FORMAT",
           "StateTensor"]

ENCODER_FILE = "encoder_step.onnx"
DECODER_FILE = "decoder_step.onnx"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
"""Version of ``manifest.json``'s layout (bumped when a reader would misread a new one)."""
GRAPH_REVISION = 3
"""Revision of the exporter's graphs, same inputs and outputs (2: convolutions as 2-D
convolution nodes, grouped ones as per-group products; 3: no copied key/value window when a
streaming step attends to the whole cache). Part of the export cache's folder name,
so a cached export of an older exporter is made again rather than reused."""


@dataclass(frozen=True)
class StateTensor:
    """One flat state tensor of an exported graph."""

    name: str
    """Path in the state dataclasses, e.g. ``"encoder.keys.0"``."""
    shape: tuple[int, ...]
    """Shape, batch dimension (1) first."""
    dtype: str
    """``"float32"`` or ``"int64"``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (as written to ``manifest.json``)."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
