"""Lower-precision inference: bf16 models, int8 and 4-bit weight quantisation.

At batch 1 a streaming step is bound by reading the weights (about 1 GB of fp32 per 80 ms
chunk at full size), so smaller weights are faster:

* ``"fp32"``: the reference numerics (conformance is checked at this precision).
* ``"bf16"``: every floating-point tensor in bfloat16; activations compute in bfloat16.
* ``"int8"``: the linear layers, the kernel-1 (pointwise) convolutions and the dense stride-1
  convolutions (the vocoder's kernel-7 embedding, applied to unfolded windows) hold int8 weights
  with one fp32 scale per output channel (symmetric, zero point 0); activations stay fp32 and are
  quantised dynamically per call (per tensor, uint8). The product is the project's own
  (:mod:`.kernels`: AMX or AVX-512 VNNI, one call per layer) where it loads, else fbgemm's, or
  oneDNN's in the token path's split layers on CPUs with VNNI or AMX; all give the same outputs.
  Depthwise/
  grouped convolutions, norms, the relative-position table and small layers (fewer than
  :data:`MIN_FEATURES` inputs or outputs, e.g. the final 16-bit latent projection whose signs
  are the tokens) stay fp32; the stage-boundary projections (:data:`KEEP_FP32`) and the
  compressor's last block keep fp32 activations on fp16 weights (:class:`PackedLinear`). On
  the token path (:data:`SPLIT_ACTIVATIONS`) each call's
  activations go through the kernel in two parts, a coarse one and its remainder, as extra rows
  of the same call: about 16-bit activations for one read of the weights.
  :func:`int8_calibration` (speech streamed through the fp32 model) lets
  :func:`set_precision` fit the int8 weights to the inputs each layer sees
  (:func:`quantize_weight`); without it each weight is rounded to the nearest step.
* ``"int4"``: int8, except that the decoder side's int8 layers (after the tokens) hold 4-bit
  weights with one scale per output channel and group of :data:`INT4_GROUP` inputs
  (:class:`Int4Linear`). The tokens are int8's to the bit; the decoder reads about half the
  bytes (full size: 115 -> 65 MB per chunk). The vocoder's waveform projection stays in
  floating point in both modes (:data:`KEEP_FLOAT`).

On the default model v7 (16 eval / 16 dev clips of 8 s, streamed) int8 tokens agreed with fp32
tokens on 98.24 % / 97.77 % with plain 8-bit activations, 99.05 % / 98.82 % with the split ones,
and 99.62 % / 99.56 % with the weights fitted to 16 train clips as well. Scaling activation
channels against the weights (SmoothQuant-style, 98.1-98.4 % / 97.9-98.2 %) and fitted weights
alone (97.78 % / 97.45 %) did not help: the loss was the 8-bit rounding of every activation, not
a few outlier channels.

Because int8 activations are quantised per call, int8 results depend slightly on how the input
is cut into calls and on which streams share a batch (the per-tensor range covers all rows of
the call); fp32 and bf16 results do not. The split activations make that small on the token
path (default model, int8 streaming against int8 offline tokens: 100.00 % / 99.98 % on the clips
above, 96.89 % / 96.17 % with plain 8-bit activations).

A quantised model keeps the official parameter names: an int8 layer stores ``<name>.weight``
as int8 in the official shape plus ``<name>.weight_scale`` (fp32, one per output channel), so
:func:`voip_codec.codec.loading.save_pretrained` writes small checkpoints that load strictly.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels
from .config import ConfigError
from .layers import linear_weight, own_convolutions_off, weight_version

if TYPE_CHECKING:
    from .model import FocalCodec

__all__ = [
    "CALIBRATION_FILE",
    "KEEP_FP32",
    "MIN_FEATURES",
    "PRECISIONS",
    "PackedLinear",
    "WINDOWED_CONVS",
    "Int4Linear",
    "Int8Linear",
    "INT4_GROUP",
    "KEEP_FLOAT",
    "SPLIT_ACTIVATIONS",
    "check_precision",
    "int8_calibration",
    "load_calibration",
    "model_precision",
    "previous_kernel_path",
    "save_calibration",
    "quantize_int4",
    "quantize_weight",
    "reference_kernels",
    "set_precision",
]

_M = TypeVar("_M", bound=nn.Module)

PRECISIONS = ("fp32", "bf16", "int8", "int4")
"""Supported precision names."""

MIN_FEATURES = 64
"""Layers with fewer input or output features than this stay in fp32 in int8 mode."""

KEEP_FP32 = ("feature_proj", "downscale")
"""Encoder-side stage-boundary projections that stay fp32 in int8 mode (by attribute name):
quantising them alone cost 1.5-2.7 points of token agreement each on the default model, for
about 1 % of the full-size weights. The decompressor's ``upscale`` projections are int8: they
come after the tokens (on the v7 default model, 8 eval clips, the decoded output's STOI against
fp32 output was 0.9247 with them int8 and 0.9241 with them fp32)."""


WINDOWED_CONVS = ("embedding",)
"""Dense convolutions of kernel > 1 (by attribute name) that int8 mode quantises: the vocoder's
kernel-7 embedding, whose forward multiplies unfolded windows (29 MB of fp32 weights read per
chunk at full size). It comes after the tokens, so it does not change them."""


SPLIT_ACTIVATIONS = ("encoder", "compressor")
"""Module paths (and their children) whose int8 layers quantise their activations in two parts
(:class:`Int8Linear` ``split``): the token path, where rounding flips token bits. Plain 8-bit
activations there cost the default model v7 1.4 points of token agreement (eval 97.70 %,
dev 97.41 %, against 99.05 % and 98.82 % split, 16 clips each); the decoder side only adds noise
to the audio and stays plain (the split costs about 0.15-0.2 ms per layer at batch 1)."""


def check_precision(name: object) -> str:
    """Validate a precision name.

    Raises:
        ConfigError: (a ``ValueError``) for anything but ``fp32``, ``bf16`` or ``int8``.
    """
    if not isinstance(name, str) or name not in PRECISIONS:
        raise ConfigError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    return name


@functools.lru_cache(maxsize=1)
def _has_vnni() -> bool:
    """True when the CPU multiplies u8 x s8 without 16-bit saturation (VNNI / AMX)."""
    return not kernels.cpu_flags().isdisjoint(("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.lru_cache(maxsize=1)
def _fbgemm_available() -> bool:
    try:
        engines = torch.backends.quantized.supported_engines
        return any(e in engines for e in ("x86", "fbgemm")) and hasattr(
            torch.ops.quantized, "linear_dynamic")
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def _onednn_int8() -> bool:
    """True when oneDNN's int8 product (``onednn.qlinear_pointwise``, the x86 kernels of torch's
    own quantisation flow; AMX where the CPU has it) can replace fbgemm's for the split layers:
    the build offers it and the CPU multiplies u8 x s8 at the full range (VNNI / AMX)."""
    return (_has_vnni() and bool(torch.backends.mkldnn.is_available())
            and hasattr(torch.ops.onednn, "qlinear_prepack")
            and hasattr(torch.ops.onednn, "qlinear_pointwise"))


def _quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: ``weight ~= q * scale[:, None]``, q in [-127, 127]."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


GPTQ_BLOCK = 128
"""Columns quantised together by :func:`quantize_weight` before the rest are corrected."""


def quantize_weight(weight: Tensor, moment: Tensor | None = None, damping: float = 0.01
                    ) -> tuple[Tensor, Tensor]:
    """Per-row symmetric int8 for an ``(out, in)`` weight, optionally fitted to its inputs.

    Without ``moment`` every weight is rounded to its nearest step (:func:`_quantize_rows`).
    With ``moment``, the ``(in, in)`` second moment ``E[x x^T]`` of the layer's inputs, the
    columns are rounded one after the other and each rounding error is pushed onto the columns
    not yet rounded, in the proportions that least change the outputs for such inputs (the
    optimal-brain-surgeon update, as GPTQ does it): the scales are the same, the int8 values
    differ. ``damping`` (times the mean diagonal) is added to the diagonal so that channels the
    inputs never use do not make the system singular.

    Returns:
        ``(q, scale)``: int8 ``(out, in)`` in [-127, 127] and fp32 ``(out,)``.
    """
    q, scale = _quantize_rows(weight)
    if moment is None:
        return q, scale
    w = weight.detach().double().clone()
    h = moment.detach().double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += torch.eye(len(h), dtype=h.dtype) * damping * torch.diagonal(h).mean()
    # upper Cholesky factor of the inverse: row j holds the update that column j's error
    # makes on the later columns
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    s = scale.double()[:, None]
    out = torch.empty_like(w)
    for lo in range(0, w.shape[1], GPTQ_BLOCK):
        hi = min(lo + GPTQ_BLOCK, w.shape[1])
        block = w[:, lo:hi].clone()
        errors = torch.empty_like(block)
        for j in range(hi - lo):
            col = block[:, j:j + 1]
            qj = torch.round(col / s).clamp(-127, 127)
            out[:, lo + j:lo + j + 1] = qj
            err = (col - qj * s) / u[lo + j, lo + j]
            block[:, j:] -= err * u[lo + j, lo + j:hi][None]
            errors[:, j:j + 1] = err
        w[:, hi:] -= errors @ u[lo:hi, hi:]
    return out.to(torch.int8), scale


_FloatLayer = nn.Linear | nn.Conv1d | nn.ConvTranspose1d
"""The float layers that :class:`Int8Linear` replaces."""


def _matrix(layer: _FloatLayer) -> Tensor:
    """The ``(out, in * kernel)`` matrix a layer multiplies (unfolded windows for kernel > 1)."""
    if isinstance(layer, nn.Conv1d) and layer.kernel_size != (1,):
        return layer.weight.reshape(layer.out_channels, -1)
    return linear_weight(layer)


def _kernel(layer: _FloatLayer) -> int:
    return layer.kernel_size[0] if isinstance(layer, nn.Conv1d) else 1


def _layout(layer: nn.Module) -> str:
    """The :class:`Int8Linear` layout that keeps ``layer``'s weight shape."""
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, nn.ConvTranspose1d):
        return "conv_transpose"
    if isinstance(layer, nn.Conv1d):
        return "conv"
    raise TypeError(f"cannot quantise {type(layer).__name__}")


