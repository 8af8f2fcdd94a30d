"""Dev STOI against training CPU minutes: re-score saved models with one check, plot the curve.

    .venv/bin/python -m training.progress --out docs/training_progress \\
        shipped=runs/shipped_v1@54.8 v2=runs/v2/final@runs/v2~shipped

Each argument is ``LABEL=MODEL_DIR@MINUTES``: the minutes are a number, or a run folder whose
``log.jsonl`` gives the training time of its last step, added to the minutes of the model it was
initialised from (``LABEL=DIR@RUN~BASE_LABEL``). With ``--gpu`` the new points' minutes are
accelerator minutes (:mod:`training.accel` runs); they are drawn apart and labelled. Every model is scored by the same 6-clip dev
check as training (``training.train.quick_dev``: the benchmark harness' aligned STOI), so the
points are comparable whatever check was used while they trained. Writes ``<out>.json`` and
``<out>.png``; with ``--append`` the points already in ``<out>.json`` are kept (not re-scored)
and the new ones added.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from voip_codec.codec.loading import from_pretrained

from .train import quick_dev


def _run_minutes(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    return float(rows[-1]["time"]) / 60.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix")
    ap.add_argument("--append", action="store_true",
                    help="keep the points already in <out>.json and score only the new ones")
    ap.add_argument("--gpu", action="store_true",
                    help="the new points were trained on a GPU machine (training.accel)")
    ap.add_argument("points", nargs="+", help="LABEL=MODEL_DIR@MINUTES or @RUN_DIR~BASE_LABEL")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    points: dict[str, dict[str, float | str]] = {}
    old = args.out.with_suffix(".json")
    if args.append and old.is_file():
        try:
            points = json.loads(old.read_text())
        except ValueError as exc:
            print(f"progress: error: {old} is not valid JSON: {exc}", file=sys.stderr)
            return 2
    for spec in args.points:
        try:
            label, rest = spec.split("=", 1)
            model_dir, when = rest.rsplit("@", 1)
        except ValueError:
            print(f"progress: error: expected LABEL=MODEL_DIR@MINUTES, got {spec!r}",
                  file=sys.stderr)
            return 2
        if "~" in when:
            run, base = when.rsplit("~", 1)
            if base not in points or not (Path(run) / "log.jsonl").is_file():
                print(f"progress: error: {spec!r}: needs {run}/log.jsonl and an earlier point "
                      f"labelled {base!r}", file=sys.stderr)
                return 2
            minutes = _run_minutes(Path(run)) + float(points[base]["minutes"])
        else:
            minutes = float(when)
        model = from_pretrained(model_dir).eval()
        with torch.inference_mode():
            dev = quick_dev(model)
        points[label] = {"model": model_dir, "minutes": round(minutes, 1),
                         "device": "gpu" if args.gpu else "cpu", **dev}
        print(f"{label}: {minutes:.1f} min, dev STOI {dev['dev_stoi']:.3f}, silence "
              f"{dev['silence_dbfs']:.1f} dBFS", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(points, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [float(p["minutes"]) for p in points.values()]
    ys = [float(p["dev_stoi"]) for p in points.values()]
    gpu = [p.get("device") == "gpu" for p in points.values()]
    ax.plot([x for x, g in zip(xs, gpu, strict=True) if not g],
            [y for y, g in zip(ys, gpu, strict=True) if not g], "o", label="CPU run")
    if any(gpu):
        ax.plot([x for x, g in zip(xs, gpu, strict=True) if g],
                [y for y, g in zip(ys, gpu, strict=True) if g], "s", color="C3",
                label="+ minutes on a shared H200 (training.accel)")
        ax.legend(fontsize=8, loc="lower right")
    for label, p in points.items():
        ax.annotate(label, (float(p["minutes"]), float(p["dev_stoi"])), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(0.75, color="grey", ls=":", lw=0.8)
    ax.text(min(xs), 0.752, "target (eval split): STOI 0.75", fontsize=8, va="bottom")
    ax.set_xlabel("training minutes (CPU: 2-core shared box, 1-2 threads; squares add GPU minutes)")
    ax.set_ylabel("dev STOI (6 clips, offline, aligned)")
    ax.set_title("default model: dev STOI against training time")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
