"""``voip-codec bench ...``: the benchmark subcommands, plugged into the ``voip-codec`` CLI.

The distribution registers :func:`add_parser` under the ``voip_codec.cli_plugins`` entry point
group (see ``benchmarks/pyproject.toml``); ``voip_codec.cli`` calls it with its subparsers. This
module only builds argument parsers: torch, aiortc and av are imported by the commands when
they run, so ``voip-codec --help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from voip_codec.webrtc.commands import playout_delay_ms

from .harness import (
    add_codec_speed_arguments,
    add_loss_parser,
    add_quality_parser,
    add_report_parser,
)
from .robustness import add_robustness_parser

__all__ = ["PRECISION_CHOICES", "add_parser"]

PRECISION_CHOICES: tuple[str, ...] = ("fp32", "bf16", "int8")
"""Precisions of ``bench speed`` (``voip_codec.codec.precision.PRECISIONS``, which needs torch
to import)."""


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="full",
                        help="'full' (spec-sized, random weights; default), 'tiny', or a "
                             "checkpoint directory / hub id / 'default'")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--precision", nargs="+", default=list(PRECISION_CHOICES), metavar="P",
                        help="precisions to measure in this run, of fp32 bf16 int8 (default: "
                             "all three)")
    parser.add_argument("--no-calls", action="store_true",
                        help="skip the calls-per-box search")
    parser.add_argument("--agreement", action="store_true",
                        help="instead of speed: token agreement with fp32 and STOI of the "
                             "decoded output vs fp32, streaming real speech through the default, "
                             "conformance and full-size models")
    parser.add_argument("--speech", default=None,
                        help="folder of FLAC clips for --agreement (default "
                             "$VOIP_CODEC_SHARED/speech/eval, else ../shared/speech/eval beside "
                             "the checkout)")
    parser.add_argument("--clips", type=int, default=8,
                        help="clips for --agreement (default 8; 8 s each)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _call_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--codec", default=None, help="codec (default: the demo's default)")
    parser.add_argument("--bursts", type=int, default=12, help="latency markers (default 12)")
    parser.add_argument("--no-bitrates", action="store_true", help="latency only")
    parser.add_argument("--playout-delay", type=playout_delay_ms, nargs="+",
                        default=[160.0, 40.0], metavar="MS",
                        help="initial playout delays to measure the latency with (default: 160 = "
                             "the default profile, 40 = low delay)")
    parser.add_argument("--json", action="store_true")


def run_speed(args: argparse.Namespace) -> int:
    """``voip-codec bench speed``: the model benchmark, or per-codec speed with ``--codecs``."""
    if args.codecs:
        from .harness import run_codec_speed

        return run_codec_speed(args)
    from .model_speed import run

    return run(args)


def run_call(args: argparse.Namespace) -> int:
    """``voip-codec bench call``: mouth-to-ear latency and wire bitrates of loopback calls."""
    from .call_bench import run

    return run(args)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` and its subcommands to the ``voip-codec`` parser.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        The ``bench`` parser.
    """
    bench: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="benchmarks (print figures)")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    bsub.required = True
    p = bsub.add_parser("speed", help="FocalCodec-Stream streaming vs offline speed and memory")
    _speed_arguments(p)
    add_codec_speed_arguments(p)  # --codecs: per-codec speed instead of the model bench
    p.set_defaults(func=run_speed)
    add_loss_parser(bsub)  # quality under loss per redundancy setting
    add_quality_parser(bsub)  # codecs side by side
    add_report_parser(bsub)  # quality + loss + speed, Markdown/PNG
    p = bsub.add_parser("call", help="mouth-to-ear latency and wire bitrates of real calls")
    _call_arguments(p)
    p.set_defaults(func=run_call)
    add_robustness_parser(bsub)  # fuzzing, poisoned input, long call, signaling load, faults
    return bench
