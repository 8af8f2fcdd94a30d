"""FocalCodec-Stream through the codec-agnostic frame contract."""

from __future__ import annotations

import numpy as np
import pytest

from tests._shared import conformance_dir
from voip_codec.codecs.base import CodecError
from voip_codec.codecs.focalcodec import FocalCodecCodec, load_focalcodec_codec
from voip_codec.codecs.plc import ConcealingDecoder
from voip_codec.codecs.registry import get_codec
from voip_codec.wire.bitpack import unpack_tokens

CLIP = "librispeech_84-121123-0001"


@pytest.fixture(scope="module")
def codec() -> FocalCodecCodec:
    return load_focalcodec_codec(str(conformance_dir()), "focalcodec-test", 200)


def frames(codec: FocalCodecCodec) -> list[np.ndarray]:
    sig = np.load(conformance_dir() / CLIP / "input_sig.npy")[0]
    sig = np.pad(sig, (0, (-len(sig)) % 1280))
    return [sig[i:i + 1280] for i in range(0, len(sig), 1280)]


def test_frames_reproduce_the_official_stream(codec: FocalCodecCodec) -> None:
    info = codec.info
    assert (info.frame_ms, info.bits_per_frame, info.bytes_per_frame) == (80.0, 48, 6)
    assert info.input_frame_samples == 1280 and info.output_frame_samples == 1920
    enc, dec = codec.new_encoder(), codec.new_decoder()
    payloads = [enc.encode(f) for f in frames(codec)]
    toks = np.concatenate([unpack_tokens(p, 12, 4) for p in payloads])
    np.testing.assert_array_equal(toks, np.load(conformance_dir() / CLIP / "stream_toks.npy")[0])
    audio = np.concatenate([dec.decode(p) for p in payloads])
    ref = np.load(conformance_dir() / CLIP / "stream_rec_sig.npy")[0]
    np.testing.assert_allclose(audio, ref, atol=1e-4, rtol=1e-4)


def test_token_domain_concealment_keeps_the_decoder_aligned(codec: FocalCodecCodec) -> None:
    enc = codec.new_encoder()
    payloads = [enc.encode(f) for f in frames(codec)]
    lossless = codec.new_decoder()
    ref = [lossless.decode(p) for p in payloads]
    dec = codec.new_decoder()
    assert isinstance(dec, ConcealingDecoder)
    out = []
    for i, p in enumerate(payloads):
        lost = 10 <= i < 13  # a 3-frame burst
        out.append(dec.decode(None if lost else p))
    assert all(len(o) == 1920 for o in out)
    # during the burst the output fades: -6 dB per frame at the end of each frame
    assert abs(out[12][-1]) <= abs(ref[12]).max() * 0.2
    # the decoder kept running on repeated tokens, so after a few frames it is back in step
    # (its causal context forgets the substituted frames); errors shrink after the burst
    err_after = [np.abs(out[i] - ref[i]).max() for i in range(13, 30)]
    assert err_after[-1] < err_after[0]
    assert dec.concealed_frames == 3


def test_bad_frames_are_rejected(codec: FocalCodecCodec) -> None:
    with pytest.raises(CodecError, match="1280 samples"):
        codec.new_encoder().encode(np.zeros(1000, dtype=np.float32))
    with pytest.raises(CodecError, match="6-byte payload"):
        codec.new_decoder().decode(b"\x00" * 5)


def test_reserved_names_are_registered_lazily() -> None:
    with pytest.raises(Exception, match="no FocalCodec checkpoint|never downloads"):
        get_codec("focalcodec-2k")
