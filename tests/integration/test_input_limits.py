"""Bad input on every public channel and the relay: a 4xx that names the limit, never a 5xx.

Each probe is what an unauthenticated (or merely logged-in) stranger can send: a body over the
size limit (with and without a length), nesting deeper than the limit, a number no double can
hold, a lone surrogate, a NUL, ids of the wrong type. Afterwards the services are still up and
none of them logged an error or a traceback for any of it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.platform_fixtures import running_platform
from tests.probes import RawSocket, post, run

LIMIT = 16 * 2**20  # max_message_bytes' default
DEPTH = 32  # max_json_depth's default


def envelope(action: str, params_json: str) -> bytes:
    return f'{{"action": "{action}", "params": {params_json}}}'.encode()


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# (name, params JSON, status, code, words the message must contain)
BAD_PARAMS = [
    ("just too deep", json.dumps({"user": json.loads(nested(DEPTH + 2))}), 400, "too_deep",
     "max_json_depth"),
    ("huge integer", '{"user": 1' + "0" * 5000 + "}", 400, "malformed_request", "finite"),
    ("huge float", '{"user": 1e400}', 400, "malformed_request", "finite"),
    ("lone surrogate", '{"user": "\\ud800", "project": "\\udfff"}', 400, "malformed_request",
     "surrogate"),
    ("NUL", '{"user": "a\\u0000b"}', 400, "malformed_request", "NUL"),
]


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    with running_platform(tmp_path_factory.mktemp("limits"), "ada") as platform:
        tw = platform.client("ada")
        yield platform, tw, tw.open_session(tw.create_project("survey", "data analysis")["id"])


def public_urls(platform) -> dict[str, str]:
    return {"gss": f"{platform.url}", "auth": f"https://127.0.0.1:{platform.port + 1}"}


def assert_refusal(reply, status: int, code: str, words: str) -> None:
    assert reply.status == status, reply
    assert reply.error["code"] == code, reply
    assert words in reply.error["message"], reply


@pytest.mark.parametrize("service", ["gss", "auth"])
@pytest.mark.parametrize(("name", "params", "status", "code", "words"), BAD_PARAMS,
                         ids=[case[0] for case in BAD_PARAMS])
def test_bad_bodies_get_a_4xx_naming_the_limit(front, service, name, params, status, code,
                                               words):
    platform, tw, _ = front
    url = f"{public_urls(platform)[service]}/execute"
    action = "login" if service == "auth" else "open_session"
    for token in (None, tw.token):  # before and after authentication
        reply = run(post(url, platform.ca, envelope(action, params), token=token))
        assert_refusal(reply, status, code, words)


@pytest.mark.parametrize("service", ["gss", "auth"])
def test_oversized_and_absurd_bodies(front, service):
    platform, _, _ = front
    url = f"{public_urls(platform)[service]}/execute"
    big = envelope("login", json.dumps({"user": "a" * (LIMIT + 10)}))
    assert_refusal(run(post(url, platform.ca, big)), 413, "too_large", "max_message_bytes")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(LIMIT // 2**20 + 2):
            yield b" " * 2**20
    assert_refusal(run(post(url, platform.ca, chunks())), 413, "too_large",
                   "max_message_bytes")
    deep = nested(100_000).encode()
    assert_refusal(run(post(url, platform.ca, deep)), 400, "too_deep", "max_json_depth")
    for junk, words in ((b'{"action": ', "not valid JSON"), (b"[]", "JSON object"),
                        (b'{"action": ["login"]}', "action")):
        reply = run(post(url, platform.ca, junk))
        assert reply.status == 400 and words in reply.error["message"], reply


@pytest.mark.parametrize("service", ["gss", "auth"])
def test_the_public_websocket_survives_bad_messages(front, service):
    platform, tw, _ = front
    url = f"{public_urls(platform)[service].replace('https', 'wss')}/ws"

    async def probe() -> None:
        sock = await RawSocket.open(url, platform.ca, tw.token)
        try:
            for bad_id in ([1], {"a": 1}, 1.5, "x" * 200, 2**70):
                await sock.send(json.dumps({"id": bad_id, "action": "info"}))
                reply = await sock.reply(any_id=True)
                assert reply["id"] is None and reply["error"]["status"] == 400, reply
                assert "'id'" in reply["error"]["message"]
            for _, params, status, code, words in BAD_PARAMS:
                await sock.send(f'{{"id": 7, "action": "info", "params": {params}}}')
                reply = await sock.reply(any_id=True)
                assert reply["error"]["status"] == status, reply
                assert reply["error"]["code"] == code and words in reply["error"]["message"]
            harmless = "info" if service == "gss" else "whoami"
            ok = await sock.call({"id": "fine", "action": harmless})  # still serving
            assert "result" in ok, ok
            await sock.send("[" * 100_000)
            reply = await sock.reply(any_id=True)
            assert reply["error"]["status"] == 400
            await sock.send(json.dumps({"id": 8, "action": "info", "params": {
                "pad": "a" * (LIMIT + 1)}}))
            code, reason = await sock.ended()
            assert code == 1009 and "max_message_bytes" in reason, (code, reason)
        finally:
            await sock.close()
    run(probe())


def test_the_relay_answers_bad_messages_with_4xx(front):
    platform, tw, session = front
    relay = f"wss://127.0.0.1:{platform.port + 2}/session"

    async def probe() -> None:
        sock = await RawSocket.open(f"{relay}?id={session.id}", platform.ca, tw.token)
        try:
            for text, words in (("{", "not valid JSON"), ("[]", "message is"),
                                (nested(100_000), "max_json_depth"),
                                (json.dumps({"service": "kriging", "action": "info"}), "'id'"),
                                (json.dumps({"id": [1], "service": "kriging"}), "'id'")):
                await sock.send(text)
                reply = await sock.reply(any_id=True)
                assert reply["id"] is None and 400 <= reply["error"]["status"] < 500, reply
                assert words in reply["error"]["message"], reply
            for n, (_, params, status, code, words) in enumerate(BAD_PARAMS):
                await sock.send(f'{{"id": {n}, "service": "kriging", "action": "interpolate", '
                                f'"params": {params}}}')
                reply = await sock.reply(n)
                assert (reply["error"]["status"], reply["error"]["code"]) == (status, code)
                assert words in reply["error"]["message"], reply
            ok = await sock.call({"id": "ok", "service": "kriging", "action": "info"})
            assert ok["result"]["service"] == "kriging"
            await sock.send(json.dumps({"id": 9, "service": "kriging", "action": "info",
                                        "params": {"pad": "a" * (LIMIT + 1)}}))
            code, reason = await sock.ended()
            assert code == 1009 and "max_message_bytes" in reason, (code, reason)
        finally:
            await sock.close()
    run(probe())

    async def handshake(query: str) -> tuple[int, str]:
        try:
            sock = await RawSocket.open(f"{relay}?{query}", platform.ca, tw.token)
        except Exception as exc:  # aiohttp's handshake error carries the status
            return getattr(exc, "status", 0), str(exc)
        await sock.close()
        return 101, ""
    for query in ("id=%ED%A0%80", "id=" + "a" * 65, "id=a%00b", "id=../x", ""):
        status, _ = run(handshake(query))
        assert status == 400, query
    assert run(handshake("id=" + "f" * 32))[0] == 404  # well-formed, but no such session


def test_nothing_above_was_logged_as_an_error(front):
    """Refusals are not faults: no traceback, no error record (a log-flooding lever)."""
    platform, tw, session = front
    assert session.call("kriging", "info")["service"] == "kriging"  # all still serving
    assert tw.projects()
    for label in ("gss", "auth", "relay"):
        text = (platform.data / "logs" / f"{label}.out").read_text()
        assert "Traceback" not in text, label
        errors = [line for line in text.splitlines()
                  if line.startswith("{") and json.loads(line)["level"] in ("error", "critical")]
        assert errors == [], (label, errors[:3])
