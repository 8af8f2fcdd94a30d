"""Causal WavLM encoder with sliding-window, block-chunked, gated relative-position attention.

16 kHz waveform -> 50 Hz features. Parameter names mirror the official checkpoints
(``encoder.feature_extractor.layers.0.conv.weight``, ``encoder.encoder.layers.0.attention.
qkv_proj.weight``, ...), see ``shared/docs/focalcodec-stream-spec.md`` §2.1-2.3.

Streaming: frame positions count from stream start; blocks of ``1 + lookahead`` frames are
aligned to that start; a query sees keys from ``block_end - window`` to its block end. The state
keeps the last ``window - block`` keys/values per layer (a 508-frame cache at full size), so a
4-frame call sees exactly the offline window. Relative-position buckets are computed for the
keys actually attended (no 256 MiB precomputed table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import WavLMConfig
from .layers import (
    FeedForward,
    append_frames,
    causal_extend,
    channels_last_conv,
    grouped_causal_conv,
    modules_as,
    three_bf16_conv,
)
from .state import StreamState

__all__ = ["WavLM", "WavLMState", "relative_position_bucket"]

_QUERY_BLOCK = 256  # queries per attention step on long (offline) inputs; bounds memory


@dataclass
class WavLMState(StreamState):
    """Streaming state of the encoder (one row per stream in the batch dimension)."""

    frames: Tensor
    """``(B,)`` int64: frames produced so far per stream (absolute position of the next frame)."""
    conv_contexts: list[Tensor]
    """Per front-end block, the last ``kernel - 1`` input frames, ``(B, kernel - 1, C_in)``."""
    pos_context: Tensor
    """Last ``conv_pos - 1`` frames into the positional convolution, ``(B, 127, dim)``."""
    keys: list[Tensor]
    """Per layer, the key cache ``(B, heads, window - block, head_dim)``, right-aligned: the
    most recent frame is last; only the last ``cached[b]`` rows of stream ``b`` are valid."""
    values: list[Tensor]
    """Per layer, the value cache, laid out like ``keys``."""
    cached: Tensor
    """``(B,)`` int64: valid rows in the caches per stream (saturates at ``window - block``).
    Fixed-size caches with a validity count let streams of different ages share one batch."""


def relative_position_bucket(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Map ``key - query`` distances to bidirectional log-spaced buckets (WavLM/T5 style).

    Args:
        relative: integer tensor of distances ``key_position - query_position``.
        num_buckets: total buckets (half per direction).
        max_distance: distance at which the logarithmic buckets saturate.

    Returns:
        Bucket indices in ``[0, num_buckets)``, same shape as ``relative``.
    """
    half = num_buckets // 2
    exact = half // 2
    offset = (relative > 0).long() * half
    distance = relative.abs()
    # float32 then truncation toward zero, as the reference does
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return offset + torch.where(distance < exact, distance, large)


@dataclass
class _Window:
    """One query block's attention window, the same in every layer of a call."""

    lo: int
    """First key position attended (relative to the call's first new frame)."""
    hi: int
    """One past the last key position attended."""
    rel_bias: Tensor
    """``(1, H, Tq, Tk)`` relative-position bias table, before each layer's gate."""
    masked: Tensor | None
    """``(1 or B, 1, Tq, Tk)`` bool, True where a key is masked out; None if none is."""
    masked_bias: Tensor
    """``rel_bias`` with ``-inf`` where ``masked``: scaled by a positive gate it is the final
    bias, so the mask costs nothing per layer."""


@dataclass
class _CallWindows:
    """What every layer of one call shares: key validity and the per-block windows."""

    valid: Tensor
    """``(B, Nc + T)`` bool: False for cache rows that are padding (``cached`` per stream)."""
    all_valid: bool
    blocks: dict[int, _Window]
    """By the first query of a block."""


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.norm = nn.LayerNorm(c_out, eps=1e-5)
        self.three_bf16 = False
        """Convolve as three bf16 products where the CPU has AMX (:func:`three_bf16_conv`;
        int8 mode sets it)."""

    def forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        kernel = self.conv.kernel_size[0]
        ext, context = causal_extend(x, context, kernel - 1, "replicate")
        y = three_bf16_conv(ext, self.conv.weight, self.conv.stride[0]) if (
            self.three_bf16) else None
        if y is None:
            y = channels_last_conv(ext, self.conv.weight, None, self.conv.stride[0])
        return F.gelu(self.norm(y)), context


class _FeatureExtractor(nn.Module):
    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        dims = (1, *config.hidden_dims)
        self.layers = nn.ModuleList(
            _ConvBlock(dims[i], dims[i + 1], k, s)
            for i, (k, s) in enumerate(zip(config.kernel_sizes, config.strides, strict=True))
        )


