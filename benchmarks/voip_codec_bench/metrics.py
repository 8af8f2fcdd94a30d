"""Speech quality metrics for the codec benchmarks, with delay alignment and resampling.

Every metric works on 16 kHz mono float32 audio. Intrusive metrics (STOI, PESQ, dWER, speaker
similarity) compare a degraded signal with a time-aligned reference of the same length;
non-intrusive ones (DistillMOS, PLCMOS) look at the degraded signal only.

Optional metric packages are imported lazily. A metric whose package is missing is not dropped:
:class:`MetricSet` records it in :attr:`MetricSet.missing` with the install command, and reports
show it as ``missing (pip install X)``.

dWER is the word error rate of pocketsphinx's transcript of the degraded audio against
pocketsphinx's transcript of the *original* audio (no human transcripts ship with the clips), so it
measures how much a codec changes what the recogniser hears, not absolute ASR accuracy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .cache import ResultCache

__all__ = [
    "METRICS",
    "METRIC_RATE",
    "MetricSet",
    "MetricSpec",
    "MetricUnavailableError",
    "align",
    "estimate_delay",
    "to_metric_rate",
    "word_error_rate",
]

METRIC_RATE = 16000
"""Sample rate (Hz) all metrics run at."""


class MetricUnavailableError(ImportError):
    """A metric's optional package is not installed (the message has the install command)."""


@dataclass(frozen=True)
class MetricSpec:
    """Static description of one metric."""

    name: str
    """Key in results and on the command line, e.g. ``"pesq"``."""
    label: str
    """Column header in reports."""
    modules: tuple[str, ...]
    """Importable modules the metric needs."""
    install: str
    """What to install when it is missing, e.g. ``"pip install pesq"``."""
    intrusive: bool
    """True when the metric compares with a reference signal."""
    higher_is_better: bool
    """Direction of the scale (False for error rates)."""
    description: str
    """One line: what the number measures."""
    whole_reference: bool = False
    """The reference is the whole original clip rather than the delay-aligned cut (a
    transcript does not depend on alignment, and one transcript then serves every codec)."""


METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in (
    MetricSpec("stoi", "STOI", ("pystoi",), "pip install pystoi", True, True,
               "short-time objective intelligibility, 0..1"),
    MetricSpec("pesq", "WB-PESQ", ("pesq",), "pip install pesq", True, True,
               "ITU-T P.862.2 wideband PESQ (MOS-LQO 1.04..4.64)"),
    MetricSpec("distillmos", "DistillMOS", ("distillmos", "torch"),
               "pip install --no-deps distillmos==0.9.1 xls-r-sqa==0.1.0",
               False, True, "non-intrusive naturalness MOS predicted by DistillMOS (1..5)"),
    MetricSpec("dwer", "dWER %", ("pocketsphinx",), "pip install 'voip-codec[eval-full]'",
               True, False,
               "pocketsphinx WER of the decoded audio against its transcript of the original",
               whole_reference=True),
    MetricSpec("speaker", "spk cos", ("resemblyzer",),
               "pip install --no-deps resemblyzer webrtcvad-wheels", True, True,
               "cosine similarity of Resemblyzer speaker embeddings, original vs decoded"),
    MetricSpec("plcmos", "PLCMOS", ("speechmos", "onnxruntime"),
               "pip install 'voip-codec[eval-full]'", False, True,
               "non-intrusive packet-loss-concealment MOS (speechmos PLCMOS v2, 1..5)"),
)}
"""All metrics the harness knows, by name."""


def to_metric_rate(x: np.ndarray, rate: int) -> np.ndarray:
    """Resample a mono signal ``(n,)`` at ``rate`` Hz to :data:`METRIC_RATE` (float32)."""
    from voip_codec.audio import resample

    return resample(np.asarray(x, dtype=np.float32), rate, METRIC_RATE)


