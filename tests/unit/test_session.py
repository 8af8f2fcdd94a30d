"""SendSession / ReceiveSession over memory links: loss, reordering, duplicates, DTX, garbage.
(The aiortc sender and receiver track running through the same pair: tests/integration.)"""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.test_transport_pipeline import DropSet
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import FrameSource, JitterConfig, PlayoutFrame
from voip_codec.transport.link import CallbackLink, Link, MemoryLink, memory_link_pair
from voip_codec.transport.netsim import NetworkConditions
from voip_codec.transport.packetizer import Packetizer
from voip_codec.transport.pipeline import simulate
from voip_codec.transport.redundancy import RedundancyController
from voip_codec.transport.session import EncodedFrame, ReceiveSession, SendSession
from voip_codec.wire.compact import WireReader
from voip_codec.wire.packet import FLAG_END, FLAG_START, AudioPacket, LossReport, parse_packet

PERIOD = 0.08
N = 1280  # pcm16: 80 ms at 16 kHz
FIXED_160 = JitterConfig(initial_delay_ms=160, min_delay_ms=160, max_delay_ms=160)


def noise(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(frames * N)).clip(-0.99, 0.99).astype(np.float32)


def pcm16_frame(pcm: np.ndarray) -> np.ndarray:
    return np.round(pcm * 32768).clip(-32768, 32767) / 32768


def run_call(pcm: np.ndarray, forward: NetworkConditions, *, redundancy: int = 0,
             controller: RedundancyController | None = None, jitter: JitterConfig = FIXED_160,
             ticks: int | None = None, codec_name: str = "pcm16"
             ) -> tuple[list[tuple[PlayoutFrame, np.ndarray | None]], SendSession,
                        ReceiveSession, MemoryLink]:
    """One-way call of ``pcm`` (pcm16 unless ``codec_name``; 16 kHz) over a memory link pair;
    one tick per frame period."""
    codec = get_codec(codec_name)
    n = codec.info.input_frame_samples
    a, b = memory_link_pair(forward, NetworkConditions(delay_ms=20), seed=7)
    tx = SendSession(codec.info, codec.new_encoder(), a, redundancy=redundancy,
                     controller=controller, vad_threshold_dbfs=-50)
    rx = ReceiveSession(codec.info, codec.new_decoder(), b, jitter=jitter, report_interval=6)
    a.set_receiver(tx.on_datagram)
    b.set_receiver(lambda data: rx.on_datagram(data, b.clock.now))
    frames = len(pcm) // n
    out: list[tuple[PlayoutFrame, np.ndarray | None]] = []
    for k in range(ticks if ticks is not None else frames + 10):
        now = (k + 1) * PERIOD
        a.deliver(now)
        if k < frames:
            tx.send_frame(tx.encode_frame(pcm[k * n:(k + 1) * n]), end=k == frames - 1)
        b.deliver(now)
        played = rx.tick(now)
        pcm_out = None if played.source in (FrameSource.BUFFERING, FrameSource.ENDED) \
            else rx.decode(played)
        out.append((played, pcm_out))
    return out, tx, rx, a


def test_sessions_over_a_lossy_reordering_duplicating_link() -> None:
    pcm = noise(60)
    net = NetworkConditions(delay_ms=30, jitter_ms=15, reorder_prob=0.1, reorder_delay_ms=50,
                            duplicate_prob=0.1, loss=DropSet({5, 6, 20, 33, 34, 47}))
    out, tx, rx, a = run_call(pcm, net, redundancy=2)
    stats = rx.stats
    assert a.path is not None and a.path.stats.lost == 6
    assert a.path.stats.duplicated > 0 and a.path.stats.reordered > 0
    assert stats.duplicate == a.path.stats.duplicated
    assert stats.invalid == 0 and stats.concealed == 0  # K=2 bridged every loss
    assert stats.recovered_from_redundancy == 6
    assert stats.ended and rx.ended and rx.last_index_played == 59
    # every frame is played once, in order, and is exactly the input frame
    played = [(f.index, x) for f, x in out if x is not None and f.index is not None]
    assert [i for i, _ in played] == list(range(60))
    for i, x in played:
        np.testing.assert_array_equal(x, pcm16_frame(pcm[i * N:(i + 1) * N]))
    # after the last frame the receiver plays silence, not concealment
    assert out[-1][0].source is FrameSource.ENDED
    # loss reports came back over the same link pair and were applied by the sender
    assert rx.reports_sent == 60 // 6 and tx.stats.reports == rx.reports_sent
    assert tx.stats.invalid == 0 and tx.stats.frames == 60 and tx.stats.packets == 60


