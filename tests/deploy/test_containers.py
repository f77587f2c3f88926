"""The container images, built with podman the way a user would (slow: a few minutes cold).

Skipped with a reason where podman, debootstrap or root is missing. The images come from
`deploy/containers/build.sh --local-base` (a Debian base made here; no registry is needed).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import Pki, free_port
from tests.platform_fixtures import wait_until
from twinstack.client import Client
from twinstack.pki.tls import TlsFiles, client_context
from twinstack.wire.client import ServiceClient

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
CORE, COMPUTE = f"localhost/twinstack-core:{VERSION}", f"localhost/twinstack-compute:{VERSION}"
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}")
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy/containers/containers.conf")}
# A call whose answer is known exactly: the centre of a linear variogram's unit square is 2.5.
SQUARE_KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
                  "targets": [[0.5, 0.5]],
                  "variogram": {"model": "linear", "slope": 1.0, "nugget": 0.0}}

# What building the images needs; test_kube_play.py (which uses the images) skips on it too.
NEEDS_IMAGE_BUILD = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="podman builds here need root: run the tests as root"),
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("debootstrap")),
                       reason="needs podman and debootstrap (apt-get install podman runc "
                              "debootstrap)"),
]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200), *NEEDS_IMAGE_BUILD]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    started = time.monotonic()
    built = subprocess.run(["bash", str(ROOT / "deploy/containers/build.sh"), "--local-base"],
                           capture_output=True, text=True, timeout=1100, env=ENV, cwd=ROOT)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(f"images built in {time.monotonic() - started:.0f} s")
    return CORE, COMPUTE


def test_core_image_is_small_and_runs_as_non_root_in_exec_form(images):
    for image in images:
        config = json.loads(podman("image", "inspect", image).stdout)[0]
        assert config["Config"]["User"] == "10001:10001"
        assert config["Config"]["Entrypoint"] == ["/opt/twinstack/bin/twinstack", "serve"]
    size = json.loads(podman("image", "inspect", CORE).stdout)[0]["Size"]
    assert size < 300e6, f"core image is {size / 1e6:.0f} MB"


@pytest.mark.parametrize("which", ["core", "compute"])
def test_no_private_key_in_the_images(images, tmp_path, which):
    image = CORE if which == "core" else COMPUTE
    name = f"tskeyscan-{uuid.uuid4().hex[:8]}"
    assert podman("create", "--name", name, image).returncode == 0
    try:
        archive = tmp_path / "fs.tar"
        assert podman("export", "-o", str(archive), name, timeout=300).returncode == 0
        found = []
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile() and member.size < 2_000_000:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if PRIVATE_KEY.search(data):
                        found.append(member.name)
        assert found == []
    finally:
        podman("rm", "-f", name)


def _mountable(identity: TlsFiles, where: Path) -> Path:
    """Copy an identity where the image's uid 10001 can read it, as a Secret mount would."""
    where.mkdir()
    for source, target in ((identity.cert, "tls.crt"), (identity.key, "tls.key"),
                           (identity.ca, "ca.crt")):
        shutil.copy(source, where / target)
        os.chown(where / target, 10001, 10001)
    os.chown(where, 10001, 10001)
    return where


