"""Continue training the default model on an accelerator for a fixed number of minutes.

The CPU trainer (:mod:`training.train`) is deterministic and resumable; this one is built for a
short lease of a GPU machine that cannot reach the network or ``../shared``:

* ``pack`` (here): the train split as 8 Ogg Opus files (~21 kbit/s, about 27 MB for 173 min)
  plus clip offsets, small enough to travel with the working tree::

      python -m training.accel pack --out .gpu/data

* ``prepare`` (there): decode the files in parallel into one float32 array, once for all runs::

      python -m training.accel prepare --data .gpu/data --cache /tmp/train16k.npy

* ``train`` (there): stage C (end to end through the BSQ) from ``--init`` for ``--minutes``,
  with batches drawn by DataLoader workers, a warm-up then a cosine learning rate over the time
  budget, and fp16 weights written atomically to ``<out>/model.safetensors`` every
  ``--save-seconds`` (a run cut off by the lease still leaves its last save)::

      python -m training.accel train --cache /tmp/train16k.npy --init voip_codec/assets/default_model \\
          --out $OUT/a --minutes 6 --batch 128 --lr-c 2e-4 --clip-weight 10 --p-quiet 0.15

* ``unpack`` (here): turn a brought-back fp16 file into a ``save_pretrained`` folder (fp32) that
  ``training.evaluate`` and ``training.export`` read::

      python -m training.accel unpack /work/.device/.../a/model.safetensors runs/gpu_a/final

Every other option is :func:`training.train.build_parser`'s and means the same. Opus-coded
targets differ from the FLAC ones by about 16 dB waveform SNR (perceptually near transparent at
this rate); the model is scored here on the FLAC dev/eval splits as always.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

SR = 16000
PARTS = 8


def pack(out: Path, cache: Path | None = None, level: float = 0.94) -> None:
    """The train split of ``../shared/speech`` as Opus parts in ``out``."""
    from .data import load_split
    from .train import ROOT, SPEECH

    audio, offsets = load_split(SPEECH, "train", cache or ROOT / "runs" / "cache" / "train16k.npy")
    pack_arrays(audio, offsets, out, level)


def pack_arrays(audio: np.ndarray, offsets: np.ndarray, out: Path, level: float = 0.94) -> None:
    """Clips concatenated in ``audio`` (16 kHz, clip i is ``audio[offsets[i]:offsets[i+1]]``) as
    ``PARTS`` Ogg Opus files with their own offsets. ``level`` is libsndfile's compression level
    (0.94: about 21 kbit/s)."""
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    n = len(offsets) - 1
    cuts = [round(i * n / PARTS) for i in range(PARTS + 1)]
    for k in range(PARTS):
        s, e = int(offsets[cuts[k]]), int(offsets[cuts[k + 1]])
        sf.write(str(out / f"train{k}.ogg"), audio[s:e], SR, format="OGG", subtype="OPUS",
                 compression_level=level)
        np.save(out / f"train{k}.offsets.npy", (offsets[cuts[k]:cuts[k + 1] + 1] - s).astype(np.int64))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"packed {n} clips, {len(audio) / SR / 60:.1f} min into {out} ({size / 1e6:.1f} MB)")


def _decode(path: str) -> np.ndarray:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32")
    if sr != SR:
        raise ValueError(f"{path}: {sr} Hz, expected {SR}")
    return x


def prepare(data: Path, cache: Path) -> None:
    t0 = time.time()
    files = [str(data / f"train{k}.ogg") for k in range(PARTS)]
    with ProcessPoolExecutor(PARTS) as pool:
        parts = list(pool.map(_decode, files))
    offs = [np.load(data / f"train{k}.offsets.npy") for k in range(PARTS)]
    offsets, base = [np.zeros(1, dtype=np.int64)], 0
    for x, o in zip(parts, offs, strict=True):
        if len(x) < o[-1]:
            raise ValueError(f"decoded {len(x)} samples, offsets need {o[-1]}")
        offsets.append(o[1:] + base)
        base += int(o[-1])
    audio = np.concatenate([x[: int(o[-1])] for x, o in zip(parts, offs, strict=True)])
    np.save(cache, audio.astype(np.float32))
    np.save(cache.with_suffix(".offsets.npy"), np.concatenate(offsets))
    print(f"decoded {len(np.concatenate(offsets)) - 1} clips, {len(audio) / SR / 60:.1f} min "
          f"in {time.time() - t0:.1f} s", flush=True)


class _Batches(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Endless (input, target) batches; each DataLoader worker draws with its own seed."""

    def __init__(self, cache: Path, batch: int, seconds: float, p_quiet: float, seed: int) -> None:
        self.cache, self.batch, self.seconds, self.p_quiet, self.seed = cache, batch, seconds, p_quiet, seed

    def __iter__(self):  # type: ignore[no-untyped-def]
        from .data import CropSampler

        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        audio = np.load(self.cache, mmap_mode="r")
        offsets = np.load(self.cache.with_suffix(".offsets.npy"))
        sampler = CropSampler(audio, offsets, seconds=self.seconds, p_quiet=self.p_quiet)
        while True:
            x, y = sampler.batch(rng, self.batch)
            yield torch.from_numpy(x), torch.from_numpy(y)


