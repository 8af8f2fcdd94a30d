"""Streaming building blocks: the ring-buffer context (``append_frames``) and the streaming
depthwise convolution, checked against plain concatenation and the convolution kernel, and the
grouped convolution in bf16 against fp32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import voip_codec.codec.layers as layers_module
from voip_codec.codec import kernels
from voip_codec.codec.layers import (
    _RING_HEADROOM,
    _Ring,
    append_frames,
    channels_last_conv,
    depthwise_causal_conv,
    grouped_causal_conv,
    modules_as,
    own_convolutions_off,
    three_bf16_conv,
)

_RING_ATTR = "_voip_ring"
"""The private attribute by which ``append_frames`` tags a context as a view of its ring."""


def _ring_of(context: torch.Tensor) -> _Ring:
    """The ring buffer ``context`` is a view of."""
    ring, _ = getattr(context, _RING_ATTR)
    assert isinstance(ring, _Ring)
    return ring


def _feed(context: torch.Tensor, chunks: list[torch.Tensor], keep: int
          ) -> tuple[list[torch.Tensor], torch.Tensor]:
    extended = []
    for x in chunks:
        ext, context = append_frames(context, x, 1, keep)
        extended.append(ext.clone())
    return extended, context


@torch.inference_mode()
def test_append_frames_equals_concatenation_across_ring_refills() -> None:
    g = torch.Generator().manual_seed(0)
    keep, t = 20, 4
    chunks = [torch.randn(2, t, 3, generator=g) for _ in range(3 * _RING_HEADROOM // t)]
    context = torch.randn(2, keep, 3, generator=g)
    history = context
    extended, last = _feed(context, chunks, keep)
    for x, ext in zip(chunks, extended, strict=True):
        expected = torch.cat([history[:, -keep:], x], 1)
        torch.testing.assert_close(ext, expected, rtol=0, atol=0)
        history = torch.cat([history, x], 1)
    torch.testing.assert_close(last, history[:, -keep:], rtol=0, atol=0)
    # in steady state the context is a view of a buffer with room, not a fresh tensor
    assert _ring_of(last).buffer.shape[1] > keep


@torch.inference_mode()
def test_append_frames_writes_in_place_only_for_the_newest_state() -> None:
    g = torch.Generator().manual_seed(1)
    keep = 8
    x1, x2, x3 = (torch.randn(1, 2, 4, generator=g) for _ in range(3))
    _, s1 = append_frames(torch.zeros(1, keep, 4), x1, 1, keep)
    ext_a, s2a = append_frames(s1, x2, 1, keep)  # newest: in place
    assert _ring_of(s2a) is _ring_of(s1)
    ext_b, s2b = append_frames(s1, x3, 1, keep)  # s1 continued a second time: a fork
    assert _ring_of(s2b) is not _ring_of(s1)
    # neither continuation sees the other's frames
    torch.testing.assert_close(ext_a[:, -2:], x2, rtol=0, atol=0)
    torch.testing.assert_close(ext_b[:, -2:], x3, rtol=0, atol=0)
    torch.testing.assert_close(s2a[:, -2:], x2, rtol=0, atol=0)
    _, s3a = append_frames(s2a, x3, 1, keep)
    torch.testing.assert_close(s3a[:, -4:], torch.cat([x2, x3], 1), rtol=0, atol=0)
    torch.testing.assert_close(s2b[:, -2:], x3, rtol=0, atol=0)


def test_append_frames_with_gradients_concatenates() -> None:
    context = torch.randn(1, 6, 2, requires_grad=True)
    x = torch.randn(1, 2, 2, requires_grad=True)
    ext, nxt = append_frames(context, x, 1, 6)
    ext.sum().backward()
    assert context.grad is not None and x.grad is not None
    assert nxt.shape == (1, 6, 2)


@torch.inference_mode()
def test_streaming_depthwise_matches_the_conv_kernel() -> None:
    g = torch.Generator().manual_seed(2)
    for kernel, frames in ((512, 4), (7, 4), (3, 1), (31, 8)):
        ext = torch.randn(2, kernel - 1 + frames, 16, generator=g)
        weight = torch.randn(16, 1, kernel, generator=g)
        bias = torch.randn(16, generator=g)
        expected = F.conv1d(ext.transpose(1, 2), weight, bias, groups=16).transpose(1, 2)
        torch.testing.assert_close(depthwise_causal_conv(ext, weight, bias), expected,
                                   rtol=1e-4, atol=1e-4)
        # the cached time-major kernel follows in-place weight updates
        weight.mul_(-1)
        torch.testing.assert_close(depthwise_causal_conv(ext, weight, bias),
                                   F.conv1d(ext.transpose(1, 2), weight, bias,
                                            groups=16).transpose(1, 2), rtol=1e-4, atol=1e-4)


@torch.inference_mode()
def test_depthwise_without_bias_matches_the_conv_kernel() -> None:
    g = torch.Generator().manual_seed(3)
    for kernel, frames in ((7, 4), (7, 40)):  # streaming path, convolution-kernel path
        ext = torch.randn(1, kernel - 1 + frames, 8, generator=g)
        weight = torch.randn(8, 1, kernel, generator=g)
        expected = F.conv1d(ext.transpose(1, 2), weight, groups=8).transpose(1, 2)
        torch.testing.assert_close(depthwise_causal_conv(ext, weight, None), expected,
                                   rtol=1e-4, atol=1e-4)


def test_modules_as_types_items_in_order_and_rejects_others() -> None:
    convs = torch.nn.ModuleList(torch.nn.Conv1d(2, 2, k) for k in (1, 3))
    typed = modules_as(convs, torch.nn.Conv1d)
    assert [c.kernel_size for c in typed] == [(1,), (3,)]
    assert all(a is b for a, b in zip(typed, convs, strict=True))
    mixed = torch.nn.ModuleList([torch.nn.Conv1d(2, 2, 1), torch.nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="^expected Conv1d, found Linear$"):
        modules_as(mixed, torch.nn.Conv1d)


@torch.inference_mode()
def test_depthwise_kernel_cache_follows_dtype_changes() -> None:
    conv = torch.nn.Conv1d(8, 8, 5, groups=8)
    ext = torch.randn(1, 4 + 2, 8)
    out32 = depthwise_causal_conv(ext, conv.weight, conv.bias)
    conv.to(torch.bfloat16)  # same Parameter object, new data
    out16 = depthwise_causal_conv(ext.bfloat16(), conv.weight, conv.bias)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)


@pytest.mark.parametrize(("channels", "groups", "kernel", "frames"),
                         [(192, 16, 128, 300), (48, 4, 8, 200), (1024, 16, 128, 40),
                          (192, 1, 7, 300)])
@torch.inference_mode()
def test_grouped_conv_in_bf16_matches_fp32(channels: int, groups: int, kernel: int,
                                           frames: int) -> None:
    """On CPUs with AMX, oneDNN's bf16 convolution returned values off by 110-120 % (relative)
    for the first two shapes (the small model's positional conv: 192 channels, 16 groups,
    kernel 128); fp32 arithmetic on the same bf16-rounded inputs is within 0.3 %. The bf16 path
    must stay near fp32 for long (offline) and short (streaming) inputs alike."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, kernel - 1 + frames, channels, generator=g)
    w = torch.randn(channels, channels // groups, kernel, generator=g)
    w /= (channels // groups * kernel) ** 0.5
    b = torch.randn(channels, generator=g)
    ref = grouped_causal_conv(x, w, b, groups)
    for t in (frames, 4):  # offline length, streaming length
        ext = x[:, :kernel - 1 + t]
        got = grouped_causal_conv(ext.bfloat16(), w.bfloat16(), b.bfloat16(), groups).float()
        assert got.shape == (1, t, channels)
        err = float((got - ref[:, :t]).norm() / ref[:, :t].norm())
        assert err < 0.01, (t, err)


def test_channels_last_conv_matches_conv1d_and_follows_weight_updates() -> None:
    """Packed (fp32 parameters) and unpacked convolutions equal ``F.conv1d`` on strided and
    depthwise layers; an in-place weight update (an optimizer step) is seen on the next call."""
    g = torch.Generator().manual_seed(4)
    for c_in, c_out, kernel, stride, groups, length in ((16, 24, 3, 2, 1, 33), (1, 8, 10, 5, 1, 90),
                                                         (32, 32, 7, 1, 32, 10)):
        conv = torch.nn.Conv1d(c_in, c_out, kernel, stride=stride, groups=groups)
        ext = torch.randn(2, length, c_in, generator=g)
        for _ in range(2):
            with torch.no_grad():
                got = channels_last_conv(ext, conv.weight, conv.bias, stride, groups)
                expected = F.conv1d(ext.transpose(1, 2), conv.weight, conv.bias, stride=stride,
                                    groups=groups).transpose(1, 2)
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
                assert got.is_contiguous()
                conv.weight.mul_(-0.5)


@pytest.mark.skipif(kernels.library() is None,
                    reason=f"the own kernels do not load here: {kernels.unavailable_reason()}")
def test_own_convolution_kernels_match_torch() -> None:
    """The own depthwise and grouped convolution kernels compute torch's convolution (to
    summation order) for channel counts off their blocks, 1-20 frames, batches and 1-512 taps;
    a long input gives, frame by frame, the numbers of its streaming steps; gradients and
    weights turned off take torch's kernels."""
    torch.manual_seed(11)
    for c, k, groups in ((100, 7, 100), (1024, 512, 1024), (16, 1, 16), (96, 31, 96),
                         (192, 128, 16), (70, 5, 10), (40, 3, 1)):
        conv = torch.nn.Conv1d(c, c, k, groups=groups)
        for frames, batch in ((4, 1), (1, 2), (20, 1)):
            ext = torch.randn(batch, k - 1 + frames, c)
            with torch.inference_mode():
                want = conv(ext.transpose(1, 2)).transpose(1, 2)
                got = (depthwise_causal_conv(ext, conv.weight, conv.bias) if groups == c
                       else grouped_causal_conv(ext, conv.weight, conv.bias, groups))
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))
    assert layers_module._OWN.get(conv.weight) is not None  # the own kernel ran
    # the depthwise kernel sums each frame alone: streaming steps equal one offline call
    conv = torch.nn.Conv1d(64, 64, 9, groups=64)
    ext = torch.randn(1, 8 + 40, 64)
    with torch.inference_mode():
        whole = depthwise_causal_conv(ext, conv.weight, conv.bias)
        steps = torch.cat([depthwise_causal_conv(ext[:, s:s + 8 + 4], conv.weight, conv.bias)
                           for s in range(0, 40, 4)], dim=1)
    assert torch.equal(whole, steps)
    # with gradients, torch's kernel runs (and gives gradients)
    ext.requires_grad_(True)
    depthwise_causal_conv(ext, conv.weight, conv.bias).sum().backward()
    assert ext.grad is not None
    # a weight turned off keeps oneDNN's kernels
    other = torch.nn.Conv1d(64, 64, 9, groups=64)
    own_convolutions_off([other.weight])
    with torch.inference_mode():
        depthwise_causal_conv(ext.detach(), other.weight, other.bias)
    assert layers_module._OWN.get(other.weight) is None


