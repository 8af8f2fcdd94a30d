"""End-to-end in-memory calls: Codec2 under loss, frame-accurate timing, adaptive redundancy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests._shared import shared_dir
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import FrameSource, JitterConfig
from voip_codec.transport.netsim import (
    BernoulliLoss,
    GilbertElliottLoss,
    LossModel,
    NetworkConditions,
)
from voip_codec.transport.packetizer import Packetizer
from voip_codec.transport.pipeline import simulate
from voip_codec.transport.redundancy import (
    LossStatistics,
    RedundancyController,
    wanted_redundancy,
)
from voip_codec.wire.packet import LossReport

BUFFER_160 = JitterConfig(initial_delay_ms=160, min_delay_ms=160, max_delay_ms=160)


def clip() -> np.ndarray:
    """A ~10.8 s LibriSpeech dev-clean clip from the eval split."""
    path = shared_dir() / "speech" / "eval" / "librispeech-dev-clean" / "ls-251"
    pcm, rate = sf.read(path / "251-118436-0003.flac", dtype="float32")
    assert rate == 16000
    return pcm


class DropSet(LossModel):
    """Deterministic loss of the packets with the given send positions."""

    def __init__(self, drop: set[int]) -> None:
        self.drop = drop
        self.count = 0

    def lost(self, rng: np.random.Generator) -> bool:
        self.count += 1
        return self.count - 1 in self.drop


def test_codec2_10pct_random_loss_k2_conceals_at_most_1pct() -> None:
    pcm = clip()
    res = simulate(pcm, get_codec("codec2-700c"), seed=1, redundancy=2, jitter=BUFFER_160,
                   network=NetworkConditions(loss=BernoulliLoss(0.10), delay_ms=40))
    assert res.network.lost >= 8  # the network did drop packets (~10 % of 135)
    assert res.jitter.recovered_from_redundancy >= 8
    assert res.concealed_fraction <= 0.01
    assert res.audio.shape == pcm.shape and res.sample_rate == 16000
    assert set(res.redundancy_per_packet[2:]) == {2}


def test_codec2_20pct_bursty_loss_is_frame_accurate() -> None:
    pcm = clip()
    for adaptive in (None, RedundancyController()):
        res = simulate(pcm, get_codec("codec2-700c"), seed=2, redundancy=1, adaptive=adaptive,
                       network=NetworkConditions(loss=GilbertElliottLoss(0.20, 3.0),
                                                 delay_ms=50, jitter_ms=20))
        assert res.audio.shape == pcm.shape  # exactly as many samples as the input
        assert len(res.sources) == res.frames == int(np.ceil(pcm.size / 1280))
        assert np.all(np.isfinite(res.audio))
        assert res.network.lost > 0 and res.concealed_frames > 0


def test_lossless_pcm16_is_sample_exact() -> None:
    rng = np.random.default_rng(0)
    pcm = (0.3 * rng.standard_normal(1280 * 20 + 300)).clip(-1, 1).astype(np.float32)
    res = simulate(pcm, get_codec("pcm16"), frames_per_packet=3, redundancy=1)
    assert res.audio.shape == pcm.shape
    np.testing.assert_allclose(res.audio, pcm, atol=1 / 32768)
    assert res.packets_sent == 7 and res.concealed_frames == 0


def test_jittery_reordering_network_plays_true_frames() -> None:
    rng = np.random.default_rng(1)
    pcm = (0.3 * rng.standard_normal(1280 * 60)).astype(np.float32)
    net = NetworkConditions(delay_ms=30, jitter_ms=60, reorder_prob=0.1, duplicate_prob=0.1,
                            loss=BernoulliLoss(0.05))
    res = simulate(pcm, get_codec("pcm16"), network=net, seed=4, redundancy=2)
    assert res.audio.shape == pcm.shape
    assert res.jitter.duplicate > 0
    ref = np.round(pcm * 32768).clip(-32768, 32767).astype(np.int32)
    frames = np.round(res.audio * 32768).astype(np.int32).reshape(-1, 1280)
    true_frames = {ref[i * 1280:(i + 1) * 1280].tobytes(): i for i in range(60)}
    payload = (FrameSource.PRIMARY, FrameSource.REDUNDANT)
    # every frame decoded from a payload (and not ramped back in after a concealment) is an
    # exact input frame: nothing mixed up or corrupted, and in order
    steady = [k for k in range(1, 60) if res.sources[k] in payload
              and res.sources[k - 1] in payload]
    hits = [true_frames.get(frames[k].tobytes()) for k in steady]
    assert len(steady) >= 45 and None not in hits
    found = [h for h in hits if h is not None]  # all of them (checked above)
    assert found == sorted(found)


def test_resync_after_a_long_burst() -> None:
    rng = np.random.default_rng(2)
    pcm = (0.3 * rng.standard_normal(1280 * 40)).clip(-0.99, 0.99).astype(np.float32)
    res = simulate(pcm, get_codec("pcm16"), redundancy=1, jitter=BUFFER_160,
                   network=NetworkConditions(loss=DropSet(set(range(10, 18)))))
    src = res.sources
    assert src[10:17] == [FrameSource.CONCEALED] * 7 and src[17] is FrameSource.REDUNDANT
    assert all(s is FrameSource.PRIMARY for s in src[18:])
    # after the burst the output is the input again, sample-exact from the 2nd good frame on
    np.testing.assert_allclose(res.audio[18 * 1280:], pcm[18 * 1280:], atol=1 / 32768)
    assert np.all(res.audio[14 * 1280:17 * 1280] == 0)  # muted during the long gap


def test_adaptive_redundancy_follows_loss() -> None:
    pcm = clip()
    codec = get_codec("codec2-700c")
    lossy = simulate(pcm, codec, seed=3, adaptive=RedundancyController(initial=0),
                     network=NetworkConditions(loss=BernoulliLoss(0.15)))
    assert max(lossy.redundancy_per_packet) >= 2
    assert lossy.reports and lossy.reports[0].expected > 0
    clean = simulate(pcm, codec, seed=3, adaptive=RedundancyController(initial=2,
                                                                       hold_reports=2))
    assert clean.redundancy_per_packet[-1] == 0  # stepped down with hysteresis


def test_loss_statistics_report() -> None:
    stats = LossStatistics(reorder_margin=0)
    for seq in [65533, 65534, 0, 1, 5, 6]:  # wraps; 65535 lost, 2..4 lost
        stats.on_packet(seq)
    for concealed in (False, True, False, False):
        stats.on_tick(concealed)
    rep = stats.make_report(jitter_ms=12.4, playout_delay_ms=160)
    assert rep is not None
    assert (rep.expected, rep.received, rep.highest_seq) == (10, 6, 6)
    assert rep.loss_rate == pytest.approx(0.4, abs=1e-4)
    assert rep.mean_burst == 2.0  # runs of 1 and 3
    assert rep.residual_loss == pytest.approx(0.25, abs=1e-4)
    assert (rep.jitter_ms, rep.playout_delay_ms) == (12, 160)
    assert stats.make_report() is None  # nothing new since


def report(seq: int, loss: float, burst: float = 1.0) -> LossReport:
    return LossReport(seq, 0, 100, round(100 * (1 - loss)), loss, burst if loss else 0.0)


def test_controller_hysteresis() -> None:
    assert [wanted_redundancy(x, 1.0) for x in (0.0, 0.02, 0.05, 0.2)] == [0, 1, 2, 3]
    assert wanted_redundancy(0.02, 2.5) == 3  # bursts need more copies
    ctl = RedundancyController(initial=0, hold_reports=3)
    assert ctl.on_report(report(0, 0.06)) == 2  # up at once
    assert ctl.on_report(report(1, 0.03)) == 2  # 0.03 >= 0.04 / 2: keep
    assert [ctl.on_report(report(i, 0.002)) for i in range(2, 8)] == [2, 2, 1, 1, 1, 0]
    assert ctl.on_report(report(7, 0.5)) == 0  # stale report ignored
    with pytest.raises(ValueError, match="initial K"):
        RedundancyController(initial=5)


def test_packetizer_bundles_and_caps_redundancy_at_stream_start() -> None:
    from voip_codec.wire.packet import AudioPacket, parse_packet

    p = Packetizer(codec_id=16, frames_per_packet=2, redundancy=3, first_seq=65535)
    out = [p.push(bytes([i]) * 7) for i in range(6)]
    parsed = [parse_packet(d) for d in out if d is not None]
    packets = [x for x in parsed if isinstance(x, AudioPacket)]
    assert packets == parsed  # audio packets only, no loss report
    assert [len(x.redundant) for x in packets] == [0, 2, 3]
    assert [x.seq for x in packets] == [65535, 0, 1]
    assert packets[2].redundant == (b"\x01" * 7, b"\x02" * 7, b"\x03" * 7)
    with pytest.raises(ValueError, match="redundancy"):
        p.redundancy = 4


def test_simulate_command_models_dtx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``voip-codec simulate --dtx``: the 1.6 s pause is not sent (but for keep-alives), and the
    output still lasts exactly as long as the input."""
    from voip_codec.audio import read_audio
    from voip_codec.cli import main

    sample = Path(__file__).resolve().parents[2] / "voip_codec" / "assets" / "sample_speech.flac"
    speech, _ = read_audio(sample, 16000)
    pcm = np.concatenate([speech, np.zeros(16000 * 8 // 5, np.float32), speech])
    src = tmp_path / "pause.wav"
    sf.write(src, pcm, 16000)
    args = ["simulate", "--codec", "codec2-700c", "--input", str(src), "--output",
            str(tmp_path / "out.wav"), "--json"]
    assert main(args) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--dtx"]) == 0
    dtx = json.loads(capsys.readouterr().out)
    assert plain["dtx_frames"] == 0
    assert dtx["dtx_frames"] >= 16  # of the 20 silent 80 ms frames, keep-alives excepted
    assert dtx["packets_sent"] <= plain["packets_sent"] - 16
    assert dtx["output_seconds"] == plain["output_seconds"] == plain["input_seconds"]
