"""Model configuration in the official FocalCodec ``config.json`` format.

A config file has exactly ten top-level keys: ``{encoder,compressor,quantizer,decompressor,
decoder}_name`` and the matching ``*_config`` dicts of constructor keyword arguments. Omitted
arguments take the constructor defaults below (the same defaults as the official constructors,
see ``shared/docs/focalcodec-stream-spec.md`` §2-§3); unknown arguments are an error, as they are
in the official code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BSQConfig",
    "ConfigError",
    "FocalCodecConfig",
    "FocalDecoderConfig",
    "FocalEncoderConfig",
    "WaveNeXtConfig",
    "WavLMConfig",
]


class ConfigError(ValueError):
    """The model configuration is malformed or names something unsupported."""


@dataclass(frozen=True)
class WavLMConfig:
    """Causal WavLM encoder (16 kHz waveform -> 50 Hz features)."""

    hidden_dims: tuple[int, ...] = (512,) * 7
    """Output channels of each convolutional front-end block."""
    kernel_sizes: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    """Kernel size of each front-end block."""
    strides: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    """Stride of each front-end block (product = samples per frame, 320)."""
    num_layers: int = 6
    """Transformer layers."""
    dim: int = 1024
    """Transformer width."""
    ffn_dim: int = 4096
    """Feed-forward hidden width."""
    num_heads: int = 16
    """Attention heads."""
    num_buckets: int = 320
    """Relative-position buckets (both directions together)."""
    max_distance: int = 800
    """Distance at which relative-position buckets saturate."""
    max_cached_steps: int = 2048
    """Official bias-cache size; accepted for compatibility, no numerical effect here."""
    dropout: float = 0.0
    """Training-only; ignored at inference."""
    conv_pos: int = 128
    """Kernel of the convolutional positional embedding."""
    conv_pos_groups: int = 16
    """Groups of the convolutional positional embedding."""
    causal: bool = False
    """Must be true: only the causal (streaming) variant is implemented."""
    window_size: int = 512
    """Attention window in frames (keys visible to a 4-frame block, including itself)."""
    lookahead_size: int = 3
    """Frames of look-ahead inside a block (block = 1 + lookahead frames)."""
    use_flex_attention: bool = False
    """Official implementation detail; accepted, no numerical effect."""


@dataclass(frozen=True)
class _FocalStackConfig:
    """Arguments shared by the focal compressor and decompressor (same defaults in both)."""

    focal_window: int = 14
    focal_level: int = 2
    focal_factor: int = 4
    dropout: float = 0.0
    use_post_norm: bool = False
    use_layerscale: bool = False
    layerscale_init: float = 1e-4
    tanhscale_init: float = 0.5
    normalize_modulator: bool = False
    causal: bool = False
    window_size: int = 512


@dataclass(frozen=True)
class FocalEncoderConfig(_FocalStackConfig):
    """Focal-modulation compressor (features -> latents)."""

    input_dim: int = 1024
    output_dim: int = 12
    hidden_dims: tuple[int, ...] = (1024, 1024, 1024)
    downscale_factors: tuple[int, ...] = (1, 1, 1)


@dataclass(frozen=True)
class BSQConfig:
    """Binary spherical quantizer (no learned parameters)."""

    codebook_size: int = 8192


@dataclass(frozen=True)
class FocalDecoderConfig(_FocalStackConfig):
    """Focal-modulation decompressor with chunk refiner (codes -> features)."""

    input_dim: int = 12
    output_dim: int = 1024
    hidden_dims: tuple[int, ...] = (1024, 1024, 1024)
    upscale_factors: tuple[int, ...] = (1, 1, 1)
    last_window_size: int = 512
    lookahead_size: int = 3


@dataclass(frozen=True)
class WaveNeXtConfig:
    """Causal WaveNeXt vocoder (features -> 24 kHz waveform, 480 samples per frame)."""

    input_dim: int = 1024
    num_layers: int = 8
    dim: int = 1024
    ffn_dim: int = 2048
    kernel_size: int = 7
    layerscale_init: float | None = None
    hop_length: int = 480
    causal: bool = False


_T = TypeVar("_T")

_REGISTRY: dict[str, tuple[str, type]] = {
    # slot -> (the only registry name this implementation supports, config class)
    "encoder": ("WavLM", WavLMConfig),
    "compressor": ("FocalEncoder", FocalEncoderConfig),
    "quantizer": ("BinarySphericalQuantizer", BSQConfig),
    "decompressor": ("FocalDecoder", FocalDecoderConfig),
    "decoder": ("WaveNeXt", WaveNeXtConfig),
}
_KNOWN_OFFICIAL_NAMES = {"WavLM", "FocalEncoder", "BinarySphericalQuantizer", "FocalDecoder",
                         "WaveNeXt", "Vocos"}


def _build(cls: type[_T], slot: str, kwargs: dict[str, Any]) -> _T:
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{slot}_config must be a JSON object, got {type(kwargs).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(kwargs) - set(names))
    if unknown:
        raise ConfigError(
            f"{slot}_config has unknown argument(s) {unknown}; allowed: {sorted(names)}"
        )
    values: dict[str, Any] = {}
    for key, value in kwargs.items():
        default = names[key].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        values[key] = _check_value(f"{slot}_config.{key}", default, value)
    return cls(**values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(name: str, default: object, value: object) -> object:
    """``value`` when it has the type of the field's ``default`` (ints >= 0, finite floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = _is_int(value) and 0 <= value <= 1 << 20  # type: ignore[operator]
    elif isinstance(default, float) or default is None:
        ok = (value is None and default is None) or (
            (_is_int(value) or isinstance(value, float)) and math.isfinite(value))  # type: ignore[arg-type]
    elif isinstance(default, tuple):
        ok = isinstance(value, tuple) and all(_is_int(v) and 0 <= v <= 1 << 20 for v in value)
    else:
        ok = True
    if not ok:
        want = ("a boolean" if isinstance(default, bool) else
                "an integer in 0..2**20" if isinstance(default, int) else
                "a list of integers in 0..2**20" if isinstance(default, tuple) else
                "a finite number" if default is not None else "a finite number or null")
        raise ConfigError(f"{name} must be {want}, got {value!r:.60}")
    return value


