"""The aiortc plugin over real WebRTC connections through the loopback impairment relay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.contrib.media import MediaRecorder
from pystoi import stoi

from voip_codec.audio import read_audio
from voip_codec.codecs.registry import get_codec
from voip_codec.transport.jitter import JitterConfig
from voip_codec.transport.packetizer import Packetizer
from voip_codec.webrtc.call import run_demo
from voip_codec.webrtc.commands import SAMPLE_SPEECH
from voip_codec.webrtc.contrib.relay import ImpairmentRelay
from voip_codec.webrtc.receiver import CodecReceiverTrack
from voip_codec.wire.packet import FLAG_END, AudioPacket, parse_packet

CODEC = "codec2-700c"


def lossless_decode(pcm: np.ndarray) -> np.ndarray:
    codec = get_codec(CODEC)
    enc, dec = codec.new_encoder(), codec.new_decoder()
    n = codec.info.input_frame_samples
    x = np.pad(pcm, (0, (-len(pcm)) % n))
    return np.concatenate([dec.decode(enc.encode(x[i:i + n]))
                           for i in range(0, len(x), n)])[:len(pcm)]


def aligned_stoi(ref: np.ndarray, out: np.ndarray, max_lag: int = 1600) -> float:
    """STOI after the best lag (the resamplers and playout add a small fixed delay)."""
    best, best_lag = -2.0, 0
    for lag in range(-max_lag, max_lag + 1, 16):
        a = out[lag:] if lag >= 0 else np.pad(out, (-lag, 0))
        m = min(len(a), len(ref))
        c = float(np.dot(a[:m], ref[:m]) / (np.linalg.norm(a[:m]) * np.linalg.norm(ref[:m])
                                            + 1e-9))
        if c > best:
            best, best_lag = c, lag
    a = out[best_lag:] if best_lag >= 0 else np.pad(out, (-best_lag, 0))
    m = min(len(a), len(ref))
    return float(stoi(ref[:m], a[:m], 16000))


# thresholds set from measurement (codec2-700c, 3.79 s sample, 50 ms delay, 50 +- 20 ms jitter,
# seed 1): STOI vs the lossless decode 0.980 / 0.985 / 0.310 for the three conditions below
CONDITIONS = [
    pytest.param(0.0, 1.0, 0.90, id="no-loss"),
    pytest.param(0.10, 1.0, 0.85, id="10pct-random"),
    pytest.param(0.20, 3.0, 0.20, id="20pct-bursty"),
]


@pytest.mark.parametrize("loss,burst,min_stoi", CONDITIONS)
def test_call_through_impaired_link(tmp_path: Path, loss: float, burst: float,
                                    min_stoi: float) -> None:
    out_path = tmp_path / "out.wav"
    result = asyncio.run(run_demo(SAMPLE_SPEECH, out_path, get_codec(CODEC), loss=loss,
                                  burst=burst, delay_ms=50.0, jitter_ms=20.0, seed=1))
    pcm, _ = read_audio(SAMPLE_SPEECH, 16000)
    out, rate = read_audio(out_path, 16000)
    # the recording is the input's length within one 80 ms frame
    assert abs(len(out) - len(pcm)) <= 1280
    rx = result.receiver
    for key in ("concealed", "recovered_from_redundancy", "playout_delay_ms", "late"):
        assert key in rx
    assert result.wire["forward_wire_kbps"] > 0 and result.wire["reverse_wire_kbps"] > 0
    assert result.wire["packet_kbps"] > 0
    # end-to-end encryption is on by default: same SAS at both ends, nothing rejected
    assert result.e2e is not None and result.e2e["sas_match"]
    assert result.e2e["bob"]["received"] > 0 and result.e2e["bob"]["forged"] == 0
    assert rx["frames_received"] > 0.5 * result.sender["frames"]
    if not loss:  # the end-of-stream packet arrived: playout stopped instead of concealing
        assert rx["ended"] is True
    if loss:
        assert result.wire["forward_dropped"] > 0
        assert rx["recovered_from_redundancy"] + rx["concealed"] > 0
    assert aligned_stoi(lossless_decode(pcm), out) >= min_stoi


def test_receiver_track_never_stalls_and_is_recordable(tmp_path: Path) -> None:
    async def main() -> tuple[list[int | None], int]:
        track = CodecReceiverTrack(get_codec(CODEC))
        recorder = MediaRecorder(str(tmp_path / "rec.wav"))
        pts: list[int | None] = []
        for _ in range(10):  # no packet ever arrives: silence, paced, correct pts
            frame = await track.recv()
            assert frame.sample_rate == 48000 and frame.samples == 960
            pts.append(frame.pts)
        track.on_message(b"garbage that is not a packet")  # counted, never raised
        recorder.addTrack(track)
        await recorder.start()
        await asyncio.sleep(0.3)
        await recorder.stop()
        invalid: int = track.stats()["invalid"]
        track.stop()
        return pts, invalid

    pts, invalid = asyncio.run(main())
    assert pts == [960 * i for i in range(10)]
    assert invalid == 1
    assert (tmp_path / "rec.wav").stat().st_size > 1000


def test_relay_refuses_sdp_without_loopback_candidates() -> None:
    async def main() -> None:
        relay = ImpairmentRelay()
        await relay.start()
        try:
            with pytest.raises(ValueError, match="no 127.0.0.1 host candidate"):
                relay.rewrite("v=0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n", "a")
            sdp = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n" \
                  "a=candidate:1 1 udp 2130706431 127.0.0.1 5555 typ host\n"
            out = relay.rewrite(sdp, "a")
            assert f"127.0.0.1 {relay.port('a')} typ host" in out and "5555" not in out
        finally:
            relay.close()

    asyncio.run(main())


def test_receiver_stops_concealing_after_end_of_stream() -> None:
    """A listener that stays after the talker hung up hears silence, not counted concealment."""
    codec = get_codec(CODEC)
    enc = codec.new_encoder()
    n = codec.info.input_frame_samples
    pcm, _ = read_audio(SAMPLE_SPEECH, 16000)
    packetizer = Packetizer(codec.info.codec_id, frames_per_packet=2)
    pushed = [packetizer.push(enc.encode(pcm[i * n:(i + 1) * n])) for i in range(7)]
    last = packetizer.flush(end=True)
    assert last is not None
    packets = [p for p in pushed if p is not None] + [last]
    end = parse_packet(last)
    assert len(packets) == 4 and isinstance(end, AudioPacket) and end.flags & FLAG_END

    async def main() -> dict[str, Any]:
        track = CodecReceiverTrack(codec, jitter=JitterConfig(initial_delay_ms=80))
        for data in packets:
            track.on_message(data)
        for _ in range(60):  # 1.2 s of output: the 7 frames (560 ms), then the hang-up
            await track.recv()
        stats = track.stats()
        track.stop()
        return stats

    stats = asyncio.run(main())
    assert stats["ended"] is True
    assert stats["concealed"] == 0
    assert stats["frames_played"] == 7


@pytest.mark.parametrize("value, message", [("-5", "0..800"), ("900", "0..800"),
                                            ("soon", "not a number")])
def test_playout_delay_option_rejects_bad_values(value: str, message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from voip_codec.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--playout-delay", value])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_playout_delay_sets_the_jitter_profile() -> None:
    from voip_codec.webrtc.commands import jitter_config

    low = jitter_config(40.0)
    assert (low.initial_delay_ms, low.min_delay_ms) == (40.0, 40.0)
    default = jitter_config(160.0)
    assert (default.initial_delay_ms, default.min_delay_ms) == (160.0, 80.0)
    assert default.max_delay_ms == low.max_delay_ms == 800.0
