"""The three channels of a real `twinstack serve` process: who gets in, and what they get back."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from tests.conftest import Pki, ServiceProcess, Services
from twinstack.pki import Authority, CertificateRequest, write_issued
from twinstack.pki.tls import TlsFiles, client_context

HANG_GUARD = 60.0  # seconds: a hung service fails the test instead of stalling it


@pytest.fixture
def logger(services: Services, pki: Pki) -> ServiceProcess:
    return services.start("logger", pki.identity("logger"), "--cert-reload-seconds", "0.2")


async def _post(url: str, body: Any, ctx: ssl.SSLContext) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, str) else json.dumps(body)
        async with http.post(f"{url}/execute", data=data, ssl=ctx,
                             timeout=aiohttp.ClientTimeout(total=HANG_GUARD)) as resp:
            return resp.status, await resp.json(content_type=None)


def post(url: str, body: Any, ctx: ssl.SSLContext) -> tuple[int, Any]:
    return asyncio.run(_post(url, body, ctx))


def post_outcome(url: str, body: Any, ctx: ssl.SSLContext) -> int | Exception:
    """The status, or the exception: TLS 1.3 reports a refused client cert on first read."""
    try:
        return post(url, body, ctx)[0]
    except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
        return exc


async def _ws_exchange(url: str, ctx: ssl.SSLContext, messages: list[Any]) -> list[Any]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws", ssl=ctx) as ws:
        replies = []
        for message in messages:
            await ws.send_str(message if isinstance(message, str) else json.dumps(message))
            replies.append(await ws.receive_json(timeout=HANG_GUARD))
        return replies


def ws_exchange(url: str, ctx: ssl.SSLContext, messages: list[Any]) -> list[Any]:
    return asyncio.run(_ws_exchange(url, ctx, messages))


def ws_outcome(url: str, ctx: ssl.SSLContext) -> list[Any] | Exception:
    try:
        return ws_exchange(url, ctx, [{"id": 1, "action": "info"}])
    except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as exc:
        return exc


def assert_dropped_after_connecting(outcome: object) -> None:
    """The server took the TCP connection and then ended it without an HTTP answer.

    That is how the asyncio TLS server refuses a client certificate under TLS 1.3: it closes
    without sending an alert, so the client sees a disconnect (or a reset, if its request was
    still unread). A dead service would refuse the connection itself (ClientConnectorError),
    and an accepted one would answer.
    """
    assert isinstance(outcome, aiohttp.ClientOSError | aiohttp.ServerDisconnectedError), outcome
    assert not isinstance(outcome, aiohttp.ClientConnectorError), outcome
    if isinstance(outcome, aiohttp.ClientOSError):
        assert outcome.errno == errno.ECONNRESET, outcome


def raw_tls(address: str, ctx: ssl.SSLContext, version: ssl.TLSVersion) -> bytes:
    """Handshake at exactly `version`, send a request, return what the server answers.

    Raises the handshake's ssl.SSLError when the server refuses it before it completes.
    """
    host, port = address.rsplit(":", 1)
    ctx.minimum_version = ctx.maximum_version = version
    answer = b""
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        try:
            tls.sendall(b"POST /execute HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                        b"Content-Type: application/json\r\nContent-Length: 17\r\n"
                        b"Connection: close\r\n\r\n{\"action\":\"info\"}")
            while chunk := tls.recv(65536):
                answer += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # how a refusing server may end it (not a timeout: that is a hang, it raises)
    return answer


def mtls(identity: TlsFiles) -> ssl.SSLContext:
    return client_context(identity)


def test_good_certificate_is_accepted_over_http_and_websocket(logger, pki):
    ctx = mtls(pki.identity("admin"))
    status, body = post(logger.url(), {"action": "info"}, ctx)
    assert status == 200
    assert body["result"]["service"] == "logger"
    assert body["result"]["peer"] == "admin"
    [reply] = ws_exchange(logger.url(), ctx, [{"id": 7, "action": "info"}])
    assert reply["id"] == 7 and reply["result"]["peer"] == "admin"


def bad_client(who: str, pki: Pki, other_pki: Pki) -> Callable[[], ssl.SSLContext]:
    """A factory of client contexts that must be refused (a fresh one per connection)."""
    if who == "no certificate":
        return lambda: client_context(ca=pki.ca)
    if who == "another CA":
        stranger = other_pki.identity("admin")
        return lambda: client_context(TlsFiles(stranger.cert, stranger.key, pki.ca))
    past = datetime.now(UTC) - timedelta(days=30)
    expired = pki.identity("admin", name="admin-expired", not_before=past,
                           not_after=past + timedelta(days=1))
    return lambda: mtls(expired)


@pytest.mark.parametrize("who", ["no certificate", "another CA", "expired"])
def test_internal_channel_refuses_bad_clients(logger, pki, other_pki, who):
    bad, good = bad_client(who, pki, other_pki), lambda: mtls(pki.identity("admin"))
    address = logger.addresses["internal"]
    # The same raw exchange with a good certificate gets an answer: the probe itself works.
    assert raw_tls(address, good(), ssl.TLSVersion.TLSv1_2).startswith(b"HTTP/1.1 200")
    assert raw_tls(address, good(), ssl.TLSVersion.TLSv1_3).startswith(b"HTTP/1.1 200")
    # TLS 1.2: the server checks the client certificate inside the handshake and ends it.
    with pytest.raises(ssl.SSLError) as handshake:
        raw_tls(address, bad(), ssl.TLSVersion.TLSv1_2)
    assert handshake.value.reason == "UNEXPECTED_EOF_WHILE_READING", handshake.value
    # TLS 1.3: the client's side of the handshake ends first; the server never answers.
    assert raw_tls(address, bad(), ssl.TLSVersion.TLSv1_3) == b""
    assert_dropped_after_connecting(post_outcome(logger.url(), {"action": "info"}, bad()))
    assert_dropped_after_connecting(ws_outcome(logger.url(), bad()))
    # Refusing did not hurt the service: still running, and it answers a legitimate call.
    assert logger.proc.poll() is None
    status, body = post(logger.url(), {"action": "info"}, good())
    assert status == 200 and body["result"]["service"] == "logger"


def test_identity_not_allowed_for_an_action_is_refused(logger, pki):
    ctx = mtls(pki.identity("kriging"))
    status, body = post(logger.url(), {"action": "query", "params": {}}, ctx)
    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert "'kriging' may not call 'query'" in body["error"]["message"]
    [reply] = ws_exchange(logger.url(), ctx, [{"id": 1, "action": "query", "params": {}}])
    assert reply["error"]["code"] == "forbidden"
    streamed = ws_exchange(logger.url(), ctx, [{"id": 2, "action": "follow", "params": {}}])
    assert streamed[0]["error"]["code"] == "forbidden"
    # the same identity may call what it is allowed to
    status, _ = post(logger.url(), {"action": "info"}, ctx)
    assert status == 200


def test_a_session_service_refuses_peers_of_other_sessions(services, pki):
    service = services.start("logger", pki.identity("logger", session="s1"), "--session", "s1")
    ours = mtls(pki.identity("kriging", session="s1", issuer="intermediate"))
    theirs = mtls(pki.identity("kriging", session="s2", issuer="intermediate"))
    record = {"ts": time.time(), "level": "info", "service": "kriging", "msg": "hello"}
    body = {"action": "append", "params": {"records": [record]}}
    assert post(service.url(), body, ours)[0] == 200
    status, reply = post(service.url(), body, theirs)
    assert status == 403 and reply["error"]["code"] == "forbidden"
    assert "another session" in reply["error"]["message"]


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ('{"action": ', 400, "malformed_request", None),
    ([1, 2], 400, "malformed_request", None),
    ({"params": {}}, 400, "malformed_request", "action"),
    ({"action": "launch"}, 404, "unknown_action", "action"),
    ({"action": "query", "params": {"level": "loud"}}, 422, "invalid_params", "params.level"),
    ({"action": "query", "params": {"limit": 0}}, 422, "invalid_params", "params.limit"),
    ({"action": "query", "params": {"colour": "red"}}, 422, "invalid_params", "params.colour"),
    ({"action": "query", "params": [1]}, 422, "invalid_params", "params"),
    ({"action": "follow"}, 400, "streaming_action", "action"),
])
def test_bad_requests_get_a_4xx_naming_the_problem(logger, pki, body, status, code, field):
    got_status, reply = post(logger.url(), body, mtls(pki.identity("admin")))
    assert got_status == status
    assert reply["error"]["code"] == code
    assert reply["error"].get("field") == field
    assert reply["error"]["message"]


def test_websocket_stays_open_after_a_malformed_message(logger, pki):
    replies = ws_exchange(logger.url(), mtls(pki.identity("admin")),
                          ["not json", {"id": 3, "action": "nope"}, {"id": 4, "action": "info"}])
    assert replies[0]["error"]["code"] == "malformed_request"
    assert replies[1]["id"] == 3 and replies[1]["error"]["code"] == "unknown_action"
    assert replies[2]["id"] == 4 and replies[2]["result"]["service"] == "logger"


def test_health_channel_answers_without_a_client_certificate(logger, pki):
    async def fetch(path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(
                f"{logger.url('health')}{path}", ssl=client_context(ca=pki.ca)) as resp:
            return resp.status, await resp.text()

    assert asyncio.run(fetch("/healthz"))[0] == 200
    assert asyncio.run(fetch("/readyz"))[0] == 200
    status, metrics = asyncio.run(fetch("/metrics"))
    assert status == 200
    assert 'twinstack_ready{service="logger"} 1.0' in metrics
    assert "twinstack_action_seconds" in metrics


def _served_serial(address: str, ctx: ssl.SSLContext) -> int:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=HANG_GUARD) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_certificate_replaced_on_disk_is_served_without_restart(logger, pki):
    ctx = mtls(pki.identity("admin"))
    before = _served_serial(logger.addresses["internal"], ctx)
    request = CertificateRequest.model_validate({"CN": "logger", "names": [{"O": "TwinStack"}]})
    write_issued(Authority.load(pki.dir, issuer="intermediate").issue(request),
                 pki.dir / "logger")
    deadline = time.monotonic() + HANG_GUARD  # the service reloads every 0.2 s
    while _served_serial(logger.addresses["internal"], ctx) == before:
        assert time.monotonic() < deadline, "the new certificate was never served"
        time.sleep(0.1)
    assert logger.proc.poll() is None  # same process, no restart
    assert post(logger.url(), {"action": "info"}, ctx)[0] == 200
