"""Reproduce every reference array of ../shared/conformance/tiny_causal (official outputs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from tests._shared import conformance_dir
from voip_codec.codec.loading import from_pretrained
from voip_codec.codec.model import FocalCodec
from voip_codec.conformance import check_clip, main

CLIPS = ["librispeech_84-121123-0001", "librispeech_84-121123-0006"]


@pytest.fixture(scope="module")
def reference_model() -> FocalCodec:
    return from_pretrained(conformance_dir())


def test_manifest_lists_the_clips_we_check() -> None:
    manifest = json.loads((conformance_dir() / "manifest.json").read_text())
    assert sorted(c["directory"] for c in manifest["clips"]) == CLIPS


@pytest.mark.parametrize("clip", CLIPS)
def test_every_reference_array_is_reproduced(reference_model: FocalCodec, clip: str) -> None:
    clip_dir = conformance_dir() / clip
    checks = check_clip(reference_model, clip_dir, atol=1e-4, rtol=1e-4)
    failed = [f"{c.name}: {c.max_abs_err:.3g} {c.detail}" for c in checks if not c.ok]
    assert not failed, failed
    names = {c.name.split(" ")[0] for c in checks}
    # every stored array was compared (input_sig is the input)
    stored = {p.stem for p in clip_dir.glob("*.npy")} - {"input_sig"}
    assert stored <= names, stored - names
    # streaming with other block sizes was exercised
    assert sum("blocks" in c.name for c in checks) >= 5


@pytest.mark.parametrize("clip", CLIPS)
def test_strict_tolerance_also_holds(reference_model: FocalCodec, clip: str) -> None:
    checks = check_clip(reference_model, conformance_dir() / clip, atol=1e-5, rtol=1e-5,
                        block_sizes=())
    assert all(c.ok for c in checks), [c.name for c in checks if not c.ok]


def test_command_exits_zero_on_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(conformance_dir())]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out


def test_command_reports_a_mismatch(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    src = conformance_dir()
    shutil.copy(src / "config.json", tmp_path / "config.json")
    state = load_file(str(src / "model.safetensors"))
    state["decoder.head.proj.bias"] = state["decoder.head.proj.bias"] + 0.01
    save_file(state, str(tmp_path / "model.safetensors"))
    clip = tmp_path / CLIPS[0]
    clip.mkdir()
    for name in ("input_sig", "offline_toks", "offline_rec_sig"):
        np.save(clip / f"{name}.npy", np.load(src / CLIPS[0] / f"{name}.npy"))
    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "offline_rec_sig" in captured.err and "max abs error" in captured.err
    assert "offline_toks" not in captured.err  # the encoder is untouched


def test_command_rejects_unusable_directory(tmp_path: Path) -> None:
    assert main([str(tmp_path / "missing")]) == 2
