"""Fault injection: a spawner that fails in each phase, driving the real LSS (and gss).

Whatever goes wrong, the session ends in a definite state with a reason, its capacity is free
again, none of its processes is left running and its folder (with its private keys) is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Pki
from tests.platform_fixtures import Platform, running_platform, session_processes, wait_until
from twinstack.client import Session, SessionFailed
from twinstack.config import load_settings
from twinstack.services.lss import LssService
from twinstack.wire.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "tests.fault_spawners:make"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):
    """A platform whose LSS starts compute services through the fault spawner."""
    tmp = tmp_path_factory.mktemp("faults")
    plan = tmp / "plan.json"
    env = {"TWINSTACK_SPAWNER_FACTORY": FACTORY, "FAULT_PLAN": str(plan),
           "PYTHONPATH": str(ROOT)}
    with running_platform(tmp, "ada", env=env) as platform:
        platform.add_user("operator", admin=True)
        yield platform, plan


def live_sessions(platform: Platform) -> int:
    operator = platform.client("operator")
    try:
        return sum(n["live_sessions"] for n in operator.gss("list_nodes")["nodes"])
    finally:
        operator.close()
        platform.clients.remove(operator)


def session_folder(platform: Platform, session: str) -> Path:
    return platform.data / "local" / "sessions" / session


FAULTS = {  # fault plan -> what the session's reason says
    "raise": ({"fault": "raise"}, "kriging could not start: OSError: [Errno 28] injected"),
    "exit": ({"fault": "exit"}, "kriging exited with 7 while starting"),
    "hang": ({"fault": "hang", "timeout": 2}, "kriging not ready after 2 s"),
    "late": ({"fault": "late", "delay": 4, "timeout": 1}, "kriging not ready after 1 s"),
    "bad-ready": ({"fault": "bad-ready"}, "ValueError: ready file kriging.ready does not name"),
}


@pytest.mark.parametrize("name", FAULTS)
def test_a_start_that_fails_ends_the_session_with_its_reason_and_frees_everything(faulty, name):
    platform, plan = faulty
    fault, reason = FAULTS[name]
    plan.write_text(json.dumps({"kriging": fault}))
    tw = platform.client("ada")
    project = tw.create_project(f"fault-{name}", "data analysis")
    with pytest.raises(SessionFailed) as failed:
        tw.open_session(project["id"])
    session = failed.value.event["session"]
    assert reason in failed.value.event["reason"]
    assert [s["state"] for s in tw.sessions() if s["id"] == session] == ["failed"]
    wait_until(lambda: live_sessions(platform) == 0, what="capacity to be free again")
    # stopped before `failed` was reported (a late one before it could become ready)
    assert not session_processes(session)
    assert not session_folder(platform, session).exists()


def test_who_attaches_after_the_failure_is_told_its_reason(faulty):
    """The relay's first event to a socket is the session's state: with the reason it ended."""
    platform, plan = faulty
    reason = FAULTS["raise"][1]
    plan.write_text(json.dumps({"kriging": FAULTS["raise"][0]}))
    tw = platform.client("ada")
    record = tw.gss("open_session", project=tw.create_project("late", "data analysis")["id"])
    wait_until(lambda: [s["state"] for s in tw.sessions() if s["id"] == record["id"]]
               == ["failed"], what="the session to fail")
    with pytest.raises(SessionFailed) as failed:
        Session(tw, record).wait_ready(60)  # attached only now, as `starting` said
    assert reason in failed.value.event["reason"]


def test_after_the_faults_a_good_start_still_works(faulty):
    platform, plan = faulty
    plan.write_text("{}")
    tw = platform.client("ada")
    project = tw.create_project("healthy", "data analysis")
    session = tw.open_session(project["id"])
    assert session.call("kriging", "info")["session"] == session.id
    assert live_sessions(platform) == 1
    session.close()
    wait_until(lambda: live_sessions(platform) == 0, what="the closed session to free its room")
    wait_until(lambda: not session_processes(session.id), what="its processes to stop")
    wait_until(lambda: not session_folder(platform, session.id).exists(),
               what="its folder to go")


# Sibling services: an LSS in this process (its gss unreachable: events stay in its outbox)


@pytest.fixture
def lss(pki: Pki, tmp_path, monkeypatch):
    plan = tmp_path / "plan.json"
    monkeypatch.setenv("FAULT_PLAN", str(plan))
    identity = pki.identity("lss")
    settings = load_settings({
        "cert": identity.cert, "key": identity.key, "ca": pki.ca, "session_ca": pki.dir,
        "gss_url": "https://127.0.0.1:9", "bind": "127.0.0.1:0", "health_bind": "127.0.0.1:0",
        "data_dir": tmp_path / "lss", "spawner_factory": FACTORY, "lss_name": "sib"})
    return settings, plan


def run_session(settings, plan: Path, faults: dict, services: list[str]) -> list[dict]:
    """Start a session of `services` under `faults`; its events once the runner is done."""
    plan.write_text(json.dumps(faults))

    async def scenario() -> list[dict]:
        async with session_on_lss(settings, "sib-1", services) as service:
            task = service.runners["sib-1"].task
            assert task is not None
            await asyncio.wait_for(task, 60)
            return [e for e in service.outbox if e["session"] == "sib-1"]
    return asyncio.run(scenario())


@contextlib.asynccontextmanager
async def session_on_lss(settings, session: str, services: list[str]
                         ) -> AsyncIterator[LssService]:
    """An LSS in this process (no gss: its events stay in the outbox) told to start a session
    of `services`; stopped at the end of the block."""
    runtime = Runtime(LssService, settings)
    await runtime.start()
    service = runtime.service
    assert isinstance(service, LssService)
    try:
        await service._handle({"type": "start_session", "session": session,
                               "services": services})
        yield service
    finally:
        await runtime.stop()


@pytest.mark.parametrize("fault", [{"fault": "exit"}, {"fault": "hang", "timeout": 3}])
def test_a_failed_start_stops_its_siblings(lss, fault):
    """kriging-b fails while kriging starts (exit: at once) or after kriging is ready
    (hang): either way kriging does not outlive the `failed` report."""
    settings, plan = lss
    events = run_session(settings, plan, {"kriging-b": fault}, ["kriging", "kriging-b"])
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "failed" and "ready" not in kinds, kinds
    assert "kriging-b" in events[-1]["reason"]
    assert not session_processes("sib-1")
    assert not (settings.data_dir / "sessions" / "sib-1").exists()


def test_healthz_fails_once_an_essential_loop_has_died(lss, pki: Pki):
    """A loop that ended (here: cancelled, as a stray cancel from a bug would) is reported."""
    settings, _ = lss

    async def health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
        async with http.get(url) as resp:
            return resp.status, await resp.json()

    async def scenario() -> None:
        runtime = Runtime(LssService, settings)
        await runtime.start()
        url = f"https://{runtime.addresses['health']}/healthz"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    ssl=ssl.create_default_context(cafile=str(pki.ca)))) as http:
                assert (await health(http, url))[0] == 200
                service = runtime.service
                assert isinstance(service, LssService)
                service.control.cancel()
                await asyncio.wait([service.control])
                status, body = await health(http, url)
                assert status == 503 and body["stopped"] == ["control channel"], body
        finally:
            await runtime.stop()
    asyncio.run(scenario())


async def until(predicate, what: str, timeout: float = 60.0) -> None:
    """Poll `predicate` on the event loop; `timeout` is a hang guard only."""
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def test_a_restart_that_hangs_does_not_hold_up_its_sibling(lss):
    """kriging-b crashes and its restart hangs; kriging crashes meanwhile and is back at once."""
    settings, plan = lss
    plan.write_text("{}")

    def seen(service: LssService, kind: str, name: str) -> bool:
        return any(e["type"] == kind and e.get("service") == name for e in service.outbox)

    async def scenario() -> None:
        async with session_on_lss(settings, "sib-2", ["kriging", "kriging-b"]) as service:
            runner = service.runners["sib-2"]
            await until(lambda: any(e["type"] == "ready" for e in service.outbox), "ready")
            plan.write_text(json.dumps({"kriging-b": {"fault": "hang", "timeout": 120}}))
            children = {name: child.spawner for name, child in runner.children.items()}
            os.kill(children["kriging-b"].pid, signal.SIGKILL)
            await until(lambda: seen(service, "restarting", "kriging-b"), "kriging-b to crash")
            os.kill(children["kriging"].pid, signal.SIGKILL)
            await until(lambda: seen(service, "restarted", "kriging"), "kriging to be back")
            assert not seen(service, "restarted", "kriging-b")  # still starting, hung
            assert children["kriging"].poll() is None
        assert not session_processes("sib-2")
    asyncio.run(scenario())
