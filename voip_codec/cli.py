"""The ``voip-codec`` command line.

Sub-commands: ``encode``, ``decode``, ``info``, ``codecs``, ``conformance``, ``serve``,
``demo``, ``simulate``, ``call``, ``models list|pull``, ``bench speed``. Errors in user
input (missing or unreadable files, a token file made by another model, a truncated file, missing
weights) print one line ``voip-codec: error: ...`` and exit with status 1 (2 for bad usage);
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UserError, check_output_path

__all__ = ["main"]

_ENCODE_BLOCK = 16000 * 4  # samples per streaming push when encoding files (4 s)
_DECODE_BLOCK = 200  # tokens per streaming push when decoding files (4 s)


class CliError(UserError):
    """A user-facing error: printed as one line, exit status 1."""


def _progress(total: int, unit: str, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    # disable=None: shown on a terminal only, so logs and pipes stay clean
    return tqdm(total=total, unit=unit, desc=desc, disable=None if enabled else True,
                unit_scale=True, leave=False, file=sys.stderr)


def _load_model(source: str, precision: str | None = None):  # type: ignore[no-untyped-def]
    from .codec.loading import from_pretrained

    return from_pretrained(source, precision=precision)


def cmd_encode(args: argparse.Namespace) -> int:
    """Audio file -> token file (streaming encoder, so memory stays flat on long files)."""
    import numpy as np
    import torch

    from .audio import read_audio
    from .codec.streaming import StreamingEncoder
    from .tokenfile import TokenFile, write_token_file

    torch.set_num_threads(args.threads)
    check_output_path(args.output)
    model = _load_model(args.model, args.precision)
    pcm, _ = read_audio(args.input, model.sample_rate_input)
    enc = StreamingEncoder(model)
    parts = []
    with _progress(len(pcm), "sample", "encoding", not args.quiet) as bar:
        for i in range(0, len(pcm), _ENCODE_BLOCK):
            block = pcm[i:i + _ENCODE_BLOCK]
            parts.append(enc.push(block))
            bar.update(len(block))
        parts.append(enc.flush())
    tokens = torch.cat(parts, dim=1)[0].numpy().astype(np.int64)
    tf = TokenFile(tokens, model.bits_per_token, model.sample_rate_input,
                   model.sample_rate_output, len(pcm), model.fingerprint(),
                   model.model_id or "")
    write_token_file(args.output, tf)
    if not args.quiet:
        kbps = model.bitrate / 1000
        print(f"{args.input} -> {args.output}: {len(tokens)} tokens x {model.bits_per_token} bits "
              f"({len(pcm) / model.sample_rate_input:.2f} s, {kbps:.2f} kbps, "
              f"{Path(args.output).stat().st_size} bytes)", file=sys.stderr)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Token file -> audio file at the model's output rate (24 kHz)."""
    import numpy as np
    import torch

    from .audio import write_audio
    from .codec.streaming import StreamingDecoder
    from .tokenfile import read_token_file

    torch.set_num_threads(args.threads)
    check_output_path(args.output)
    tf = read_token_file(args.input)
    model = _load_model(args.model, args.precision)
    if tf.bits != model.bits_per_token:
        raise CliError(f"{args.input} holds {tf.bits}-bit tokens (model {tf.model_id!r}) but the "
                       f"decoding model uses {model.bits_per_token}-bit tokens; pass the matching "
                       "--model")
    if tf.fingerprint != model.fingerprint() and not args.force:
        raise CliError(f"{args.input} was made with model {tf.model_id!r}, whose weights or "
                       f"configuration differ from the decoding model {model.model_id!r}; pass the same "
                       "--model (or --force to decode anyway)")
    dec = StreamingDecoder(model)
    parts = []
    with _progress(len(tf.tokens), "tok", "decoding", not args.quiet) as bar:
        for i in range(0, len(tf.tokens), _DECODE_BLOCK):
            block = tf.tokens[i:i + _DECODE_BLOCK]
            parts.append(dec.push(torch.from_numpy(block)))
            bar.update(len(block))
        parts.append(dec.flush())
    wave = torch.cat(parts, dim=1)[0].numpy()
    n_out = int(tf.num_samples * model.sample_rate_output / model.sample_rate_input)
    wave = wave[:n_out] if len(wave) >= n_out else np.pad(wave, (0, n_out - len(wave)))
    write_audio(args.output, wave, model.sample_rate_output)
    if not args.quiet:
        print(f"{args.input} -> {args.output}: {len(wave) / model.sample_rate_output:.2f} s at "
              f"{model.sample_rate_output} Hz", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a checkpoint is."""
    model = _load_model(args.model, args.precision)
    print(f"model:        {model.model_id}")
    print(f"precision:    {model.precision}")
    print(f"parameters:   {model.num_parameters() / 1e6:.2f} M")
    print(f"codebook:     {model.codebook_size} ({model.bits_per_token} bits/token)")
    print(f"bitrate:      {model.bitrate / 1000:.2f} kbps ({model.frame_rate:.0f} tokens/s)")
    print(f"sample rates: {model.sample_rate_input} Hz in, {model.sample_rate_output} Hz out")
    print(f"latency:      {model.latency_ms:.0f} ms (chunk of {model.chunk_size} samples)")
    return 0


def cmd_conformance(args: argparse.Namespace) -> int:
    """Same as ``python -m voip_codec.conformance``."""
    from .conformance import main as conformance_main

    argv = [args.directory, "--atol", str(args.atol), "--rtol", str(args.rtol)]
    return conformance_main(argv + (["--json"] if args.json else []))


def cmd_codecs(args: argparse.Namespace) -> int:
    """List registered codecs with their rates."""
    from .codecs.registry import RESERVED_CODEC_IDS, available_codecs, get_codec

    for name in available_codecs():
        if name in RESERVED_CODEC_IDS:
            try:
                info = get_codec(name).info
            except Exception as exc:  # noqa: BLE001 - report why a model is unavailable
                print(f"{name:20s} unavailable: {str(exc).split('.')[0]}")
                continue
        else:
            info = get_codec(name).info
        print(f"{name:20s} id {info.codec_id:3d}  {info.bitrate / 1000:6.2f} kbps  "
              f"{info.frame_ms:.0f} ms frames  {info.input_sample_rate} -> "
              f"{info.output_sample_rate} Hz")
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    """``voip-codec bench speed``."""
    if getattr(args, "codecs", None):
        from .bench.harness import run_codec_speed

        return run_codec_speed(args)
    from .bench.model_speed import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="voip-codec",
        description="FocalCodec-Stream neural speech codec for real-time calls.",
    )
    parser.add_argument("--version", action="version", version=f"voip-codec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="default",
                       help="checkpoint: 'default' (bundled), a directory with config.json + "
                            "model.safetensors, a .json path, a hub id found in the local "
                            "Hugging Face cache, or focalcodec-65k|4k|2k")
        p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
        p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                       help="compute precision (default: as stored in the checkpoint; fp32 "
                            "checkpoints convert to bf16/int8 on load, see README 'Fast CPU "
                            "inference')")

    p = sub.add_parser("encode", help="audio file -> token file")
    p.add_argument("input", help="audio file (any rate / channel count / format av reads)")
    p.add_argument("output", help="token file to write (.fct)")
    model_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token file -> audio file (24 kHz)")
    p.add_argument("input", help="token file (.fct)")
    p.add_argument("output", help="audio file to write (.wav, .flac, ...)")
    model_arg(p)
    p.add_argument("--force", action="store_true",
                   help="decode even if the token file names a different model configuration")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="describe a checkpoint")
    model_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("conformance", help="compare with official reference outputs")
    p.add_argument("directory")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_conformance)

    from signaling.server import add_parser as add_serve_parser

    from .webrtc.commands import add_call_parser, add_demo_parser, add_simulate_parser

    add_demo_parser(sub)
    add_simulate_parser(sub)
    add_call_parser(sub)

    p = sub.add_parser("codecs", help="list the codecs")
    p.set_defaults(func=cmd_codecs)

    add_serve_parser(sub)  # `voip-codec serve`: the signaling server (no torch needed)

    from .models_cli import add_parser as add_models_parser

    add_models_parser(sub)  # `voip-codec models list|pull`: official checkpoints (no torch)

    bench = sub.add_parser("bench", help="benchmarks (print figures)")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    bsub.required = True
    p = bsub.add_parser("speed", help="FocalCodec-Stream streaming vs offline speed and memory")
    from .bench.model_speed import add_arguments

    add_arguments(p)
    from .bench.harness import add_codec_speed_arguments

    add_codec_speed_arguments(p)  # --codecs: per-codec speed instead of the model bench
    p.set_defaults(func=cmd_bench_speed)
    from .bench.harness import add_loss_parser, add_quality_parser, add_report_parser

    add_loss_parser(bsub)  # `voip-codec bench loss`: quality under loss per redundancy setting
    add_quality_parser(bsub)  # `voip-codec bench quality`: codecs side by side
    add_report_parser(bsub)  # `voip-codec bench report`: quality + loss + speed, Markdown/PNG
    p = bsub.add_parser("call", help="mouth-to-ear latency and wire bitrates of real calls")
    from .bench.call_bench import add_arguments as add_call_arguments
    from .bench.call_bench import run as run_call_bench

    add_call_arguments(p)
    p.set_defaults(func=run_call_bench)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from .audio import AudioError
    from .codec.config import ConfigError
    from .codec.loading import CheckpointError
    from .tokenfile import TokenFileError

    return (UserError, AudioError, ConfigError, CheckpointError, TokenFileError, OSError,
            ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except _user_errors() as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"voip-codec: error: {message or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("voip-codec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