def _wait_ready(health_port: int, ca: Path, name: str, timeout: float = 60) -> None:
    """Poll the health channel, as a Kubernetes readiness probe would."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{health_port}/readyz",
                                        context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not ready: {podman('logs', name).stdout[-2000:]}")
        time.sleep(0.2)


def test_the_images_run_services_that_talk_mutual_tls(images, pki: Pki, tmp_path):
    """logger (core image) and kriging (compute image), certificates mounted read-only."""
    names = []

    def run(image: str, service: str, identity: TlsFiles, *args: str) -> str:
        name = f"ts-{service}-{uuid.uuid4().hex[:8]}"
        tls = _mountable(identity, tmp_path / name)
        done = podman("run", "-d", "--name", name, "--network", "host", "--read-only",
                      "--tmpfs", "/var/lib/twinstack", "-v", f"{tls}:/etc/twinstack/tls:ro",
                      "-e", "TWINSTACK_CERT=/etc/twinstack/tls/tls.crt",
                      "-e", "TWINSTACK_KEY=/etc/twinstack/tls/tls.key",
                      "-e", "TWINSTACK_CA=/etc/twinstack/tls/ca.crt", image, service, *args)
        assert done.returncode == 0, done.stderr
        names.append(name)
        return name

    logger_port, kriging_port, health = free_port(), free_port(), free_port()
    try:
        run(CORE, "logger", pki.identity("logger"), "--bind", f"127.0.0.1:{logger_port}",
            "--health-bind", f"127.0.0.1:{free_port()}")
        name = run(COMPUTE, "kriging", pki.identity("kriging", session="c1"), "--session", "c1",
                   "--bind", f"127.0.0.1:{kriging_port}", "--health-bind", f"127.0.0.1:{health}",
                   "--logger-url", f"https://127.0.0.1:{logger_port}", "--logger-required")
        _wait_ready(health, pki.ca, name)

        async def use() -> tuple[dict, dict]:
            relay = client_context(pki.identity("relay", session="c1"))
            admin = client_context(pki.identity("admin"))
            async with ServiceClient(f"https://127.0.0.1:{kriging_port}", relay) as kriging, \
                    ServiceClient(f"https://127.0.0.1:{logger_port}", admin) as logger:
                result = await kriging.call("interpolate", SQUARE_KRIGING, idempotent=True)
                deadline = time.monotonic() + 60  # a hang guard: forwarding is not timed
                while True:
                    records = await logger.call("query", {"service": "kriging"})
                    if any("kriged" in r["msg"] for r in records["records"]) or \
                            time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                return result, records

        result, records = asyncio.run(use())
        assert result["estimates"] == [2.5]
        assert any("kriged" in r["msg"] for r in records["records"])
    finally:
        for name in names:
            podman("rm", "-f", "-t", "2", name)


def test_the_compose_deployment_serves_a_session(images, tmp_path):
    """deploy/compose.yaml started as its header says, PostgreSQL from the local image.

    The published ports are free ones (the file's TWINSTACK_*_PORT variables), so nothing
    else on the machine is disturbed; the client sees only the public network's ports.
    """
    compose_file = tmp_path / "compose.yaml"
    shutil.copy(ROOT / "deploy/compose.yaml", compose_file)
    certs = subprocess.run(
        [sys.executable, "-m", "twinstack", "deploy", "certs", "--pki", str(tmp_path / "pki"),
         "--public-host", "localhost", "--owner", "10001"],
        capture_output=True, text=True, timeout=120)
    assert certs.returncode == 0, certs.stderr
    ports = {"TWINSTACK_GSS_PORT": free_port(), "TWINSTACK_AUTH_PORT": free_port(),
             "TWINSTACK_RELAY_PORT": free_port()}
    project = f"tscompose{uuid.uuid4().hex[:8]}"
    env = {**ENV, **{k: str(v) for k, v in ports.items()},
           "TWINSTACK_DB_PASSWORD": uuid.uuid4().hex}

    def compose(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "podman-compose"),
                               "-p", project, "-f", str(compose_file), *args],
                              input=stdin, capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)

    def logs() -> str:
        names = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={project}",
                       "--format", "{{.Names}}").stdout.split()
        return "\n".join(f"== {n}\n{podman('logs', '--tail', '20', n).stdout}"
                         f"{podman('logs', '--tail', '20', n).stderr}" for n in names)

    up = compose("up", "-d")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        url = f"https://localhost:{ports['TWINSTACK_GSS_PORT']}"

        def gss_serves() -> bool:
            try:
                with Client(url, ca=tmp_path / "pki/ca.pem") as tw:
                    tw.info()
                return True
            except Exception:
                return False

        try:  # 180 s: a hang guard (gss waits for PostgreSQL's first start)
            wait_until(gss_serves, timeout=180, interval=1, what="gss through its published port")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from exc
        added = compose("exec", "-T", "gss", "twinstack", "user", "add", "kim",
                        "--password-stdin", stdin="compose password\n")
        assert added.returncode == 0, added.stdout + added.stderr
        with Client(url, ca=tmp_path / "pki/ca.pem") as tw:
            tw.login("kim", "compose password")
            made = tw.create_project("in compose", "data analysis")
            try:
                with tw.open_session(made["id"], timeout=120) as session:
                    result = session.call("kriging", "interpolate", **SQUARE_KRIGING)
            except Exception as exc:
                raise AssertionError(f"{exc}\n{logs()}") from exc
        assert result["estimates"] == [2.5]
    finally:
        down = compose("down", "-v", "-t", "5")
        assert down.returncode == 0, down.stderr[-2000:]
