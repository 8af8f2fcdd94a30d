"""The accelerator trainer's data path and hand-back (training/accel.py): what travels to a GPU
machine decodes to the same clips, and what comes back loads as the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import accel


def _clips(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """20 clips of 0.3-1.2 s: voiced-like harmonic tones with a syllable envelope."""
    parts = []
    for _ in range(20):
        n = int(rng.integers(4800, 19200))
        t = np.arange(n) / accel.SR
        f0 = rng.uniform(90, 250)
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8))
        env = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
        parts.append((0.05 * x * env).astype(np.float32))
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return np.concatenate(parts), offsets


def test_packed_parts_decode_to_the_same_clips(tmp_path: Path) -> None:
    audio, offsets = _clips(np.random.default_rng(0))
    accel.pack_arrays(audio, offsets, tmp_path / "data")
    size = sum(f.stat().st_size for f in (tmp_path / "data").iterdir())
    assert size < audio.nbytes / 10  # Opus, not PCM
    accel.prepare(tmp_path / "data", tmp_path / "cache.npy")
    back = np.load(tmp_path / "cache.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "cache.offsets.npy"), offsets)
    assert back.shape == audio.shape
    snr = 10 * np.log10(np.sum(audio ** 2) / np.sum((audio - back) ** 2))
    assert snr > 10, snr  # aligned to the sample: a shift of one sample scores far below


def test_train_writes_a_model_that_unpacks_and_loads(tmp_path: Path) -> None:
    from training.train import ROOT
    from voip_codec.codec.loading import from_pretrained

    audio, offsets = _clips(np.random.default_rng(1))
    np.save(tmp_path / "cache.npy", audio)
    np.save(tmp_path / "cache.offsets.npy", offsets)
    init = ROOT / "voip_codec" / "assets" / "default_model"
    rc = accel.main(["train", "--cache", str(tmp_path / "cache.npy"), "--init", str(init),
                     "--out", str(tmp_path / "run"), "--device", "cpu", "--workers", "0",
                     "--minutes", "5", "--max-steps", "2", "--batch", "2", "--seconds", "0.5",
                     "--lr-c", "1e-4", "--clip-weight", "10", "--p-quiet", "0.5"])
    assert rc == 0
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1  # step 1 logged
    accel.unpack(tmp_path / "run" / "model.safetensors", tmp_path / "final")
    before, after = from_pretrained(init), from_pretrained(tmp_path / "final")
    changed = 0
    for (k, a), (k2, b) in zip(before.state_dict().items(), after.state_dict().items(), strict=True):
        assert k == k2
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        # two steps at lr 1e-4 plus the fp16 hand-back move weights little, but they move
        assert float((a - b).abs().max()) < 0.05 * max(1.0, float(a.abs().max())), k
        changed += int(not torch.equal(a, b))
    assert changed > 0


def test_bad_subcommand_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert accel.main(["fly"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
