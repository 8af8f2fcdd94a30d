"""``--backend onnx``: the FocalCodec frame codec and the file commands on onnxruntime.

An exported folder (``voip-codec export onnx``) is used as is, without torch. Any other model
source is loaded with torch once, exported into the cache folder
``$XDG_CACHE_HOME/voip-codec/onnx/<fingerprint>`` (``~/.cache`` by default) and run from there;
later runs reuse the export. The graphs compute what the torch steps compute (see
:mod:`voip_codec.export.check`), and at one thread they are faster on CPU.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..cache import cache_home
from ..codecs.base import (
    Codec,
    CodecInfo,
    FrameDecoder,
    FrameEncoder,
    check_payload,
    check_pcm_frame,
)
from ..codecs.plc import ConcealingDecoder
from ..wire.bitpack import pack_tokens, unpack_tokens
from .manifest import GRAPH_REVISION, MANIFEST_FILE, MANIFEST_FORMAT
from .quantize import QUANTIZE_REVISION
from .runtime import OnnxCodecModel, OnnxStreamState

if TYPE_CHECKING:
    from ..codec.model import FocalCodec

__all__ = [
    "BACKENDS",
    "OnnxFocalCodec",
    "cache_folder",
    "decode_tokens",
    "encode_pcm",
    "load_onnx_model",
    "onnx_codec",
    "with_backend",
]

BACKENDS = ("torch", "onnx")
"""Values of ``--backend``."""


def cache_folder() -> Path:
    """Where exports made on the fly are kept."""
    return cache_home() / "onnx"


ONNX_PRECISIONS = ("fp32", "int8")
"""Precisions of the exported graphs: fp32, or int8 weights
(:func:`voip_codec.export.quantize.quantize_export`: the layers torch's int8 mode quantises,
with the same weights, activations quantised per call)."""


def _check_precision(precision: str) -> None:
    """Raises ValueError for a precision the exported graphs do not come in."""
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"the onnx backend runs {' or '.join(ONNX_PRECISIONS)}, not "
                         f"{precision}")


def export_cached(model: FocalCodec, precision: str = "fp32") -> Path:
    """The folder of ``model``'s export in :func:`cache_folder`, exporting it if missing.

    The export is written to a temporary folder beside it and renamed into place, so two
    processes exporting at once never see a half-written folder. An int8 export is made from
    the (cached) fp32 one.

    Args:
        model: an fp32 model.
        precision: one of :data:`ONNX_PRECISIONS`.
    """
    from .onnx import export_onnx

    _check_precision(precision)
    folder = (cache_folder()
              / f"{model.fingerprint().hex()}-f{MANIFEST_FORMAT}-g{GRAPH_REVISION}"
              f"{'' if precision == 'fp32' else f'-{precision}q{QUANTIZE_REVISION}'}"
              f"{'-cal' if precision == 'int8' and model.int8_calibration else ''}")
    if (folder / MANIFEST_FILE).is_file():
        return folder
    fp32 = export_cached(model) if precision != "fp32" else None
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        if fp32 is None:
            export_onnx(model, scratch)
        else:
            from .quantize import quantize_export

            quantize_export(model, fp32, scratch)
        try:
            scratch.rename(folder)
        except OSError:  # another process got there first
            if not (folder / MANIFEST_FILE).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def load_onnx_model(source: str, threads: int = 1, precision: str | None = None
                    ) -> OnnxCodecModel:
    """An exported model for ``--model source``: an export folder directly, else via the cache.

    Args:
        source: an exported folder, or any ``--model`` value torch loads.
        threads: onnxruntime threads per graph.
        precision: ``"fp32"`` or ``"int8"`` (:data:`ONNX_PRECISIONS`) for a model exported on
            the fly (default fp32). An export folder runs at the precision it was written
            at; asking it for another one is an error.

    Raises:
        ValueError: an unsupported precision, or an export folder of another precision.
    """
    if precision is not None:
        _check_precision(precision)
    if (Path(source) / MANIFEST_FILE).is_file():
        model = OnnxCodecModel(source, threads=threads)
        if precision is not None and model.precision != precision:
            raise ValueError(f"{source} holds {model.precision} graphs, not {precision}; "
                             f"export it with --precision {precision}")
        return model
    from ..codec.loading import from_pretrained

    return OnnxCodecModel(export_cached(from_pretrained(source, precision="fp32"),
                                        precision or "fp32"), threads=threads)


def encode_pcm(model: OnnxCodecModel, pcm: np.ndarray) -> np.ndarray:
    """16 kHz samples -> tokens, the last partial chunk zero-padded (as the torch encoder's
    ``flush``).

    Returns:
        ``(4 * ceil(len(pcm) / 1280),)`` int64 tokens.
    """
    chunk = model.chunk_size
    padded = np.zeros(-(-len(pcm) // chunk) * chunk, dtype=np.float32)
    padded[:len(pcm)] = pcm
    state = model.new_encoder_state()
    out = [np.zeros(0, dtype=np.int64)]
    for i in range(0, len(padded), chunk):
        toks, state = model.encode_step(padded[i:i + chunk], state)
        out.append(toks)
    return np.concatenate(out)


def decode_tokens(model: OnnxCodecModel, tokens: np.ndarray) -> np.ndarray:
    """Tokens -> 24 kHz samples, ``480`` per token.

    The graph decodes whole 4-token blocks; a partial last block (never made by
    :func:`encode_pcm` or ``voip-codec encode``) is completed by repeating its last token,
    and the output trimmed, where torch's ``flush`` decodes the partial block directly.
    """
    n = len(tokens)
    block = model.chunk_frames
    if n % block:
        tokens = np.concatenate([tokens, np.full(block - n % block, tokens[-1])])
    state = model.new_decoder_state()
    out = [np.zeros(0, dtype=np.float32)]
    for i in range(0, len(tokens), block):
        wave, state = model.decode_step(tokens[i:i + block], state)
        out.append(wave)
    return np.concatenate(out)[:n * model.hop_length]


class OnnxFrameEncoder(FrameEncoder):
    """80 ms of 16 kHz PCM -> packed tokens, on the exported encoder step."""

    def __init__(self, model: OnnxCodecModel, info: CodecInfo) -> None:
        self.model = model
        self.info = info
        self.state = model.new_encoder_state()

    def encode(self, pcm: np.ndarray) -> bytes:
        """See :meth:`FrameEncoder.encode`."""
        toks, self.state = self.model.encode_step(check_pcm_frame(pcm, self.info), self.state)
        return pack_tokens(toks, self.model.bits_per_token)

    def reset(self) -> None:
        """Start a new stream."""
        self.state = self.model.new_encoder_state()


class OnnxPayloadDecoder:
    """Packed tokens of one frame -> 80 ms of 24 kHz PCM (no concealment; the transport's
    :class:`~voip_codec.codecs.plc.ConcealingDecoder` adds it, as for the torch decoder)."""

    def __init__(self, model: OnnxCodecModel, info: CodecInfo) -> None:
        self.model = model
        self.info = info
        self.state: OnnxStreamState = model.new_decoder_state()

    def decode_payload(self, payload: bytes) -> np.ndarray:
        """Decode one frame's payload (exactly ``info.bytes_per_frame`` bytes)."""
        data = check_payload(payload, self.info)
        toks = unpack_tokens(data, self.model.bits_per_token, self.model.chunk_frames)
        wave, self.state = self.model.decode_step(toks, self.state)
        return wave

    def reset(self) -> None:
        """Start a new stream."""
        self.state = self.model.new_decoder_state()


