"""The Kubernetes spawner's warm pool end to end: the real PodPool, KubernetesSpawner and pod
watch against the fake API transport, whose pods a stand-in kubelet runs as real `twinstack
serve` processes, each on a loopback address of its own (its pod IP) with the ports a pod has.

A session's service claims a waiting pod, which takes the session's identity and arguments
and serves under the service's name; the pool makes a replacement; a pool pod that refuses
its claim is deleted and the service gets a pod of its own; a claimed pod that dies is
restarted as a pod of its own under the same name."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import os
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.conftest import served_certificate
from tests.unit.kube_api_fake import RUNNING_READY, FakeKubeApi, exited, fake_kube_api
from tests.unit.test_kubernetes_spawner import SETTINGS
from tests.unit.test_pod_reflector import reflecting
from twinstack.pki.identity import issue_identity
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.spawners import ServiceSpec
from twinstack.spawners.kube_pool import (
    CLAIM_PORT,
    POOL_LABEL,
    WAITING,
    PodPool,
    pool_identity,
)
from twinstack.spawners.kubernetes import (
    HEALTH_PORT,
    INTERNAL_PORT,
    TLS_DIR,
    KubernetesSpawner,
    PodReflector,
    pod_host,
    pod_name,
)

SESSION = "c1a1med0a1b2c3d4e5f60718293a4b5c"
SQUARE = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
          "targets": [[0.5, 0.5]]}


def _free_address(taken: set[str]) -> str:
    """A loopback address (127.0.0.N), not `taken`, whose pod ports are all free: a pod IP."""
    for n in range(100, 250):
        ip = f"127.0.0.{n}"
        if ip in taken:
            continue
        try:
            for port in (INTERNAL_PORT, HEALTH_PORT, CLAIM_PORT):
                with socket.socket() as probe:
                    probe.bind((ip, port))
        except OSError:
            continue
        return ip
    raise AssertionError("no loopback address with free pod ports")


class ProcessKubelet:
    """Runs each created pod as `twinstack serve ARGS` with its env, its Secret's files where
    the pod mounts them, and its pod IP for 0.0.0.0; reports it Running with that IP, Ready
    once its /readyz answers (as the kubelet's probe would), and its exit code when it ends."""

    def __init__(self, fake: FakeKubeApi, folder: Path) -> None:
        self.fake = fake
        self.folder = folder
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.mounts: dict[str, str] = {}  # the Secret each pod mounts
        self.ips: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        fake.kubelet = self

    def created(self, pod: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(pod))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def secret_changed(self, name: str) -> None:
        """Bring a Secret's new data into the pods that mount it, as the kubelet does."""
        for pod, secret in self.mounts.items():
            if secret == name and pod in self.procs:
                self._write_secret(pod)

    def _write_secret(self, pod: str) -> None:
        tls = self.folder / pod / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        for file, text in self.fake.objects["secrets"][self.mounts[pod]]["stringData"].items():
            (tls / f".{file}").write_text(text)
            (tls / f".{file}").replace(tls / file)

    def deleted(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)

    async def _run(self, pod: dict[str, Any]) -> None:
        ip = _free_address(self.ips)
        self.ips.add(ip)  # until its process has ended: pods started together differ
        try:
            await self._serve(pod, ip)
        finally:
            self.ips.discard(ip)

    async def _serve(self, pod: dict[str, Any], ip: str) -> None:
        name = pod["metadata"]["name"]
        [container] = pod["spec"]["containers"]
        tls = self.folder / name / "tls"
        self.mounts[name] = pod["spec"]["volumes"][0]["secret"]["secretName"]
        self._write_secret(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
        env["TWINSTACK_CERT_RELOAD_SECONDS"] = "0.2"  # renewals show in a moment, not 5 s
        for item in container["env"]:
            env[item["name"]] = (item["value"].replace("0.0.0.0", ip)
                                 .replace(TLS_DIR, str(tls))
                                 .replace("/var/lib/twinstack", str(self.folder / name)))
        with (self.folder / f"{name}.out").open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "twinstack", "serve", *container["args"], env=env,
                stdout=out, stderr=out)
        self.procs[name] = proc
        self._status(name, {"phase": "Running", "podIP": ip})
        probe = ssl.create_default_context()
        probe.check_hostname, probe.verify_mode = False, ssl.CERT_NONE  # as the kubelet's
        async with aiohttp.ClientSession() as http:
            while proc.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"https://{ip}:{HEALTH_PORT}/readyz", ssl=probe) as r:
                        if r.status == 200:
                            self._status(name, {**RUNNING_READY, "podIP": ip})
                            break
                await asyncio.sleep(0.05)
        code = await proc.wait()
        self._status(name, {**exited(code), "podIP": ip})

    def _status(self, name: str, status: dict[str, Any]) -> None:
        if name in self.fake.objects["pods"]:
            self.fake.set_status(name, copy.deepcopy(status))

    def output(self, name: str) -> str:
        return (self.folder / f"{name}.out").read_text(errors="replace")

    async def close(self) -> None:
        for name in list(self.procs):
            self.deleted(name)
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def issuer(pki):
    """The LSS's pool identities (kube_pool.pool_identity), from the tests' CA."""
    return functools.partial(pool_identity, pki.dir, pki.ca, 1.0)


def spec_of(pki, tmp_path: Path, session: str = SESSION) -> ServiceSpec:
    identity = issue_identity(pki.dir, "kriging", tmp_path / f"kriging-{session}",
                              session=session, hosts=[pod_host(SETTINGS, session, "kriging")],
                              issuer="intermediate")
    return ServiceSpec(service="kriging", session=session, identity=identity,
                       workdir=tmp_path)


