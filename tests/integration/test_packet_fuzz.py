"""Parser fuzzing, derandomized (reproducible). Version 1: 35k + 25k + 35k + 5k = 100k generated
inputs; version 2 (compact) and the version dispatch: 35k + 25k + 35k + 5k = 100k more. Every
input either parses and re-serialises to the same bytes, or raises PacketError."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_compact import VALID as VALID_V2_NAMES
from tests.unit.test_compact import compact_packets, golden_v2
from tests.unit.test_packet import FUZZ, audio_packets, golden
from voip_codec.wire.compact import CompactAudioPacket, WireReader, parse_any
from voip_codec.wire.packet import AudioPacket, PacketError, parse_packet


def _parse_or_packet_error(data: bytes) -> None:
    try:
        msg = parse_packet(data)
    except PacketError:
        return
    # Anything accepted must re-serialise to exactly the same bytes.
    assert msg.to_bytes() == data


@settings(FUZZ, max_examples=35_000)
@given(st.binary(max_size=48))
def test_fuzz_random_bytes(data: bytes) -> None:
    _parse_or_packet_error(data)


@settings(FUZZ, max_examples=25_000)
@given(st.binary(max_size=60))
def test_fuzz_random_bytes_with_valid_preamble(tail: bytes) -> None:
    _parse_or_packet_error(b"VC\x01" + tail)


VALID = [golden("audio_valid.bin"), golden("audio_bundle_valid.bin"), golden("report_valid.bin")]


@settings(FUZZ, max_examples=35_000)
@given(st.sampled_from(VALID), st.integers(0, 2**32 - 1))
def test_fuzz_mutated_valid_packets(base: bytes, seed: int) -> None:
    # Cheap to generate: one integer seeds a few byte edits, a cut and a few appended bytes.
    rng = random.Random(seed)
    data = bytearray(base)
    for _ in range(rng.randint(0, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    cut = rng.randint(0, len(data)) if rng.random() < 0.5 else len(data)
    extra = bytes(rng.randrange(256) for _ in range(rng.choice((0, 0, 1, 2, 7))))
    _parse_or_packet_error(bytes(data[:cut]) + extra)


@settings(FUZZ, max_examples=5_000)
@given(audio_packets, st.integers(0, 400))
def test_fuzz_truncations(pkt: AudioPacket, cut: int) -> None:
    data = pkt.to_bytes()
    if cut >= len(data):
        return
    with pytest.raises(PacketError, match="truncated"):
        parse_packet(data[:cut])


# ---------------------------------------------------------------- version 2 and the dispatch
def _parse_any_or_packet_error(data: bytes) -> None:
    try:
        msg = parse_any(data)
    except PacketError:
        return
    assert msg.to_bytes() == data
    # the stateful reader accepts exactly what the parser accepts, and never raises otherwise
    WireReader().read(data)


@settings(FUZZ, max_examples=35_000)
@given(st.binary(max_size=48))
def test_fuzz_v2_random_bytes_any_version(data: bytes) -> None:
    _parse_any_or_packet_error(data)


@settings(FUZZ, max_examples=25_000)
@given(st.integers(0x80, 0xBF), st.binary(max_size=60))
def test_fuzz_v2_random_bytes_with_v2_first_byte(first: int, tail: bytes) -> None:
    _parse_any_or_packet_error(bytes((first,)) + tail)


VALID_V2 = [golden_v2(name) for name in VALID_V2_NAMES]


@settings(FUZZ, max_examples=35_000)
@given(st.sampled_from(VALID_V2), st.integers(0, 2**32 - 1))
def test_fuzz_v2_mutated_valid_packets(base: bytes, seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(base)
    for _ in range(rng.randint(0, 3)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    cut = rng.randint(0, len(data)) if rng.random() < 0.5 else len(data)
    extra = bytes(rng.randrange(256) for _ in range(rng.choice((0, 0, 1, 2, 7))))
    _parse_any_or_packet_error(bytes(data[:cut]) + extra)


@settings(FUZZ, max_examples=5_000)
@given(compact_packets, st.integers(0, 400))
def test_fuzz_v2_truncations(pkt: CompactAudioPacket, cut: int) -> None:
    """v2 does not write the frame size, so a cut that leaves a length divisible by the frame
    count parses, but never with the original frame size: a receiver that knows its codec's
    frame size drops it (counted as invalid by the jitter buffer)."""
    data = pkt.to_bytes()
    if cut >= len(data):
        return
    try:
        got = parse_any(data[:cut])
    except PacketError:
        return
    assert isinstance(got, CompactAudioPacket) and got.frame_bytes < pkt.frame_bytes