def _to_jsonable(obj: Any) -> Any:
    out = dataclasses.asdict(obj)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class FocalCodecConfig:
    """The whole model: one config per stage, in the official ten-key JSON layout."""

    encoder: WavLMConfig = field(default_factory=WavLMConfig)
    compressor: FocalEncoderConfig = field(default_factory=FocalEncoderConfig)
    quantizer: BSQConfig = field(default_factory=BSQConfig)
    decompressor: FocalDecoderConfig = field(default_factory=FocalDecoderConfig)
    decoder: WaveNeXtConfig = field(default_factory=WaveNeXtConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FocalCodecConfig:
        """Parse the official ten-key config dict, applying constructor defaults.

        Raises:
            ConfigError: unknown top-level keys, unsupported module names, unknown arguments,
                or a non-causal model.
        """
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        expected = {f"{slot}_{kind}" for slot in _REGISTRY for kind in ("name", "config")}
        unknown = sorted(set(data) - expected)
        if unknown:
            raise ConfigError(f"config has unknown top-level key(s) {unknown}")
        parts: dict[str, Any] = {}
        for slot, (name, conf_cls) in _REGISTRY.items():
            given = data.get(f"{slot}_name", name)
            if given != name:
                if isinstance(given, str) and given in _KNOWN_OFFICIAL_NAMES:
                    raise ConfigError(
                        f"{slot}_name={given!r} is an official module this implementation does "
                        f"not support (only the causal streaming checkpoints are: {slot} must be "
                        f"{name!r}); non-causal FocalCodec models cannot stream"
                    )
                raise ConfigError(
                    f"{slot}_name={given!r:.60} is not a known module; expected {name!r}"
                )
            parts[slot] = _build(conf_cls, slot, data.get(f"{slot}_config", {}))
        config = cls(**parts)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """The official ten-key JSON layout, every argument explicit."""
        out: dict[str, Any] = {}
        for slot, (name, _) in _REGISTRY.items():
            out[f"{slot}_name"] = name
            out[f"{slot}_config"] = _to_jsonable(getattr(self, slot))
        return out

    @classmethod
    def from_json(cls, path: str | Path) -> FocalCodecConfig:
        """Read a ``config.json`` file."""
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid UTF-8 JSON ({exc})") from exc
        return cls.from_dict(data)

    def to_json(self, path: str | Path) -> None:
        """Write the config in the official layout."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # ------------------------------------------------------------------ derived facts
    @property
    def code_dim(self) -> int:
        """Bits per token, log2(codebook_size)."""
        return self.quantizer.codebook_size.bit_length() - 1

    @property
    def downsample_factor(self) -> int:
        """Input samples per token (320 at 16 kHz -> 50 Hz)."""
        out = 1
        for s in self.encoder.strides:
            out *= s
        return out

    @property
    def chunk_frames(self) -> int:
        """Tokens per streaming chunk (1 + lookahead = 4)."""
        return 1 + self.encoder.lookahead_size

    @property
    def chunk_size(self) -> int:
        """Input samples per streaming chunk (1280 = 80 ms at 16 kHz)."""
        return self.downsample_factor * self.chunk_frames

    def validate(self) -> None:
        """Check the invariants this streaming implementation relies on.

        Raises:
            ConfigError: describing the first violated invariant.
        """
        enc, comp, dec = self.encoder, self.compressor, self.decoder
        for slot in ("encoder", "compressor", "decompressor", "decoder"):
            if not getattr(self, slot).causal:
                raise ConfigError(
                    f"{slot}_config.causal is false: only causal FocalCodec-Stream checkpoints "
                    "(e.g. lucadellalib/focalcodec_50hz_65k_causal) can stream"
                )
        if not (len(enc.hidden_dims) == len(enc.kernel_sizes) == len(enc.strides)):
            raise ConfigError("encoder hidden_dims, kernel_sizes and strides differ in length")
        if enc.num_heads < 1 or enc.conv_pos_groups < 1:
            raise ConfigError("encoder num_heads and conv_pos_groups must be at least 1")
        if enc.dim % enc.num_heads:
            raise ConfigError(f"encoder dim {enc.dim} not divisible by num_heads {enc.num_heads}")
        if enc.dim % enc.conv_pos_groups:
            raise ConfigError("encoder dim not divisible by conv_pos_groups")
        if enc.window_size < self.chunk_frames:
            raise ConfigError("encoder window_size must be at least one chunk")
        size = self.quantizer.codebook_size
        if size < 2 or size & (size - 1):
            raise ConfigError(f"codebook_size must be a power of two, got {size}")
        if comp.output_dim != self.code_dim or self.decompressor.input_dim != self.code_dim:
            raise ConfigError(
                f"compressor output_dim ({comp.output_dim}) and decompressor input_dim "
                f"({self.decompressor.input_dim}) must equal log2(codebook_size) = {self.code_dim}"
            )
        if any(f != 1 for f in comp.downscale_factors) or any(
            f != 1 for f in self.decompressor.upscale_factors
        ):
            raise ConfigError("only down/upscale factors of 1 (50 Hz causal models) are supported")
        if len(comp.hidden_dims) != len(comp.downscale_factors):
            raise ConfigError("compressor hidden_dims and downscale_factors differ in length")
        if len(self.decompressor.hidden_dims) != len(self.decompressor.upscale_factors):
            raise ConfigError("decompressor hidden_dims and upscale_factors differ in length")
        for name, conf in (("compressor", comp), ("decompressor", self.decompressor)):
            if conf.use_post_norm or conf.use_layerscale or conf.normalize_modulator:
                raise ConfigError(
                    f"{name}: use_post_norm/use_layerscale/normalize_modulator are not "
                    "implemented (the causal checkpoints have them off)"
                )
        if self.decompressor.lookahead_size not in (0, enc.lookahead_size):
            raise ConfigError("decompressor lookahead_size must be 0 or equal the encoder's")
        if self.decompressor.input_dim != comp.output_dim:
            raise ConfigError("decompressor input_dim must equal compressor output_dim")
        if dec.input_dim != self.decompressor.output_dim:
            raise ConfigError("decoder input_dim must equal decompressor output_dim")
        if comp.input_dim != enc.dim:
            raise ConfigError("compressor input_dim must equal encoder dim")


def tiny_config(codebook_size: int = 4096) -> FocalCodecConfig:
    """A small causal configuration (same shape family as ``shared/conformance/tiny_causal``)."""
    bits = codebook_size.bit_length() - 1
    return FocalCodecConfig(
        encoder=WavLMConfig(hidden_dims=(64,) * 7, num_layers=2, dim=128, ffn_dim=256,
                            num_heads=4, causal=True, window_size=64),
        compressor=FocalEncoderConfig(input_dim=128, output_dim=bits, hidden_dims=(128, 96, 64),
                                      causal=True, window_size=64),
        quantizer=BSQConfig(codebook_size=codebook_size),
        decompressor=FocalDecoderConfig(input_dim=bits, output_dim=128, hidden_dims=(64, 96, 128),
                                        causal=True, window_size=64, last_window_size=32,
                                        lookahead_size=3),
        decoder=WaveNeXtConfig(input_dim=128, num_layers=3, dim=96, ffn_dim=192, causal=True),
    )


def full_size_config(codebook_size: int = 65536) -> FocalCodecConfig:
    """The best-guess full-size causal configuration (spec §3.3; ~249 M parameters)."""
    bits = codebook_size.bit_length() - 1
    return FocalCodecConfig(
        encoder=WavLMConfig(causal=True, window_size=512, lookahead_size=3),
        compressor=FocalEncoderConfig(input_dim=1024, output_dim=bits,
                                      hidden_dims=(1024, 1024, 1024), causal=True,
                                      window_size=512),
        quantizer=BSQConfig(codebook_size=codebook_size),
        decompressor=FocalDecoderConfig(input_dim=bits, output_dim=1024,
                                        hidden_dims=(1024, 1024, 1024), causal=True,
                                        window_size=512, last_window_size=512, lookahead_size=3),
        decoder=WaveNeXtConfig(input_dim=1024, num_layers=8, dim=1024, ffn_dim=2048,
                               kernel_size=7, layerscale_init=None, hop_length=480, causal=True),
    )
