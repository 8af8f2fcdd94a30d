"""The ``voip-codec`` command line.

Sub-commands: ``encode``, ``decode``, ``info``, ``conformance``, ``demo``, ``simulate``,
``call``, ``codecs``, ``serve``, ``models``, ``export`` (see :data:`COMMANDS`), plus those of installed plugins
(:data:`PLUGIN_GROUP`: ``bench`` comes from the ``voip-codec-bench`` distribution). Building the
parser imports neither torch nor aiortc, av or aiohttp: each command imports what it needs when
it runs, so ``voip-codec --help``, ``serve`` and ``codecs`` work with only the ``server`` extra.

Errors in user input (missing or unreadable files, a token file made by another model, a
truncated file, missing weights, a missing optional package, an output
folder that does not exist) print one line
``voip-codec: error: ...`` and exit with status 1 (2 for bad usage); never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from .errors import UserError, check_output_path
from .threads import add_threads_argument, apply_threads

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
    check_output_path(args.output)
    if args.backend == "onnx":
        return _encode_onnx(args)
    import numpy as np
    import torch

    from .audio import read_audio
    from .codec.streaming import StreamingEncoder
    from .wire.tokenfile import TokenFile, write_token_file

    apply_threads(args.threads, load_torch=True)
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


def _onnx_model(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .export.backend import load_onnx_model

    if args.precision not in (None, "fp32", "int8"):
        raise CliError(f"--backend onnx computes in fp32 or int8; --precision {args.precision} "
                       "applies to the torch backend")
    try:
        return load_onnx_model(args.model, threads=args.threads, precision=args.precision)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _encode_onnx(args: argparse.Namespace) -> int:
    """``encode --backend onnx``: the same token file, computed by onnxruntime."""
    from .audio import read_audio
    from .export.backend import encode_pcm
    from .wire.tokenfile import TokenFile, write_token_file

    model = _onnx_model(args)
    pcm, _ = read_audio(args.input, model.sample_rate_input)
    tokens = encode_pcm(model, pcm)
    write_token_file(args.output, TokenFile(tokens, model.bits_per_token,
                                            model.sample_rate_input, model.sample_rate_output,
                                            len(pcm), model.fingerprint, model.model_id))
    if not args.quiet:
        print(f"{args.input} -> {args.output}: {len(tokens)} tokens x {model.bits_per_token} "
              f"bits ({len(pcm) / model.sample_rate_input:.2f} s, onnxruntime, "
              f"{Path(args.output).stat().st_size} bytes)", file=sys.stderr)
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Token file -> audio file at the model's output rate (24 kHz)."""
    from .wire.tokenfile import read_token_file

    check_output_path(args.output)
    tf = read_token_file(args.input)
    if args.backend == "onnx":
        return _decode_onnx(args, tf)
    import numpy as np
    import torch

    from .audio import write_audio
    from .codec.streaming import StreamingDecoder

    apply_threads(args.threads, load_torch=True)
    model = _load_model(args.model, args.precision)
    _check_token_file_model(args, tf, model.bits_per_token, model.fingerprint(), model.model_id)
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


def _check_token_file_model(args: argparse.Namespace, tf: Any, bits: int, fingerprint: bytes,
                            model_id: str | None) -> None:
    if tf.bits != bits:
        raise CliError(f"{args.input} holds {tf.bits}-bit tokens (model {tf.model_id!r}) but the "
                       f"decoding model uses {bits}-bit tokens; pass the matching --model")
    if tf.fingerprint != fingerprint and not args.force:
        raise CliError(f"{args.input} was made with model {tf.model_id!r}, whose weights or "
                       f"configuration differ from the decoding model {model_id!r}; pass the "
                       "same --model (or --force to decode anyway)")