def test_adaptive_k_follows_reports_through_the_link() -> None:
    pcm = noise(80, seed=1)
    drop = set(range(0, 80, 4))  # 25 % loss, single losses
    out, tx, rx, _ = run_call(pcm, NetworkConditions(loss=DropSet(drop)),
                              controller=RedundancyController(initial=0))
    assert tx.controller is not None and tx.controller.history[0] == 3
    assert tx.stats.redundancy == tx.packetizer.redundancy == 3
    assert rx.stats.recovered_from_redundancy > 0
    # before the first report K was 0: those losses were concealed; output never stalls
    assert rx.stats.concealed > 0
    assert len(out) == 90 and all(x is not None for f, x in out
                                  if f.source not in (FrameSource.BUFFERING,
                                                      FrameSource.ENDED))


def test_garbage_is_counted_never_raised() -> None:
    codec = get_codec("pcm16")
    a, b = memory_link_pair()
    rx = ReceiveSession(codec.info, codec.new_decoder(), b)
    tx = SendSession(codec.info, codec.new_encoder(), a)
    other_codec = AudioPacket(codec_id=16, seq=0, frame_index=0, frames=(b"\0" * 7,))
    report = LossReport(0, 0, 10, 9, 0.1, 1.0)
    for junk in (b"", b"garbage", b"VC\x01\x07", b"VC\x01\x01" + b"\0" * 3, "text",
                 other_codec.to_bytes()):
        rx.on_datagram(junk, 0.0)
        tx.on_datagram(junk)
    assert rx.stats.invalid == 6 and rx.stats.packets_received == 0
    rx.on_datagram(report.to_bytes(), 0.0)  # no paired sender: ignored, not garbage
    assert rx.stats.invalid == 6
    rx.sender = tx
    rx.on_datagram(report.to_bytes(), 0.0)
    assert tx.stats.reports == 1 and tx.stats.invalid == 6


def test_end_of_stream_and_filler_frame() -> None:
    codec = get_codec("pcm16")
    sent: list[bytes] = []
    link = CallbackLink(sent.append)
    tx = SendSession(codec.info, codec.new_encoder(), link, frames_per_packet=2)
    assert not tx.end_needs_frame  # nothing sent yet
    tx.send_frame(tx.encode_frame(np.zeros(N, dtype=np.float32)))
    tx.finish()  # one frame pending: it carries the end
    reader = WireReader()
    first, _ = reader.read(sent[0])  # version 2, the default
    assert len(sent) == 1 and isinstance(first, AudioPacket) and first.flags & FLAG_END
    assert tx.ended
    with pytest.raises(ValueError, match="ended"):
        tx.send_frame(tx.encode_frame(np.zeros(N, dtype=np.float32)))

    sent.clear()
    tx = SendSession(codec.info, codec.new_encoder(), link)
    tx.send_frame(tx.encode_frame(noise(1)))
    assert tx.end_needs_frame
    tx.finish(tx.encode_frame(np.zeros(N, dtype=np.float32)))
    reader = WireReader()
    last = [reader.read(d)[0] for d in sent][-1]
    assert isinstance(last, AudioPacket) and last.flags & FLAG_END and last.frame_index == 1
    assert tx.stats.frames == 1 and tx.stats.packets == 2


def test_links_enforce_mtu_and_never_raise_on_send_failure() -> None:
    codec = get_codec("pcm16")  # 2560-byte frames
    small, _ = memory_link_pair(mtu=6000)
    with pytest.raises(ValueError, match="MTU 6000"):
        SendSession(codec.info, codec.new_encoder(), small, frames_per_packet=2, redundancy=1)
    with pytest.raises(ValueError, match="exceeds the link MTU"):
        small.send(b"\0" * 6001)

    def broken(data: bytes) -> None:
        raise ConnectionError("channel closed")

    link = CallbackLink(broken)
    tx = SendSession(codec.info, codec.new_encoder(), link)
    tx.send_frame(EncodedFrame(b"\0" * codec.info.bytes_per_frame, silent=True))
    assert link.dropped == 1 and tx.stats.packets == 1
    for end in memory_link_pair():
        assert isinstance(end, Link)
    assert isinstance(link, Link)


