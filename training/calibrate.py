"""Calibrate a checkpoint's int8 mode: ``python -m training.calibrate [--model DIR]``.

Streams the first ``--clips`` train clips (8 s each) through the fp32 model, records the input
moments of the token-path int8 layers (:func:`voip_codec.codec.precision.int8_calibration`) and
writes them into the checkpoint folder as ``int8_calibration.safetensors``, tied to the model's
fingerprint. ``from_pretrained`` reads the file, and ``--precision int8`` then fits the int8
weights to those inputs. Run it again after retraining (a stale file is refused).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from voip_codec.audio import read_audio
from voip_codec.codec.loading import from_pretrained
from voip_codec.codec.precision import CALIBRATION_FILE, int8_calibration, save_calibration
from voip_codec.hub import BUNDLED_MODEL_DIR

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
"""``../shared/speech`` beside the checkout."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(BUNDLED_MODEL_DIR),
                   help="checkpoint folder (config.json + model.safetensors; default: the "
                        "bundled model), written into")
    p.add_argument("--speech", default=None,
                   help="folder of FLAC clips (default: ../shared/speech/train)")
    p.add_argument("--clips", type=int, default=16, help="clips to stream (default 16)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds of each (default 8)")
    args = p.parse_args(argv)
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        print(f"error: {folder} is not a checkpoint folder (no config.json)", file=sys.stderr)
        return 2
    speech = Path(args.speech) if args.speech else SPEECH / "train"
    files = sorted(speech.rglob("*.flac"))[:args.clips]
    if not files or args.clips < 1 or args.seconds <= 0:
        print(f"error: no FLAC clips under {speech} (or --clips/--seconds not positive)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = folder / CALIBRATION_FILE
    out.unlink(missing_ok=True)  # replaced below; a stale one would be refused on load
    model = from_pretrained(str(folder), precision="fp32")
    clips = [torch.from_numpy(read_audio(f, model.sample_rate_input)[0]
                              [:int(args.seconds * model.sample_rate_input)]) for f in files]
    calibration = int8_calibration(model, clips)
    save_calibration(calibration, out, model.fingerprint())
    print(f"wrote {out}: {len(calibration)} layers from {len(files)} clips of {speech} "
          f"({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
