"""TwinStack across network levels, with real network namespaces, NAT and a firewall.

A client behind NAT (MASQUERADE; it can only connect out) uses the public tier (gss, auth,
relay); the private tier (lss, logger, the compute services) is reachable only from the public
tier. The client logs in, opens a session and gets a kriging result through the relay, and the
probes show that it cannot reach any private address itself and that nothing can connect into
it. A second LSS on a worker behind its own NAT attaches to gss by dialing out and starts a
session's compute services there; nothing can connect into the worker either.

What that means for the NAT'ed worker: the relay calls a session's compute services directly
at the endpoints the LSS reports, so it cannot reach those of a worker behind NAT. Calls to
them would need a reverse tunnel over the LSS's outbound link, which TwinStack does not have
yet; `test_relay_reaches_compute_services_behind_nat` is an expected failure that says so.

Needs root, `ip` (iproute2) and `nft` (nftables); skipped with the reason otherwise. The layout
is in `tests/netns/topology.py`; every namespace, process and file is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns.topology import (
    CLIENT,
    NAT1_WAN,
    NAT2_WAN,
    PRIVATE,
    PUBLIC,
    WORKER,
    NamespaceUnavailable,
    Service,
    Topology,
    build_multilevel,
    check_namespaces_usable,
    serve,
    wait_ready,
)
from tests.platform_fixtures import FAST, PASSWORD, session_processes
from twinstack.pki import init_authority
from twinstack.pki.identity import issue_identity
from twinstack.store import Database, projects

SCENARIO = Path(__file__).with_name("client_scenario.py")
USER = "ada"
# internal port (health is the next one) and public port, as `twinstack up` lays them out
PORTS = {"gss": (7410, 7400), "auth": (7412, 7401), "relay": (7414, 7402),
         "logger": (7416, None), "lss": (7418, None)}
LISTEN_PORT = 7999  # a plain TCP listener in the NAT'ed namespaces: can anyone connect in?


def url(host: str, port: int) -> str:
    return f"https://{host}:{port}"


GSS = url(PUBLIC, PORTS["gss"][0])
GSS_PUBLIC = url(PUBLIC, PORTS["gss"][1])
LOGGER = url(PRIVATE, PORTS["logger"][0])


@dataclass
class Net:
    topo: Topology
    pki: Path
    env: dict[str, str]
    database: str
    services: dict[str, Service]

    def endpoint(self, report: dict[str, Any]) -> str:
        """Where the report's session runs kriging, as the operator reads it from the
        database (users are not shown internal endpoints)."""
        return self.recorded(report)["kriging"]["endpoint"]

    def recorded(self, report: dict[str, Any]) -> dict[str, Any]:
        db = Database(self.database)
        try:
            with db.transaction() as s:
                return dict(projects.get_session(s, report["session"]).services)
        finally:
            db.dispose()

    def serve(self, role: str, label: str, service: str, host: str, *extra: str) -> Service:
        internal, public = PORTS[service]
        identity = issue_identity(self.pki, service, self.pki / label, hosts=[host])
        started = serve(self.topo, role, label, service, host, internal, identity.cert,
                        identity.key, identity.ca, *extra, public_port=public, env=self.env)
        self.services[label] = started
        return started

    def client(self, project: str, *args: str) -> dict[str, Any]:
        """Run the client scenario inside the client namespace; its JSON report."""
        done = self.topo.exec("client", sys.executable, str(SCENARIO), GSS_PUBLIC,
                              str(self.pki / "ca.pem"), USER, project, *args,
                              input_text=PASSWORD + "\n", timeout=300)  # hang guard
        try:
            report = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            report = {"failed": f"exit {done.returncode}: {done.stdout}"}
        assert "failed" not in report, \
            f"{report['failed']}\n{done.stderr[-3000:]}\n{self.topo.report()}"
        return report

    def probe(self, role: str, targets: list[str]) -> dict[str, str]:
        return self.topo.probe(role, targets)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    try:
        check_namespaces_usable()
    except NamespaceUnavailable as exc:
        pytest.skip(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="twinstack-netns-"))
    topo = Topology(workdir)
    try:
        build_multilevel(topo)
        pki = workdir / "pki"
        init_authority(pki)
        database = f"sqlite:///{workdir / 'platform.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWINSTACK_")}
        env.update(FAST)
        migrated = Database(database)
        migrated.migrate()  # as the services would at their start
        migrated.dispose()
        added = subprocess.run(
            [sys.executable, "-m", "twinstack", "user", "add", USER, "--password-stdin",
             "--data-dir", str(workdir / "cli"), "--database-url", database],
            input=PASSWORD + "\n", text=True, capture_output=True, timeout=60, env=env)
        assert added.returncode == 0, added.stderr  # offline, on the database
        net = Net(topo, pki, env, database, {})
        wait_ready(topo, [net.serve("private", "logger", "logger", PRIVATE)])
        logged = ("--logger-url", LOGGER)
        wait_ready(topo, [
            net.serve("public", "auth", "auth", PUBLIC, *logged, "--database-url", database),
            net.serve("public", "gss", "gss", PUBLIC, *logged, "--database-url", database,
                      "--auth-public-url", url(PUBLIC, PORTS["auth"][1]),
                      "--relay-public-url", url(PUBLIC, PORTS["relay"][1]))])
        wait_ready(topo, [
            net.serve("public", "relay", "relay", PUBLIC, *logged, "--gss-url", GSS),
            # capacity 1: once the first session runs here, the next one must go elsewhere
            net.serve("private", "lss-private", "lss", PRIVATE, *logged, "--gss-url", GSS,
                      "--session-ca", str(pki), "--lss-name", "private", "--capacity", "1",
                      "--spawn-host", PRIVATE)])
        yield net
    finally:
        topo.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _service_logs_on_failure(request: pytest.FixtureRequest, net: Net) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        print(net.topo.report(), file=sys.stderr)


@pytest.fixture(scope="module")
def first(net: Net) -> dict[str, Any]:
    """The client's session: placed on the private LSS (the only one yet), left running."""
    return net.client("survey", "--wait-for-lss", "60")  # until the private LSS attached


