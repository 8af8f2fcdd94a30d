"""Decode on arrival, play on demand: PlayoutQueue, ReceiveSession.poll, the adaptive playout
delay (start low, grow at once, shrink in silence), FrameTrace, DeadlineWarner, --threads."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from tests.unit.test_jitter import T, packet, payload
from voip_codec.codecs.registry import get_codec
from voip_codec.threads import thread_count
from voip_codec.transport.jitter import FrameSource, JitterBuffer, JitterConfig, PlayoutFrame
from voip_codec.transport.playout import PlayoutQueue
from voip_codec.transport.session import TRIM_HOLDOFF_FRAMES, ReceiveSession
from voip_codec.transport.trace import STAGES, DeadlineWarner, FrameTrace
from voip_codec.wire.packet import AudioPacket

N = 1280  # pcm16: 80 ms at 16 kHz


# ----------------------------------------------------------------------------- PlayoutQueue
def test_queue_serves_small_reads_and_reports_frame_starts() -> None:
    q = PlayoutQueue(16000)
    q.push(np.full(1280, 0.5, np.float32), index=0)
    q.push(np.full(1280, 0.25, np.float32), index=1, first_sample_at=10)
    assert q.queued == 2560 and q.queued_seconds == pytest.approx(0.16)
    reads = [q.read(320) for _ in range(8)]
    assert all(r.missing == 0 for r in reads)
    assert reads[0].starts == [(0, 0)]
    # frame 1 starts 10 samples into its push: sample 1290 = read 4, offset 10
    assert reads[4].starts == [(1, 10)]
    assert sum(len(r.starts) for r in reads) == 2
    assert float(reads[3].pcm[-1]) == 0.5 and float(reads[4].pcm[0]) == 0.25
    assert q.queued == 0 and q.underrun_samples == 0


def test_queue_zero_fills_when_dry_and_counts_underruns_after_start() -> None:
    q = PlayoutQueue(16000)
    first = q.read(320)
    assert first.missing == 320 and not first.pcm.any()
    assert q.underrun_samples == 0  # nothing was ever pushed: silence, not an underrun
    q.push(np.ones(100, np.float32), index=0)
    r = q.read(320)
    assert r.missing == 220 and r.pcm[:100].all() and not r.pcm[100:].any()
    assert q.underrun_samples == 220


def test_queue_trims_only_quiet_audio() -> None:
    q = PlayoutQueue(16000)
    q.push(np.full(320, 1e-4, np.float32), index=0)
    q.push(np.full(320, 0.5, np.float32), index=1)
    assert q.trim(320, level=1e-3) == 320  # quiet: dropped whole
    assert q.trim(320, level=1e-3) == 0  # speech: kept
    assert q.trimmed_samples == 320 and q.queued == 320
    assert q.read(320).starts == [(1, 0)]  # a trimmed frame start is not reported as heard


# ------------------------------------------------------------------- ReceiveSession.poll
def session(jitter: JitterConfig | None = None) -> ReceiveSession:
    codec = get_codec("pcm16")
    return ReceiveSession(codec.info, codec.new_decoder(), None, jitter=jitter,
                          trace=FrameTrace())


def pcm16_packet(index: int, k: int = 0, value: float = 0.25, flags: int = 0) -> bytes:
    frame = (np.full(N, value) * 32768).astype(">i2").tobytes()
    return AudioPacket(codec_id=get_codec("pcm16").info.codec_id, seq=index & 0xFFFF,
                       frame_index=index, frames=(frame,), redundant=(frame,) * min(k, index),
                       flags=flags).to_bytes()


def test_a_frame_is_decoded_the_moment_it_arrives() -> None:
    rx = session()
    assert rx.poll(0.0) is None  # nothing yet
    rx.on_datagram(pcm16_packet(0), 0.05)
    frame = rx.poll(0.05)  # start low: no waiting for an 80 ms tick or a playout delay
    assert frame is not None and frame.index == 0 and frame.source is FrameSource.PRIMARY
    rx.output.push(rx.decode(frame), frame.index)
    assert rx.poll(0.06) is None  # frame 1 is not here and the queue is full: no decision
    rx.on_datagram(pcm16_packet(1), 0.13)
    frame = rx.poll(0.13)
    assert frame is not None and frame.index == 1
    assert rx.trace is not None
    assert rx.trace.get(1)["arrived"] == rx.trace.get(1)["decode"] == 0.13


def test_a_missing_frame_is_decided_only_when_the_output_runs_dry() -> None:
    rx = session()
    for i in range(12):  # a clean stream, one frame every 80 ms, decoded on arrival
        rx.on_datagram(pcm16_packet(i), i * T)
        frame = rx.poll(i * T)
        assert frame is not None
        rx.output.push(rx.decode(frame), frame.index)
        rx.output.read(N)
    # frame 12 is lost; the output is empty at 12 T: the frame is given up (no redundancy)
    now = 12 * T + 0.001
    assert rx.poll(now) is None
    frame = rx.poll(now, urgent=True)
    assert frame is not None and frame.source is FrameSource.CONCEALED and frame.index == 12
    assert rx.stats.concealed == 1


def test_first_loss_with_redundant_copies_grows_the_delay_instead_of_losing_the_frame() -> None:
    rx = session()
    for i in range(12):
        rx.on_datagram(pcm16_packet(i, k=1), i * T)
        frame = rx.poll(i * T)
        assert frame is not None
        rx.output.push(rx.decode(frame), frame.index)
        rx.output.read(N)
    assert rx.stats.target_delay_ms < 10  # no loss seen: no wait for copies
    frame = rx.poll(12 * T + 0.001, urgent=True)  # frame 12 lost, but copies are on the way
    assert frame is not None and frame.source is FrameSource.STRETCH
    rx.output.push(rx.decode(frame), None)
    rx.on_datagram(pcm16_packet(13, k=1), 13 * T)  # carries the copy of 12
    frame = rx.poll(13 * T)
    assert frame is not None and frame.index == 12 and frame.source is FrameSource.REDUNDANT
    assert rx.stats.target_delay_ms >= 80  # from now on the delay covers one packet interval


def test_target_starts_low_and_a_late_frame_raises_it_at_once() -> None:
    jb = JitterBuffer(JitterConfig())
    assert jb.stats.target_delay_ms == 0
    for i in range(20):
        jb.push(packet(i), i * T + 0.01)
        assert jb.tick(i * T + 0.01).index == i
    assert jb.stats.target_delay_ms < 1
    assert jb.tick(20 * T + 0.011).source is FrameSource.CONCEALED  # frame 20 is not here
    jb.push(packet(20), 20 * T + 0.045)  # 35 ms late
    assert jb.stats.late == 1
    assert jb.stats.target_delay_ms == pytest.approx(35.0, abs=0.5)
    # the next frame that late is waited for (a stretch), not lost
    assert jb.tick(21 * T + 0.011).source is FrameSource.STRETCH
    jb.push(packet(21), 21 * T + 0.045)
    played = jb.tick(21 * T + 0.05)
    assert played.index == 21 and played.payload == payload(21)


def queue_burst(value: float) -> ReceiveSession:
    """Four frames arrive at once after a stall (at 3 T): all decoded on arrival."""
    rx = session()
    for i in range(4):
        rx.on_datagram(pcm16_packet(i, value=value), 3 * T)
    frame = rx.poll(3 * T)
    while frame is not None:
        rx.output.push(rx.decode(frame), frame.index)
        frame = rx.poll(3 * T)
    return rx


def test_delay_shrinks_in_silence_without_cutting_sound() -> None:
    rx = queue_burst(0.0)
    assert rx.output.queued == 4 * N
    assert rx.stats.playout_delay_ms == pytest.approx(240.0)  # the last frame waits 240 ms
    assert rx.trim_output(320) == 320  # 20 ms of silence dropped
    assert rx.stats.playout_delay_ms == pytest.approx(220.0)
    loud = queue_burst(0.5)
    assert loud.trim_output(320) == 0  # speech is never cut
    assert loud.output.queued == 4 * N


def test_a_stretch_is_traced_against_the_frame_it_waited_for() -> None:
    rx = session()
    rx.on_datagram(pcm16_packet(0, k=1), 0.0)
    rx.on_datagram(pcm16_packet(1, k=1), T)
    while (frame := rx.poll(T)) is not None:
        rx.output.push(rx.decode(frame), frame.index)
    rx.output.read(2 * N)  # both played
    # frame 2 is lost; frame 3's packet carries its copy one packet later: the receiver waits
    frame = rx.poll(2 * T + 0.07, urgent=True)
    assert frame is not None and frame.source is FrameSource.STRETCH
    assert rx.trace is not None and rx.trace.stretches == {2: 1}


def test_no_shrink_right_after_the_delay_had_to_grow() -> None:
    rx = queue_burst(0.0)
    rx._last_stretch = rx.frames_played  # as if the last tick had been a stretch
    assert rx.trim_output(320) == 0
    rx._last_stretch = rx.frames_played - TRIM_HOLDOFF_FRAMES
    assert rx.trim_output(320) == 320


# ------------------------------------------------------------------ trace, deadline, threads
def test_frame_trace_keeps_the_first_time_per_stage() -> None:
    tr = FrameTrace(max_frames=2)
    for k, stage in enumerate(STAGES):
        tr.mark(stage, 5, float(k))
    tr.mark("sent", 5, 99.0)  # a later repeat (a redundant copy) does not move it
    assert tr.get(5)["sent"] == 2.0 and tr.complete_frames() == [5]
    tr.mark("arrived", 6, 1.0)
    tr.mark("arrived", 7, 1.0)
    assert tr.get(5) == {} and tr.complete_frames() == []  # bounded: oldest forgotten
    with pytest.raises(ValueError, match="unknown stage 'heard'"):
        tr.mark("heard", 1, 0.0)


def test_deadline_warning_is_one_line_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    warner = DeadlineWarner(logging.getLogger("test.deadline"), "encoding a frame",
                            interval_s=10.0)
    with caplog.at_level(logging.WARNING):
        assert not warner.check(0.05, 0.08, now=0.0)
        assert warner.check(0.12, 0.08, now=1.0)
        assert warner.check(0.15, 0.08, now=2.0)  # counted, not printed
        assert warner.check(0.20, 0.08, now=12.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "missed its real-time deadline 1 time(s): 120 ms for a 80 ms frame" in lines[0]
    assert "2 time(s)" in lines[1] and "--threads" in lines[1]
    assert warner.missed == 3


def test_threads_option_rejects_bad_counts() -> None:
    import argparse

    assert thread_count("3") == 3
    for bad, message in (("0", ">= 1"), ("two", "whole number")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            thread_count(bad)


def test_applying_threads_does_not_load_torch_for_codecs_without_it() -> None:
    code = ("import sys; from voip_codec.threads import apply_threads; apply_threads(1); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_skipped_silent_frames_are_decoded_unheard() -> None:
    """A stateful decoder sees every frame the sender encoded, also those dropped to shrink the
    delay; only the due frame's audio comes back."""
    seen: list[bytes | None] = []

    class Recording:
        def decode(self, payload: bytes | None) -> np.ndarray:
            seen.append(payload)
            return np.zeros(N, np.float32)

        def reset(self) -> None:
            pass

    codec = get_codec("pcm16")
    rx = ReceiveSession(codec.info, Recording(), None)  # type: ignore[arg-type]
    out = rx.decode(PlayoutFrame(b"c", FrameSource.PRIMARY, 7, 2, (b"a", b"b")))
    assert seen == [b"a", b"b", b"c"] and out.shape == (N,)
