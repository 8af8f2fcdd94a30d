"""Causal focal-modulation compressor (``FocalEncoder``) and decompressor (``FocalDecoder``).

See ``shared/docs/focalcodec-stream-spec.md`` §2.4 and §2.6. Parameter names mirror the official
checkpoints (``compressor.layers.0.focal_block.modulation.layers.2.0.weight``, ...).

Each focal level is a causal depthwise convolution whose left context (the last ``kernel - 1``
frames of its input) is carried in the state; the first call of a stream replicates the first
frame. Kernel-1 convolutions are computed as matrix products and carry no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .config import FocalDecoderConfig, FocalEncoderConfig
from .layers import (
    DynamicTanh,
    FeedForward,
    Snake,
    causal_extend,
    depthwise_causal_conv,
    linear_gelu,
    modules_as,
    pointwise,
)
from .state import StreamState

__all__ = ["FocalDecoder", "FocalEncoder", "FocalState"]


@dataclass
class FocalState(StreamState):
    """Streaming state of a focal stack: per layer, per focal level, ``(B, kernel - 1, dim)``."""

    contexts: list[list[Tensor]]


class _FocalModulation(nn.Module):
    def __init__(self, dim: int, window: int, level: int, factor: int, global_kernel: int
                 ) -> None:
        super().__init__()
        self.dim = dim
        self.level = level
        self.in_proj = nn.Linear(dim, 2 * dim + level + 1)
        kernels = [factor * i + window for i in range(level)] + [global_kernel]
        # official naming: layers.<level>.0 is the depthwise conv of a (conv, GELU) pair
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Conv1d(dim, dim, k, groups=dim)) for k in kernels
        )
        self.context_proj = nn.Conv1d(dim, dim, 1)
        self.out_proj = nn.Linear(dim, dim)

    def _level_convs(self) -> list[nn.Conv1d]:
        """The depthwise convolution of each focal level (``layers.<level>.0``)."""
        return modules_as((seq[0] for seq in modules_as(self.layers, nn.Sequential)), nn.Conv1d)

    def forward(self, x: Tensor, contexts: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        h = self.in_proj(x)
        query = h[..., :self.dim]
        ctx = h[..., self.dim:2 * self.dim]
        gates = h[..., 2 * self.dim:]
        total: Tensor | None = None
        new_contexts = []
        for i, conv in enumerate(self._level_convs()):
            ext, new_ctx = causal_extend(ctx, None if contexts is None else contexts[i],
                                         conv.kernel_size[0] - 1, "replicate")
            new_contexts.append(new_ctx)
            ctx = depthwise_causal_conv(ext, conv.weight, conv.bias, gelu=True)
            term = ctx * gates[..., i:i + 1]
            total = term if total is None else total + term
        assert total is not None
        modulator = pointwise(self.context_proj, total)
        return self.out_proj(query * modulator), new_contexts


class _FocalBlock(nn.Module):
    def __init__(self, dim: int, window: int, level: int, factor: int, global_kernel: int,
                 tanh_init: float) -> None:
        super().__init__()
        self.modulation_norm = DynamicTanh(tanh_init)
        self.modulation = _FocalModulation(dim, window, level, factor, global_kernel)
        self.feed_forward_norm = DynamicTanh(tanh_init)
        self.feed_forward = FeedForward(dim, 4 * dim)

    def forward(self, x: Tensor, contexts: list[Tensor] | None) -> tuple[Tensor, list[Tensor]]:
        y, contexts = self.modulation(self.modulation_norm(x), contexts)
        x = x + y
        x = x + self.feed_forward(self.feed_forward_norm(x))
        return x, contexts


class _DownScale(nn.Module):
    """Kernel-1 Conv1d (per-frame linear map) followed by Snake."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.downscale = nn.Conv1d(c_in, c_out, 1)
        self.activation = Snake(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(pointwise(self.downscale, x))


class _UpScale(nn.Module):
    """Snake followed by a kernel-1 ConvTranspose1d (weight layout ``(in, out, 1)``)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.activation = Snake(c_in)
        self.upscale = nn.ConvTranspose1d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return pointwise(self.upscale, self.activation(x))


class _FocalDownScale(nn.Module):
    def __init__(self, c_in: int, c_out: int, config: FocalEncoderConfig) -> None:
        super().__init__()
        self.downscale = _DownScale(c_in, c_out)
        self.focal_block = _FocalBlock(c_out, config.focal_window, config.focal_level,
                                       config.focal_factor, config.window_size,
                                       config.tanhscale_init)


class _FocalUpScale(nn.Module):
    def __init__(self, c_in: int, c_out: int, config: FocalDecoderConfig, global_kernel: int
                 ) -> None:
        super().__init__()
        self.focal_block = _FocalBlock(c_in, config.focal_window, config.focal_level,
                                       config.focal_factor, global_kernel, config.tanhscale_init)
        self.upscale = _UpScale(c_in, c_out)


class _ChunkFeedForward(nn.Module):
    """Refiner: a residual feed-forward over non-overlapping blocks of ``chunk`` frames."""

    def __init__(self, chunk: int, dim: int) -> None:
        super().__init__()
        self.chunk = chunk
        self.in_proj = nn.Linear(chunk * dim, chunk * dim)
        self.out_proj = nn.Linear(chunk * dim, chunk * dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        pad = (-T) % self.chunk
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        v = x.reshape(B, -1, self.chunk * C)
        v = v + self.out_proj(linear_gelu(self.in_proj, v))
        return v.reshape(B, -1, C)[:, :T]


class FocalEncoder(nn.Module):
    """Compressor: features ``(B, T, input_dim)`` -> raw latents ``(B, T, code_dim)``."""

    def __init__(self, config: FocalEncoderConfig) -> None:
        super().__init__()
        self.config = config
        dims = (config.input_dim, *config.hidden_dims)
        self.layers = nn.ModuleList(
            _FocalDownScale(dims[i], dims[i + 1], config) for i in range(len(config.hidden_dims))
        )
        self.out_proj = nn.Linear(dims[-1], config.output_dim)

    def forward(self, x: Tensor, state: FocalState | None = None) -> tuple[Tensor, FocalState]:
        """Args: x ``(B, T, input_dim)``; state or None at stream start.

        Returns: ``(latents (B, T, output_dim), state)``.
        """
        contexts = []
        for i, layer in enumerate(modules_as(self.layers, _FocalDownScale)):
            x = layer.downscale(x)
            x, ctx = layer.focal_block(x, None if state is None else state.contexts[i])
            contexts.append(ctx)
        return self.out_proj(x), FocalState(contexts)


class FocalDecoder(nn.Module):
    """Decompressor: codes ``(B, T, code_dim)`` -> features ``(B, T, output_dim)``.

    With ``lookahead_size > 0`` a refiner mixes each aligned block of ``1 + lookahead`` frames;
    streaming calls must then start on a block boundary and carry whole blocks.
    """

    def __init__(self, config: FocalDecoderConfig) -> None:
        super().__init__()
        self.config = config
        dims = (*config.hidden_dims, config.output_dim)
        self.in_proj = nn.Linear(config.input_dim, dims[0])
        n = len(config.hidden_dims)
        self.layers = nn.ModuleList(
            _FocalUpScale(dims[i], dims[i + 1], config,
                          config.window_size if i < n - 1 else config.last_window_size)
            for i in range(n)
        )
        self.block = 1 + config.lookahead_size
        self.refiner = _ChunkFeedForward(self.block, dims[-1]) if config.lookahead_size else None

    def forward(
        self, codes: Tensor, state: FocalState | None = None, taps: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, FocalState]:
        """Args: codes ``(B, T, input_dim)``; state or None; taps gets ``"pre_refiner"``.

        Returns: ``(features (B, T, output_dim), state)``.
        """
        x = self.in_proj(codes)
        contexts = []
        for i, layer in enumerate(modules_as(self.layers, _FocalUpScale)):
            x, ctx = layer.focal_block(x, None if state is None else state.contexts[i])
            x = layer.upscale(x)
            contexts.append(ctx)
        if taps is not None:
            taps["pre_refiner"] = x
        if self.refiner is not None:
            x = self.refiner(x)
        return x, FocalState(contexts)