def _weight_shape(layout: str, in_features: int, out_features: int, kernel: int = 1
                  ) -> tuple[int, ...]:
    """The replaced layer's weight shape for a layout (see :class:`Int8Linear`)."""
    if kernel < 1 or in_features % kernel or (kernel > 1 and layout != "conv"):
        raise ValueError(f"a kernel of {kernel} does not fit {in_features} inputs ({layout})")
    shapes = {"linear": (out_features, in_features),
              "conv": (out_features, in_features // kernel, kernel),
              "conv_transpose": (in_features, out_features, 1)}
    if layout not in shapes:
        raise ValueError(f"unknown layout {layout!r}")
    return shapes[layout]


def _rows(weight: Tensor, layout: str, out_features: int, in_features: int) -> Tensor:
    """A weight of :func:`_weight_shape` as the ``(out, in)`` matrix it multiplies by."""
    if layout == "conv_transpose":
        return weight[:, :, 0].t()
    return weight.reshape(out_features, in_features)


def _fbgemm_pack(q: Tensor, scale: Tensor, bias: Tensor | None) -> object:
    """fbgemm's packed weight of an int8 ``(out, in)`` matrix with per-row ``scale``."""
    with warnings.catch_warnings():
        # quantised *tensor* creation is deprecated in torch >= 2.10; the packed fbgemm
        # kernels themselves are not, and this is the documented way to feed them
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(
            q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qw, bias)


class Int8Linear(nn.Module):
    """A linear map with int8 weights and per-output-channel fp32 scales.

    Replaces an ``nn.Linear`` (``layout="linear"``, weight ``(out, in)``), a stride-1
    ``nn.Conv1d`` (``"conv"``, ``(out, in / kernel, kernel)``) or a kernel-1
    ``nn.ConvTranspose1d`` (``"conv_transpose"``, ``(in, out, 1)``). ``weight`` keeps the replaced
    layer's shape so the parameter names and shapes of the official layout are unchanged; it is
    applied to ``(..., in)`` inputs in all cases: for a convolution of kernel k > 1, ``in`` is
    ``channels * k`` and the input is the unfolded windows (:func:`~.layers.causal_windows`).

    With ``split=True`` the activations are quantised in two parts that go through the same
    int8 call as extra rows (see :func:`_split_rows`, :func:`_split_levels`): about 16-bit
    activations for the weight read of one call. ``split`` is a rule of the model's layout
    (:func:`_splits_activations`), not stored in checkpoints.

    Every layer runs on the project's own int8 product where it loads (:mod:`.kernels`, AMX
    or AVX-512 VNNI: quantisation, product and merge in one call, outputs equal to the products
    below; measured in the README's speed section). Otherwise a split layer runs on oneDNN's
    int8 matrix product where :func:`_onednn_int8` (AMX or AVX-512 VNNI): its rows are
    quantised here, on the step ``max|x| / 127`` itself, so no range row is needed and the
    results equal fbgemm's split to float rounding (about 1e-7 relative;
    for activations below fbgemm's smallest scale, 6.1e-5 per step, closer to the float
    product, as fbgemm raises that step). Measured on a Xeon with AMX, torch 2.13 (full-size
    int8 step, 140 chunks interleaved): encode 35.5 against 40.9 ms at 1 thread, 24.2 against
    26.5 ms at 2. The plain 8-bit layers (the decoder side) stay on fbgemm: on oneDNN, with
    their activations quantised by fbgemm's rule, decoding took 18.5 against 17.7 ms at 1 thread
    and 13.1 against 11.4 ms at 2 (its batch-1 refiner rows are slower there); batched ticks of
    4-6 calls showed no difference either way. Elsewhere every layer is on fbgemm.
    """

    weight: Tensor
    """int8 buffer in the replaced layer's shape."""
    weight_scale: Tensor
    """``(out,)`` fp32 buffer: the scale of each output channel."""
    bias: Tensor | None
    """``(out,)`` fp32 buffer, or None for a layer without bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool, layout: str = "linear",
                 kernel: int = 1, split: bool = False) -> None:
        super().__init__()
        shape = _weight_shape(layout, in_features, out_features, kernel)
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.split = split
        self.register_buffer("weight", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: object | None = None
        """fbgemm's packed weight (CPUs without VNNI/AMX, or builds without oneDNN's kernel)."""
        self._onednn: tuple[Tensor, Tensor] | None = None
        """oneDNN's packed weight and the weight zero points (all 0), for a split layer."""
        self.onednn = True
        """A split layer uses oneDNN's int8 product where the CPU offers it
        (:func:`reference_kernels` turns it off, for side-by-side measurements)."""
        self.own = True
        """Every int8 layer uses the project's own product (:mod:`.kernels`, AMX or AVX-512
        VNNI) where it loads: the same outputs as oneDNN's split and fbgemm's plain products,
        in one call per layer (:func:`reference_kernels` turns it off)."""
        self._own: tuple[Tensor, Tensor] | None = None
        """The own kernel's packed weight and int32 column sums."""
        self._stale = True  # packed weight out of date (packed on first use)

    @classmethod
    def from_float(cls, layer: _FloatLayer, moment: Tensor | None = None, split: bool = False
                   ) -> Int8Linear:
        """Quantise an ``nn.Linear``, a stride-1 ``Conv1d`` or a kernel-1 ``ConvTranspose1d``.

        Args:
            layer: the float layer.
            moment: ``(in, in)`` second moment of its inputs, to fit the int8 weights to them
                (:func:`quantize_weight`); None rounds each weight to the nearest step.
            split: quantise the activations in two parts (see the class docstring).
        """
        layout = _layout(layer)
        w2d = _matrix(layer)
        out_f, in_f = w2d.shape
        new = cls(in_f, out_f, layer.bias is not None, layout, _kernel(layer), split)
        q, scale = quantize_weight(w2d, moment)
        with torch.no_grad():
            new.weight.copy_(q.t().unsqueeze(-1) if layout == "conv_transpose"
                             else q.reshape(new.weight.shape))
            new.weight_scale.copy_(scale)
            if layer.bias is not None:
                assert new.bias is not None  # built with a bias exactly when the layer has one
                new.bias.copy_(layer.bias.detach().float())
        new._pack()
        return new

    def weight_rows(self) -> Tensor:
        """The int8 weight as ``(out, in)``."""
        return _rows(self.weight, self.layout, self.out_features, self.in_features)

    def dequantized(self) -> Tensor:
        """The fp32 weight ``(out, in)`` that the int8 weight represents."""
        return self.weight_rows().float() * self.weight_scale[:, None]

    def _pack(self) -> None:
        """(Re)build the packed weight from ``weight``/``weight_scale``/``bias``: the own
        kernel's where it loads, else oneDNN's for a split layer where :func:`_onednn_int8`, else
        fbgemm's (one of them: each is a copy of the weights)."""
        self._stale = False
        self._packed = self._onednn = self._own = None
        q = self.weight_rows().contiguous()
        kernel = kernels.library() if self.own else None
        if kernel is not None:
            self._own = kernel.pack(q)
            return
        if self.split and self.in_features > 1 and self.onednn and _onednn_int8():
            try:
                packed = torch.ops.onednn.qlinear_prepack(q, None)
            except RuntimeError:
                pass
            else:
                self._onednn = (packed, torch.zeros(self.out_features, dtype=torch.long))
                return
        if _fbgemm_available():
            self._packed = _fbgemm_pack(q, self.weight_scale, self.bias)

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._pack()

    fuses_gelu = True
    """``forward(x, gelu=True)`` is ``F.gelu(forward(x))`` (:func:`~.layers.linear_gelu`)."""

    def forward(self, x: Tensor, gelu: bool = False) -> Tensor:
        """Args: x ``(..., in)`` float32; ``gelu``: apply the exact GELU to the result (in the
        own kernel's epilogue where it runs, about 1e-7 from ``F.gelu``). Returns ``(..., out)``
        float32."""
        if self._stale:
            self._pack()
        if x.dtype != torch.float32:
            x = x.float()
        if x.dim() == 1:  # the kernels want a leading dimension
            return self.forward(x[None], gelu)[0]
        if self._own is not None and x.numel():
            # the kernels take the leading dimensions as they are
            kernel = kernels.library()
            assert kernel is not None  # packed by it
            y = kernel.linear(x, self.split and self.in_features > 1, *self._own,
                              self.weight_scale, self.bias, gelu=gelu)
            if y is not None:
                return y
            # NaN/inf in x: the float product passes them on, as fbgemm's does
            y = F.linear(x, self.dequantized(), self.bias)
        elif x.numel() == 0 or (self._packed is None and self._onednn is None
                                and self._own is None):
            y = F.linear(x, self.dequantized(), self.bias)
        elif self._onednn is not None:
            y = self._onednn_forward(x)
        elif self.split and self.in_features > 1:
            y = self._split_forward(x)
        else:
            y = torch.ops.quantized.linear_dynamic(x, self._packed, not _has_vnni())
        return F.gelu(y) if gelu else y

    def _onednn_forward(self, x: Tensor) -> Tensor:
        """``x`` (..., in) as split rows (:func:`_split_levels`, quantised by the layer, no
        range row) through oneDNN's int8 product, which takes the leading dimensions as they
        are (no reshapes). The bias is added after the rows are merged. Written for few
        operator calls: at batch 1 each one costs a few microseconds, about as much as the
        arithmetic of a 4-row layer's element-wise work (63 -> 50 us per call of a 64 x 64
        layer, 1 thread)."""
        assert self._onednn is not None
        amax = float(torch.linalg.vector_norm(x, math.inf))
        if not math.isfinite(amax):
            # no range to quantise on: the float product passes NaN/inf on, as fbgemm's does
            return F.linear(x, self.dequantized(), self.bias)
        q, step, zero, gain = _split_levels(x, amax, 127)
        packed, zeros = self._onednn
        y = torch.ops.onednn.qlinear_pointwise(q, step, zero, packed, self.weight_scale, zeros,
                                               None, 1.0, 0, torch.float32, "none", [], "")
        n = x.shape[0]
        out = torch.add(y[:n], y[n:], alpha=1.0 / gain)
        return out if self.bias is None else out.add_(self.bias)

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave oneDNN's packed weight out (an opaque tensor that does not
        copy); the copy packs its own on first use."""
        state = dict(super().__getstate__())
        if state.get("_onednn") is not None:
            state["_onednn"] = None
            state["_stale"] = True
        return state

    def _split_forward(self, x: Tensor) -> Tensor:
        """``x`` (..., in) as rows through :func:`_split_rows` and one fbgemm call."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        reduce_range = not _has_vnni()
        z, gain = _split_rows(x2, 63 if reduce_range else 127)
        y = torch.ops.quantized.linear_dynamic(z, self._packed, reduce_range)
        return self._merge_split(y, x2.shape[0], gain).reshape(*lead, self.out_features)

    def _merge_split(self, y: Tensor, rows: int, gain: float) -> Tensor:
        """The output rows of a split call: ``y[:rows] + (y[rows:2 rows] - bias) / gain`` (the
        remainder rows got the bias too; a range row after them is left out)."""
        out = torch.add(y[:rows], y[rows:2 * rows], alpha=1.0 / gain)
        if self.bias is not None:
            out.sub_(self.bias, alpha=1.0 / gain)
        return out

    def extra_repr(self) -> str:
        split = ", split" if self.split else ""
        return f"{self.in_features}, {self.out_features}, layout={self.layout}{split}"


