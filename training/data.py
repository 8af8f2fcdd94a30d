"""Training data: random 1 s crops of the real `train` speech, with light augmentation.

Only ``../shared/speech/train`` is ever read here (dev/eval are for tuning/reporting). All clips
are decoded once into one float32 array (about 0.7 GB for 173 min) and cached as ``.npy`` next to
the run so a resumed run starts quickly. Batches come from a seeded ``numpy.random.Generator``
whose state is checkpointed, so a resumed run draws the same batches as an uninterrupted one.

The model input is the augmented crop; the target is the *clean* crop (same random gain)
resampled to 24 kHz, because the decoder writes 24 kHz audio whose content is band-limited to
8 kHz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import fftconvolve

SR_IN = 16000
SR_OUT = 24000


def load_split(speech_dir: Path, split: str, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All clips of a split concatenated: ``(audio float32, offsets int64 with len = clips + 1)``."""
    if cache is not None and cache.with_suffix(".offsets.npy").exists() and cache.exists():
        return np.load(cache, mmap_mode=None), np.load(cache.with_suffix(".offsets.npy"))
    files = sorted((speech_dir / split).rglob("*.flac"))
    if not files:
        raise FileNotFoundError(f"no FLAC clips under {speech_dir / split}")
    parts = []
    for f in files:
        x, sr = sf.read(str(f), dtype="float32", always_2d=False)
        if x.ndim > 1:
            x = x.mean(axis=1)
        if sr != SR_IN:
            x = soxr.resample(x, sr, SR_IN).astype(np.float32)
        parts.append(x)
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    audio = np.concatenate(parts).astype(np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, audio)
        np.save(cache.with_suffix(".offsets.npy"), offsets)
    return audio, offsets


class CropSampler:
    """Draws batches of (augmented 16 kHz input, clean 24 kHz target)."""

    def __init__(self, audio: np.ndarray, offsets: np.ndarray, seconds: float = 1.0,
                 p_noise: float = 0.2, p_reverb: float = 0.15,
                 gain_db: tuple[float, float] = (-10.0, 6.0), p_quiet: float = 0.0) -> None:
        self.audio = audio
        self.offsets = offsets
        self.n = int(round(seconds * SR_IN))
        lengths = np.diff(offsets).astype(np.float64)
        # clips are picked in proportion to their length (short keyword clips still appear)
        self.weights = np.maximum(lengths, self.n) / np.maximum(lengths, self.n).sum()
        self.p_noise = p_noise
        self.p_reverb = p_reverb
        self.gain_db = gain_db
        self.p_quiet = p_quiet

    def _crop(self, rng: np.random.Generator) -> np.ndarray:
        i = int(rng.choice(len(self.weights), p=self.weights))
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        clip = self.audio[a:b]
        if len(clip) >= self.n:
            s = int(rng.integers(0, len(clip) - self.n + 1))
            return clip[s:s + self.n].copy()
        out = np.zeros(self.n, dtype=np.float32)
        s = int(rng.integers(0, self.n - len(clip) + 1))
        out[s:s + len(clip)] = clip
        return out

    def _noise_burst(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        length = int(rng.integers(SR_IN // 50, SR_IN // 4))  # 20-250 ms
        start = int(rng.integers(0, self.n - length))
        rms = float(np.sqrt(np.mean(x ** 2)) + 1e-4)
        level = rms * 10 ** (rng.uniform(-25.0, -5.0) / 20)
        noise = rng.standard_normal(length).astype(np.float32) * level
        if rng.random() < 0.5:  # coloured (low-passed) noise half of the time
            noise = np.cumsum(noise) * 0.1
            noise -= noise.mean()
        env = np.hanning(length).astype(np.float32)
        y = x.copy()
        y[start:start + length] += noise * env
        return y

    def _reverb(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rt60 = rng.uniform(0.15, 0.6)
        length = int(rt60 * SR_IN)
        t = np.arange(length) / SR_IN
        ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
        ir[0] = 0.0
        ir *= 10 ** (rng.uniform(-20.0, -8.0) / 20) / (np.sqrt(np.sum(ir ** 2)) + 1e-9)
        ir[0] = 1.0  # direct path at zero delay keeps input and target aligned
        y = fftconvolve(x, ir)[: self.n].astype(np.float32)
        return y * (np.sqrt(np.mean(x ** 2)) + 1e-6) / (np.sqrt(np.mean(y ** 2)) + 1e-6)

    def _quiet(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Replace a random stretch (0.2 s to the whole crop) by what a call carries in pauses:
        digital silence, low-level white noise (-90 ... -50 dBFS RMS) or a quiet tone
        (-70 ... -50 dBFS, 100-4000 Hz). Input and target both get it: quiet in, quiet out."""
        length = int(rng.integers(SR_IN // 5, self.n + 1))
        start = int(rng.integers(0, self.n - length + 1))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            fill = np.zeros(length, dtype=np.float32)
        elif kind == 1:
            level = 10 ** (rng.uniform(-90.0, -50.0) / 20)
            fill = (rng.standard_normal(length) * level).astype(np.float32)
        else:
            amp = 10 ** (rng.uniform(-70.0, -50.0) / 20) * np.sqrt(2)
            t = np.arange(length) / SR_IN
            fill = (amp * np.sin(2 * np.pi * rng.uniform(100.0, 4000.0) * t
                                 + rng.uniform(0, 2 * np.pi))).astype(np.float32)
        y = x.copy()
        y[start:start + length] = fill
        return y

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(size):
            clean = self._crop(rng) * np.float32(10 ** (rng.uniform(*self.gain_db) / 20))
            peak = float(np.abs(clean).max())
            if peak > 0.99:
                clean *= np.float32(0.99 / peak)
            if self.p_quiet and rng.random() < self.p_quiet:
                clean = self._quiet(clean, rng)
            x = clean
            if rng.random() < self.p_reverb:
                x = self._reverb(x, rng)
            if rng.random() < self.p_noise:
                x = self._noise_burst(x, rng)
            xs.append(np.clip(x, -1.0, 1.0))
            ys.append(soxr.resample(clean, SR_IN, SR_OUT)[: self.n * 3 // 2])
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)
