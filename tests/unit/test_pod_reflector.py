"""The pod reflector and the Kubernetes spawner against a fake API transport.

The code under test is the real PodReflector and KubernetesSpawner over the real
kubernetes_asyncio client; only the HTTP server at the other end is a fake
(tests/unit/kube_api_fake.py), which compacts its history (410 Gone), cuts watches, hangs a
watch, refuses requests and goes away.
Each test waits for what it expects (events, requests), never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import pytest

from tests.unit.kube_api_fake import RUNNING_READY, FakeKubeApi, exited, fake_kube_api
from tests.unit.test_kubernetes_spawner import SETTINGS, spec  # noqa: F401 (fixture)
from twinstack.spawners import ServiceSpec, SpawnError
from twinstack.spawners.kubernetes import (
    KubernetesSpawner,
    PodReflector,
    WatchFailed,
    compute_pod,
    endpoint,
    exit_code,
    is_ready,
    pod_name,
)

# Small back-off so that giving up takes milliseconds; long watches unless a test wants short.
QUICK = {"request_timeout": 5.0, "watch_timeout": 30, "restart_every": 3600.0,
         "give_up_after": 3, "backoff": 0.01, "max_backoff": 0.05}


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run one scenario; a hang fails it (rather than waiting for a spawner's own timeout)."""
    async def bounded() -> None:
        async with asyncio.timeout(20):
            await scenario

    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def reflecting(core: Any, **settings: Any) -> AsyncIterator[PodReflector]:
    """A reflector running on `core`; stopped (and its task awaited) on exit."""
    reflector = PodReflector(SETTINGS, **{**QUICK, **settings})
    task = asyncio.create_task(reflector.run(core))
    try:
        yield reflector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WatchFailed):
            await task


def pod(of: ServiceSpec, name: str = "") -> dict[str, Any]:
    """A pod of this LSS as the spawner would create it (optionally under another name)."""
    manifest = compute_pod(SETTINGS, of)
    if name:
        manifest["metadata"]["name"] = name
    return manifest


def deletes_of(fake: FakeKubeApi, name: str) -> list[Any]:
    return [s for s in fake.requests("delete") if s.name == name]


@pytest.mark.parametrize("ready", ["in the re-list", "after the re-list"])
def test_start_sees_readiness_across_a_relist(spec, ready):  # noqa: F811
    """410 Gone during start() makes the reflector list afresh, replacing its whole cache.

    The pod turns ready either while the watch misses it (only the re-list shows it) or by a
    watch event after the re-list; start() must see it either way and keep the ready pod.
    """
    name = pod_name(spec.session, spec.service)

    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.ready_on_create = False
            spawner = KubernetesSpawner(spec, SETTINGS, core, reflector)
            start = asyncio.create_task(spawner.start(timeout=60))
            assert await reflector.wait(lambda: name in reflector.pods, 10)
            mark = len(fake.seen)
            if ready == "in the re-list":
                fake.set_status(name, RUNNING_READY, quietly=True)
            fake.compact()  # the open watch gets 410 Gone
            if ready == "after the re-list":
                await fake.until(lambda: bool(fake.requests("watch", after=mark)))
                fake.set_status(name, RUNNING_READY)
            assert await start == endpoint(SETTINGS, spec)
            assert fake.requests("list", after=mark)  # the cache was replaced meanwhile
            assert deletes_of(fake, name) == []  # the ready pod was kept
            assert spawner.poll() is None and is_ready(reflector.pods[name])

    run(scenario())


def test_dropped_watch_resumes_from_last_resource_version(spec):  # noqa: F811
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.add_pod(pod(spec, "a"), RUNNING_READY)
            assert await reflector.wait(lambda: "a" in reflector.pods, 10)
            fake.set_status("a", exited(0))
            assert await reflector.wait(lambda: exit_code(reflector.pods["a"]) == 0, 10)
            await fake.until(lambda: fake.watching)
            last, lists, mark = reflector.resource_version, len(fake.requests("list")), \
                len(fake.seen)
            fake.drop_watches()
            fake.set_status("a", exited(3))  # while the watch is down, or just back
            assert await reflector.wait(lambda: exit_code(reflector.pods["a"]) == 3, 10)
            [resumed, *_] = fake.requests("watch", after=mark)
            assert resumed.query["resourceVersion"] == last
            assert len(fake.requests("list")) == lists  # resumed, not listed afresh

    run(scenario())


