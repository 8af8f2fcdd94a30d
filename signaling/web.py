"""``voip-codec serve --web``: the browser page, its codec model and onnxruntime-web.

Routes added to the signaling application (all GET, all static, same origin as ``/ws``, so the
page needs no CDN and no CORS):

- ``/`` the page (``index.html``) and ``/src/...`` its JavaScript;
- ``/model/...`` an exported model folder (``voip-codec export onnx``);
- ``/ort/...`` onnxruntime-web's ``dist`` folder (``npm ci`` in ``examples/browser``);
- ``/web-config.json`` which codec the page speaks: ``{"codec", "codec_id", "model", "ort"}``.

Standard library and aiohttp only; finding or making the exported model is the caller's job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

__all__ = ["DEFAULT_PAGE", "WebAssets", "add_web_routes"]

DEFAULT_PAGE: Final = Path(__file__).resolve().parent.parent / "examples" / "browser"
"""The page of a checkout (not in the wheel)."""


@dataclass(frozen=True)
class WebAssets:
    """What ``--web`` serves."""

    page: Path
    """Folder with ``index.html`` and ``src/`` (``examples/browser``)."""
    model: Path
    """Exported model folder (``manifest.json`` + the two graphs)."""
    ort: Path
    """onnxruntime-web's ``dist`` folder."""
    codec: str
    """Codec name the page announces in its data channel label."""
    codec_id: int
    """Codec id of its packets."""

    @classmethod
    def find(cls, page: Path, model: Path, codec: str, codec_id: int) -> WebAssets:
        """Check the folders and locate onnxruntime-web under ``page/node_modules``.

        Raises:
            ValueError: a folder or file is missing; the message says how to make it.
        """
        if not (page / "index.html").is_file():
            raise ValueError(f"no browser page at {page} (index.html); pass --web with the "
                             "examples/browser folder of a voip-codec checkout")
        ort = page / "node_modules" / "onnxruntime-web" / "dist"
        if not (ort / "ort.wasm.min.mjs").is_file():
            raise ValueError(f"onnxruntime-web is not installed in {page}: run `npm ci` there")
        if not (model / "manifest.json").is_file():
            raise ValueError(f"{model} is not an exported model folder; make one with "
                             "`voip-codec export onnx`")
        return cls(page, model, ort, codec, codec_id)


def add_web_routes(app: web.Application, assets: WebAssets) -> None:
    """Serve the page, the model and onnxruntime-web from ``app`` (see the module docstring)."""
    config = {"codec": assets.codec, "codec_id": assets.codec_id, "model": "/model/",
              "ort": "/ort/"}

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(assets.page / "index.html")

    async def web_config(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(config), content_type="application/json")

    app.router.add_get("/", index)
    app.router.add_get("/web-config.json", web_config)
    app.router.add_static("/src/", assets.page / "src")
    app.router.add_static("/model/", assets.model)
    app.router.add_static("/ort/", assets.ort)
