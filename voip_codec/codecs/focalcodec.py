"""FocalCodec-Stream behind the codec-agnostic frame contract.

One frame = one 80 ms chunk = 1280 samples at 16 kHz in, 4 tokens, 1920 samples at 24 kHz out.
The 4 tokens are bit-packed MSB-first without padding between them (44/48/64 bits for the
11/12/16-bit codebooks, carried in 6/6/8 bytes).

The payload decoder is the raw stateful decoder; loss concealment (``decode(None)``) is added by
the transport's concealment wrapper, which for this codec works in the token domain (it feeds
repeated tokens so the stateful decoder keeps running).
"""

from __future__ import annotations

import numpy as np
import torch

from ..codec.model import DecoderState, EncoderState, FocalCodec
from ..wire.bitpack import pack_tokens, unpack_tokens
from .base import Codec, CodecInfo, FrameDecoder, FrameEncoder, check_payload, check_pcm_frame
from .plc import ConcealingDecoder

__all__ = [
    "FocalCodecCodec",
    "FocalCodecFrameDecoder",
    "FocalCodecFrameEncoder",
    "at_precision",
    "focalcodec_info",
    "load_focalcodec_codec",
]


def focalcodec_info(model: FocalCodec, name: str, codec_id: int) -> CodecInfo:
    """The frame contract of a FocalCodec model (80 ms frames, 4 tokens each)."""
    return CodecInfo(
        name=name,
        codec_id=codec_id,
        frame_ms=model.latency_ms,
        bits_per_frame=model.chunk_frames * model.bits_per_token,
        input_sample_rate=model.sample_rate_input,
        output_sample_rate=model.sample_rate_output,
    )


class FocalCodecFrameEncoder(FrameEncoder):
    """80 ms of 16 kHz PCM -> packed tokens, with carried encoder state."""

    def __init__(self, model: FocalCodec, info: CodecInfo) -> None:
        self.model = model
        self.info = info
        self.state: EncoderState | None = None

    @torch.inference_mode()
    def encode(self, pcm: np.ndarray) -> bytes:
        """See :meth:`FrameEncoder.encode`."""
        frame = check_pcm_frame(pcm, self.info)
        sig = torch.from_numpy(frame)[None]
        toks, self.state = self.model.encode_step(sig, self.state)
        return pack_tokens(toks[0].numpy(), self.model.bits_per_token)

    def encode_tokens(self, pcm: np.ndarray) -> np.ndarray:
        """Like :meth:`encode` but returns the 4 tokens (for speech-LM users)."""
        return unpack_tokens(self.encode(pcm), self.model.bits_per_token, self.model.chunk_frames)

    def reset(self) -> None:
        """Start a new stream."""
        self.state = None


class FocalCodecFrameDecoder:
    """Packed tokens of one frame -> 80 ms of 24 kHz PCM, with carried decoder state.

    This is the raw payload decoder (no concealment); it has ``decode_payload`` and ``reset``.
    """

    def __init__(self, model: FocalCodec, info: CodecInfo) -> None:
        self.model = model
        self.info = info
        self.state: DecoderState | None = None

    @torch.inference_mode()
    def decode_payload(self, payload: bytes) -> np.ndarray:
        """Decode one frame's payload (exactly ``info.bytes_per_frame`` bytes)."""
        data = check_payload(payload, self.info)
        toks = unpack_tokens(data, self.model.bits_per_token, self.model.chunk_frames)
        wave, self.state = self.model.decode_step(torch.from_numpy(toks)[None], self.state)
        return wave[0].to(torch.float32).numpy()

    def reset(self) -> None:
        """Start a new stream."""
        self.state = None


class FocalCodecCodec(Codec):
    """A FocalCodec-Stream model as an 80 ms frame codec (16 kHz in, 24 kHz out).

    Args:
        model: the loaded model (shared, read-only, by all streams of this codec).
        name: registry name, e.g. ``"focalcodec-65k"``.
        codec_id: id carried in packet headers.
    """

    def __init__(self, model: FocalCodec, name: str, codec_id: int) -> None:
        self.model = model
        self.info = focalcodec_info(model, name, codec_id)

    def new_encoder(self) -> FocalCodecFrameEncoder:
        """A fresh encoder stream."""
        return FocalCodecFrameEncoder(self.model, self.info)

    def new_decoder(self) -> FrameDecoder:
        """A fresh decoder stream with token-domain repeat-and-fade concealment."""
        return ConcealingDecoder(self.new_payload_decoder())

    def new_payload_decoder(self) -> FocalCodecFrameDecoder:
        """A fresh raw decoder without concealment."""
        return FocalCodecFrameDecoder(self.model, self.info)


def load_focalcodec_codec(source: str, name: str, codec_id: int) -> FocalCodecCodec:
    """Load a checkpoint (see :func:`~voip_codec.codec.loading.from_pretrained`) as a codec."""
    from ..codec.loading import from_pretrained

    return FocalCodecCodec(from_pretrained(source), name, codec_id)


def at_precision(codec: Codec, precision: str) -> FocalCodecCodec:
    """``codec`` (a FocalCodec codec) computing at ``precision`` (``fp32``, ``bf16`` or
    ``int8``; see :mod:`voip_codec.codec.precision`): the same name, id and payloads, since
    tokens do not depend on the precision they were made at. The model is converted on a copy
    (the registry's instance is shared); a model already at ``precision`` is used as it is.

    Raises:
        ValueError: ``codec`` is not a FocalCodec codec, an unknown precision, or a model
            stored at a lower precision than fp32 asked for another one.
    """
    import copy

    from ..codec.precision import check_precision, set_precision

    if not isinstance(codec, FocalCodecCodec):
        raise ValueError(f"--precision applies to the FocalCodec codecs, not {codec.info.name}")
    check_precision(precision)
    if codec.model.precision == precision:
        return codec
    model = set_precision(copy.deepcopy(codec.model), precision)
    return FocalCodecCodec(model, codec.info.name, codec.info.codec_id)
