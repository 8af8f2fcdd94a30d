"""The own CPU kernels' loader: where they cannot run, the model keeps torch's kernels and says
why (see voip_codec.codec.kernels)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from voip_codec.codec import kernels

PROBE = """
import torch
from voip_codec.codec import kernels
from voip_codec.codec.precision import Int8Linear
lib = kernels.library()
layer = Int8Linear.from_float(torch.nn.Linear(64, 64), split=True)
print(lib is not None, layer._own is not None, kernels.unavailable_reason())
print(float(layer(torch.ones(2, 64)).abs().sum()) > 0)
"""


def _probe(tmp_path: Path, **env: str) -> list[str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    run_env = {**os.environ, "VOIP_CODEC_CACHE": str(tmp_path / "cache"), **env}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=run_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.splitlines()


def test_kernels_load_where_the_cpu_can_run_them() -> None:
    """On x86-64 Linux with AVX-512 VNNI the own kernels must load (a missing compiler or a
    failed build would silently leave the slower kernels: this says so instead)."""
    flags = kernels.cpu_flags()
    if not ("avx512_vnni" in flags and "avx512bw" in flags and sys.platform == "linux"
            and os.uname().machine == "x86_64") or os.environ.get(kernels.ENV_SWITCH) == "0":
        pytest.skip("this CPU cannot run the own kernels (they need AVX-512 VNNI)")
    lib = kernels.library()
    assert lib is not None, kernels.unavailable_reason()
    assert lib.amx == ("amx_int8" in flags and "amx_tile" in flags and "amx_bf16" in flags)


def test_switched_off_or_without_a_compiler_the_model_keeps_torch_kernels(tmp_path: Path
                                                                          ) -> None:
    off = _probe(tmp_path, VOIP_CODEC_KERNELS="0")
    assert off == ["False False VOIP_CODEC_KERNELS=0", "True"]
    if kernels.library() is None:
        pytest.skip(f"the own kernels do not load here: {kernels.unavailable_reason()}")
    missing = _probe(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    assert missing == ["False False no C++ compiler (set CXX, or install g++)", "True"]


@pytest.mark.skipif(kernels.library() is None,
                    reason=f"the own kernels do not load here: {kernels.unavailable_reason()}")
def test_builds_once_into_the_cache_and_reuses_it(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    assert first == ["True True None", "True"]
    built = list((tmp_path / "cache").rglob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    assert _probe(tmp_path) == first
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.so")] == [stamp]
    # an unwritable cache (here: a file where the folder should be) builds in the temp folder
    (tmp_path / "blocked").write_text("not a folder")
    assert _probe(tmp_path, VOIP_CODEC_CACHE=str(tmp_path / "blocked"),
                  TMPDIR=str(tmp_path / "tmp")) == first
    assert list((tmp_path / "tmp").rglob("libvoipcodec_kernels.so"))


@pytest.mark.skipif(kernels.library() is None,
                    reason=f"the own kernels do not load here: {kernels.unavailable_reason()}")
def test_half_weight_product_sums_in_fp32() -> None:
    """fp16 weights, fp32 activations and sums: the float product of the rounded weights."""
    lib = kernels.library()
    assert lib is not None
    torch.manual_seed(1)
    for k, n, rows in ((96, 80, 4), (1024, 2051, 1), (100, 33, 300)):
        w, b, x = torch.randn(n, k) / k ** 0.5, torch.randn(n), torch.randn(rows, k)
        got = lib.half_linear(x, lib.pack_half(w), n, b)
        want = torch.nn.functional.linear(x, w.half().float(), b)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(kernels.library() is None,
                    reason=f"the own kernels do not load here: {kernels.unavailable_reason()}")
@pytest.mark.parametrize("split", [False, True])
def test_four_bit_product_sums_each_group_exactly(split: bool) -> None:
    """Integer activations from -128 to 127 quantise exactly (step 1, zero point 128, split
    remainders 0), so each group's int32 sum is exact and the output is the float product
    of the 4-bit weights to fp32 rounding: the group sums are scaled and added in fp32 and the
    zero point's share (128 x the scaled column sums) comes off at the end, so the error is a
    few fp32 steps of the sum of |(x + 128) w|, not of the (smaller) result."""
    lib = kernels.library()
    assert lib is not None
    torch.manual_seed(2)
    for k, n, rows, group in ((100, 37, 3, 32), (1024, 4096, 4, 64), (72, 16, 13, 8),
                              (64, 40, 1, 64), (200, 33, 300, 64)):
        q = torch.randint(-8, 8, (n, k), dtype=torch.int8)
        scale = torch.rand(n, -(-k // group)) + 0.5
        b = torch.randn(n)
        x = torch.randint(-128, 128, (rows, k)).float()
        x[:, 0], x[:, -1] = -128.0, 127.0  # every row spans the range: step 1 for any rows
        if split:  # the split rule's step is max|x| / 127
            x = x.clamp(-127, 127)
        w = q.double() * scale.double().repeat_interleave(group, 1)[:, :k]
        want = (x.double() @ w.t() + b.double()).float()
        got = lib.q4_linear(x, split, group, *lib.pack_q4(q, scale, group), b)
        assert got is not None
        bound = ((x.double().abs() + 128) @ w.abs().t()).float()
        assert bool(((got - want).abs() <= 1e-6 * bound + 1e-5).all())
        got_1d = lib.q4_linear(x[:1], split, group, *lib.pack_q4(q, scale, group), None)
        assert got_1d is not None
        assert bool(((got_1d - (want[:1] - b)).abs() <= 1e-6 * bound[:1] + 1e-5).all())
    nan = torch.zeros(2, 64)
    nan[1, 3] = float("inf")
    assert lib.q4_linear(nan, False, 64, *lib.pack_q4(torch.zeros(16, 64, dtype=torch.int8),
                                                     torch.ones(16, 1), 64), None) is None


@pytest.mark.skipif(kernels.library() is None,
                    reason=f"the own kernels do not load here: {kernels.unavailable_reason()}")
def test_fused_gelu_matches_torch() -> None:
    """The GELU in the kernels' epilogues (int8, 4-bit, depthwise) against ``F.gelu`` of the
    same kernel's output: within about 1e-7 x |x| (erf to 1.5e-7)."""
    lib = kernels.library()
    assert lib is not None
    gelu = torch.nn.functional.gelu
    torch.manual_seed(5)
    x = torch.randn(5, 200) * 3
    x[0, :8] = torch.tensor([0.0, -0.0, 1e-6, -1e-6, 12.0, -12.0, 30.0, -30.0])
    w = torch.randint(-127, 128, (70, 200), dtype=torch.int8)
    packed, colsum = lib.pack(w)
    scale, bias = torch.rand(70) * 0.01, torch.randn(70)
    for split in (False, True):
        plain = lib.linear(x, split, packed, colsum, scale, bias)
        fused = lib.linear(x, split, packed, colsum, scale, bias, gelu=True)
        assert plain is not None and fused is not None
        torch.testing.assert_close(fused, gelu(plain), rtol=0, atol=3e-7 * (1 + float(plain.abs().max())))
    q4 = lib.pack_q4(torch.randint(-8, 8, (70, 200), dtype=torch.int8), torch.rand(70, 4), 64)
    plain4 = lib.q4_linear(x, False, 64, *q4, bias)
    fused4 = lib.q4_linear(x, False, 64, *q4, bias, gelu=True)
    assert plain4 is not None and fused4 is not None
    torch.testing.assert_close(fused4, gelu(plain4), rtol=0, atol=3e-7 * (1 + float(plain4.abs().max())))
    ext = torch.randn(2, 9, 100) * 4
    taps = lib.pack_depthwise(torch.randn(100, 1, 6))
    fused_dw = lib.depthwise(ext, taps, 6, None, gelu=True)
    assert fused_dw.shape == (2, 4, 100)
    torch.testing.assert_close(fused_dw, gelu(lib.depthwise(ext, taps, 6, None)), rtol=0,
                               atol=1e-5)
    # the special values: GELU(0) = 0 exactly, large |x| saturates to x or 0
    edge = torch.tensor([[0.0, 20.0, -20.0, 1e-30] + [0.0] * 60])
    out = lib.linear(edge, False, *lib.pack(torch.eye(64, dtype=torch.int8)), torch.ones(64),
                     None, gelu=True)
    assert out is not None
    torch.testing.assert_close(out, gelu(edge), rtol=2e-2, atol=1e-6)