@pytest.fixture(scope="module")
def worker(net: Net, first: dict[str, Any]) -> dict[str, Any]:
    """An LSS on the NAT'ed worker, and a session that can only be placed there."""
    wait_ready(net.topo, [
        net.serve("worker", "lss-worker", "lss", WORKER, "--gss-url", GSS,
                  "--session-ca", str(net.pki), "--lss-name", "worker",
                  "--spawn-host", WORKER, "--tunnel")])
    # The private LSS is full (capacity 1, `first` runs there): the session waits in the
    # queue until the worker has attached.
    return net.client("remote", "--wait-for-lss", "60", "--call-timeout", "60")


def refused(outcomes: dict[str, str]) -> dict[str, str]:
    """The targets that could be connected to (none, when the network isolates them)."""
    return {target: outcome for target, outcome in outcomes.items() if outcome == "connected"}


def test_client_behind_nat_gets_a_kriging_result_through_the_relay(net, first):
    assert first["call"]["ok"], first["call"]
    assert first["call"]["estimates"] == pytest.approx([2.5])
    assert first["state"] == "ready" and first["lss"] == "private"
    assert net.endpoint(first).startswith(f"{PRIVATE}:")
    assert first["services"] == ["kriging"]  # the client sees names, not addresses
    assert first["relay_url"] == url(PUBLIC, PORTS["relay"][1])
    assert any(e["state"] == "ready" for e in first["events"])
    # the compute service runs in the private namespace
    pids = session_processes(first["session"])
    assert pids and {net.topo.identify(pid) for pid in pids} == {"private"}
    # nat1 translated the client's connections; beyond it only its WAN address is seen
    translated = [line for line in net.topo.conntrack("nat1")
                  if f"src={CLIENT} dst={PUBLIC}" in line]
    assert translated and all(f"dst={NAT1_WAN}" in line for line in translated), translated
    beyond = net.topo.conntrack("core")
    assert any(f"src={NAT1_WAN} dst={PUBLIC}" in line for line in beyond)
    assert not [line for line in beyond if CLIENT + " " in line]


def test_client_cannot_reach_the_private_tier(net, first):
    private = [net.services[s].addresses[c] for s in ("lss-private", "logger")
               for c in ("internal", "health")] + [net.endpoint(first)]
    assert all(t.startswith(f"{PRIVATE}:") for t in private), private
    # they are up and the public tier reaches them ...
    assert set(net.probe("public", private).values()) == {"connected"}
    # ... but not the client, whose own network works (the front door answers)
    from_client = net.probe("client", [*private, f"{PUBLIC}:{PORTS['gss'][1]}"])
    assert from_client.pop(f"{PUBLIC}:{PORTS['gss'][1]}") == "connected"
    assert not refused(from_client), from_client


def test_nothing_can_connect_into_the_client(net):
    net.topo.listen("client", "0.0.0.0", LISTEN_PORT)
    targets = [f"{CLIENT}:{LISTEN_PORT}", f"{NAT1_WAN}:{LISTEN_PORT}"]
    assert net.probe("client", targets[:1]) == {targets[0]: "connected"}
    for role in ("public", "private", "core", "worker"):
        outcomes = net.probe(role, targets)
        assert not refused(outcomes), (role, outcomes)


def test_natted_worker_joins_by_dialing_out_and_starts_a_session(net, worker):
    assert worker["lss"] == "worker" and worker["state"] == "ready", worker
    assert net.endpoint(worker).startswith(f"{WORKER}:")
    pids = session_processes(worker["session"])
    assert pids and {net.topo.identify(pid) for pid in pids} == {"worker"}
    # the control link is the worker's own outbound connection, masqueraded by nat2
    dialed = [line for line in net.topo.conntrack("nat2")
              if f"src={WORKER} dst={PUBLIC}" in line and f"dport={PORTS['gss'][0]} " in line]
    assert dialed and all(f"dst={NAT2_WAN}" in line for line in dialed), dialed


def test_nothing_can_connect_into_the_worker(net, worker):
    lss = net.services["lss-worker"].addresses
    targets = [lss["internal"], lss["health"], net.endpoint(worker),
               f"{NAT2_WAN}:{PORTS['lss'][0]}"]
    inside = net.probe("worker", targets[:3])
    assert set(inside.values()) == {"connected"}, inside  # all up, in the worker
    for role in ("public", "private", "core", "client"):
        outcomes = net.probe(role, targets)
        assert not refused(outcomes), (role, outcomes)


def test_relay_reaches_compute_services_behind_nat_through_the_lss_link(net, worker):
    """The relay cannot dial the worker's compute service (nat2 refuses), so the call goes
    relay → gss → the worker LSS's own outbound link → the compute service, and back."""
    assert net.recorded(worker)["kriging"].get("via") == "lss", worker
    assert worker["call"]["ok"], worker["call"]
    assert worker["call"]["estimates"] == pytest.approx([2.5])