def align(ref: np.ndarray, deg: np.ndarray, delay: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove a codec's fixed delay and cut both signals to a common length.

    Args:
        ref: reference ``(n,)``.
        deg: degraded signal ``(m,)`` at the same rate, lagging ``ref`` by ``delay`` samples.
        delay: lag in samples (>= 0: ``deg`` is late; < 0: ``deg`` is early).

    Returns:
        ``(ref_aligned, deg_aligned)``, both of the same length.
    """
    if delay >= 0:
        deg = deg[delay:]
    else:
        ref = ref[-delay:]
    n = min(ref.shape[0], deg.shape[0])
    return ref[:n], deg[:n]


def _xcorr_scores(ref: np.ndarray, deg: np.ndarray, max_delay: int) -> np.ndarray:
    """Normalised cross-correlation of ``deg`` against ``ref`` for lags 0..max_delay."""
    n = ref.shape[0] + deg.shape[0]
    size = 1 << (n - 1).bit_length()
    spec = np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size))
    corr = np.fft.irfft(spec, size)[:max_delay + 1]
    norm = float(np.linalg.norm(ref) * np.linalg.norm(deg)) or 1.0
    return corr / norm


def estimate_delay(refs: Sequence[np.ndarray], degs: Sequence[np.ndarray], max_delay: int,
                   method: str = "xcorr", step: int = 32) -> int:
    """Estimate one fixed codec delay from a few (reference, decoded) pairs.

    Args:
        refs: reference signals at :data:`METRIC_RATE`.
        degs: decoded signals at the same rate, same order.
        max_delay: largest lag searched, in samples (lags 0..max_delay).
        method: ``"xcorr"`` (maximise the summed normalised cross-correlation) or ``"stoi"``
            (maximise mean STOI over the first 3 s on a grid of ``step`` samples; for vocoders
            such as Codec2 whose waveform does not follow the input's phase).
        step: grid step of the ``"stoi"`` search, in samples.

    Returns:
        The delay in samples.

    Raises:
        ValueError: unknown method, empty or mismatched inputs.
    """
    if method not in ("xcorr", "stoi"):
        raise ValueError(f"unknown alignment method {method!r}; choose 'xcorr' or 'stoi'")
    if not refs or len(refs) != len(degs):
        raise ValueError("estimate_delay needs the same non-zero number of refs and degs")
    if method == "xcorr":
        total = np.zeros(max_delay + 1)
        for ref, deg in zip(refs, degs, strict=True):
            total += _xcorr_scores(np.asarray(ref, np.float64), np.asarray(deg, np.float64),
                                   max_delay)
        return int(np.argmax(total))
    from pystoi import stoi

    best, best_score = 0, -np.inf
    for lag in range(0, max_delay + 1, step):
        scores = []
        for ref, deg in zip(refs, degs, strict=True):
            r, d = align(ref[:3 * METRIC_RATE + lag], deg[:3 * METRIC_RATE + lag], lag)
            scores.append(float(stoi(r, d, METRIC_RATE, extended=False)))
        score = float(np.mean(scores))
        if score > best_score:
            best, best_score = lag, score
    return best


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words.

    Args:
        reference: reference transcript (words separated by whitespace).
        hypothesis: transcript to score.

    Returns:
        The WER as a fraction (0 for two empty transcripts; 1 per inserted word when the
        reference is empty).
    """
    ref, hyp = reference.split(), hypothesis.split()
    if not ref:
        return float(len(hyp) > 0)
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(ref)


def _pocketsphinx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"pocketsphinx-{version('pocketsphinx')}"
    except PackageNotFoundError:
        return "pocketsphinx-unknown"


def _import_distillmos() -> Any:
    """Import distillmos without torchaudio.

    distillmos imports torchaudio at module level but uses it only in its command-line file
    loader, which this harness never calls; the PyPI torchaudio build does not work with the CPU
    torch used here. A placeholder module stands in during the import and is removed afterwards.
    """
    if "distillmos" in sys.modules:
        return sys.modules["distillmos"]
    placeholder = None
    if importlib.util.find_spec("torchaudio") is None:
        placeholder = types.ModuleType("torchaudio")
        placeholder.__doc__ = "placeholder: distillmos's file loader is not used"
        sys.modules["torchaudio"] = placeholder
    try:
        import distillmos
    finally:
        if placeholder is not None and sys.modules.get("torchaudio") is placeholder:
            del sys.modules["torchaudio"]
    return distillmos


class MetricSet:
    """The selected metrics, loaded lazily, with the missing ones recorded.

    Args:
        names: metric names (keys of :data:`METRICS`).
        store: optional result cache that keeps pocketsphinx transcripts across processes and
            runs (the original's transcript is then computed once per clip, not per codec).

    Raises:
        ValueError: an unknown metric name (the message lists the known ones).
    """

    def __init__(self, names: Sequence[str], store: ResultCache | None = None) -> None:
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(METRICS)}")
        self.names: list[str] = list(dict.fromkeys(names))
        self.missing: dict[str, str] = {}
        """Metric name -> ``"missing (pip install X)"`` for metrics whose package is absent."""
        for name in self.names:
            spec = METRICS[name]
            if any(importlib.util.find_spec(m) is None for m in spec.modules):
                self.missing[name] = f"missing ({spec.install})"
        self._models: dict[str, Any] = {}
        self._transcripts: dict[str, str] = {}
        self._store = store

    @property
    def available(self) -> list[str]:
        """Selected metrics whose packages are installed."""
        return [n for n in self.names if n not in self.missing]

    def score(self, name: str, ref: np.ndarray, deg: np.ndarray) -> float:
        """Score ``deg`` against ``ref`` with one metric.

        Args:
            name: a metric in :attr:`available`.
            ref: aligned reference ``(n,)`` at :data:`METRIC_RATE` (ignored by non-intrusive
                metrics).
            deg: aligned degraded signal ``(n,)`` at :data:`METRIC_RATE`.

        Returns:
            The score; NaN when the metric cannot score this pair (e.g. PESQ finds no speech).

        Raises:
            MetricUnavailableError: the metric's package is missing.
            ValueError: the metric was not selected.
        """
        if name not in self.names:
            raise ValueError(f"metric {name!r} was not selected ({', '.join(self.names)})")
        if name in self.missing:
            raise MetricUnavailableError(f"{METRICS[name].label}: {self.missing[name]}")
        fn: Callable[[np.ndarray, np.ndarray], float] = getattr(self, f"_score_{name}")
        r = np.clip(np.asarray(ref, dtype=np.float32), -1.0, 1.0)
        d = np.clip(np.asarray(deg, dtype=np.float32), -1.0, 1.0)
        return float(fn(r, d))

    def _score_stoi(self, ref: np.ndarray, deg: np.ndarray) -> float:
        from pystoi import stoi

        return float(stoi(ref, deg, METRIC_RATE, extended=False))

    def _score_pesq(self, ref: np.ndarray, deg: np.ndarray) -> float:
        from pesq import PesqError, pesq

        try:
            return float(pesq(METRIC_RATE, ref, deg, "wb"))
        except PesqError:
            return float("nan")

    def _score_distillmos(self, ref: np.ndarray, deg: np.ndarray) -> float:
        import torch

        model = self._models.get("distillmos")
        if model is None:
            model = _import_distillmos().ConvTransformerSQAModel().eval()
            self._models["distillmos"] = model
        with torch.inference_mode():
            return float(model(torch.from_numpy(np.ascontiguousarray(deg))[None]).item())

    def _transcribe(self, x: np.ndarray) -> str:
        key = hashlib.sha1(x.tobytes()).hexdigest()
        cached = self._transcripts.get(key)
        if cached is not None:
            return cached
        parts = {"kind": "transcript", "audio": key, "asr": _pocketsphinx_version()}
        stored = self._store.get(parts) if self._store is not None else None
        if stored is not None and isinstance(stored.get("text"), str):
            self._transcripts[key] = stored["text"]
            return stored["text"]
        decoder = self._models.get("pocketsphinx")
        if decoder is None:
            from pocketsphinx import Decoder

            decoder = Decoder(samprate=METRIC_RATE, loglevel="FATAL")
            self._models["pocketsphinx"] = decoder
        pcm = np.round(x * 32767.0).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        self._transcripts[key] = text
        if self._store is not None:
            self._store.put(parts, {"text": text})
        return text

    def _score_dwer(self, ref: np.ndarray, deg: np.ndarray) -> float:
        return 100.0 * word_error_rate(self._transcribe(ref), self._transcribe(deg))

    def _score_speaker(self, ref: np.ndarray, deg: np.ndarray) -> float:
        encoder = self._models.get("speaker")
        if encoder is None:
            from resemblyzer import VoiceEncoder

            encoder = VoiceEncoder("cpu", verbose=False)
            self._models["speaker"] = encoder
        a = encoder.embed_utterance(ref)
        b = encoder.embed_utterance(deg)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def _score_plcmos(self, ref: np.ndarray, deg: np.ndarray) -> float:
        from speechmos import plcmos

        return float(plcmos.run(deg, METRIC_RATE)["plcmos"])