def test_packetizer_skip_sends_no_stale_copies_across_a_gap() -> None:
    p = Packetizer(codec_id=16, frames_per_packet=2, redundancy=2)
    assert p.push(b"a" * 7) is None
    pending = p.skip()  # the pending frame goes out first; index 1 is skipped
    assert pending is not None
    assert parse_packet(pending) == AudioPacket(16, 0, 0, (b"a" * 7,), flags=FLAG_START)
    p.push(b"c" * 7)
    packet = parse_packet(p.push(b"d" * 7) or b"")
    assert isinstance(packet, AudioPacket)
    assert packet.frame_index == 2 and packet.redundant == ()  # "a" is not frame 1's copy


def speech_with_pause(speech: int, pause: int) -> np.ndarray:
    return np.concatenate([noise(speech, 1), np.zeros(pause * N, np.float32),
                           noise(speech, 2)])


def test_simulate_with_dtx() -> None:
    pcm = speech_with_pause(10, 30)[:-300]  # last frame partial: output length still exact
    codec = get_codec("pcm16")
    plain = simulate(pcm, codec, redundancy=1, jitter=FIXED_160)
    res = simulate(pcm, codec, redundancy=1, jitter=FIXED_160, dtx=True, keepalive_frames=12)
    assert res.audio.shape == plain.audio.shape == pcm.shape
    # 30 silent frames: the 1st, 13th and 25th are sent (keep-alive), 27 are left out
    assert res.dtx_frames == 27 and plain.dtx_frames == 0
    assert res.packets_sent == plain.packets_sent - 27 == 50 - 27
    # the gaps are concealed like lost frames (the jitter buffer cannot tell them apart) ...
    gap = res.sources[10:40]
    assert gap.count(FrameSource.PRIMARY) == 3
    assert gap.count(FrameSource.CONCEALED) == 27 == res.concealed_frames
    # ... and sound like the silence they replace; speech after the pause is sample-exact
    assert np.all(res.audio[10 * N:40 * N] == 0)
    np.testing.assert_allclose(res.audio[41 * N:], pcm[41 * N:], atol=1 / 32768)
    assert plain.concealed_frames == 0


def test_dtx_needs_a_vad_threshold_and_a_keepalive_interval() -> None:
    codec = get_codec("pcm16")
    a, _ = memory_link_pair()
    with pytest.raises(ValueError, match="vad_threshold_dbfs"):
        SendSession(codec.info, codec.new_encoder(), a, dtx=True)
    with pytest.raises(ValueError, match="keepalive_frames"):
        SendSession(codec.info, codec.new_encoder(), a, dtx=True, vad_threshold_dbfs=-50,
                    keepalive_frames=0)
    # keepalive_frames=1 sends every silent frame
    tx = SendSession(codec.info, codec.new_encoder(), a, dtx=True, vad_threshold_dbfs=-50,
                     keepalive_frames=1)
    for _ in range(3):
        tx.send_frame(tx.encode_frame(np.zeros(N, dtype=np.float32)))
    assert tx.stats.dtx_frames == 0 and tx.stats.packets == 3



def test_redundancy_history_is_bounded() -> None:
    from voip_codec.transport.redundancy import HISTORY_REPORTS, RedundancyController
    from voip_codec.wire.packet import LossReport

    ctl = RedundancyController()
    for n in range(HISTORY_REPORTS + 10):
        ctl.on_report(LossReport(report_seq=n & 0xFFFF, highest_seq=0, expected=10, received=10,
                                 loss_rate=0.0, mean_burst=0.0, residual_loss=0.0, jitter_ms=0,
                                 playout_delay_ms=0))
    assert len(ctl.history) == HISTORY_REPORTS and ctl.k == 0


