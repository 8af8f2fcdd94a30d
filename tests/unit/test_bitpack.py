"""Bit packing of fixed-width tokens (MSB-first, no padding between tokens)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip_codec.wire.bitpack import pack_tokens, packed_size, unpack_tokens


@st.composite
def tokens_and_width(draw: st.DrawFn, widths: st.SearchStrategy[int]) -> tuple[list[int], int]:
    bits = draw(widths)
    tokens = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    return tokens, bits


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(tokens_and_width(st.sampled_from([11, 12, 16])))
def test_round_trip_focalcodec_widths(case: tuple[list[int], int]) -> None:
    tokens, bits = case
    data = pack_tokens(tokens, bits)
    assert len(data) == packed_size(len(tokens), bits) == (len(tokens) * bits + 7) // 8
    assert unpack_tokens(data, bits, len(tokens)).tolist() == tokens


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(tokens_and_width(st.integers(1, 32)))
def test_round_trip_any_width(case: tuple[list[int], int]) -> None:
    tokens, bits = case
    data = pack_tokens(np.asarray(tokens, dtype=np.int64), bits)
    assert unpack_tokens(data, bits, len(tokens)).tolist() == tokens
    # only the last byte may be padded, and its padding bits are zero
    pad = len(data) * 8 - len(tokens) * bits
    assert 0 <= pad < 8
    if pad:
        assert data[-1] & ((1 << pad) - 1) == 0


def test_known_layout_msb_first() -> None:
    # 4 x 11-bit tokens = 44 bits -> 6 bytes, last nibble zero
    data = pack_tokens([0x7FF, 0x000, 0x555, 0x001], 11)
    bits = "11111111111" "00000000000" "10101010101" "00000000001" + "0000"
    assert data == int(bits, 2).to_bytes(6, "big")
    assert pack_tokens([0xABC, 0x123, 0xFFF, 0], 12) == bytes.fromhex("abc123fff000")
    assert pack_tokens([0xBEEF, 1, 2, 0xFFFF], 16) == bytes.fromhex("beef00010002ffff")


def test_focalcodec_frame_sizes() -> None:
    assert [packed_size(4, b) for b in (11, 12, 16)] == [6, 6, 8]


@pytest.mark.parametrize("tokens, bits, message", [
    ([2048], 11, r"\[0, 2048\)"),
    ([-1], 12, "must lie in"),
    ([1], 0, "1..32"),
    ([1], 33, "1..32"),
    ([[1, 2]], 11, "one-dimensional"),
    (np.array([1.5]), 11, "integers"),
])
def test_pack_rejects_bad_input(tokens: object, bits: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack_tokens(tokens, bits)  # type: ignore[arg-type]


def test_unpack_rejects_bad_length() -> None:
    with pytest.raises(ValueError, match="need 6 bytes, got 5"):
        unpack_tokens(b"\x00" * 5, 11, 4)
    with pytest.raises(ValueError, match="count must be >= 0"):
        unpack_tokens(b"", 11, -1)
