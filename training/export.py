"""Export the model of a training checkpoint (or a ``final``/``stage_*`` folder) to a folder.

    .venv/bin/python -m training.export runs/default/final voip_codec/assets/default_model

``source`` is a ``checkpoint.pt`` written by :mod:`training.train` or a folder written by
``save_pretrained``; the output is ``config.json`` + ``model.safetensors`` (float32) in the
official layout, re-loaded once to check it loads strictly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from voip_codec.codec.loading import from_pretrained, save_pretrained
from voip_codec.codec.model import FocalCodec

from .train import default_config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    args = ap.parse_args(argv)
    if args.source.suffix == ".pt":
        model = FocalCodec(default_config())
        model.load_state_dict(torch.load(args.source, map_location="cpu",
                                         weights_only=False)["model"])
    else:
        model = from_pretrained(args.source)
    model = model.float().eval()
    save_pretrained(model, args.dest)
    again = from_pretrained(args.dest)
    size = (args.dest / "model.safetensors").stat().st_size
    print(f"wrote {args.dest}: {again.num_parameters() / 1e6:.2f} M params, "
          f"{size / 2**20:.1f} MiB, codebook {again.codebook_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
