"""Loading and saving checkpoints in the official FocalCodec on-disk format.

``from_pretrained(source)`` accepts:

* a directory holding ``config.json`` (or ``model.json``) and ``model.safetensors``;
* a ``*.json`` path; the weights are the same path with ``.safetensors`` (then ``.pt``);
* a path given without ``.json`` when ``<path>.json`` exists (as the official loader does);
* a hub id such as ``lucadellalib/focalcodec_50hz_65k_causal``, or its short name
  ``focalcodec-65k|4k|2k``, resolved from the standard Hugging Face cache only
  (:func:`voip_codec.hub.find_cached`). Loading never downloads; ``voip-codec models pull``
  (:func:`voip_codec.hub.pull`) puts the official checkpoints in that cache.
* ``"default"`` (or ``None``): the small model shipped inside this package, when present.

Weights load strictly: a missing or unexpected key, or a shape mismatch, is an error naming it.
Legacy (v0.0.1) checkpoints with separate ``q_proj``/``k_proj``/``v_proj`` are remapped.

Lower-precision checkpoints (``save_pretrained(model, dir, precision="bf16" | "int8" |
"int4")``, see :mod:`voip_codec.codec.precision`) keep ``config.json`` and the official key
names; the safetensors metadata records ``voip_codec.precision`` and the fp32 model's
fingerprint, and int8 layers add ``<name>.weight_scale`` beside their int8 ``<name>.weight``
(4-bit layers: two values per byte in ``<name>.weight``, one scale per group of inputs). They
load strictly into a model of that precision.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..hub import BUNDLED_MODEL_DIR, OFFICIAL_MODELS, find_cached
from .config import ConfigError, FocalCodecConfig
from .model import FocalCodec
from .precision import (
    CALIBRATION_FILE,
    check_precision,
    int8_skeleton,
    load_calibration,
    model_precision,
    set_precision,
)

_META_PRECISION = "voip_codec.precision"
_META_FINGERPRINT = "voip_codec.fingerprint"

__all__ = [
    "CheckpointError",
    "KNOWN_HUB_MODELS",
    "from_pretrained",
    "load_state_dict_strict",
    "read_weights",
    "resolve_checkpoint",
    "save_pretrained",
]

KNOWN_HUB_MODELS = {name: m.repo_id for name, m in OFFICIAL_MODELS.items()}
"""Short names of the official causal checkpoints (0.80 / 0.60 / 0.55 kbps)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_MODEL_DIR = BUNDLED_MODEL_DIR


class CheckpointError(FileNotFoundError):
    """A checkpoint could not be found or does not match the model."""


def _weights_beside(config: Path) -> Path | None:
    for suffix in (".safetensors", ".pt"):
        cand = config.with_suffix(suffix)
        if cand.is_file():
            return cand
    if config.name in ("config.json", "model.json"):
        for name in ("model.safetensors", "model.pt"):
            if (config.parent / name).is_file():
                return config.parent / name
    return None


