"""Compact wire format (version 2): golden packets, round trips, version detection, counter
restoration, and sessions speaking it (piggybacked reports, mixed versions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_packet import FUZZ, audio_packets, golden
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import FrameSource
from voip_codec.transport.link import CallbackLink, memory_link_pair
from voip_codec.transport.netsim import NetworkConditions, loss_model
from voip_codec.transport.packetizer import Packetizer
from voip_codec.transport.session import ReceiveSession, SendSession, classify_datagram
from voip_codec.wire.compact import (
    CompactAudioPacket,
    CompactLossReport,
    WireReader,
    parse_any,
    parse_compact,
    to_compact,
)
from voip_codec.wire.packet import (
    FLAG_END,
    FLAG_SILENCE,
    FLAG_START,
    AudioPacket,
    LossReport,
    PacketError,
)

GOLDEN_V2 = Path(__file__).resolve().parent / "golden" / "packets_v2"

EXPECTED_ERRORS = {
    "v2_audio_header_truncated.bin": "truncated audio header: 3 of 4 bytes",
    "v2_audio_truncated.bin": "truncated audio packet: 2 payload bytes for 3 frames",
    "v2_audio_bad_length.bin": "bad length: 19 payload bytes do not split into 3 equal frames",
    "v2_ext_truncated.bin": "truncated audio header: extension byte missing",
    "v2_codec_truncated.bin": "truncated audio header: codec id missing",
    "v2_bundle_truncated.bin": "truncated audio header: bundle byte missing",
    "v2_piggyback_truncated.bin": "truncated piggybacked report: 4 of 8 bytes",
    "v2_report_truncated.bin": "truncated loss report: 8 of 9 bytes",
    "v2_report_bad_length.bin": "bad length: loss report of 10 bytes, expected 9",
    "v2_report_reserved_bits.bin": "reserved bits set in report type byte 0xa1",
    "v2_ext_reserved_bits.bin": "reserved extension bits set in 0xa1",
    "v2_ext_empty.bin": "empty extension byte (X set, no extension flag)",
    "v2_bundle_of_one.bin": "bundle byte for a single frame (omit it)",
    "v2_bundle_reserved_bits.bin": "reserved bundle bits set in 0x22",
    "v2_start_without_codec.bin": "START packet without codec id",
    "v2_unknown_version.bin": "unknown packet version: first byte 0xc0",
}
VALID = ("v2_audio_valid.bin", "v2_audio_start_valid.bin", "v2_audio_bundle_report_valid.bin",
         "v2_report_valid.bin")
N = 1280  # pcm16: 80 ms at 16 kHz


def golden_v2(name: str) -> bytes:
    return (GOLDEN_V2 / name).read_bytes()


def test_common_case_is_a_4_byte_header() -> None:
    data = golden_v2("v2_audio_valid.bin")
    assert data.hex() == "80" "abc" "123" "5aa5"
    pkt = parse_compact(data)
    assert pkt == CompactAudioPacket(seq=0xABC, frame_index=0x123, frames=(b"\x5a\xa5",))
    assert pkt.to_bytes() == data


def test_golden_start_packet() -> None:
    data = golden_v2("v2_audio_start_valid.bin")
    # 10 0 X=1 R=0 S=1 K=2 | seq 0xfff, index 0xffe | START+CODEC | codec 16 | 2 copies + 1 new
    assert data.hex() == "96" "fff" "ffe" "a0" "10" + "11" * 7 + "12" * 7 + "13" * 7
    pkt = parse_compact(data)
    assert pkt == CompactAudioPacket(seq=4095, frame_index=4094, frames=(b"\x13" * 7,),
                                     redundant=(b"\x11" * 7, b"\x12" * 7),
                                     flags=FLAG_START | FLAG_SILENCE, codec_id=16)
    assert pkt.to_bytes() == data


def test_golden_bundle_with_piggybacked_report() -> None:
    data = golden_v2("v2_audio_bundle_report_valid.bin")
    assert data.hex() == ("98" "007" "00c" "50" "02" "030c0a2b20001128"
                          + "ab" * 6 + "cd" * 6 + "ef" * 6)
    pkt = parse_compact(data)
    assert isinstance(pkt, CompactAudioPacket)
    assert (pkt.seq, pkt.frame_index, pkt.flags, pkt.codec_id) == (7, 12, FLAG_END, None)
    assert pkt.frames == (b"\xab" * 6, b"\xcd" * 6, b"\xef" * 6) and pkt.frame_bytes == 6
    assert pkt.report == CompactLossReport(3, 12, 10, 43, 32, 0, 17, 40)
    assert pkt.to_bytes() == data


def test_golden_report() -> None:
    data = golden_v2("v2_report_valid.bin")
    assert data.hex() == "a0" "03" "0c" "0a" "2b" "20" "00" "11" "28"
    rep = parse_compact(data)
    assert isinstance(rep, CompactLossReport) and rep.to_bytes() == data
    full = rep.to_report()
    assert (full.report_seq, full.expected, full.received, full.jitter_ms,
            full.playout_delay_ms) == (3, 12, 10, 17, 160)
    assert full.loss_rate == pytest.approx(2 / 12, abs=1 / 255)
    assert full.mean_burst == 2.0 and full.residual_loss == 0.0


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_golden_invalid(name: str) -> None:
    with pytest.raises(PacketError) as info:
        parse_any(golden_v2(name))
    assert str(info.value) == EXPECTED_ERRORS[name]


def test_every_golden_v2_file_is_checked() -> None:
    assert {p.name for p in GOLDEN_V2.glob("*.bin")} == set(EXPECTED_ERRORS) | set(VALID)


def test_versions_are_told_apart_by_the_first_byte() -> None:
    # v1 starts with 'V' (0x56); v2 with 0b10 in the top bits: no byte is both
    assert 0x56 & 0xC0 != 0x80
    v1 = golden("audio_valid.bin")
    assert isinstance(parse_any(v1), AudioPacket)
    assert isinstance(parse_any(golden("report_valid.bin")), LossReport)
    assert isinstance(parse_any(golden_v2("v2_audio_valid.bin")), CompactAudioPacket)
    with pytest.raises(PacketError, match="not a version 2 message"):
        parse_compact(v1)
    with pytest.raises(PacketError, match="unknown packet version"):
        parse_any(b"\x00\x01\x02\x03")
    with pytest.raises(PacketError, match="truncated"):
        parse_any(b"")


@pytest.mark.parametrize("kwargs, message", [
    ({"seq": 4096}, "compact sequence number"),
    ({"frame_index": -1}, "compact frame index"),
    ({"flags": FLAG_START}, "must carry its codec id"),
    ({"frames": ()}, "1..16 new frames"),
    ({"redundant": (b"a",) * 4}, "at most 3"),
    ({"frames": (b"a", b"ab")}, "same size"),
    ({"frames": (b"",)}, "must not be empty"),
    ({"codec_id": 300}, "codec id"),
    ({"flags": 0x40}, "unknown flag"),
])
def test_compact_packet_validation(kwargs: dict, message: str) -> None:
    base = {"seq": 0, "frame_index": 0, "frames": (b"a",)}
    with pytest.raises(PacketError, match=message):
        CompactAudioPacket(**{**base, **kwargs})


def test_report_quantisation_saturates() -> None:
    big = LossReport(report_seq=513, highest_seq=9, expected=1000, received=990, loss_rate=0.01,
                     mean_burst=40.0, residual_loss=1.0, jitter_ms=900, playout_delay_ms=5000)
    c = CompactLossReport.from_report(big)
    assert (c.report_seq, c.expected, c.received, c.loss_q, c.burst_q, c.residual_q,
            c.jitter_ms, c.playout_4ms) == (1, 255, 255, 3, 255, 255, 255, 255)
    with pytest.raises(PacketError, match="0..255"):
        CompactLossReport(256, 0, 0, 0, 0, 0, 0, 0)


def _compact(pkt: AudioPacket, report: bool, with_codec: bool) -> CompactAudioPacket:
    rep = LossReport(pkt.seq, 0, 12, 11, 1 / 12, 1.0) if report else None
    return to_compact(pkt, with_codec=with_codec, report=rep)


compact_packets = st.builds(_compact, audio_packets, st.booleans(), st.booleans())


@settings(FUZZ, max_examples=2_000)
@given(compact_packets)
def test_compact_round_trip(pkt: CompactAudioPacket) -> None:
    data = pkt.to_bytes()
    extra = ((pkt.codec_id is not None) + (len(pkt.frames) > 1)
             + bool(pkt.flags & (FLAG_START | FLAG_END) or pkt.codec_id is not None
                    or len(pkt.frames) > 1) + 8 * (pkt.report is not None))
    assert len(data) == 4 + extra + (len(pkt.frames) + len(pkt.redundant)) * pkt.frame_bytes
    assert parse_compact(data) == pkt
    assert parse_any(data).to_bytes() == data


def test_reader_restores_counters_across_wraps() -> None:
    """A long v2 stream (seq past 65535, frame index past 2**16, bundles of 3, one DTX gap and
    losses) reads back as the very v1 packets the packetizer built."""
    v1 = Packetizer(codec_id=16, frames_per_packet=3, redundancy=1, first_seq=65000,
                    first_frame_index=2**32 - 500)
    v2 = Packetizer(codec_id=16, frames_per_packet=3, redundancy=1, first_seq=65000,
                    first_frame_index=2**32 - 500, version=2)
    reader = WireReader()
    rng = np.random.default_rng(1)
    checked = 0
    first: tuple[int, int] | None = None
    for i in range(6000):
        frame = bytes([i & 0xFF, (i >> 8) & 0xFF])
        if 3000 <= i < 3100:  # a DTX gap of 100 frames
            a, b = v1.skip(), v2.skip()
        else:
            a, b = v1.push(frame), v2.push(frame)
        assert (a is None) == (b is None)
        if a is None or b is None or rng.random() < 0.3:  # 30 % of packets lost
            continue
        audio, report = reader.read(b)
        want = parse_any(a)
        assert report is None and audio is not None and isinstance(want, AudioPacket)
        if first is None:
            first = (want.seq - audio.seq, want.frame_index - audio.frame_index)
        # the high bits of the first packet are not sent: the reader's counters are offset
        # from the sender's by a constant (a multiple of 4096), from then on through every wrap
        assert (want.seq - audio.seq - first[0]) % 2**16 == 0
        assert (want.frame_index - audio.frame_index - first[1]) % 2**32 == 0
        assert (audio.frames, audio.redundant, audio.flags) == (want.frames, want.redundant,
                                                                want.flags)
        checked += 1
    assert first is not None and first[0] % 4096 == 0 and first[1] % 4096 == 0
    assert checked > 1000 and v1.seq < 65000  # the 16-bit sequence number wrapped


def test_reader_restores_report_numbers() -> None:
    reader = WireReader()
    seqs = []
    for n in range(0, 700, 3):
        rep = CompactLossReport.from_report(LossReport(n & 0xFFFF, 0, 1, 1, 0.0, 0.0))
        _, full = reader.read(rep.to_bytes())
        assert full is not None
        seqs.append(full.report_seq)
    assert seqs == list(range(0, 700, 3))


def test_reader_labels_codec_less_packets_with_the_stream_codec() -> None:
    reader = WireReader(codec_id=1)
    plain = CompactAudioPacket(seq=1, frame_index=1, frames=(b"ab",))
    assert reader.read(plain.to_bytes())[0].codec_id == 1  # type: ignore[union-attr]
    start = CompactAudioPacket(seq=0, frame_index=0, frames=(b"ab",), flags=FLAG_START,
                               codec_id=16)
    assert reader.read(start.to_bytes())[0].codec_id == 16  # type: ignore[union-attr]
    # a START of another codec (stray or forged) does not relabel the stream's packets
    assert reader.read(plain.to_bytes())[0].codec_id == 1  # type: ignore[union-attr]


def test_session_sends_v2_by_default_and_v1_when_asked() -> None:
    codec = get_codec("pcm16")
    for version, first_byte in ((2, 0x80), (1, 0x56)):
        sent: list[bytes] = []
        link = CallbackLink(sent.append)
        tx = (SendSession(codec.info, codec.new_encoder(), link) if version == 2
              else SendSession(codec.info, codec.new_encoder(), link, packet_version=1))
        for _ in range(3):
            tx.send_frame(tx.encode_frame(np.zeros(N, np.float32)))
        assert all(d[0] & 0xC0 == first_byte & 0xC0 for d in sent)
        header = len(sent[1]) - codec.info.bytes_per_frame
        assert header == (4 if version == 2 else 16)
    with pytest.raises(ValueError, match="packet_version"):
        SendSession(codec.info, codec.new_encoder(), CallbackLink(sent.append),
                    packet_version=3)


def _duplex(version_a: int, version_b: int, frames: int = 120, loss: float = 0.1
            ) -> tuple[SendSession, ReceiveSession, SendSession, ReceiveSession, list[int]]:
    """Full-duplex call of pcm16 over a lossy memory link pair; returns the sessions and the
    number of datagrams each end sent."""
    codec = get_codec("pcm16")
    cond = NetworkConditions(loss=loss_model(loss, 1.0), delay_ms=30.0)
    a, b = memory_link_pair(cond, cond, seed=3)
    counts = [0, 0]
    send_a, send_b = a.send, b.send

    def count_a(data: bytes) -> None:
        counts[0] += 1
        send_a(data)

    def count_b(data: bytes) -> None:
        counts[1] += 1
        send_b(data)

    a.send, b.send = count_a, count_b  # type: ignore[method-assign]
    tx_a = SendSession(codec.info, codec.new_encoder(), a, packet_version=version_a)
    tx_b = SendSession(codec.info, codec.new_encoder(), b, packet_version=version_b)
    rx_a = ReceiveSession(codec.info, codec.new_decoder(), a, report_interval=10)
    rx_b = ReceiveSession(codec.info, codec.new_decoder(), b, report_interval=10)
    rx_a.sender, rx_b.sender = tx_a, tx_b
    a.set_receiver(lambda d: rx_a.on_datagram(d, a.clock.now))
    b.set_receiver(lambda d: rx_b.on_datagram(d, b.clock.now))
    rng = np.random.default_rng(0)
    period = codec.info.frame_ms / 1000
    for i in range(frames):
        now = i * period
        a.clock.now = now
        for tx in (tx_a, tx_b):
            tx.send_frame(tx.encode_frame(rng.standard_normal(N).astype(np.float32) * 0.1))
        a.deliver(now)
        b.deliver(now)
        for rx in (rx_a, rx_b):
            played = rx.tick(now)
            if played.source not in (FrameSource.BUFFERING, FrameSource.ENDED):
                rx.decode(played)
    return tx_a, rx_a, tx_b, rx_b, counts


def test_v2_full_duplex_piggybacks_every_report() -> None:
    tx_a, rx_a, tx_b, rx_b, counts = _duplex(2, 2)
    for tx, rx, peer_rx, sent in ((tx_a, rx_a, rx_b, counts[0]), (tx_b, rx_b, rx_a, counts[1])):
        assert rx.reports_sent >= 8
        assert sent == tx.stats.packets  # no datagram besides the audio packets
        assert peer_rx.stats.invalid == 0 and peer_rx.stats.packets_received > 90
    # the reports arrived (the 10 % lossy link loses some) and were applied
    assert tx_a.stats.reports >= 5 and tx_b.stats.reports >= 5


def test_mixed_versions_interoperate() -> None:
    """A v1 sender and a v2 sender talk to each other. The v1 side cannot piggyback, so its
    receiver sends its reports alone, in the version its peer's audio uses (v2 here)."""
    tx_a, rx_a, tx_b, rx_b, counts = _duplex(1, 2, loss=0.0)
    assert rx_a.stats.packets_received > 100 and rx_b.stats.packets_received > 100
    assert rx_a.stats.invalid == 0 and rx_b.stats.invalid == 0
    # a's packets are v1 and cannot carry reports: a's receiver sends them alone ...
    assert counts[0] == tx_a.stats.packets + rx_a.reports_sent
    # ... b piggybacks its reports on its v2 packets
    assert counts[1] == tx_b.stats.packets
    assert tx_a.stats.reports >= 8 and tx_b.stats.reports >= 8


