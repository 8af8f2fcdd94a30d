"""Jitter buffer: ordering, duplicates, late frames, wrap-around, redundancy, adaptive delay."""

from __future__ import annotations

import pytest

from voip_codec.transport.jitter import FrameSource, JitterBuffer, JitterConfig, unwrap
from voip_codec.wire.packet import FLAG_SILENCE, AudioPacket, LossReport

T = 0.08


def payload(index: int) -> bytes:
    return (index & 0xFFFFFFFF).to_bytes(4, "big")


def packet(index: int, seq: int | None = None, k: int = 0, flags: int = 0) -> bytes:
    """One-frame packet for frame ``index`` with ``k`` redundant copies of the previous ones."""
    return AudioPacket(codec_id=16, seq=(index if seq is None else seq) & 0xFFFF,
                       frame_index=index & 0xFFFFFFFF, frames=(payload(index),),
                       redundant=tuple(payload(index - k + j) for j in range(min(k, index))),
                       flags=flags).to_bytes()


def fixed(delay_ms: float = 160.0, **kw: object) -> JitterConfig:
    return JitterConfig(initial_delay_ms=delay_ms, min_delay_ms=delay_ms, max_delay_ms=delay_ms,
                        **kw)  # type: ignore[arg-type]


def run(buffer: JitterBuffer, arrivals: list[tuple[float, bytes]], ticks: int,
        offset: float = 0.0) -> list:
    """Push arrivals up to each tick time, tick; returns the PlayoutFrames."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    out = []
    i = 0
    for k in range(ticks):
        now = k * T + offset
        while i < len(arrivals) and arrivals[i][0] <= now + 1e-9:
            buffer.push(arrivals[i][1], arrivals[i][0])
            i += 1
        out.append(buffer.tick(now))
    return out


def played(frames: list) -> list[int | None]:
    return [f.index for f in frames if f.source is not FrameSource.BUFFERING]


def test_unwrap() -> None:
    assert unwrap(2, 65534, 16) == 65538
    assert unwrap(65535, 1, 16) == -1
    assert unwrap(5, 2**32 + 3, 32) == 2**32 + 5
    assert unwrap(100, 100, 16) == 100


def test_in_order_stream_starts_after_the_playout_delay() -> None:
    jb = JitterBuffer(fixed(160))
    arrivals = [((i + 1) * T + 0.03, packet(i)) for i in range(20)]
    out = run(jb, arrivals, 24)
    first = next(k for k, f in enumerate(out) if f.source is not FrameSource.BUFFERING)
    # frame 0 arrives at 0.11 s; a 160 ms delay is reached at the tick of 0.32 s
    assert first == 4
    assert played(out) == list(range(20))
    assert all(f.payload == payload(f.index) for f in out[first:])
    assert jb.stats.played == 20 and jb.stats.concealed == 0
    assert jb.stats.current_delay_ms == pytest.approx(210.0)
    assert jb.stats.target_delay_ms == pytest.approx(160.0)


def test_reordering_is_undone() -> None:
    jb = JitterBuffer(fixed(240))
    order = [0, 2, 1, 3, 5, 4, 7, 6, 8, 9]
    arrivals = [((pos + 1) * T + 0.01, packet(i)) for pos, i in enumerate(order)]
    out = run(jb, arrivals, 16)
    playing = [f for f in out if f.source is not FrameSource.BUFFERING][:10]
    assert [f.index for f in playing] == list(range(10))
    assert all(f.source is FrameSource.PRIMARY for f in playing)
    assert jb.stats.late == 0


def test_duplicates_are_dropped_and_counted() -> None:
    jb = JitterBuffer(fixed(160))
    arrivals = [((i + 1) * T, packet(i)) for i in range(10)]
    arrivals += [((i + 1) * T + 0.001, packet(i)) for i in (3, 4, 4)]
    out = run(jb, arrivals, 14)
    assert played(out)[:10] == list(range(10))
    assert jb.stats.duplicate == 3
    assert jb.stats.packets_received == 10


def test_late_packet_is_concealed_and_counted() -> None:
    jb = JitterBuffer(fixed(160))
    arrivals = [((i + 1) * T, packet(i)) for i in range(12) if i != 5]
    arrivals.append((2.0, packet(5)))  # far too late
    out = run(jb, arrivals, 30)
    sources = {f.index: f.source for f in out if f.index is not None}
    assert sources[5] is FrameSource.CONCEALED
    assert sources[4] is sources[6] is FrameSource.PRIMARY
    assert jb.stats.late == 1 and jb.stats.lost >= 1
    assert jb.stats.concealed >= 1


def test_sequence_and_frame_index_wrap_around() -> None:
    jb = JitterBuffer(fixed(160))
    start = 2**32 - 5
    arrivals = [((i + 1) * T, packet(start + i, seq=65533 + i)) for i in range(12)]
    out = run(jb, arrivals, 16)
    idx = [i for i in played(out) if i is not None][:12]
    assert idx == list(range(start, start + 12))  # unwrapped: keeps increasing
    assert [f.payload for f in out if f.index is not None][:12] == [payload(start + i)
                                                                for i in range(12)]
    assert all(f.source is FrameSource.PRIMARY for f in out if f.index is not None
               and f.index < start + 12)
    assert jb.stats.duplicate == 0 and jb.stats.late == 0


def test_recovery_from_redundant_copies() -> None:
    jb = JitterBuffer(fixed(240))
    lost = {4, 5, 9}
    arrivals = [((i + 1) * T, packet(i, k=2)) for i in range(16) if i not in lost]
    out = run(jb, arrivals, 22)
    by_index = {f.index: f for f in out if f.index is not None}
    for i in lost:
        assert by_index[i].source is FrameSource.REDUNDANT
        assert by_index[i].payload == payload(i)
    assert jb.stats.recovered_from_redundancy == 3
    assert all(by_index[i].payload == payload(i) for i in range(16))


def test_burst_longer_than_redundancy_is_concealed_then_resyncs() -> None:
    jb = JitterBuffer(fixed(240))
    lost = {5, 6, 7, 8}
    arrivals = [((i + 1) * T, packet(i, k=2)) for i in range(20) if i not in lost]
    out = run(jb, arrivals, 26)
    by_index = {f.index: f.source for f in out if f.index is not None}
    assert by_index[5] is by_index[6] is FrameSource.CONCEALED
    assert by_index[7] is by_index[8] is FrameSource.REDUNDANT
    assert all(by_index[i] is FrameSource.PRIMARY for i in range(9, 20))


def test_bad_and_foreign_packets_are_counted_not_raised() -> None:
    jb = JitterBuffer(JitterConfig(codec_id=16, frame_bytes=4))
    assert jb.push(b"garbage", 0.0) is None
    assert jb.push(LossReport(0, 0, 0, 0, 0.0, 0.0).to_bytes(), 0.0) is None
    other = AudioPacket(codec_id=17, seq=0, frame_index=0, frames=(b"abcd",)).to_bytes()
    assert jb.push(other, 0.0) is None
    wrong_size = AudioPacket(codec_id=16, seq=1, frame_index=0, frames=(b"abc",)).to_bytes()
    assert jb.push(wrong_size, 0.0) is None
    assert jb.stats.invalid == 4 and jb.stats.packets_received == 0
    assert jb.tick(0.0).source is FrameSource.BUFFERING


def test_playout_delay_adapts_to_jitter() -> None:
    cfg = JitterConfig(initial_delay_ms=80, min_delay_ms=80, max_delay_ms=600, history=100,
                       warmup_frames=5)
    jb = JitterBuffer(cfg)
    arrivals = []
    for i in range(300):
        base = (i + 1) * T + 0.02
        extra = 0.0 if i < 100 else (0.25 if i % 5 == 0 else 0.0)  # jitter from frame 100 on
        arrivals.append((base + extra, packet(i)))
    out = run(jb, arrivals, 300)
    delays = jb.stats.delay_samples_ms
    assert max(delays[:90]) < 150  # calm network: short delay
    assert jb.stats.target_delay_ms == pytest.approx(250.0, abs=1.0)  # 95th pct of delays
    assert 250 <= jb.stats.current_delay_ms <= 600
    assert jb.stats.stretched >= 2  # grown while frames were missing
    # once adapted, the delayed frames are no longer late
    late_frames = [f.index for f in out[-60:] if f.source is FrameSource.CONCEALED]
    assert late_frames == []


def test_delay_shrinks_only_on_silence() -> None:
    cfg = JitterConfig(initial_delay_ms=400, min_delay_ms=80, max_delay_ms=600, history=20,
                       warmup_frames=5)
    jb = JitterBuffer(cfg)
    arrivals = [((i + 1) * T, packet(i, flags=FLAG_SILENCE if 30 <= i < 40 else 0))
                for i in range(60)]
    out = run(jb, arrivals, 70)
    skipped_at = [f.index for f in out if f.skipped]
    assert jb.stats.skipped >= 3
    assert all(31 <= i <= 40 for i in skipped_at)  # the frame after the dropped silent ones
    # the dropped frames' payloads come with the next frame, in order (a stateful decoder must
    # still see them): with it, every frame of the stream reaches the decoder exactly once
    handed = [p for f in out for p in (*f.skipped_payloads, f.payload) if p is not None]
    assert handed == [payload(i) for i in range(60)]
    concealed = [f.index for f in out if f.source is FrameSource.CONCEALED]
    assert all(i >= 60 for i in concealed)  # only after the stream ended
    assert jb.stats.current_delay_ms < 200


def test_delay_is_bounded_by_max() -> None:
    cfg = JitterConfig(initial_delay_ms=80, min_delay_ms=80, max_delay_ms=200, warmup_frames=5)
    jb = JitterBuffer(cfg)
    arrivals = [((i + 1) * T + (0.5 if i % 4 == 0 else 0.0), packet(i)) for i in range(80)]
    run(jb, arrivals, 90)
    assert jb.stats.target_delay_ms == 200
    assert max(jb.stats.delay_samples_ms) <= 200 + T * 1000 + 1e-6


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="min_delay_ms"):
        JitterConfig(min_delay_ms=300, max_delay_ms=200)
    with pytest.raises(ValueError, match="percentile"):
        JitterConfig(percentile=0)


def test_delay_history_is_bounded_in_long_calls() -> None:
    # an hour-long call must not grow the stats without bound
    from voip_codec.transport.jitter import DELAY_HISTORY

    jb = JitterBuffer(JitterConfig())
    n = 3 * DELAY_HISTORY
    arrivals = [((i + 1) * T + 0.02, packet(i)) for i in range(n)]
    run(jb, arrivals, n)
    samples = jb.stats.delay_samples_ms
    assert DELAY_HISTORY <= len(samples) <= 2 * DELAY_HISTORY
    assert jb.stats.played > 2 * DELAY_HISTORY  # ...while the call itself went on


def test_end_of_stream_stops_playout_without_concealment() -> None:
    from voip_codec.wire.packet import FLAG_END

    jb = JitterBuffer(JitterConfig(initial_delay_ms=160))
    arrivals = [((i + 1) * T + 0.02, packet(i, flags=FLAG_END if i == 9 else 0))
                for i in range(10)]
    out = run(jb, arrivals, 40)
    played = [f.index for f in out if f.source is FrameSource.PRIMARY]
    assert played == list(range(10))  # every frame up to the end is played...
    assert jb.ended
    # ...then the buffer reports the end instead of concealing the silence after the hang-up
    tail = out[out.index(next(f for f in out if f.index == 9)) + 1:]
    assert tail and all(f.source is FrameSource.ENDED and f.payload is None for f in tail)
    assert jb.stats.concealed == 0 and jb.stats.lost == 0


def test_end_flag_waits_for_missing_frames_and_restart_resumes() -> None:
    from voip_codec.wire.packet import FLAG_END, FLAG_START

    jb = JitterBuffer(JitterConfig(initial_delay_ms=160))
    # frame 7 is lost: it is concealed, the end still comes after frame 9
    arrivals = [((i + 1) * T + 0.02, packet(i, flags=FLAG_END if i == 9 else 0))
                for i in range(10) if i != 7]
    out = run(jb, arrivals, 30)
    assert [f.index for f in out if f.source is FrameSource.CONCEALED] == [7]
    assert jb.ended and jb.stats.concealed == 1
    # a new stream (START) after the end plays again
    t0 = 31 * T
    again = [(t0 + (i + 1) * T + 0.02, packet(i, seq=100 + i, flags=FLAG_START if i == 0 else 0))
             for i in range(5)]
    out2 = run(jb, again, 15, offset=t0)
    assert not jb.ended
    assert [f.index for f in out2 if f.source is FrameSource.PRIMARY] == list(range(5))


def test_push_reads_raw_v2_datagrams_across_the_12_bit_wrap() -> None:
    from voip_codec.wire.compact import to_compact
    from voip_codec.wire.packet import parse_packet

    jb = JitterBuffer(JitterConfig(codec_id=16))
    first = 4090  # the v2 counters (12 bits) wrap after 4095
    for i in range(first, first + 12):
        v1 = parse_packet(packet(i, k=1 if i > first else 0))
        assert isinstance(v1, AudioPacket)
        got = jb.push(to_compact(v1).to_bytes(), (i - first) * T)
        assert got is not None and got.frame_index % 4096 == i % 4096
    # restored to one unbroken run: every frame plays in order, no resync, nothing invalid
    out = [jb.tick((k + 1) * T) for k in range(12)]
    assert [f.payload for f in out] == [payload(i) for i in range(first, first + 12)]
    assert jb.stats.invalid == 0 and jb.stats.resyncs == 0
    assert jb.push(bytes([0xA0]) + bytes(8), 13 * T) is None  # a report is not audio
    assert jb.stats.invalid == 1


def test_a_stalled_sender_is_resynced_not_dropped_for_the_rest_of_the_call() -> None:
    """The sender stops for 3 s (a blocked capture) and then goes on from where it was, at the
    real-time pace: every frame it sends afterwards is behind playout. Before, each was dropped
    as late for the rest of the call; now the third late packet in a row restarts the timeline
    and the stream plays again."""
    jb = JitterBuffer(JitterConfig(max_delay_ms=800))
    stall = 3.0
    arrivals = [(i * T + 0.02, packet(i)) for i in range(20)]
    arrivals += [(i * T + 0.02 + stall, packet(i)) for i in range(20, 80)]
    out = run(jb, arrivals, 120)
    assert jb.stats.resyncs == 1
    assert jb.stats.late == 2  # the two packets before the resync
    after = [i for i in played(out) if i is not None and i >= 22]
    assert after[:5] == [22, 23, 24, 25, 26] and 79 in after
    # packets that are late now and then (jitter) do not resync
    jb2 = JitterBuffer(fixed(80))
    jittery = [(i * T + (0.3 if i % 10 == 5 else 0.01), packet(i)) for i in range(60)]
    run(jb2, jittery, 70)
    assert jb2.stats.late > 0 and jb2.stats.resyncs == 0
