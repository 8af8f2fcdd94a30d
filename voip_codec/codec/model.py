"""FocalCodec-Stream: the whole causal codec, offline and step-wise.

Pipeline (spec §1): 16 kHz signal -> WavLM features -> compressor latents (L2-normalised) ->
binary spherical tokens/codes -> decompressor (+ refiner) features -> WaveNeXt 24 kHz signal.

Every stage has an offline method (whole signal, fresh state) and the two stream methods
:meth:`FocalCodec.encode_step` / :meth:`FocalCodec.decode_step` carry explicit state. The offline
methods are the stream methods called once with ``state=None``: one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FocalCodecConfig
from .focal import FocalDecoder, FocalEncoder, FocalState
from .quantizer import BinarySphericalQuantizer
from .state import StreamState
from .wavenext import WaveNeXt, WaveNeXtState
from .wavlm import WavLM, WavLMState

__all__ = ["DecoderState", "EncoderState", "FocalCodec"]


@dataclass
class EncoderState(StreamState):
    """Encoder-side stream state: WavLM + compressor."""

    encoder: WavLMState
    compressor: FocalState


@dataclass
class DecoderState(StreamState):
    """Decoder-side stream state: decompressor + vocoder (the refiner is stateless)."""

    decompressor: FocalState
    decoder: WaveNeXtState


class FocalCodec(nn.Module):
    """The FocalCodec-Stream model. Parameter names match the official checkpoints.

    Tensors: signals ``(batch, samples)`` float32; tokens ``(batch, frames)`` int64; latents,
    codes and features ``(batch, frames, channels)``.
    """

    def __init__(self, config: FocalCodecConfig, model_id: str | None = None) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.model_id = model_id
        self.encoder = WavLM(config.encoder)
        self.compressor = FocalEncoder(config.compressor)
        self.quantizer = BinarySphericalQuantizer(config.quantizer.codebook_size)
        self.decompressor = FocalDecoder(config.decompressor)
        self.decoder = WaveNeXt(config.decoder)
        self._fingerprint: bytes | None = None  # kept from fp32 by precision conversions
        self.int8_calibration: dict[str, Tensor] | None = None
        """Input moments of the token-path int8 layers (``precision.int8_calibration``) that
        ``set_precision(self, "int8")`` fits the int8 weights to; ``from_pretrained`` reads them
        from a checkpoint folder's ``int8_calibration.safetensors``. None: nearest rounding."""
        self.eval()

    # ---------------------------------------------------------------- the codec contract
    @property
    def sample_rate_input(self) -> int:
        """Input sample rate, Hz (16000)."""
        return 16000

    @property
    def sample_rate_output(self) -> int:
        """Output sample rate, Hz (16000 * 480 / 320 = 24000)."""
        return self.sample_rate_input * self.config.decoder.hop_length // self.downsample_factor

    @property
    def downsample_factor(self) -> int:
        """Input samples per token (320)."""
        return self.config.downsample_factor

    @property
    def hop_length(self) -> int:
        """Output samples per token (480)."""
        return self.config.decoder.hop_length

    @property
    def chunk_frames(self) -> int:
        """Tokens per streaming chunk (4)."""
        return self.config.chunk_frames

    @property
    def chunk_size(self) -> int:
        """Input samples per streaming chunk (1280)."""
        return self.config.chunk_size

    @property
    def frame_rate(self) -> float:
        """Tokens per second (50)."""
        return self.sample_rate_input / self.downsample_factor

    @property
    def bits_per_token(self) -> int:
        """log2(codebook size): 11, 12 or 16 for the released checkpoints."""
        return self.quantizer.dim

    @property
    def codebook_size(self) -> int:
        """Number of distinct tokens."""
        return self.quantizer.codebook_size

    @property
    def bitrate(self) -> float:
        """Payload bits per second (tokens only)."""
        return self.frame_rate * self.bits_per_token

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency: one chunk (80 ms), compute time not included."""
        return 1000.0 * self.chunk_size / self.sample_rate_input

    @property
    def compute_dtype(self) -> torch.dtype:
        """Activation dtype (float32, or bfloat16 for a bf16 model; int8 models compute in fp32)."""
        return self.encoder.norm.weight.dtype

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int4"`` (see
        :mod:`voip_codec.codec.precision`)."""
        from .precision import model_precision

        return model_precision(self)

    @property
    def causal(self) -> bool:
        """Always true: only the causal variant is implemented."""
        return True

    # ---------------------------------------------------------------- streaming steps
    def encode_step(
        self, sig: Tensor, state: EncoderState | None = None, taps: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, EncoderState]:
        """Signal -> tokens, carrying state.

        Args:
            sig: ``(batch, samples)`` at 16 kHz, read within [-1, 1] (NaN as 0, +-inf and
                beyond as +-1). For equality with offline processing, streaming
                calls must carry a multiple of :attr:`chunk_size` samples (see
                :class:`voip_codec.codec.streaming.StreamingEncoder`, which buffers for you).
            state: the previous call's state, or None at stream start.
            taps: if given, filled with ``cnn_feats``, ``feats``, ``compressor_out``, ``lats``.

        Returns:
            ``(tokens (batch, ceil(samples / 320)), state)``.
        """
        if sig.dim() != 2:
            raise ValueError(f"sig must be (batch, samples), got shape {tuple(sig.shape)}")
        # A non-finite sample (a failing capture device or resampler) would enter the
        # convolution contexts and the attention cache and turn every later token of the stream
        # into garbage; it is read as silence (NaN) or full scale (inf), and the input is
        # limited to full scale, the range of the audio the model knows.
        sig = torch.nan_to_num(sig.to(self.compute_dtype), nan=0.0, posinf=1.0, neginf=-1.0)
        sig = sig.clamp(-1.0, 1.0)
        feats, enc_state = self.encoder(sig, None if state is None else state.encoder, taps)
        raw, comp_state = self.compressor(feats, None if state is None else state.compressor)
        lats = F.normalize(raw, p=2.0, dim=-1, eps=1e-12)
        if taps is not None:
            taps.update(feats=feats, compressor_out=raw, lats=lats)
        return self.quantizer.lats_to_toks(lats), EncoderState(enc_state, comp_state)

    def decode_step(
        self, toks: Tensor, state: DecoderState | None = None, taps: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, DecoderState]:
        """Tokens -> signal, carrying state.

        Args:
            toks: ``(batch, frames)`` int64. With a refiner, streaming calls must start on a
                4-token boundary and carry whole 4-token blocks to equal offline decoding.
            state: the previous call's state, or None at stream start.
            taps: if given, filled with ``codes``, ``pre_refiner``, ``qfeats``, ``backbone_out``.

        Returns:
            ``(signal (batch, frames * 480) at 24 kHz, state)``.
        """
        if toks.dim() != 2:
            raise ValueError(f"toks must be (batch, frames), got shape {tuple(toks.shape)}")
        codes = self.quantizer.toks_to_codes(toks)
        return self.decode_codes_step(codes, state, taps)

    def decode_codes_step(
        self, codes: Tensor, state: DecoderState | None = None,
        taps: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, DecoderState]:
        """Like :meth:`decode_step` but from codes ``(batch, frames, bits)`` (e.g. soft codes)."""
        codes_in = codes.to(self.compute_dtype)
        qfeats, dec_state = self.decompressor(
            codes_in, None if state is None else state.decompressor, taps
        )
        sig, voc_state = self.decoder(qfeats, None if state is None else state.decoder, taps)
        if taps is not None:
            taps.update(codes=codes, qfeats=qfeats)
        return sig.float(), DecoderState(dec_state, voc_state)

    # ---------------------------------------------------------------- offline stages
    @torch.inference_mode()
    def sig_to_feats(self, sig: Tensor) -> Tensor:
        """``(B, N)`` 16 kHz -> encoder features ``(B, ceil(N/320), dim)``."""
        return self.encoder(sig)[0]

    @torch.inference_mode()
    def feats_to_lats(self, feats: Tensor) -> Tensor:
        """Features -> L2-normalised latents ``(B, T, bits)``."""
        return F.normalize(self.compressor(feats)[0], p=2.0, dim=-1, eps=1e-12)

    def lats_to_toks(self, lats: Tensor) -> Tensor:
        """Latents (or codes) -> tokens ``(B, T)``."""
        return self.quantizer.lats_to_toks(lats)

    def lats_to_codes(self, lats: Tensor) -> Tensor:
        """Latents -> codes ``(B, T, bits)`` of ``+-1/sqrt(bits)``."""
        return self.quantizer.lats_to_codes(lats)

    def toks_to_codes(self, toks: Tensor) -> Tensor:
        """Tokens -> codes."""
        return self.quantizer.toks_to_codes(toks)

    def codes_to_toks(self, codes: Tensor) -> Tensor:
        """Codes -> tokens."""
        return self.quantizer.lats_to_toks(codes)

    @torch.inference_mode()
    def codes_to_qfeats(self, codes: Tensor) -> Tensor:
        """Codes -> decompressed features ``(B, T, dim)``."""
        return self.decompressor(codes)[0]

    def toks_to_qfeats(self, toks: Tensor) -> Tensor:
        """Tokens -> decompressed features."""
        return self.codes_to_qfeats(self.toks_to_codes(toks))

    @torch.inference_mode()
    def qfeats_to_sig(self, qfeats: Tensor) -> Tensor:
        """Decompressed features -> ``(B, T * 480)`` signal at 24 kHz."""
        return self.decoder(qfeats)[0]

    @torch.inference_mode()
    def sig_to_toks(self, sig: Tensor) -> Tensor:
        """``(B, N)`` 16 kHz signal -> ``(B, ceil(N/320))`` tokens, in one offline call."""
        return self.encode_step(sig)[0]

    @torch.inference_mode()
    def toks_to_sig(self, toks: Tensor) -> Tensor:
        """``(B, T)`` tokens -> ``(B, 480 T)`` 24 kHz signal, in one offline call (not trimmed)."""
        return self.decode_step(toks)[0]

    @torch.inference_mode()
    def sig_to_sig(self, sig: Tensor) -> Tensor:
        """Resynthesis: 16 kHz in, 24 kHz out, trimmed/padded to ``int(1.5 * N)`` samples."""
        out = self.toks_to_sig(self.sig_to_toks(sig))
        n = int(sig.shape[-1] * self.sample_rate_output / self.sample_rate_input)
        if out.shape[-1] >= n:
            return out[..., :n]
        return F.pad(out, (0, n - out.shape[-1]), mode="replicate")

    def fingerprint(self) -> bytes:
        """8 bytes identifying this model: SHA-256 of its config and a sample of every tensor.

        Cheap (reads the first 16 values of each tensor) yet different for differently trained
        models of the same architecture; token files record it so a mismatching decoder is
        refused. A model converted to bf16/int8 keeps the fingerprint of its fp32 weights
        (tokens are exchangeable across precisions).
        """
        if self._fingerprint is not None:
            return self._fingerprint
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().reshape(-1)[:16].to("cpu", torch.float32).numpy().tobytes())
        return h.digest()[:8]

    def num_parameters(self) -> int:
        """Total parameter count (the weights of the int8, 4-bit and packed layers, held as
        buffers, included: one per weight, whatever its bytes)."""
        from .precision import Int4Linear, Int8Linear, PackedLinear

        held = sum(m.out_features * m.in_features + (0 if m.bias is None else m.bias.numel())
                   for m in self.modules()
                   if isinstance(m, (Int4Linear, Int8Linear, PackedLinear)))
        return held + sum(p.numel() for p in self.parameters())
