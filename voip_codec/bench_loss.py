"""Packet-loss benchmark: STOI of decoded speech under loss, per redundancy setting.

For each clip the reference is the lossless decode (same codec, same pipeline, no loss). Each
scenario (loss rate x random/bursty loss x redundancy K) runs the in-memory call simulation with
a fixed playout delay (so that output frames stay aligned with the reference) and scores the
output with STOI (pystoi) against that reference.

Note: Codec2's decoder draws random phases from a process-wide generator, so two decodes of the
same payloads are not bit-identical; lossless-vs-lossless STOI is ~0.985, not 1.

Usage: ``python -m voip_codec.bench_loss [--clips 8] [--json]`` (or ``voip-codec bench loss``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["LossBenchRow", "add_parser", "default_clip_dir", "main", "run", "run_loss_bench"]

_DEFAULT_LOSSES = (0.0, 0.05, 0.10, 0.20)
_DEFAULT_REDUNDANCY = ("0", "1", "2", "3", "adaptive")


@dataclass(frozen=True)
class LossBenchRow:
    """Mean results of one scenario over all clips."""

    loss_model: str
    """``"random"`` (Bernoulli) or ``"bursty"`` (Gilbert-Elliott)."""
    loss_rate: float
    """Configured loss rate."""
    redundancy: str
    """``"0"``..``"3"`` (fixed K) or ``"adaptive"``."""
    stoi: float
    """Mean STOI against the lossless decode."""
    concealed_pct: float
    """Mean percentage of frames concealed."""
    measured_loss_pct: float
    """Mean percentage of packets the network dropped."""
    kbps: float
    """Mean packet bitrate (our headers included, transport headers not), kbit/s."""


def default_clip_dir() -> Path:
    """``../shared/speech/eval`` beside the project root (the checkout this module is in)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "speech" / "eval"


def _load_clips(clip_dir: Path, count: int, rate: int) -> list[np.ndarray]:
    import soundfile as sf

    paths = sorted(clip_dir.rglob("*.flac"))
    if not paths:
        raise FileNotFoundError(f"no FLAC clips under {clip_dir}")
    # spread the choice over the sorted list (several sources/speakers), deterministically
    picks = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))]
    clips = []
    for path in picks:
        pcm, sr = sf.read(path, dtype="float32", always_2d=True)
        if sr != rate:
            raise ValueError(f"{path}: expected {rate} Hz, got {sr} Hz")
        clips.append(pcm.mean(axis=1))
    return clips


def run_loss_bench(
    codec_name: str = "codec2-700c",
    clip_dir: Path | None = None,
    clips: int = 8,
    losses: Sequence[float] = _DEFAULT_LOSSES,
    redundancy: Sequence[str] = _DEFAULT_REDUNDANCY,
    burst: float = 3.0,
    playout_delay_ms: float = 240.0,
    seed: int = 0,
) -> list[LossBenchRow]:
    """Measure STOI under random and bursty loss for each redundancy setting.

    Args:
        codec_name: registered codec name.
        clip_dir: folder searched recursively for 16 kHz FLAC clips (default
            :func:`default_clip_dir`).
        clips: number of clips, picked evenly from the sorted list.
        losses: loss rates in [0, 1) (0 runs once per model as a sanity row).
        redundancy: settings among ``"0"``..``"3"`` and ``"adaptive"``.
        burst: mean burst length of the bursty (Gilbert-Elliott) model, in packets.
        playout_delay_ms: fixed playout delay (also the jitter buffer's bounds).
        seed: base seed; clip ``i`` uses ``seed + i``.

    Returns:
        One row per (model, loss, redundancy).

    Raises:
        ValueError: unknown codec or redundancy setting, bad rates.
        FileNotFoundError: no clips found.
    """
    from pystoi import stoi

    from .codecs.registry import get_codec
    from .transport.jitter import JitterConfig
    from .transport.netsim import BernoulliLoss, GilbertElliottLoss, LossModel, NetworkConditions
    from .transport.pipeline import simulate
    from .transport.redundancy import RedundancyController

    for setting in redundancy:
        if setting not in _DEFAULT_REDUNDANCY:
            raise ValueError(f"redundancy setting {setting!r} is not one of "
                             f"{', '.join(_DEFAULT_REDUNDANCY)}")
    codec = get_codec(codec_name)
    pcms = _load_clips(clip_dir or default_clip_dir(), clips, codec.info.input_sample_rate)
    jitter = JitterConfig(initial_delay_ms=playout_delay_ms, min_delay_ms=playout_delay_ms,
                          max_delay_ms=playout_delay_ms)
    refs = [simulate(p, codec, jitter=jitter).audio for p in pcms]
    rate = codec.info.output_sample_rate

    rows = []
    for model in ("random", "bursty"):
        for loss in losses:
            for setting in redundancy:
                scores, concealed, measured, kbps = [], [], [], []
                for i, (pcm, ref) in enumerate(zip(pcms, refs, strict=True)):
                    lm: LossModel = (BernoulliLoss(loss) if model == "random"
                                     else GilbertElliottLoss(loss, burst))
                    adaptive = RedundancyController() if setting == "adaptive" else None
                    res = simulate(pcm, codec, network=NetworkConditions(loss=lm), seed=seed + i,
                                   redundancy=0 if adaptive else int(setting), adaptive=adaptive,
                                   jitter=jitter)
                    scores.append(float(stoi(ref, res.audio, rate, extended=False)))
                    concealed.append(100.0 * res.concealed_fraction)
                    measured.append(100.0 * res.network.lost / max(res.network.sent, 1))
                    kbps.append(res.bitrate_bps / 1000.0)
                rows.append(LossBenchRow(model, loss, setting, float(np.mean(scores)),
                                         float(np.mean(concealed)), float(np.mean(measured)),
                                         float(np.mean(kbps))))
    return rows


