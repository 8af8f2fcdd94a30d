"""ONNX export of the streaming codec: one 80 ms chunk per call, the state as flat tensors.

``voip-codec export onnx --model default OUT/`` writes three files:

- ``encoder_step.onnx``: ``pcm (1, 1280)`` float32 at 16 kHz, ``first (1,)`` bool and the encoder
  state in; ``tokens (1, 4)`` int32 and the next encoder state out.
- ``decoder_step.onnx``: ``tokens (1, 4)`` int32, ``first (1,)`` bool and the decoder state in;
  ``pcm (1, 1920)`` float32 at 24 kHz and the next decoder state out.
- ``manifest.json``: the model's contract (rates, chunk, bits, fingerprint) and, per graph, the
  name, shape and dtype of every state tensor, in input order.

State tensors are named by their path in the state dataclasses (``encoder.keys.0``,
``compressor.contexts.2.1``, ...): input ``in.<path>``, output ``out.<path>``. A stream starts
with every state tensor zero and ``first`` true; each later call passes the previous call's
``out.*`` tensors back as ``in.*`` with ``first`` false. ``first`` stands for the torch path's
``state=None``: contexts that the model fills by repeating the first frame are filled so, and the
attention cache is empty (its validity count is zero), so the graphs compute what
:meth:`~voip_codec.codec.model.FocalCodec.encode_step` and
:meth:`~voip_codec.codec.model.FocalCodec.decode_step` compute.

The graphs are traced (``torch.onnx.export(..., dynamo=False)``) with helpers of the layers
swapped for trace-friendly equivalents while tracing (:func:`_tracing_substitutes`): the ring
buffers of the streaming contexts become plain concatenations, a ``first`` flag chooses the
stream-start context, and grouped convolutions become one 2-D matrix product per group (which
can then take int8 weights, see :mod:`voip_codec.export.quantize`). Nothing else of the model is
changed; ``tests/model/test_onnx_export.py`` checks the graphs against the torch path. The
model's 1-D convolutions are height-1 2-D convolutions already
(:func:`voip_codec.codec.layers.channels_last_conv`; unpacked weights while tracing), the form
onnxruntime runs fastest: its blocked NCHWc kernels took 0.9 ms for the full-size 512-tap
depthwise focal level at one thread, against 3.8-6.5 ms as a 1-D node.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..codec import focal, layers, wavenext, wavlm
from ..codec.model import DecoderState, EncoderState, FocalCodec
from ..codec.state import StreamState
from .manifest import DECODER_FILE, ENCODER_FILE, MANIFEST_FILE, MANIFEST_FORMAT, StateTensor

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "StateTensor",
    "export_onnx",
    "flatten_state",
    "unflatten_state",
]

OPSET = 17


def _walk(value: Any, path: str, out: list[tuple[str, Tensor]]) -> None:
    if isinstance(value, Tensor):
        out.append((path, value))
    elif isinstance(value, StreamState):
        for f in dataclasses.fields(value):
            _walk(getattr(value, f.name), f"{path}.{f.name}" if path else f.name, out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{path}.{i}", out)
    else:
        raise TypeError(f"state field {path!r} is a {type(value).__name__}, not a tensor")


def flatten_state(state: StreamState) -> list[tuple[str, Tensor]]:
    """A state's tensors with their paths, depth first in field order.

    Args:
        state: an encoder or decoder state (nested dataclasses, lists and tensors).

    Returns:
        ``[(path, tensor), ...]``, e.g. ``("encoder.conv_contexts.0", (1, 9, 1))``.
    """
    out: list[tuple[str, Tensor]] = []
    _walk(state, "", out)
    return out


def _rebuild(template: Any, tensors: Iterator[Tensor]) -> Any:
    if isinstance(template, Tensor):
        return next(tensors)
    if isinstance(template, StreamState):
        return type(template)(**{f.name: _rebuild(getattr(template, f.name), tensors)
                                 for f in dataclasses.fields(template)})
    if isinstance(template, (list, tuple)):
        items = [_rebuild(item, tensors) for item in template]
        return tuple(items) if isinstance(template, tuple) else items
    raise TypeError(f"cannot rebuild a state field of type {type(template).__name__}")


def unflatten_state(template: StreamState, tensors: Sequence[Tensor]) -> Any:
    """The inverse of :func:`flatten_state`: ``template``'s structure filled with ``tensors``.

    Raises:
        ValueError: ``tensors`` has not exactly as many items as ``template`` has tensors.
    """
    expected = len(flatten_state(template))
    if len(tensors) != expected:
        raise ValueError(f"the state has {expected} tensors, got {len(tensors)}")
    return _rebuild(template, iter(tensors))


# ---------------------------------------------------------------- trace-time substitutes
def _append_frames_traced(context: Tensor, x: Tensor, dim: int, keep: int
                          ) -> tuple[Tensor, Tensor]:
    """``layers.append_frames`` without ring buffers (in-place writes do not trace)."""
    extended = torch.cat([context, x], dim)
    return extended, extended.narrow(dim, extended.shape[dim] - keep, keep)


def _grouped_traced(extended: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                    half: bool = False) -> Tensor:
    """``layers.grouped_causal_conv`` for a few frames as one 2-D matrix product per group over
    the unfolded windows, so that every weight is a 2-D initializer that
    :mod:`voip_codec.export.quantize` can give int8 weights (a batched 3-D product cannot be).
    ``half`` (fp16 weights in torch's int8 mode) does not apply: graphs are traced from fp32
    models, and their weights are what the initializers hold."""
    c_out, c_in_g, kernel = weight.shape
    B, L, _ = extended.shape
    T = L - kernel + 1
    win = extended.unfold(1, kernel, 1).reshape(B * T, groups, c_in_g * kernel)
    w = weight.reshape(groups, c_out // groups, c_in_g * kernel)
    outs = [torch.matmul(win[:, g], w[g].t()) for g in range(groups)]
    out = (torch.cat(outs, dim=1) if groups > 1 else outs[0]).reshape(B, T, c_out)
    return out if bias is None else out + bias


@contextlib.contextmanager
def _tracing_substitutes(first: Tensor) -> Iterator[None]:
    """Swap the layers' streaming helpers for traceable ones while tracing.

    ``first`` (``(1,)`` bool, a graph input) picks the stream-start context of every causal
    convolution in the graph: the first frame repeated (``"replicate"``) or zeros, as
    ``layers.causal_extend`` does for ``context=None``; otherwise the carried context.
    Grouped convolutions become per-group 2-D matrix products, which onnxruntime can run with
    int8 weights.
    """

    def causal_extend(x: Tensor, context: Tensor | None, pad: int, mode: str
                      ) -> tuple[Tensor, Tensor]:
        if mode == "replicate":
            start = x[:, :1].expand(-1, pad, -1)
        else:
            start = torch.zeros_like(x[:, :1]).expand(-1, pad, -1)
        if context is None:
            context = start
        else:
            context = torch.where(first.view(1, 1, 1), start, context)
        return _append_frames_traced(context, x, 1, pad)

    patches: list[tuple[Any, str, Any]] = [
        (wavlm, "causal_extend", causal_extend),
        (wavlm, "append_frames", _append_frames_traced),
        (focal, "causal_extend", causal_extend),
        (wavenext, "causal_extend", causal_extend),
        (wavlm, "grouped_causal_conv", _grouped_traced),
        (wavenext, "grouped_causal_conv", _grouped_traced),
    ]
    for module, name, _ in patches:
        if getattr(module, name) is not getattr(layers, name):
            raise RuntimeError(f"{module.__name__}.{name} is not layers.{name}: the ONNX export "
                               "needs updating for the changed model code")
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, fn in patches:
            setattr(module, name, fn)
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


# ---------------------------------------------------------------- step wrappers
class _EncoderStep(nn.Module):
    """``(pcm, first, *state) -> (tokens int32, *state)`` around ``FocalCodec.encode_step``."""

    def __init__(self, model: FocalCodec, template: EncoderState) -> None:
        super().__init__()
        self.model = model
        self.template = template

    def forward(self, pcm: Tensor, first: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        with _tracing_substitutes(first):
            toks, new = self.model.encode_step(pcm, unflatten_state(self.template, state))
        return (toks.to(torch.int32), *(t for _, t in flatten_state(new)))


class _DecoderStep(nn.Module):
    """``(tokens int32, first, *state) -> (pcm, *state)`` around ``FocalCodec.decode_step``."""

    def __init__(self, model: FocalCodec, template: DecoderState) -> None:
        super().__init__()
        self.model = model
        self.template = template

    def forward(self, tokens: Tensor, first: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        with _tracing_substitutes(first):
            sig, new = self.model.decode_step(tokens.long(), unflatten_state(self.template, state))
        return (sig, *(t for _, t in flatten_state(new)))


def _specs(state: StreamState) -> list[StateTensor]:
    return [StateTensor(name, tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in flatten_state(state)]


def _zeros(state: StreamState) -> list[Tensor]:
    return [torch.zeros_like(t) for _, t in flatten_state(state)]


def _export_graph(step: nn.Module, main_in: tuple[str, Tensor], main_out: str,
                  specs: list[StateTensor], zeros: list[Tensor], path: Path) -> None:
    first = torch.ones(1, dtype=torch.bool)
    names_in = [main_in[0], "first"] + [f"in.{s.name}" for s in specs]
    names_out = [main_out] + [f"out.{s.name}" for s in specs]
    with warnings.catch_warnings():
        # the tracer notes every Python-level branch on a tensor (shape checks, the attention
        # phase); each is fixed for a 4-frame chunk, which is what the graphs are for
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(step, (main_in[1], first, *zeros), str(path), dynamo=False,
                          input_names=names_in, output_names=names_out, opset_version=OPSET,
                          do_constant_folding=True)


def export_onnx(model: FocalCodec, out_dir: str | Path) -> dict[str, Any]:
    """Write ``encoder_step.onnx``, ``decoder_step.onnx`` and ``manifest.json`` to ``out_dir``.

    Args:
        model: a float32 model (bf16/int8 conversions are not exported).
        out_dir: an existing or creatable folder.

    Returns:
        The manifest (as written).

    Raises:
        ValueError: the model is not float32.
    """
    if model.precision != "fp32":
        raise ValueError(f"only fp32 models export to ONNX, this one is {model.precision}; "
                         "load it with --precision fp32")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    chunk = torch.zeros(1, model.chunk_size)
    toks = torch.zeros(1, model.chunk_frames, dtype=torch.int32)
    with torch.no_grad():
        # a first torch step gives the structure and shapes of the carried state
        _, enc_state = model.encode_step(chunk)
        _, dec_state = model.decode_step(toks.long())
        enc_specs, dec_specs = _specs(enc_state), _specs(dec_state)
        _export_graph(_EncoderStep(model, enc_state), ("pcm", chunk), "tokens", enc_specs,
                      _zeros(enc_state), out / ENCODER_FILE)
        _export_graph(_DecoderStep(model, dec_state), ("tokens", toks), "pcm", dec_specs,
                      _zeros(dec_state), out / DECODER_FILE)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "model_id": model.model_id or "",
        "fingerprint": model.fingerprint().hex(),
        "sample_rate_input": model.sample_rate_input,
        "sample_rate_output": model.sample_rate_output,
        "chunk_size": model.chunk_size,
        "chunk_frames": model.chunk_frames,
        "hop_length": model.hop_length,
        "bits_per_token": model.bits_per_token,
        "opset": OPSET,
        "encoder": {"file": ENCODER_FILE, "state": [s.to_dict() for s in enc_specs]},
        "decoder": {"file": DECODER_FILE, "state": [s.to_dict() for s in dec_specs]},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
