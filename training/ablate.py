"""Run a set of short training ablations one after another and tabulate their dev scores.

    nice -n 19 .venv/bin/python -m training.ablate --out runs/ablate --steps 600

Each ablation is a ``training.train`` run (stage C only, warm-started from ``--init``, the same
seed, batches and step count), so the rows differ only in the named options. A finished
ablation (``<out>/<name>/final`` exists) is not run again, so the command resumes after an
interruption. The table (``<out>/table.md``) gives the 6-clip dev STOI, distinct codes on those
clips, the output level and peak for 3 s of digital silence in, and the training time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ABLATIONS: dict[str, list[str]] = {
    "baseline": [],
    "clip+quiet": ["--clip-weight", "10", "--p-quiet", "0.15"],
    "clip+quiet+joint": ["--clip-weight", "10", "--p-quiet", "0.15", "--usage", "joint"],
    "clip+quiet+nofeat": ["--clip-weight", "10", "--p-quiet", "0.15", "--feat-weight", "0"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablate"))
    ap.add_argument("--init", type=Path, default=Path("voip_codec/assets/default_model"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="run only these ablations")
    args = ap.parse_args(argv)
    rows = []
    for name, extra in ABLATIONS.items():
        if args.only and name not in args.only:
            continue
        out = args.out / name
        if not (out / "final").exists():
            cmd = [sys.executable, "-m", "training.train", "--out", str(out), "--init",
                   str(args.init), "--steps-a", "0", "--steps-b", "0", "--steps-c",
                   str(args.steps), "--lr-c", str(args.lr), "--threads", str(args.threads),
                   "--print-every", "50", *extra]
            print(f"=== ablation {name}: {' '.join(cmd[2:])}", flush=True)
            subprocess.run(cmd, check=True)
        dev = json.loads((out / "stages.jsonl").read_text().splitlines()[-1])
        log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
        rows.append((name, " ".join(extra) or "(recipe as shipped)", dev, log[-1]["time"] / 60))
    lines = ["| ablation | options | dev STOI (6 clips) | dev codes | silence out dBFS / peak | "
             "train min |", "|---|---|---|---|---|---|"]
    for name, opts, dev, minutes in rows:
        lines.append(f"| {name} | `{opts}` | {dev['dev_stoi']:.3f} | {dev['dev_codes']} | "
                     f"{dev.get('silence_dbfs', float('nan')):.1f} / "
                     f"{dev.get('silence_peak', float('nan')):.2f} | {minutes:.1f} |")
    table = "\n".join(lines) + "\n"
    (args.out / "table.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
