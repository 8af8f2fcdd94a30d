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

from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np
import torch

from .model import DecoderState, EncoderState, FocalCodec
from .state import StreamState

__all__ = ["StreamBatch"]

_Id = TypeVar("_Id", bound=Hashable)
"""The stream-id type of one :meth:`StreamBatch.step` call (its results use the same ids)."""


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
        pcm: Mapping[_Id, np.ndarray | torch.Tensor] | None = None,
        tokens: Mapping[_Id, np.ndarray | torch.Tensor] | None = None,
    ) -> tuple[dict[_Id, np.ndarray], dict[_Id, np.ndarray]]:
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
        toks_out: dict[_Id, np.ndarray] = {} if pcm is None else self._step_encode(pcm)
        audio_out: dict[_Id, np.ndarray] = {} if tokens is None else self._step_decode(tokens)
        return toks_out, audio_out

    def _advance(
        self, rows: _Rows, inputs: Mapping[_Id, np.ndarray | torch.Tensor], what: str,
        length: int, dtype: torch.dtype,
        step: Callable[[torch.Tensor, StreamState | None], tuple[torch.Tensor, StreamState]],
    ) -> dict[_Id, np.ndarray]:
        """Validate one tick's inputs, step the batched rows, then run and append joiners.

        A joining stream's first call runs alone (its first-call padding depends on its own
        input); afterwards its state becomes a new row of the batch.
        """
        missing = [i for i in rows.ids if i not in inputs]
        if missing:
            raise ValueError(f"{what}: active streams {missing} supplied nothing this tick")
        items: dict[_Id, torch.Tensor] = {}
        for sid, x in inputs.items():
            t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
            if t.shape != (length,):
                raise ValueError(f"{what}[{sid!r}] must have shape ({length},), got "
                                 f"{tuple(t.shape)}")
            items[sid] = t.to(dtype)
        row_of = {sid: r for r, sid in enumerate(rows.ids)}
        active = sorted((s for s in items if s in row_of), key=row_of.__getitem__)  # = rows.ids
        out: dict[_Id, np.ndarray] = {}
        if active:
            result, rows.state = step(torch.stack([items[s] for s in active]), rows.state)
            out.update({sid: result[r].numpy() for r, sid in enumerate(active)})
        for sid in [s for s in items if s not in out]:
            result, state = step(items[sid][None], None)
            out[sid] = result[0].numpy()
            rows.append(sid, state)
        return out

    def _step_encode(self, pcm: Mapping[_Id, np.ndarray | torch.Tensor]) -> dict[_Id, np.ndarray]:
        def encode(x: torch.Tensor, state: StreamState | None
                   ) -> tuple[torch.Tensor, StreamState]:
            assert state is None or isinstance(state, EncoderState)
            return self.model.encode_step(x, state)

        return self._advance(self._enc, pcm, "pcm", self.model.chunk_size, torch.float32,
                             encode)

    def _step_decode(self, tokens: Mapping[_Id, np.ndarray | torch.Tensor]
                     ) -> dict[_Id, np.ndarray]:
        def decode(x: torch.Tensor, state: StreamState | None
                   ) -> tuple[torch.Tensor, StreamState]:
            assert state is None or isinstance(state, DecoderState)
            wave, new_state = self.model.decode_step(x, state)
            return wave.float(), new_state

        return self._advance(self._dec, tokens, "tokens", self.model.chunk_frames, torch.long,
                             decode)
