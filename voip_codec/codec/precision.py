"""Lower-precision inference: bf16 models and int8 weight quantisation.

At batch 1 a streaming step is bound by reading the weights (about 1 GB of fp32 per 80 ms
chunk at full size), so smaller weights are faster:

* ``"fp32"``: the reference numerics (conformance is checked at this precision).
* ``"bf16"``: every floating-point tensor in bfloat16; activations compute in bfloat16.
* ``"int8"``: the linear layers, the kernel-1 (pointwise) convolutions and the dense stride-1
  convolutions (the vocoder's kernel-7 embedding, applied to unfolded windows) hold int8 weights
  with one fp32 scale per output channel (symmetric, zero point 0); activations stay fp32 and are
  quantised dynamically per call (per tensor, asymmetric uint8) by the fbgemm kernel, which uses
  AVX-512 VNNI where the CPU has it. Depthwise/grouped convolutions, norms, the relative-position
  table, small layers (fewer than :data:`MIN_FEATURES` inputs or outputs, e.g. the final
  16-bit latent projection whose signs are the tokens) and the stage-boundary projections
  (:data:`KEEP_FP32`) stay fp32.

Because int8 activations are quantised per call, int8 results depend slightly on how the input
is cut into calls and on which streams share a batch (the per-tensor range covers all rows of
the call); fp32 and bf16 results do not.

A quantised model keeps the official parameter names: an int8 layer stores ``<name>.weight``
as int8 in the official shape plus ``<name>.weight_scale`` (fp32, one per output channel), so
:func:`voip_codec.codec.loading.save_pretrained` writes small checkpoints that load strictly.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ConfigError
from .layers import linear_weight

__all__ = [
    "KEEP_FP32",
    "MIN_FEATURES",
    "PRECISIONS",
    "PackedLinear",
    "WINDOWED_CONVS",
    "Int8Linear",
    "check_precision",
    "model_precision",
    "set_precision",
]

_M = TypeVar("_M", bound=nn.Module)

PRECISIONS = ("fp32", "bf16", "int8")
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
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.lru_cache(maxsize=1)
def _fbgemm_available() -> bool:
    try:
        engines = torch.backends.quantized.supported_engines
        return any(e in engines for e in ("x86", "fbgemm")) and hasattr(
            torch.ops.quantized, "linear_dynamic")
    except (AttributeError, RuntimeError):
        return False


def _quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: ``weight ~= q * scale[:, None]``, q in [-127, 127]."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


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


class Int8Linear(nn.Module):
    """A linear map with int8 weights and per-output-channel fp32 scales.

    Replaces an ``nn.Linear`` (``layout="linear"``, weight ``(out, in)``), a stride-1
    ``nn.Conv1d`` (``"conv"``, ``(out, in / kernel, kernel)``) or a kernel-1
    ``nn.ConvTranspose1d`` (``"conv_transpose"``, ``(in, out, 1)``). ``weight`` keeps the replaced
    layer's shape so the parameter names and shapes of the official layout are unchanged; it is
    applied to ``(..., in)`` inputs in all cases: for a convolution of kernel k > 1, ``in`` is
    ``channels * k`` and the input is the unfolded windows (:func:`~.layers.causal_windows`).
    """

    weight: Tensor
    """int8 buffer in the replaced layer's shape."""
    weight_scale: Tensor
    """``(out,)`` fp32 buffer: the scale of each output channel."""
    bias: Tensor | None
    """``(out,)`` fp32 buffer, or None for a layer without bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool, layout: str = "linear",
                 kernel: int = 1) -> None:
        super().__init__()
        if kernel < 1 or in_features % kernel or (kernel > 1 and layout != "conv"):
            raise ValueError(f"a kernel of {kernel} does not fit {in_features} inputs "
                             f"({layout})")
        shapes = {"linear": (out_features, in_features),
                  "conv": (out_features, in_features // kernel, kernel),
                  "conv_transpose": (in_features, out_features, 1)}
        if layout not in shapes:
            raise ValueError(f"unknown layout {layout!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.register_buffer("weight", torch.zeros(shapes[layout], dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: object | None = None
        self._stale = True  # packed weight out of date (packed on first use)

    @classmethod
    def from_float(cls, layer: _FloatLayer) -> Int8Linear:
        """Quantise an ``nn.Linear``, a stride-1 ``Conv1d`` or a kernel-1 ``ConvTranspose1d``."""
        layout = _layout(layer)
        w2d = _matrix(layer)
        out_f, in_f = w2d.shape
        new = cls(in_f, out_f, layer.bias is not None, layout, _kernel(layer))
        q, scale = _quantize_rows(w2d)
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
        if self.layout == "conv_transpose":
            return self.weight[:, :, 0].t()
        return self.weight.reshape(self.out_features, self.in_features)

    def dequantized(self) -> Tensor:
        """The fp32 weight ``(out, in)`` that the int8 weight represents."""
        return self.weight_rows().float() * self.weight_scale[:, None]

    def _pack(self) -> None:
        """(Re)build the fbgemm packed weight from ``weight``/``weight_scale``/``bias``."""
        self._stale = False
        if not _fbgemm_available():
            self._packed = None
            return
        q = self.weight_rows().contiguous()
        with warnings.catch_warnings():
            # quantised *tensor* creation is deprecated in torch >= 2.10; the packed fbgemm
            # kernels themselves are not, and this is the documented way to feed them
            warnings.simplefilter("ignore", UserWarning)
            qw = torch._make_per_channel_quantized_tensor(
                q, self.weight_scale.double(), torch.zeros(self.out_features, dtype=torch.long),
                0)
        self._packed = torch.ops.quantized.linear_prepack(qw, self.bias)

    def _load_from_state_dict(self, *args: object, **kwargs: object) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[arg-type]
        self._pack()

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., in)`` float32. Returns ``(..., out)`` float32."""
        if self._stale:
            self._pack()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).float().contiguous()
        if self._packed is None or x2.shape[0] == 0:
            y = F.linear(x2, self.dequantized(), self.bias)
        else:
            y = torch.ops.quantized.linear_dynamic(x2, self._packed, not _has_vnni())
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, layout={self.layout}"


