"""Explicit, typed streaming state.

Every stateful module takes ``state: SomeState | None`` and returns ``(output, new_state)``;
``None`` means "start of stream" and is what an offline (whole-signal) call passes, so one code
path serves offline and streaming use. States are plain dataclasses of tensors (and nested
states), never hidden module buffers, so two streams in one process cannot interfere.

``clone()`` makes a deep snapshot (used by concealment to roll back, and by tests that fork a
stream mid-way); ``select``/``stack`` split and join batches of independent streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

S = TypeVar("S", bound="StreamState")

__all__ = ["StreamState"]


def _map(value: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, StreamState):
        return value._map(fn)
    if isinstance(value, tuple):
        return tuple(_map(v, fn) for v in value)
    if isinstance(value, list):
        return [_map(v, fn) for v in value]
    return value


def _zip(values: Sequence[Any], fn: Callable[[list[Tensor]], Tensor]) -> Any:
    first = values[0]
    if isinstance(first, Tensor):
        return fn(list(values))
    if isinstance(first, StreamState):
        cls = type(first)
        return cls(**{
            f.name: _zip([getattr(v, f.name) for v in values], fn)
            for f in dataclasses.fields(first)
        })
    if isinstance(first, (tuple, list)):
        out = [_zip([v[i] for v in values], fn) for i in range(len(first))]
        return tuple(out) if isinstance(first, tuple) else out
    if any(v != first for v in values):
        raise ValueError(f"cannot stack states that differ in a non-tensor field: {values!r}")
    return first


@dataclasses.dataclass
class StreamState:
    """Base class of all streaming states (a dataclass of tensors, ints and nested states)."""

    def _map(self: S, fn: Callable[[Tensor], Tensor]) -> S:
        return type(self)(**{
            f.name: _map(getattr(self, f.name), fn) for f in dataclasses.fields(self)
        })

    def clone(self: S) -> S:
        """A deep copy: continuing the copy never affects the original, and vice versa."""
        return self._map(lambda t: t.clone())

    def to(self: S, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> S:
        """Move floating-point tensors to a device and/or dtype."""
        def move(t: Tensor) -> Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)
        return self._map(move)

    def select(self: S, index: int) -> S:
        """The state of one stream of a batch (batch dimension kept, size 1)."""
        return self._map(lambda t: t[index:index + 1].clone())

    def index(self: S, rows: Tensor) -> S:
        """The states of the streams at ``rows`` (a 1-D index tensor), as a new batch."""
        return self._map(lambda t: t.index_select(0, rows.to(t.device)))

    @classmethod
    def stack(cls: type[S], states: Sequence[S]) -> S:
        """Join single-stream states into one batch (all must be at the same stream position)."""
        if not states:
            raise ValueError("stack() needs at least one state")
        return _zip(list(states), lambda ts: torch.cat(ts, dim=0))  # type: ignore[no-any-return]

    def nbytes(self) -> int:
        """Memory held by the state's tensors, in bytes: the whole storage behind each tensor,
        counted once (streaming contexts are views into ring buffers with some room)."""
        storages: dict[tuple[str, int], int] = {}

        def count(t: Tensor) -> Tensor:
            storage = t.untyped_storage()
            storages[(str(t.device), storage.data_ptr())] = storage.nbytes()
            return t

        self._map(count)
        return sum(storages.values())
