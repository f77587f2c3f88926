"""Network namespaces for TwinStack's network tests: NAT routers, a firewall, real services.

Everything lives in namespaces made here, named with a random suffix so parallel runs do not
collide; the veth pairs are created directly inside them, and nothing (no address, route, rule
or NAT) is added to the root namespace, so no packet to these private addresses can leave the
machine. Every process run inside a namespace goes through `ip netns exec`. `Topology.destroy()`
ends the processes started here (by PID, then whatever is left in the namespaces, also by PID)
and deletes the namespaces, which removes their veths.

The layout `build_multilevel()` makes (all /24 in 10.201.0.0/16):

    client .1.2 --[lan]-- nat1 .1.1 | .2.2 --.                .3.2 public  (gss, auth, relay)
                                             +-- core --------+
    worker .6.2 --[lan]-- nat2 .6.1 | .7.2 --'   (firewall)   '-- .4.2 private (lss, logger,
                                                                         compute services)

`core` is the only router between the sites: the "internet" (the NAT routers' WAN sides) reaches
the public tier only; the public tier reaches everything; the private tier reaches the public
tier only. nat1 and nat2 MASQUERADE their LAN and let nothing in that their LAN did not open.
To make "nothing can connect in" a statement about the NAT routers and not about missing
routes, `core` even routes the LANs behind the NAT routers to them, as an attacker next to a
NAT router could.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "10.201"


def addr(subnet: int, host: int) -> str:
    return f"{PREFIX}.{subnet}.{host}"


# Addresses of the multilevel layout: (namespace role, interface) -> address.
CLIENT = addr(1, 2)
NAT1_LAN, NAT1_WAN = addr(1, 1), addr(2, 2)
PUBLIC = addr(3, 2)
PRIVATE = addr(4, 2)
WORKER = addr(6, 2)
NAT2_LAN, NAT2_WAN = addr(6, 1), addr(7, 2)
CORE = {"nat1": addr(2, 1), "pub": addr(3, 1), "priv": addr(4, 1), "nat2": addr(7, 1)}

# A NAT router: masquerade the LAN out of the WAN side; from the WAN side let in only what
# belongs to a connection the LAN opened. Refused packets get an ICMP error at once (not a
# silent drop) so that probes and the relay fail fast instead of waiting for TCP timeouts.
NAT_RULES = """
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
        reject with icmpx type admin-prohibited
    }
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname { "lo", "lan" } accept
        reject with icmpx type admin-prohibited
    }
}
"""

# The core router's firewall: who may open connections to whom.
CORE_RULES = """
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "pub" accept
        iifname "priv" oifname "pub" accept
        iifname { "nat1", "nat2" } oifname "pub" accept
        reject with icmpx type admin-prohibited
    }
}
"""

# Run inside a namespace: try a TCP connection to each host:port at once, print the outcomes.
PROBE = r"""
import errno, json, socket, sys, concurrent.futures as cf
def attempt(target):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=float(sys.argv[2])):
            return "connected"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc)) if exc.errno else str(exc)
targets = json.loads(sys.argv[1])
with cf.ThreadPoolExecutor(len(targets) or 1) as pool:
    print(json.dumps(dict(zip(targets, pool.map(attempt, targets)))))
"""

# Run inside a namespace: accept TCP connections until killed (a target for "connect in").
LISTEN = r"""
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    conn.close()
"""


class NamespaceUnavailable(Exception):
    """This machine or user cannot make network namespaces (a reason to skip, not a failure)."""


def tool(name: str) -> str:
    """The full path of a system tool, also where root's sbin is not on PATH."""
    extra = os.pathsep.join(("/usr/sbin", "/sbin", "/usr/bin", "/bin"))
    found = shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)
    return found or name


def _run(*cmd: str, input_text: str | None = None, check: bool = True,
         timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(cmd), input=input_text, text=True, capture_output=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}: "
                           f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def check_namespaces_usable() -> None:
    """Raise NamespaceUnavailable saying why if the tests cannot run here."""
    if os.geteuid() != 0:
        raise NamespaceUnavailable("network namespace tests need root: run the tests as "
                                  "root")
    for name, package in (("ip", "iproute2"), ("nft", "nftables")):
        if not os.path.isabs(tool(name)):
            raise NamespaceUnavailable(f"`{name}` not found (apt-get install -y {package})")
    name = f"tsprobe{secrets.token_hex(4)}"
    added = _run(tool("ip"), "netns", "add", name, check=False)
    if added.returncode != 0:
        raise NamespaceUnavailable(f"`ip netns add` is not permitted: {added.stderr.strip()}")
    try:
        nft = _run(tool("ip"), "netns", "exec", name, tool("nft"), "list", "ruleset",
                   check=False)
        if nft.returncode != 0:
            raise NamespaceUnavailable(f"nftables does not work in a namespace: "
                                       f"{nft.stderr.strip()}")
    finally:
        _run(tool("ip"), "netns", "del", name, check=False)