def _save_fp16(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> int:
    from voip_codec.codec.loading import from_pretrained
    from voip_codec.codec.model import FocalCodec

    from .gan import MultiResolutionSTFTDiscriminator
    from .losses import SpectralLoss, code_stats
    from .train import default_config, optimise, step_losses, trainable

    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model = FocalCodec(default_config())
    model.load_state_dict(from_pretrained(args.init).state_dict())
    model.to(dev).train()
    spec = SpectralLoss().to(dev)
    disc = MultiResolutionSTFTDiscriminator().to(dev) if args.adv_weight > 0 else None
    opt_d = (torch.optim.AdamW(disc.parameters(), lr=args.lr_d, betas=(0.8, 0.99))
             if disc is not None else None)
    params = trainable(model, "C")
    opt = torch.optim.AdamW(params, lr=args.lr_c, betas=(0.9, 0.98), weight_decay=0.01)
    loader = torch.utils.data.DataLoader(
        _Batches(args.cache, args.batch, args.seconds, args.p_quiet, args.seed), batch_size=None,
        num_workers=args.workers, pin_memory=dev.type == "cuda",
        prefetch_factor=4 if args.workers else None, persistent_workers=args.workers > 0)
    batches = iter(loader)
    budget = args.minutes * 60
    print(f"{out.name}: {dev}, batch {args.batch} x {args.seconds:g} s, lr {args.lr_c:g}, "
          f"adv {args.adv_weight:g}, {budget / 60:g} min", flush=True)
    t0 = time.time()
    last_save, step, wait = t0, 0, 0.0
    log = (out / "log.jsonl").open("a")
    while True:
        elapsed = time.time() - t0
        if elapsed > budget or (args.max_steps and step >= args.max_steps):
            break
        frac = min(1.0, elapsed / budget)
        lr = args.lr_c * (min(1.0, (step + 1) / args.warmup)
                          * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))))
        for g in opt.param_groups:
            g["lr"] = lr
        tw = time.time()
        x, y = next(batches)
        wait += time.time() - tw
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        fakes: list[torch.Tensor] = []
        loss, logs, u = step_losses(model, spec, x, y, "C", args,
                                    disc if disc is not None and step >= args.adv_start else None,
                                    fakes if disc is not None else None)
        if not math.isfinite(logs["loss"]):
            print(f"{out.name}: non-finite loss at step {step}; stopping with the last save",
                  flush=True)
            return 1
        gnorm, d_loss = optimise(loss, opt, params, disc, opt_d, fakes)
        if d_loss is not None:
            logs["disc"] = d_loss
        step += 1
        if step % args.log_every == 0 or step == 1:
            uniq, _ = code_stats(u)
            rec = {"step": step, "lr": lr, "gnorm": float(gnorm), "unique_codes": uniq,
                   "time": round(time.time() - t0, 1), "data_wait": round(wait, 1), **logs}
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % args.print_every == 0 or step == 1:
            el = time.time() - t0
            parts = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
            print(f"{out.name} {step} {el:.0f}s {step / el:.2f} it/s wait {wait:.0f}s {parts}",
                  flush=True)
        if time.time() - last_save > args.save_seconds:
            _save_fp16(model, out / "model.safetensors")
            last_save = time.time()
    _save_fp16(model, out / "model.safetensors")
    el = time.time() - t0
    print(f"{out.name}: done, {step} steps in {el / 60:.1f} min ({step / el:.2f} it/s, "
          f"{step * args.batch * args.seconds / 3600:.1f} h of audio)", flush=True)
    return 0


def unpack(src: Path, dst: Path) -> None:
    from safetensors.torch import load_file

    from voip_codec.codec.loading import save_pretrained
    from voip_codec.codec.model import FocalCodec

    from .train import default_config

    model = FocalCodec(default_config())
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    model.load_state_dict(state)
    model.eval()
    save_pretrained(model, dst)
    print(f"wrote {dst}")


def main(argv: list[str] | None = None) -> int:
    from .train import build_parser

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("pack", "prepare", "train", "unpack"):
        print("usage: python -m training.accel {pack,prepare,train,unpack} ...", file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "pack":
        ap = argparse.ArgumentParser(prog="training.accel pack")
        ap.add_argument("--out", type=Path, required=True)
        a = ap.parse_args(rest)
        pack(a.out)
        return 0
    if cmd == "prepare":
        ap = argparse.ArgumentParser(prog="training.accel prepare")
        ap.add_argument("--data", type=Path, required=True)
        ap.add_argument("--cache", type=Path, required=True)
        a = ap.parse_args(rest)
        prepare(a.data, a.cache)
        return 0
    if cmd == "unpack":
        ap = argparse.ArgumentParser(prog="training.accel unpack")
        ap.add_argument("src", type=Path)
        ap.add_argument("dst", type=Path)
        a = ap.parse_args(rest)
        unpack(a.src, a.dst)
        return 0
    ap = build_parser("training.accel train: stage C on an accelerator for a fixed time")
    ap.add_argument("--cache", type=Path, required=True, help="the array `prepare` wrote")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--save-seconds", type=float, default=60.0)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps too")
    a = ap.parse_args(rest)
    if a.init is None:
        ap.error("--init is required (the model to continue)")
    return train(a)


if __name__ == "__main__":
    # run the imported module, not this __main__ copy: worker processes pickle its functions
    from training.accel import main as _main

    sys.exit(_main())
