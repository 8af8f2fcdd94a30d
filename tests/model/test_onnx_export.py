"""ONNX export of the streaming steps: the graphs run in onnxruntime compute what torch does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._shared import speech_clips
from voip_codec.audio import read_audio
from voip_codec.codec import FocalCodec
from voip_codec.codec.loading import from_pretrained
from voip_codec.export.onnx import (
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    export_onnx,
    flatten_state,
    unflatten_state,
)
from voip_codec.export.runtime import OnnxCodecModel, OnnxModelError


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_model: FocalCodec) -> Path:
    out = tmp_path_factory.mktemp("onnx_tiny")
    export_onnx(tiny_model, out)
    return out


_SAMPLE = Path(__file__).resolve().parents[2] / "voip_codec" / "assets" / "sample_speech.flac"


def _speech(seconds: float) -> np.ndarray:
    clip = speech_clips("eval")[0]
    pcm, _ = read_audio(clip, 16000)
    return pcm[:int(seconds * 16000) // 1280 * 1280].astype(np.float32)


def _torch_stream(model: FocalCodec, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and decoded 24 kHz audio, chunk by chunk through the torch steps."""
    toks, wave = [], []
    enc = dec = None
    with torch.inference_mode():
        for i in range(0, len(pcm), model.chunk_size):
            t, enc = model.encode_step(torch.from_numpy(pcm[i:i + model.chunk_size])[None], enc)
            w, dec = model.decode_step(t, dec)
            toks.append(t[0].numpy())
            wave.append(w[0].numpy())
    return np.concatenate(toks), np.concatenate(wave)


def _onnx_stream(model: OnnxCodecModel, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    toks, wave = [], []
    enc, dec = model.new_encoder_state(), model.new_decoder_state()
    for i in range(0, len(pcm), model.chunk_size):
        t, enc = model.encode_step(pcm[i:i + model.chunk_size], enc)
        w, dec = model.decode_step(t, dec)
        toks.append(t)
        wave.append(w)
    return np.concatenate(toks), np.concatenate(wave)


def _snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((reference - test) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference ** 2)) / noise)


def test_manifest_lists_every_state_tensor(tiny_export: Path, tiny_model: FocalCodec) -> None:
    manifest = json.loads((tiny_export / MANIFEST_FILE).read_text())
    assert manifest["chunk_size"] == 1280 and manifest["chunk_frames"] == 4
    assert manifest["bits_per_token"] == 12
    assert manifest["fingerprint"] == tiny_model.fingerprint().hex()
    with torch.inference_mode():
        _, enc = tiny_model.encode_step(torch.zeros(1, 1280))
    names = [s["name"] for s in manifest["encoder"]["state"]]
    assert names == [name for name, _ in flatten_state(enc)]
    assert "encoder.keys.1" in names and "compressor.contexts.2.2" in names
    import onnx

    graph = onnx.load(str(tiny_export / ENCODER_FILE)).graph
    assert [i.name for i in graph.input] == ["pcm", "first"] + [f"in.{n}" for n in names]
    assert [o.name for o in graph.output] == ["tokens"] + [f"out.{n}" for n in names]
    assert (tiny_export / DECODER_FILE).is_file()


def test_flatten_unflatten_round_trip(tiny_model: FocalCodec) -> None:
    with torch.inference_mode():
        _, enc = tiny_model.encode_step(torch.randn(1, 2560) * 0.1)
    flat = flatten_state(enc)
    again = unflatten_state(enc, [t for _, t in flat])
    assert [n for n, _ in flatten_state(again)] == [n for n, _ in flat]
    for (_, a), (_, b) in zip(flatten_state(again), flat, strict=True):
        assert a is b
    with pytest.raises(ValueError, match="tensors"):
        unflatten_state(enc, [t for _, t in flat][:-1])


def test_tiny_graphs_equal_torch_streaming(tiny_export: Path, tiny_model: FocalCodec) -> None:
    """3 s of speech: 37 chunks, so the 64-frame attention window and the 64-tap focal
    contexts roll over several times; every token equal, audio within float rounding."""
    pcm = _speech(3.0)
    ref_toks, ref_wave = _torch_stream(tiny_model, pcm)
    onnx_toks, onnx_wave = _onnx_stream(OnnxCodecModel(tiny_export), pcm)
    np.testing.assert_array_equal(onnx_toks, ref_toks)
    assert _snr_db(ref_wave, onnx_wave) > 80


