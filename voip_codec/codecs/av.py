"""Opus and AMR-NB (FFmpeg's libopus and libopencore-amrnb through PyAV) behind the frame contract.

Registered variants (see :mod:`voip_codec.codecs.registry`):

* ``opus-6k`` (id 40) and ``opus-8k`` (id 41): Opus in hard CBR (``vbr=off``), VoIP
  application, 20 ms frames of 16 kHz speech; every frame is 15 / 20 bytes. FFmpeg's libopus
  decoder returns 48 kHz.
* ``amrnb-4.75k`` (id 48): AMR-NB at 4.75 kbps, 20 ms frames of 8 kHz speech (13-byte frames with
  their mode header); the 16 kHz input goes through a streaming factor-2 FIR decimator.

Every variant takes 16 kHz input like the other codecs. The payload size and the decoder's
output rate are measured by coding one silent frame when the codec is built. ``decode(None)``
repeats the last payload with a fade (:class:`~voip_codec.codecs.plc.ConcealingDecoder`):
FFmpeg exposes neither libopus's own concealment nor its in-band FEC, and AMR-NB's bad-frame
handling is not reachable through PyAV either.

PyAV is imported only when a codec is built, so the registry lists these codecs without it.
:class:`AvContexts` is public so that benchmarks can also run variable-bitrate Opus (which does
not fit the fixed-payload frame contract) through the same code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .base import (
    Codec,
    CodecError,
    CodecInfo,
    FrameDecoder,
    FrameEncoder,
    check_payload,
    check_pcm_frame,
)
from .codec2 import StreamingFIRResampler
from .plc import ConcealingDecoder

__all__ = [
    "AV_CODECS",
    "AV_CODEC_IDS",
    "INPUT_RATE",
    "AvConfig",
    "AvContexts",
    "AvFrameCodec",
    "check_av_codecs",
]

INPUT_RATE = 16000
"""Sample rate (Hz) of the PCM every variant accepts."""


@dataclass(frozen=True)
class AvConfig:
    """One FFmpeg codec configuration run through PyAV."""

    encoder: str
    """FFmpeg encoder name."""
    decoder: str
    """FFmpeg decoder name."""
    sample_rate: int
    """Codec sample rate in Hz, 16000 or 8000 (the 16 kHz input is decimated to it)."""
    bit_rate: int
    """Target bitrate in bits per second."""
    frame_ms: float
    """Frame duration in milliseconds."""
    options: tuple[tuple[str, str], ...] = ()
    """Encoder options (FFmpeg private options)."""
    label: str = ""
    """Human-readable description for listings and reports."""


def _opus_cbr(kbps: int) -> AvConfig:
    return AvConfig("libopus", "libopus", 16000, kbps * 1000, 20.0,
                    (("application", "voip"), ("frame_duration", "20"), ("vbr", "off")),
                    f"Opus {kbps} kbps hard CBR, 20 ms frames (libopus in av)")


AV_CODECS: dict[str, AvConfig] = {
    "opus-6k": _opus_cbr(6),
    "opus-8k": _opus_cbr(8),
    "amrnb-4.75k": AvConfig("libopencore_amrnb", "amrnb", 8000, 4750, 20.0, (),
                            "AMR-NB 4.75 kbps (libopencore_amrnb in av, 8 kHz)"),
}
"""The fixed-payload variants, by registry name."""

AV_CODEC_IDS: dict[str, int] = {"opus-6k": 40, "opus-8k": 41, "amrnb-4.75k": 48}
"""Packet-header codec ids of :data:`AV_CODECS` (40..47 Opus, 48..55 AMR)."""


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError("Opus and AMR-NB need PyAV: pip install av (it comes with the "
                          "'webrtc' and 'codec' extras)") from exc
    return av


def check_av_codecs(config: AvConfig) -> str:
    """Check that PyAV and its FFmpeg have the encoder and decoder of ``config``.

    Returns:
        PyAV's version (which pins its FFmpeg and libopus).

    Raises:
        ImportError: PyAV is missing.
        ValueError: FFmpeg in this PyAV build lacks the encoder or decoder.
    """
    av = _import_av()
    for codec_name, mode in ((config.encoder, "w"), (config.decoder, "r")):
        try:
            av.codec.Codec(codec_name, mode)
        except Exception as exc:  # noqa: BLE001 - PyAV raises several types for "unknown"
            kind = "encoder" if mode == "w" else "decoder"
            raise ValueError(f"this PyAV/FFmpeg build has no {kind} {codec_name!r}") from exc
    return str(av.__version__)


class AvContexts:
    """PyAV encoder + decoder contexts of one :class:`AvConfig`, fed 16 kHz float frames.

    8 kHz configurations get their input through a streaming factor-2 FIR decimator whose history
    carries over between frames, so every frame gives exactly one codec frame.

    Args:
        config: the FFmpeg configuration.

    Raises:
        ImportError: PyAV is missing.
        ValueError: a codec rate other than 16 or 8 kHz.
    """

    def __init__(self, config: AvConfig) -> None:
        av = _import_av()
        if config.sample_rate not in (INPUT_RATE, INPUT_RATE // 2):
            raise ValueError(f"codec rate {config.sample_rate} Hz: only 16 and 8 kHz are "
                             "supported")
        self._av = av
        self.config = config
        self.frame_samples = round(INPUT_RATE * config.frame_ms / 1000)
        """Input samples per frame at 16 kHz."""
        enc: Any = av.CodecContext.create(config.encoder, "w")
        enc.sample_rate = config.sample_rate
        enc.layout = "mono"
        enc.format = "s16"
        enc.bit_rate = config.bit_rate
        enc.options = dict(config.options)
        enc.open()
        dec: Any = av.CodecContext.create(config.decoder, "r")
        dec.sample_rate = config.sample_rate
        dec.layout = "mono"
        dec.open()
        self._enc, self._dec = enc, dec
        self._pts = 0
        self.output_rate = config.sample_rate
        """Rate of the decoded audio in Hz (FFmpeg's libopus decoder returns 48 kHz)."""
        self._decimator = (StreamingFIRResampler(1, 2) if config.sample_rate != INPUT_RATE
                           else None)

    def encode_codec_rate(self, pcm: np.ndarray | None) -> list[bytes]:
        """Encode float32 samples already at the codec rate (None flushes the encoder).

        Returns:
            The packets the encoder produced (possibly none, or several).
        """
        frame = None
        if pcm is not None:
            ints = np.clip(np.round(pcm * 32768.0), -32768, 32767).astype(np.int16)
            frame = self._av.AudioFrame.from_ndarray(ints[None, :], format="s16", layout="mono")
            frame.sample_rate = self.config.sample_rate
            frame.pts = self._pts
            self._pts += ints.shape[0]
        return [bytes(p) for p in self._enc.encode(frame)]

    def encode(self, frame: np.ndarray) -> list[bytes]:
        """Encode one 16 kHz frame of :attr:`frame_samples`; returns the packets produced."""
        x = np.asarray(frame, dtype=np.float32)
        if self._decimator is not None:
            x = self._decimator.process(x)
        return self.encode_codec_rate(x)

    def decode(self, packets: list[bytes]) -> np.ndarray:
        """Decode packets; returns float32 samples ``(n,)`` at :attr:`output_rate`."""
        out = []
        for data in packets:
            for frame in self._dec.decode(self._av.Packet(data)):
                self.output_rate = int(frame.sample_rate)
                arr = frame.to_ndarray().reshape(-1)
                if arr.dtype == np.int16:
                    arr = arr.astype(np.float32) / 32768.0
                out.append(arr.astype(np.float32))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class _AvFrameEncoder(FrameEncoder):
    def __init__(self, codec: AvFrameCodec) -> None:
        self.info = codec.info
        self._config = codec.config
        self._ctx = AvContexts(self._config)

    def encode(self, pcm: np.ndarray) -> bytes:
        packets = self._ctx.encode(check_pcm_frame(pcm, self.info))
        if len(packets) != 1 or len(packets[0]) != self.info.bytes_per_frame:
            raise CodecError(f"{self.info.name}: the encoder gave packets of "
                             f"{[len(p) for p in packets]} bytes for one frame, expected one "
                             f"of {self.info.bytes_per_frame}")
        return packets[0]

    def reset(self) -> None:
        self._ctx = AvContexts(self._config)


class _AvPayloadDecoder:
    def __init__(self, codec: AvFrameCodec) -> None:
        self.info = codec.info
        self._config = codec.config
        self._ctx = AvContexts(self._config)

    def decode_payload(self, payload: bytes) -> np.ndarray:
        pcm = self._ctx.decode([check_payload(payload, self.info)])
        n = self.info.output_frame_samples
        if pcm.shape[0] != n:
            raise CodecError(f"{self.info.name}: the decoder gave {pcm.shape[0]} samples for "
                             f"one frame, expected {n}")
        return pcm

    def reset(self) -> None:
        self._ctx = AvContexts(self._config)


class AvFrameCodec(Codec):
    """A fixed-payload PyAV codec (hard CBR Opus, AMR-NB) as a codec of the frame contract.

    Args:
        name: a key of :data:`AV_CODECS`.

    Raises:
        ImportError: PyAV is missing.
        ValueError: unknown name, FFmpeg lacks the codec, or the encoder does not give one
            packet per frame.
    """

    def __init__(self, name: str) -> None:
        config = AV_CODECS.get(name)
        if config is None:
            raise ValueError(f"unknown PyAV codec {name!r}; choose from {', '.join(AV_CODECS)}")
        self._av_version = check_av_codecs(config)
        self.config = config
        self.label = config.label
        probe = AvContexts(config)
        packets = probe.encode(np.zeros(probe.frame_samples, dtype=np.float32))
        if len(packets) != 1:
            raise ValueError(f"{name}: the encoder does not return one packet per frame")
        out_rate = round(probe.decode(packets).shape[0] * 1000 / config.frame_ms)
        self.info = CodecInfo(name=name, codec_id=AV_CODEC_IDS[name], frame_ms=config.frame_ms,
                              bits_per_frame=8 * len(packets[0]), input_sample_rate=INPUT_RATE,
                              output_sample_rate=out_rate)

    def fingerprint(self) -> str:
        """The FFmpeg configuration and PyAV's version (which pins its FFmpeg/libopus)."""
        return json.dumps({"config": asdict(self.config), "av": self._av_version},
                          sort_keys=True, default=str)

    def new_encoder(self) -> FrameEncoder:
        """A fresh encoder (new PyAV context)."""
        return _AvFrameEncoder(self)

    def new_decoder(self) -> FrameDecoder:
        """A fresh decoder with repeat-and-fade concealment."""
        return ConcealingDecoder(_AvPayloadDecoder(self))
