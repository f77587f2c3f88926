"""The service runtime driven in-process: the public channel and the mTLS client's retries.

No platform service has a public channel yet, so a small service declared here exercises it;
everything it runs through (listeners, TLS, token check, dispatch) is the real runtime.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, ClassVar

import aiohttp
import pytest
from pydantic import BaseModel

from tests.conftest import Pki, free_port
from twinstack.config import Settings
from twinstack.pki.tls import client_context, server_context
from twinstack.wire.actions import Call, action
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, Runtime, ServiceBase


class GreetParams(BaseModel):
    name: str


class FrontDoor(ServiceBase):
    name: ClassVar[str] = "gss"
    ports: ClassVar[Ports] = Ports(internal=0, health=0, public=0)
    tokens: ClassVar[dict[str, str]] = {"t-ada": "ada"}

    async def authenticate(self, token: str) -> Any | None:
        return self.tokens.get(token)

    @action(public=True)
    async def greet(self, call: Call, params: GreetParams) -> dict[str, Any]:
        return {"hello": params.name, "as": call.principal or str(call.peer)}

    @action(allow=("lss",))
    async def internal_only(self, call: Call, params: GreetParams) -> str:
        return "secret"


def settings_for(pki: Pki, cn: str, **extra: Any) -> Settings:
    files = pki.identity(cn)
    values = {"bind": "127.0.0.1:0", "health_bind": "127.0.0.1:0",
              "public_bind": "127.0.0.1:0", **extra}
    return Settings(cert=files.cert, key=files.key, ca=files.ca, **values)


async def public_post(url: str, body: Any, ca_ctx: ssl.SSLContext,
                      token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/execute", json=body, ssl=ca_ctx, headers=headers) as resp:
        return resp.status, await resp.json()


def test_public_channel_needs_a_valid_token_and_exposes_only_public_actions(pki):
    async def scenario() -> None:
        runtime = Runtime(FrontDoor, settings_for(pki, "gss"))
        await runtime.start()
        try:
            url = f"https://{runtime.addresses['public']}"
            one_way = client_context(ca=pki.ca)  # no client certificate on the public channel
            greet = {"action": "greet", "params": {"name": "world"}}
            assert await public_post(url, greet, one_way, "t-ada") == \
                (200, {"result": {"hello": "world", "as": "ada"}})
            status, body = await public_post(url, greet, one_way, None)
            assert status == 401 and body["error"]["code"] == "unauthorized"
            status, body = await public_post(url, greet, one_way, "t-forged")
            assert status == 401 and "invalid, expired or revoked" in body["error"]["message"]
            status, body = await public_post(
                url, {"action": "internal_only", "params": {"name": "x"}}, one_way, "t-ada")
            assert status == 404 and "internal_only" not in body["error"]["message"].split(":")[1]
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(f"{url}/ws", ssl=one_way)
                async with http.ws_connect(f"{url}/ws", ssl=one_way,
                                           headers={"Authorization": "Bearer t-ada"}) as ws:
                    await ws.send_json({"id": 1, **greet})
                    assert (await ws.receive_json())["result"]["as"] == "ada"
        finally:
            await runtime.stop()

    asyncio.run(scenario())


async def drop_first_request_once_up(pki: Pki, placeholder: socket.socket,
                                     runtime: Runtime) -> None:
    """Take the first request on the port, start the service there, then drop that request.

    The placeholder speaks TLS, so the client's first attempt is a request it has sent and
    lost (not a refused connection): only an idempotent call may be tried again. No sleep
    decides the order: the service is up before the first attempt fails, however slowly it
    started.
    """
    arrived = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        held.append(writer)
        arrived.set()

    server = await asyncio.start_server(
        take, sock=placeholder,
        ssl=server_context(pki.identity("gss", name="placeholder"), require_client_cert=True))
    try:
        await arrived.wait()
    finally:
        server.close()  # stops listening; the held connection stays open
    try:
        await runtime.start()
    finally:
        held[0].close()


@pytest.mark.parametrize("idempotent", [True, False])
def test_idempotent_calls_are_retried_until_the_service_comes_up(pki, idempotent):
    async def scenario() -> None:
        placeholder = socket.create_server(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        runtime = Runtime(FrontDoor, settings_for(pki, "gss", bind=f"127.0.0.1:{port}"))
        starter = asyncio.create_task(drop_first_request_once_up(pki, placeholder, runtime))
        client = ServiceClient(f"https://127.0.0.1:{port}", client_context(pki.identity("lss")),
                               timeout=60)
        try:
            if not idempotent:  # its request may have run: it is not sent again
                with pytest.raises(ActionError) as lost:
                    await client.call("internal_only", {"name": "x"})
                assert lost.value.status == 503 and lost.value.code == "unavailable"
                return
            result = await client.call("internal_only", {"name": "x"}, idempotent=True)
            assert result == "secret"  # from the service, started after the first attempt
            with pytest.raises(ActionError) as refused:
                await client.call("internal_only", {"name": 3})
            assert refused.value.status == 422 and refused.value.field == "params.name"
        finally:
            await client.close()
            await starter
            await runtime.stop()

    asyncio.run(scenario())


def test_calls_to_a_service_that_never_comes_up_fail_as_unavailable(pki):
    async def scenario() -> None:
        url = f"https://127.0.0.1:{free_port()}"
        async with ServiceClient(url, client_context(pki.identity("lss"))) as client:
            with pytest.raises(ActionError) as failed:
                await client.call("info", idempotent=True)
        assert failed.value.status == 503 and failed.value.code == "unavailable"

    asyncio.run(scenario())
