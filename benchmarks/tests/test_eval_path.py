"""One evaluation path: ``training.evaluate``, the training run's dev check and
``voip-codec bench quality`` score a model with the same harness code and give the same STOI.

Uses a seeded random tiny model saved as a checkpoint and two 2-second eval clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests._shared import speech_clips

pytest.importorskip("pystoi")
pytest.importorskip("pesq")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random tiny causal model, saved as a checkpoint folder."""
    from voip_codec.codec import FocalCodec
    from voip_codec.codec.config import tiny_config
    from voip_codec.codec.loading import save_pretrained

    torch.manual_seed(0)
    model = FocalCodec(tiny_config(4096))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return save_pretrained(model.eval(), tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 2 s of two eval clips, as WAV files."""
    import soundfile as sf

    from voip_codec.audio import read_audio

    folder = tmp_path_factory.mktemp("clips")
    for path in speech_clips("eval")[:2]:
        pcm, _ = read_audio(path, 16000)
        sf.write(folder / f"{path.stem}.wav", pcm[:32000], 16000)
    return folder


def _bench_stoi(capsys: pytest.CaptureFixture[str], checkpoint: Path,
                clip_dir: Path) -> dict[str, float]:
    from voip_codec.cli import main

    status = main(["bench", "quality", "--codecs", f"tiny={checkpoint}", "--clip-dir",
                   str(clip_dir), "--metrics", "stoi", "--no-cache", "--json", "-q"])
    assert status == 0
    [row] = json.loads(capsys.readouterr().out)["quality"]
    assert row["status"] == "ok"
    return {Path(c["file"]).name: c["metrics"]["stoi"] for c in row["per_clip"]}


def test_training_evaluate_and_bench_quality_agree(tmp_path: Path, checkpoint: Path,
                                                   clip_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from training.evaluate import HARNESS
    from training.evaluate import main as evaluate

    bench = _bench_stoi(capsys, checkpoint, clip_dir)
    status = evaluate(["--model", f"tiny={checkpoint}", "--clip-dir", str(clip_dir), "--out",
                       str(tmp_path), "--no-codec2", "--no-mos", "--no-cache", "--quiet"])
    assert status == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["produced_by"]["harness"] == HARNESS == "voip_codec_bench.harness.run_quality"
    assert HARNESS in (tmp_path / "results.md").read_text()
    model = next(r for r in result["quality"] if r["name"] == "tiny")
    ours = {Path(c["file"]).name: c["metrics"]["stoi"] for c in model["per_clip"]}
    assert len(ours) == 2 and ours == bench  # the same code path: equal, not merely close
    assert result["summary"]["systems"]["tiny"]["stoi"] == pytest.approx(np.mean(list(ours.values())))
    assert result["summary"]["systems"]["original"]["stoi"] == pytest.approx(1.0)


def test_training_dev_check_uses_the_harness_stoi(checkpoint: Path, clip_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The offline dev check of training scores like the bench: on this tiny model streaming and
    offline decodes agree (tests/test_streaming.py), so the two STOI means must agree too."""
    from training.evaluate import offline_dev_stoi
    from voip_codec.codec.loading import from_pretrained

    model = from_pretrained(str(checkpoint))
    stoi, codes = offline_dev_stoi(model, sorted(clip_dir.glob("*.wav")), seconds=2.0)
    bench = _bench_stoi(capsys, checkpoint, clip_dir)
    assert codes > 10
    assert stoi == pytest.approx(float(np.mean(list(bench.values()))), abs=2e-3)


def test_quick_dev_keeps_its_keys_and_aligns_the_bundled_model() -> None:
    """``training.train.quick_dev`` returns the keys the training log and other code read, and
    scores the bundled model near its unaligned offline STOI (0.60 on these 3 dev clips). Delays
    found by waveform cross-correlation, which the harness used for FocalCodec before, scored it
    0.36: its vocoder output does not follow the input's phase."""
    from training.train import quick_dev
    from voip_codec.codec.loading import from_pretrained

    speech_clips("dev")
    dev = quick_dev(from_pretrained("default").eval(), n_clips=3)
    assert set(dev) == {"dev_stoi", "dev_codes", "silence_dbfs", "silence_peak"}
    assert 0.55 < dev["dev_stoi"] < 0.7 and dev["dev_codes"] > 100
    assert np.isfinite(dev["silence_dbfs"]) and dev["silence_peak"] >= 0.0


def test_errors_are_one_line(tmp_path: Path, clip_dir: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from training.evaluate import main as evaluate

    status = evaluate(["--model", str(tmp_path / "nope"), "--clip-dir", str(clip_dir),
                       "--out", str(tmp_path / "out"), "--no-codec2", "--no-mos", "--no-cache",
                       "--quiet"])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("training.evaluate: error: unknown codec") and "\n" not in err
    (tmp_path / "file").write_text("not a folder")
    status = evaluate(["--model", "pcm16", "--clip-dir", str(clip_dir), "--out",
                       str(tmp_path / "file"), "--no-codec2", "--no-mos", "--no-cache", "-q"])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("training.evaluate: error: cannot write to") and "\n" not in err
