"""The page's routes without a built page (a container image, a checkout without npm): `/`
says so instead of serving a page whose script is missing."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from twinstack.web import STATIC, web_routes


async def fetch(static: Path, path: str) -> tuple[int, str]:
    app = web.Application()
    app.add_routes(web_routes(static=static))
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path)
        return response.status, await response.text()


def test_an_unbuilt_page_is_a_clear_404(tmp_path):
    for name in ("index.html", "app.css", "icon.svg"):  # what git holds, without app.js
        shutil.copy(STATIC / name, tmp_path / name)
    status, text = asyncio.run(fetch(tmp_path, "/"))
    assert status == 404 and "was not built" in text and "scripts/build-web.sh" in text
    (tmp_path / "app.js").write_text("export {};\n")
    status, text = asyncio.run(fetch(tmp_path, "/"))
    assert status == 200 and "<title>TwinStack</title>" in text
    assert asyncio.run(fetch(tmp_path, "/web/app.css"))[0] == 200
    assert asyncio.run(fetch(tmp_path, "/web/..%2Fapp.js"))[0] == 404