def _format_table(rows: Sequence[LossBenchRow]) -> str:
    settings = list(dict.fromkeys(r.redundancy for r in rows))
    head = "| loss | model | " + " | ".join(f"K={s}" for s in settings) + " |"
    lines = [head, "|" + "---|" * (2 + len(settings))]
    keys = list(dict.fromkeys((r.loss_rate, r.loss_model) for r in rows))
    for loss, model in sorted(keys):
        cells = []
        for s in settings:
            row = next(r for r in rows
                       if r.loss_rate == loss and r.loss_model == model and r.redundancy == s)
            cells.append(f"{row.stoi:.3f} ({row.concealed_pct:.1f}%)")
        lines.append(f"| {loss * 100:.0f}% | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``loss`` sub-command (``voip-codec bench loss``) to ``subparsers``.

    Returns:
        The new parser; its ``func`` default is :func:`run`.
    """
    parser = subparsers.add_parser(
        "loss", help="STOI under packet loss per redundancy setting",
        description="STOI of decoded speech vs the lossless decode under random and bursty "
                    "packet loss, for each redundancy setting (in-memory simulation).")
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``."""
    parser.add_argument("--codec", default="codec2-700c", help="registered codec name")
    parser.add_argument("--clips", type=int, default=8, help="number of eval clips (default 8)")
    parser.add_argument("--clip-dir", type=Path, default=None,
                        help="folder of 16 kHz FLAC clips (default ../shared/speech/eval)")
    parser.add_argument("--losses", type=float, nargs="+", default=list(_DEFAULT_LOSSES),
                        help="loss rates (fractions), default 0 0.05 0.1 0.2")
    parser.add_argument("--redundancy", nargs="+", default=list(_DEFAULT_REDUNDANCY),
                        choices=list(_DEFAULT_REDUNDANCY), help="settings to compare")
    parser.add_argument("--burst", type=float, default=3.0,
                        help="mean burst length of the bursty model (packets)")
    parser.add_argument("--delay-ms", type=float, default=240.0, help="fixed playout delay")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments and print the result; returns the exit status."""
    if args.clips < 1:
        print("bench loss: error: --clips must be >= 1", file=sys.stderr)
        return 2
    try:
        rows = run_loss_bench(codec_name=args.codec, clip_dir=args.clip_dir, clips=args.clips,
                              losses=args.losses, redundancy=args.redundancy, burst=args.burst,
                              playout_delay_ms=args.delay_ms, seed=args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bench loss: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"codec": args.codec, "clips": args.clips, "burst": args.burst,
                          "playout_delay_ms": args.delay_ms,
                          "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(f"{args.codec}: STOI vs lossless decode (concealed frames), {args.clips} clips, "
              f"bursty = Gilbert-Elliott mean burst {args.burst:g}, playout {args.delay_ms:g} ms")
        print(_format_table(rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m voip_codec.bench_loss``."""
    parser = argparse.ArgumentParser(prog="python -m voip_codec.bench_loss",
                                     description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
