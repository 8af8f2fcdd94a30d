"""Metric plumbing of the evaluation harness (``voip_codec_bench``) on short clips.

Covers delay alignment, resampling of narrowband outputs, the identity codec, reporting of
missing metric packages and missing codecs, the result cache (and its model fingerprint), the
frame-contract peers in the loss simulation, ``bench loss`` and the generated README table. Uses
3 s of one eval clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._shared import speech_clips

pytest.importorskip("pystoi")
pytest.importorskip("pesq")

from voip_codec.audio import resample  # noqa: E402
from voip_codec_bench import metrics as metrics_mod  # noqa: E402
from voip_codec_bench.cache import ResultCache, file_digest  # noqa: E402
from voip_codec_bench.harness import Clip, run_loss, run_quality  # noqa: E402
from voip_codec_bench.metrics import (  # noqa: E402
    METRIC_RATE,
    MetricSet,
    MetricUnavailableError,
    align,
    estimate_delay,
    to_metric_rate,
    word_error_rate,
)
from voip_codec_bench.peers import (  # noqa: E402
    CodecStream,
    MissingCodec,
    Transcoded,
    Transcoder,
    resolve_codec,
)
from voip_codec_bench.report import (  # noqa: E402
    README_BEGIN,
    README_END,
    render_markdown,
    update_readme,
)


@pytest.fixture(scope="module")
def clip() -> Clip:
    """The first 3 s of the first eval clip."""
    path = speech_clips("eval")[0]
    from voip_codec.audio import read_audio

    pcm, _ = read_audio(path, METRIC_RATE)
    return Clip(path, file_digest(path) + "-3s", pcm[:3 * METRIC_RATE])


class NarrowbandTranscoder(Transcoder):
    """A stand-in 8 kHz codec: 16 kHz -> 8 kHz output, delayed by ``delay`` output samples."""

    name = "narrowband-test"
    label = "8 kHz band-limit (test)"
    frame_ms = 20.0

    def __init__(self, delay: int = 40) -> None:
        self.delay = delay
        self.calls = 0

    def fingerprint(self) -> str:
        return f"narrowband-test-{self.delay}"

    def transcode(self, pcm: np.ndarray) -> Transcoded:
        self.calls += 1
        narrow = resample(pcm, METRIC_RATE, 8000)
        out = np.concatenate([np.zeros(self.delay, np.float32), narrow])
        return Transcoded(out, 8000, 64000 * pcm.shape[0] // METRIC_RATE,
                          pcm.shape[0] / METRIC_RATE)

    def open_stream(self) -> CodecStream:
        raise NotImplementedError


def test_delayed_copy_is_realigned(clip: Clip) -> None:
    delay = 37 * METRIC_RATE // 1000
    delayed = np.concatenate([np.zeros(delay, np.float32), clip.pcm])
    assert estimate_delay([clip.pcm], [delayed], 4800, "xcorr") == delay
    ref, deg = align(clip.pcm, delayed, delay)
    assert ref.shape == deg.shape == clip.pcm.shape
    ms = MetricSet(["stoi"])
    assert ms.score("stoi", ref, deg) > 0.999
    unaligned = ms.score("stoi", *align(clip.pcm, delayed, 0))
    assert unaligned < 0.9


def test_stoi_alignment_finds_delay_on_grid(clip: Clip) -> None:
    delay = 64
    delayed = np.concatenate([np.zeros(delay, np.float32), clip.pcm])
    assert estimate_delay([clip.pcm], [delayed], 256, "stoi", step=32) == delay


def test_narrowband_output_is_scored_at_16k(clip: Clip) -> None:
    codec = NarrowbandTranscoder(delay=40)
    up = to_metric_rate(codec.transcode(clip.pcm).audio, 8000)
    assert up.shape[0] == clip.pcm.shape[0] + 80
    [row] = run_quality([codec], [clip], ["stoi", "pesq"], progress=False)
    assert row.status == "ok"
    assert row.delay_ms == pytest.approx(5.0, abs=0.2)  # 40 samples at 8 kHz
    assert row.metrics["stoi"] is not None and row.metrics["stoi"] > 0.9
    # band-limiting to 4 kHz costs WB-PESQ (notes: ~3.7) but is far from a broken signal
    assert row.metrics["pesq"] is not None and 2.5 < row.metrics["pesq"] < 4.4
    assert row.kbps == pytest.approx(64.0)


def test_identity_codec_scores_as_identity(clip: Clip) -> None:
    [row] = run_quality(["pcm16"], [clip], ["stoi", "pesq"], progress=False)
    assert row.status == "ok"
    assert row.delay_ms == 0.0
    stoi, pesq = row.metrics["stoi"], row.metrics["pesq"]
    assert stoi is not None and stoi > 0.99
    assert pesq is not None and pesq > 4.4
    assert row.kbps == pytest.approx(256.0)


def test_missing_metric_is_reported(monkeypatch: pytest.MonkeyPatch, clip: Clip) -> None:
    real = metrics_mod.importlib.util.find_spec

    def fake_find_spec(name: str, package: str | None = None) -> object:
        return None if name == "pesq" else real(name, package)

    monkeypatch.setattr(metrics_mod.importlib.util, "find_spec", fake_find_spec)
    ms = MetricSet(["stoi", "pesq"])
    assert ms.available == ["stoi"]
    assert ms.missing == {"pesq": "missing (pip install pesq)"}
    with pytest.raises(MetricUnavailableError, match="pip install pesq"):
        ms.score("pesq", clip.pcm, clip.pcm)
    [row] = run_quality(["pcm16"], [clip], ["stoi", "pesq"], progress=False)
    assert "pesq" not in row.metrics
    assert row.missing_metrics == {"pesq": "missing (pip install pesq)"}
    from dataclasses import asdict

    text = render_markdown({"quality": [asdict(row)]}, plots=False)
    assert "| WB-PESQ |" in text and "missing (pip install pesq)" in text


def test_unknown_metric_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="choose from stoi, pesq"):
        MetricSet(["stoi", "mos"])


def test_missing_codec_is_reported_not_raised(tmp_path: Path, clip: Clip) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    item = resolve_codec(f"mine={empty}")
    assert isinstance(item, MissingCodec) and item.name == "mine"
    [row] = run_quality([f"mine={empty}"], [clip], ["stoi"], progress=False)
    assert row.status == "missing" and row.reason
    with pytest.raises(ValueError, match="unknown codec"):
        resolve_codec("no-such-codec")


def test_cache_hit_on_second_run(tmp_path: Path, clip: Clip) -> None:
    codec = NarrowbandTranscoder(delay=16)
    first_cache = ResultCache(tmp_path)
    [first] = run_quality([codec], [clip], ["stoi"], first_cache, progress=False)
    assert first_cache.hits == 0 and codec.calls == 1  # the delay probe's decode is reused
    second_cache = ResultCache(tmp_path)
    [second] = run_quality([codec], [clip], ["stoi"], second_cache, progress=False)
    assert codec.calls == 1, "a cached run must not transcode again"
    assert second_cache.misses == 0 and second_cache.hits == 2  # delay + one clip
    assert second.metrics == first.metrics and second.kbps == first.kbps
    # a new metric only computes that metric
    third_cache = ResultCache(tmp_path)
    [third] = run_quality([codec], [clip], ["stoi", "pesq"], third_cache, progress=False)
    assert third.metrics["stoi"] == first.metrics["stoi"] and third.metrics["pesq"] is not None


def test_word_error_rate() -> None:
    assert word_error_rate("a b c d", "a b c d") == 0.0
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("", "a") == 1.0


def _has_libopus() -> bool:
    try:
        import av

        av.codec.Codec("libopus", "w")
    except Exception:  # noqa: BLE001 - no PyAV or no libopus in its FFmpeg
        return False
    return True


@pytest.mark.skipif(not _has_libopus(), reason="PyAV with libopus not installed")
def test_cbr_opus_is_a_frame_codec_and_runs_under_loss(clip: Clip) -> None:
    from voip_codec.codecs.registry import get_codec

    cbr = resolve_codec("opus-8k-20ms-cbr")  # the earlier name of the registered opus-8k
    assert not isinstance(cbr, MissingCodec) and cbr.codec is get_codec("opus-8k")
    assert cbr.name == "opus-8k" and cbr.label.startswith("Opus 8 kbps hard CBR")
    info = cbr.codec.info
    assert (info.frame_ms, info.bytes_per_frame, info.output_frame_samples) == (20.0, 20, 960)
    enc, dec = cbr.codec.new_encoder(), cbr.codec.new_decoder()
    payload = enc.encode(clip.pcm[:info.input_frame_samples])
    assert len(payload) == 20 and dec.decode(payload).shape == (960,)
    assert dec.decode(None).shape == (960,)  # lost frame: repeat-and-fade concealment
    results = run_loss(["opus-8k-20ms-cbr", "opus-8k-20ms"], [clip],
                       [("random", 0.0), ("random", 0.2)], ["0"], metrics=["stoi"],
                       progress=False)
    ok, vbr = results
    assert vbr.status == "not run" and "fixed-size" in vbr.reason
    assert ok.status == "ok"
    lossless, lossy = ok.rows
    clean, degraded = lossless.metrics["stoi_lossless"], lossy.metrics["stoi_lossless"]
    assert clean is not None and clean > 0.999 and lossless.concealed_pct == 0.0
    assert degraded is not None and lossy.concealed_pct > 5.0 and degraded < 0.99


def test_model_fingerprint_is_in_the_cache_key(tmp_path: Path, clip: Clip) -> None:
    """A retrained FocalCodec model recomputes its own rows; other codecs stay cached."""
    pytest.importorskip("torch")
    import torch

    from tests._shared import conformance_dir
    from voip_codec.codecs.focalcodec import load_focalcodec_codec
    from voip_codec_bench.peers import FrameCodecTranscoder

    codec = load_focalcodec_codec(str(conformance_dir()), "fc-test", 200)
    short = Clip(clip.path, clip.digest + "-1s", clip.pcm[:METRIC_RATE])
    model, peer = FrameCodecTranscoder(codec), NarrowbandTranscoder(delay=8)
    run_quality([model, peer], [short], ["stoi"], ResultCache(tmp_path), progress=False)
    before = model.fingerprint()
    with torch.no_grad():  # "retrain": change the first weight of the first tensor
        next(codec.model.parameters()).view(-1)[0] += 0.5
    assert model.fingerprint() != before
    second = ResultCache(tmp_path)
    run_quality([model, peer], [short], ["stoi"], second, progress=False)
    assert peer.calls == 1, "the unchanged codec must come from the cache"
    assert second.hits == 2 and second.misses == 2  # peer: delay + clip; model: both again


def test_transcripts_are_shared_through_the_cache(tmp_path: Path, clip: Clip) -> None:
    # pocketsphinx comes with the `eval` extra (in `all`), so CI runs this
    short = clip.pcm[:2 * METRIC_RATE]
    first = MetricSet(["dwer"], ResultCache(tmp_path))
    assert first.score("dwer", short, short) == 0.0
    second = MetricSet(["dwer"], ResultCache(tmp_path))
    second._models["pocketsphinx"] = None  # any recognition would now fail
    assert second.score("dwer", short, short) == 0.0


def test_bench_loss_command_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from voip_codec.cli import main

    speech_clips("eval")
    status = main(["bench", "loss", "--codecs", "codec2-700c", "--clips", "1", "--random",
                   "0.2", "--bursty", "--redundancy", "0", "2", "--metrics", "stoi",
                   "--no-cache", "--json", "-q"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    [codec] = report["loss"]
    k0, k2 = codec["rows"]
    assert (k0["redundancy"], k2["redundancy"]) == ("0", "2")
    assert k2["concealed_pct"] < k0["concealed_pct"]
    assert k2["metrics"]["stoi_lossless"] > k0["metrics"]["stoi_lossless"]


def test_readme_table_is_rewritten_between_markers(tmp_path: Path, clip: Clip) -> None:
    [row] = run_quality(["pcm16"], [clip], ["stoi"], progress=False)
    from dataclasses import asdict

    report = {"context": {"clips": 1, "clips_available": 77, "audio_seconds": 3.0,
                          "machine": {"date": "2026-11-24", "cpu": "AMD EPYC", "cores": 2}},
              "quality": [asdict(row)]}
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_BEGIN}\nold table\n{README_END}\noutro\n")
    update_readme(readme, report)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert "2026-11-24" in text and "1 of 77 clips" in text and "| pcm16 | 256.00 |" in text
    update_readme(readme, report)  # idempotent
    assert readme.read_text() == text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(ValueError, match="bench-quality:begin"):
        update_readme(bare, report)


def test_bench_commands_come_from_the_plugin_entry_point() -> None:
    """`voip-codec bench` is the voip-codec-bench distribution's entry point, not runtime code."""
    from importlib.metadata import entry_points

    from voip_codec.cli import PLUGIN_GROUP, build_parser
    from voip_codec_bench.cli import add_parser

    [ep] = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == "bench"]
    assert ep.load() is add_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    bench = sub.choices["bench"]  # type: ignore[index]
    commands = next(a for a in bench._actions if a.dest == "bench_command")
    assert set(commands.choices) == {"speed", "loss", "quality", "report", "call", "wire",
                                     "robustness"}


def test_speed_precision_choices_match_the_model() -> None:
    pytest.importorskip("torch")
    from voip_codec.codec.precision import PRECISIONS
    from voip_codec_bench.cli import PRECISION_CHOICES

    assert tuple(PRECISION_CHOICES) == tuple(PRECISIONS)
