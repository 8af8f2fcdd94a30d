"""Wire format: golden packets (exact results and messages), round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voip_codec.wire.packet import (
    FLAG_END,
    FLAG_SILENCE,
    FLAG_START,
    AudioPacket,
    LossReport,
    PacketError,
    parse_packet,
)

GOLDEN = Path(__file__).resolve().parent / "golden" / "packets"

# Derandomized (reproducible) hypothesis settings; the 100k-example parser fuzzing that uses them
# is in tests/integration/test_packet_fuzz.py.
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXPECTED_ERRORS = {
    "audio_truncated.bin": "truncated audio packet: 34 bytes, header announces 37",
    "audio_header_truncated.bin": "truncated audio header: 10 of 16 bytes",
    "audio_bad_length.bin": "bad length: 38 bytes, header announces 37",
    "audio_wrong_version.bin": "unsupported version 2, expected 1",
    "audio_bad_magic.bin": "bad magic b'RT', expected b'VC'",
    "audio_bad_redundancy.bin": "bad redundancy count 4, expected 0..3",
    "audio_reserved_flags.bin": "reserved flag bits set in 0x81",
    "unknown_type.bin": "unknown message type 9, expected 1 (audio) or 2 (loss report)",
    "report_truncated.bin": "truncated loss report: 21 of 22 bytes",
    "report_bad_length.bin": "bad length: loss report of 24 bytes, expected 22",
    "empty_truncated.bin": "truncated: 2 bytes, a message has at least 4",
}


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def test_golden_audio_packet() -> None:
    data = golden("audio_valid.bin")
    assert data.hex() == ("564301011001ffff" "fffffffe" "0007" "01" "02"
                          + "11" * 7 + "12" * 7 + "13" * 7)
    pkt = parse_packet(data)
    assert pkt == AudioPacket(codec_id=16, seq=65535, frame_index=0xFFFFFFFE,
                              frames=(b"\x13" * 7,), redundant=(b"\x11" * 7, b"\x12" * 7),
                              flags=FLAG_START)
    assert isinstance(pkt, AudioPacket)
    assert pkt.frame_bytes == 7 and pkt.last_frame_index == 0xFFFFFFFE
    assert pkt.to_bytes() == data


def test_golden_bundle_packet() -> None:
    data = golden("audio_bundle_valid.bin")
    pkt = parse_packet(data)
    assert isinstance(pkt, AudioPacket)
    assert (pkt.codec_id, pkt.seq, pkt.frame_index, pkt.flags) == (32, 7, 12, 0)
    assert pkt.frames == (b"\xab" * 6, b"\xcd" * 6, b"\xef" * 6) and pkt.redundant == ()
    assert pkt.last_frame_index == 14
    assert pkt.to_bytes() == data


def test_golden_loss_report() -> None:
    data = golden("report_valid.bin")
    assert data.hex() == "56430102" "0003" "04d2" "000c" "000a" "2aaa" "0200" "0000" "0011" "00a0"
    rep = parse_packet(data)
    assert isinstance(rep, LossReport)
    assert (rep.report_seq, rep.highest_seq, rep.expected, rep.received) == (3, 1234, 12, 10)
    assert rep.loss_rate == pytest.approx(2 / 12, abs=1e-4)
    assert rep.mean_burst == 2.0 and rep.residual_loss == 0.0
    assert (rep.jitter_ms, rep.playout_delay_ms) == (17, 160)
    assert rep.to_bytes() == data


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_golden_invalid(name: str) -> None:
    with pytest.raises(PacketError) as info:
        parse_packet(golden(name))
    assert str(info.value) == EXPECTED_ERRORS[name]


def test_every_golden_file_is_checked() -> None:
    names = {p.name for p in GOLDEN.glob("*.bin")}
    assert names == set(EXPECTED_ERRORS) | {"audio_valid.bin", "audio_bundle_valid.bin",
                                            "report_valid.bin"}


def test_packet_error_is_value_error() -> None:
    assert issubclass(PacketError, ValueError)
    with pytest.raises(PacketError, match="expected bytes"):
        parse_packet("VC")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, message", [
    ({"frames": ()}, "1..16 new frames"),
    ({"frames": (b"a",) * 17}, "1..16 new frames"),
    ({"redundant": (b"a",) * 4}, "at most 3 redundant"),
    ({"frames": (b"ab", b"a")}, "same size"),
    ({"frames": (b"",)}, "payload size"),
    ({"seq": 65536}, "sequence number"),
    ({"frame_index": -1}, "frame index"),
    ({"codec_id": 256}, "codec id"),
    ({"flags": 0x08}, "unknown flag"),
])
def test_audio_packet_validation(kwargs: dict, message: str) -> None:
    base = {"codec_id": 1, "seq": 0, "frame_index": 0, "frames": (b"a",)}
    with pytest.raises(PacketError, match=message):
        AudioPacket(**{**base, **kwargs})


def test_loss_report_validation() -> None:
    with pytest.raises(PacketError, match="loss_rate"):
        LossReport(0, 0, 1, 1, loss_rate=1.5, mean_burst=0.0)
    with pytest.raises(PacketError, match="mean_burst"):
        LossReport(0, 0, 1, 1, loss_rate=0.5, mean_burst=300.0)
    with pytest.raises(PacketError, match="expected"):
        LossReport(0, 0, 70000, 1, loss_rate=0.5, mean_burst=1.0)


audio_packets = st.builds(
    lambda cid, seq, idx, size, n_new, n_red, flags, data: AudioPacket(
        codec_id=cid, seq=seq, frame_index=idx,
        frames=tuple(data.draw(st.binary(min_size=size, max_size=size)) for _ in range(n_new)),
        redundant=tuple(data.draw(st.binary(min_size=size, max_size=size)) for _ in range(n_red)),
        flags=flags),
    st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
    st.integers(1, 40), st.integers(1, 16), st.integers(0, 3),
    st.sampled_from([0, FLAG_START, FLAG_SILENCE, FLAG_END, FLAG_START | FLAG_SILENCE,
                     FLAG_SILENCE | FLAG_END]), st.data())

def _report(report_seq: int, highest_seq: int, expected: int, received: int, loss: int,
            burst: int, residual: int, jitter_ms: int, playout_delay_ms: int) -> LossReport:
    """A report from nine 16-bit fields (the float ones scaled to their wire resolution)."""
    return LossReport(report_seq, highest_seq, expected, received, loss_rate=loss / 0xFFFF,
                      mean_burst=burst / 256, residual_loss=residual / 0xFFFF,
                      jitter_ms=jitter_ms, playout_delay_ms=playout_delay_ms)


reports = st.builds(_report, *(st.integers(0, 0xFFFF) for _ in range(9)))


@settings(FUZZ, max_examples=2_000)
@given(audio_packets)
def test_audio_round_trip(pkt: AudioPacket) -> None:
    data = pkt.to_bytes()
    assert len(data) == 16 + (len(pkt.frames) + len(pkt.redundant)) * pkt.frame_bytes
    back = parse_packet(data)
    assert back == pkt
    assert back.to_bytes() == data


@settings(FUZZ, max_examples=2_000)
@given(reports)
def test_report_round_trip(rep: LossReport) -> None:
    data = rep.to_bytes()
    back = parse_packet(data)
    assert back == rep and back.to_bytes() == data