def test_classify_datagram_reads_both_versions() -> None:
    v1 = golden("audio_valid.bin")
    v2 = golden_v2("v2_audio_valid.bin")
    assert isinstance(classify_datagram(v1), AudioPacket)
    got = classify_datagram(v2)
    assert isinstance(got, AudioPacket) and got.seq == 0xABC and got.frame_index == 0x123
    assert classify_datagram(golden_v2("v2_ext_empty.bin")) is None


def test_dtx_sends_a_waiting_report_alone() -> None:
    codec = get_codec("pcm16")
    sent: list[bytes] = []
    tx = SendSession(codec.info, codec.new_encoder(), CallbackLink(sent.append), dtx=True,
                     vad_threshold_dbfs=-50.0)
    silent = tx.encode_frame(np.zeros(N, np.float32))
    tx.send_frame(silent)  # keep-alive frame goes out
    tx.piggyback_report(LossReport(5, 0, 12, 12, 0.0, 0.0))
    tx.send_frame(silent)  # left out by DTX: the report cannot wait for the next packet
    assert len(sent) == 2 and parse_any(sent[1]) == CompactLossReport(5, 12, 12, 0, 0, 0, 0, 0)
    assert tx.stats.packets == 1


def test_end_packet_is_v2_and_flagged() -> None:
    codec = get_codec("pcm16")
    sent: list[bytes] = []
    tx = SendSession(codec.info, codec.new_encoder(), CallbackLink(sent.append))
    tx.send_frame(tx.encode_frame(np.zeros(N, np.float32)))
    tx.send_frame(tx.encode_frame(np.zeros(N, np.float32)), end=True)
    first, last = (parse_compact(d) for d in sent)
    assert isinstance(first, CompactAudioPacket) and isinstance(last, CompactAudioPacket)
    assert first.flags & FLAG_START and first.codec_id == codec.info.codec_id
    assert last.flags & FLAG_END and last.codec_id is None and last.frame_index == 1
