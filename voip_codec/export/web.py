"""What ``voip-codec serve --web`` serves: the page, the exported default model, its codec id."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from signaling.web import WebAssets

__all__ = ["web_assets_for"]

WEB_CODEC = "focalcodec-default"
"""The codec the page speaks (the bundled model)."""


def web_assets_for(page: str, model: str | None) -> WebAssets:
    """The page folder (``""``: the checkout's ``examples/browser``) and an exported model
    (None: the bundled model, exported into the cache on first use).

    Raises:
        ValueError: a folder is missing (the message says how to make it).
    """
    from signaling.web import DEFAULT_PAGE, WebAssets

    from ..codecs.registry import RESERVED_CODEC_IDS

    if model is None:
        from ..codec.loading import from_pretrained
        from .backend import export_cached

        folder = export_cached(from_pretrained("default", precision="fp32"))
    else:
        folder = Path(model)
    return WebAssets.find(Path(page) if page else DEFAULT_PAGE, folder, WEB_CODEC,
                          RESERVED_CODEC_IDS[WEB_CODEC])
