"""Many independent streams in one model step: the gateway case.

At batch size 1 a CPU spends each 80 ms chunk reading every weight once for 4 frames; stepping N
streams together reads the weights once for 4N frames. :class:`StreamBatch` keeps one batched
encoder state and one batched decoder state (rows = streams). Streams join and leave at any
tick: a joining stream's first chunk runs alone (its first-call padding depends on its own
audio), then its state is appended as a new row; a leaving stream's row is dropped. Every
active stream supplies exactly one chunk (1280 samples) and/or one block of tokens per tick, as
a real-time gateway does every 80 ms.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch

from .model import DecoderState, EncoderState, FocalCodec
from .state import StreamState

__all__ = ["StreamBatch"]


class _Rows:
    """A batched state plus the ids of its rows, with join/leave."""

    def __init__(self) -> None:
        self.ids: list[Hashable] = []
        self.state: StreamState | None = None

    def leave(self, stream_id: Hashable) -> None:
        if stream_id not in self.ids:
            return
        keep = [i for i, s in enumerate(self.ids) if s != stream_id]
        self.ids = [self.ids[i] for i in keep]
        if not keep:
            self.state = None
        elif self.state is not None:
            self.state = self.state.index(torch.tensor(keep))

    def append(self, stream_id: Hashable, state: StreamState) -> None:
        self.ids.append(stream_id)
        self.state = state if self.state is None else type(state).stack([self.state, state])


class StreamBatch:
    """Full-duplex FocalCodec streams stepped together.

    Args:
        model: the codec, shared by all streams.

    Example::

        batch = StreamBatch(model)
        tokens, audio = batch.step(pcm={"alice": chunk_a, "bob": chunk_b},
                                   tokens={"carol": toks_c})
    """

    def __init__(self, model: FocalCodec) -> None:
        self.model = model
        self._enc = _Rows()
        self._dec = _Rows()

    @property
    def encoding(self) -> list[Hashable]:
        """Ids of streams with encoder state."""
        return list(self._enc.ids)

    @property
    def decoding(self) -> list[Hashable]:
        """Ids of streams with decoder state."""
        return list(self._dec.ids)

    def leave(self, stream_id: Hashable) -> None:
        """Forget a stream (both directions); unknown ids are ignored."""
        self._enc.leave(stream_id)
        self._dec.leave(stream_id)

    @torch.inference_mode()
    def step(
        self,
        pcm: Mapping[Hashable, np.ndarray | torch.Tensor] | None = None,
        tokens: Mapping[Hashable, np.ndarray | torch.Tensor] | None = None,
    ) -> tuple[dict[Hashable, np.ndarray], dict[Hashable, np.ndarray]]:
        """One tick: encode one chunk per sending stream, decode one block per receiving stream.

        Args:
            pcm: stream id -> ``(1280,)`` float samples at 16 kHz, or None to skip encoding this
                call. Every stream already encoding must be present (send silence rather than
                skip a tick); new ids join.
            tokens: stream id -> ``(4,)`` int tokens, or None; same rules for decoding.

        Returns:
            ``(tokens_out, audio_out)``: id -> ``(4,)`` int64 tokens, id -> ``(1920,)`` float32.

        Raises:
            ValueError: a missing active stream or a wrongly sized input.
        """
        toks_out = {} if pcm is None else self._step_encode(dict(pcm))
        audio_out = {} if tokens is None else self._step_decode(dict(tokens))
        return toks_out, audio_out

    def _check(self, rows: _Rows, given: dict[Hashable, object], what: str) -> None:
        missing = [i for i in rows.ids if i not in given]
        if missing:
            raise ValueError(f"{what}: active streams {missing} supplied nothing this tick")

    def _step_encode(self, pcm: dict[Hashable, np.ndarray | torch.Tensor]
                     ) -> dict[Hashable, np.ndarray]:
        self._check(self._enc, pcm, "pcm")
        n = self.model.chunk_size
        chunks = {}
        for sid, x in pcm.items():
            t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
            if t.shape != (n,):
                raise ValueError(f"pcm[{sid!r}] must have shape ({n},), got {tuple(t.shape)}")
            chunks[sid] = t.float()
        out: dict[Hashable, np.ndarray] = {}
        if self._enc.ids:
            batch = torch.stack([chunks[i] for i in self._enc.ids])
            state = self._enc.state
            assert isinstance(state, EncoderState)
            toks, self._enc.state = self.model.encode_step(batch, state)
            out.update({sid: toks[r].numpy() for r, sid in enumerate(self._enc.ids)})
        for sid in [s for s in chunks if s not in out]:
            toks, st = self.model.encode_step(chunks[sid][None], None)
            out[sid] = toks[0].numpy()
            self._enc.append(sid, st)
        return out

    def _step_decode(self, tokens: dict[Hashable, np.ndarray | torch.Tensor]
                     ) -> dict[Hashable, np.ndarray]:
        self._check(self._dec, tokens, "tokens")
        block = self.model.chunk_frames
        blocks = {}
        for sid, x in tokens.items():
            t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).long()
            if t.shape != (block,):
                raise ValueError(f"tokens[{sid!r}] must have shape ({block},), got "
                                 f"{tuple(t.shape)}")
            blocks[sid] = t
        out: dict[Hashable, np.ndarray] = {}
        if self._dec.ids:
            batch = torch.stack([blocks[i] for i in self._dec.ids])
            state = self._dec.state
            assert isinstance(state, DecoderState)
            wave, self._dec.state = self.model.decode_step(batch, state)
            out.update({sid: wave[r].float().numpy() for r, sid in enumerate(self._dec.ids)})
        for sid in [s for s in blocks if s not in out]:
            wave, st = self.model.decode_step(blocks[sid][None], None)
            out[sid] = wave[0].float().numpy()
            self._dec.append(sid, st)
        return out
