"""Causal WaveNeXt vocoder: features at 50 Hz -> 24 kHz waveform, 480 samples per frame.

ConvNeXt backbone with causal convolutions whose first-call context is zeros (unlike every other
module), then a per-frame linear head reshaped to samples and clamped to [-1, 1]. Nothing is held
back: every frame's samples come out at once. See spec §2.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import WaveNeXtConfig
from .layers import (
    causal_extend,
    causal_windows,
    depthwise_causal_conv,
    grouped_causal_conv,
    linear_gelu,
)
from .state import StreamState

__all__ = ["WaveNeXt", "WaveNeXtState"]


@dataclass
class WaveNeXtState(StreamState):
    """Per convolution (embedding, then each block's depthwise conv): ``(B, kernel - 1, C)``."""

    contexts: list[Tensor]


class _Block(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, kernel: int, gamma: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, ffn_dim)
        self.pwconv2 = nn.Linear(ffn_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), gamma))

    def forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        ext, context = causal_extend(x, context, self.dwconv.kernel_size[0] - 1, "zeros")
        h = depthwise_causal_conv(ext, self.dwconv.weight, self.dwconv.bias)
        h = self.pwconv2(linear_gelu(self.pwconv1, self.norm(h)))
        return x + self.gamma * h, context


class _Backbone(nn.Module):
    def __init__(self, config: WaveNeXtConfig) -> None:
        super().__init__()
        gamma = config.layerscale_init or 1.0 / config.num_layers
        self.embedding = nn.Conv1d(config.input_dim, config.dim, config.kernel_size)
        self.input_norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.layers = nn.ModuleList(
            _Block(config.dim, config.ffn_dim, config.kernel_size, gamma)
            for _ in range(config.num_layers)
        )
        self.output_norm = nn.LayerNorm(config.dim, eps=1e-6)


class _Head(nn.Module):
    def __init__(self, dim: int, hop: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hop)


class WaveNeXt(nn.Module):
    """Vocoder: ``(B, T, input_dim)`` -> ``(B, T * hop_length)`` samples in [-1, 1]."""

    def __init__(self, config: WaveNeXtConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = _Backbone(config)
        self.head = _Head(config.dim, config.hop_length)

    def forward(
        self, x: Tensor, state: WaveNeXtState | None = None, taps: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, WaveNeXtState]:
        """Args: features ``(B, T, input_dim)``; state or None; taps gets ``"backbone_out"``.

        Returns: ``(waveform (B, T * hop_length), state)``.
        """
        bb = self.backbone
        k = self.config.kernel_size
        ext, ctx = causal_extend(x, None if state is None else state.contexts[0], k - 1, "zeros")
        if isinstance(bb.embedding, nn.Conv1d):
            h = grouped_causal_conv(ext, bb.embedding.weight, bb.embedding.bias, 1)
        else:  # int8 (precision.Int8Linear): the same product over unfolded windows
            h = bb.embedding(causal_windows(ext, k))
        h = bb.input_norm(h)
        contexts = [ctx]
        for i, block in enumerate(bb.layers):
            h, c = block(h, None if state is None else state.contexts[i + 1])
            contexts.append(c)
        h = bb.output_norm(h)
        if taps is not None:
            taps["backbone_out"] = h
        wave = self.head.proj(h).reshape(h.shape[0], -1).clamp(-1.0, 1.0)
        return wave, WaveNeXtState(contexts)
