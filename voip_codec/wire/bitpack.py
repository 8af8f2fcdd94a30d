"""Bit packing of fixed-width tokens, MSB-first, no padding between tokens.

Tokens of ``bits`` bits each are written most-significant bit first, one after another; only the
last byte is zero-padded. Four 11/12/16-bit FocalCodec-Stream tokens take 44/48/64 bits, i.e.
6/6/8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["pack_tokens", "packed_size", "unpack_tokens"]


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for ``count`` tokens of ``bits`` bits."""
    return (count * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 32:
        raise ValueError(f"bits per token must be an integer in 1..32, got {bits!r}")


def pack_tokens(tokens: Sequence[int] | np.ndarray, bits: int) -> bytes:
    """Pack tokens into bytes.

    Args:
        tokens: integers in ``[0, 2**bits)``, shape ``(n,)``.
        bits: width of each token, 1..32.

    Returns:
        ``packed_size(n, bits)`` bytes.

    Raises:
        ValueError: bad width, shape or a token out of range.
    """
    _check_bits(bits)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ValueError(f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        return b""
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= (1 << bits):
        raise ValueError(f"tokens must lie in [0, {1 << bits}) for {bits}-bit packing, got range "
                         f"[{int(arr.min())}, {int(arr.max())}]")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_matrix = ((arr[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_tokens(data: bytes | bytearray | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_tokens`.

    Args:
        data: exactly ``packed_size(count, bits)`` bytes.
        bits: width of each token, 1..32.
        count: number of tokens to read.

    Returns:
        ``(count,)`` int64 tokens.

    Raises:
        ValueError: bad width/count or a byte string of the wrong length.
    """
    _check_bits(bits)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    raw = bytes(data)
    need = packed_size(count, bits)
    if len(raw) != need:
        raise ValueError(f"{count} tokens of {bits} bits need {need} bytes, got {len(raw)}")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    bit_array = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[: count * bits]
    weights = (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    return (bit_array.reshape(count, bits).astype(np.int64) * weights).sum(axis=1)
