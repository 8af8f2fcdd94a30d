"""`serve --web`'s static routes (signaling/web.py): what they serve and the one-line errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from signaling.server import create_app, start_server
from signaling.web import WebAssets


def _assets(tmp_path: Path) -> tuple[Path, Path]:
    page = tmp_path / "page"
    (page / "src").mkdir(parents=True)
    (page / "index.html").write_text("<html>the page</html>")
    (page / "src" / "peer.js").write_text("// js")
    ort = page / "node_modules" / "onnxruntime-web" / "dist"
    ort.mkdir(parents=True)
    (ort / "ort.wasm.min.mjs").write_text("// ort")
    model = tmp_path / "model"
    model.mkdir()
    (model / "manifest.json").write_text(json.dumps({"format": 1}))
    return page, model


def test_routes_serve_page_model_runtime_and_config(tmp_path: Path) -> None:
    page, model = _assets(tmp_path)
    assets = WebAssets.find(page, model, "focalcodec-default", 35)

    async def scenario() -> dict[str, tuple[int, str]]:
        server = await start_server(create_app(None, insecure_no_auth=True, web_assets=assets),
                                    "127.0.0.1", 0)
        got = {}
        try:
            async with aiohttp.ClientSession() as http:
                for path in ("/", "/src/peer.js", "/model/manifest.json", "/ort/ort.wasm.min.mjs",
                             "/web-config.json", "/health"):
                    async with http.get(server.http_url + path) as r:
                        got[path] = (r.status, await r.text())
        finally:
            await server.close()
        return got

    got = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert got["/"] == (200, "<html>the page</html>")
    assert got["/src/peer.js"] == (200, "// js")
    assert got["/model/manifest.json"] == (200, '{"format": 1}')
    assert got["/ort/ort.wasm.min.mjs"][0] == 200
    assert json.loads(got["/web-config.json"][1]) == {
        "codec": "focalcodec-default", "codec_id": 35, "model": "/model/", "ort": "/ort/"}
    assert got["/health"][0] == 200


def test_without_web_assets_there_is_no_page(tmp_path: Path) -> None:
    async def scenario() -> int:
        server = await start_server(create_app(None, insecure_no_auth=True), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as http, http.get(server.http_url + "/") as r:
                return r.status
        finally:
            await server.close()

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 404


@pytest.mark.parametrize("remove,message", [
    ("page/index.html", "no browser page"),
    ("page/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs", "run `npm ci` there"),
    ("model/manifest.json", "voip-codec export onnx"),
])
def test_missing_assets_say_how_to_make_them(tmp_path: Path, remove: str, message: str) -> None:
    page, model = _assets(tmp_path)
    (tmp_path / remove).unlink()
    with pytest.raises(ValueError, match=message.replace("`", ".")):
        WebAssets.find(page, model, "focalcodec-default", 35)
