"""``bench speed``'s side-by-side paths (torch and onnxruntime), their calls per box and agreement."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from voip_codec.cli import main
from voip_codec.codec import kernels
from voip_codec.codec.config import tiny_config
from voip_codec.codec.model import FocalCodec
from voip_codec.codec.precision import (
    _FP16_PACKING,
    Int8Linear,
    PackedLinear,
    _onednn_int8,
    reference_kernels,
    set_precision,
)
from voip_codec.export.runtime import OnnxCodecModel
from voip_codec_bench.model_speed import (
    Agreement,
    _OnnxPath,
    _StreamPath,
    _TorchPath,
    format_agreement,
    measure_agreement,
    measure_onnx_agreement,
    measure_onnx_calls_per_box,
    measure_side_by_side,
    onnx_models,
)


@pytest.fixture(scope="module")
def tiny() -> FocalCodec:
    torch.manual_seed(0)
    return FocalCodec(tiny_config(4096)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny: FocalCodec) -> dict[str, Path]:
    return onnx_models(tiny, ("int8", "bf16", "fp32"), tmp_path_factory.mktemp("speed"), 1)


def test_onnx_models_skips_bf16(exported: dict[str, Path]) -> None:
    assert list(exported) == ["onnx int8", "onnx fp32"]
    manifest = json.loads((exported["onnx int8"] / "manifest.json").read_text())
    assert manifest["weights"] == "int8"


def test_side_by_side_runs_every_path_on_the_same_chunks(tiny: FocalCodec,
                                                         exported: dict[str, Path]) -> None:
    paths: dict[str, _StreamPath] = {"torch fp32": _TorchPath(tiny),
             "onnx fp32": _OnnxPath(OnnxCodecModel(exported["onnx fp32"]))}
    rows = measure_side_by_side(paths, seconds=0.8, warmup_chunks=1)
    assert [r.path for r in rows] == ["torch fp32", "onnx fp32"]
    assert all(r.chunks == 10 for r in rows)
    assert rows[0].ratio == 1.0
    for r in rows:
        assert 0 < r.encode_ms_p50 and 0 < r.decode_ms_p50
        assert r.chunk_ms_p50 <= r.chunk_ms_p95
        # RTF = total time / audio time: 10 chunks of 80 ms
        assert r.streaming_rtf == pytest.approx(r.ratio * rows[0].streaming_rtf, rel=1e-9)


def test_onnx_calls_per_box_search_stops_at_the_budget(exported: dict[str, Path]) -> None:
    model = OnnxCodecModel(exported["onnx int8"])
    everything = measure_onnx_calls_per_box(model, "onnx int8", workers=2, budget_ms=1e6,
                                            ticks=3, max_calls=2)
    assert everything.calls == 2 and sorted(everything.tried) == [1, 2]
    nothing = measure_onnx_calls_per_box(model, "onnx int8", workers=2, budget_ms=1e-3,
                                         ticks=3)
    assert nothing.calls == 0 and list(nothing.tried) == [1]
    assert nothing.tick_ms_p95 > 1e-3 and nothing.precision == "onnx int8"


def test_onnx_agreement_rows(tiny: FocalCodec) -> None:
    rng = np.random.default_rng(0)
    clips = [torch.from_numpy((0.1 * rng.standard_normal(1280 * 12)).astype(np.float32))[None]]
    rows = measure_onnx_agreement(tiny, "tiny", clips, ("fp32", "int8"))
    assert [r.precision for r in rows] == ["onnx fp32", "onnx int8"]
    fp32, int8 = rows
    assert fp32.tokens == 48
    # the fp32 graphs compute what torch computes: at most a latent at the sign boundary
    assert fp32.token_agreement >= 0.97 and fp32.stoi_vs_fp32 > 0.99
    assert 0.0 <= int8.token_agreement <= 1.0 and int8.bit_agreement > 0.9
    assert fp32.stream_vs_offline is None  # onnxruntime has no offline path


def test_torch_agreement_reports_streaming_vs_offline(tiny: FocalCodec) -> None:
    """Each torch row compares the streamed tokens with the same model's offline tokens at
    the same precision: fp32 streaming equals offline exactly; int8 (token-path activations
    split) nearly so."""
    rng = np.random.default_rng(1)
    clips = [torch.from_numpy((0.1 * rng.standard_normal(1280 * 12)).astype(np.float32))[None]]
    fp32, int8 = measure_agreement(tiny, "tiny", clips, ("fp32", "int8"), threads=1)
    assert fp32.token_agreement == 1.0 and fp32.stream_vs_offline == 1.0
    assert int8.stream_vs_offline is not None and 0.9 <= int8.stream_vs_offline <= 1.0
    table = format_agreement([fp32, int8, Agreement("x", "onnx int8", 1, 4, 1.0, 1.0, 1.0, 1.0)])
    assert "| streaming vs offline tokens |" in table
    assert table.splitlines()[2].endswith("| 100.00 % |") and table.splitlines()[4].endswith("| - |")


def _newer_kernels() -> bool:
    """Whether this CPU runs int8 products that the previous path did not (the own kernels,
    oneDNN's int8 product, fp16 weights): then the side-by-side run adds the previous path's
    rows."""
    return kernels.library() is not None or _onednn_int8() or _FP16_PACKING


def test_reference_kernels_give_the_same_tokens(tiny: FocalCodec) -> None:
    """The previous path's products (fbgemm int8, fp32 weights) beside the current ones: the
    same layers, the same int8 weights, tokens equal on noise up to float rounding."""
    int8 = set_precision(copy.deepcopy(tiny), "int8")
    ref = reference_kernels(copy.deepcopy(int8))
    int8_layers = [m for m in ref.modules() if isinstance(m, Int8Linear)]
    assert int8_layers and not any(m.onednn for m in int8_layers)
    assert not any(m.fp16 for m in ref.modules() if isinstance(m, PackedLinear))
    x = torch.from_numpy((0.1 * np.random.default_rng(2).standard_normal(1280 * 8))
                         .astype(np.float32))[None]
    with torch.inference_mode():
        a, b = int8.sig_to_toks(x), ref.sig_to_toks(x)
    assert all(m._onednn is None for m in int8_layers)  # packed for fbgemm when first used
    assert float((a == b).float().mean()) >= 0.95
    # the own kernels off, oneDNN's and fbgemm's products on: the very same tokens (the own
    # int8 product reproduces them; only the convolutions' summation order may differ)
    before = reference_kernels(copy.deepcopy(int8), "onednn")
    assert not any(m.own for m in before.modules() if isinstance(m, Int8Linear | PackedLinear))
    with torch.inference_mode():
        c = before.sig_to_toks(x)
    assert float((a == c).float().mean()) >= 0.99
    with pytest.raises(ValueError, match="unknown kernel path"):
        reference_kernels(copy.deepcopy(int8), "avx")


def test_bench_speed_backend_onnx_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "speed", "--model", "tiny", "--seconds", "0.8", "--threads", "1",
                 "--precision", "int8", "--backend", "torch", "onnx", "--no-calls",
                 "--no-profile", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    previous = ["torch int8 (previous kernels)"] if _newer_kernels() else []
    assert [r["path"] for r in data["side_by_side"]] == ["torch int8", *previous, "onnx int8"]
    assert data["side_by_side"][0]["ratio"] == 1.0
    assert data["onnx_calls_per_box"] == []
    assert [r["precision"] for r in data["speed"]] == ["int8"]


def test_bench_speed_calls_threads_reach_the_onnx_search(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    # a budget no tick meets: each search measures 1 call and stops, on 2 worker threads
    assert main(["bench", "speed", "--model", "tiny", "--seconds", "0.8", "--threads", "1",
                 "--calls-threads", "2", "--precision", "fp32", "--backend", "torch", "onnx",
                 "--no-profile", "--calls-budget-ms", "0.001", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (torch_calls,) = data["calls_per_box"]
    (onnx_calls,) = data["onnx_calls_per_box"]
    assert onnx_calls["precision"] == "onnx fp32" and onnx_calls["budget_ms"] == 0.001
    for c in (torch_calls, onnx_calls):
        assert c["calls"] == 0 and list(c["tried"]) == ["1"] and c["tick_ms_p95"] > 0


def test_bench_speed_compare_threads_steps_torch_side_by_side(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--compare-threads adds torch paths at other thread counts, interleaved with the
    --threads paths, without onnx; the thread count is restored afterwards."""
    assert main(["bench", "speed", "--model", "tiny", "--seconds", "0.8", "--threads", "1",
                 "--compare-threads", "1", "2", "--precision", "int8", "--no-calls",
                 "--no-profile", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["side_by_side"]
    previous = (["torch int8 (previous kernels)", "torch int8 (previous kernels, 2 threads)"]
                if _newer_kernels() else [])
    assert [r["path"] for r in rows] == ["torch int8", "torch int8 (2 threads)", *previous]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0 and rows[1]["chunks"] == 10
    assert data["onnx_calls_per_box"] == []
    assert torch.get_num_threads() == 1
