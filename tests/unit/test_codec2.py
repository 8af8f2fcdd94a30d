"""Codec2 behind the frame contract, the streaming resampler and the codec registry."""

from __future__ import annotations

import numpy as np
import pycodec2
import pytest
import soundfile as sf

from tests._shared import shared_dir
from voip_codec.codecs import registry
from voip_codec.codecs.base import Codec, CodecError, CodecInfo, FrameDecoder, FrameEncoder
from voip_codec.codecs.codec2 import CODEC2_MODES, Codec2Codec, StreamingFIRResampler
from voip_codec.codecs.registry import (
    RESERVED_CODEC_IDS,
    available_codecs,
    codec_name_for_id,
    get_codec,
    register_codec,
    unregister_codec,
)
from voip_codec.wire.bitpack import unpack_tokens


def speech() -> np.ndarray:
    path = shared_dir() / "speech" / "eval" / "librispeech-dev-clean" / "ls-84"
    clip = sorted(path.glob("*.flac"))[0]
    pcm, rate = sf.read(clip, dtype="float32")
    assert rate == 16000
    return pcm


@pytest.mark.parametrize("mode", sorted(CODEC2_MODES))
def test_mode_table_matches_libcodec2(mode: str) -> None:
    c2 = pycodec2.Codec2(CODEC2_MODES[mode].pycodec2_mode)
    assert c2.bits_per_frame() == CODEC2_MODES[mode].bits
    assert c2.samples_per_frame() == 8 * CODEC2_MODES[mode].frame_ms
    info = Codec2Codec(mode).info
    assert info.bits_per_frame == (80 // CODEC2_MODES[mode].frame_ms) * c2.bits_per_frame()


def test_700c_geometry() -> None:
    info = get_codec("codec2-700c").info
    assert (info.frame_ms, info.bits_per_frame, info.bytes_per_frame) == (80.0, 56, 7)
    assert (info.input_frame_samples, info.output_frame_samples) == (1280, 1280)
    assert info.bitrate == 700.0
    assert get_codec("codec2-1300").info.bytes_per_frame == 13  # 2 x 52 bits = 104 bits


def test_resampler_is_block_size_invariant() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1280 * 6).astype(np.float32)
    for up, down in ((1, 2), (2, 1)):
        whole = StreamingFIRResampler(up, down).process(x)
        r = StreamingFIRResampler(up, down)
        parts = np.concatenate([r.process(x[i:i + 1280]) for i in range(0, x.size, 1280)])
        np.testing.assert_allclose(parts, whole, atol=1e-6)
        assert whole.shape == (x.size * up // down,)


def test_payload_is_the_concatenated_codec2_frames() -> None:
    pcm = speech()[:1280 * 5]
    codec = Codec2Codec("700C")
    enc = codec.new_encoder()
    payloads = [enc.encode(pcm[i * 1280:(i + 1) * 1280]) for i in range(5)]
    # the same 8 kHz signal straight through pycodec2, one 40 ms frame per call
    narrow = StreamingFIRResampler(1, 2).process(pcm)
    ints = np.clip(np.round(narrow * 32768), -32768, 32767).astype(np.int16)
    c2 = pycodec2.Codec2(700)
    direct = [c2.encode(np.ascontiguousarray(ints[i:i + 320])) for i in range(0, ints.size, 320)]
    for i, payload in enumerate(payloads):
        bits = unpack_tokens(payload, 1, 56)
        for half in range(2):
            ref = np.unpackbits(np.frombuffer(direct[2 * i + half], dtype=np.uint8))[:28]
            np.testing.assert_array_equal(bits[28 * half:28 * (half + 1)], ref)
        assert len(payload) == 7  # 56 bits fill the 7 bytes exactly


def best_stoi(ref: np.ndarray, out: np.ndarray) -> float:
    from pystoi import stoi

    # codec2's delay is found by maximising STOI (see evaluation notes)
    return max(stoi(ref[:ref.size - lag], out[lag:], 16000) for lag in range(0, 801, 80))


@pytest.mark.parametrize("rate", [16000, 8000])
def test_round_trip_on_real_speech(rate: int) -> None:
    pcm = speech()
    codec = Codec2Codec("700C", output_sample_rate=rate)
    enc, dec = codec.new_encoder(), codec.new_decoder()
    n = pcm.size // 1280
    out = np.concatenate([dec.decode(enc.encode(pcm[i * 1280:(i + 1) * 1280])) for i in range(n)])
    assert out.dtype == np.float32 and out.shape == (n * rate * 80 // 1000,)
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0
    if rate == 16000:
        assert best_stoi(pcm[:out.size], out) > 0.6


def test_decoder_conceals_lost_frames() -> None:
    pcm = speech()[:1280 * 4]
    codec = get_codec("codec2-700c")
    enc, dec = codec.new_encoder(), codec.new_decoder()
    good = dec.decode(enc.encode(pcm[:1280]))
    lost = [dec.decode(None) for _ in range(5)]
    assert all(x.shape == (1280,) for x in lost)
    assert np.abs(lost[0]).max() > 0 and np.all(lost[4] == 0)  # faded, then muted
    assert good.shape == (1280,)


def test_contract_errors() -> None:
    codec = get_codec("codec2-700c")
    with pytest.raises(CodecError, match="1280 samples"):
        codec.new_encoder().encode(np.zeros(1000, dtype=np.float32))
    with pytest.raises(CodecError, match="7-byte payload"):
        codec.new_decoder().decode(b"\x00" * 6)
    with pytest.raises(ValueError, match="unknown Codec2 mode"):
        Codec2Codec("999")
    with pytest.raises(ValueError, match="output_sample_rate"):
        Codec2Codec("700C", output_sample_rate=24000)


def test_registry_builtins() -> None:
    names = available_codecs()
    assert {"pcm16", "codec2-700c", "codec2-1300", "codec2-3200"} <= set(names)
    assert codec_name_for_id(16) == "codec2-700c"
    assert get_codec("codec2-700c") is get_codec("codec2-700c")  # cached
    for name, cid in RESERVED_CODEC_IDS.items():  # registered lazily by the FocalCodec adapter
        assert name in names and codec_name_for_id(cid) == name
    with pytest.raises(ValueError, match="unknown codec 'nope'; available: amrnb-4.75k, codec2-1200"):
        get_codec("nope")


class _FakeFocal(Codec):
    """Minimal codec standing in for the FocalCodec adapter (80 ms, 4 x 16-bit tokens)."""

    def __init__(self, name: str, codec_id: int) -> None:
        self.info = CodecInfo(name, codec_id, 80.0, 64, 16000, 24000)

    def new_encoder(self) -> FrameEncoder:
        raise NotImplementedError

    def new_decoder(self) -> FrameDecoder:
        raise NotImplementedError


def test_register_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # restored afterwards
    with pytest.raises(ValueError, match="reserved for codec id 32"):
        register_codec("focalcodec-65k", 40, lambda: _FakeFocal("focalcodec-65k", 40))
    with pytest.raises(ValueError, match="codec id 33 is reserved for 'focalcodec-4k'"):
        register_codec("my-codec", 33, lambda: _FakeFocal("my-codec", 33))
    with pytest.raises(ValueError, match="already used by 'codec2-700c'"):
        register_codec("my-codec", 16, lambda: _FakeFocal("my-codec", 16))
    with pytest.raises(ValueError, match="codec name must match"):
        register_codec("Bad Name", 200, lambda: _FakeFocal("Bad Name", 200))
    with pytest.raises(ValueError, match="already registered"):
        register_codec("focalcodec-65k", 32, lambda: _FakeFocal("focalcodec-65k", 32))
    unregister_codec("focalcodec-65k")
    with pytest.raises(ValueError, match="reserved for FocalCodec-Stream but not registered"):
        get_codec("focalcodec-65k")
    register_codec("focalcodec-65k", 32, lambda: _FakeFocal("focalcodec-65k", 32))
    assert get_codec("focalcodec-65k").info.bytes_per_frame == 8
    register_codec("focalcodec-65k", 32, lambda: _FakeFocal("wrong-name", 32), replace=True)
    with pytest.raises(ValueError, match="built 'wrong-name'"):
        get_codec("focalcodec-65k")
    register_codec("my-codec", 200, lambda: _FakeFocal("my-codec", 200))
    assert codec_name_for_id(200) == "my-codec"