@pytest.mark.skipif(kernels.library() is None or not kernels.library().amx,  # type: ignore[union-attr]
                    reason="three-product bf16 convolutions need the own kernels and AMX")
def test_three_bf16_convolution_is_about_fp32_accurate() -> None:
    """The front end's strided convolutions as three bf16 products with fp32 sums: within
    2e-5 of the largest output of a float64 convolution (fp32 itself: about 1e-6), for the
    full-size shapes, odd widths, several frames and a batch."""
    torch.manual_seed(12)
    for c_in, c_out, k, stride, length, batch in ((1, 512, 10, 5, 1289, 1),
                                                  (512, 512, 3, 2, 258, 1),
                                                  (70, 33, 3, 1, 20, 2), (64, 48, 2, 2, 17, 1)):
        conv = torch.nn.Conv1d(c_in, c_out, k, stride=stride, bias=False)
        ext = torch.randn(batch, length, c_in)
        with torch.inference_mode():
            got = three_bf16_conv(ext, conv.weight, stride)
            want = conv.double()(ext.double().transpose(1, 2)).transpose(1, 2)
        assert got is not None and got.shape == want.shape
        err = float((got.double() - want).abs().max() / want.abs().max())
        assert err < 2e-5, (c_in, c_out, k, err)
    with torch.enable_grad():  # gradients wanted: not this kernel
        assert three_bf16_conv(ext.requires_grad_(True), conv.float().weight, stride) is None