def test_bookmark_moves_the_resume_point_without_touching_the_cache(spec):  # noqa: F811
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.add_pod(pod(spec, "a"), RUNNING_READY)
            assert await reflector.wait(lambda: "a" in reflector.pods, 10)
            await fake.until(lambda: fake.watching)
            cached = reflector.pods["a"]
            fake.bookmark()
            version = str(fake.version)
            assert await reflector.wait(lambda: reflector.resource_version == version, 10)
            assert reflector.pods == {"a": cached}
            mark = len(fake.seen)
            fake.drop_watches()
            await fake.until(lambda: bool(fake.requests("watch", after=mark)))
            [resumed] = fake.requests("watch", after=mark)
            assert resumed.query["resourceVersion"] == version

    run(scenario())


def test_gone_on_resume_lists_afresh(spec):  # noqa: F811
    """A pod deleted while the watch was down, its event compacted away: the re-list drops it."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.add_pod(pod(spec, "a"), RUNNING_READY)
            fake.add_pod(pod(spec, "b"), RUNNING_READY)
            assert await reflector.wait(lambda: {"a", "b"} <= reflector.pods.keys(), 10)
            await fake.until(lambda: fake.watching)
            last, mark = reflector.resource_version, len(fake.seen)
            fake.forget("b")
            fake.compact(tell_watchers=False)
            fake.drop_watches()
            assert await reflector.wait(lambda: "b" not in reflector.pods, 10)
            assert set(reflector.pods) == {"a"}
            [resumed, *_] = fake.requests("watch", after=mark)
            assert resumed.query["resourceVersion"] == last
            assert fake.requests("list", after=mark)  # 410 on resume, then a fresh list

    run(scenario())


def test_hung_watch_times_out_and_restarts(spec):  # noqa: F811
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(
                core, request_timeout=0.5, watch_timeout=1, give_up_after=10) as reflector:
            fake.add_pod(pod(spec, "a"), RUNNING_READY)
            assert await reflector.wait(lambda: "a" in reflector.pods, 10)
            await fake.until(lambda: fake.watching)
            mark = len(fake.seen)
            fake.hang = True
            fake.drop_watches()
            await fake.until(lambda: fake.hung_closed >= 1)  # the client gave up on it
            fake.hang = False
            fake.set_status("a", exited(5))
            assert await reflector.wait(lambda: exit_code(reflector.pods["a"]) == 5, 10)
            [hung, *_] = fake.requests("watch", after=mark)
            assert hung.query["timeoutSeconds"] == "1"  # the server was asked to end it too
            assert reflector.failure is None  # one hung watch is no reason to give up

    run(scenario())


def test_watch_is_restarted_with_a_fresh_list_periodically(spec):  # noqa: F811
    """A change no watch event reports shows up after the periodic re-list."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(
                core, watch_timeout=1, restart_every=0.5) as reflector:
            fake.add_pod(pod(spec, "a"), RUNNING_READY)
            assert await reflector.wait(lambda: "a" in reflector.pods, 10)
            fake.set_status("a", exited(7), quietly=True)
            assert await reflector.wait(lambda: exit_code(reflector.pods["a"]) == 7, 10)
            assert len(fake.requests("list")) >= 2

    run(scenario())


def test_first_load_barrier_holds_the_spawner_until_the_list_is_in(spec):  # noqa: F811
    """A pod left from an earlier start exists; only a loaded cache lets start() see it."""
    name = pod_name(spec.session, spec.service)

    async def scenario() -> None:
        async with fake_kube_api() as (fake, core):
            fake.add_pod(pod(spec), exited(1))
            fake.lists_held = asyncio.Event()
            async with reflecting(core) as reflector:
                spawner = KubernetesSpawner(spec, SETTINGS, core, reflector)
                assert spawner.poll() is None  # not known yet is not dead
                start = asyncio.create_task(spawner.start(timeout=60))
                await fake.until(lambda: bool(fake.requests("create", "services")))
                assert not reflector.loaded.is_set()
                fake.lists_held.set()
                assert await start == endpoint(SETTINGS, spec)
                writes = [(s.what, s.name) for s in fake.seen
                          if s.kind == "pods" and s.what in ("create", "delete")]
                assert writes == [("delete", name), ("create", None)]

    run(scenario())


