"""``voip-codec bench ...``: the benchmark subcommands, plugged into the ``voip-codec`` CLI.

The distribution registers :func:`add_parser` under the ``voip_codec.cli_plugins`` entry point
group (see ``benchmarks/pyproject.toml``); ``voip_codec.cli`` calls it with its subparsers. This
module only builds argument parsers: torch, aiortc and av are imported by the commands when
they run, so ``voip-codec --help`` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from voip_codec.threads import add_threads_argument, thread_count
from voip_codec.webrtc.commands import playout_delay_ms

from .harness import (
    add_codec_speed_arguments,
    add_loss_parser,
    add_quality_parser,
    add_report_parser,
)
from .robustness import add_robustness_parser
from .wire_bench import add_arguments as add_wire_arguments

__all__ = ["PRECISION_CHOICES", "add_parser"]

PRECISION_CHOICES: tuple[str, ...] = ("fp32", "bf16", "int8", "int4")
"""Precisions of ``bench speed`` (``voip_codec.codec.precision.PRECISIONS``, which needs torch
to import)."""


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="full",
                        help="'full' (spec-sized, random weights; default), 'tiny', or a "
                             "checkpoint directory / hub id / 'default'")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    add_threads_argument(parser)
    parser.add_argument("--precision", nargs="+", default=list(PRECISION_CHOICES), metavar="P",
                        help="precisions to measure in this run, of fp32 bf16 int8 int4 "
                             "(default: all four)")
    parser.add_argument("--no-calls", action="store_true",
                        help="skip the calls-per-box search")
    parser.add_argument("--calls-budget-ms", type=float, default=80.0, metavar="MS",
                        help="tick p95 a number of calls must stay under (default 80: the "
                             "chunk)")
    parser.add_argument("--calls-threads", type=thread_count, default=None, metavar="N",
                        help="threads of the calls-per-box search (torch threads; onnxruntime "
                             "worker threads, one onnxruntime thread each); default --threads")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the per-stage profile")
    parser.add_argument("--backend", nargs="+", default=["torch"], choices=("torch", "onnx"),
                        metavar="B",
                        help="torch (default) and/or onnx: with onnx, the onnxruntime step "
                             "graphs (fp32, int8 weights) are measured too, side by side with "
                             "the torch paths (needs the onnx extra)")
    parser.add_argument("--compare-threads", type=thread_count, nargs="+", default=None,
                        metavar="N",
                        help="also step the torch paths with N torch threads, side by side "
                             "with the --threads paths (e.g. --compare-threads 2: one stream "
                             "per path, chunks interleaved)")
    parser.add_argument("--onnx-int8-convs", action="store_true",
                        help="with --backend onnx: also an int8 graph whose grouped "
                             "convolution (the positional conv) is int8 too")
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
    parser.add_argument("--codec", default=None, help="one codec (same as --codecs NAME)")
    parser.add_argument("--codecs", nargs="+", default=None, metavar="NAME",
                        help="codecs to measure (default: focalcodec-default codec2-700c "
                             "opus-6k)")
    parser.add_argument("--conditions", nargs="+", default=["clean", "loss10_jitter"],
                        choices=("clean", "loss10_jitter"),
                        help="network conditions (default: both): a clean loopback; 10%% random "
                             "loss with 20 ms delay and 10 ms half-normal jitter")
    parser.add_argument("--bursts", type=int, default=60,
                        help="speech bursts per call (default 60: a one-minute call, one burst "
                             "a second; the first 2 s, before loss reports are back, are also "
                             "counted apart)")
    parser.add_argument("--no-bitrates", action="store_true", help="latency only")
    parser.add_argument("--playout-delay", type=playout_delay_ms, nargs="+",
                        default=[0.0], metavar="MS",
                        help="initial playout delays to measure the latency with (default: 0, "
                             "the adaptive default that starts low)")
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", action="store_true",
                        help="print the README's latency paragraph and table instead")
    parser.add_argument("--from-json", default=None, metavar="FILE",
                        help="render --markdown from a saved --json output instead of measuring")


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


def run_wire(args: argparse.Namespace) -> int:
    """``voip-codec bench wire``: payload and wire kbit/s per link of a full-duplex call."""
    from .wire_bench import run

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
    p = bsub.add_parser("wire", help="payload and wire kbit/s per direction of full-duplex "
                                     "calls, per link, frames per packet and K")
    add_wire_arguments(p)
    p.set_defaults(func=run_wire)
    add_robustness_parser(bsub)  # fuzzing, poisoned input, long call, signaling load, faults
    return bench
