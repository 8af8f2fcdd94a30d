"""KISS-style framing: stuffing, CRC, resync after garbage, bounded memory, never raises."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voip_codec.wire.kiss import (
    FEND,
    FESC,
    KissDecoder,
    crc16_x25,
    kiss_frame,
    kiss_frame_size,
)


def test_crc16_x25_check_value() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # the catalogued check value of CRC-16/X-25
    assert crc16_x25(b"") == 0x0000


def test_frame_layout_and_stuffing() -> None:
    frame = kiss_frame(b"\x01\x02")
    crc = crc16_x25(b"\x01\x02")
    assert frame == bytes([FEND, 1, 2, crc & 0xFF, crc >> 8, FEND])
    assert len(frame) == kiss_frame_size(2) == 6
    stuffed = kiss_frame(bytes([0xC0, 0xDB, 0x00]))
    assert stuffed[:6] == bytes([FEND, FESC, 0xDC, FESC, 0xDD, 0x00])
    assert stuffed.count(FEND) == 2 + stuffed[6:-1].count(FEND)  # no FEND inside but the CRC's
    assert FEND not in stuffed[1:-1]
    with pytest.raises(ValueError, match="empty"):
        kiss_frame(b"")


def test_round_trip_in_chunks_of_every_size() -> None:
    rng = random.Random(1)
    datagrams = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
                 for _ in range(30)]
    datagrams.append(bytes([0xC0] * 5 + [0xDB] * 5))
    stream = b"".join(kiss_frame(d) for d in datagrams)
    for size in (1, 2, 3, 7, 64, len(stream)):
        dec = KissDecoder(64)
        out = [d for i in range(0, len(stream), size) for d in dec.feed(stream[i:i + size])]
        assert out == datagrams, size
        assert dec.stats.frames == len(datagrams) and dec.stats.dropped == 0


def test_garbage_between_frames_is_dropped_and_the_decoder_resyncs() -> None:
    dec = KissDecoder(64)
    a, b = kiss_frame(b"first"), kiss_frame(b"second")
    # noise on the line before, between and inside delimiters
    out = dec.feed(b"\x17\x99noise" + a + b"\xdbjunk\xc0" + b"\x42" + b)
    assert out == [b"first", b"second"]
    # "\x17\x99noise" ends at a's opening FEND: a bad CRC (or a runt); "\xdbjunk": a bad escape
    assert dec.stats.crc_errors + dec.stats.runts >= 1 and dec.stats.bad_escapes == 1
    assert dec.feed(kiss_frame(b"third")) == [b"third"]


def test_bit_errors_and_dropped_bytes_lose_one_frame_each() -> None:
    datagrams = [f"frame {i:02d}".encode() for i in range(20)]
    frames = [kiss_frame(d) for d in datagrams]
    starts = [sum(len(f) for f in frames[:i]) for i in range(len(frames))]
    stream = bytearray(b"".join(frames))
    # from the end backwards, so the earlier offsets stay right
    del stream[starts[12] + len(frames[12]) - 1]  # frame 12's closing FEND is lost
    del stream[starts[8] + 5]  # a byte inside frame 8 is lost
    stream[starts[3] + 4] ^= 0x10  # a bit error inside frame 3
    dec = KissDecoder(64)
    out = dec.feed(bytes(stream))
    assert out == [d for i, d in enumerate(datagrams) if i not in (3, 8)]
    # frame 12 without its closing FEND runs into frame 13's opening FEND: its CRC still holds
    assert dec.stats.crc_errors == 2


def test_overlong_garbage_is_discarded_until_the_next_delimiter() -> None:
    dec = KissDecoder(16)
    assert dec.feed(b"\xc0" + b"x" * 1000) == []
    assert dec.stats.oversize == 1 and len(dec._buf) == 0  # memory stays bounded
    assert dec.feed(b"y" * 1000 + kiss_frame(b"ok")) == [b"ok"]
    assert dec.stats.oversize == 1  # one discarded run, counted once
    assert dec.feed(kiss_frame(b"z" * 17)) == [] and dec.stats.oversize == 2
    assert dec.feed(kiss_frame(b"z" * 16)) == [b"z" * 16]


def test_empty_frames_and_runts() -> None:
    dec = KissDecoder()
    assert dec.feed(b"\xc0\xc0\xc0") == [] and dec.stats.dropped == 0
    assert dec.feed(b"\x01\x02\xc0") == [] and dec.stats.runts == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_random_streams_never_raise(noise: bytes, chunk: int) -> None:
    dec = KissDecoder(32)
    out = []
    stream = noise + kiss_frame(b"after the noise")
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i:i + chunk])
    assert all(1 <= len(d) <= 32 for d in out)
    assert out[-1] == b"after the noise"  # its opening FEND resyncs whatever came before
