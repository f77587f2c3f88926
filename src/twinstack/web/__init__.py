"""The browser client: static files that gss serves on its public listener.

`/` is the page (never cached: a new release shows at the next load), `/web/NAME` its scripts
and styles. The page talks to gss (same origin), auth and the relay (their public listeners
allow the front door's origins: `web_origins`, CORS). The Content-Security-Policy lets it
load nothing from any other host.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

STATIC = Path(__file__).resolve().parent / "static"


NOT_BUILT = ("this installation has no web page: it was not built (scripts/build-web.sh, which "
             "`make up` runs, needs npm); the API and the Python client work without it")


def web_routes(*peers: str | None, static: Path = STATIC) -> list[web.RouteDef]:
    """The page and its files; `peers` are the public URLs it may call besides its own (each
    may be a comma-separated list of replicas)."""
    policy = content_security_policy([url for p in peers if p for url in p.split(",")])

    async def page(request: web.Request) -> web.StreamResponse:
        if not (static / "app.js").exists():  # index.html alone would be a blank page
            raise web.HTTPNotFound(text=NOT_BUILT)
        return web.FileResponse(static / "index.html", headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    files = {path.name: path for path in static.iterdir()  # app.js.gz is sent for app.js
             if path.name != "index.html" and path.suffix != ".gz"}

    async def asset(request: web.Request) -> web.StreamResponse:
        path = files.get(request.match_info["name"])  # only the files shipped: no paths
        if path is None:
            raise web.HTTPNotFound(text="no such file of the web page")
        return web.FileResponse(path, headers={"Cache-Control": "no-cache",
                                               "X-Content-Type-Options": "nosniff"})

    return [web.get("/", page), web.get("/web/{name}", asset)]


def content_security_policy(peers: list[str]) -> str:
    """Scripts, styles and images from this origin only; calls to it and to the peers."""
    origins = []
    for url in peers:
        parts = urlsplit(url)
        origins += [f"https://{parts.netloc}", f"wss://{parts.netloc}"]
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
            f"connect-src 'self' {' '.join(origins)}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")
