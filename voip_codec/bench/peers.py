"""The codecs a benchmark can run, behind one small interface: our frame codecs and peers.

A :class:`Transcoder` turns 16 kHz speech into decoded speech plus the payload it sent, either a
whole clip at once (:meth:`Transcoder.transcode`, for quality) or frame by frame
(:meth:`Transcoder.open_stream`, for speed). Implementations:

* :class:`FrameCodecTranscoder`: any codec of the frame contract (registry names such as
  ``codec2-700c``, ``pcm16``, ``focalcodec-default``, or a FocalCodec checkpoint directory);
* :class:`AvTranscoder`: Opus (libopus, VBR) through PyAV's codec contexts, with the bitrate
  measured from the packets actually produced;
* :class:`AvFrameCodec`: the fixed-size-payload peers (Opus in hard CBR, AMR-NB) as codecs of the
  frame contract, so they also run through the packet / jitter / concealment simulation;
* :class:`IdentityTranscoder`: the original audio (reference row of the quality table).

:func:`resolve_codec` maps a command-line name to a transcoder, or to a :class:`MissingCodec`
that says why it cannot run (checkpoint absent, package missing), so a report can list it.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs.base import (
    Codec,
    CodecError,
    CodecInfo,
    FrameDecoder,
    FrameEncoder,
    check_payload,
    check_pcm_frame,
)

__all__ = [
    "AV_PEERS",
    "DEFAULT_CODECS",
    "AvFrameCodec",
    "AvTranscoder",
    "CodecStream",
    "FrameCodecTranscoder",
    "IdentityTranscoder",
    "MissingCodec",
    "Transcoded",
    "Transcoder",
    "conformance_model_dir",
    "resolve_codec",
]

INPUT_RATE = 16000
"""Sample rate (Hz) of the speech given to every transcoder."""


@dataclass(frozen=True)
class AvPeer:
    """An FFmpeg codec configuration run through PyAV."""

    encoder: str
    """FFmpeg encoder name."""
    decoder: str
    """FFmpeg decoder name."""
    sample_rate: int
    """Codec sample rate in Hz (input is resampled to it)."""
    bit_rate: int
    """Target bitrate in bits per second."""
    frame_ms: float
    """Frame duration in milliseconds."""
    options: tuple[tuple[str, str], ...] = ()
    """Encoder options (FFmpeg private options)."""
    label: str = ""
    """Human-readable name for reports."""
    fixed_payload: bool = False
    """Every frame encodes to the same number of bytes (hard CBR Opus, AMR-NB): the peer is
    run as a frame-contract codec (:class:`AvFrameCodec`) and so also in the loss benchmark."""


AV_PEERS: dict[str, AvPeer] = {
    f"opus-{kbps}k-{ms}ms": AvPeer(
        "libopus", "libopus", 16000, kbps * 1000, float(ms),
        (("application", "voip"), ("frame_duration", str(ms)), ("vbr", "on")),
        f"Opus {kbps} kbps, {ms} ms frames (libopus in av)")
    for kbps in (6, 8) for ms in (20, 80)
}
AV_PEERS.update({
    f"opus-{kbps}k-20ms-cbr": AvPeer(
        "libopus", "libopus", 16000, kbps * 1000, 20.0,
        (("application", "voip"), ("frame_duration", "20"), ("vbr", "off")),
        f"Opus {kbps} kbps hard CBR, 20 ms frames (libopus in av)", fixed_payload=True)
    for kbps in (6, 8)
})
AV_PEERS["amrnb-4.75k"] = AvPeer("libopencore_amrnb", "amrnb", 8000, 4750, 20.0, (),
                                 "AMR-NB 4.75 kbps (libopencore_amrnb in av, 8 kHz)",
                                 fixed_payload=True)
"""Peer codecs available through PyAV, by name."""

AV_CODEC_IDS: dict[str, int] = {name: 200 + i for i, name in enumerate(AV_PEERS)}
"""Packet-header codec ids of the peers run as frame codecs (experimental range 64..255)."""

DEFAULT_CODECS: tuple[str, ...] = (
    "original", "focalcodec-default", "focalcodec-65k", "focalcodec-4k", "focalcodec-2k",
    "focalcodec-conformance", "codec2-700c", "codec2-1200", "codec2-3200", "opus-6k-20ms",
    "opus-6k-80ms", "opus-8k-20ms", "opus-8k-80ms", "opus-8k-20ms-cbr", "amrnb-4.75k",
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
    """How :func:`~voip_codec.bench.metrics.estimate_delay` finds its delay."""
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
        label: description for reports (default: the codec name).
    """

    def __init__(self, codec: Codec, label: str | None = None) -> None:
        self.codec = codec
        self._codec: Codec = codec
        self.name = codec.info.name
        self.label = label or codec.info.name
        self.frame_ms = codec.info.frame_ms
        # Codec2 is a vocoder: its output phase does not follow the input, so waveform
        # cross-correlation is unreliable; intelligibility peaks at the true delay.
        self.align_method = "stoi" if self.name.startswith("codec2") else "xcorr"

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