def test_api_down_for_good_makes_run_raise_after_the_give_up_count(spec):  # noqa: F811
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core):
            fake.down = True
            reflector = PodReflector(SETTINGS, **QUICK)
            waiter = asyncio.create_task(reflector.wait_loaded())
            with pytest.raises(WatchFailed, match=r"failed 3 times in a row \(last: 503"):
                await reflector.run(core)
            assert len(fake.requests("list")) == 3
            with pytest.raises(WatchFailed, match="503"):
                await waiter

    run(scenario())


@pytest.mark.parametrize("down", ["answers 503", "is gone"])
def test_spawner_waiting_on_a_watch_that_gives_up_fails_clearly(spec, down):  # noqa: F811
    """The API fails for good while start() waits for readiness: a SpawnError, not a hang."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.ready_on_create = False
            name = pod_name(spec.session, spec.service)
            spawner = KubernetesSpawner(spec, SETTINGS, core, reflector)
            start = asyncio.create_task(spawner.start(timeout=60))
            assert await reflector.wait(lambda: name in reflector.pods, 10)
            if down == "answers 503":
                fake.down = True
                fake.drop_watches()
            else:
                await fake.go_away()
            with pytest.raises(SpawnError, match="pod watch failed 3 times") as failed:
                await start
            assert "127.0.0.1" not in str(failed.value)
            assert "failed 3 times" in str(reflector.failure)  # so run() has raised it
            if down == "answers 503":
                assert deletes_of(fake, name)  # it tried to clean up what it created

    run(scenario())


def test_cancelled_start_leaves_no_pod(spec):  # noqa: F811
    """A sibling failed and the session's starts are cancelled: the pod must not stay."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.ready_on_create = False
            name = pod_name(spec.session, spec.service)
            spawner = KubernetesSpawner(spec, SETTINGS, core, reflector)
            start = asyncio.create_task(spawner.start(timeout=60))
            assert await reflector.wait(lambda: name in reflector.pods, 10)
            start.cancel()
            with pytest.raises(asyncio.CancelledError):
                await start
            assert name not in fake.objects["pods"]
            assert f"{name}-tls" not in fake.objects["secrets"]

    run(scenario())


def test_api_refusing_the_pod_is_a_spawn_error_and_cleans_up(spec):  # noqa: F811
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.forbidden.add(("POST", "pods"))
            spawner = KubernetesSpawner(spec, SETTINGS, core, reflector)
            with pytest.raises(SpawnError, match=r"the Kubernetes API failed \(403 Forbidden"):
                await spawner.start(timeout=60)
            assert fake.objects["secrets"] == {}  # its certificate does not stay behind

    run(scenario())


def test_a_new_lss_process_finds_its_running_pod_by_label(spec):  # noqa: F811
    """What an LSS restart does: a fresh reflector lists the pods by this LSS's labels, and a
    spawner given the old one's get_state() sees the pod running (poll None: adopt it, do
    not restart it) and can stop it."""
    name = pod_name(spec.session, spec.service)

    async def scenario() -> None:
        async with fake_kube_api() as (fake, core):
            async with reflecting(core) as before:
                started = KubernetesSpawner(spec, SETTINGS, core, before)
                await started.start(timeout=60)
                state = started.get_state()
            async with reflecting(core) as after:  # the restarted LSS's own watch
                adopted = KubernetesSpawner(spec, SETTINGS, core, after)
                adopted.load_state(state)
                assert await after.wait_loaded(10)
                assert adopted.poll() is None
                assert deletes_of(fake, name) == []
                await adopted.stop()
                assert await after.wait(lambda: name not in after.pods, 10)
                assert adopted.poll() == -1

    run(scenario())
