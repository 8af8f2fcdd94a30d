"""Concealment: repeat-and-fade gains, click-free ramps, the replaceable Concealer interface."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from voip_codec.codecs.base import CodecError
from voip_codec.codecs.pcm16 import Pcm16Codec, Pcm16PayloadDecoder
from voip_codec.codecs.plc import (
    Concealer,
    ConcealingDecoder,
    Concealment,
    RepeatFadeConcealer,
)

CODEC = Pcm16Codec()
N = CODEC.info.output_frame_samples


def tone(frames: int, freq: float = 200.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(frames * N) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_repeat_fade_gains_and_mute() -> None:
    c = RepeatFadeConcealer()
    history = [b"a", b"b"]
    gains = [c.conceal(history, k).gain for k in range(1, 7)]
    assert gains[:3] == pytest.approx([0.501, 0.251, 0.126], abs=2e-3)  # -6 dB per frame
    assert gains[3:] == [0.0, 0.0, 0.0]  # muted from the 4th lost frame on
    assert c.conceal(history, 2).payload == b"b"  # repeats the last good payload
    assert c.conceal([], 1).payload is None
    with pytest.raises(ValueError, match="lost_count"):
        c.conceal(history, 0)


def test_concealing_decoder_repeats_fades_and_returns_smoothly() -> None:
    enc, dec = CODEC.new_encoder(), CODEC.new_decoder()
    assert isinstance(dec, ConcealingDecoder)
    x = tone(10)
    frames = [enc.encode(x[i * N:(i + 1) * N]) for i in range(10)]
    out = []
    for i, p in enumerate(frames):
        out.append(dec.decode(None if 3 <= i < 8 else p))
    y = np.concatenate(out)
    assert all(o.shape == (N,) and o.dtype == np.float32 for o in out)
    np.testing.assert_allclose(y[:3 * N], x[:3 * N], atol=1 / 32768)
    # first lost frame: the last good frame again, ramped from gain 1 to 0.5
    ramp = np.linspace(1.0, 10 ** (-6 / 20), N)
    np.testing.assert_allclose(out[3], x[2 * N:3 * N] * ramp, atol=1e-4)
    assert np.all(out[7] == 0)  # muted
    # return: the first good frame is ramped from 0 back to 1, the next one is untouched
    np.testing.assert_allclose(out[8], x[8 * N:9 * N] * np.linspace(0, 1, N), atol=1e-4)
    np.testing.assert_allclose(out[9], x[9 * N:], atol=1 / 32768)
    # no click: sample-to-sample steps never exceed those of the signal itself (plus slack)
    assert np.max(np.abs(np.diff(y))) <= np.max(np.abs(np.diff(x))) * 1.05
    assert dec.concealed_frames == 5 and dec.lost_in_a_row == 0


def test_decode_none_at_stream_start_is_silence() -> None:
    dec = CODEC.new_decoder()
    assert np.all(dec.decode(None) == 0)


def test_wrong_payload_size_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="2560-byte payload"):
        CODEC.new_decoder().decode(b"\x00" * 10)


class ZeroTokenConcealer(Concealer):
    """A stand-in for a learned predictor: proposes a fixed payload at full gain."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def conceal(self, history: Sequence[bytes], lost_count: int) -> Concealment:
        self.calls.append((len(history), lost_count))
        return Concealment(payload=b"\x00" * len(history[-1]), gain=1.0)


def test_custom_concealer_plugs_in() -> None:
    concealer = ZeroTokenConcealer()
    dec = ConcealingDecoder(Pcm16PayloadDecoder(CODEC.info), concealer, history=2)
    enc = CODEC.new_encoder()
    x = tone(4)
    for i in range(3):
        dec.decode(enc.encode(x[i * N:(i + 1) * N]))
    assert np.all(dec.decode(None) == 0)
    dec.decode(None)
    assert concealer.calls == [(2, 1), (2, 2)]  # history capped at 2, lost count increments
    dec.reset()
    assert dec.lost_in_a_row == 0 and dec.concealed_frames == 0


def test_bad_concealer_settings() -> None:
    with pytest.raises(ValueError, match="fade_db"):
        RepeatFadeConcealer(fade_db=0)
    with pytest.raises(ValueError, match="mute_after"):
        RepeatFadeConcealer(mute_after=0)