class _AvContexts:
    """PyAV encoder + decoder contexts of one :class:`AvPeer`, fed 16 kHz float frames.

    8 kHz peers (AMR-NB) get their input through a streaming factor-2 FIR decimator whose
    history carries over between frames, so every frame gives exactly one codec frame.
    """

    def __init__(self, peer: AvPeer) -> None:
        import av

        if peer.sample_rate not in (INPUT_RATE, INPUT_RATE // 2):
            raise ValueError(f"peer rate {peer.sample_rate} Hz: only 16 and 8 kHz are supported")
        self._av = av
        self.peer = peer
        self.frame_samples = round(INPUT_RATE * peer.frame_ms / 1000)
        enc: Any = av.CodecContext.create(peer.encoder, "w")
        enc.sample_rate = peer.sample_rate
        enc.layout = "mono"
        enc.format = "s16"
        enc.bit_rate = peer.bit_rate
        enc.options = dict(peer.options)
        enc.open()
        dec: Any = av.CodecContext.create(peer.decoder, "r")
        dec.sample_rate = peer.sample_rate
        dec.layout = "mono"
        dec.open()
        self._enc, self._dec = enc, dec
        self._pts = 0
        self.output_rate = peer.sample_rate
        """Rate of the decoded audio (FFmpeg's libopus decoder outputs 48 kHz)."""
        self._decimator = None
        if peer.sample_rate != INPUT_RATE:
            from ..codecs.codec2 import StreamingFIRResampler

            self._decimator = StreamingFIRResampler(1, 2)

    def encode_codec_rate(self, pcm: np.ndarray | None) -> list[bytes]:
        """Encode samples already at the codec rate (None flushes the encoder)."""
        frame = None
        if pcm is not None:
            ints = np.clip(np.round(pcm * 32768.0), -32768, 32767).astype(np.int16)
            frame = self._av.AudioFrame.from_ndarray(ints[None, :], format="s16", layout="mono")
            frame.sample_rate = self.peer.sample_rate
            frame.pts = self._pts
            self._pts += ints.shape[0]
        return [bytes(p) for p in self._enc.encode(frame)]

    def encode(self, frame: np.ndarray) -> list[bytes]:
        """Encode one 16 kHz frame of ``frame_samples``; returns the packets produced."""
        x = np.asarray(frame, dtype=np.float32)
        if self._decimator is not None:
            x = self._decimator.process(x)
        return self.encode_codec_rate(x)

    def decode(self, packets: list[bytes]) -> np.ndarray:
        """Decode packets; returns float32 samples at :attr:`output_rate`."""
        out = []
        for data in packets:
            for frame in self._dec.decode(self._av.Packet(data)):
                self.output_rate = int(frame.sample_rate)
                arr = frame.to_ndarray().reshape(-1)
                if arr.dtype == np.int16:
                    arr = arr.astype(np.float32) / 32768.0
                out.append(arr.astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class _AvStream(CodecStream):
    """Frame-by-frame :class:`CodecStream` over :class:`_AvContexts` (speed runs)."""

    def __init__(self, peer: AvPeer) -> None:
        self._ctx = _AvContexts(peer)
        self.frame_samples = self._ctx.frame_samples

    def encode(self, frame: np.ndarray) -> list[bytes]:
        return self._ctx.encode(frame)

    def decode(self, packets: list[bytes]) -> np.ndarray:
        return self._ctx.decode(packets)


def _check_av_codecs(peer: AvPeer) -> str:
    """Check that PyAV and its FFmpeg have the peer's encoder and decoder; returns av's version.

    Raises:
        ImportError: PyAV is missing.
        ValueError: FFmpeg in this PyAV build lacks the encoder or decoder.
    """
    try:
        import av
    except ImportError as exc:
        raise ImportError("peer codecs need PyAV: pip install av") from exc
    for codec_name, mode in ((peer.encoder, "w"), (peer.decoder, "r")):
        try:
            av.codec.Codec(codec_name, mode)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - PyAV raises several types for "unknown"
            raise ValueError(f"this PyAV/FFmpeg build has no "
                             f"{'encoder' if mode == 'w' else 'decoder'} "
                             f"{codec_name!r}") from exc
    return str(av.__version__)


class _AvFrameEncoder(FrameEncoder):
    def __init__(self, codec: AvFrameCodec) -> None:
        self.info = codec.info
        self._peer = codec.peer
        self._ctx = _AvContexts(self._peer)

    def encode(self, pcm: np.ndarray) -> bytes:
        packets = self._ctx.encode(check_pcm_frame(pcm, self.info))
        if len(packets) != 1 or len(packets[0]) != self.info.bytes_per_frame:
            raise CodecError(f"{self.info.name}: the encoder gave packets of "
                             f"{[len(p) for p in packets]} bytes for one frame, expected one "
                             f"of {self.info.bytes_per_frame}")
        return packets[0]

    def reset(self) -> None:
        self._ctx = _AvContexts(self._peer)


class _AvPayloadDecoder:
    def __init__(self, codec: AvFrameCodec) -> None:
        self.info = codec.info
        self._peer = codec.peer
        self._ctx = _AvContexts(self._peer)

    def decode_payload(self, payload: bytes) -> np.ndarray:
        pcm = self._ctx.decode([check_payload(payload, self.info)])
        n = self.info.output_frame_samples
        if pcm.shape[0] != n:
            raise CodecError(f"{self.info.name}: the decoder gave {pcm.shape[0]} samples for "
                             f"one frame, expected {n}")
        return pcm

    def reset(self) -> None:
        self._ctx = _AvContexts(self._peer)


class AvFrameCodec(Codec):
    """A fixed-payload PyAV peer (hard CBR Opus, AMR-NB) as a codec of the frame contract.

    The payload size and the decoder's output rate are measured by coding one silent frame.
    ``decode(None)`` repeats the last payload with a fade (the generic
    :class:`~voip_codec.codecs.plc.ConcealingDecoder`): FFmpeg exposes neither libopus's PLC
    nor its in-band FEC, and AMR-NB's bad-frame handling is not reachable through PyAV either.

    Args:
        name: a key of :data:`AV_PEERS` whose peer has ``fixed_payload``.

    Raises:
        ImportError: PyAV is missing.
        ValueError: unknown name, a variable-size peer, or FFmpeg lacks the codec.
    """

    def __init__(self, name: str) -> None:
        peer = AV_PEERS.get(name)
        if peer is None or not peer.fixed_payload:
            raise ValueError(f"{name!r} is not a fixed-payload peer codec")
        self._av_version = _check_av_codecs(peer)
        self.peer = peer
        probe = _AvContexts(peer)
        packets = probe.encode(np.zeros(probe.frame_samples, dtype=np.float32))
        if len(packets) != 1:
            raise ValueError(f"{name}: the encoder does not return one packet per frame")
        out_rate = round(probe.decode(packets).shape[0] * 1000 / peer.frame_ms)
        self.info = CodecInfo(name=name, codec_id=AV_CODEC_IDS[name], frame_ms=peer.frame_ms,
                              bits_per_frame=8 * len(packets[0]), input_sample_rate=INPUT_RATE,
                              output_sample_rate=out_rate)

    def fingerprint(self) -> str:
        """Peer configuration and the PyAV version (which pins its FFmpeg/libopus)."""
        return json.dumps({"peer": self.peer.__dict__, "av": self._av_version}, sort_keys=True,
                          default=str)

    def new_encoder(self) -> FrameEncoder:
        """A fresh encoder (new PyAV context)."""
        return _AvFrameEncoder(self)

    def new_decoder(self) -> FrameDecoder:
        """A fresh decoder with repeat-and-fade concealment."""
        from ..transport.plc import ConcealingDecoder

        return ConcealingDecoder(_AvPayloadDecoder(self))


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
        self._av_version = _check_av_codecs(self.peer)
        self.name = name
        self.label = self.peer.label
        self.frame_ms = self.peer.frame_ms

    def fingerprint(self) -> str:
        """Peer configuration and the PyAV version (which pins its FFmpeg/libopus)."""
        return json.dumps({"peer": self.peer.__dict__, "av": self._av_version}, sort_keys=True,
                          default=str)

    def transcode(self, pcm: np.ndarray) -> Transcoded:
        """See :meth:`Transcoder.transcode`; payload bits are the packets' measured bytes x 8."""
        from ..audio import resample

        stream = _AvContexts(self.peer)
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


def conformance_model_dir() -> Path:
    """``../shared/conformance/tiny_causal`` beside the project root (random weights)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "tiny_causal"


_SAFE = re.compile(r"[^a-z0-9._-]+")


def _checkpoint_transcoder(path: Path, name: str, label: str) -> Transcoder:
    from ..codecs.focalcodec import load_focalcodec_codec

    return FrameCodecTranscoder(load_focalcodec_codec(str(path), name, 64), label)


def resolve_codec(spec: str) -> Transcoder | MissingCodec:
    """Turn a codec name or checkpoint path into a runnable transcoder.

    Args:
        spec: ``"original"``; a registered codec name (``codec2-700c``, ``pcm16``,
            ``focalcodec-default``, ...); a key of :data:`AV_PEERS`; ``focalcodec-conformance``
            (the random-weight conformance model in ``../shared``); or a FocalCodec checkpoint
            directory / ``config.json`` path, optionally as ``NAME=PATH``.

    Returns:
        A :class:`Transcoder`, or a :class:`MissingCodec` when the codec exists but cannot run
        here (checkpoint or package absent).

    Raises:
        ValueError: ``spec`` names no known codec and is not an existing path.
    """
    from ..codecs.registry import available_codecs, get_codec

    loaders: dict[str, Callable[[], Transcoder]] = {"original": IdentityTranscoder}
    for peer, cfg in AV_PEERS.items():
        if cfg.fixed_payload:
            loaders[peer] = lambda p=peer, c=cfg: FrameCodecTranscoder(  # type: ignore[misc]
                AvFrameCodec(p), c.label)
        else:
            loaders[peer] = lambda p=peer: AvTranscoder(p)  # type: ignore[misc]
    for reg in available_codecs():
        loaders[reg] = lambda r=reg: FrameCodecTranscoder(get_codec(r))  # type: ignore[misc]
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