def resolve_checkpoint(source: str | os.PathLike[str] | None) -> tuple[Path, Path, str]:
    """Find the config and weights files for ``source``.

    Returns:
        ``(config_path, weights_path, model_id)``.

    Raises:
        CheckpointError: nothing found; the message lists every place looked and how to get
            the weights.
    """
    looked: list[str] = []
    name = "default" if source is None else str(source)
    if name in ("default", "focalcodec-default"):
        config = DEFAULT_MODEL_DIR / "config.json"
        weights = DEFAULT_MODEL_DIR / "model.safetensors"
        if config.is_file() and weights.is_file():
            return config, weights, "voip-codec/default"
        raise CheckpointError(
            f"no bundled default FocalCodec model in this build (looked in {DEFAULT_MODEL_DIR}); "
            "pass --model with a checkpoint directory, e.g. ../shared/conformance/tiny_causal "
            "(random weights, for testing) or a downloaded official checkpoint"
        )
    name = KNOWN_HUB_MODELS.get(name, name)
    path = Path(name).expanduser()
    if path.is_dir():
        for cfg in ("config.json", "model.json"):
            if (path / cfg).is_file():
                beside = _weights_beside(path / cfg)
                if beside is not None:
                    return path / cfg, beside, name
        looked.append(f"{path}/config.json + model.safetensors")
    else:
        cfg_path = path if path.suffix == ".json" else Path(str(path) + ".json")
        looked.append(str(cfg_path))
        if cfg_path.is_file():
            beside = _weights_beside(cfg_path)
            if beside is not None:
                return cfg_path, beside, name
            raise CheckpointError(
                f"found {cfg_path} but no weights beside it (expected "
                f"{cfg_path.with_suffix('.safetensors')} or {cfg_path.with_suffix('.pt')})"
            )
    if _HUB_ID.match(name) and not path.exists():
        found = find_cached(name, looked)
        if found is not None:
            return found.config, found.weights, name
    short = next((n for n, m in OFFICIAL_MODELS.items() if m.repo_id == name), None)
    if short is not None:
        raise CheckpointError(
            f"{source} ({name}) is not downloaded yet; run `voip-codec models pull {short}` "
            "(needs the hub extra and internet access; loading never downloads). Looked in: "
            + "; ".join(looked))
    raise CheckpointError(
        f"no FocalCodec checkpoint found for {name!r}. Looked in: " + "; ".join(looked) + ". "
        "Loading never downloads weights. On a machine with internet access run "
        f"`huggingface-cli download {name if _HUB_ID.match(name) else 'OWNER/NAME'}` (or "
        "`python -c \"import huggingface_hub as h; h.snapshot_download('REPO')\"`), then copy "
        "the snapshot folder (config.json + model.safetensors) here and pass its path, or copy "
        "the whole Hugging Face cache to ~/.cache/huggingface/hub."
    )


