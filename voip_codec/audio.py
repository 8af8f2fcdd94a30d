"""Audio file I/O and resampling without torchaudio.

Reading tries libsndfile (``soundfile``: WAV, FLAC, OGG/Vorbis, ...) and then FFmpeg (``av``: MP3,
M4A/AAC, Opus, video containers, ...). Any channel count is averaged to mono; any sample rate is
converted with soxr (high quality).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["AudioError", "read_audio", "resample", "write_audio"]


class AudioError(ValueError):
    """An audio file is missing, unreadable or empty."""


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a mono float signal ``(samples,)`` from ``rate_in`` to ``rate_out`` Hz."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    import soxr

    return np.asarray(soxr.resample(np.asarray(x, dtype=np.float32), rate_in, rate_out, "HQ"),
                      dtype=np.float32)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError):
        return None
    return data.mean(axis=1), int(rate)


def _read_av(path: Path) -> tuple[np.ndarray, int] | None:
    import av

    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                return None
            stream = streams[0]
            rate = int(stream.rate or stream.codec_context.sample_rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.FFmpegError, ValueError, OSError):
        return None
    if not chunks:
        return np.zeros(0, dtype=np.float32), rate
    return np.concatenate(chunks).astype(np.float32), rate


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read any audio file as mono float32, optionally resampled.

    Args:
        path: file to read.
        sample_rate: target rate in Hz, or None to keep the file's rate.

    Returns:
        ``(samples (n,), rate)``.

    Raises:
        AudioError: missing file, unreadable/unsupported content, or no audio in it.
    """
    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    result = _read_soundfile(p) or _read_av(p)
    if result is None:
        raise AudioError(f"{p}: not a readable audio file (neither libsndfile nor FFmpeg can "
                         "decode it)")
    data, rate = result
    if data.size == 0:
        raise AudioError(f"{p}: contains no audio samples")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{p}: contains NaN or infinite samples")
    if sample_rate is not None and rate != sample_rate:
        data, rate = resample(data, rate, sample_rate), sample_rate
    return np.ascontiguousarray(data, dtype=np.float32), rate


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono float samples; the format follows the extension (16-bit PCM for ``.wav``)."""
    import soundfile as sf

    p = Path(path)
    subtype = "PCM_16" if p.suffix.lower() in (".wav", ".flac") else None
    try:
        sf.write(str(p), np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0), sample_rate,
                 subtype=subtype)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as exc:
        raise AudioError(f"{p}: cannot write audio ({exc})") from exc
