"""Closed name -> codec registry, and the codec ids carried in packet headers.

Built-in entries: ``pcm16`` (id 1, lossless reference for tests) and the Codec2 modes
``codec2-700c`` (16), ``codec2-1200`` (17), ``codec2-1300`` (18), ``codec2-1400`` (19),
``codec2-1600`` (20), ``codec2-2400`` (21), ``codec2-3200`` (22); Opus in hard CBR through PyAV,
``opus-6k`` (40) and ``opus-8k`` (41), and AMR-NB ``amrnb-4.75k`` (48) (see
:mod:`voip_codec.codecs.av`). Ids 40..47 are kept for Opus variants and 48..55 for AMR variants.

Reserved for FocalCodec-Stream (registered by its adapter through :func:`register_codec`):
``focalcodec-65k`` (32), ``focalcodec-4k`` (33), ``focalcodec-2k`` (34) and
``focalcodec-default`` (35). A reserved name can only be registered with its reserved id, and a
reserved id only under its reserved name, so packets stay interoperable. Other ids below 64 are
unassigned (kept for built-in codecs); 64..255 are free for experiments.

Factories are called lazily, once per name, by :func:`get_codec` (the instance is cached), so
registering a model-backed codec costs nothing until it is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .base import Codec

__all__ = [
    "RESERVED_CODEC_IDS",
    "CodecFactory",
    "available_codecs",
    "codec_name_for_id",
    "get_codec",
    "register_codec",
    "unregister_codec",
]

CodecFactory = Callable[[], Codec]
"""Zero-argument callable returning a :class:`Codec` whose ``info`` has the registered name/id."""

RESERVED_CODEC_IDS: dict[str, int] = {
    "focalcodec-65k": 32,
    "focalcodec-4k": 33,
    "focalcodec-2k": 34,
    "focalcodec-default": 35,
}
"""Names and ids kept for the FocalCodec-Stream variants."""

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")


@dataclass
class _Entry:
    codec_id: int
    factory: CodecFactory
    instance: Codec | None = None


_REGISTRY: dict[str, _Entry] = {}


def register_codec(name: str, codec_id: int, factory: CodecFactory, *,
                   replace: bool = False) -> None:
    """Register a codec variant.

    Args:
        name: lower-case name used on the command line (``[a-z0-9._-]``, up to 40 characters).
        codec_id: id in packet headers, 0..255; reserved names must use their reserved id.
        factory: builds the codec on first :func:`get_codec`; its ``info.name`` and
            ``info.codec_id`` must equal ``name`` and ``codec_id``.
        replace: allow re-registering an existing name with the same id (e.g. to swap in a
            differently loaded model); the cached instance is dropped.

    Raises:
        ValueError: bad name or id, a reserved name/id mismatch, or a name/id already taken.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"codec name must match {_NAME.pattern}, got {name!r}")
    if not isinstance(codec_id, int) or isinstance(codec_id, bool) or not 0 <= codec_id <= 255:
        raise ValueError(f"codec id must be an integer in 0..255, got {codec_id!r}")
    if not callable(factory):
        raise ValueError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    reserved_id = RESERVED_CODEC_IDS.get(name)
    if reserved_id is not None and codec_id != reserved_id:
        raise ValueError(f"{name!r} is reserved for codec id {reserved_id}, got {codec_id}")
    for other, rid in RESERVED_CODEC_IDS.items():
        if rid == codec_id and other != name:
            raise ValueError(f"codec id {codec_id} is reserved for {other!r}")
    if name in _REGISTRY:
        if not replace:
            raise ValueError(f"codec {name!r} is already registered (pass replace=True to "
                             "swap its factory)")
        if _REGISTRY[name].codec_id != codec_id:
            raise ValueError(f"codec {name!r} is registered with id {_REGISTRY[name].codec_id}; "
                             f"cannot change it to {codec_id}")
    for other, entry in _REGISTRY.items():
        if entry.codec_id == codec_id and other != name:
            raise ValueError(f"codec id {codec_id} is already used by {other!r}")
    _REGISTRY[name] = _Entry(codec_id, factory)


def unregister_codec(name: str) -> None:
    """Remove a registered codec (e.g. before re-registering it differently, or in tests).

    Raises:
        ValueError: the name is not registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"codec {name!r} is not registered")
    del _REGISTRY[name]


def get_codec(name: str) -> Codec:
    """The codec registered under ``name`` (built on first use, then cached).

    Raises:
        ValueError: unknown name (the message lists the available ones), a reserved name not
            registered yet, or a factory whose codec does not carry the registered name/id.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        if name in RESERVED_CODEC_IDS:
            raise ValueError(f"codec {name!r} is reserved for FocalCodec-Stream but not "
                             "registered; its adapter registers it with register_codec()")
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(available_codecs())}")
    if entry.instance is None:
        codec = entry.factory()
        if codec.info.name != name or codec.info.codec_id != entry.codec_id:
            raise ValueError(f"factory for {name!r} (id {entry.codec_id}) built "
                             f"{codec.info.name!r} with id {codec.info.codec_id}")
        entry.instance = codec
    return entry.instance


def available_codecs() -> list[str]:
    """Registered codec names, sorted."""
    return sorted(_REGISTRY)


def codec_name_for_id(codec_id: int) -> str:
    """The registered name for a packet's codec id.

    Raises:
        ValueError: no codec is registered with that id.
    """
    for name, entry in _REGISTRY.items():
        if entry.codec_id == codec_id:
            return name
    for name, rid in RESERVED_CODEC_IDS.items():
        if rid == codec_id:
            raise ValueError(f"codec id {codec_id} is reserved for {name!r}, not registered")
    raise ValueError(f"no codec registered with id {codec_id}")


def _register_builtins() -> None:
    # light imports only: pycodec2 and av are imported when a codec is first built
    from .av import AV_CODEC_IDS, AvFrameCodec
    from .codec2 import Codec2Codec
    from .pcm16 import Pcm16Codec

    register_codec("pcm16", 1, Pcm16Codec)
    for offset, mode in enumerate(("700C", "1200", "1300", "1400", "1600", "2400", "3200")):
        name, cid = f"codec2-{mode.lower()}", 16 + offset
        register_codec(name, cid, partial(Codec2Codec, mode, codec_id=cid))
    for name, cid in AV_CODEC_IDS.items():
        register_codec(name, cid, partial(AvFrameCodec, name))


def _focalcodec_factory(source: str, name: str) -> CodecFactory:
    def build() -> Codec:
        # imported lazily: torch and the weights load only when the codec is first used
        from .focalcodec import load_focalcodec_codec

        return load_focalcodec_codec(source, name, RESERVED_CODEC_IDS[name])

    return build


def _register_focalcodec() -> None:
    register_codec("focalcodec-default", RESERVED_CODEC_IDS["focalcodec-default"],
                   _focalcodec_factory("default", "focalcodec-default"))
    for size in ("65k", "4k", "2k"):
        name = f"focalcodec-{size}"
        register_codec(name, RESERVED_CODEC_IDS[name], _focalcodec_factory(name, name))


_register_builtins()
_register_focalcodec()