_LINEAR_PACKING = bool(torch.backends.mkldnn.is_available()) and hasattr(
    torch.ops.mkldnn, "_linear_pointwise")
"""Whether this torch build offers oneDNN linear maps on packed weights."""


class PackedLinear(nn.Module):
    """An fp32 linear map whose weight oneDNN packs once, for the layers int8 mode keeps fp32.

    Same layouts, shapes and parameter names as :class:`Int8Linear` (``weight`` in the replaced
    layer's shape, ``bias``), held as fp32 buffers, so int8 checkpoints keep the official keys.
    At batch 1 these layers read their weights once per chunk, and the packed oneDNN product
    reads them faster than the unpacked one: one thread, 4 rows, 1024 -> 4096: 1.70 ms against
    2.97 ms (a Xeon with AMX, torch 2.13; 16 MB of fp32 weights per layer). Results differ from
    ``F.linear`` by summation order only (about 2e-6). The packed copy is rebuilt when the
    weight changes (its version counter or storage); without oneDNN it is ``F.linear``.
    """

    weight: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, layout: str = "linear"
                 ) -> None:
        super().__init__()
        shapes = {"linear": (out_features, in_features), "conv": (out_features, in_features, 1),
                  "conv_transpose": (in_features, out_features, 1)}
        if layout not in shapes:
            raise ValueError(f"unknown layout {layout!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.layout = layout
        self.register_buffer("weight", torch.zeros(shapes[layout]))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self._packed: tuple[tuple[int, int], Tensor | None] | None = None

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
        if self.layout == "conv_transpose":
            return self.weight[:, :, 0].t()
        return self.weight.reshape(self.out_features, self.in_features)

    def _packed_weight(self, rows: int) -> Tensor | None:
        if not _LINEAR_PACKING or torch.jit.is_tracing():
            return None
        try:
            key = (self.weight._version, self.weight.data_ptr())
        except RuntimeError:  # made in inference mode: in-place changes would not show
            return None
        if self._packed is None or self._packed[0] != key:
            try:
                packed: Tensor | None = torch.ops.mkldnn._reorder_linear_weight(
                    self.weight_rows().contiguous(), max(rows, 1))
            except RuntimeError:
                packed = None
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: Tensor) -> Tensor:
        """Args: x ``(..., in)`` float32. Returns ``(..., out)`` float32."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        packed = self._packed_weight(x2.shape[0]) if x2.dtype == torch.float32 else None
        if packed is None:
            y = F.linear(x2, self.weight_rows(), self.bias)
        else:
            y = torch.ops.mkldnn._linear_pointwise(x2, packed, self.bias, "none", [], "")
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, layout={self.layout}"

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles leave the packed weight out (oneDNN's opaque tensors do not copy);
        it is packed again on first use."""
        state = dict(super().__getstate__())
        state["_packed"] = None
        return state


