"""Streaming real-time factor of a checkpoint: 10 s of speech in 1280-sample (80 ms) chunks.

    .venv/bin/python -m training.bench_rtf --model default --threads 2

Each chunk is pushed through :class:`StreamingEncoder` and its tokens straight through
:class:`StreamingDecoder` (encode + decode, as one end of a call does both); RTF = compute
time / audio time. Prints the median over ``--repeats`` runs and the worst chunk time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from voip_codec.codec.loading import from_pretrained
    from voip_codec.codec.streaming import StreamingDecoder, StreamingEncoder

    model = from_pretrained(args.model)
    n = int(args.seconds * 16000)
    clips = sorted((SPEECH / "dev").rglob("*.flac"))
    parts, total = [], 0
    for c in clips:  # real speech (dev split), concatenated up to the wanted length
        x, _ = sf.read(str(c), dtype="float32")
        parts.append(x)
        total += len(x)
        if total >= n:
            break
    sig = np.concatenate(parts)[:n] if parts else np.random.default_rng(0).standard_normal(n) * 0.05
    sig = sig.astype(np.float32)
    chunk = model.chunk_size
    rtfs, worst = [], 0.0
    for _ in range(args.repeats):
        enc, dec = StreamingEncoder(model), StreamingDecoder(model)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n, chunk):
                t = time.perf_counter()
                dec.push(enc.push(torch.from_numpy(sig[s:s + chunk])))
                worst = max(worst, time.perf_counter() - t)
        rtfs.append((time.perf_counter() - t0) / (n / 16000))
    print(f"model {args.model}: {model.num_parameters() / 1e6:.2f} M params, "
          f"{args.threads} threads, {args.seconds:.0f} s in {chunk}-sample chunks: "
          f"RTF {np.median(rtfs):.4f} (runs {', '.join(f'{r:.4f}' for r in rtfs)}), "
          f"worst chunk {worst * 1000:.1f} ms of {1000 * chunk / 16000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
