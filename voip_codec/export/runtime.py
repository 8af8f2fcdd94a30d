"""Run the exported step graphs with onnxruntime (numpy in and out; no torch needed).

    model = OnnxCodecModel("OUT/")            # a folder written by ``voip-codec export onnx``
    tokens, enc = model.encode_step(pcm_1280, model.new_encoder_state())
    pcm_1920, dec = model.decode_step(tokens, model.new_decoder_state())

States are immutable values: a step returns a new one, so a stream can be forked or rolled back
by keeping an old state (concealment does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import MANIFEST_FILE, MANIFEST_FORMAT, StateTensor

__all__ = ["OnnxCodecModel", "OnnxStreamState", "OnnxModelError"]


class OnnxModelError(ValueError):
    """An exported model folder is missing, incomplete or of an unknown format."""


@dataclass(frozen=True)
class OnnxStreamState:
    """The carried state of one exported graph's stream."""

    first: bool
    """True before the first chunk of the stream."""
    tensors: tuple[np.ndarray, ...]
    """The flat state tensors, in the manifest's order."""


class _Graph:
    def __init__(self, path: Path, specs: list[StateTensor], main_in: str, main_out: str,
                 threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        self.specs = specs
        self.main_in = main_in
        self.state_in = [f"in.{s.name}" for s in specs]
        self.outputs = [main_out] + [f"out.{s.name}" for s in specs]

    def fresh(self) -> OnnxStreamState:
        return OnnxStreamState(True, tuple(np.zeros(s.shape, dtype=s.dtype) for s in self.specs))

    def run(self, x: np.ndarray, state: OnnxStreamState) -> tuple[np.ndarray, OnnxStreamState]:
        feeds: dict[str, Any] = {self.main_in: x, "first": np.array([state.first])}
        feeds.update(zip(self.state_in, state.tensors, strict=True))
        out = self.session.run(self.outputs, feeds)
        return out[0], OnnxStreamState(False, tuple(out[1:]))


class OnnxCodecModel:
    """The exported encoder and decoder steps of one model, on onnxruntime's CPU provider.

    Args:
        folder: a folder written by :func:`voip_codec.export.onnx.export_onnx`.
        threads: onnxruntime intra-op threads per graph.

    Raises:
        OnnxModelError: the folder has no readable manifest, or one of another format.
        ImportError: onnxruntime is not installed.
    """

    def __init__(self, folder: str | Path, threads: int = 1) -> None:
        folder = Path(folder)
        path = folder / MANIFEST_FILE
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OnnxModelError(f"{folder} is not an exported model folder (cannot read "
                                 f"{MANIFEST_FILE}: {exc}); make one with `voip-codec export "
                                 "onnx`") from exc
        if manifest.get("format") != MANIFEST_FORMAT:
            raise OnnxModelError(f"{path} has format {manifest.get('format')!r}, this version "
                                 f"reads format {MANIFEST_FORMAT}; export the model again")
        self.manifest: dict[str, Any] = manifest
        self.chunk_size: int = manifest["chunk_size"]
        self.chunk_frames: int = manifest["chunk_frames"]
        self.bits_per_token: int = manifest["bits_per_token"]
        self.sample_rate_input: int = manifest["sample_rate_input"]
        self.sample_rate_output: int = manifest["sample_rate_output"]
        self.fingerprint = bytes.fromhex(manifest["fingerprint"])
        self.model_id: str = manifest["model_id"]
        weights = manifest.get("weights", "fp32")
        self.precision: str = "int8" if weights.startswith("int8") else "fp32"
        """``"fp32"``, or ``"int8"`` for graphs with int8 weights (``manifest["weights"]``)."""

        def graph(side: str, main_in: str, main_out: str) -> _Graph:
            entry = manifest[side]
            specs = [StateTensor(s["name"], tuple(s["shape"]), s["dtype"])
                     for s in entry["state"]]
            file = folder / entry["file"]
            if not file.is_file():
                raise OnnxModelError(f"{file} is missing; export the model again")
            return _Graph(file, specs, main_in, main_out, threads)

        self._encoder = graph("encoder", "pcm", "tokens")
        self._decoder = graph("decoder", "tokens", "pcm")

    @property
    def hop_length(self) -> int:
        """Output samples per token (480)."""
        return int(self.manifest["hop_length"])

    def new_encoder_state(self) -> OnnxStreamState:
        """The state at the start of an encoder stream."""
        return self._encoder.fresh()

    def new_decoder_state(self) -> OnnxStreamState:
        """The state at the start of a decoder stream."""
        return self._decoder.fresh()

    def encode_step(self, pcm: np.ndarray, state: OnnxStreamState
                    ) -> tuple[np.ndarray, OnnxStreamState]:
        """One chunk of 16 kHz samples -> its tokens.

        Args:
            pcm: ``(chunk_size,)`` float samples in [-1, 1].
            state: the previous call's state, or :meth:`new_encoder_state`.

        Returns:
            ``(tokens (chunk_frames,) int64, state)``.
        """
        x = np.asarray(pcm, dtype=np.float32).reshape(1, -1)
        if x.shape[1] != self.chunk_size:
            raise ValueError(f"encode_step takes {self.chunk_size} samples, got {x.shape[1]}")
        toks, new = self._encoder.run(x, state)
        return toks[0].astype(np.int64), new

    def decode_step(self, tokens: np.ndarray, state: OnnxStreamState
                    ) -> tuple[np.ndarray, OnnxStreamState]:
        """One chunk's tokens -> its 24 kHz samples.

        Args:
            tokens: ``(chunk_frames,)`` ints in ``[0, 2**bits_per_token)``.
            state: the previous call's state, or :meth:`new_decoder_state`.

        Returns:
            ``(pcm (chunk_frames * hop_length,) float32, state)``.
        """
        t = np.asarray(tokens).reshape(1, -1)
        if t.shape[1] != self.chunk_frames:
            raise ValueError(f"decode_step takes {self.chunk_frames} tokens, got {t.shape[1]}")
        if t.size and (t.min() < 0 or t.max() >= 1 << self.bits_per_token):
            raise ValueError(f"tokens must lie in [0, {1 << self.bits_per_token})")
        pcm, new = self._decoder.run(t.astype(np.int32), state)
        return pcm[0], new
