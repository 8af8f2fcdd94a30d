"""``bench speed``'s CPU report and per-stage profile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from voip_codec.cli import main
from voip_codec.codec.config import tiny_config
from voip_codec.codec.model import FocalCodec
from voip_codec_bench.cpu_profile import (
    CpuInfo,
    cpu_info,
    format_cpu_info,
    int8_layer_gbps,
    profile_stages,
    read_bandwidth_gbps,
)

CPUINFO = """processor\t: 0
model name\t: Example(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: Example(R) Xeon(R) CPU @ 2.00GHz
flags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16
"""


def test_cpu_info_reads_model_and_isa_flags(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = cpu_info(path)
    assert info.model == "Example(R) Xeon(R) CPU @ 2.00GHz"
    assert info.flags["amx_bf16"] and info.flags["avx512_bf16"] and info.flags["avx2"]
    assert not info.flags["amx_int8"] and not info.flags["avx_vnni"]
    line = format_cpu_info(info)
    assert "amx_bf16" in line and "amx_int8" not in line and info.torch_capability in line


def test_cpu_info_without_proc_still_answers(tmp_path: Path) -> None:
    info = cpu_info(tmp_path / "missing")
    assert not any(info.flags.values())
    assert info.logical_cpus >= 1


def test_stage_profile_adds_up_to_the_chunk_time() -> None:
    torch.manual_seed(0)
    model = FocalCodec(tiny_config(4096)).eval()
    sig = 0.1 * torch.randn(1, 16 * model.chunk_size)
    prof = profile_stages(model, sig, warmup_chunks=1)
    assert prof.chunks == 16
    stages = prof.stages_ms
    assert set(stages) == {"front-end convs", "positional conv", "attention", "encoder FFNs",
                           "compressor", "decompressor", "vocoder", "other"}
    assert all(v >= 0 for v in stages.values())
    for name in ("front-end convs", "compressor", "decompressor", "vocoder"):
        assert stages[name] > 0, name
    assert abs(sum(stages.values()) - prof.chunk_ms_mean) < 1e-6 + 0.01 * prof.chunk_ms_mean
    # the hooks are gone afterwards
    assert not model.encoder._forward_hooks and not model.decoder._forward_pre_hooks


def test_bench_speed_json_names_the_cpu_and_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "speed", "--model", "tiny", "--seconds", "1", "--threads", "1",
                 "--precision", "fp32", "--no-calls", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpu"]["model"] and data["cpu"]["torch_capability"]
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= set(data["cpu"]["flags"])
    assert data["stages"][0]["precision"] == "fp32"
    assert data["stages"][0]["stages_ms"]["vocoder"] > 0
    # the memory read rate at the thread count measured, and the weights one chunk reads
    assert list(data["cpu"]["read_gbps"]) == ["1"] and data["cpu"]["read_gbps"]["1"] > 0.1
    (speed,) = data["speed"]
    assert speed["weights_mb"] == pytest.approx(speed["parameters"] * 4 / 1e6, rel=0.05)


def test_read_bandwidth_is_a_rate_and_restores_the_threads() -> None:
    before = torch.get_num_threads()
    gbps = read_bandwidth_gbps(2, megabytes=16, repeats=2)
    assert 0.1 < gbps < 10_000
    assert torch.get_num_threads() == before
    assert "memory read 12.5 GB/s at 1 thread, 20.0 GB/s at 2 threads" in format_cpu_info(
        CpuInfo("x", 2, {}, "AVX2", "", "2.13", 1, {1: 12.5, 2: 20.0}))


def test_int8_layer_rate_is_a_rate_and_restores_the_threads() -> None:
    before = torch.get_num_threads()
    gbps = int8_layer_gbps(1, megabytes=8, repeats=1)
    assert 0.1 < gbps < 10_000
    assert torch.get_num_threads() == before
    line = format_cpu_info(CpuInfo("x", 2, {}, "AVX2", "", "2.13", 1, {1: 12.5}, {1: 7.25, 2: 11.0}))
    assert "memory read 12.5 GB/s at 1 thread; int8 layer reads 7.2 GB/s at 1 thread, 11.0 GB/s" \
        " at 2 threads" in line
    own = format_cpu_info(CpuInfo("x", 2, {}, "AVX2", "", "2.13", 1, own_kernels="amx"))
    assert "dispatches AVX2; own kernels: amx" in own
    # the real line names what the own kernels do here
    assert "own kernels: " in format_cpu_info(cpu_info())