def waiting(reflector: PodReflector) -> list[str]:
    return [n for n, p in reflector.pods.items()
            if p["metadata"]["labels"].get(POOL_LABEL) == WAITING
            and p["status"].get("conditions")]


async def interpolate(address: str, host: str, relay: ssl.SSLContext) -> float:
    """Call the service as the session's relay would: at the pod, verifying the name."""
    async with aiohttp.ClientSession() as http, http.post(
            f"https://{address}/execute", ssl=relay, server_hostname=host,
            json={"action": "interpolate", "params": SQUARE}) as reply:
        return float((await reply.json())["result"]["estimates"][0])


def run(scenario: Any) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(100):  # a hang guard: each step waits for an event
            await scenario
    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, pki: Any, issuer: Any, size: int = 1) -> Any:
    async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
        kubelet = ProcessKubelet(fake, tmp_path / "node")
        pool = PodPool(SETTINGS, core, reflector, size, ("kriging",), identity=issuer,
                       client_tls=client_context(pki.identity("lss")))
        filler = asyncio.create_task(pool.run())
        try:
            yield fake, core, reflector, kubelet, pool
        finally:
            filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filler
            await kubelet.close()


async def eventually(predicate: Any, timeout: float = 60.0) -> bool:
    """Poll `predicate` (a blocking check) in a thread until it holds, beside the event loop
    the fake API and kubelet run in; TimeoutError after `timeout` (a hang guard)."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.05)
    return True


def test_a_session_claims_a_warm_pod_which_serves_it_and_the_pool_refills(pki, issuer,
                                                                         tmp_path):
    relay_files = pki.identity("relay")
    relay = client_context(relay_files)

    async def scenario() -> None:
        async with cluster(tmp_path, pki, issuer) as (fake, core, reflector, kubelet, pool):
            assert await reflector.wait(lambda: len(waiting(reflector)) == 1, 120)
            [warm] = waiting(reflector)
            spec = spec_of(pki, tmp_path)
            spawner = KubernetesSpawner(spec, SETTINGS, core, reflector, pool)
            host = pod_host(SETTINGS, SESSION, "kriging")
            assert await spawner.start(timeout=60) == f"{host}:{INTERNAL_PORT}"
            assert spawner.name == warm  # the warm pod, not a new one
            assert pod_name(SESSION, "kriging") not in fake.objects["pods"]  # none of its own
            ip = reflector.pods[warm]["status"]["podIP"]
            assert await interpolate(f"{ip}:{INTERNAL_PORT}", host, relay) == pytest.approx(2.5)
            # a renewal reaches the claimed pod: through its mounted Secret, which it follows
            old = served_certificate(f"{ip}:{INTERNAL_PORT}", relay_files)
            issue_identity(pki.dir, "kriging", tmp_path / f"kriging-{SESSION}", session=SESSION,
                           hosts=[host], issuer="intermediate")
            await spawner.renewed()
            new = spec.identity.cert.read_bytes()
            assert await eventually(lambda: served_certificate(
                f"{ip}:{INTERNAL_PORT}", relay_files) != old)
            assert served_certificate(f"{ip}:{INTERNAL_PORT}", relay_files) == \
                x509.load_pem_x509_certificate(new).public_bytes(Encoding.DER)
            labels = fake.objects["pods"][warm]["metadata"]["labels"]
            assert labels["twinstack.dev/session"] == SESSION[:63]
            assert pod_name(SESSION, "kriging") in fake.objects["services"]

            assert await reflector.wait(lambda: len(waiting(reflector)) == 1, 120)
            [replacement] = waiting(reflector)
            assert replacement != warm

            # the claimed pod dies: restarted as a pod of its own, under the same name
            kubelet.deleted(warm)
            assert await reflector.wait(lambda: spawner.poll() is not None, 60)
            assert await spawner.start(timeout=120) == f"{host}:{INTERNAL_PORT}"
            assert spawner.name == pod_name(SESSION, "kriging")
            ip = reflector.pods[spawner.name]["status"]["podIP"]
            assert await interpolate(f"{ip}:{INTERNAL_PORT}", host, relay) == pytest.approx(2.5)
            assert waiting(reflector) == [replacement]  # not taken for a restart

            await spawner.stop()
            await fake.until(lambda: not any(
                n.startswith(("kriging-", warm)) for kind in ("pods", "secrets", "services")
                for n in fake.objects[kind]))

    run(scenario())


def test_a_pool_pod_that_refuses_its_claim_is_replaced_by_a_pod_of_its_own(pki, issuer,
                                                                          tmp_path):
    """A pool pod whose certificate does not name it (as a pod someone else put in its place
    would present): the LSS sends it nothing, deletes it, and starts the service's own pod."""
    def wrong(service: str, pod: str, folder: Path) -> TlsFiles:
        return issuer(service, "pool-kriging-elsewhere", folder)

    async def scenario() -> None:
        async with cluster(tmp_path, pki, wrong) as (fake, core, reflector, kubelet, pool):
            assert await reflector.wait(lambda: len(waiting(reflector)) == 1, 120)
            [impostor] = waiting(reflector)
            spawner = KubernetesSpawner(spec_of(pki, tmp_path), SETTINGS, core, reflector,
                                        pool)
            await spawner.start(timeout=120)
            assert spawner.name == pod_name(SESSION, "kriging")
            assert impostor not in fake.objects["pods"]
            assert "claimed by session" not in kubelet.output(impostor)
            await spawner.stop()

    run(scenario())


