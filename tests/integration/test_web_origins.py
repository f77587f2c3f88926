"""What lets the web page (served by gss) call auth and the relay from a browser, and what
keeps other pages out: CORS preflights, Origin on WebSockets, the page's own headers."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from tests.js_harness import build_web_page
from tests.platform_fixtures import Platform, running_platform
from twinstack.client.client import tls_context

FOREIGN = "https://evil.example"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    build_web_page()  # `/` serves the page only once it is built
    with running_platform(tmp_path_factory.mktemp("origins"), "ada") as running:
        yield running


def request(platform: Platform, offset: int, method: str, path: str,
            headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request to the public listener at base port + offset (gss 0, auth 1, relay 2)."""
    conn = http.client.HTTPSConnection("127.0.0.1", platform.port + offset, timeout=30,
                                       context=tls_context(platform.ca))
    try:
        conn.request(method, path, headers=headers)
        answer = conn.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        conn.close()


def preflight(origin: str) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.mark.parametrize(("service", "offset"), [("auth", 1), ("relay", 2)])
def test_the_front_door_origin_may_call_and_others_may_not(platform: Platform, service: str,
                                                           offset: int):
    page = platform.url  # the origin the page is loaded from
    status, headers, _ = request(platform, offset, "OPTIONS", "/actions/login", preflight(page))
    assert status == 204 and headers["access-control-allow-origin"] == page
    assert "authorization" in headers["access-control-allow-headers"]

    status, headers, body = request(platform, offset, "OPTIONS", "/actions/login",
                                    preflight(FOREIGN))
    assert status == 403 and b"origin_not_allowed" in body and page.encode() in body
    assert "access-control-allow-origin" not in headers

    # An answer (here a refusal) carries the allowance only for the page's origin.
    status, headers, _ = request(platform, offset, "POST", "/actions/list_projects",
                                 {"Origin": page, "Content-Type": "application/json"})
    assert status >= 400 and headers["access-control-allow-origin"] == page
    status, headers, _ = request(platform, offset, "POST", "/actions/list_projects",
                                 {"Origin": FOREIGN, "Content-Type": "application/json"})
    assert "access-control-allow-origin" not in headers and "Origin" in headers["vary"]


@pytest.mark.parametrize("offset", [0, 2])  # gss, relay
def test_a_websocket_from_another_origin_is_refused(platform: Platform, offset: int):
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    status, _, body = request(platform, offset, "GET", "/ws", {**upgrade, "Origin": FOREIGN})
    assert status == 403 and b"origin_not_allowed" in body
    status, _, body = request(platform, offset, "GET", "/ws", {**upgrade, "Origin": platform.url})
    assert status == 401 and b"Bearer" in body  # past the origin, on to the token check


def test_the_page_and_its_files(platform: Platform):
    status, headers, body = request(platform, 0, "GET", "/", {})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/web/app.js"' in body
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and f"https://127.0.0.1:{platform.port + 1}" in policy
    assert headers["cache-control"] == "no-cache"
    status, headers, _ = request(platform, 0, "GET", "/web/app.css", {})
    assert status == 200 and headers["content-type"].startswith("text/css")
    for escape in ("/web/..%2f__init__.py", "/web/index.html", "/web/nothing.js"):
        assert request(platform, 0, "GET", escape, {})[0] == 404, escape


def test_a_browser_websocket_carries_its_token_as_a_subprotocol(platform: Platform):
    """Browsers cannot set Authorization on a WebSocket: the page offers
    `twinstack.bearer.<token>`; gss (as the relay's session socket) authenticates with it and
    echoes it. A browser sends Origin even to its own origin."""
    import asyncio

    import aiohttp

    token = platform.client("ada").token
    assert token is not None

    async def connect(offered: str) -> tuple[int, str | None]:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(
                        f"wss://127.0.0.1:{platform.port}/ws", protocols=[offered],
                        ssl=tls_context(platform.ca), headers={"Origin": platform.url}) as ws:
                    return 101, ws.protocol
            except aiohttp.WSServerHandshakeError as refused:
                return refused.status, None

    assert asyncio.run(connect(f"twinstack.bearer.{token}")) == (101,
                                                                f"twinstack.bearer.{token}")
    assert asyncio.run(connect("twinstack.bearer.not-a-token")) == (401, None)
