"""``voip-codec export onnx --model default OUT/``: the streaming steps as ONNX graphs.

Registering the command imports only the standard library; torch and onnx load when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["add_parser"]

_AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """Export the encoder and decoder steps of ``--model`` to ``output`` and print a summary."""
    import torch

    from ..codec.loading import from_pretrained
    from .onnx import export_onnx

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file; give a folder (created if missing)")
    if not out.parent.is_dir():
        raise UserError(f"output folder {out.parent} does not exist (create it first)")
    torch.set_num_threads(args.threads)
    model = from_pretrained(args.model, precision="fp32")
    manifest = export_onnx(model, out)
    if args.precision == "int8":
        from .quantize import quantize_export

        quantize_export(model, out, out)
    size = sum((out / manifest[side]["file"]).stat().st_size for side in ("encoder", "decoder"))
    if not args.quiet:
        print(f"wrote {out}: {manifest['encoder']['file']} + {manifest['decoder']['file']} "
              f"({size / 2**20:.1f} MiB), manifest.json; model {manifest['model_id'] or '?'}, "
              f"{manifest['bits_per_token']}-bit tokens, "
              f"{len(manifest['encoder']['state'])} + {len(manifest['decoder']['state'])} "
              f"state tensors, {args.precision} weights", file=sys.stderr)
    if args.check is not None:
        _check(model, out, args.check)
    return 0


def _check(model: Any, out: Path, sources: list[str]) -> None:
    """Compare the export with torch on speech and print the report."""
    from ..webrtc.commands import SAMPLE_SPEECH
    from .check import check_export
    from .runtime import OnnxCodecModel

    clips: list[Path] = []
    for source in sources or [str(SAMPLE_SPEECH)]:
        path = Path(source)
        if path.is_dir():
            clips += sorted(p for p in path.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES)
        elif path.is_file():
            clips.append(path)
        else:
            raise UserError(f"--check: no such file or folder: {path}")
    if not clips:
        raise UserError(f"--check: no audio files ({', '.join(_AUDIO_SUFFIXES)}) in "
                        f"{', '.join(sources)}")
    report = check_export(model, OnnxCodecModel(out, threads=1), clips, threads=1)
    print("\n".join(report.lines()))


def add_parser(sub: Any) -> None:
    """Register ``export`` (sub-command ``onnx``)."""
    p = sub.add_parser("export", help="export the codec for other runtimes (onnx)")
    kinds = p.add_subparsers(dest="format", metavar="FORMAT")
    kinds.required = True
    q = kinds.add_parser("onnx", help="encoder and decoder steps (one 80 ms chunk per call) as "
                                      "ONNX graphs with flat state tensors, for onnxruntime "
                                      "and the browser page")
    q.add_argument("output", help="folder to write (created if missing)")
    q.add_argument("--model", default="default",
                   help="checkpoint: 'default' (bundled), a folder with config.json + "
                        "model.safetensors, or focalcodec-65k|4k|2k (see `voip-codec models`)")
    q.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    q.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                   help="fp32 graphs (default), or int8 weights for the layers torch's int8 "
                        "mode quantises (activations quantised per call; for onnxruntime, not "
                        "for the browser page)")
    q.add_argument("--check", nargs="*", metavar="AUDIO", default=None,
                   help="then stream speech (files or folders; default: the bundled sample) "
                        "through torch and onnxruntime at 1 thread, chunk by chunk side by "
                        "side, and print token agreement, output SNR and per-chunk times")
    q.add_argument("-q", "--quiet", action="store_true", help="no summary")
    q.set_defaults(func=cmd_export_onnx)
