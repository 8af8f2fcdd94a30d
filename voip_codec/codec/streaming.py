"""Per-stream encoder and decoder objects that accept input of any size.

:class:`StreamingEncoder` buffers audio of any block size (10 ms, 20 ms, odd sizes) and runs the
model on whole 80 ms chunks (1280 samples), emitting 4 tokens per chunk; the tokens are the same
whatever the block size. :class:`StreamingDecoder` accepts any number of tokens and runs the model
on whole 4-token blocks (the refiner mixes the frames of a block), emitting 480 samples at 24 kHz
per token. ``flush()`` ends a stream: the encoder zero-pads its partial chunk, the decoder decodes
its partial block as offline decoding does.

Each object owns an explicit state (:class:`StreamingEncoderState` /
:class:`StreamingDecoderState`): ``state`` reads it, ``clone()`` forks the stream (both copies then
continue independently with identical outputs), ``reset()`` starts over. Two objects never share
state, so any number of streams can run in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .model import DecoderState, EncoderState, FocalCodec
from .state import StreamState

__all__ = [
    "StreamingDecoder",
    "StreamingDecoderState",
    "StreamingEncoder",
    "StreamingEncoderState",
]


def _as_batch(x: Tensor | np.ndarray, batch_size: int, what: str, dtype: torch.dtype) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[0] != batch_size:
        raise ValueError(
            f"{what} must be (samples,) or (batch={batch_size}, samples), got {tuple(t.shape)}"
        )
    return t.to(dtype)


@dataclass
class StreamingEncoderState(StreamState):
    """All state of one encoder stream (or a batch of streams at the same position)."""

    model: EncoderState | None
    """Model state after the last complete chunk; None before the first."""
    pending: Tensor
    """Buffered samples not yet encoded, ``(batch, < chunk_size)``."""
    samples_in: int
    """Samples accepted so far (per stream)."""


@dataclass
class StreamingDecoderState(StreamState):
    """All state of one decoder stream."""

    model: DecoderState | None
    """Model state after the last complete block; None before the first."""
    pending: Tensor
    """Buffered tokens not yet decoded, ``(batch, < 4)`` int64."""
    tokens_in: int
    """Tokens accepted so far (per stream)."""


class StreamingEncoder:
    """Stateful streaming encoder: 16 kHz audio of any block size in, tokens out.

    Args:
        model: the codec (shared read-only between streams).
        batch_size: independent streams encoded together (all fed the same number of samples).
    """

    def __init__(self, model: FocalCodec, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.state = self._fresh()

    def _fresh(self) -> StreamingEncoderState:
        p = self.model.encoder.norm.weight
        pending = torch.zeros(self.batch_size, 0, dtype=p.dtype, device=p.device)
        return StreamingEncoderState(None, pending, 0)

    def reset(self) -> None:
        """Start a new stream."""
        self.state = self._fresh()

    def clone(self) -> StreamingEncoder:
        """Fork the stream: a new encoder with a deep copy of this one's state."""
        other = StreamingEncoder(self.model, self.batch_size)
        other.state = self.state.clone()
        return other

    @property
    def pending_samples(self) -> int:
        """Samples buffered until the next chunk is complete."""
        return int(self.state.pending.shape[1])

    @torch.inference_mode()
    def push(self, pcm: Tensor | np.ndarray) -> Tensor:
        """Feed samples; encode every complete chunk.

        Args:
            pcm: float samples at 16 kHz in [-1, 1], ``(samples,)`` or ``(batch, samples)``;
                any length, including 0.

        Returns:
            Tokens of the chunks completed by this call, ``(batch, 4 * chunks)`` int64
            (possibly zero-width).
        """
        x = _as_batch(pcm, self.batch_size, "pcm", self.state.pending.dtype)
        x = x.to(self.state.pending.device)
        st = self.state
        buf = torch.cat([st.pending, x], dim=1) if st.pending.shape[1] else x
        chunk = self.model.chunk_size
        whole = (buf.shape[1] // chunk) * chunk
        model_state = st.model
        outs = []
        for i in range(0, whole, chunk):
            toks, model_state = self.model.encode_step(buf[:, i:i + chunk], model_state)
            outs.append(toks)
        self.state = StreamingEncoderState(model_state, buf[:, whole:].clone(),
                                           st.samples_in + x.shape[1])
        if not outs:
            return torch.zeros(self.batch_size, 0, dtype=torch.long)
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def flush(self) -> Tensor:
        """End of stream: zero-pad the buffered partial chunk (if any) and encode it.

        Returns:
            The final tokens ``(batch, 4)``, or zero-width when nothing was pending.
        """
        n = self.pending_samples
        if n == 0:
            return torch.zeros(self.batch_size, 0, dtype=torch.long)
        return self.push(torch.zeros(self.batch_size, self.model.chunk_size - n))


class StreamingDecoder:
    """Stateful streaming decoder: tokens (any count per call) in, 24 kHz audio out.

    Audio for a token comes out once its 4-token block is complete (the encoder always produces
    whole blocks, so in a call every push of 4 tokens yields 1920 samples at once).
    """

    def __init__(self, model: FocalCodec, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.state = self._fresh()

    def _fresh(self) -> StreamingDecoderState:
        device = self.model.encoder.norm.weight.device
        return StreamingDecoderState(
            None, torch.zeros(self.batch_size, 0, dtype=torch.long, device=device), 0
        )

    def reset(self) -> None:
        """Start a new stream."""
        self.state = self._fresh()

    def clone(self) -> StreamingDecoder:
        """Fork the stream: a new decoder with a deep copy of this one's state."""
        other = StreamingDecoder(self.model, self.batch_size)
        other.state = self.state.clone()
        return other

    @property
    def pending_tokens(self) -> int:
        """Tokens buffered until their block is complete."""
        return int(self.state.pending.shape[1])

    def _empty(self) -> Tensor:
        p = self.model.encoder.norm.weight
        return torch.zeros(self.batch_size, 0, dtype=p.dtype, device=p.device)

    @torch.inference_mode()
    def push(self, toks: Tensor | np.ndarray) -> Tensor:
        """Feed tokens; decode every complete block.

        Args:
            toks: int tokens in ``[0, codebook_size)``, ``(n,)`` or ``(batch, n)``, any n >= 0.

        Returns:
            ``(batch, 480 * decoded_tokens)`` float samples at 24 kHz.

        Raises:
            ValueError: bad shape or a token out of range.
        """
        t = _as_batch(toks, self.batch_size, "toks", torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.model.codebook_size):
            raise ValueError(f"tokens must lie in [0, {self.model.codebook_size})")
        st = self.state
        buf = torch.cat([st.pending, t.to(st.pending.device)], dim=1)
        block = self.model.chunk_frames
        whole = (buf.shape[1] // block) * block
        model_state = st.model
        out = self._empty()
        if whole:
            out, model_state = self.model.decode_step(buf[:, :whole], model_state)
        self.state = StreamingDecoderState(model_state, buf[:, whole:].clone(),
                                           st.tokens_in + t.shape[1])
        return out

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End of stream: decode a buffered partial block the way offline decoding does."""
        st = self.state
        if st.pending.shape[1] == 0:
            return self._empty()
        out, model_state = self.model.decode_step(st.pending, st.model)
        self.state = StreamingDecoderState(model_state, st.pending[:, :0], st.tokens_in)
        return out
