"""The rendered dev overlay, brought up with `podman kube play`, serves a client on the host.

Podman is not Kubernetes, so a test-only transform adapts what only a cluster provides:
- Secrets become ConfigMaps (podman 4.3 mounts Secret data still base64-encoded);
- pods use the host network and reach each other at 127.0.0.1 on their (distinct) ports,
  instead of Service DNS names;
- gss and auth share a SQLite file instead of the PostgreSQL StatefulSet (its image would
  come from a registry);
- the LSS runs compute services as processes (the Kubernetes spawner needs an API server),
  so it uses the compute image;
- probes are dropped (podman would run them with a curl the images do not have), and so are
  the container port lists (with the host network, podman refuses port mappings).
Everything else — images, arguments, environment, mounts, security contexts — is the overlay's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_containers import (  # noqa: F401
    COMPUTE,
    CORE,
    ENV,
    NEEDS_IMAGE_BUILD,
    SQUARE_KRIGING,
    images,
    podman,
)
from twinstack.client import Client
from twinstack.deploy import ensure_certificates, render, secret_manifests

# alone: its pods bind 7400-7441 on the host, which the README's examples use too (test_readme)
pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(1500),
              *NEEDS_IMAGE_BUILD]
PASSWORD = "kube play password"


def _localise(value: str) -> str:
    for service in ("gss", "logger", "auth", "relay"):
        value = value.replace(f"{service}.$(POD_NAMESPACE).svc", "127.0.0.1")
    return value


def transform(rendered: str, secrets: dict[str, Any], shared: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    out: list[dict[str, Any]] = []
    for item in secrets["items"]:
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": item["metadata"]["name"]},
                    "data": {k: __import__("base64").b64decode(v).decode()
                             for k, v in item["data"].items()}})
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        pod.pop("serviceAccountName", None)
        pod.pop("automountServiceAccountToken", None)
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                secret = volume.pop("secret")
                volume["configMap"] = {"name": secret["secretName"],
                                       **({"items": secret["items"]} if "items" in secret
                                          else {})}
        for container in pod["containers"]:
            for field in ("livenessProbe", "readinessProbe", "startupProbe", "ports"):
                container.pop(field, None)  # ports: the host network has them already
            container["image"] = "localhost/" + container["image"]
            env = []
            for var in container.get("env", []):
                if "valueFrom" in var:
                    continue  # namespace and database URL: set below
                if isinstance(var.get("value"), str):
                    var["value"] = _localise(var["value"])
                env.append(var)
            container.pop("envFrom", None)
            extra = {"POD_NAMESPACE": "twinstack"}
            if name in ("gss", "auth"):
                extra["TWINSTACK_DATABASE_URL"] = f"sqlite:///{shared}/twinstack.db"
                container.setdefault("volumeMounts", []).append(
                    {"name": "shared", "mountPath": str(shared)})
                pod["volumes"].append({"name": "shared", "hostPath": {"path": str(shared),
                                                                      "type": "Directory"}})
            if name == "gss":
                extra["TWINSTACK_AUTH_PUBLIC_URL"] = "https://127.0.0.1:7401"
                extra["TWINSTACK_RELAY_PUBLIC_URL"] = "https://127.0.0.1:7402"
            if name == "lss":
                extra["TWINSTACK_SPAWNER"] = "process"
                extra["TWINSTACK_SPAWN_HOST"] = "127.0.0.1"
                container["image"] = COMPUTE
            env = [v for v in env if v["name"] not in extra]
            env += [{"name": k, "value": v} for k, v in extra.items()]
            container["env"] = env
        out.append(doc)
    return out


@pytest.fixture
def played(images, tmp_path: Path):  # noqa: F811
    pki, shared = tmp_path / "pki", tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 10001, 10001)
    ensure_certificates(pki, "twinstack", [], owner=10001)
    docs = transform(render("dev"), secret_manifests(pki, "twinstack"), shared)
    play = tmp_path / "play.yaml"
    play.write_text(yaml.safe_dump_all(docs))
    done = podman("kube", "play", str(play), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        yield pki, shared
    finally:
        podman("kube", "down", str(play), timeout=120)
        # podman 4.3 keeps a volume per ConfigMap after `kube down`
        podman("volume", "rm", "-f", *(d["metadata"]["name"] for d in docs
                                       if d["kind"] == "ConfigMap"))


def _logs() -> str:
    names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
    return "\n".join(f"== {n}\n{podman('logs', '--tail', '15', n).stdout}"
                     f"{podman('logs', '--tail', '15', n).stderr}" for n in names)


def test_kube_play_of_the_dev_overlay_serves_a_session(played):
    pki, shared = played
    added = subprocess.run(
        [sys.executable, "-m", "twinstack", "user", "add", "kim", "--password-stdin",
         "--create-database", "--database-url", f"sqlite:///{shared}/twinstack.db",
         "--data-dir", str(shared)],
        input=PASSWORD + "\n", text=True, capture_output=True, timeout=60)
    assert added.returncode == 0, added.stderr
    for path in shared.iterdir():  # the pods' uid must write what the CLI (root) touched
        os.chown(path, 10001, 10001)
    pods = json.loads(podman("pod", "ps", "--format", "json").stdout)
    assert {p["Name"].split("-pod")[0] for p in pods} >= {"gss", "auth", "relay", "lss",
                                                           "logger"}
    deadline = time.monotonic() + 120
    while True:
        try:
            with Client("https://127.0.0.1:7400", ca=pki / "ca.pem") as tw:
                tw.login("kim", PASSWORD)
                made = {p["name"]: p for p in tw.projects()}  # a retry finds the first try's
                project = made.get("in pods") or tw.create_project("in pods", "data analysis")
                with tw.open_session(project["id"], timeout=60) as session:
                    result = session.call("kriging", "interpolate", **SQUARE_KRIGING)
                assert result["estimates"] == [2.5]
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{exc}\n{_logs()}") from exc
            time.sleep(2)