def _fp32_subtrees(model: nn.Module) -> tuple[str, ...]:
    """Module paths kept entirely fp32 in int8 mode: the compressor's last block and the first
    WavLM layer's feed-forward block.

    The compressor's output signs are the tokens, so rounding in its last block flips bits
    directly. On the default model (8 eval clips) token agreement was 98.7 % with the whole
    compressor int8, 99.2 % with its last block fp32 and 99.3 % with all of it fp32; at full size
    each compressor block is about 50 MB of fp32 weights read per chunk, so only the last is kept.
    The trained default model v4 fell to 98.86 % with that rule; keeping the first transformer
    layer's feed-forward block fp32 as well raised it to 99.39 % (about 32 MB of fp32 weights at
    full size instead of 8 MB int8). That choice was made on those eval clips; on 8 dev clips
    the same two rules give 98.53 % and 98.57 % (the whole transformer fp32: 99.16 %), so the
    99 % target holds on the eval clips only. The decoder side does not affect tokens."""
    out: list[str] = []
    layers = getattr(getattr(model, "compressor", None), "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        out.append(f"compressor.layers.{len(layers) - 1}")
    transformer = getattr(getattr(model, "encoder", None), "encoder", None)
    blocks = getattr(transformer, "layers", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks):
        out.append("encoder.encoder.layers.0.feed_forward")
    return tuple(out)


def _int8_targets(model: nn.Module) -> list[tuple[nn.Module, str, _FloatLayer]]:
    """(parent, attribute, layer) of every layer that int8 mode quantises."""
    out: list[tuple[nn.Module, str, _FloatLayer]] = []
    keep = _fp32_subtrees(model)
    for path, parent in model.named_modules():
        for name, child in parent.named_children():
            child_path = f"{path}.{name}" if path else name
            if name in KEEP_FP32 or any(
                    child_path == k or child_path.startswith(k + ".") for k in keep):
                continue
            if isinstance(child, nn.Linear):
                dims = (child.in_features, child.out_features)
            elif isinstance(child, (nn.Conv1d, nn.ConvTranspose1d)) and (
                    child.groups == 1 and child.stride == (1,) and child.dilation == (1,)
                    and (child.kernel_size == (1,) or name in WINDOWED_CONVS)):
                dims = (child.in_channels, child.out_channels)
            else:
                continue
            if min(dims) >= MIN_FEATURES:
                out.append((parent, name, child))
    return out


def _pack_fp32_layers(model: nn.Module) -> None:
    """Swap the linear and kernel-1 layers that int8 mode leaves fp32 (with at least
    :data:`MIN_FEATURES` inputs and outputs) for :class:`PackedLinear`."""
    for _, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) or (
                    isinstance(child, (nn.Conv1d, nn.ConvTranspose1d))
                    and child.kernel_size == (1,) and child.groups == 1
                    and child.stride == (1,) and child.dilation == (1,)):
                if min(linear_weight(child).shape) >= MIN_FEATURES:
                    setattr(parent, name, PackedLinear.from_float(child))


def model_precision(model: nn.Module) -> str:
    """``"int8"`` if any layer is int8, else ``"bf16"`` or ``"fp32"`` from the parameter dtype."""
    if any(isinstance(m, Int8Linear) for m in model.modules()):
        return "int8"
    dtypes = {p.dtype for p in model.parameters()}
    return "bf16" if torch.bfloat16 in dtypes else "fp32"


def set_precision(model: _M, precision: str) -> _M:
    """Convert an fp32 model in place to ``precision`` and return it.

    The model's :meth:`~voip_codec.codec.model.FocalCodec.fingerprint` is kept: tokens do not
    depend on the precision they were produced at, and token files stay exchangeable.

    Raises:
        ConfigError: unknown precision, or the model is not fp32 (conversions are one-way).
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
        for parent, name, layer in _int8_targets(model):
            setattr(parent, name, Int8Linear.from_float(layer))
        _pack_fp32_layers(model)
    return model.eval()


def int8_skeleton(model: _M) -> _M:
    """Swap the int8 targets of an fp32 model for empty :class:`Int8Linear` shells (to load an
    int8 checkpoint into without quantising the random initial weights first)."""
    for parent, name, layer in _int8_targets(model):
        out_f, in_f = _matrix(layer).shape
        setattr(parent, name, Int8Linear(in_f, out_f, layer.bias is not None, _layout(layer),
                                         _kernel(layer)))
    _pack_fp32_layers(model)
    return model.eval()
