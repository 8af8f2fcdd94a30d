"""Check this implementation against reference outputs of the official FocalCodec code.

Usage::

    python -m voip_codec.conformance DIR [--atol 1e-4] [--rtol 1e-4] [--json]

``DIR`` holds a checkpoint (``config.json`` + ``model.safetensors``) and one sub-folder per clip
with NumPy arrays named as in ``shared/conformance/tiny_causal`` (``input_sig.npy``,
``offline_toks.npy``, ``stream_rec_sig.npy``, ...; any subset besides ``input_sig.npy``). Every
reference array present is reproduced, offline and streaming (1280-sample chunks with carried
state), each stage also from the stored previous stage so a failure points at one module; the
streaming tokens are also reproduced with other input block sizes through
:class:`~voip_codec.codec.streaming.StreamingEncoder`. Tokens and codes must match exactly, float
arrays within ``allclose(atol, rtol)``. Exits 0 when everything matches, 1 with a summary naming
each mismatching tensor and its maximum error otherwise, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .codec.loading import from_pretrained
from .codec.model import FocalCodec
from .codec.streaming import StreamingEncoder
from .threads import add_threads_argument, apply_threads

__all__ = ["Check", "run_conformance", "main"]

STREAM_BLOCK_SIZES = (160, 320, 441, 1000, 1280, 3840)
"""Input block sizes (samples) whose streaming tokens must equal the 1280-sample reference."""


@dataclass
class Check:
    """One comparison of a computed tensor with a reference array."""

    clip: str
    name: str
    ok: bool
    max_abs_err: float
    detail: str = ""


def _compare(clip: str, name: str, got: torch.Tensor, ref: np.ndarray, atol: float,
             rtol: float) -> Check:
    got_np = got.detach().cpu().numpy()
    if got_np.shape != ref.shape:
        return Check(clip, name, False, float("inf"),
                     f"shape {got_np.shape} vs reference {ref.shape}")
    if ref.dtype.kind in "iu":
        bad = int((got_np != ref).sum())
        return Check(clip, name, bad == 0, float(bad > 0),
                     f"{bad} of {ref.size} differ" if bad else "exact")
    err = float(np.abs(got_np.astype(np.float64) - ref.astype(np.float64)).max()) if ref.size \
        else 0.0
    ok = bool(np.allclose(got_np, ref, atol=atol, rtol=rtol))
    return Check(clip, name, ok, err, "" if ok else f"not allclose(atol={atol}, rtol={rtol})")


def _exact_codes(clip: str, name: str, got: torch.Tensor, ref: np.ndarray) -> Check:
    got_np = got.detach().cpu().numpy()
    if got_np.shape != ref.shape:
        return Check(clip, name, False, float("inf"), f"shape {got_np.shape} vs {ref.shape}")
    err = float(np.abs(got_np - ref).max()) if ref.size else 0.0
    return Check(clip, name, err == 0.0, err, "exact" if err == 0.0 else "codes differ")


def _clip_dirs(root: Path) -> list[Path]:
    manifest = root / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text())
        dirs = [root / c["directory"] for c in data.get("clips", [])]
        if dirs:
            return dirs
    return sorted(p for p in root.iterdir() if (p / "input_sig.npy").is_file())


@torch.inference_mode()
def check_clip(model: FocalCodec, clip_dir: Path, atol: float = 1e-4, rtol: float = 1e-4,
               block_sizes: Sequence[int] = STREAM_BLOCK_SIZES) -> list[Check]:
    """Run every comparison available for one clip folder."""
    clip = clip_dir.name
    refs = {p.stem: np.load(p) for p in sorted(clip_dir.glob("*.npy"))}
    if "input_sig" not in refs:
        raise FileNotFoundError(f"{clip_dir}: no input_sig.npy")
    checks: list[Check] = []

    def cmp(name: str, got: torch.Tensor) -> None:
        if name in refs:
            if name.endswith("_codes"):
                checks.append(_exact_codes(clip, name, got, refs[name]))
            else:
                checks.append(_compare(clip, name, got, refs[name], atol, rtol))

    def ref(name: str) -> torch.Tensor | None:
        return torch.from_numpy(refs[name]) if name in refs else None

    sig = torch.from_numpy(refs["input_sig"]).float()

    # offline, end to end
    taps: dict[str, torch.Tensor] = {}
    toks, _ = model.encode_step(sig, None, taps)
    cmp("offline_cnn_feats", taps["cnn_feats"])
    cmp("offline_feats", taps["feats"])
    cmp("offline_compressor_out", taps["compressor_out"])
    cmp("offline_lats", taps["lats"])
    cmp("offline_toks", toks)
    cmp("offline_codes", model.toks_to_codes(toks))
    dtaps: dict[str, torch.Tensor] = {}
    rec, _ = model.decode_step(toks, None, dtaps)
    cmp("offline_decompressor_pre_refiner", dtaps["pre_refiner"])
    cmp("offline_qfeats", dtaps["qfeats"])
    cmp("offline_decoder_backbone_out", dtaps["backbone_out"])
    cmp("offline_rec_sig", rec)

    # offline, stage by stage from the stored previous stage
    stages: list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]] = [
        ("offline_feats", "offline_lats", model.feats_to_lats),
        ("offline_lats", "offline_toks", model.lats_to_toks),
        ("offline_toks", "offline_codes", model.toks_to_codes),
        ("offline_codes", "offline_toks", model.codes_to_toks),
        ("offline_toks", "offline_qfeats", model.toks_to_qfeats),
        ("offline_qfeats", "offline_rec_sig", model.qfeats_to_sig),
    ]
    for src, dst, fn in stages:
        x = ref(src)
        if x is not None and dst in refs:
            before = len(checks)
            cmp(dst, fn(x))
            if len(checks) > before:
                checks[-1].name = f"{dst} (from {src})"

    # streaming: 1280-sample chunks with carried state (the official demo protocol)
    chunk = model.chunk_size
    padded = F.pad(sig, (0, (-sig.shape[1]) % chunk))
    enc_state = dec_state = None
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in
                                             ("toks", "feats", "lats", "qfeats", "rec")}
    for i in range(0, padded.shape[1], chunk):
        t: dict[str, torch.Tensor] = {}
        ctoks, enc_state = model.encode_step(padded[:, i:i + chunk], enc_state, t)
        d: dict[str, torch.Tensor] = {}
        crec, dec_state = model.decode_step(ctoks, dec_state, d)
        parts["toks"].append(ctoks)
        parts["feats"].append(t["feats"])
        parts["lats"].append(t["lats"])
        parts["qfeats"].append(d["qfeats"])
        parts["rec"].append(crec)
    cat = {k: torch.cat(v, dim=1) for k, v in parts.items()}
    cmp("stream_toks", cat["toks"])
    cmp("stream_codes", model.toks_to_codes(cat["toks"]))
    cmp("stream_feats", cat["feats"])
    cmp("stream_lats", cat["lats"])
    cmp("stream_qfeats", cat["qfeats"])
    cmp("stream_rec_sig", cat["rec"])

    # streaming equals offline on complete chunks
    complete = (sig.shape[1] // chunk) * model.chunk_frames
    same = int((cat["toks"][:, :complete] == toks[:, :complete]).all())
    checks.append(Check(clip, "stream_toks == offline_toks (complete chunks)", bool(same),
                        float(not same), f"{complete} tokens"))

    # other input block sizes through the buffering encoder give the same tokens
    reference = cat["toks"]
    for block in block_sizes:
        enc = StreamingEncoder(model)
        got = [enc.push(sig[0, i:i + block]) for i in range(0, sig.shape[1], block)]
        got.append(enc.flush())
        toks_b = torch.cat(got, dim=1)
        bad = int((toks_b != reference).sum()) if toks_b.shape == reference.shape else -1
        checks.append(Check(
            clip, f"stream_toks with {block}-sample blocks", bad == 0, float(bad != 0),
            "exact" if bad == 0 else (f"{bad} tokens differ" if bad > 0 else
                                      f"shape {tuple(toks_b.shape)} vs {tuple(reference.shape)}"),
        ))
    return checks


def run_conformance(directory: str | Path, atol: float = 1e-4, rtol: float = 1e-4,
                    block_sizes: Sequence[int] = STREAM_BLOCK_SIZES) -> list[Check]:
    """Load the checkpoint in ``directory`` and check every clip folder in it."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    model = from_pretrained(root)
    clips = _clip_dirs(root)
    if not clips:
        raise FileNotFoundError(f"{root}: no clip folders with input_sig.npy")
    checks: list[Check] = []
    for clip_dir in clips:
        checks.extend(check_clip(model, clip_dir, atol, rtol, block_sizes))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m voip_codec.conformance",
        description="Compare this FocalCodec-Stream implementation with reference outputs.",
    )
    parser.add_argument("directory", help="checkpoint + clip folders (tiny_causal layout)")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--rtol", type=float, default=1e-4)
    add_threads_argument(parser)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args(argv)
    apply_threads(args.threads, load_torch=True)
    try:
        checks = run_conformance(args.directory, args.atol, args.rtol)
    except (FileNotFoundError, ValueError) as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return 2
    failed = [c for c in checks if not c.ok]
    if args.json:
        print(json.dumps({"passed": len(checks) - len(failed), "failed": len(failed),
                          "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            status = "ok  " if c.ok else "FAIL"
            print(f"{status} {c.clip:32s} {c.name:{width}s} max|err|={c.max_abs_err:.3g} "
                  f"{c.detail}")
        print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
        if failed:
            print("mismatches:", file=sys.stderr)
            for c in failed:
                print(f"  {c.clip}/{c.name}: max abs error {c.max_abs_err:.3g} ({c.detail})",
                      file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