def test_fresh_state_restarts_the_stream(tiny_export: Path) -> None:
    """A second stream from new states repeats the first exactly (``first`` resets every
    context: nothing leaks through the graphs)."""
    model = OnnxCodecModel(tiny_export)
    pcm = _speech(1.0)
    a = _onnx_stream(model, pcm)
    b = _onnx_stream(model, pcm)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # and the flag matters: continuing the first stream gives other tokens than restarting
    enc = model.new_encoder_state()
    for i in range(0, len(pcm), 1280):
        _, enc = model.encode_step(pcm[i:i + 1280], enc)
    continued, _ = model.encode_step(pcm[:1280], enc)
    assert not np.array_equal(continued, a[0][:4])


def test_default_model_on_real_speech(tmp_path: Path) -> None:
    """The bundled model: 100 % token agreement and the decoder's output within float rounding
    (the README's agreement figures come from benchmarks of the whole eval split)."""
    model = from_pretrained("default")
    export_onnx(model, tmp_path)
    pcm = _speech(4.0)
    ref_toks, ref_wave = _torch_stream(model, pcm)
    onnx_toks, onnx_wave = _onnx_stream(OnnxCodecModel(tmp_path), pcm)
    np.testing.assert_array_equal(onnx_toks, ref_toks)
    assert _snr_db(ref_wave, onnx_wave) > 80


def test_runtime_rejects_bad_input(tiny_export: Path, tmp_path: Path) -> None:
    model = OnnxCodecModel(tiny_export)
    with pytest.raises(ValueError, match="1280 samples"):
        model.encode_step(np.zeros(1000, np.float32), model.new_encoder_state())
    with pytest.raises(ValueError, match=r"\[0, 4096\)"):
        model.decode_step(np.array([0, 1, 2, 4096]), model.new_decoder_state())
    with pytest.raises(OnnxModelError, match="voip-codec export onnx"):
        OnnxCodecModel(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(OnnxModelError, match="format 99"):
        OnnxCodecModel(tmp_path)


def test_export_command(tmp_path: Path, tiny_model: FocalCodec) -> None:
    from voip_codec.codec.loading import save_pretrained

    model_dir = save_pretrained(tiny_model, tmp_path / "model")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "voip_codec.cli", "export", "onnx", *args],
                              capture_output=True, text=True, timeout=300)

    done = run(str(tmp_path / "out"), "--model", str(model_dir))
    assert done.returncode == 0, done.stderr
    assert "encoder_step.onnx + decoder_step.onnx" in done.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        ENCODER_FILE, DECODER_FILE, MANIFEST_FILE}
    (tmp_path / "file").write_text("x")
    for target, message in ((tmp_path / "file", "is a file"),
                            (tmp_path / "no" / "such", "does not exist")):
        bad = run(str(target), "--model", str(model_dir))
        assert bad.returncode == 1
        assert bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr


