"""The Kubernetes spawner's manifests (pure builders) and its reading of pod status.

Manifests validate strictly against the Kubernetes schemas of three minor versions. The API
calls and the pod watch are tested against a fake API transport in test_pod_reflector.py.
"""

from __future__ import annotations

import asyncio

import kubernetes_validate
import pytest

from twinstack.pki.identity import issue_identity
from twinstack.spawners import ServiceSpec
from twinstack.spawners.kubernetes import (
    PodReflector,
    PodSettings,
    certificate_secret,
    compute_pod,
    compute_service,
    endpoint,
    exit_code,
    is_ready,
    labels,
    pod_host,
    pod_name,
)

VERSIONS = ("1.33.0", "1.35.0", "1.37.0")
SETTINGS = PodSettings(namespace="twinstack", image="twinstack-compute:0.1.0", lss="lss-0")
SESSION = "0f3c2a9be41d4f0c9d2e7a1b3c4d5e6f"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> ServiceSpec:
    from twinstack.pki import init_authority

    pki = tmp_path_factory.mktemp("pki")
    init_authority(pki)
    identity = issue_identity(pki, "kriging", pki / "kriging", session=SESSION,
                              issuer="intermediate")
    return ServiceSpec(service="kriging", session=SESSION, identity=identity,
                       workdir=pki, logger_url="https://logger.twinstack.svc:7410")


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_strictly(spec, version):
    gpu = ServiceSpec(**{**spec.__dict__, "service": "fit-td", "gpus": 2})
    for manifest in (compute_pod(SETTINGS, spec), compute_pod(SETTINGS, gpu), secret_of(spec),
                     compute_service(SETTINGS, SESSION, "kriging")):
        kubernetes_validate.validate(manifest, version, strict=True)


def secret_of(spec: ServiceSpec) -> dict:
    return certificate_secret(SETTINGS, pod_name(spec.session, spec.service),
                              labels(SETTINGS, spec.session, spec.service), spec.identity)


def test_each_service_is_named_by_a_service_that_selects_its_pod(spec):
    """The DNS name a certificate gives is a headless Service's, which selects by labels: a pod
    started for the service and a pool pod relabelled for it get the same name."""
    service = compute_service(SETTINGS, SESSION, "kriging")
    assert f"{service['metadata']['name']}.twinstack.svc" == pod_host(SETTINGS, SESSION,
                                                                       "kriging")
    assert endpoint(SETTINGS, spec) == pod_host(SETTINGS, SESSION, "kriging") + ":7450"
    pod_labels = compute_pod(SETTINGS, spec)["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["clusterIP"] == "None"


def test_pod_is_restricted_labelled_and_mounts_its_certificate(spec):
    pod = compute_pod(SETTINGS, spec)
    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "compute"
    assert labels["twinstack.dev/session"] == SESSION
    [container] = pod["spec"]["containers"]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert not security["allowPrivilegeEscalation"]
    assert container["args"] == ["kriging"]  # after the image's `twinstack serve`
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TWINSTACK_CERT"].startswith("/etc/twinstack/tls/")
    assert env["TWINSTACK_PUBLISH"] == endpoint(SETTINGS, spec)
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["spec"]["restartPolicy"] == "Never"  # the LSS restarts with its own back-off
    assert pod["spec"]["serviceAccountName"] == "twinstack-compute"
    assert not pod["spec"]["automountServiceAccountToken"]
    secret = secret_of(spec)
    assert secret["stringData"]["tls.key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]


def test_pods_request_what_their_service_is_declared_to_take(spec):
    requests = compute_pod(SETTINGS, spec)["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "250m", "memory": "125Mi"}  # kriging's SERVICE_NEEDS
    modeling = ServiceSpec(**{**spec.__dict__, "service": "modeling"})
    requests = compute_pod(SETTINGS, modeling)["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "50m", "memory": "300Mi"}  # the OpenCascade kernel's memory


def test_solver_pods_request_gpus(spec):
    gpu = ServiceSpec(**{**spec.__dict__, "service": "fit-td", "gpus": 2})
    container = compute_pod(SETTINGS, gpu)["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"


def _pod(phase: str, ready: bool = False, code: int | None = None) -> dict:
    state = {"terminated": {"exitCode": code}} if code is not None else {"running": {}}
    return {"metadata": {"name": "kriging-0f3c2a9be41d"},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"state": state}]}}


def test_status_from_watch_events():
    assert exit_code(_pod("Running", ready=True)) is None and is_ready(_pod("Running", True))
    assert not is_ready(_pod("Pending"))
    assert exit_code(_pod("Failed", code=11)) == 11
    assert exit_code(_pod("Succeeded", code=0)) == 0

    async def scenario() -> None:
        reflector = PodReflector(SETTINGS)
        waiter = asyncio.create_task(reflector.wait(
            lambda: is_ready(reflector.pods.get("kriging-0f3c2a9be41d", {})), timeout=60))
        reflector.loaded.set()
        reflector.apply("ADDED", _pod("Pending"))
        reflector.apply("MODIFIED", _pod("Running", ready=True))
        assert await waiter
        reflector.apply("DELETED", _pod("Running", ready=True))
        assert reflector.pods == {}

    asyncio.run(scenario())
