"""The process spawner on its own: start, crash (connections refused while it is down, not
left hanging), restart at the same endpoint, adopt, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

from tests.conftest import Pki
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import client_context
from twinstack.spawners import ServiceSpec, SpawnError
from twinstack.spawners.process import ProcessSpawner
from twinstack.wire.client import ServiceClient


def spec_for(pki: Pki, tmp_path, service: str = "kriging", *extra: str) -> ServiceSpec:
    identity = issue_identity(pki.dir, service, tmp_path / f"{service}-id", session="s-9",
                              issuer="intermediate", days=1)
    return ServiceSpec(service=service, session="s-9", identity=identity,
                       workdir=tmp_path / service, extra_args=extra)


def test_start_crash_restart_adopt_stop(pki: Pki, tmp_path):
    lss = pki.identity("lss")

    async def scenario() -> None:
        spawner = ProcessSpawner(spec_for(pki, tmp_path))
        planned = spawner.endpoint()  # known before it starts: the LSS holds its listener
        endpoint = await spawner.start()
        assert endpoint == planned
        assert spawner.poll() is None
        async with ServiceClient(f"https://{endpoint}", client_context(lss)) as client:
            info = await client.call("info")
            assert (info["service"], info["session"]) == ("kriging", "s-9")

            os.kill(spawner.pid, signal.SIGKILL)
            while spawner.poll() is None:
                await asyncio.sleep(0.02)
            assert spawner.poll() == -signal.SIGKILL
            host, port = endpoint.rsplit(":", 1)
            with pytest.raises(ConnectionRefusedError):  # the relay can say so at once
                socket.create_connection((host, int(port)), timeout=10).close()
            assert await spawner.start() == endpoint  # same port after a restart
            assert (await client.call("info", idempotent=True))["service"] == "kriging"

        adopted = ProcessSpawner(spawner.spec)  # as a restarted LSS would
        adopted.load_state(spawner.get_state())
        assert adopted.poll() is None
        await adopted.stop(grace=5)
        assert adopted.poll() == -1  # gone; its exit code went with the old parent
        assert any("kriging ready" in line for line in spawner.output_tail())
        await spawner.stop()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=10).close()

    asyncio.run(scenario())


def test_a_service_that_cannot_start_reports_its_exit_code_and_output(pki: Pki, tmp_path):
    async def scenario() -> None:
        spawner = ProcessSpawner(spec_for(pki, tmp_path, "kriging", "--log-level", "loud"))
        with pytest.raises(SpawnError) as failed:
            await spawner.start()
        assert failed.value.exit_code == 10
        assert any("log_level" in line for line in failed.value.output_tail)

    asyncio.run(scenario())