# ---------------------------------------------------------------- --backend onnx
def test_codec_on_onnx_equals_torch_codec_with_losses(
        tiny_model: FocalCodec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same payloads from the encoder; the same audio from the concealing decoder, lost
    frames included (concealment is shared, so a loss pattern plays out alike)."""
    from voip_codec.codecs.focalcodec import FocalCodecCodec
    from voip_codec.codecs.pcm16 import Pcm16Codec
    from voip_codec.export.backend import cache_folder, with_backend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    codec = FocalCodecCodec(tiny_model, "focalcodec-tiny", 200)
    onnx = with_backend(codec, "onnx")
    assert onnx.info == codec.info and with_backend(codec, "torch") is codec
    assert [p.parent for p in cache_folder().rglob(MANIFEST_FILE)] != []
    pcm = _speech(2.0)
    enc_t, enc_o = codec.new_encoder(), onnx.new_encoder()
    dec_t, dec_o = codec.new_decoder(), onnx.new_decoder()
    lost = {5, 9, 10, 11}
    for n, i in enumerate(range(0, len(pcm), 1280)):
        payload = enc_t.encode(pcm[i:i + 1280])
        assert enc_o.encode(pcm[i:i + 1280]) == payload
        arrived = None if n in lost else payload
        np.testing.assert_allclose(dec_o.decode(arrived), dec_t.decode(arrived), atol=1e-4)
    with pytest.raises(ValueError, match="FocalCodec codecs only"):
        with_backend(Pcm16Codec(), "onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        with_backend(codec, "tflite")


def test_codecs_at_a_precision_for_calls(
        tiny_model: FocalCodec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--precision`` of the call commands: the torch codec converted on a copy (same name, id
    and payload size; its payloads decode on an fp32 peer), onnxruntime's int8 graphs, and one
    error line for what cannot be: bf16 graphs, a codec without precisions."""
    from voip_codec.cli import main
    from voip_codec.codecs.focalcodec import FocalCodecCodec
    from voip_codec.codecs.pcm16 import Pcm16Codec
    from voip_codec.export.backend import with_backend

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    codec = FocalCodecCodec(tiny_model, "focalcodec-tiny", 200)
    int8 = with_backend(codec, "torch", "int8")
    assert isinstance(int8, FocalCodecCodec) and int8.model.precision == "int8"
    assert int8.info == codec.info and codec.model.precision == "fp32"  # converted on a copy
    assert with_backend(codec, "torch", "fp32") is codec
    pcm = _speech(1.0)
    enc8, enc32, dec32 = int8.new_encoder(), codec.new_encoder(), codec.new_decoder()
    same = 0
    for i in range(0, len(pcm) - 1279, 1280):
        payload = enc8.encode(pcm[i:i + 1280])
        same += payload == enc32.encode(pcm[i:i + 1280])
        assert len(payload) == codec.info.bytes_per_frame
        assert dec32.decode(payload).shape == (1920,)
    assert same >= 1
    onnx8 = with_backend(codec, "onnx", "int8")
    assert onnx8.info == codec.info and onnx8.model.precision == "int8"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="runs fp32 or int8, not bf16"):
        with_backend(codec, "onnx", "bf16")
    with pytest.raises(ValueError, match="applies to the FocalCodec codecs, not pcm16"):
        with_backend(Pcm16Codec(), "torch", "int8")
    # on the command line: one error line, exit 1
    out = tmp_path / "out.wav"
    status = main(["simulate", "--codec", "codec2-700c", "--precision", "int8", "--input",
                   str(_SAMPLE), "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert "--precision applies to the FocalCodec codecs, not codec2-700c" in err
    assert not out.exists()
    assert main(["simulate", "--codec", "focalcodec-default", "--backend", "onnx", "--precision",
                 "bf16", "--input", str(_SAMPLE), "--output", str(out)]) == 1
    assert "the onnx backend runs fp32 or int8, not bf16" in capsys.readouterr().err
    # the bundled model at int8 through the whole in-memory call path
    assert main(["simulate", "--codec", "focalcodec-default", "--precision", "int8", "--input",
                 str(_SAMPLE), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["codec"] == "focalcodec-default" and report["frames"] == 48
    assert report["output_seconds"] == report["input_seconds"] and out.exists()


def test_file_commands_with_onnx_backend(tiny_model: FocalCodec, tiny_export: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """``encode --backend onnx`` writes the torch backend's token file, from a model folder
    (exported into the cache) or from an export folder; ``decode --backend onnx`` its audio."""
    import soundfile as sf

    from voip_codec.cli import main
    from voip_codec.codec.loading import save_pretrained

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model_dir = str(save_pretrained(tiny_model, tmp_path / "model"))
    wav = tmp_path / "in.wav"
    sf.write(wav, _speech(2.0)[:30000], 16000)
    runs = {"torch": ["--model", model_dir], "onnx": ["--model", model_dir, "--backend", "onnx"],
            "export": ["--model", str(tiny_export), "--backend", "onnx"]}
    for name, extra in runs.items():
        assert main(["encode", str(wav), str(tmp_path / f"{name}.fct"), "-q", *extra]) == 0
        assert main(["decode", str(tmp_path / "torch.fct"), str(tmp_path / f"{name}.wav"), "-q",
                     *extra]) == 0
    from voip_codec.wire.tokenfile import read_token_file

    assert (tmp_path / "onnx.fct").read_bytes() == (tmp_path / "torch.fct").read_bytes()
    ref_file, export_file = (read_token_file(tmp_path / f"{n}.fct") for n in ("torch", "export"))
    np.testing.assert_array_equal(export_file.tokens, ref_file.tokens)
    assert export_file.fingerprint == ref_file.fingerprint  # only the model id text differs
    ref, rate = sf.read(tmp_path / "torch.wav", dtype="float32")
    for name in ("onnx", "export"):
        got, got_rate = sf.read(tmp_path / f"{name}.wav", dtype="float32")
        assert got_rate == rate == 24000 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-4)  # 16-bit WAV: 1 LSB is 3e-5
    assert main(["encode", str(wav), str(tmp_path / "x.fct"), "--model", model_dir,
                 "--backend", "onnx", "--precision", "bf16"]) == 1


def test_int8_graphs_from_the_cache_and_from_export(
        tiny_model: FocalCodec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--backend onnx --precision int8`` quantises the cached fp32 export into a folder of
    its own; ``export onnx --precision int8`` writes the same graphs; an export folder runs at
    the precision it holds. int8 tokens agree with fp32 on at least 90 % (random weights put
    many latents near zero)."""
    import soundfile as sf

    from voip_codec.cli import main
    from voip_codec.codec.loading import save_pretrained
    from voip_codec.export.backend import cache_folder
    from voip_codec.export.quantize import QUANTIZE_REVISION
    from voip_codec.export.runtime import OnnxCodecModel
    from voip_codec.wire.tokenfile import read_token_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model_dir = str(save_pretrained(tiny_model, tmp_path / "model"))
    wav = tmp_path / "in.wav"
    sf.write(wav, _speech(2.0)[:30000], 16000)
    out = {}
    for precision in ("fp32", "int8"):
        assert main(["encode", str(wav), str(tmp_path / f"{precision}.fct"), "-q", "--model",
                     model_dir, "--backend", "onnx", "--precision", precision]) == 0
        out[precision] = read_token_file(tmp_path / f"{precision}.fct").tokens
    folders = sorted(p.parent.name for p in cache_folder().rglob(MANIFEST_FILE))
    # the int8 folder names the quantisation rules it was made with
    assert len(folders) == 2 and folders[1] == f"{folders[0]}-int8q{QUANTIZE_REVISION}"
    assert OnnxCodecModel(cache_folder() / folders[1]).precision == "int8"
    # (its token path's activations are split, about 16-bit: on this clip the tokens all agree)
    assert float(np.mean(out["int8"] == out["fp32"])) > 0.9
    exported = tmp_path / "export_int8"
    assert main(["export", "onnx", str(exported), "--model", model_dir, "--precision", "int8",
                 "--threads", "1"]) == 0
    assert "int8 weights" in capsys.readouterr().err
    for name in ("encoder_step.onnx", "decoder_step.onnx"):
        assert (exported / name).read_bytes() == (cache_folder() / folders[1] / name).read_bytes()
    assert main(["encode", str(wav), str(tmp_path / "e.fct"), "-q", "--model", str(exported),
                 "--backend", "onnx"]) == 0
    np.testing.assert_array_equal(read_token_file(tmp_path / "e.fct").tokens, out["int8"])
    assert main(["encode", str(wav), str(tmp_path / "x.fct"), "--model", str(exported),
                 "--backend", "onnx", "--precision", "fp32"]) == 1
    assert "holds int8 graphs, not fp32" in capsys.readouterr().err


def test_export_folder_runs_without_torch(tiny_export: Path, tmp_path: Path) -> None:
    """``--backend onnx --model EXPORT`` never imports torch (onnxruntime and numpy only)."""
    import soundfile as sf

    wav = tmp_path / "in.wav"
    sf.write(wav, _speech(1.0), 16000)
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "from voip_codec.cli import main\n"
        f"assert main(['encode', {str(wav)!r}, {str(tmp_path / 't.fct')!r}, '--backend', 'onnx',"
        f" '--model', {str(tiny_export)!r}, '-q']) == 0\n"
        f"assert main(['decode', {str(tmp_path / 't.fct')!r}, {str(tmp_path / 'o.wav')!r},"
        f" '--backend', 'onnx', '--model', {str(tiny_export)!r}, '-q']) == 0\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert sf.info(tmp_path / "o.wav").frames == 15360 * 3 // 2  # 0.96 s at 24 kHz