def test_duplicates_under_loss_keep_the_datagram_loss_rate_and_cut_concealment() -> None:
    """At 10 % random loss a sender whose controller asks for duplicates sends every packet
    twice; the receiver keeps the first datagram of each, its reports still give the loss per
    datagram (so duplicates stay on), and far fewer frames depend on a copy that comes a
    packet interval later (the wait that costs delay and, when that packet is lost too,
    concealment)."""
    from voip_codec.transport.netsim import loss_model
    from voip_codec.transport.redundancy import DUPLICATE_LOSS

    lossy = NetworkConditions(delay_ms=20, jitter_ms=10, loss=loss_model(0.10))
    info = get_codec("codec2-700c").info
    pcm = noise(400, seed=4)[: 400 * info.input_frame_samples]
    results = {}
    for dup in (None, DUPLICATE_LOSS):
        ctl = RedundancyController(initial=1, duplicate_loss=dup)
        _, tx, rx, a = run_call(pcm, lossy, controller=ctl, jitter=JitterConfig(),
                                codec_name="codec2-700c")
        results[dup] = (tx, rx, a, ctl)
    tx, rx, a, ctl = results[DUPLICATE_LOSS]
    assert ctl.duplicates and tx.stats.duplicates > 300  # on since the first reports
    assert rx.stats.duplicate > 0.8 * tx.stats.duplicates * 0.9  # both datagrams came
    assert rx.last_report is not None and 0.04 <= rx.last_report.loss_rate <= 0.25
    plain_tx, plain_rx, _, plain_ctl = results[None]
    assert plain_tx.stats.duplicates == 0 and not plain_ctl.duplicates
    # frames that had to wait a packet interval for a copy (or were lost): about 10 % without
    # duplicates, about 1 % with them
    assert (rx.stats.recovered_from_redundancy + rx.stats.concealed) * 4 < \
        plain_rx.stats.recovered_from_redundancy + plain_rx.stats.concealed, (rx.stats,
                                                                              plain_rx.stats)
    assert rx.stats.concealed <= plain_rx.stats.concealed


def test_only_small_packets_are_duplicated() -> None:
    """A PCM stream's 2.5 kB packets are never doubled (that would add real load, not just
    headers); a Codec2 packet is."""
    from voip_codec.transport.session import DUPLICATE_MAX_BYTES

    for name, copies in (("codec2-700c", 2), ("pcm16", 1)):
        codec = get_codec(name)
        sent: list[bytes] = []
        ctl = RedundancyController(initial=0, duplicate_loss=0.04)
        ctl.duplicates = True
        tx = SendSession(codec.info, codec.new_encoder(), CallbackLink(sent.append),
                         controller=ctl)
        tx.send_frame(tx.encode_frame(noise(1)[: codec.info.input_frame_samples]))
        assert len(sent) == copies and len(set(sent)) == 1, name
        assert (len(sent[0]) <= DUPLICATE_MAX_BYTES) == (copies == 2)
        assert tx.stats.packets == 1 and tx.stats.duplicates == copies - 1


def test_duplicates_stop_after_calm_reports() -> None:
    ctl = RedundancyController(initial=0, duplicate_loss=0.04, hold_reports=2)
    lossy = LossReport(report_seq=0, highest_seq=0, expected=12, received=11, loss_rate=0.083,
                       mean_burst=1.0)
    assert ctl.duplicates is False
    ctl.on_report(lossy)
    assert ctl.duplicates is True
    for seq, rate, still in ((1, 0.03, True), (2, 0.0, True), (3, 0.0, False)):
        # 3 % is below the threshold but not below half of it: no calm report
        ctl.on_report(LossReport(report_seq=seq, highest_seq=0, expected=12, received=12,
                                 loss_rate=rate, mean_burst=0.0))
        assert ctl.duplicates is still, seq
    with pytest.raises(ValueError):
        RedundancyController(duplicate_loss=0.0)


def test_loss_statistics_count_duplicated_datagrams() -> None:
    from voip_codec.transport.redundancy import LossStatistics

    stats = LossStatistics(reorder_margin=0)
    # 10 sequence numbers sent twice each: 3 and 7 arrived once, 5 not at all
    for seq in range(10):
        if seq == 5:
            continue
        stats.on_packet(seq)
        if seq not in (3, 7):
            stats.on_duplicate(seq)
    report = stats.make_report()
    assert report is not None and report.expected == 10 and report.received == 9
    assert report.loss_rate == pytest.approx(4 / 20)  # datagrams: 2 + 1 + 1 of 20 lost
    # an interval without duplicates counts sequence numbers again
    for seq in range(10, 20):
        if seq != 15:
            stats.on_packet(seq)
    later = stats.make_report()
    assert later is not None and later.loss_rate == pytest.approx(0.1)
