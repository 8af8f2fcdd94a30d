"""``voip-codec models list`` and ``voip-codec models pull NAME``: the official checkpoints.

Registering the sub-command imports nothing beyond the standard library; ``pull`` imports
``huggingface_hub`` when it runs, and neither action needs torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import hub

__all__ = ["add_parser"]


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _kbps(config: Path) -> str:
    """Token bitrate of a checkpoint from its config: log2(codebook) bits at 50 tokens/s."""
    try:
        size = int(json.loads(config.read_text())["quantizer_config"]["codebook_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"
    return f"{50 * (size.bit_length() - 1) / 1000:.2f}"


def cmd_list(args: argparse.Namespace) -> int:
    """Print each known model: bundled, cached or missing, with its size and folder."""
    rows = [("NAME", "KBPS", "STATUS", "SIZE", "WHERE")]
    default = hub.bundled()
    if default is not None:
        rows.append(("default", _kbps(default.config), "bundled", _size(default.size_bytes), str(default.folder)))
    else:
        rows.append(("default", "-", "missing", "-", "not in this build"))
    for name, model in hub.OFFICIAL_MODELS.items():
        found = hub.find_cached(model.repo_id)
        if found is None:
            rows.append((name, f"{model.kbps:.2f}", "missing", "-",
                         f"{model.repo_id} (voip-codec models pull {name})"))
        else:
            rows.append((name, _kbps(found.config), "cached", _size(found.size_bytes),
                         str(found.folder)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
              + "  " + row[4])
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Download an official checkpoint into the Hugging Face cache."""
    found = hub.pull(args.name, revision=args.revision, progress=not args.quiet,
                     log=None if args.quiet else lambda line: print(line, file=sys.stderr))
    print(f"{args.name}: {_size(found.size_bytes)} in {found.folder}; use it with "
          f"--model {args.name}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``models`` (with ``list`` and ``pull``) on the CLI's sub-parsers."""
    p = sub.add_parser("models", help="list and download the official FocalCodec checkpoints",
                       description="The bundled model and the official causal checkpoints "
                                   "(Hugging Face hub, cached in the standard Hugging Face "
                                   "cache).")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    lp = msub.add_parser("list", help="each model: bundled, cached or missing, size, folder")
    lp.set_defaults(func=cmd_list)
    pp = msub.add_parser("pull", help="download an official checkpoint (needs the hub extra)",
                         description="Download config.json and the weights of an official "
                                     "checkpoint with huggingface_hub into the Hugging Face "
                                     "cache ($HF_HUB_CACHE or $HF_HOME/hub, from $HF_ENDPOINT); "
                                     "then --model NAME finds it. Files already there are kept.")
    pp.add_argument("name", choices=list(hub.OFFICIAL_MODELS), help="which checkpoint")
    pp.add_argument("--revision", default="main",
                    help="branch, tag or commit of the hub repository (default main)")
    pp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pp.set_defaults(func=cmd_pull)