@dataclass
class Started:
    label: str
    ns: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Topology:
    """Namespaces by role (e.g. "client"), the processes started in them, and their logs."""

    workdir: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, str] = field(default_factory=dict)
    processes: list[Started] = field(default_factory=list)

    # building ----------------------------------------------------------------------------

    def add(self, role: str) -> str:
        name = f"ts{self.suffix}-{role}"
        _run(tool("ip"), "netns", "add", name)
        self.namespaces[role] = name
        self.ip(role, "link", "set", "lo", "up")
        self.sysctl(role, "net/ipv4/ip_forward", "0")
        return name

    def ns(self, role: str) -> str:
        return self.namespaces[role]

    def ip(self, role: str, *args: str) -> None:
        _run(tool("ip"), "-n", self.ns(role), *args)

    def sysctl(self, role: str, key: str, value: str) -> None:
        _run(tool("ip"), "netns", "exec", self.ns(role), "sh", "-c",
             f"echo {value} > /proc/sys/{key}")

    def link(self, a: str, a_if: str, a_addr: str, b: str, b_if: str, b_addr: str) -> None:
        """A veth pair between two namespaces, created inside them, with a /24 on each end."""
        _run(tool("ip"), "link", "add", a_if, "netns", self.ns(a), "type", "veth",
             "peer", "name", b_if, "netns", self.ns(b))
        for role, ifname, address in ((a, a_if, a_addr), (b, b_if, b_addr)):
            self.ip(role, "addr", "add", f"{address}/24", "dev", ifname)
            self.ip(role, "link", "set", ifname, "up")

    def route(self, role: str, destination: str, via: str) -> None:
        self.ip(role, "route", "add", destination, "via", via)

    def router(self, role: str, rules: str) -> None:
        self.sysctl(role, "net/ipv4/ip_forward", "1")
        _run(tool("ip"), "netns", "exec", self.ns(role), tool("nft"), "-f", "-",
             input_text=rules)

    # running -----------------------------------------------------------------------------

    def exec(self, role: str, *cmd: str, timeout: float = 60.0,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(tool("ip"), "netns", "exec", self.ns(role), *cmd, input_text=input_text,
                    check=False, timeout=timeout)

    def python(self, role: str, *args: str, timeout: float = 60.0
               ) -> subprocess.CompletedProcess[str]:
        return self.exec(role, sys.executable, *args, timeout=timeout)

    def start(self, role: str, label: str, *cmd: str, env: dict[str, str] | None = None
              ) -> Started:
        """Start a long-running process in the namespace; its output goes to a log file."""
        log = self.workdir / "logs" / f"{label}.out"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            # `ip netns exec` execs the command, so this PID is the process itself.
            proc = subprocess.Popen([tool("ip"), "netns", "exec", self.ns(role), *cmd],
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env)
        started = Started(label, role, proc, log)
        self.processes.append(started)
        return started

    def listen(self, role: str, host: str, port: int) -> Started:
        """A plain TCP listener in the namespace, to show whether anything can connect in."""
        started = self.start(role, f"listener-{role}", sys.executable, "-u", "-c", LISTEN,
                             host, str(port))
        deadline = time.monotonic() + 60  # a hang guard for a loaded machine
        while b"listening" not in started.log.read_bytes():
            if started.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"listener in {role} did not start: {self.tail(started)}")
            time.sleep(0.02)
        return started

    def probe(self, role: str, targets: list[str], timeout: float = 2.0) -> dict[str, str]:
        """TCP connect from inside the namespace to each host:port: "connected" or why not."""
        done = self.python(role, "-c", PROBE, json.dumps(targets), str(timeout),
                           timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"probe in {role} failed: {done.stderr}")
        return json.loads(done.stdout)

    def conntrack(self, role: str) -> list[str]:
        """The namespace's connection-tracking table (the NAT translations on a NAT router)."""
        done = self.exec(role, "cat", "/proc/net/nf_conntrack")
        return done.stdout.splitlines()

    def identify(self, pid: int) -> str | None:
        """The role of the namespace process PID runs in, if it is one of ours."""
        try:
            inode = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return None
        for role, name in self.namespaces.items():
            with contextlib.suppress(OSError):
                if os.stat(f"/var/run/netns/{name}").st_ino == inode:
                    return role
        return None

    # diagnosis ---------------------------------------------------------------------------

    @staticmethod
    def tail(started: Started, lines: int = 40) -> str:
        try:
            text = started.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(text[-lines:])

    def report(self, lines: int = 40) -> str:
        """The last output lines of every process started here, and the firewall counters."""
        parts = []
        for started in self.processes:
            code = started.proc.poll()
            state = "running" if code is None else f"exited with {code}"
            parts.append(f"----- {started.label} in {started.ns} ({state}) -----\n"
                         f"{self.tail(started, lines)}")
        # ... and of the processes they started (the compute services the LSS spawned)
        for log in sorted(self.workdir.glob("**/*.out")):
            if not any(log == s.log for s in self.processes):
                text = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"----- {log.relative_to(self.workdir)} -----\n" + "\n".join(text))
        return "\n".join(parts)

    # cleaning up -------------------------------------------------------------------------

    def stop(self, started: Started, grace: float = 10.0) -> None:
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGTERM)
        try:
            started.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            started.proc.kill()
            started.proc.wait()

    def pids(self, role: str) -> list[int]:
        done = _run(tool("ip"), "netns", "pids", self.ns(role), check=False)
        return [int(p) for p in done.stdout.split() if p.isdigit()]

    def destroy(self) -> None:
        """End every process started here and in our namespaces, then delete the namespaces."""
        for started in reversed(self.processes):
            if started.proc.poll() is None:
                started.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for started in self.processes:
            try:
                started.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                started.proc.kill()
                started.proc.wait()
        # What is left in our namespaces was started by our processes (compute services the
        # LSS spawned): end those too, by PID, so the namespaces can go.
        for role in self.namespaces:
            for pid in self.pids(role):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(self.pids(role) for role in self.namespaces) and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in self.namespaces.values():
            _run(tool("ip"), "netns", "del", name, check=False)
        self.namespaces.clear()