def _decode_onnx(args: argparse.Namespace, tf: Any) -> int:
    """``decode --backend onnx``: the same audio, computed by onnxruntime."""
    import numpy as np

    from .audio import write_audio
    from .export.backend import decode_tokens

    model = _onnx_model(args)
    _check_token_file_model(args, tf, model.bits_per_token, model.fingerprint, model.model_id)
    wave = decode_tokens(model, tf.tokens) if len(tf.tokens) else np.zeros(0, np.float32)
    n_out = int(tf.num_samples * model.sample_rate_output / model.sample_rate_input)
    wave = wave[:n_out] if len(wave) >= n_out else np.pad(wave, (0, n_out - len(wave)))
    write_audio(args.output, wave, model.sample_rate_output)
    if not args.quiet:
        print(f"{args.input} -> {args.output}: {len(wave) / model.sample_rate_output:.2f} s at "
              f"{model.sample_rate_output} Hz (onnxruntime)", file=sys.stderr)
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

    argv = [args.directory, "--atol", str(args.atol), "--rtol", str(args.rtol),
            "--threads", str(args.threads)]
    return conformance_main(argv + (["--json"] if args.json else []))


_EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "codec", "safetensors": "codec", "soundfile": "codec", "soxr": "codec",
    "tqdm": "codec", "pycodec2": "codec", "av": "webrtc", "aiortc": "webrtc",
    "aiohttp": "server", "pystoi": "eval", "pesq": "eval", "scipy": "eval",
    "matplotlib": "eval", "huggingface_hub": "hub", "onnx": "onnx", "onnxruntime": "onnx",
}
"""Top-level modules of optional dependencies -> the extra of pyproject.toml that installs them."""


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """One line that names the missing package and the extra that installs it."""
    top = (exc.name or "").split(".")[0]
    if not top:
        return str(exc)
    extra = _EXTRA_OF_MODULE.get(top)
    if extra is None:
        return f"this needs the Python package {top!r}, which is not installed"
    hint = f"pip install 'voip-codec[{extra}]'"
    if top == "torch":
        hint = "pip install torch==2.13.0 (the CPU build, see the README), then " + hint
    return f"this needs the Python package {top!r}, which is not installed: {hint}"


def _first_sentence(text: str) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]


def cmd_codecs(args: argparse.Namespace) -> int:
    """List registered codecs with their rates; those that cannot load here say why."""
    from .codecs.registry import available_codecs, get_codec

    for name in available_codecs():
        try:
            info = get_codec(name).info
        except ModuleNotFoundError as exc:
            print(f"{name:20s} unavailable: {_first_sentence(missing_module_message(exc))}")
            continue
        except (ImportError, OSError, ValueError) as exc:
            print(f"{name:20s} unavailable: {_first_sentence(str(exc))}")
            continue
        print(f"{name:20s} id {info.codec_id:3d}  {info.bitrate / 1000:6.2f} kbps  "
              f"{info.frame_ms:.0f} ms frames  {info.input_sample_rate} -> "
              f"{info.output_sample_rate} Hz")
    return 0


def add_file_commands(sub: Any) -> None:
    """Register ``encode``, ``decode``, ``info`` and ``conformance``."""

    def model_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="default",
                       help="checkpoint: 'default' (bundled), a directory with config.json + "
                            "model.safetensors, a .json path, a hub id found in the local "
                            "Hugging Face cache, or focalcodec-65k|4k|2k")
        add_threads_argument(p)
        p.add_argument("--precision", choices=("fp32", "bf16", "int8", "int4"), default=None,
                       help="compute precision (default: as stored in the checkpoint; fp32 "
                            "checkpoints convert to bf16/int8/int4 on load, see README 'Fast "
                            "CPU inference'; int4: int8 tokens, 4-bit decoder weights)")

    def backend_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                       help="torch (default) or onnxruntime: --model may then also be a folder "
                            "written by `voip-codec export onnx` (no torch needed); other "
                            "models are exported once into ~/.cache/voip-codec/onnx")

    p = sub.add_parser("encode", help="audio file -> token file")
    p.add_argument("input", help="audio file (any rate / channel count / format av reads)")
    p.add_argument("output", help="token file to write (.fct)")
    model_arg(p)
    backend_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token file -> audio file (24 kHz)")
    p.add_argument("input", help="token file (.fct)")
    p.add_argument("output", help="audio file to write (.wav, .flac, ...)")
    model_arg(p)
    backend_arg(p)
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
    add_threads_argument(p)
    p.set_defaults(func=cmd_conformance)


