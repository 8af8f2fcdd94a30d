"""Evaluate a FocalCodec checkpoint in streaming mode against Codec2 on a split of the speech.

    .venv/bin/python -m training.evaluate --model default --split eval --out runs/eval_default

A thin front end over the benchmark harness: it runs exactly what
``voip-codec bench quality --codecs MODEL codec2-700c codec2-1200 original --clip-dir
<shared>/speech/<split> --metrics stoi pesq distillmos`` runs
(:func:`voip_codec_bench.harness.run_quality`), so the two report the same numbers for the same
model and clips. That is:

* clips loaded by :func:`~voip_codec_bench.harness.load_clips` (16 kHz mono);
* every codec (this model, Codec2 700C / 1200) run frame by frame through the codec registry's
  frame contract (the model streams in 80 ms frames, the last one zero-padded);
* outputs resampled to 16 kHz, each codec's fixed delay estimated once on the first clips
  (cross-correlation; STOI search for Codec2, a vocoder) and removed, then STOI, WB-PESQ and
  DistillMOS (:mod:`voip_codec_bench.metrics`).

Results are cached in the harness's cache (``--cache``, shared with ``voip-codec bench``), keyed by
the model's weights digest, so a re-run only scores what changed. Writes ``results.json`` (the
harness's rows plus a summary) and ``results.md`` (a Markdown table); both name the harness that
produced them.

:func:`offline_dev_stoi` is the training run's cheap check (``training.train.quick_dev``): the model
offline (no streaming state) on a few cropped dev clips, scored by the same harness call.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from voip_codec.codec.model import FocalCodec
    from voip_codec_bench.harness import CodecQuality

PROG = "training.evaluate"
"""Prefix of the one-line errors."""

HARNESS = "voip_codec_bench.harness.run_quality"
"""The function that produced every number this script reports."""

BENCH_MISSING = ("training.evaluate needs the benchmarks: pip install -e ./benchmarks "
                 "(the voip-codec-bench distribution)")
"""The one-line error when :mod:`voip_codec_bench` is not installed."""

CODEC2 = ("codec2-700c", "codec2-1200")
"""The Codec2 peers of the table."""


def model_codec(model: str) -> str:
    """The harness's codec spec for ``--model``: ``default`` is the registered
    ``focalcodec-default``; registry names and checkpoint paths pass through."""
    return "focalcodec-default" if model == "default" else model


def _metrics(no_mos: bool) -> list[str]:
    return ["stoi", "pesq"] + ([] if no_mos else ["distillmos"])


def _codecs(args: argparse.Namespace) -> list[str]:
    return (([] if args.skip_model else [model_codec(args.model)])
            + ([] if args.no_codec2 else list(CODEC2)) + ["original"])


def bench_command(args: argparse.Namespace, clip_dir: Path) -> str:
    """The ``voip-codec bench quality`` command line that computes the same table."""
    parts = ["voip-codec", "bench", "quality", "--codecs", *_codecs(args), "--clip-dir",
             str(clip_dir), "--metrics", *_metrics(args.no_mos)]
    if args.limit:
        parts += ["--clips", str(args.limit)]
    return shlex.join(parts)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summarise(rows: Sequence[CodecQuality], split: str, model: str, minutes: float,
              clips: int) -> dict[str, Any]:
    """The short summary of ``results.json``: per-codec mean STOI, WB-PESQ and DistillMOS."""
    model_row = next((r for r in rows if r.name == model_codec(model)), None)
    return {
        "split": split, "clips": clips, "minutes": minutes, "model": model,
        "model_bitrate_bps": (1000.0 * model_row.kbps
                              if model_row is not None and model_row.kbps is not None else None),
        "systems": {r.name: {"stoi": _finite(r.metrics.get("stoi")),
                             "pesq": _finite(r.metrics.get("pesq")),
                             "mos": _finite(r.metrics.get("distillmos"))}
                    for r in rows if r.status == "ok"},
        "codec_delay_ms": {r.name: r.delay_ms for r in rows if r.status == "ok"},
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m training.evaluate``."""
    from voip_codec_bench.cache import DEFAULT_CACHE_DIR

    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="streaming evaluation of a model vs Codec2, through the benchmark harness "
                    "(the same numbers as `voip-codec bench quality`)")
    ap.add_argument("--model", default="default",
                    help="'default', a registered FocalCodec name (focalcodec-65k, ...) or a "
                         "checkpoint directory (default: default)")
    ap.add_argument("--split", default="eval", choices=["dev", "eval"],
                    help="split of <shared>/speech (default eval)")
    ap.add_argument("--clip-dir", type=Path, default=None,
                    help="score these audio files instead of the split")
    ap.add_argument("--out", type=Path, default=Path("runs/eval_default"),
                    help="folder for results.json and results.md (default runs/eval_default)")
    ap.add_argument("--limit", type=int, default=0,
                    help="N clips only, picked evenly from the sorted list as `bench quality "
                         "--clips` does (0: all)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-codec2", action="store_true", help="no Codec2 rows")
    ap.add_argument("--no-mos", action="store_true", help="no DistillMOS")
    ap.add_argument("--skip-model", action="store_true",
                    help="only the Codec2 and original-signal rows")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR,
                    help=f"the harness's result cache, shared with `voip-codec bench` "
                         f"(default {DEFAULT_CACHE_DIR})")
    ap.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (errors are one line on stderr)."""
    try:
        from voip_codec_bench import harness
        from voip_codec_bench.cache import ResultCache
        from voip_codec_bench.paths import shared_dir
        from voip_codec_bench.report import quality_table
    except ImportError:
        print(f"{PROG}: error: {BENCH_MISSING}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    clip_dir = args.clip_dir or shared_dir() / "speech" / args.split
    try:
        if args.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {args.limit}")
        harness.set_threads(args.threads)
        clips = harness.load_clips(clip_dir, args.limit or None)
        cache = ResultCache(None if args.no_cache else args.cache)
        rows = harness.run_quality(_codecs(args), clips, _metrics(args.no_mos), cache,
                                   progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    missing = [r for r in rows if r.status != "ok"]
    if missing:
        print(f"{PROG}: error: {missing[0].name}: {missing[0].reason}", file=sys.stderr)
        return 1
    minutes = sum(c.seconds for c in clips) / 60
    produced_by = {"harness": HARNESS, "same_as": bench_command(args, clip_dir)}
    summary = summarise(rows, args.split if args.clip_dir is None else str(clip_dir),
                        args.model, minutes, len(clips))
    quality: list[dict[str, Any]] = [asdict(r) for r in rows]
    report = {"produced_by": produced_by, "summary": summary,
              "context": {"clip_dir": str(clip_dir), "clips": len(clips),
                          "clip_files": [str(c.path.relative_to(clip_dir)) for c in clips],
                          "threads": args.threads},
              "quality": quality, "cache": {"hits": cache.hits, "misses": cache.misses}}
    table = "\n".join(quality_table(quality))
    text = (f"Produced by `{HARNESS}` (the code of `voip-codec bench quality`; same numbers as "
            f"`{produced_by['same_as']}`).\n\n"
            f"{summary['split']}: {len(clips)} clips, {minutes:.1f} min, metrics at 16 kHz, each "
            "codec's fixed delay removed; the model streamed in 80 ms frames.\n\n"
            f"{table}\n")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str))
        (args.out / "results.md").write_text(text)
    except OSError as exc:
        print(f"{PROG}: error: cannot write to {args.out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(text)
    return 0


# --------------------------------------------------------------------------------------------
# the training run's dev check


def offline_dev_stoi(model: FocalCodec, paths: Sequence[Path],
                     seconds: float = 6.0) -> tuple[float, int]:
    """Mean STOI of the model run offline on the first ``seconds`` of each clip, scored by
    :func:`~voip_codec_bench.harness.run_quality` (same resampling, delay alignment and STOI as
    :func:`main` and ``voip-codec bench quality``), and the number of distinct tokens used.

    Args:
        model: the model (left in its mode; run without gradients).
        paths: audio files.
        seconds: crop of each clip.

    Returns:
        ``(mean STOI, distinct tokens)``; STOI is NaN when pystoi is not installed.
    """
    import torch

    from voip_codec.audio import read_audio
    from voip_codec_bench.cache import file_digest
    from voip_codec_bench.harness import Clip, run_quality
    from voip_codec_bench.metrics import METRIC_RATE
    from voip_codec_bench.peers import CodecStream, Transcoded, Transcoder, vocoder_align_method

    codes: set[int] = set()

    class Offline(Transcoder):
        name = "offline-dev"
        label = "model, offline (training dev check)"
        frame_ms = 1000.0 * model.chunk_size / model.sample_rate_input
        align_method = vocoder_align_method(True)  # as the bench aligns a FocalCodec codec

        def fingerprint(self) -> str:
            return "offline-dev-check"  # never cached (no cache below)

        def transcode(self, pcm: np.ndarray) -> Transcoded:
            with torch.inference_mode():
                toks = model.encode_step(torch.from_numpy(np.ascontiguousarray(pcm))[None])[0]
                codes.update(toks.flatten().tolist())
                y = model.decode_step(toks)[0][0].numpy()
            return Transcoded(y.astype(np.float32), model.sample_rate_output, 0,
                              pcm.shape[0] / METRIC_RATE)

        def open_stream(self) -> CodecStream:
            raise ValueError("the offline dev check has no stream")

    n = int(seconds * METRIC_RATE)
    clips = [Clip(p, f"{file_digest(p)}-{n}", read_audio(p, METRIC_RATE)[0][:n]) for p in paths]
    [row] = run_quality([Offline()], clips, ["stoi"], progress=False)
    stoi = row.metrics.get("stoi")
    return (float("nan") if stoi is None else float(stoi)), len(codes)


if __name__ == "__main__":
    sys.exit(main())