class OnnxFocalCodec(Codec):
    """A FocalCodec frame codec (same name, id and payloads) computed by onnxruntime."""

    def __init__(self, model: OnnxCodecModel, info: CodecInfo) -> None:
        self.model = model
        self.info = info

    def new_encoder(self) -> OnnxFrameEncoder:
        """A fresh encoder stream."""
        return OnnxFrameEncoder(self.model, self.info)

    def new_decoder(self) -> FrameDecoder:
        """A fresh decoder stream with the same concealment as the torch codec."""
        return ConcealingDecoder(OnnxPayloadDecoder(self.model, self.info))


def onnx_codec(codec: Codec, threads: int = 1, precision: str = "fp32") -> OnnxFocalCodec:
    """The same FocalCodec codec on onnxruntime, with fp32 or int8 graphs (:func:`export_cached`).

    Raises:
        ValueError: ``codec`` is not a FocalCodec model (Opus, Codec2, ... have no ONNX path),
            or a precision onnxruntime does not run.
    """
    from ..codecs.focalcodec import FocalCodecCodec

    if not isinstance(codec, FocalCodecCodec):
        raise ValueError(f"--backend onnx runs the FocalCodec codecs only, not {codec.info.name}")
    _check_precision(precision)
    if codec.model.precision != "fp32":
        raise ValueError(f"--backend onnx exports fp32 models; {codec.info.name} is stored at "
                         f"{codec.model.precision}")
    folder = export_cached(codec.model, precision)
    return OnnxFocalCodec(OnnxCodecModel(folder, threads=threads), codec.info)


def with_backend(codec: Codec, backend: str, precision: str | None = None) -> Codec:
    """``codec`` for ``backend``: for ``"torch"`` as is or at ``precision``
    (:func:`~voip_codec.codecs.focalcodec.at_precision`), for ``"onnx"`` :func:`onnx_codec` of
    it (fp32 unless ``precision`` says int8).

    Raises:
        ValueError: an unknown backend, a codec without an ONNX path or without precisions, or
            a precision the backend does not run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnx":
        return onnx_codec(codec, precision=precision or "fp32")
    if precision is None:
        return codec
    from ..codecs.focalcodec import at_precision

    return at_precision(codec, precision)