def add_codecs_command(sub: Any) -> None:
    """Register ``codecs``."""
    p = sub.add_parser("codecs", help="list the codecs")
    p.set_defaults(func=cmd_codecs)


COMMANDS: tuple[tuple[str, str], ...] = (
    ("voip_codec.cli", "add_file_commands"),  # encode, decode, info, conformance
    ("voip_codec.webrtc.commands", "add_demo_parser"),
    ("voip_codec.webrtc.commands", "add_simulate_parser"),
    ("voip_codec.webrtc.commands", "add_call_parser"),
    ("voip_codec.cli", "add_codecs_command"),
    ("signaling.cli", "add_parser"),  # serve: the signaling server (no torch needed)
    ("voip_codec.models_cli", "add_parser"),  # models list|pull: official checkpoints
    ("voip_codec.export.cli", "add_parser"),  # export onnx: the steps for onnxruntime/browsers
)
"""The built-in subcommands, in help order: ``(module, function)``; the function takes the
subparsers object and adds its command(s). A module listed here must import without torch,
aiortc, av or aiohttp: each command imports what it needs inside the function it runs. A new
built-in command is one more line here."""

PLUGIN_GROUP = "voip_codec.cli_plugins"
"""Entry point group of commands that other distributions add (``name = "module:function"``,
the function as in :data:`COMMANDS`). The benchmarks (``benchmarks/``, distribution
``voip-codec-bench``) add ``bench`` this way; built-in commands win over a plugin of the same
name."""

_PLUGIN_HINTS: dict[str, str] = {
    "bench": "the benchmarks are not installed: they are the separate 'voip-codec-bench' "
             "distribution, pip install -e ./benchmarks from a checkout of the repository "
             "(see the README)",
}
"""One line for a user who types a plugin's command without the plugin installed."""


class _MissingPlugin:
    """``func`` of a plugin command that is not installed or failed to load."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __call__(self, args: argparse.Namespace) -> int:
        raise CliError(self.message)


def _plugin_entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests).

    Building it imports no torch, aiortc, av or aiohttp (plugins must keep to that too).
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="voip-codec",
        description="FocalCodec-Stream neural speech codec for real-time calls.",
    )
    parser.add_argument("--version", action="version", version=f"voip-codec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module, function in COMMANDS:
        getattr(importlib.import_module(module), function)(sub)
    names = set(sub.choices)
    for ep in _plugin_entry_points():
        if ep.name in names:
            continue
        names.add(ep.name)
        try:
            ep.load()(sub)
        except ImportError as exc:
            reason = (missing_module_message(exc) if isinstance(exc, ModuleNotFoundError)
                      else str(exc))
            p = sub.add_parser(ep.name, help=f"(failed to load: {ep.value})")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(func=_MissingPlugin(f"the {ep.name!r} command ({ep.value}) failed "
                                               f"to load: {reason}"))
    for name, hint in _PLUGIN_HINTS.items():
        if name not in names:
            p = sub.add_parser(name, help=f"(not installed; `voip-codec {name}` says how to "
                                          "get it)")
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(func=_MissingPlugin(hint))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _PLUGIN_HINTS and argv[0] not in {
            ep.name for ep in _plugin_entry_points()}:
        # before parsing, so that any arguments after the missing command get the hint too
        print(f"voip-codec: error: {_PLUGIN_HINTS[argv[0]]}", file=sys.stderr)
        return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ModuleNotFoundError as exc:
        print(f"voip-codec: error: {missing_module_message(exc)}", file=sys.stderr)
        return 1
    except (UserError, ImportError, OSError, ValueError) as exc:
        # UserError covers CliError; OSError covers CheckpointError (a FileNotFoundError);
        # ValueError covers AudioError, ConfigError, TokenFileError, CodecError and bad option
        # values. A multi-line message is folded onto one line.
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"voip-codec: error: {message or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("voip-codec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
