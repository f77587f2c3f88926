"""A call given up on is stopped where it runs: the runtime cancels the action's task when its
WebSocket caller cancels it, times out or goes away, and says so in its log.

In-process: a small service declared here, the real runtime, TLS and client link."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from tests.conftest import Pki
from tests.integration.test_runtime_inprocess import settings_for
from twinstack.pki.tls import client_context
from twinstack.wire.actions import Call, action
from twinstack.wire.client import ServiceClient
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports, Runtime, ServiceBase

LONG = 30.0  # a hang guard, never the thing tested


class Nothing(BaseModel):
    pass


class Sleeper(ServiceBase):
    """`wait` runs until it is cancelled; `started` and `stopped` tell the test when."""

    name: ClassVar[str] = "kriging"
    ports: ClassVar[Ports] = Ports(internal=0, health=0)
    started: ClassVar[asyncio.Event]
    stopped: ClassVar[asyncio.Event]

    @action(allow=("lss",))
    async def wait(self, call: Call, params: Nothing) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.set()


async def with_sleeper(pki: Pki, scenario: Any) -> None:
    Sleeper.started, Sleeper.stopped = asyncio.Event(), asyncio.Event()
    runtime = Runtime(Sleeper, settings_for(pki, "kriging"))
    await runtime.start()
    lss = pki.identity("lss")
    try:
        async with ServiceClient(f"https://{runtime.addresses['internal']}",
                                 client_context(lss)) as client:
            link = await client.connect()
            try:
                await scenario(link)
            finally:
                await link.close()
    finally:
        await runtime.stop()


def test_a_call_that_times_out_is_stopped_on_the_service(pki: Pki, caplog):
    async def scenario(link: Any) -> None:
        with pytest.raises(ActionError, match=r"no answer in 0\.2 s"):
            await link.call("wait", {}, timeout=0.2)
        await asyncio.wait_for(Sleeper.stopped.wait(), LONG)

    with caplog.at_level(logging.INFO, logger="twinstack.wire.runtime"):
        asyncio.run(with_sleeper(pki, scenario))
    assert "wait cancelled at its caller's request" in caplog.text


def test_a_caller_cancelled_stops_the_call_on_the_service(pki: Pki):
    async def scenario(link: Any) -> None:
        calling = asyncio.create_task(link.call("wait", {}, timeout=LONG))
        await asyncio.wait_for(Sleeper.started.wait(), LONG)
        calling.cancel()
        await asyncio.wait_for(Sleeper.stopped.wait(), LONG)
        assert calling.cancelled()

    asyncio.run(with_sleeper(pki, scenario))
