"""Train the small default FocalCodec-Stream model (one command, resumable, seeded).

    nice -n 10 .venv/bin/python -m training.train --out runs/default --seed 0

Kill it at any time and rerun the same command: it continues from ``<out>/checkpoint.pt``.
The schedule is fixed in steps (``--steps-a/b/c``) so that a run is deterministic for a seed;
size it from the steps/s printed in the first minute. Outputs in ``<out>``: ``log.jsonl`` (one
line per logged step), ``loss.png``, ``checkpoint.pt`` and ``final/`` (``config.json`` +
``model.safetensors`` via ``save_pretrained``).

Stages (see docs/training.md for the reasoning):

* **A** - autoencoder with continuous latents: encoder -> compressor -> L2-normalised latents
  (no quantisation) -> decompressor -> vocoder, trained with spectral losses at 24 kHz plus a
  feature loss pulling the decompressor output towards the (detached) encoder features.
* **B** - quantiser stage as in the FocalCodec recipe: encoder and vocoder frozen; compressor ->
  BSQ (straight-through) -> decompressor trained to reproduce the frozen encoder's features
  (normalised MSE) plus the BSQ entropy term.
* **C** - joint fine-tuning end to end through the BSQ: spectral losses + feature MSE + entropy.
  With ``--adv-weight`` > 0, stage C is adversarial too: a multi-resolution STFT discriminator
  (:mod:`training.gan`) trains beside the codec, and after ``--adv-start`` steps its hinge loss and
  feature matching (``--fm-weight``) join the generator's loss.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from voip_codec.codec.config import (
    BSQConfig,
    FocalCodecConfig,
    FocalDecoderConfig,
    FocalEncoderConfig,
    WaveNeXtConfig,
    WavLMConfig,
)
from voip_codec.codec.loading import save_pretrained
from voip_codec.codec.model import FocalCodec

from .data import CropSampler, load_split
from .gan import (
    MultiResolutionSTFTDiscriminator,
    adversarial_view,
    discriminator_loss,
    generator_losses,
)
from .losses import (
    SpectralLoss,
    bit_usage_loss,
    bsq_entropy,
    clip_penalty,
    code_stats,
    ste_codes,
)

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"


def default_config(codebook_size: int = 65536) -> FocalCodecConfig:
    """The shipped small model: same module types as the official causal model, smaller."""
    bits = codebook_size.bit_length() - 1
    dim = 192
    return FocalCodecConfig(
        encoder=WavLMConfig(hidden_dims=(48, 64, 64, 96, 96, 128, 128), num_layers=2, dim=dim,
                            ffn_dim=384, num_heads=4, causal=True, window_size=64,
                            lookahead_size=3),
        compressor=FocalEncoderConfig(input_dim=dim, output_dim=bits, hidden_dims=(224, 160, 128),
                                      causal=True, window_size=64),
        quantizer=BSQConfig(codebook_size=codebook_size),
        decompressor=FocalDecoderConfig(input_dim=bits, output_dim=dim,
                                        hidden_dims=(128, 160, 224), causal=True, window_size=64,
                                        last_window_size=64, lookahead_size=3),
        decoder=WaveNeXtConfig(input_dim=dim, num_layers=5, dim=256, ffn_dim=640, kernel_size=7,
                               hop_length=480, causal=True),
    )


def _lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _norm_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.detach()
    return F.mse_loss(pred, target) / (target.var() + 1e-6)


STAGES = ("A", "B", "C")


def trainable(model: FocalCodec, stage: str) -> list[torch.nn.Parameter]:
    mods = {
        "A": [model.encoder, model.compressor, model.decompressor, model.decoder],
        "B": [model.compressor, model.decompressor],
        "C": [model.encoder, model.compressor, model.decompressor, model.decoder],
    }[stage]
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params


def step_losses(model: FocalCodec, spec: SpectralLoss, x: torch.Tensor, y: torch.Tensor,
                stage: str, args: argparse.Namespace,
                disc: MultiResolutionSTFTDiscriminator | None = None,
                fakes: list[torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The loss of one step and its logged parts.

    With ``disc`` given (stage C of an adversarial run), the discriminator's generator terms are
    added and the decoded batch (cropped to the target's length) is appended to ``fakes`` for the
    discriminator's own step.
    """
    if stage == "B":
        with torch.no_grad():
            feats = model.encoder(x)[0]
    else:
        feats = model.encoder(x)[0]
    raw = model.compressor(feats)[0]
    u = F.normalize(raw, p=2.0, dim=-1, eps=1e-12)
    if stage == "A":
        # continuous latents for part of the batch, straight-through BSQ codes for the rest
        # (like quantiser dropout), so the sign pattern must carry information from the start
        quant = (torch.rand(u.shape[0], 1, 1) < args.a_quant_frac).to(u.dtype)
        codes = quant * ste_codes(u) + (1 - quant) * u
    else:
        codes = ste_codes(u)
    qfeats = model.decompressor(codes)[0]
    logs: dict[str, float] = {}
    feat = _norm_mse(qfeats, feats)
    h_s, h_cb = bsq_entropy(u, beta=args.bsq_beta, beta_codebook=args.bsq_beta_codebook)
    if args.usage == "grouped":
        aux = args.entropy_weight * (h_s - args.codebook_gamma * h_cb)
    else:  # joint bit balance + decorrelation instead of the saturating grouped entropy
        usage = bit_usage_loss(u)
        aux = args.entropy_weight * h_s + args.usage_weight * usage
        logs["usage"] = float(usage.detach())
    logs.update(feat=float(feat.detach()), h_sample=float(h_s.detach()),
                h_codebook=float(h_cb.detach()))
    if stage == "B":
        loss = feat + aux
    else:
        head_out: list[torch.Tensor] = []
        hook = model.decoder.head.proj.register_forward_hook(lambda m, i, o: head_out.append(o))
        try:
            wave = model.decoder(qfeats)[0]
        finally:
            hook.remove()
        n = min(wave.shape[-1], y.shape[-1])
        sl = spec(wave[:, :n], y[:, :n])
        rec = sl["mel"] + args.mag_weight * sl["mag"] + sl["sc"]
        if args.clip_weight:
            clip = clip_penalty(head_out[0])
            rec = rec + args.clip_weight * clip
            logs["clip"] = float(clip.detach())
        logs.update({k: float(v.detach()) for k, v in sl.items()})
        loss = rec + args.feat_weight * feat
        if stage == "C" or args.entropy_in_a:
            loss = loss + aux
        if fakes is not None or disc is not None:
            real_v, fake_v = adversarial_view(y[:, :n], wave[:, :n], args.adv_items,
                                              int(args.adv_seconds * 24000))
        if fakes is not None:
            fakes += [real_v, fake_v]
        if disc is not None:
            adv, fm = generator_losses(disc, real_v, fake_v)
            loss = loss + args.adv_weight * adv + args.fm_weight * fm
            logs.update(adv=float(adv.detach()), fm=float(fm.detach()))
    logs["loss"] = float(loss.detach())
    return loss, logs, u