def build_multilevel(topo: Topology) -> None:
    """The layout in the module docstring: two NAT'ed sites, a public and a private tier."""
    for role in ("client", "nat1", "worker", "nat2", "core", "public", "private"):
        topo.add(role)
    topo.link("client", "eth0", CLIENT, "nat1", "lan", NAT1_LAN)
    topo.link("nat1", "wan", NAT1_WAN, "core", "nat1", CORE["nat1"])
    topo.link("worker", "eth0", WORKER, "nat2", "lan", NAT2_LAN)
    topo.link("nat2", "wan", NAT2_WAN, "core", "nat2", CORE["nat2"])
    topo.link("public", "eth0", PUBLIC, "core", "pub", CORE["pub"])
    topo.link("private", "eth0", PRIVATE, "core", "priv", CORE["priv"])
    topo.route("client", "default", NAT1_LAN)
    topo.route("worker", "default", NAT2_LAN)
    topo.route("nat1", "default", CORE["nat1"])
    topo.route("nat2", "default", CORE["nat2"])
    topo.route("public", "default", CORE["pub"])
    topo.route("private", "default", CORE["priv"])
    # The worst case for the NAT routers: someone next to them sends straight at their LANs.
    topo.route("core", f"{PREFIX}.1.0/24", NAT1_WAN)
    topo.route("core", f"{PREFIX}.6.0/24", NAT2_WAN)
    topo.router("nat1", NAT_RULES)
    topo.router("nat2", NAT_RULES)
    topo.router("core", CORE_RULES)


# TwinStack services in namespaces ------------------------------------------------------------

@dataclass
class Service:
    """A `twinstack serve` process in a namespace, and where it listens once ready."""

    started: Started
    ready_file: Path
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.started.label


def serve(topo: Topology, role: str, label: str, service: str, host: str, port: int,
          cert: Path, key: Path, ca: Path, *extra: str, public_port: int | None = None,
          env: dict[str, str] | None = None) -> Service:
    """Start `twinstack serve SERVICE` in a namespace, bound to and publishing HOST.

    The internal listener is HOST:PORT, health HOST:PORT+1, public (if any) HOST:PUBLIC_PORT:
    the flags `twinstack up` gives its services, with this namespace's address.
    """
    ready = topo.workdir / "run" / f"{label}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "twinstack", "serve", service,
           "--bind", f"{host}:{port}", "--publish", f"{host}:{port}",
           "--health-bind", f"{host}:{port + 1}",
           "--cert", str(cert), "--key", str(key), "--ca", str(ca),
           "--data-dir", str(topo.workdir / "data" / label), "--ready-file", str(ready), *extra]
    if public_port is not None:
        cmd += ["--public-bind", f"{host}:{public_port}"]
    return Service(topo.start(role, label, *cmd, env=env), ready)


def wait_ready(topo: Topology, services: list[Service], timeout: float = 60.0) -> None:
    """Wait until each service wrote its ready file; fail with every log if one does not."""
    deadline = time.monotonic() + timeout
    for service in services:
        while not service.ready_file.exists():
            code = service.started.proc.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with {code}" if code is not None else f"not ready in {timeout} s"
                raise AssertionError(f"{service.label} {why}\n{topo.report()}")
            time.sleep(0.02)
        service.addresses = json.loads(service.ready_file.read_text())
