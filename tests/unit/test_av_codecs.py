"""Opus and AMR-NB (voip_codec.codecs.av) as registered codecs of the frame contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voip_codec.audio import read_audio, resample
from voip_codec.cli import main
from voip_codec.codecs.av import AV_CODEC_IDS, AV_CODECS, AvFrameCodec
from voip_codec.codecs.base import CodecError
from voip_codec.codecs.plc import ConcealingDecoder
from voip_codec.codecs.registry import codec_name_for_id, get_codec, register_codec

SAMPLE = Path(__file__).resolve().parents[2] / "voip_codec" / "assets" / "sample_speech.flac"

# name -> (codec id, payload bytes per 20 ms frame, decoder rate, waveform correlation floor)
EXPECTED = {
    "opus-6k": (40, 15, 48000, 0.70),
    "opus-8k": (41, 20, 48000, 0.85),
    "amrnb-4.75k": (48, 13, 8000, 0.65),
}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    pcm, _ = read_audio(SAMPLE, 16000)
    return pcm


def test_every_variant_is_registered() -> None:
    assert set(EXPECTED) == set(AV_CODECS) == set(AV_CODEC_IDS)
    for name, (codec_id, *_) in EXPECTED.items():
        assert codec_name_for_id(codec_id) == name
    with pytest.raises(ValueError, match="already used by 'opus-6k'"):
        register_codec("my-opus", 40, lambda: get_codec("opus-6k"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_round_trip_through_the_frame_contract(name: str, speech: np.ndarray) -> None:
    codec_id, nbytes, out_rate, floor = EXPECTED[name]
    codec = get_codec(name)
    info = codec.info
    assert isinstance(codec, AvFrameCodec)
    assert (info.codec_id, info.frame_ms, info.bytes_per_frame) == (codec_id, 20.0, nbytes)
    assert (info.input_sample_rate, info.output_sample_rate) == (16000, out_rate)
    enc, dec = codec.new_encoder(), codec.new_decoder()
    n = info.input_frame_samples
    frames = speech.shape[0] // n
    out = []
    for k in range(frames):
        payload = enc.encode(speech[k * n:(k + 1) * n])
        assert isinstance(payload, bytes) and len(payload) == nbytes
        pcm = dec.decode(payload)
        assert pcm.dtype == np.float32 and pcm.shape == (info.output_frame_samples,)
        out.append(pcm)
    decoded = resample(np.concatenate(out), out_rate, 16000)
    source = speech[:frames * n]
    # the codecs delay the speech by a few ms: the best lag within 25 ms must match well
    best = max(float(np.corrcoef(source[:source.size - d], decoded[d:source.size])[0, 1])
               for d in range(0, 400, 2))
    assert best > floor, f"{name}: decoded speech correlates only {best:.3f} with the input"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lost_frames_are_concealed_then_decoding_resumes(name: str, speech: np.ndarray) -> None:
    codec = get_codec(name)
    info = codec.info
    enc, dec = codec.new_encoder(), codec.new_decoder()
    assert isinstance(dec, ConcealingDecoder)
    n, m = info.input_frame_samples, info.output_frame_samples
    payloads = [enc.encode(speech[k * n:(k + 1) * n]) for k in range(30)]
    for p in payloads[:20]:
        dec.decode(p)
    concealed = [dec.decode(None) for _ in range(5)]
    for pcm in concealed:
        assert pcm.dtype == np.float32 and pcm.shape == (m,) and np.all(np.isfinite(pcm))
    assert np.abs(concealed[0]).max() > 0  # the last payload repeated, fading
    assert not np.any(concealed[4])  # muted from the 4th lost frame on
    assert dec.concealed_frames == 5 and dec.lost_in_a_row == 5
    resumed = [dec.decode(p) for p in payloads[25:30]]
    assert dec.lost_in_a_row == 0 and np.abs(resumed[-1]).max() > 0


def test_bad_frames_are_codec_errors() -> None:
    codec = get_codec("opus-6k")
    with pytest.raises(CodecError, match="expected a mono frame of 320 samples"):
        codec.new_encoder().encode(np.zeros(321, dtype=np.float32))
    with pytest.raises(CodecError, match="expected 15-byte payload"):
        codec.new_decoder().decode(b"\x00" * 16)


def test_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="choose from opus-6k, opus-8k, amrnb-4.75k"):
        AvFrameCodec("opus-64k")


def test_simulate_with_opus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "opus.wav"
    status = main(["simulate", "--codec", "opus-6k", "--input", str(SAMPLE), "--output",
                   str(out), "--loss", "0.2", "--redundancy", "0", "--no-adaptive", "--seed",
                   "3", "--json"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["codec"] == "opus-6k" and summary["codec_kbps"] == 6.0
    assert summary["frames"] == 190  # 3.79 s of 20 ms frames
    assert summary["network"]["lost_packets"] > 10
    lost = summary["network"]["lost_packets"]
    # K = 0: every lost packet is a concealed frame or, while the playout delay shrinks after
    # a loss, a dropped one ("skipped"); a loss in the last tick or so may go unplayed
    assert lost - 2 <= summary["concealed"] + summary["skipped"] <= lost
    audio, rate = sf.read(out, dtype="float32")
    assert rate == 48000 and abs(audio.shape[0] / rate - summary["input_seconds"]) < 0.05
    assert np.abs(audio).max() > 0.05
