"""Bit packing and the token file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip_codec.wire.bitpack import pack_tokens, packed_size, unpack_tokens
from voip_codec.wire.tokenfile import (
    TokenFile,
    TokenFileError,
    read_token_file,
    write_token_file,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pack_round_trip_every_width(data: st.DataObject) -> None:
    bits = data.draw(st.sampled_from([11, 12, 16]) | st.integers(1, 32))
    toks = data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=64))
    packed = pack_tokens(toks, bits)
    assert len(packed) == packed_size(len(toks), bits)
    assert unpack_tokens(packed, bits, len(toks)).tolist() == toks


@pytest.mark.parametrize("bits,nbytes", [(11, 6), (12, 6), (16, 8)])
def test_four_tokens_per_frame_sizes(bits: int, nbytes: int) -> None:
    assert len(pack_tokens([0, 1, 2, 3], bits)) == nbytes


def test_msb_first_layout() -> None:
    assert pack_tokens([0x7FF, 0], 11) == bytes([0xFF, 0xE0, 0x00])
    assert pack_tokens([1, 0xFFF], 12) == bytes([0x00, 0x1F, 0xFF])


def test_pack_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="must lie in"):
        pack_tokens([2048], 11)
    with pytest.raises(ValueError, match="1..32"):
        pack_tokens([1], 0)
    with pytest.raises(ValueError, match="need 6 bytes"):
        unpack_tokens(b"\x00" * 5, 12, 4)


def make(tmp_path: Path, n: int = 50) -> Path:
    rng = np.random.default_rng(0)
    tf = TokenFile(rng.integers(0, 4096, n), 12, 16000, 24000, n * 320 - 17, b"\x01" * 8,
                   "some/model")
    path = tmp_path / "x.fct"
    write_token_file(path, tf)
    return path


def test_token_file_round_trip(tmp_path: Path) -> None:
    path = make(tmp_path)
    tf = read_token_file(path)
    assert tf.bits == 12 and tf.model_id == "some/model" and tf.num_samples == 50 * 320 - 17
    assert tf.tokens.tolist() == np.random.default_rng(0).integers(0, 4096, 50).tolist()
    assert path.stat().st_size == 37 + len("some/model") + packed_size(50, 12) + 4


def test_token_file_errors(tmp_path: Path) -> None:
    path = make(tmp_path)
    data = path.read_bytes()
    cases = {
        "bad magic": b"XXXX" + data[4:],
        "truncated": data[:-10],
        "trailing": data + b"\x00",
        "checksum": data[:40] + bytes([data[40] ^ 1]) + data[41:],
        "version": data[:4] + b"\x09" + data[5:],
    }
    for expected, blob in cases.items():
        p = tmp_path / "bad.fct"
        p.write_bytes(blob)
        with pytest.raises(TokenFileError, match=expected):
            read_token_file(p)
    with pytest.raises(TokenFileError, match="no such file"):
        read_token_file(tmp_path / "nope.fct")


def test_parse_token_file_bytes_names_the_source() -> None:
    # the bytes-level parser the fuzzer drives; read_token_file is a thin wrapper around it
    from voip_codec.wire.tokenfile import TokenFileError, parse_token_file

    for data in (b"", b"FCST", b"FCST\x01" + b"\xff" * 40, b"XXXX" + b"\x00" * 40):
        with pytest.raises(TokenFileError, match="^upload.fct: "):
            parse_token_file(data, "upload.fct")
