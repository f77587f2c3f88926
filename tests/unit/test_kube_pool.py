"""The Kubernetes warm pool against the fake API transport: its manifests, how it keeps each
kind's waiting pods, and that a pod is claimed once only, whoever claims it at once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import kubernetes_validate
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.unit.kube_api_fake import RUNNING_READY, FakeKubeApi, exited, fake_kube_api
from tests.unit.test_kubernetes_spawner import SETTINGS, VERSIONS
from tests.unit.test_pod_reflector import reflecting, run
from twinstack.pki.tls import client_context
from twinstack.spawners.kube_pool import (
    CLAIM_PORT,
    CLAIMED,
    POOL_LABEL,
    WAITING,
    PodPool,
    pool_identity,
    pool_labels,
    pool_pod,
)
from twinstack.spawners.kubernetes import PodReflector, certificate_secret, remove_orphans

KINDS = ("kriging", "cartesian-mesh")


@pytest.fixture(scope="module")
def issue(tmp_path_factory):
    """The LSS's pool identities, from a CA of their own."""
    from twinstack.pki import init_authority

    pki = tmp_path_factory.mktemp("pool-pki")
    init_authority(pki)
    identity = functools.partial(pool_identity, pki, pki / "ca.pem", 1.0)
    identity.ca = pki / "ca.pem"  # type: ignore[attr-defined]
    return identity


def test_a_pool_identity_names_its_pod_and_no_session(issue, tmp_path):
    files = issue("kriging", "pool-kriging-0a1b2c3d", tmp_path)
    leaf = x509.load_pem_x509_certificate(files.cert.read_bytes())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kriging"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == \
        "session:pool-kriging-0a1b2c3d"  # a 'session' of its own, which no peer shares
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pool-kriging-0a1b2c3d" in names.get_values_for_type(x509.DNSName)
    assert files.ca == issue.ca  # (a claim checks the pod presents it: test_kube_warm_pool)


def pool_of(core: Any, reflector: PodReflector, issue: Any, size: int = 1,
            kinds: tuple[str, ...] = KINDS) -> PodPool:
    return PodPool(SETTINGS, core, reflector, size, kinds, identity=issue,
                   client_tls=client_context(ca=issue.ca), logger_url=None)


def waiting(fake: FakeKubeApi, kind: str | None = None) -> list[str]:
    return sorted(name for name, pod in fake.objects["pods"].items()
                  if pod["metadata"]["labels"].get(POOL_LABEL) == WAITING
                  and kind in (None, pod["metadata"]["labels"]["twinstack.dev/service"]))


@contextlib.asynccontextmanager
async def running(pool: PodPool) -> Any:
    task = asyncio.create_task(pool.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("version", VERSIONS)
def test_pool_manifests_validate_and_carry_no_session(issue, version, tmp_path):
    identity = issue("kriging", "pool-kriging-0a1b2c3d", tmp_path)
    pod = pool_pod(SETTINGS, "kriging", "pool-kriging-0a1b2c3d", logger_url=None, gpus=0)
    secret = certificate_secret(SETTINGS, "pool-kriging-0a1b2c3d",
                                pool_labels(SETTINGS, "kriging"), identity)
    for manifest in (pod, secret):
        kubernetes_validate.validate(manifest, version, strict=True)
    labels = pod["metadata"]["labels"]
    assert labels[POOL_LABEL] == WAITING and "twinstack.dev/session" not in labels
    [container] = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TWINSTACK_CLAIM_BIND"] == f"0.0.0.0:{CLAIM_PORT}"
    assert "TWINSTACK_SESSION" not in env and "TWINSTACK_PUBLISH" not in env
    assert container["args"] == ["kriging"]
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]


