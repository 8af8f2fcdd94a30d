"""Audio file reading: formats libsndfile cannot read go through FFmpeg (``av``), averaged to
mono and resampled on request."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from voip_codec.audio import AudioError, read_audio


def _write_aac(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> None:
    """Stereo float samples -> an AAC ``.m4a`` (a format libsndfile does not read)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32),
                                           format="fltp", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


def test_aac_file_is_read_through_ffmpeg_as_mono(tmp_path: Path) -> None:
    rate, n = 48000, 24000
    t = np.arange(n) / rate
    tone = 0.4 * np.sin(2 * np.pi * 440.0 * t)
    path = tmp_path / "tone.m4a"
    _write_aac(path, tone, np.zeros(n), rate)
    pcm, got_rate = read_audio(path)
    assert got_rate == rate
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert n <= len(pcm) <= n + 4096  # AAC adds encoder delay and pads the last frame
    assert abs(_peak_hz(pcm, rate) - 440.0) < 5.0
    assert 0.1 < float(np.abs(pcm).max()) < 0.5  # one channel's tone, downmixed
    pcm16, rate16 = read_audio(path, 16000)
    assert rate16 == 16000
    assert abs(len(pcm16) - len(pcm) / 3) <= 2
    assert abs(_peak_hz(pcm16, 16000) - 440.0) < 5.0


def test_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.m4a"
    path.write_bytes(b"not audio at all" * 64)
    with pytest.raises(AudioError, match="not a readable audio file"):
        read_audio(path)
