"""Small building blocks shared by the FocalCodec-Stream modules.

Layout convention: tensors are ``(batch, time, channels)`` between modules; convolutions are
expressed so that they also run on that layout where it avoids copies.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakTensorKeyDictionary

from . import kernels

__all__ = [
    "DynamicTanh",
    "FeedForward",
    "Snake",
    "append_frames",
    "causal_extend",
    "causal_windows",
    "channels_last_conv",
    "depthwise_causal_conv",
    "grouped_causal_conv",
    "linear_weight",
    "modules_as",
    "pointwise",
]

_M = TypeVar("_M", bound=nn.Module)


_RING_HEADROOM = 64
"""Frames of room a new ring buffer gets after its content (see ``append_frames``)."""


class _Ring:
    """A buffer along one dimension and the end of what has been written into it."""

    __slots__ = ("buffer", "dim", "end")

    def __init__(self, buffer: Tensor, dim: int, end: int) -> None:
        self.buffer, self.dim, self.end = buffer, dim, end


def _ring_view(ring: _Ring, start: int, length: int, keep: int) -> tuple[Tensor, Tensor]:
    extended = ring.buffer.narrow(ring.dim, start, length)
    context = extended.narrow(ring.dim, length - keep, keep)
    context._voip_ring = (ring, start + length - keep)  # type: ignore[attr-defined]
    return extended, context


def append_frames(context: Tensor, x: Tensor, dim: int, keep: int) -> tuple[Tensor, Tensor]:
    """``cat([context, x], dim)`` and its last ``keep`` frames, without copying the context.

    Streaming states (convolution contexts, the attention KV cache) are views into a ring
    buffer with room after them; the view carries a reference to its buffer and its position
    (a Python attribute: inference-mode tensors keep no view metadata). When ``context`` is the
    newest view of its buffer (nothing was appended after it since) and the new frames fit,
    they are written in place after it, and both results are views of the buffer. Otherwise
    (stream start, a cloned or re-batched state, an older state continued a second time, or a
    full buffer) a new buffer is made with ``_RING_HEADROOM`` frames of room, so the context is
    copied once per that many frames instead of on every call. A state continued twice
    therefore never sees the other continuation's frames. Long inputs (``x`` longer than
    ``keep``, i.e. offline calls) and calls that record gradients use a plain concatenation
    and a copied tail.

    Args:
        context: previous frames, ``(..., n, ...)`` along ``dim``.
        x: new frames, same shape except along ``dim``.
        dim: the time dimension.
        keep: frames of the result to return as the next context.

    Returns:
        ``(extended, next_context)``.
    """
    n, t = context.shape[dim], x.shape[dim]
    if t > keep or (torch.is_grad_enabled() and (x.requires_grad or context.requires_grad)):
        extended = torch.cat([context, x], dim)
        tail = extended.narrow(dim, n + t - keep, keep)
        return extended, tail if t <= keep else tail.clone()
    tag = getattr(context, "_voip_ring", None)
    if tag is not None:
        ring, start = tag
        if (ring.dim == dim and start + n == ring.end
                and start + n + t <= ring.buffer.shape[dim]
                and ring.buffer.dtype == x.dtype and ring.buffer.device == x.device):
            ring.buffer.narrow(dim, start + n, t).copy_(x)
            ring.end = start + n + t
            return _ring_view(ring, start, n + t, keep)
    shape = list(x.shape)
    shape[dim] = n + t + max(_RING_HEADROOM, t)
    buffer = x.new_empty(shape)
    buffer.narrow(dim, 0, n).copy_(context)
    buffer.narrow(dim, n, t).copy_(x)
    return _ring_view(_Ring(buffer, dim, n + t), 0, n + t, keep)


def causal_extend(x: Tensor, context: Tensor | None, pad: int, mode: str) -> tuple[Tensor, Tensor]:
    """Prepend ``pad`` frames of left context to ``x`` and return the next call's context.

    Args:
        x: input, shape ``(batch, time, channels)``.
        context: the previous call's context, shape ``(batch, pad, channels)``, or None on the
            first call of a stream.
        pad: frames of left context (kernel size - 1).
        mode: first-call padding, ``"replicate"`` (repeat the first frame) or ``"zeros"``.

    Returns:
        ``(extended, new_context)``: extended is ``(batch, pad + time, channels)``;
        new_context is its last ``pad`` frames. In streaming (``time <= pad``) both are views
        of a ring buffer (``append_frames``); a long offline input gets a copied context, so
        the state does not keep the input alive.
    """
    if context is None:
        if mode == "replicate":
            context = x[:, :1].expand(-1, pad, -1)
        else:
            context = x.new_zeros(x.shape[0], pad, x.shape[2])
    return append_frames(context, x, 1, pad)


_PACKED: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
"""oneDNN-packed copies of convolution weights, per weight tensor: ``(key, {input shape:
packed})``, where the key (version, data pointer) changes when the weight does."""

_PACKED_SHAPES = 8
"""Input shapes packed per weight: a stream's steps have one, each batch size of streams
(``StreamBatch``) another."""

_PACKED_MAX_LENGTH = 2048
"""Longest input (frames or samples) whose weight is packed: streaming steps (the front end's
first convolution sees 1289 samples). Longer, offline inputs use the unpacked weight, which
costs them one reorder per call, as packing would, without keeping a copy per length."""


def weight_version(weight: Tensor) -> tuple[int, int] | None:
    """A key that changes when ``weight`` does (its version counter and storage), for copies
    packed from it; None for a tensor made in inference mode, which has no version counter to
    show in-place changes."""
    try:
        return weight._version, weight.data_ptr()
    except RuntimeError:
        return None


def _packed_weight(weight: Tensor, stride: int, groups: int, shape: tuple[int, ...]
                   ) -> Tensor | None:
    """``weight`` as a height-1 kernel, packed by oneDNN for inputs of ``shape``,
    or None where that is not offered (no oneDNN, a weight that needs gradients, one made in
    inference mode, tracing, a long offline input, a ninth input shape)."""
    if (weight.dtype != torch.float32 or weight.device.type != "cpu"
            or (weight.requires_grad and torch.is_grad_enabled()) or torch.jit.is_tracing()
            or not _ONEDNN_PACKING or shape[-1] > _PACKED_MAX_LENGTH):
        return None
    key = weight_version(weight)
    if key is None:
        return None
    entry = _PACKED.get(weight)
    if entry is None or entry[0] != key:
        entry = (key, {})
        _PACKED[weight] = entry
    packs: dict[tuple[int, ...], Tensor | None] = entry[1]
    if shape not in packs:
        if len(packs) >= _PACKED_SHAPES:
            return None
        try:
            packs[shape] = torch._C._nn.mkldnn_reorder_conv2d_weight(  # type: ignore[call-arg]
                weight.detach().unsqueeze(2).to_mkldnn(), [0, 0], [1, stride], [1, 1], groups,
                list(shape))
        except (RuntimeError, AttributeError):
            packs[shape] = None
    return packs[shape]


_ONEDNN_PACKING = bool(torch.backends.mkldnn.is_available()) and hasattr(
    torch.ops.mkldnn, "_convolution_pointwise")
"""Whether this torch build offers oneDNN convolutions on packed weights."""


def channels_last_conv(extended: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1,
                       groups: int = 1) -> Tensor:
    """A 1-D convolution ("valid" positions) of a ``(batch, time, channels)`` sequence.

    The sequence is, without a copy, a channels-last ``(batch, channels, 1, time)`` image, so
    one oneDNN 2-D convolution runs on it directly and its output is already
    ``(batch, time, channels)``; no transposed copies. For fp32 on CPU the weight is packed
    into oneDNN's layout once per input shape and kept (:func:`_packed_weight`), where an
    unpacked weight is reordered on every call. Measured on a Xeon with AMX, 1 thread, torch
    2.13: the full-size 512-tap depthwise focal level (1024 channels, 4 frames) 0.36 ms packed,
    0.70 ms unpacked, 2.0 ms as the earlier per-frame multiply-and-sum; the 512-channel
    kernel-3 stride-2 front-end convolutions of one 80 ms chunk 3.9 ms against 5.4 ms as 1-D
    convolutions of transposed copies. Results differ from ``F.conv1d`` only by summation
    order (about 1e-6 relative).

    Args:
        extended: ``(batch, length, c_in)``.
        weight: ``(c_out, c_in / groups, kernel)`` (the Conv1d layout).
        bias: ``(c_out,)`` or None.
        stride: the convolution's stride.
        groups: the convolution's groups (``c_in`` for a depthwise convolution).

    Returns:
        ``(batch, (length - kernel) // stride + 1, c_out)``, contiguous.
    """
    out = _packed_conv(extended, weight, bias, stride, groups)
    if out is not None:
        return out
    image = extended.transpose(1, 2).unsqueeze(2)  # (B, C, 1, L) with channels-last strides
    out = F.conv2d(image, weight.unsqueeze(2), bias, stride=(1, stride), groups=groups)
    return out.squeeze(2).transpose(1, 2).contiguous()


def _packed_conv(extended: Tensor, weight: Tensor, bias: Tensor | None, stride: int,
                 groups: int) -> Tensor | None:
    """:func:`channels_last_conv` on a packed weight, or None where none is offered."""
    image = extended.transpose(1, 2).unsqueeze(2)  # (B, C, 1, L) with channels-last strides
    packed = _packed_weight(weight, stride, groups, tuple(image.shape))
    if packed is None:
        return None
    out = torch.ops.mkldnn._convolution_pointwise(
        image, packed, bias, [0, 0], [1, stride], [1, 1], groups, "none", [], "")
    return out.squeeze(2).transpose(1, 2).contiguous()


def depthwise_causal_conv(extended: Tensor, weight: Tensor, bias: Tensor | None,
                          gelu: bool = False) -> Tensor:
    """Depthwise convolution over an already left-extended sequence ("valid" positions only),
    streaming (a few frames) and offline alike: :func:`channels_last_conv` with one group per
    channel.

    Args:
        extended: ``(batch, kernel - 1 + time, channels)``.
        weight: ``(channels, 1, kernel)`` (the Conv1d layout).
        bias: ``(channels,)`` or None.
        gelu: apply the exact GELU to the result (in the own kernel's epilogue where it runs,
            about 1e-7 from ``F.gelu``).

    Returns:
        ``(batch, time, channels)``, contiguous.
    """
    own = _own_packed(extended, weight, bias, "depthwise")
    if own is not None:
        lib, taps = own
        return lib.depthwise(extended, taps, weight.shape[-1], bias, gelu)
    y = channels_last_conv(extended, weight, bias, groups=weight.shape[0])
    return F.gelu(y) if gelu else y


_OWN: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
"""Convolution weights packed for the own kernels (:mod:`.kernels`), per weight tensor:
``(key, packed)``, the key as in :data:`_PACKED` plus the kind of packing and the groups."""


_OWN_OFF: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
"""Weights whose convolutions keep oneDNN's kernels (:func:`own_convolutions_off`)."""


def own_convolutions_off(weights: Iterable[Tensor]) -> None:
    """Run the convolutions of these weights on oneDNN's kernels, not the own ones (for
    side-by-side measurements of the previous path, :func:`.precision.reference_kernels`)."""
    for w in weights:
        _OWN_OFF[w] = True


def _own_packed(extended: Tensor, weight: Tensor, bias: Tensor | None, kind: str,
                groups: int = 1) -> tuple[kernels.KernelLibrary, Tensor] | None:
    """The own kernels and ``weight`` packed for one of their convolutions, or None where they
    do not serve: not fp32 on the CPU, gradients wanted, tracing, the weight turned off
    (:func:`own_convolutions_off`), or the kernels not loaded here. ``kind``: ``"depthwise"``,
    ``"grouped"`` (fp32 weights), ``"grouped16"`` (fp16 weights) or ``"bf16x3"``
    (:func:`three_bf16_conv`).

    Measured on a Xeon with AMX guest, torch 2.13, 2 threads, 4 frames: 1024-channel depthwise
    7-18 taps 6-9 us against 50-75 us for oneDNN's packed convolution, 512 taps 102 against
    224 us (the same sums in the same order: equal outputs); the full-size positional conv
    (1024 channels, 16 groups, 128 taps, 32 MB of fp32 weights) 1.54 against 1.69 ms, 0.57 ms
    on fp16 weights; the default model's (192 channels) 43 against 115 us (summation order
    differs: about 1e-6 relative)."""
    if (weight.dtype != torch.float32 or extended.dtype != torch.float32
            or weight.device.type != "cpu" or torch.jit.is_tracing()
            or (torch.is_grad_enabled() and (weight.requires_grad or extended.requires_grad
                                             or (bias is not None and bias.requires_grad)))
            or (bias is not None and bias.dtype != torch.float32) or weight in _OWN_OFF):
        return None
    lib = kernels.library()
    version = weight_version(weight)
    if lib is None or version is None or (kind == "bf16x3" and not lib.amx):
        return None
    key = (*version, kind, groups)
    entry = _OWN.get(weight)
    if entry is None or entry[0] != key:
        packed = (lib.pack_depthwise(weight) if kind == "depthwise"
                  else lib.pack_bf16x3(weight) if kind == "bf16x3"
                  else lib.pack_grouped(weight, groups, half=kind == "grouped16"))
        entry = (key, packed)
        _OWN[weight] = entry
    packed_weight: Tensor = entry[1]
    return lib, packed_weight


def three_bf16_conv(extended: Tensor, weight: Tensor, stride: int) -> Tensor | None:
    """A dense strided convolution (no bias) of ``extended`` ``(batch, length, c_in)`` as
    three bf16 AMX products with fp32 sums (:meth:`.kernels.KernelLibrary.bf16x3_conv`: about
    5e-6 relative error against fp32's 1e-6), or None where that does not serve (no AMX, the
    conditions of :func:`_own_packed`). int8 mode runs the WavLM front end this way: its
    convolutions are compute-bound in fp32 (about 195 M multiply-adds per 80 ms chunk at full
    size). Measured on a Xeon with AMX guest, torch 2.13: see the README's speed section."""
    own = _own_packed(extended, weight, None, "bf16x3")
    if own is None:
        return None
    lib, packed = own
    c_out, c_in, k = weight.shape
    return lib.bf16x3_conv(extended, packed, (c_out, c_in, k), stride, None)


def grouped_causal_conv(extended: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
                        half: bool = False) -> Tensor:
    """Grouped (or dense, ``groups=1``) stride-1 convolution over a left-extended sequence.

    Where the own kernels load (:mod:`.kernels`), fp32 inputs of a few frames take the own
    grouped kernel (:func:`_own_packed`); with ``half`` (int8 mode's positional conv) inputs of
    every length take it on fp16 weights with fp32 sums (about 2e-4 relative, as int8 mode's
    other floating-point layers), so streaming and offline compute each frame alike. The rest
    of this paragraph is the path without them.

    For a few output frames (streaming) in fp32 this is :func:`channels_last_conv` on a
    oneDNN-packed weight (3.7 ms for the 1024-channel, kernel-128, 16-group positional conv on
    4 frames, 1 thread); in bf16, or without packing, one batched matrix product over unfolded
    windows (4.8 ms), an order of magnitude faster than the unpacked grouped convolution
    kernel (32-40 ms). Long fp32 inputs use the convolution kernel. Long bf16 inputs use the same
    matrix products in blocks of ``_BF16_CONV_BLOCK`` frames: oneDNN's AMX bf16 convolution
    returns wrong values for grouped convolutions with few input channels per group and long
    kernels (measured on a Xeon with AMX, torch 2.13: relative error 1.1-1.2 against fp32 for
    192 channels / 16 groups / kernel 8-128, the small model's positional conv, which turned
    67 % of its offline bf16 tokens; 0.003 with AMX disabled), and the matrix product is also
    what streaming computes, so offline and streaming bf16 agree.

    Args:
        extended: ``(batch, kernel - 1 + time, c_in)``.
        weight: ``(c_out, c_in / groups, kernel)``.
        bias: ``(c_out,)`` or None.
        groups: convolution groups.
        half: read fp16 weights (own kernels only; fp32 elsewhere).

    Returns:
        ``(batch, time, c_out)``.
    """
    kernel = weight.shape[-1]
    T = extended.shape[1] - kernel + 1
    own = (_own_packed(extended, weight, bias, "grouped16" if half else "grouped", groups)
           if T <= 16 or half else None)
    if own is not None:
        lib, packed = own
        c_out, cin_g, k = weight.shape
        return lib.grouped(extended, packed, (c_out, cin_g, k), groups, bias)
    if T <= 16:
        if extended.dtype == torch.float32:
            # on a packed weight when oneDNN offers one (fp32 only): the full-size positional
            # conv's step took 3.7 ms packed against 4.8 ms as the matrix product (1 thread)
            out = _packed_conv(extended, weight, bias, 1, groups)
            if out is not None:
                return out
        return _grouped_conv_matmul(extended, weight, bias, groups)
    if extended.dtype == torch.float32:
        out = F.conv1d(extended.transpose(1, 2), weight, bias, groups=groups)
        return out.transpose(1, 2)
    blocks = [_grouped_conv_matmul(extended[:, t:t + _BF16_CONV_BLOCK + kernel - 1], weight,
                                   bias, groups)
              for t in range(0, T, _BF16_CONV_BLOCK)]
    return torch.cat(blocks, dim=1)


_BF16_CONV_BLOCK = 128
"""Output frames per matrix product for long reduced-precision inputs (bounds the unfolded
windows: 16 groups x 128 frames x 64 x 128 taps = 34 MB for the full-size positional conv)."""


def _grouped_conv_matmul(extended: Tensor, weight: Tensor, bias: Tensor | None, groups: int
                         ) -> Tensor:
    """:func:`grouped_causal_conv` as one batched matrix product over unfolded windows."""
    c_out, c_in_g, kernel = weight.shape
    B, L, _ = extended.shape
    T = L - kernel + 1
    # windows: (B, T, groups, c_in_g, kernel) -> (groups, B*T, c_in_g*kernel)
    win = extended.unfold(1, kernel, 1).reshape(B, T, groups, c_in_g * kernel)
    win = win.permute(2, 0, 1, 3).reshape(groups, B * T, c_in_g * kernel)
    w = weight.reshape(groups, c_out // groups, c_in_g * kernel)
    out = torch.bmm(win, w.transpose(1, 2))  # (groups, B*T, c_out/groups)
    out = out.permute(1, 0, 2).reshape(B, T, c_out)
    return out if bias is None else out + bias


def causal_windows(extended: Tensor, kernel: int) -> Tensor:
    """The windows a stride-1 convolution multiplies, as rows: ``(batch, time, channels *
    kernel)``, channel-major like a ``(out, in, kernel)`` weight reshaped to ``(out, in *
    kernel)``.

    Args:
        extended: ``(batch, kernel - 1 + time, channels)``.
        kernel: the convolution's kernel size.
    """
    B, L, C = extended.shape
    return extended.unfold(1, kernel, 1).reshape(B, L - kernel + 1, C * kernel)


def linear_weight(layer: nn.Module) -> Tensor:
    """The ``(out, in)`` matrix of an ``nn.Linear`` or a kernel-1 ``Conv1d``/``ConvTranspose1d``
    (a view of its weight, no copy)."""
    if isinstance(layer, nn.Linear):
        return layer.weight
    if isinstance(layer, nn.ConvTranspose1d):
        return layer.weight[:, :, 0].t()
    if isinstance(layer, nn.Conv1d):
        return layer.weight[:, :, 0]
    raise TypeError(f"{type(layer).__name__} is not a linear or kernel-1 convolution layer")


def modules_as(modules: Iterable[nn.Module], kind: type[_M]) -> list[_M]:
    """The items of ``modules`` (e.g. an ``nn.ModuleList``) as a list typed ``kind``.

    ``nn.ModuleList`` yields plain ``nn.Module`` items, whose attributes a type checker can only
    see as ``Tensor | Module``; this checks each item once per call and gives typed access.

    Raises:
        TypeError: an item is not a ``kind`` (e.g. a layer swapped for another type).
    """
    out: list[_M] = []
    for m in modules:
        if not isinstance(m, kind):
            raise TypeError(f"expected {kind.__name__}, found {type(m).__name__}")
        out.append(m)
    return out


def pointwise(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a kernel-1 ``Conv1d``/``ConvTranspose1d`` (or any ``(..., in) -> (..., out)``
    module, e.g. an int8 replacement) to ``(batch, time, channels)`` as a per-frame linear map."""
    if isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)):
        return F.linear(x, linear_weight(layer), layer.bias)
    return layer(x)


class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha x) / (alpha + 1e-9)`` with per-channel alpha.

    The parameter keeps the official ``(channels, 1)`` shape.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(batch, time, channels)``. Returns the same shape."""
        alpha = self.alpha[:, 0]
        return x + torch.sin(alpha * x).pow(2) / (alpha + 1e-9)


class DynamicTanh(nn.Module):
    """``tanh(alpha x)`` with one scalar alpha (replaces LayerNorm in the causal focal blocks)."""

    def __init__(self, init: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), init))

    def forward(self, x: Tensor) -> Tensor:
        """Elementwise; any shape."""
        return torch.tanh(self.alpha * x)


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear (``in_proj`` / ``out_proj``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, hidden)
        self.out_proj = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., dim)``. Returns ``(..., dim)``."""
        return self.out_proj(linear_gelu(self.in_proj, x))


def linear_gelu(layer: nn.Module, x: Tensor) -> Tensor:
    """``F.gelu(layer(x))``; a quantised layer that can fuse the GELU into its product
    (``fuses_gelu``, :class:`~.precision.Int8Linear`) is called with ``gelu=True``."""
    if getattr(layer, "fuses_gelu", False):
        return layer(x, gelu=True)
    return F.gelu(layer(x))
