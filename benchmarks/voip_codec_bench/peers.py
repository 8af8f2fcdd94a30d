"""The codecs a benchmark can run, behind one small interface: our frame codecs and peers.

A :class:`Transcoder` turns 16 kHz speech into decoded speech plus the payload it sent, either a
whole clip at once (:meth:`Transcoder.transcode`, for quality) or frame by frame
(:meth:`Transcoder.open_stream`, for speed). Implementations:

* :class:`FrameCodecTranscoder`: any codec of the frame contract (registry names such as
  ``codec2-700c``, ``pcm16``, ``focalcodec-default``, or a FocalCodec checkpoint directory);
  the fixed-payload Opus and AMR-NB codecs ``opus-6k``, ``opus-8k``, ``amrnb-4.75k`` of
  :mod:`voip_codec.codecs.av` among them, so they also run in the loss simulation);
* :class:`AvTranscoder`: variable-bitrate Opus (libopus) through the same PyAV contexts
  (:class:`~voip_codec.codecs.av.AvContexts`), with the bitrate measured from the packets
  actually produced;
* :class:`IdentityTranscoder`: the original audio (reference row of the quality table).

:func:`resolve_codec` maps a command-line name to a transcoder, or to a :class:`MissingCodec`
that says why it cannot run (checkpoint absent, package missing), so a report can list it.
Codec names are those of the codec registry (:func:`voip_codec.codecs.registry.get_codec`) plus
the benchmark-only entries above; there is no second list of codecs here.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from voip_codec.codecs.av import INPUT_RATE, AvConfig, AvContexts, AvFrameCodec, check_av_codecs
from voip_codec.codecs.base import Codec

from .paths import conformance_model_dir

__all__ = [
    "AV_PEERS",
    "CODEC_ALIASES",
    "DEFAULT_CODECS",
    "AvTranscoder",
    "CodecStream",
    "FrameCodecTranscoder",
    "IdentityTranscoder",
    "MissingCodec",
    "Transcoded",
    "Transcoder",
    "conformance_model_dir",
    "resolve_codec",
    "vocoder_align_method",
]


AV_PEERS: dict[str, AvConfig] = {
    f"opus-{kbps}k-{ms}ms": AvConfig(
        "libopus", "libopus", 16000, kbps * 1000, float(ms),
        (("application", "voip"), ("frame_duration", str(ms)), ("vbr", "on")),
        f"Opus {kbps} kbps, {ms} ms frames (libopus in av)")
    for kbps in (6, 8) for ms in (20, 80)
}
"""Variable-bitrate Opus peers, by name: their packets vary in size, so they are benchmark
transcoders (:class:`AvTranscoder`), not frame-contract codecs. The fixed-payload Opus and AMR-NB
variants are registered codecs (:mod:`voip_codec.codecs.av`: ``opus-6k``, ``opus-8k``,
``amrnb-4.75k``)."""

CODEC_ALIASES: dict[str, str] = {"opus-6k-20ms-cbr": "opus-6k", "opus-8k-20ms-cbr": "opus-8k"}
"""Earlier benchmark names of registered codecs (still accepted on the command line)."""

DEFAULT_CODECS: tuple[str, ...] = (
    "original", "focalcodec-default", "focalcodec-65k", "focalcodec-4k", "focalcodec-2k",
    "focalcodec-conformance", "codec2-700c", "codec2-1200", "codec2-3200", "opus-6k-20ms",
    "opus-6k-80ms", "opus-8k-20ms", "opus-8k-80ms", "opus-8k", "amrnb-4.75k",
)
"""Codecs of ``bench quality`` / ``bench report`` when none are named."""


@dataclass
class Transcoded:
    """One clip through a codec."""

    audio: np.ndarray
    """Decoded float32 mono audio ``(m,)`` at ``sample_rate`` (not delay-compensated)."""
    sample_rate: int
    """Rate of ``audio`` in Hz."""
    payload_bits: int
    """Codec payload sent for the clip (packet headers excluded), in bits."""
    seconds: float
    """Coded duration in seconds (whole frames, the last one zero-padded)."""


class CodecStream(abc.ABC):
    """One encoder + decoder pair fed frame by frame (for speed measurements)."""

    frame_samples: int
    """Input samples per frame at 16 kHz."""

    @abc.abstractmethod
    def encode(self, frame: np.ndarray) -> list[bytes]:
        """Encode one frame ``(frame_samples,)`` at 16 kHz; returns the packets it produced."""

    @abc.abstractmethod
    def decode(self, packets: list[bytes]) -> np.ndarray:
        """Decode the packets of one frame; returns the decoded samples (codec output rate)."""


class Transcoder(abc.ABC):
    """A codec the benchmarks can run."""

    name: str
    """Name on the command line and in reports."""
    label: str
    """Longer description for reports."""
    frame_ms: float
    """Frame duration in milliseconds."""
    align_method: str = "xcorr"
    """How :func:`~voip_codec_bench.metrics.estimate_delay` finds its delay."""
    codec: Codec | None = None
    """The frame-contract codec when there is one (only those run in the loss benchmark)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the codec's output could change (cache key part)."""

    @abc.abstractmethod
    def transcode(self, pcm: np.ndarray) -> Transcoded:
        """Encode and decode a whole clip ``(n,)`` of 16 kHz float32 audio."""

    @abc.abstractmethod
    def open_stream(self) -> CodecStream:
        """A fresh frame-by-frame encoder/decoder pair."""


