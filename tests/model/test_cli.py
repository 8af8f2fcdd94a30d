"""The file CLI: round trip and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests._shared import conformance_dir, speech_clips
from voip_codec.cli import main
from voip_codec.codec import FocalCodec
from voip_codec.codec.loading import save_pretrained


@pytest.fixture()
def model_dir(tmp_path: Path, tiny_model: FocalCodec) -> Path:
    return save_pretrained(tiny_model, tmp_path / "model")


def test_encode_decode_stereo_44k(tmp_path: Path, model_dir: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((44100 * 2 + 123, 2))).astype(np.float32)
    wav = tmp_path / "in.wav"
    sf.write(wav, stereo, 44100)
    assert main(["encode", str(wav), str(tmp_path / "t.fct"), "--model", str(model_dir),
                 "-q"]) == 0
    assert main(["decode", str(tmp_path / "t.fct"), str(tmp_path / "out.wav"), "--model",
                 str(model_dir), "-q"]) == 0
    info = sf.info(tmp_path / "out.wav")
    assert info.samplerate == 24000 and info.channels == 1
    expected = int(round((44100 * 2 + 123) * 16000 / 44100) * 1.5)
    assert abs(info.frames - expected) <= 2


def test_real_speech_file_through_reference_model(tmp_path: Path) -> None:
    clip = speech_clips("eval")[0]
    ref = str(conformance_dir())
    assert main(["encode", str(clip), str(tmp_path / "t.fct"), "--model", ref, "-q"]) == 0
    assert main(["decode", str(tmp_path / "t.fct"), str(tmp_path / "o.flac"), "--model", ref,
                 "-q"]) == 0
    n_in = sf.info(clip).frames
    assert sf.info(tmp_path / "o.flac").frames == int(n_in * 1.5)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voip_codec.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_errors_are_one_line_without_traceback(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"this is not audio at all" * 10)
    main_args = ["--model", str(model_dir)]
    cases = [
        (["encode", str(tmp_path / "missing.wav"), str(tmp_path / "x.fct"), *main_args],
         "no such file"),
        (["encode", str(tmp_path / "junk.wav"), str(tmp_path / "x.fct"), *main_args],
         "not a readable audio file"),
        (["decode", str(tmp_path / "junk.wav"), str(tmp_path / "x.wav"), *main_args],
         "bad magic"),
        (["info", "--model", str(tmp_path / "no-model")], "no FocalCodec checkpoint"),
    ]
    for args, expected in cases:
        proc = run_cli(*args)
        assert proc.returncode == 1, proc.stderr
        assert expected in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_wrong_model_and_truncated_token_file(tmp_path: Path, model_dir: Path) -> None:
    sf.write(tmp_path / "in.wav", np.zeros(16000, dtype=np.float32), 16000)
    assert main(["encode", str(tmp_path / "in.wav"), str(tmp_path / "t.fct"), "--model",
                 str(model_dir), "-q"]) == 0
    proc = run_cli("decode", str(tmp_path / "t.fct"), str(tmp_path / "o.wav"), "--model",
                   str(conformance_dir()))
    assert proc.returncode == 1 and "differ from the decoding model" in proc.stderr
    data = (tmp_path / "t.fct").read_bytes()
    (tmp_path / "cut.fct").write_bytes(data[: len(data) // 2])
    proc = run_cli("decode", str(tmp_path / "cut.fct"), str(tmp_path / "o.wav"), "--model",
                   str(model_dir))
    assert proc.returncode == 1 and "truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_is_wired_and_requires_a_secret() -> None:
    proc = run_cli("serve", "--port", "0")
    assert proc.returncode == 1  # the CLI's convention: 1 for errors, 2 for bad usage only
    assert proc.stderr.startswith("voip-codec: error: no secret")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_model_commands_default_to_one_torch_thread(tmp_path: Path, model_dir: Path) -> None:
    """Two threads made encode 12x slower on the loaded 2-core box: 1 unless --threads says."""
    import torch

    wav = tmp_path / "in.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    torch.set_num_threads(2)
    try:
        assert main(["encode", str(wav), str(tmp_path / "t.fct"), "--model", str(model_dir),
                     "-q"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["decode", str(tmp_path / "t.fct"), str(tmp_path / "o.wav"), "--model",
                     str(model_dir), "-q", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