INT4_GROUP = 64
"""Inputs per 4-bit scale (:class:`Int4Linear`). On the default model v7 (8 eval clips) groups
of 16, 32 and 64 gave about the same decoded STOI against fp32 output; the full-size layers read
the same time per chunk at 64 and 128 (the memory bounds the product), and 64 is the finer."""

KEEP_FLOAT = ("head.proj",)
"""Decoder-side layers (by path suffix) that int8 and int4 modes keep in floating point (fp32
activations on fp16 weights, :class:`PackedLinear`): the vocoder's waveform projection, whose
outputs are the samples. On the default model v7 (3 eval clips), one decoder-side layer at a
time on 4-bit weights cost at most 0.010 of decoded STOI against fp32 output, except this one:
0.155. Kept in floating point, the decoded STOI against fp32 output went from 0.9247 to 0.9997
at int8 and from 0.9043 to 0.9904 at int4 (8 eval clips of 8 s): nearly all of the decoder
side's int8 loss was this layer. At full size it is 0.5 MB of fp16 weights."""

_INT4_CLIPS = torch.linspace(0.5, 1.0, 21).tolist()
"""Fractions of a group's largest magnitude tried as its clipping level (:func:`quantize_int4`)."""


def quantize_int4(weight: Tensor, group: int = INT4_GROUP) -> tuple[Tensor, Tensor]:
    """Symmetric 4-bit weights with one scale per output row and group of ``group`` inputs.

    Each group's scale is chosen among clipping levels of 50-100 % of its largest magnitude
    (:data:`_INT4_CLIPS`) as the one with the least squared error; values are rounded to the
    nearest step in [-8, 7].

    Returns:
        ``(q, scale)``: int8 ``(out, in)`` holding values in [-8, 7], fp32 ``(out, ceil(in /
        group))``.
    """
    w = weight.detach().float()
    n, k = w.shape
    groups = -(-k // group)
    wg = F.pad(w, (0, groups * group - k)).view(n, groups, group)
    amax = wg.abs().amax(-1, keepdim=True).clamp(min=1e-12)

    def rounded(clip: float) -> tuple[Tensor, Tensor, Tensor]:
        s = amax * (clip / 7.0)
        q = torch.round(wg / s).clamp(-8, 7)
        return ((q * s - wg) ** 2).sum(-1, keepdim=True), q, s

    best_err, best_q, best_s = rounded(_INT4_CLIPS[0])
    for clip in _INT4_CLIPS[1:]:
        err, q, s = rounded(clip)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_q = torch.where(better, q, best_q)
        best_s = torch.where(better, s, best_s)
    return best_q.reshape(n, groups * group)[:, :k].to(torch.int8), best_s[..., 0]


class Int4Linear(nn.Module):
    """A linear map with 4-bit weights: one fp32 scale per output channel and group of
    :data:`INT4_GROUP` inputs (int4 mode's decoder side).

    Replaces the same layers as :class:`Int8Linear` and is applied to ``(..., in)`` inputs the
    same way (unfolded windows for a convolution of kernel > 1). ``weight`` holds two values
    per byte (``(out, ceil(in / 2))`` uint8; the low nibble is the even input, two's
    complement), ``weight_scale`` ``(out, ceil(in / group))``. The activations are quantised
    per call as the decoder side's int8 layers quantise theirs (fbgemm's plain rule, uint8).

    The product is the own kernel's (:mod:`.kernels`, AVX-512 VNNI: half the bytes of the int8
    product; measured in the README's speed section). Where the kernels do not load, the layer
    multiplies its dequantized fp32 weights (``F.linear``, kept after the first call): the same
    map to float rounding, with no speed gain.
    """

    weight: Tensor
    weight_scale: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 group: int = INT4_GROUP) -> None:
        super().__init__()
        if group < 8 or group % 8:
            raise ValueError(f"an int4 group must be a multiple of 8, not {group}")
        self.in_features = in_features
        self.out_features = out_features
        self.group = group
        self.register_buffer("weight", torch.zeros(out_features, -(-in_features // 2),
                                                   dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(out_features, -(-in_features // group)))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.own = True
        """Use the own 4-bit product where it loads (else the dequantized float product)."""
        self._own: tuple[Tensor, Tensor, Tensor] | None = None
        self._dense: Tensor | None = None
        self._stale = True

    @classmethod
    def from_float(cls, layer: _FloatLayer, group: int = INT4_GROUP) -> Int4Linear:
        """Quantise an ``nn.Linear``, a stride-1 ``Conv1d`` or a kernel-1 ``ConvTranspose1d``
        (:func:`quantize_int4`)."""
        w2d = _matrix(layer)
        out_f, in_f = w2d.shape
        new = cls(in_f, out_f, layer.bias is not None, group)
        q, scale = quantize_int4(w2d, group)
        with torch.no_grad():
            new.weight.copy_(_pack_nibbles(q))
            new.weight_scale.copy_(scale)
            if layer.bias is not None:
                assert new.bias is not None
                new.bias.copy_(layer.bias.detach().float())
        return new

    def values(self) -> Tensor:
        """The 4-bit weights as int8 ``(out, in)`` in [-8, 7]."""
        b = self.weight.to(torch.int16)
        pair = torch.stack([b & 15, b >> 4], -1).reshape(self.out_features, -1)
        return (pair - 16 * (pair >= 8).to(torch.int16))[:, :self.in_features].to(torch.int8)

    def dequantized(self) -> Tensor:
        """The fp32 weight ``(out, in)`` that the 4-bit weights represent."""
        q = self.values().float()
        scale = self.weight_scale.repeat_interleave(self.group, dim=1)[:, :self.in_features]
        return q * scale

    def _pack(self) -> None:
        self._stale = False
        self._own = self._dense = None
        kernel = kernels.library() if self.own else None
        if kernel is not None:
            self._own = kernel.pack_q4(self.values(), self.weight_scale, self.group)

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._stale = True

    fuses_gelu = True
    """As :attr:`Int8Linear.fuses_gelu`."""

    def forward(self, x: Tensor, gelu: bool = False) -> Tensor:
        """Args: x ``(..., in)`` float32; ``gelu`` as in :meth:`Int8Linear.forward`. Returns
        ``(..., out)`` float32."""
        if self._stale:
            self._pack()
        if x.dtype != torch.float32:
            x = x.float()
        if self._own is not None and x.numel():
            if x.dim() == 1:
                return self.forward(x[None], gelu)[0]
            kernel = kernels.library()
            assert kernel is not None  # packed by it
            y = kernel.q4_linear(x, False, self.group, *self._own, self.bias, gelu=gelu)
            if y is not None:
                return y
            # NaN/inf in x: the float product passes them on
        if self._dense is None:
            self._dense = self.dequantized()
        y = F.linear(x, self._dense, self.bias)
        return F.gelu(y) if gelu else y

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, group={self.group}"


def _pack_nibbles(q: Tensor) -> Tensor:
    """int8 ``(out, in)`` values in [-8, 7] as ``(out, ceil(in / 2))`` uint8, two per byte (the
    even input in the low nibble)."""
    n, k = q.shape
    u = F.pad(q.to(torch.int16), (0, k % 2)) & 15
    pairs = u.view(n, -1, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


def _split_rows(x: Tensor, levels: int) -> tuple[Tensor, float]:
    """Rows for one per-tensor 8-bit quantisation that carry ``x`` to about 16 bits.

    ``x`` is ``(rows, in)`` with ``in >= 2``. fbgemm's dynamic linear quantises its whole input
    with one step, ``(max - min) / 255`` (``/ 127`` with the reduced range of CPUs without VNNI;
    ``levels`` is 127 or 63), zero point ``-min / step``. This builds ``2 * rows + 1`` rows that make that step exactly
    ``d = max|x| / levels``:

    * rows ``[0, rows)``: ``x`` rounded to a multiple of ``d`` (quantised without error);
    * rows ``[rows, 2 rows)``: the rounding remainder (at most ``d / 2``) times ``2 * levels``,
      which fills the same range and is quantised with error ``d / 2``, so ``d / (4 levels)``
      after scaling back;
    * the last row pins the range: ``-(levels + 1) d`` and ``levels d`` (then zeros), so the
      step is ``d`` and the zero point an integer.

    The output rows are then ``y[:rows] + (y[rows:2 rows] - bias) / gain``.

    Returns:
        ``(rows, gain)``: the ``(2 * rows + 1, in)`` input and the remainder's factor.
    """
    rows, width = x.shape
    lo, hi = torch.aminmax(x)
    step = float(torch.maximum(hi, -lo)) / levels
    if step == 0.0:  # all zeros (a NaN or inf goes on to the output as it would unsplit)
        step = 1.0
    gain = 2.0 * levels
    z = x.new_empty(2 * rows + 1, width)
    coarse, fine = z[:rows], z[rows:2 * rows]
    torch.mul(x, 1.0 / step, out=coarse).round_().mul_(step)
    torch.sub(x, coarse, out=fine).mul_(gain)
    z[2 * rows].zero_()
    z[2 * rows, 0] = -(levels + 1) * step
    z[2 * rows, 1] = levels * step
    return z, gain


def _split_levels(x: Tensor, amax: float, levels: int) -> tuple[Tensor, float, int, float]:
    """:func:`_split_rows` for a kernel that takes the activations already quantised: ``x``
    ``(n, ...)`` becomes ``(2 n, ...)`` uint8, first the coarse rows ``round(x / d)``, then the
    remainders ``round((x / d - coarse) * gain)``, both about zero point ``levels + 1``, with
    ``d = amax / levels`` and ``amax = max|x|``; no range row is needed. Returns
    ``(rows, d, zero point, gain)``."""
    step = amax / levels
    if step == 0.0:
        step = 1.0
    gain = 2.0 * levels
    t = x * (1.0 / step)
    coarse = torch.round(t)
    fine = t.sub_(coarse).mul_(gain).round_()
    q = torch.cat([coarse, fine]).add_(levels + 1).to(torch.uint8)
    return q, step, levels + 1, gain


_LINEAR_PACKING = bool(torch.backends.mkldnn.is_available()) and hasattr(
    torch.ops.mkldnn, "_linear_pointwise")
"""Whether this torch build offers oneDNN linear maps on packed weights."""

_FP16_PACKING = _fbgemm_available() and hasattr(torch.ops.quantized, "linear_prepack_fp16")
"""Whether fbgemm's fp16-weight linear map (fp32 activations and accumulation) is offered."""

_FP16_MAX = 65504.0
"""Largest finite fp16; a weight beyond it keeps the fp32 product."""


class PackedLinear(nn.Module):
    """A linear map on packed weights, for the layers int8 mode keeps in floating point.

    Same layouts, shapes and parameter names as :class:`Int8Linear` (``weight`` in the replaced
    layer's shape, ``bias``), held as fp32 buffers, so int8 checkpoints keep the official keys.
    At batch 1 these layers read their weights once per chunk, so the layout and width of the
    weights read set their time. Where fbgemm offers it (x86), the product reads an fp16 copy
    of the weight and computes in fp32 (``quantized::linear_dynamic_fp16``; activations are not
    rounded): 2 bytes per weight instead of 4, relative error about 2e-4 against fp32 (int8
    weights: about 1e-2). Measured on a Xeon with AMX, torch 2.13, 4 rows: 1024 -> 1024 in
    0.14 ms against 0.26 ms for oneDNN's packed fp32 product at one thread, 1024 -> 4096 in
    0.87 ms against 1.16 ms, 4096 -> 1024 in 0.77 against 1.13 ms; for offline row counts
    (500) it is 7-19 % slower, which these few layers can afford, and offline and streaming
    keep one numeric path. Elsewhere it is oneDNN's packed fp32 product (1.70 ms against
    2.97 ms for unpacked ``F.linear`` at 1024 -> 4096), whose results differ from
    ``F.linear`` by summation order only (about 2e-6). The packed copy is rebuilt when the
    weight changes (its version counter or storage); without either it is ``F.linear``.
    """

    weight: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, layout: str = "linear"
                 ) -> None:
        super().__init__()
        shape = _weight_shape(layout, in_features, out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.register_buffer("weight", torch.zeros(shape))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: tuple[tuple[int, int, int], tuple[str, object] | None] | None = None
        self.fp16 = True
        """Read fp16 weights where fbgemm offers the product (:func:`reference_kernels` turns
        it off)."""
        self.own = True
        """Read them through the project's own fp16 product (:mod:`.kernels`) where it loads:
        the same sums as fbgemm's, in the same order (equal outputs); at batch 1 and 2 threads
        2.2-2.6x faster on 64 MB of layers, as fast on 256 MB, where the memory bounds both
        (:func:`reference_kernels` turns it off)."""

    @classmethod
    def from_float(cls, layer: _FloatLayer) -> PackedLinear:
        """The same map as an ``nn.Linear`` or a kernel-1 ``Conv1d``/``ConvTranspose1d``."""
        out_f, in_f = linear_weight(layer).shape
        new = cls(in_f, out_f, layer.bias is not None, _layout(layer))
        with torch.no_grad():
            new.weight.copy_(layer.weight.detach().float())
            if layer.bias is not None:
                assert new.bias is not None  # built with a bias exactly when the layer has one
                new.bias.copy_(layer.bias.detach().float())
        return new

    def weight_rows(self) -> Tensor:
        """The weight as ``(out, in)``."""
        return _rows(self.weight, self.layout, self.out_features, self.in_features)

    def _packed_weight(self, rows: int) -> tuple[str, object] | None:
        """``("own", fp16 weights packed for the own kernel)``, ``("fp16", fbgemm packed
        params)``, ``("fp32", oneDNN packed tensor)`` or None."""
        own = kernels.library() if self.fp16 and self.own else None
        fp16 = (_FP16_PACKING or own is not None) and self.fp16
        if not (fp16 or _LINEAR_PACKING) or torch.jit.is_tracing():
            return None
        version = weight_version(self.weight)
        if version is None:  # made in inference mode: in-place changes would not show
            return None
        key = (*version, 0 if fp16 else max(rows, 1))
        if self._packed is None or self._packed[0] != key:
            packed: tuple[str, object] | None = None
            w = self.weight_rows().contiguous()
            if own is not None and bool(w.abs().max() < _FP16_MAX):
                packed = ("own", own.pack_half(w))
            elif fp16 and _FP16_PACKING and bool(w.abs().max() < _FP16_MAX):
                packed = ("fp16", torch.ops.quantized.linear_prepack_fp16(w, self.bias))
            elif _LINEAR_PACKING:
                try:
                    packed = ("fp32", torch.ops.mkldnn._reorder_linear_weight(w, max(rows, 1)))
                except RuntimeError:
                    packed = None
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., in)`` float32. Returns ``(..., out)`` float32."""
        rows = x.numel() // self.in_features
        packed = self._packed_weight(rows) if x.dtype == torch.float32 else None
        if packed is None or rows == 0:
            return F.linear(x, self.weight_rows(), self.bias)
        if x.dim() == 1:  # the kernels want a leading dimension
            return self.forward(x[None])[0]
        if packed[0] == "own":
            lib = kernels.library()
            assert lib is not None  # packed by it
            packed_half = packed[1]
            assert isinstance(packed_half, Tensor)
            return lib.half_linear(x, packed_half, self.out_features, self.bias)
        if packed[0] == "fp16":  # fbgemm's fp16 product takes the leading dimensions as they are
            return torch.ops.quantized.linear_dynamic_fp16(x.contiguous(), packed[1])
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), packed[1],
                                               self.bias, "none", [], "")
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, layout={self.layout}"

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the packed weight out (oneDNN's opaque tensors do not copy);
        it is packed again on first use."""
        state = dict(super().__getstate__())
        state["_packed"] = None
        return state


def previous_kernel_path(model: nn.Module) -> str | None:
    """The earlier kernel path (:func:`reference_kernels`) to measure an int8 ``model``
    against on this machine: ``"onednn"`` where it runs the own kernels, ``"fbgemm"`` where it
    runs oneDNN's split products or fbgemm's fp16 ones, None where it already runs the oldest."""
    int8 = [m for m in model.modules() if isinstance(m, Int8Linear)]
    if kernels.library() is not None and any(m.own for m in int8):
        return "onednn"
    if (_onednn_int8() and any(m.onednn for m in int8)) or _FP16_PACKING:
        return "fbgemm"
    return None


def reference_kernels(model: _M, path: str = "fbgemm") -> _M:
    """Put an int8 model on the products of an earlier int8 path, in place, for
    ``voip-codec bench speed``'s side-by-side rows (same weights):

    * ``"onednn"``: the own kernels off (:mod:`.kernels`): oneDNN's product for the split
      layers, fbgemm's for the plain ones and for the fp16 weights of the floating-point layers,
      oneDNN's fp32 convolutions (also for the front end and the positional convolution,
      which int8 mode otherwise runs as three bf16 products and on fp16 weights). The same
      tokens to float rounding: the own int8 and fp16 products reproduce the others exactly,
      the convolutions differ in summation order, the front end by about 5e-6 relative and
      the positional convolution by its fp16 weights (about 2e-4).
    * ``"fbgemm"``: fbgemm's int8 product everywhere and fp32 weights for the floating-point
      layers (oneDNN's packed fp32 product). Same tokens to float rounding (fp16 weights: about
      2e-4 relative).
    """
    if path not in ("onednn", "fbgemm"):
        raise ValueError(f"unknown kernel path {path!r}; choose onednn or fbgemm")
    # every convolution on torch's kernels: also the front end's three bf16 products and the
    # positional convolution's fp16 weights, which only the own kernels offer
    own_convolutions_off(m.weight for m in model.modules() if isinstance(m, nn.Conv1d))
    for m in model.modules():
        if isinstance(m, Int8Linear):
            m.own = False
            m.onednn = m.onednn and path == "onednn"
            m._stale = True
        elif isinstance(m, PackedLinear):
            m.own = False
            m.fp16 = m.fp16 and path == "onednn"
            m._packed = None
    return model


def _fp32_subtrees(model: nn.Module) -> tuple[str, ...]:
    """Module paths kept entirely fp32 in int8 mode: the compressor's last block.

    The compressor's output signs are the tokens, so rounding in its last block flips bits
    directly. On the default model (8 eval clips) token agreement was 98.7 % with the whole
    compressor int8, 99.2 % with its last block fp32 and 99.3 % with all of it fp32; at full size
    each compressor block is about 50 MB of fp32 weights read per chunk, so only the last is kept.
    The trained default model v4 fell to 98.86 % with that rule; keeping the first transformer
    layer's feed-forward block fp32 as well raised it to 99.39 % (about 32 MB of fp32 weights at
    full size instead of 8 MB int8). That choice was made on those eval clips; on 8 dev clips
    the same two rules give 98.53 % and 98.57 % (the whole transformer fp32: 99.16 %), so the
    99 % target held on the eval clips only. The decoder side does not affect tokens.

    With the token path's activations split (:data:`SPLIT_ACTIVATIONS`) the first feed-forward
    block is int8 again: on the default model v7 (16 eval / 16 dev clips of 8 s) it made no
    difference uncalibrated (split, nearest rounding: 99.05 / 98.78 % with it fp32,
    99.05 / 98.82 % int8) and 0.1 point calibrated on 32 train clips (99.78 / 99.66 % and
    99.70 / 99.60 %), and int8 it reads 8 MB of weights per chunk at full size instead of 32 MB.
    The last compressor block int8 as well gave 99.43 / 99.04 % calibrated: kept fp32 for the
    margin."""
    out: list[str] = []
    layers = getattr(getattr(model, "compressor", None), "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        out.append(f"compressor.layers.{len(layers) - 1}")
    return tuple(out)


def _dense_conv(layer: nn.Module) -> TypeGuard[nn.Conv1d | nn.ConvTranspose1d]:
    """A ``Conv1d``/``ConvTranspose1d`` that is one matrix product per frame (or per window):
    one group, stride 1, dilation 1."""
    return (isinstance(layer, (nn.Conv1d, nn.ConvTranspose1d)) and layer.groups == 1
            and layer.stride == (1,) and layer.dilation == (1,))


def _int8_targets(model: nn.Module) -> list[tuple[nn.Module, str, _FloatLayer]]:
    """(parent, attribute, layer) of every layer that int8 mode quantises."""
    out: list[tuple[nn.Module, str, _FloatLayer]] = []
    keep = _fp32_subtrees(model)
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            child_path = f"{path}.{name}" if path else name
            if name in KEEP_FP32 or any(
                    child_path == k or child_path.startswith(k + ".") for k in keep) or any(
                    child_path == k or child_path.endswith("." + k) for k in KEEP_FLOAT):
                continue
            if isinstance(child, nn.Linear):
                dims = (child.in_features, child.out_features)
            elif _dense_conv(child) and (child.kernel_size == (1,) or name in WINDOWED_CONVS):
                dims = (child.in_channels, child.out_channels)
            else:
                continue
            if min(dims) >= MIN_FEATURES:
                out.append((parent, name, child))
    return out


def _pack_fp32_layers(model: nn.Module) -> None:
    """Swap the linear and kernel-1 layers that int8 mode leaves fp32 (with at least
    :data:`MIN_FEATURES` inputs and outputs) for :class:`PackedLinear`, put the WavLM front
    end's convolutions on three bf16 products where the CPU has AMX
    (:func:`~.layers.three_bf16_conv`) and its positional convolution on fp16 weights
    (:func:`~.layers.grouped_causal_conv`'s ``half``), both where the own kernels load (fp32
    elsewhere)."""
    from .wavlm import _ConvBlock, _PositionalConv

    for block in model.modules():
        if isinstance(block, _ConvBlock):
            block.three_bf16 = True
        elif isinstance(block, _PositionalConv):
            block.half_weights = True
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) or (_dense_conv(child)
                                                and child.kernel_size == (1,)):
                if min(linear_weight(child).shape) >= MIN_FEATURES:
                    setattr(parent, name, PackedLinear.from_float(child))


def model_precision(model: nn.Module) -> str:
    """``"int4"`` if any layer holds 4-bit weights, ``"int8"`` if any is int8, else ``"bf16"`` or
    ``"fp32"`` from the parameter dtype."""
    if any(isinstance(m, Int4Linear) for m in model.modules()):
        return "int4"
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        return "int8"
    dtypes = {p.dtype for p in model.parameters()}
    return "bf16" if torch.bfloat16 in dtypes else "fp32"


def _splits_activations(path: str) -> bool:
    """True for the int8 layers under :data:`SPLIT_ACTIVATIONS`."""
    return any(path == p or path.startswith(p + ".") for p in SPLIT_ACTIVATIONS)


def _four_bit(precision: str, path: str) -> bool:
    """True for the layers a model at ``precision`` holds on 4-bit weights: at int4, the
    decoder side's int8 targets (not :data:`SPLIT_ACTIVATIONS`)."""
    return precision == "int4" and not _splits_activations(path)


def _target_paths(model: nn.Module) -> list[tuple[str, nn.Module, str, _FloatLayer]]:
    """:func:`_int8_targets` with each layer's module path first."""
    paths = {id(m): name for name, m in model.named_modules()}
    return [(paths[id(layer)], parent, name, layer) for parent, name, layer in
            _int8_targets(model)]


class _Recorder(nn.Module):
    """Stands in for an int8 target during calibration: the float layer's map on ``(..., in)``
    inputs (as :class:`Int8Linear` is called), summing ``x x^T`` of what it sees."""

    def __init__(self, layer: _FloatLayer) -> None:
        super().__init__()
        self.layer = layer
        self.weight = _matrix(layer)
        self.total: Tensor | None = None
        self.count = 0

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.weight.shape[1]).double()
        if rows.shape[0]:
            moment = rows.t() @ rows
            self.total = moment if self.total is None else self.total + moment
            self.count += rows.shape[0]
        return F.linear(x, self.weight, self.layer.bias)


@torch.inference_mode()
def int8_calibration(model: FocalCodec, clips: Iterable[Tensor]) -> dict[str, Tensor]:
    """Input statistics of the token-path layers that int8 mode quantises (those under
    :data:`SPLIT_ACTIVATIONS`), for :func:`set_precision`.

    Each clip is streamed through the fp32 model chunk by chunk (``encode_step`` then
    ``decode_step``, as a call does); the inputs each int8 target sees give its second moment
    ``E[x x^T]``. Use speech the model was trained on, never the clips it is evaluated on. While
    it runs the targets are swapped for recording stand-ins (the model is restored after).

    Args:
        model: an fp32 model (left unchanged).
        clips: mono waveforms ``(samples,)`` or ``(1, samples)`` at the model's input rate; a
            tail shorter than a chunk is left out.

    Returns:
        ``{module path: (in, in) float64 moment}`` for the targets the clips reached.

    Raises:
        ConfigError: the model is not fp32.
    """
    if model_precision(model) != "fp32":
        raise ConfigError(f"calibrate the fp32 model, not a {model_precision(model)} one")
    # the token path only: the decoder side does not change tokens, and the vocoder's
    # embedding takes 7168 inputs (a 411 MB moment)
    targets = [t for t in _target_paths(model) if _splits_activations(t[0])]
    recorders = {path: _Recorder(layer) for path, _, _, layer in targets}
    for path, parent, name, _ in targets:
        setattr(parent, name, recorders[path])
    try:
        chunk = model.chunk_size
        for clip in clips:
            x = clip.reshape(1, -1).float()
            enc = dec = None
            for i in range(0, x.shape[1] // chunk * chunk, chunk):
                toks, enc = model.encode_step(x[:, i:i + chunk], enc)
                _, dec = model.decode_step(toks, dec)
    finally:
        for _, parent, name, layer in targets:
            setattr(parent, name, layer)
    return {path: r.total / r.count for path, r in recorders.items() if r.total is not None}


CALIBRATION_FILE = "int8_calibration.safetensors"
"""File name of a checkpoint folder's int8 calibration (:func:`save_calibration`)."""

_CALIBRATION_FINGERPRINT = "voip_codec.fingerprint"


def save_calibration(calibration: Mapping[str, Tensor], path: str | Path, fingerprint: bytes
                     ) -> None:
    """Write :func:`int8_calibration` moments (as fp32) with the fp32 model's fingerprint, so
    that a calibration is never applied to another model."""
    from safetensors.torch import save_file

    def triangle(m: Tensor) -> Tensor:  # a moment is symmetric: its upper triangle, as fp32
        rows, cols = torch.triu_indices(m.shape[0], m.shape[1])
        return m[rows, cols].float().contiguous()

    save_file({k: triangle(v) for k, v in calibration.items()}, str(path),
              metadata={_CALIBRATION_FINGERPRINT: fingerprint.hex()})


def _symmetric(triangle: Tensor) -> Tensor:
    """The symmetric ``(n, n)`` matrix of a stored upper triangle (``n (n + 1) / 2`` values)."""
    n = int((math.isqrt(8 * triangle.numel() + 1) - 1) // 2)
    if n * (n + 1) // 2 != triangle.numel() or triangle.dim() != 1:
        raise ValueError(f"{tuple(triangle.shape)} is not the upper triangle of a square matrix")
    rows, cols = torch.triu_indices(n, n)
    out = triangle.new_zeros(n, n)
    out[rows, cols] = triangle
    out[cols, rows] = triangle
    return out


def load_calibration(path: str | Path, fingerprint: bytes) -> dict[str, Tensor]:
    """Read a :func:`save_calibration` file made for the model of ``fingerprint``.

    Raises:
        ConfigError: the file is unreadable or was made for another model.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            made_for = (f.metadata() or {}).get(_CALIBRATION_FINGERPRINT)
            moments = {k: _symmetric(f.get_tensor(k).double()) for k in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ConfigError(f"cannot read the int8 calibration {path}: {exc}") from exc
    if made_for != fingerprint.hex():
        raise ConfigError(f"{path} was made for another model (fingerprint {made_for}, this "
                          f"model {fingerprint.hex()}); make it again with `python -m "
                          "training.calibrate`")
    return moments


def set_precision(model: _M, precision: str, calibration: Mapping[str, Tensor] | None = None
                  ) -> _M:
    """Convert an fp32 model in place to ``precision`` and return it.

    The model's :meth:`~voip_codec.codec.model.FocalCodec.fingerprint` is kept: tokens do not
    depend on the precision they were produced at, and token files stay exchangeable.

    Args:
        model: an fp32 model.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``.
        calibration: for int8, :func:`int8_calibration` of this model: the int8 weights of the
            layers it covers are fitted to those inputs (:func:`quantize_weight`), the others
            rounded to the nearest step. None takes the model's own ``int8_calibration`` (read
            from its checkpoint folder), if any. The fitted weights are ordinary int8 weights, so an int8
            checkpoint saved from the model keeps them.

    Raises:
        ConfigError: unknown precision, the model is not fp32 (conversions are one-way), or
            the calibration does not match the model.
    """
    check_precision(precision)
    current = model_precision(model)
    if current == precision:
        return model
    if current != "fp32":
        raise ConfigError(f"cannot convert a {current} model to {precision}; start from fp32")
    fingerprint = getattr(model, "fingerprint", None)
    if callable(fingerprint) and getattr(model, "_fingerprint", None) is None:
        model._fingerprint = fingerprint()  # type: ignore[assignment]
    if precision == "bf16":
        model.to(torch.bfloat16)
    else:
        targets = _target_paths(model)
        if calibration is None:
            calibration = getattr(model, "int8_calibration", None)
        moments = dict(calibration or {})
        extra = set(moments) - {path for path, _, _, _ in targets}
        if extra:
            raise ConfigError(f"calibration names {len(extra)} layer(s) this model does not "
                              f"quantise, e.g. {sorted(extra)[0]}: calibrate this model")
        for path, _, _, layer in targets:
            width = _matrix(layer).shape[1]
            if path in moments and tuple(moments[path].shape) != (width, width):
                raise ConfigError(f"calibration of {path} is {tuple(moments[path].shape)}, the "
                                  f"layer takes {width} inputs: calibrate this model")
        for path, parent, name, layer in targets:
            if _four_bit(precision, path):
                setattr(parent, name, Int4Linear.from_float(layer))
            else:
                setattr(parent, name, Int8Linear.from_float(layer, moments.get(path),
                                                            _splits_activations(path)))
        _pack_fp32_layers(model)
    return model.eval()


def int8_skeleton(model: _M, precision: str = "int8") -> _M:
    """Swap the int8 targets of an fp32 model for empty :class:`Int8Linear` shells
    (:class:`Int4Linear` on int4 mode's decoder side) to load an int8 or int4 checkpoint into
    without quantising the random initial weights first."""
    for path, parent, name, layer in _target_paths(model):
        out_f, in_f = _matrix(layer).shape
        if _four_bit(precision, path):
            setattr(parent, name, Int4Linear(in_f, out_f, layer.bias is not None))
            continue
        setattr(parent, name, Int8Linear(in_f, out_f, layer.bias is not None, _layout(layer),
                                         _kernel(layer), _splits_activations(path)))
    _pack_fp32_layers(model)
    return model.eval()