@dataclass(frozen=True)
class MissingCodec:
    """A requested codec that cannot run here."""

    name: str
    """Requested name."""
    reason: str
    """Why (shown in reports)."""


def vocoder_align_method(vocoder: bool) -> str:
    """How a codec's delay is found: ``"stoi"`` for codecs that end in a vocoder, else
    ``"xcorr"``.

    Codec2 and FocalCodec synthesise their output (a vocoder), so its phase does not follow the
    input and waveform cross-correlation is unreliable: on the bundled FocalCodec model it found
    anything from 2.6 to 50 ms on six dev clips, while intelligibility peaks at the true delay.

    Args:
        vocoder: the codec's decoder is a vocoder (Codec2, a FocalCodec model).
    """
    return "stoi" if vocoder else "xcorr"


class IdentityTranscoder(Transcoder):
    """The original audio, untouched (reference row: metric values of the source itself)."""

    name = "original"
    label = "original audio (reference)"
    frame_ms = 20.0

    def fingerprint(self) -> str:
        """Constant: the identity never changes."""
        return "identity-v1"

    def transcode(self, pcm: np.ndarray) -> Transcoded:
        """Return the input unchanged (0 payload bits)."""
        x = np.asarray(pcm, dtype=np.float32)
        return Transcoded(x.copy(), INPUT_RATE, 0, x.shape[0] / INPUT_RATE)

    def open_stream(self) -> CodecStream:
        """Not a codec: there is nothing to time."""
        raise ValueError("'original' is not a codec and has no speed to measure")


class _FrameCodecStream(CodecStream):
    def __init__(self, codec: Codec) -> None:
        self.frame_samples = codec.info.input_frame_samples
        self._encoder = codec.new_encoder()
        self._decoder = codec.new_decoder()

    def encode(self, frame: np.ndarray) -> list[bytes]:
        return [self._encoder.encode(frame)]

    def decode(self, packets: list[bytes]) -> np.ndarray:
        return np.concatenate([self._decoder.decode(p) for p in packets])


