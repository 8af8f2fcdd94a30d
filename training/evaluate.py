"""Evaluate a FocalCodec checkpoint in streaming mode against Codec2 on a split of the speech.

    .venv/bin/python -m training.evaluate --model default --split eval --out runs/eval_default

For every clip of ``../shared/speech/<split>``:

* **this model** - the clip goes through :class:`StreamingEncoder` in 1280-sample (80 ms) pushes
  and the tokens through :class:`StreamingDecoder` one chunk at a time (then ``flush``); the 24 kHz
  output is resampled to 16 kHz with soxr, trimmed to the input length, and its (small) delay
  is aligned by cross-correlation within +-20 ms;
* **Codec2 700C / 1200** (pycodec2) - 16 kHz -> 8 kHz (soxr), ONE codec2 frame per
  ``encode``/``decode`` call (a multi-frame decode returns garbage after the first frame),
  -> 16 kHz; the codec's fixed delay is found once by maximising STOI on a few clips
  (as in shared/docs/evaluation-notes.md) and applied to all clips.

Metrics at 16 kHz: STOI (pystoi), WB-PESQ (pesq), DistillMOS (distillmos; it imports torchaudio
only for its command-line file loader, so a stub module stands in for it when torchaudio is not
installed or does not load). Writes ``results.json`` and ``results.md`` (a Markdown table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from voip_codec.codec.model import FocalCodec

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"


def load_distillmos() -> torch.nn.Module | None:
    try:
        import torchaudio  # noqa: F401
    except Exception:  # absent, or a CUDA build that fails to load with the CPU torch
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        from distillmos import ConvTransformerSQAModel
    except Exception as exc:  # pragma: no cover - reported in the table instead
        print(f"DistillMOS unavailable: {exc}", file=sys.stderr)
        return None
    model = ConvTransformerSQAModel()
    model.eval()
    return model


def align(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> np.ndarray:
    """Shift ``deg`` by the lag in ``[-max_lag, max_lag]`` maximising correlation with ``ref``."""
    n = min(len(ref), len(deg))
    r, d = ref[:n], deg[:n]
    spec = np.fft.rfft(r, 2 * n) * np.conj(np.fft.rfft(d, 2 * n))
    xc = np.fft.irfft(spec, 2 * n)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    vals = np.r_[xc[: max_lag + 1], xc[-max_lag:]]
    lag = int(lags[int(np.argmax(vals))])  # deg[t - lag] ~ ref[t]
    return shift(deg, lag, len(ref))


def shift(deg: np.ndarray, lag: int, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    if lag >= 0:
        m = min(n - lag, len(deg))
        if m > 0:
            out[lag:lag + m] = deg[:m]
    else:
        m = min(n, len(deg) + lag)
        if m > 0:
            out[:m] = deg[-lag:-lag + m]
    return out


def run_model_streaming(model: FocalCodec, x: np.ndarray) -> tuple[np.ndarray, int]:
    from voip_codec.codec.streaming import StreamingDecoder, StreamingEncoder

    enc, dec = StreamingEncoder(model), StreamingDecoder(model)
    outs, ntok = [], 0
    with torch.inference_mode():
        for s in range(0, len(x), model.chunk_size):
            toks = enc.push(torch.from_numpy(x[s:s + model.chunk_size]))
            ntok += toks.shape[-1]
            if toks.shape[-1]:
                outs.append(dec.push(toks))
        toks = enc.flush()
        ntok += toks.shape[-1]
        if toks.shape[-1]:
            outs.append(dec.push(toks))
        outs.append(dec.flush())
    y24 = torch.cat([o.reshape(-1) for o in outs]).numpy()
    return soxr.resample(y24, 24000, 16000).astype(np.float32), ntok


def run_codec2(mode: int, x: np.ndarray) -> np.ndarray:
    import pycodec2

    c2 = pycodec2.Codec2(mode)
    spf = c2.samples_per_frame()
    x8 = soxr.resample(x, 16000, 8000)
    pcm = np.clip(np.round(x8 * 32767), -32768, 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, (-len(pcm)) % spf))
    out = [c2.decode(c2.encode(pcm[i:i + spf])) for i in range(0, len(pcm), spf)]
    y8 = np.concatenate(out).astype(np.float32) / 32768.0
    return soxr.resample(y8, 8000, 16000).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="streaming evaluation vs Codec2")
    ap.add_argument("--model", default="default")
    ap.add_argument("--split", default="eval", choices=["dev", "eval"])
    ap.add_argument("--out", type=Path, default=Path("runs/eval_default"))
    ap.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-codec2", action="store_true")
    ap.add_argument("--no-mos", action="store_true")
    ap.add_argument("--skip-model", action="store_true",
                    help="only the Codec2 and original-signal scores (they are cached)")
    ap.add_argument("--cache", type=Path, default=Path("runs/eval_cache"),
                    help="per-clip scores of Codec2 and of the original are cached here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pesq import pesq
    from pystoi import stoi

    from voip_codec.codec.loading import from_pretrained

    model = None if args.skip_model else from_pretrained(args.model)
    clips = sorted((SPEECH / args.split).rglob("*.flac"))
    if args.limit:
        clips = clips[: args.limit]
    mos_model = None if args.no_mos else load_distillmos()

    systems = ([] if args.skip_model else ["model"]) + (
        [] if args.no_codec2 else ["codec2_700C", "codec2_1200"])
    cache_file = args.cache / f"{args.split}_{'mos' if mos_model is not None else 'nomos'}.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    audio = {}
    for c in clips:
        x, sr = sf.read(str(c), dtype="float32")
        assert sr == 16000
        audio[c] = x

    # Codec2 fixed delay: maximise mean STOI over a few clips
    c2_lag = cache.get("_lag", {})
    if not args.no_codec2 and not c2_lag:
        probe = clips[:: max(1, len(clips) // 4)][:4]
        for mode in (700, 1200):
            key = "700C" if mode == 700 else "1200"
            decoded = [(audio[c], run_codec2(mode, audio[c])) for c in probe]
            best = max(range(0, 801, 20), key=lambda lag: np.mean(
                [stoi(x, shift(y, -lag, len(x)), 16000) for x, y in decoded]))
            c2_lag[key] = best
            print(f"codec2 {key}: delay {best} samples at 16 kHz", flush=True)

    rows: dict[str, list[dict]] = {s: [] for s in systems}
    ref_mos = []
    stream_time, total_audio, tokens = 0.0, 0.0, 0
    for i, c in enumerate(clips):
        x = audio[c]
        total_audio += len(x) / 16000
        outs = {}
        if model is not None:
            t = time.perf_counter()
            y, ntok = run_model_streaming(model, x)
            stream_time += time.perf_counter() - t
            tokens += ntok
            outs["model"] = align(x, y, 320)
        if not args.no_codec2:
            for key, mode in (("700C", 700), ("1200", 1200)):
                name = f"codec2_{key}"
                if f"{name}/{c.name}" in cache:
                    rows[name].append(cache[f"{name}/{c.name}"])
                    continue
                outs[name] = shift(run_codec2(mode, x), -c2_lag[key], len(x))
        for s, y in outs.items():
            r = {"clip": str(c.relative_to(SPEECH)), "stoi": float(stoi(x, y, 16000))}
            try:
                r["pesq"] = float(pesq(16000, x, y, "wb"))
            except Exception:  # e.g. no utterance detected
                r["pesq"] = float("nan")
            if mos_model is not None:
                with torch.no_grad():
                    r["mos"] = float(mos_model(torch.from_numpy(y)[None]).reshape(-1)[0])
            rows[s].append(r)
            if s != "model":
                cache[f"{s}/{c.name}"] = r
        if mos_model is not None:
            if f"ref/{c.name}" not in cache:
                with torch.no_grad():
                    cache[f"ref/{c.name}"] = float(
                        mos_model(torch.from_numpy(x)[None]).reshape(-1)[0])
            ref_mos.append(cache[f"ref/{c.name}"])
        if i % 10 == 0:
            print(f"{i + 1}/{len(clips)} {c.name}: " + " ".join(
                f"{s}: stoi {rows[s][-1]['stoi']:.3f}" for s in systems), flush=True)

    cache["_lag"] = c2_lag
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cache))

    def mean(s: str, k: str) -> float:
        v = [r[k] for r in rows[s] if k in r and not np.isnan(r[k])]
        return float(np.mean(v)) if v else float("nan")

    bitrate = model.bitrate if model is not None else float("nan")
    summary = {
        "split": args.split, "clips": len(clips), "minutes": total_audio / 60,
        "model": str(args.model), "model_bitrate_bps": bitrate,
        "model_tokens_per_s": tokens / total_audio,
        "model_stream_rtf_in_eval_process": stream_time / total_audio,
        "reference_distillmos": float(np.mean(ref_mos)) if ref_mos else None,
        "systems": {s: {k: mean(s, k) for k in ("stoi", "pesq", "mos")} for s in systems},
        "codec2_delay_samples": c2_lag,
    }
    rates = {"model": f"{bitrate / 1000:.2f}", "codec2_700C": "0.70", "codec2_1200": "1.20"}
    names = {"model": f"this model ({args.model}), streaming 80 ms",
             "codec2_700C": "Codec2 700C", "codec2_1200": "Codec2 1200"}
    lines = ["| system | kbps | STOI | WB-PESQ | DistillMOS |", "|---|---|---|---|---|"]
    for s in systems:
        m = summary["systems"][s]
        lines.append(f"| {names[s]} | {rates[s]} | {m['stoi']:.3f} | {m['pesq']:.2f} | "
                     f"{m['mos']:.2f} |" if not np.isnan(m["mos"]) else
                     f"| {names[s]} | {rates[s]} | {m['stoi']:.3f} | {m['pesq']:.2f} | n/a |")
    if ref_mos:
        lines.append(f"| original (16 kHz) | - | 1.000 | - | {np.mean(ref_mos):.2f} |")
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"summary": summary, "per_clip": rows},
                                                      indent=1))
    (args.out / "results.md").write_text(
        f"{args.split} split, {len(clips)} clips, {total_audio / 60:.1f} min, 16 kHz metrics\n\n"
        + table + "\n")
    print(table)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