def _remap_legacy(state: dict[str, Tensor], model_keys: list[str]) -> dict[str, Tensor]:
    """Convert a v0.0.1 state dict (separate q/k/v projections) to the fused layout."""
    if not any(re.search(r"\.(q|k|v)_proj\.", k) for k in state):
        return state
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.match(r"(.*)\.q_proj\.(weight|bias)$", key)
        if m:
            base, kind = m.groups()
            parts = [state.get(f"{base}.{p}_proj.{kind}") for p in ("q", "k", "v")]
            if any(p is None for p in parts):
                raise CheckpointError(f"legacy checkpoint: incomplete q/k/v set under {base}")
            out[f"{base}.qkv_proj.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
        elif re.search(r"\.(k|v)_proj\.(weight|bias)$", key):
            continue
        else:
            out[key] = value
    # compressor / decompressor renames in the legacy layout map by sorted order
    for prefix in ("compressor.", "decompressor."):
        old = sorted(k for k in out if k.startswith(prefix))
        new = sorted(k for k in model_keys if k.startswith(prefix))
        if old != new and len(old) == len(new):
            moved = {n: out.pop(o) for o, n in zip(old, new, strict=True)}
            out.update(moved)
    model_set = set(model_keys)
    return {k: v for k, v in out.items() if k in model_set or not k.startswith("quantizer.")}


def load_state_dict_strict(model: FocalCodec, state: dict[str, Tensor], origin: str) -> None:
    """Load weights, failing with a readable message on any key or shape mismatch.

    Raises:
        CheckpointError: missing/unexpected keys or shape mismatches, all named.
    """
    own = model.state_dict()
    state = _remap_legacy(state, list(own))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state) if tuple(state[k].shape) != tuple(own[k].shape)
    )
    dtypes = sorted(  # int8 and packed 4-bit weights must keep their dtype (a float would be
        # silently truncated, int8 values read as nibble pairs would be wrong)
        f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}"
        for k in set(own) & set(state)
        if own[k].dtype != state[k].dtype and not (
            own[k].is_floating_point() and state[k].is_floating_point())
    )
    if missing or unexpected or shapes or dtypes:
        def few(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f" (+{len(xs) - 8} more)" if len(xs) > 8 else "")
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing key(s): {few(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatch(es): {few(shapes)}")
        if dtypes:
            problems.append(f"{len(dtypes)} dtype mismatch(es): {few(dtypes)}")
        raise CheckpointError(f"{origin} does not match its config: " + "; ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def read_weights(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The state dict and (safetensors only) the metadata of a weights file.

    Raises:
        CheckpointError: the file is not a valid safetensors file (or, for ``.pt``, holds
            anything but a dict of tensors); no other exception escapes for any file content.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc
    # a pickled state dict: only plain tensors are accepted (no arbitrary code)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "pickle protocol N" notes on malformed files
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch's restricted unpickler documents no error
        # type: a malformed file raises IndexError, KeyError, struct.error, TypeError, ...
        raise CheckpointError(f"{path}: not a readable PyTorch state dict "
                              f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a state dict (names -> tensors)")
    return obj, {}


def from_pretrained(
    source: str | os.PathLike[str] | None = "default",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    precision: str | None = None,
) -> FocalCodec:
    """Build a :class:`FocalCodec` from a checkpoint (see the module docstring for sources).

    Args:
        source: where the checkpoint is.
        device: where the model goes.
        dtype: legacy; ``torch.bfloat16`` is the same as ``precision="bf16"``.
        precision: ``"fp32"``, ``"bf16"``, ``"int8"`` or ``"int4"``; None keeps the stored
            precision. An fp32 checkpoint converts to any precision on load; a bf16/int8/int4
            checkpoint loads only at its own precision.

    Raises:
        CheckpointError: checkpoint not found, or its weights do not match its config.
        ConfigError: the config is malformed or describes an unsupported (non-causal) model,
            or the precision is unknown or cannot be reached from the stored one.
    """
    if precision is not None:
        check_precision(precision)
    elif dtype == torch.bfloat16:
        precision = "bf16"
    config_path, weights_path, model_id = resolve_checkpoint(source)
    try:
        config = FocalCodecConfig.from_json(config_path)
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from exc
    state, meta = read_weights(weights_path)
    try:
        stored = check_precision(meta.get(_META_PRECISION, "fp32"))
    except ConfigError as exc:
        raise CheckpointError(f"{weights_path}: metadata {_META_PRECISION}: {exc}") from exc
    if precision is not None and precision != stored and stored != "fp32":
        raise ConfigError(f"{weights_path} is stored at {stored}; it loads only as {stored} "
                          f"(convert to {precision} from the fp32 checkpoint instead)")
    model = FocalCodec(config, model_id=model_id)
    if stored in ("int8", "int4"):
        int8_skeleton(model, stored)
    load_state_dict_strict(model, state, str(weights_path))
    if stored == "bf16":
        model.to(torch.bfloat16)
    if _META_FINGERPRINT in meta:
        try:
            model._fingerprint = bytes.fromhex(meta[_META_FINGERPRINT])
        except ValueError as exc:
            raise CheckpointError(f"{weights_path}: bad {_META_FINGERPRINT} metadata") from exc
    calibration = weights_path.parent / CALIBRATION_FILE
    if stored == "fp32" and calibration.is_file():
        try:
            model.int8_calibration = load_calibration(calibration, model.fingerprint())
        except ConfigError as exc:
            # stale (the weights were retrained) or damaged: fp32 and bf16 do not need it,
            # and int8 still works with nearest rounding, so say so instead of failing
            warnings.warn(f"{exc}; int8 will round weights to the nearest step", stacklevel=2)
    if precision is not None:
        set_precision(model, precision)
    return model.to(device=device).eval()


def save_pretrained(model: FocalCodec, directory: str | os.PathLike[str],
                    precision: str | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (official layout) into ``directory``.

    Args:
        model: the model (left unchanged).
        directory: created if needed.
        precision: store at ``"bf16"``, ``"int8"`` or ``"int4"`` (converted from an fp32
            model), or None for the model's own precision. fp32 files are exactly the official format.
    """
    import copy

    from safetensors.torch import save_file

    if precision is not None and check_precision(precision) != model_precision(model):
        model = set_precision(copy.deepcopy(model), precision)
    stored = model_precision(model)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    model.config.to_json(out / "config.json")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = None
    if stored != "fp32":
        meta = {"format": "pt", _META_PRECISION: stored,
                _META_FINGERPRINT: model.fingerprint().hex()}
    save_file(state, str(out / "model.safetensors"), metadata=meta)
    return out