def optimise(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
             disc: MultiResolutionSTFTDiscriminator | None = None,
             opt_d: torch.optim.Optimizer | None = None,
             fakes: list[torch.Tensor] | None = None, clip: float | None = 5.0,
             ) -> tuple[float, float | None]:
    """One codec update from ``loss`` (gradient norm clipped to ``clip``), then, with a
    discriminator and the (real, fake) views ``step_losses`` collected in ``fakes``, one
    discriminator update. Returns the gradient norm (nan when not clipped) and the
    discriminator loss (None without one)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if clip else float("nan")
    opt.step()
    if disc is None or opt_d is None or not fakes:
        return gnorm, None
    d_loss = discriminator_loss(disc, fakes[0], fakes[1].detach())
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    return gnorm, float(d_loss.detach())


def plot(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, ax in (("mel", axes[0]), ("sc", axes[0]), ("feat", axes[1]), ("loss", axes[0])):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key, lw=0.8)
    pts = [(r["step"], r["unique_codes"]) for r in rows]
    axes[2].plot(*zip(*pts, strict=True), lw=0.8, label="unique codes / batch")
    for ax, title in zip(axes, ("spectral losses", "feature MSE (normalised)", "code usage"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    starts: dict[str, int] = {}
    for r in rows:
        starts.setdefault(r["stage"], r["step"])
    for ax in axes:
        for s, st in starts.items():
            ax.axvline(st, color="grey", ls=":", lw=0.8)
            ax.text(st, ax.get_ylim()[1], s, va="top")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def save_checkpoint(path: Path, model: FocalCodec, opt: torch.optim.Optimizer, stage: str,
                    stage_step: int, global_step: int, rng: np.random.Generator,
                    elapsed: float, disc: torch.nn.Module | None = None,
                    opt_d: torch.optim.Optimizer | None = None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "opt": opt.state_dict(), "stage": stage,
        "stage_step": stage_step, "global_step": global_step,
        "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "elapsed": elapsed,
        "disc": None if disc is None else disc.state_dict(),
        "opt_d": None if opt_d is None else opt_d.state_dict(),
    }, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def quick_dev(model: FocalCodec, n_clips: int = 6) -> dict[str, float]:
    """Offline STOI on a few dev clips (a cheap progress check; the report uses evaluate.py).

    Scored by the benchmark harness (``training.evaluate.offline_dev_stoi``): the same
    resampling, delay alignment and STOI as ``training.evaluate`` and ``voip-codec bench``.
    """
    from .evaluate import offline_dev_stoi

    clips = sorted((SPEECH / "dev").rglob("*.flac"))[:: max(1, 58 // n_clips)][:n_clips]
    stoi, codes = offline_dev_stoi(model, clips, seconds=6.0)
    quiet = model.decode_step(model.encode_step(torch.zeros(1, 3 * 16000))[0])[0][0].numpy()
    return {"dev_stoi": stoi, "dev_codes": codes,
            "silence_dbfs": float(20 * np.log10(np.sqrt(np.mean(quiet ** 2)) + 1e-12)),
            "silence_peak": float(np.abs(quiet).max())}


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The options of a training run (shared with :mod:`training.accel`)."""
    ap = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/default"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads; use 1 on a heavily shared machine (2 threads stall "
                         "on each other when the cores are oversubscribed)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--steps-a", type=int, default=500)
    ap.add_argument("--steps-b", type=int, default=300)
    ap.add_argument("--steps-c", type=int, default=3600)
    ap.add_argument("--lr-a", type=float, default=8e-4)
    ap.add_argument("--lr-b", type=float, default=8e-4)
    ap.add_argument("--lr-c", type=float, default=4e-4)
    ap.add_argument("--entropy-weight", type=float, default=0.1)
    ap.add_argument("--codebook-gamma", type=float, default=1.0)
    ap.add_argument("--bsq-beta", type=float, default=100.0)
    ap.add_argument("--bsq-beta-codebook", type=float, default=25.0)
    ap.add_argument("--a-quant-frac", type=float, default=0.5,
                    help="fraction of stage-A examples decoded from quantised codes")
    ap.add_argument("--feat-weight", type=float, default=1.0)
    ap.add_argument("--mag-weight", type=float, default=0.5)
    ap.add_argument("--no-entropy-in-a", dest="entropy_in_a", action="store_false",
                    help="stage A without the BSQ entropy term (by default it is applied to the "
                         "continuous latents too, so they are spread over the sphere before "
                         "quantisation starts)")
    ap.add_argument("--usage", choices=("grouped", "joint"), default="grouped",
                    help="code-usage term: the grouped BSQ codebook entropy (4 x 4 bits), or "
                         "joint bit balance + decorrelation (training/losses.py)")
    ap.add_argument("--usage-weight", type=float, default=1.0)
    ap.add_argument("--clip-weight", type=float, default=0.0,
                    help="weight of the penalty on vocoder head outputs beyond +-1 (whose "
                         "gradient the runtime clamp removes)")
    ap.add_argument("--p-quiet", type=float, default=0.0,
                    help="fraction of crops with a stretch of silence, low-level noise or a "
                         "quiet tone in input and target")
    ap.add_argument("--adv-weight", type=float, default=0.0,
                    help="weight of the adversarial (hinge) generator loss in stage C; 0 turns "
                         "the discriminator off")
    ap.add_argument("--fm-weight", type=float, default=0.2,
                    help="weight of the discriminator feature-matching loss (with --adv-weight)")
    ap.add_argument("--adv-start", type=int, default=200,
                    help="stage-C steps the discriminator trains alone before the generator "
                         "sees its losses")
    ap.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    ap.add_argument("--adv-items", type=int, default=4,
                    help="examples of each batch the discriminator sees")
    ap.add_argument("--adv-seconds", type=float, default=0.5,
                    help="length of the window of each example the discriminator sees")
    ap.add_argument("--max-minutes", type=float, default=0.0,
                    help="end the last stage after this many minutes of training (0: no limit), "
                         "for equal-time ablations and session-sized runs")
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--print-every", type=int, default=25)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from the weights of a save_pretrained folder (e.g. a previous "
                         "run's final/) instead of random ones; ignored when resuming")
    ap.add_argument("--bench", type=int, default=0,
                    help="only time this many steps of each stage, then exit (no outputs)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps = {"A": args.steps_a, "B": args.steps_b, "C": args.steps_c}
    total_steps = sum(steps.values())
    peak = {"A": args.lr_a, "B": args.lr_b, "C": args.lr_c}

    t0 = time.time()
    audio, offsets = load_split(SPEECH, "train", ROOT / "runs" / "cache" / "train16k.npy")
    print(f"train audio: {len(offsets) - 1} clips, {len(audio) / 16000 / 60:.1f} min "
          f"(loaded in {time.time() - t0:.1f} s)", flush=True)
    sampler = CropSampler(audio, offsets, seconds=args.seconds, p_quiet=args.p_quiet)
    rng = np.random.default_rng(args.seed)

    model = FocalCodec(default_config())
    spec = SpectralLoss()
    disc = MultiResolutionSTFTDiscriminator() if args.adv_weight > 0 else None
    opt_d = (torch.optim.AdamW(disc.parameters(), lr=args.lr_d, betas=(0.8, 0.99))
             if disc is not None else None)
    if disc is not None:
        print(f"discriminator: {sum(p.numel() for p in disc.parameters()) / 1e6:.3f} M parameters",
              flush=True)
    print(f"model: {model.num_parameters() / 1e6:.2f} M parameters "
          f"(encoder {sum(p.numel() for p in model.encoder.parameters()) / 1e6:.2f}, "
          f"compressor {sum(p.numel() for p in model.compressor.parameters()) / 1e6:.2f}, "
          f"decompressor {sum(p.numel() for p in model.decompressor.parameters()) / 1e6:.2f}, "
          f"decoder {sum(p.numel() for p in model.decoder.parameters()) / 1e6:.2f})", flush=True)

    if args.bench:
        for stage in STAGES:
            params = trainable(model, stage)
            opt = torch.optim.AdamW(params, lr=1e-4)
            model.train()
            ts = []
            for _ in range(args.bench):
                x, y = sampler.batch(rng, args.batch)
                t = time.time()
                use_d = disc if stage == "C" else None
                views: list[torch.Tensor] = []
                yt = torch.from_numpy(y)
                loss, logs, _ = step_losses(model, spec, torch.from_numpy(x), yt,
                                            stage, args, use_d, views if use_d else None)
                optimise(loss, opt, params, use_d, opt_d, views, clip=None)
                ts.append(time.time() - t)
            print(f"stage {stage}: {np.median(ts):.3f} s/step (median of {len(ts)})", flush=True)
        return 0

    ckpt_path = out / "checkpoint.pt"
    log_path = out / "log.jsonl"
    stage_i, stage_step, global_step, elapsed_before = 0, 0, 0, 0.0
    opt_state = None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        stage_i, stage_step, global_step = STAGES.index(ck["stage"]), ck["stage_step"], ck["global_step"]
        rng.bit_generator.state = ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
        opt_state = ck["opt"]
        elapsed_before = ck["elapsed"]
        if disc is not None and opt_d is not None and ck.get("disc") is not None:
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])
        print(f"resumed from {ckpt_path}: stage {ck['stage']} step {stage_step}, global {global_step}",
              flush=True)
        # drop log lines written after the checkpoint (they will be recomputed identically)
        if log_path.exists():
            keep = [ln for ln in log_path.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["step"] < global_step]
            log_path.write_text("".join(k + "\n" for k in keep))
    else:
        if log_path.exists():
            log_path.unlink()
        if args.init is not None:
            from voip_codec.codec.loading import from_pretrained

            model.load_state_dict(from_pretrained(args.init).state_dict())
            print(f"initialised from {args.init}", flush=True)
    # stages given 0 steps are skipped entirely (a continuation run may train only stage C)
    while stage_i < len(STAGES) and steps[STAGES[stage_i]] == 0:
        stage_i += 1

    run_start = time.time()
    last_ckpt = time.time()
    while stage_i < len(STAGES):
        stage = STAGES[stage_i]
        params = trainable(model, stage)
        opt = torch.optim.AdamW(params, lr=peak[stage], betas=(0.9, 0.98), weight_decay=0.01)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
            opt_state = None
        model.train()
        if stage == "B":
            model.encoder.eval()
            model.decoder.eval()
        print(f"=== stage {stage}: steps {stage_step}..{steps[stage]}, lr {peak[stage]:g}", flush=True)
        window_t, window_n = time.time(), 0
        while stage_step < steps[stage]:
            if args.max_minutes and elapsed_before + time.time() - run_start > args.max_minutes * 60:
                print(f"time limit of {args.max_minutes:g} min reached at stage {stage} step "
                      f"{stage_step}", flush=True)
                break
            lr = _lr(stage_step, steps[stage], peak[stage], warmup=min(200, steps[stage] // 10))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = sampler.batch(rng, args.batch)
            yt = torch.from_numpy(y)
            adversarial = disc is not None and stage == "C"
            fakes: list[torch.Tensor] = []
            loss, logs, u = step_losses(
                model, spec, torch.from_numpy(x), yt, stage, args,
                disc if adversarial and stage_step >= args.adv_start else None,
                fakes if adversarial else None)
            gnorm, d_loss = optimise(loss, opt, params, disc if adversarial else None, opt_d,
                                     fakes)
            if d_loss is not None:
                logs["disc"] = d_loss
            uniq, usage = code_stats(u)
            stage_step += 1
            global_step += 1
            window_n += 1
            if global_step % args.log_every == 0 or stage_step == 1:
                rec = {"step": global_step, "stage": stage, "stage_step": stage_step, "lr": lr,
                       "gnorm": float(gnorm), "unique_codes": uniq,
                       "bit_usage": [round(float(v), 3) for v in usage],
                       "time": round(elapsed_before + time.time() - run_start, 1), **logs}
                with log_path.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
            if global_step % args.print_every == 0 or stage_step == 1:
                sps = window_n / max(1e-6, time.time() - window_t)
                remaining = total_steps - global_step
                eta = remaining / max(sps, 1e-6) / 60  # rough: stages differ in speed
                usage_str = "".join(str(min(9, int(v * 10))) for v in usage.tolist())
                parts = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
                print(f"[{stage} {stage_step}/{steps[stage]} | {global_step}/{total_steps}] {parts} "
                      f"codes={uniq}/{u.shape[0] * u.shape[1]} bits1={usage_str} "
                      f"{sps:.2f} it/s eta~{eta:.1f} min", flush=True)
                window_t, window_n = time.time(), 0
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save_checkpoint(ckpt_path, model, opt, stage, stage_step, global_step, rng,
                                elapsed_before + time.time() - run_start, disc, opt_d)
                plot(log_path, out / "loss.png")
                last_ckpt = time.time()
        model.eval()
        dev = quick_dev(model)
        print(f"=== end of stage {stage}: dev (offline, 6 clips) {dev}", flush=True)
        with (out / "stages.jsonl").open("a") as f:
            f.write(json.dumps({"stage": stage, "global_step": global_step, **dev}) + "\n")
        save_pretrained(model, out / f"stage_{stage}")
        stage_i += 1
        while stage_i < len(STAGES) and steps[STAGES[stage_i]] == 0:
            stage_i += 1
        stage_step = 0
        if stage_i < len(STAGES):
            save_checkpoint(ckpt_path, model, opt, STAGES[stage_i], 0, global_step, rng,
                            elapsed_before + time.time() - run_start)
            # a fresh optimiser starts at the next stage
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            ck["opt"] = None
            torch.save(ck, ckpt_path)
        last_ckpt = time.time()

    model.eval()
    save_pretrained(model, out / "final")
    plot(log_path, out / "loss.png")
    total = elapsed_before + time.time() - run_start
    print(f"done: {global_step} steps in {total / 60:.1f} min; model in {out / 'final'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