class FrameCodecTranscoder(Transcoder):
    """A codec of the frame contract, run frame by frame (last frame zero-padded).

    Args:
        codec: the codec.
        label: description for reports (default: the PyAV codec's description, else the codec
            name).
    """

    def __init__(self, codec: Codec, label: str | None = None) -> None:
        self.codec = codec
        self._codec: Codec = codec
        self.name = codec.info.name
        default = codec.label if isinstance(codec, AvFrameCodec) else codec.info.name
        self.label = label or default
        self.frame_ms = codec.info.frame_ms
        self.align_method = vocoder_align_method(
            self.name.startswith("codec2") or getattr(codec, "model", None) is not None)

    def fingerprint(self) -> str:
        """Codec contract fields, model weights digest (FocalCodec) and library versions."""
        info = self._codec.info
        parts = [type(self.codec).__name__, info.name, str(info.codec_id), str(info.frame_ms),
                 str(info.bits_per_frame), str(info.input_sample_rate),
                 str(info.output_sample_rate)]
        model = getattr(self.codec, "model", None)
        if model is not None and hasattr(model, "fingerprint"):
            parts.append(model.fingerprint().hex())
        if self.name.startswith("codec2"):
            from importlib.metadata import version

            parts.append(f"pycodec2-{version('pycodec2')}")
        if isinstance(self.codec, AvFrameCodec):
            parts.append(self.codec.fingerprint())
        return "|".join(parts)

    def transcode(self, pcm: np.ndarray) -> Transcoded:
        """See :meth:`Transcoder.transcode` (payload bits = frames x ``bits_per_frame``)."""
        info = self._codec.info
        x = np.asarray(pcm, dtype=np.float32)
        n_in = info.input_frame_samples
        frames = max(1, -(-x.shape[0] // n_in))
        padded = np.zeros(frames * n_in, dtype=np.float32)
        padded[:x.shape[0]] = x
        encoder, decoder = self._codec.new_encoder(), self._codec.new_decoder()
        out = [decoder.decode(encoder.encode(padded[i * n_in:(i + 1) * n_in]))
               for i in range(frames)]
        return Transcoded(np.concatenate(out).astype(np.float32), info.output_sample_rate,
                          frames * info.bits_per_frame, frames * info.frame_ms / 1000.0)

    def open_stream(self) -> CodecStream:
        """A fresh encoder/decoder pair of the codec."""
        return _FrameCodecStream(self._codec)


class _AvStream(CodecStream):
    """Frame-by-frame :class:`CodecStream` over PyAV contexts (speed runs)."""

    def __init__(self, peer: AvConfig) -> None:
        self._ctx = AvContexts(peer)
        self.frame_samples = self._ctx.frame_samples

    def encode(self, frame: np.ndarray) -> list[bytes]:
        return self._ctx.encode(frame)

    def decode(self, packets: list[bytes]) -> np.ndarray:
        return self._ctx.decode(packets)


class AvTranscoder(Transcoder):
    """A variable-size peer (VBR Opus) through PyAV's codec contexts, whole clips at a time.

    Args:
        name: a key of :data:`AV_PEERS`.

    Raises:
        ImportError: PyAV is missing.
        ValueError: unknown name, or FFmpeg in this PyAV build lacks the encoder/decoder.
    """

    def __init__(self, name: str) -> None:
        if name not in AV_PEERS:
            raise ValueError(f"unknown peer codec {name!r}; choose from {', '.join(AV_PEERS)}")
        self.peer = AV_PEERS[name]
        self._av_version = check_av_codecs(self.peer)
        self.name = name
        self.label = self.peer.label
        self.frame_ms = self.peer.frame_ms

    def fingerprint(self) -> str:
        """Peer configuration and the PyAV version (which pins its FFmpeg/libopus)."""
        return json.dumps({"peer": asdict(self.peer), "av": self._av_version}, sort_keys=True,
                          default=str)

    def transcode(self, pcm: np.ndarray) -> Transcoded:
        """See :meth:`Transcoder.transcode`; payload bits are the packets' measured bytes x 8."""
        from voip_codec.audio import resample

        stream = AvContexts(self.peer)
        x = resample(np.asarray(pcm, dtype=np.float32), INPUT_RATE, self.peer.sample_rate)
        n = round(self.peer.sample_rate * self.frame_ms / 1000)
        frames = max(1, -(-x.shape[0] // n))
        padded = np.zeros(frames * n, dtype=np.float32)
        padded[:x.shape[0]] = x
        packets: list[bytes] = []
        for i in range(frames):
            packets.extend(stream.encode_codec_rate(padded[i * n:(i + 1) * n]))
        packets.extend(stream.encode_codec_rate(None))
        audio = stream.decode(packets)
        return Transcoded(audio, stream.output_rate, 8 * sum(len(p) for p in packets),
                          frames * self.frame_ms / 1000.0)

    def open_stream(self) -> CodecStream:
        """Fresh PyAV encoder/decoder contexts."""
        return _AvStream(self.peer)


_SAFE = re.compile(r"[^a-z0-9._-]+")


def _checkpoint_transcoder(path: Path, name: str, label: str) -> Transcoder:
    from voip_codec.codecs.focalcodec import load_focalcodec_codec

    return FrameCodecTranscoder(load_focalcodec_codec(str(path), name, 64), label)


def resolve_codec(spec: str) -> Transcoder | MissingCodec:
    """Turn a codec name or checkpoint path into a runnable transcoder.

    Args:
        spec: ``"original"``; a registered codec name (``codec2-700c``, ``pcm16``, ``opus-6k``,
            ``focalcodec-default``, ...) or one of :data:`CODEC_ALIASES`; a key of
            :data:`AV_PEERS`; ``focalcodec-conformance`` (the random-weight conformance model,
            see :func:`~voip_codec_bench.paths.conformance_model_dir`); or a FocalCodec
            checkpoint directory / ``config.json`` path, optionally as ``NAME=PATH``.

    Returns:
        A :class:`Transcoder`, or a :class:`MissingCodec` when the codec exists but cannot run
        here (checkpoint or package absent).

    Raises:
        ValueError: ``spec`` names no known codec and is not an existing path.
    """
    from voip_codec.codecs.registry import available_codecs, get_codec

    loaders: dict[str, Callable[[], Transcoder]] = {"original": IdentityTranscoder}
    for peer in AV_PEERS:
        loaders[peer] = lambda p=peer: AvTranscoder(p)  # type: ignore[misc]
    for reg in available_codecs():
        loaders[reg] = lambda r=reg: FrameCodecTranscoder(get_codec(r))  # type: ignore[misc]
    for alias, reg in CODEC_ALIASES.items():
        loaders[alias] = loaders[reg]
    loaders["focalcodec-conformance"] = lambda: _checkpoint_transcoder(
        conformance_model_dir(), "focalcodec-conformance",
        "focalcodec-conformance (random weights)")
    name, path_text = spec, None
    if spec not in loaders:
        name, _, path_text = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path_text).expanduser()
        if not path.exists():
            raise ValueError(f"unknown codec {spec!r}: not a codec name ({', '.join(loaders)}) "
                             "and not an existing checkpoint path")
        if not name:
            base = path.parent.name if path.is_file() else path.name
            name = "fc-" + (_SAFE.sub("-", base.lower()).strip("-") or "model")
        loaders[name] = lambda p=path, n=name: _checkpoint_transcoder(  # type: ignore[misc]
            p, n, f"{n} ({p})")
    try:
        return loaders[name]()
    except FileNotFoundError as exc:  # CheckpointError (not imported: it would load torch)
        return MissingCodec(name, f"checkpoint missing: {str(exc).splitlines()[0]}")
    except ImportError as exc:
        return MissingCodec(name, f"package missing: {exc}")
    except ValueError as exc:
        return MissingCodec(name, str(exc).splitlines()[0])


def fingerprint_digest(transcoder: Transcoder) -> str:
    """Short hex digest of :meth:`Transcoder.fingerprint` (for cache keys and reports)."""
    return hashlib.sha256(transcoder.fingerprint().encode()).hexdigest()[:16]