def test_the_pool_keeps_each_kind_full_and_replaces_claimed_and_exited_pods(issue):
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            pool = pool_of(core, reflector, issue, size=2)
            async with running(pool):
                await fake.until(lambda: len(waiting(fake)) == 4)
                assert [len(waiting(fake, kind)) for kind in KINDS] == [2, 2]
                assert len(fake.objects["secrets"]) == 4  # each its own pool identity
                await reflector.wait(lambda: all(
                    p["metadata"]["name"] in reflector.pods for p in
                    fake.objects["pods"].values()), 10)

                claimed = await pool.claim("kriging", "S1")
                assert claimed is not None
                name = claimed["metadata"]["name"]
                labels = fake.objects["pods"][name]["metadata"]["labels"]
                assert labels[POOL_LABEL] == CLAIMED and labels["twinstack.dev/session"] == "s1"
                await fake.until(lambda: len(waiting(fake, "kriging")) == 2)  # a replacement
                assert name not in waiting(fake)

                broken = waiting(fake, "cartesian-mesh")[0]
                fake.set_status(broken, exited(1))  # it died waiting: deleted and replaced
                await fake.until(lambda: broken not in fake.objects["pods"]
                                 and len(waiting(fake, "cartesian-mesh")) == 2)
                assert f"{broken}-tls" not in fake.objects["secrets"]
                assert len(fake.requests("create")) == 6

    run(scenario())


def test_a_waiting_pod_goes_to_one_session_however_many_claim_it_at_once(issue):
    """Three sessions of one LSS and one of another LSS claim at once; two pods wait."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as ours, \
                reflecting(core) as theirs:
            for name in ("pool-kriging-00000001", "pool-kriging-00000002"):
                fake.add_pod({"metadata": {"name": name, "namespace": "twinstack",
                                           "labels": pool_labels(SETTINGS, "kriging")}},
                             RUNNING_READY)
                fake.objects["secrets"][f"{name}-tls"] = {"metadata": {
                    "name": f"{name}-tls", "labels": pool_labels(SETTINGS, "kriging")}}
            for reflector in (ours, theirs):
                await reflector.wait(lambda r=reflector: len(r.pods) == 2, 10)
            lss_a, lss_b = pool_of(core, ours, issue), pool_of(core, theirs, issue)
            claims = await asyncio.gather(lss_a.claim("kriging", "a1"),
                                          lss_a.claim("kriging", "a2"),
                                          lss_a.claim("kriging", "a3"),
                                          lss_b.claim("kriging", "b1"))
            won = [c["metadata"]["name"] for c in claims if c is not None]
            assert sorted(won) == ["pool-kriging-00000001", "pool-kriging-00000002"]
            session_of = {n: fake.objects["pods"][n]["metadata"]["labels"]["twinstack.dev/session"]
                          for n in won}
            assert len(set(session_of.values())) == 2  # each pod one session's, and told which
            for name in won:  # its Secret goes with it: kept and removed with its session
                assert fake.objects["secrets"][f"{name}-tls"]["metadata"]["labels"] == \
                    fake.objects["pods"][name]["metadata"]["labels"]
            assert await lss_b.claim("kriging", "b2") is None  # none left waiting
            kept, gone = won
            await remove_orphans(core, SETTINGS, keep={session_of[kept]})  # a new LSS's start
            assert kept in fake.objects["pods"] and f"{kept}-tls" in fake.objects["secrets"]
            assert gone not in fake.objects["pods"] and f"{gone}-tls" not in fake.objects["secrets"]

    run(scenario())


def test_a_pod_still_warming_up_is_not_claimed(issue):
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.add_pod({"metadata": {"name": "pool-kriging-00000003", "namespace": "twinstack",
                                       "labels": pool_labels(SETTINGS, "kriging")}},
                         {"phase": "Running"})
            await reflector.wait(lambda: bool(reflector.pods), 10)
            assert await pool_of(core, reflector, issue).claim("kriging", "s") is None
            assert not fake.requests("patch")

    run(scenario())




def test_a_pod_that_waited_half_its_certificate_life_is_replaced(issue):
    """A claim must find the pod's certificate valid as long as a session's own would be."""
    async def scenario() -> None:
        async with fake_kube_api() as (fake, core), reflecting(core) as reflector:
            fake.add_pod({"metadata": {"name": "pool-kriging-0000000a", "namespace": "twinstack",
                                       "labels": pool_labels(SETTINGS, "kriging"),
                                       "creationTimestamp": "2026-01-01T00:00:00Z"}},
                         RUNNING_READY)
            async with running(pool_of(core, reflector, issue, kinds=("kriging",))):
                await fake.until(lambda: "pool-kriging-0000000a" not in fake.objects["pods"]
                                 and len(waiting(fake)) == 1)

    run(scenario())