class _PositionalConv(nn.Module):
    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel, groups=groups)
        self.half_weights = False
        """Read fp16 weights through the own kernel (:func:`grouped_causal_conv`'s ``half``;
        int8 mode sets it)."""

    def forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        kernel = self.conv.kernel_size[0]
        ext, context = causal_extend(x, context, kernel - 1, "replicate")
        y = grouped_causal_conv(ext, self.conv.weight, self.conv.bias, self.conv.groups,
                                half=self.half_weights)
        return x + F.gelu(y), context


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos_linear = nn.Linear(self.head_dim, 8)
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, heads, 1, 1))


class _Layer(nn.Module):
    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.dim, eps=1e-5)
        self.attention = _Attention(config.dim, config.num_heads)
        self.feed_forward_norm = nn.LayerNorm(config.dim, eps=1e-5)
        self.feed_forward = FeedForward(config.dim, config.ffn_dim)


class _Transformer(nn.Module):
    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        self.positional_embedding = _PositionalConv(config.dim, config.conv_pos,
                                                    config.conv_pos_groups)
        self.relative_embedding = nn.Embedding(config.num_buckets, config.num_heads)
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_layers))


class WavLM(nn.Module):
    """Causal WavLM encoder: waveform ``(B, N)`` at 16 kHz -> features ``(B, ceil(N/320), dim)``."""

    def __init__(self, config: WavLMConfig) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = _FeatureExtractor(config)
        self.norm = nn.LayerNorm(config.hidden_dims[-1], eps=1e-5)
        self.feature_proj = nn.Linear(config.hidden_dims[-1], config.dim)
        self.encoder = _Transformer(config)
        self.block = 1 + config.lookahead_size
        self.window = config.window_size
        self.cache_frames = config.window_size - self.block

    @property
    def downsample_factor(self) -> int:
        """Input samples per output frame."""
        return math.prod(self.config.strides)

    def forward(
        self, sig: Tensor, state: WavLMState | None = None, taps: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, WavLMState]:
        """Encode a signal, or the next piece of a stream.

        Args:
            sig: ``(batch, samples)`` float waveform at 16 kHz. In streaming, each call must carry
                a multiple of ``downsample_factor * (1 + lookahead)`` samples (1280) for the
                result to equal offline processing.
            state: the previous call's state, or None at stream start.
            taps: if given, filled with intermediate tensors (``"cnn_feats"``).

        Returns:
            ``(feats, state)``: features ``(batch, frames, dim)`` and the state after this call.
        """
        x = sig.unsqueeze(-1)
        conv_contexts = []
        for i, block in enumerate(self.feature_extractor.layers):
            x, ctx = block(x, None if state is None else state.conv_contexts[i])
            conv_contexts.append(ctx)
        if taps is not None:
            taps["cnn_feats"] = x
        x = self.feature_proj(self.norm(x))
        x, pos_context = self.encoder.positional_embedding(
            x, None if state is None else state.pos_context
        )
        B, T = x.shape[0], x.shape[1]
        if state is None:
            frames = torch.zeros(B, dtype=torch.long, device=x.device)
            cached = torch.zeros(B, dtype=torch.long, device=x.device)
        else:
            frames, cached = state.frames, state.cached
        phase = int(frames[0]) % self.block
        if bool((frames % self.block != phase).any()):
            raise ValueError("streams batched together must be at the same position within a "
                             f"{self.block}-frame block")
        keys: list[Tensor] = []
        values: list[Tensor] = []
        # key validity per stream: cache rows older than `cached[b]` are padding
        n_cache = 0 if state is None else state.keys[0].shape[2]
        slot = torch.arange(-n_cache, T, device=x.device)
        valid = slot[None, :] >= -cached[:, None]  # (B, Nc + T)
        windows = _CallWindows(valid, bool(valid.all()), {})  # shared by all layers
        for i, layer in enumerate(modules_as(self.encoder.layers, _Layer)):
            cache = None if state is None else (state.keys[i], state.values[i])
            a = layer.attention_norm(x)
            attn, k_new, v_new = self._attention(layer.attention, a, cache, cached, phase,
                                                 windows)
            x = x + attn
            x = x + layer.feed_forward(layer.feed_forward_norm(x))
            keys.append(k_new)
            values.append(v_new)
        new_cached = torch.clamp(cached + T, max=self.cache_frames)
        new_state = WavLMState(frames + T, conv_contexts, pos_context, keys, values, new_cached)
        return x, new_state

    def _roll_cache(self, full: Tensor) -> Tensor:
        """The first call's right-aligned cache from its keys/values ``(B, H, T, D)``: a view when
        ``T`` is at most twice the cache, a copy when longer (offline calls), zero-padded on
        the left when shorter. Later calls extend their cache with ``append_frames``."""
        n = self.cache_frames
        if full.shape[2] >= n:
            view = full[:, :, full.shape[2] - n:]
            return view if full.shape[2] <= 2 * n else view.clone()
        return F.pad(full, (0, 0, n - full.shape[2], 0))

    def _attention(
        self, attn: _Attention, a: Tensor, cache: tuple[Tensor, Tensor] | None, cached: Tensor,
        phase: int, windows: _CallWindows,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Block-chunked sliding-window attention of T new frames over cache + new frames.

        Positions are relative to the first new frame (0..T-1); cache row j of Nc holds
        position j - Nc. ``phase`` is the position of the first new frame within its block.
        ``windows`` caches, per query block, the key range, the relative-position bias table
        and the window mask: they are the same in every layer of one call (the bucket table
        is shared), so they are computed once per call, not once per layer.
        """
        B, T, C = a.shape
        H, D = attn.heads, attn.head_dim
        q, k, v = attn.qkv_proj(a).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)
        # gate from the post-LN input of each query: sigmoid(u) * (sigmoid(v) * c - 1) + 2
        g = attn.gru_rel_pos_linear(a.view(B, T, H, D)).view(B, T, H, 2, 4).sum(-1)
        g = torch.sigmoid(g)
        gate = g[..., 0] * (g[..., 1] * attn.gru_rel_pos_const.view(1, 1, H) - 1.0) + 2.0
        gate = gate.transpose(1, 2)  # (B, H, T)
        if cache is not None:
            n_cache = cache[0].shape[2]
            k_all, k_next = append_frames(cache[0], k, 2, n_cache)
            v_all, v_next = append_frames(cache[1], v, 2, n_cache)
        else:
            k_all, v_all, n_cache = k, v, 0
            k_next, v_next = self._roll_cache(k), self._roll_cache(v)
        device = a.device
        valid = windows.valid  # (B, Nc + T)
        # the gate is above 1 where gru_rel_pos_const >= 0 (as trained), so it keeps the -inf
        # of a masked bias: the mask is then applied once per call, not once per layer. Not
        # in training: the gradient of gate * -inf is NaN where masked_fill's is 0
        positive_gate = not (gate.requires_grad and torch.is_grad_enabled()) and bool(
            (attn.gru_rel_pos_const >= 0).all())
        rel_table = self.encoder.relative_embedding.weight  # (buckets, H)
        outs = []
        for s in range(0, T, _QUERY_BLOCK):
            e = min(s + _QUERY_BLOCK, T)
            w = windows.blocks.get(s)
            if w is None:
                q_pos = torch.arange(s, e, device=device)
                q_end = torch.clamp(((q_pos + phase) // self.block + 1) * self.block - phase,
                                    max=T)
                lo = max(int(q_end[0]) - self.window, -n_cache)
                hi = int(q_end[-1])
                k_pos = torch.arange(lo, hi, device=device)
                buckets = relative_position_bucket(k_pos[None, :] - q_pos[:, None],
                                                   self.config.num_buckets,
                                                   self.config.max_distance)
                rel_bias = F.embedding(buckets, rel_table).permute(2, 0, 1)  # (H, Tq, Tk)
                rel_bias = rel_bias.unsqueeze(0).to(gate.dtype)
                allowed = (k_pos[None, :] < q_end[:, None]) & (
                    k_pos[None, :] >= q_end[:, None] - self.window)
                if windows.all_valid:
                    allowed = allowed[None]  # (1, Tq, Tk)
                else:
                    allowed = allowed[None] & valid[:, None, lo + n_cache:hi + n_cache]
                masked = None if bool(allowed.all()) else ~allowed[:, None]
                masked_bias = rel_bias if masked is None else rel_bias.masked_fill(
                    masked, float("-inf"))
                w = windows.blocks[s] = _Window(lo, hi, rel_bias, masked, masked_bias)
            lo, hi = w.lo, w.hi
            if positive_gate:
                bias = gate[:, :, s:e, None] * w.masked_bias
            else:
                bias = gate[:, :, s:e, None] * w.rel_bias
                if w.masked is not None:
                    bias = bias.masked_fill(w.masked, float("-inf"))
            keys, values = k_all, v_all
            if (lo + n_cache, hi + n_cache) != (0, k_all.shape[2]):
                # only a window of the keys; a steady streaming step attends to all of them,
                # and then takes no slice (a no-op view in torch, but a 2 MB copy per tensor
                # and layer in the traced ONNX graph: 4.4 ms of its full-size encoder step)
                keys = k_all[:, :, lo + n_cache:hi + n_cache]
                values = v_all[:, :, lo + n_cache:hi + n_cache]
            out = F.scaled_dot_product_attention(q[:, :, s:e], keys, values, attn_mask=bias)
            outs.append(out)
        out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
        out = out.transpose(1, 2).reshape(B, T, C)
        return attn.out_proj(out), k_next, v_next
