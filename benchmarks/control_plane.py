"""The control plane at rest and under logins: TwinStack's platform services against
JupyterHub's hub and proxy, in one run on this machine (127.0.0.1 only, a temporary directory
removed afterwards).

Install as for session_start.py (JupyterHub and configurable-http-proxy). Run:

    .venv/bin/python benchmarks/control_plane.py > result.json

* Idle footprint: `twinstack up` (no session open), `twinstack up --combined` (logger, auth,
  gss and relay in one process) and a JupyterHub hub with its proxy (no server running), each
  left alone for `--settle` seconds; then the RSS and PSS of every process of each, summed and
  per process. Issue 15's goal: the idle platform within 250 MiB of RSS.
* Logins per second: `--threads` clients logging in to TwinStack over and over for
  `--seconds` (each a password check, argon2id, and a token written).
* One against two replicas of the front door (gss, auth, relay: `twinstack up --replicas N`)
  on a PostgreSQL database made for the run on `--postgres` (default the server on
  127.0.0.1:5432) and dropped after it: idle footprint, logins per second, and session opens
  per second (`--sessions` "data analysis" sessions opened by `--threads` clients, until ready).
  Each client starts at a random replica, so the load spreads over them.

Not measured: JupyterHub's logins (its form login needs a browser's XSRF cookie dance) and
its replicas (one hub only).
The JSON result goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from session_start import (
    PASSWORD,
    USER,
    HubApi,
    add_twinstack_user,
    configured_hub,
    guarded,
    log,
    machine,
    running,
    twinstack_up,
    wait_until,
)
from sqlalchemy import make_url

from twinstack.client import Client
from twinstack.launcher import REPLICA_PORTS
from twinstack.store.bus import libpq_url

GOAL_RSS_MIB = 250


def footprint(mark: bytes, pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """RSS and PSS (MiB) of every process whose command line holds `mark`, and of `pids`."""
    processes = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or (mark not in (entry / "cmdline").read_bytes()
                                            and int(entry.name) not in pids):
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
            rollup = (entry / "smaps_rollup").read_text()
        except OSError:
            continue
        rss = int(status.split("VmRSS:")[1].split()[0]) / 1024
        pss = int(rollup.split("\nPss:")[1].split()[0]) / 1024
        name = " ".join(part.decode(errors="replace") for part in cmdline[1:5])
        processes.append({"process": name, "rss_mib": round(rss, 1), "pss_mib": round(pss, 1)})
    return {"rss_mib": round(sum(p["rss_mib"] for p in processes), 1),
            "pss_mib": round(sum(p["pss_mib"] for p in processes), 1),
            "processes": sorted(processes, key=lambda p: -p["rss_mib"])}


def logins_per_second(url: str, ca: Path, threads: int, seconds: float) -> float:
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def loop(n: int) -> None:
        client = Client(url, ca=ca)
        try:
            while time.monotonic() < deadline:
                client.login(USER, PASSWORD)
                counts[n] += 1
        finally:
            client.close()

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return round(sum(counts) / (time.monotonic() - started), 1)


def opens_per_second(url: str, ca: Path, threads: int, sessions: int) -> float:
    """Sessions opened (until ready) per second by `threads` clients, one project each."""
    clients = [Client(url, ca=ca) for _ in range(threads)]
    try:
        for client in clients:
            client.login(USER, PASSWORD)
        projects = [(clients[n % threads], clients[n % threads].create_project(
            f"p{n}", "data analysis")["id"]) for n in range(sessions)]
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            opened = list(pool.map(lambda job: job[0].open_session(job[1]), projects))
        rate = sessions / (time.monotonic() - started)
        for session in opened:
            session.close()
        return round(rate, 2)
    finally:
        for client in clients:
            client.close()


@contextlib.contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A new database on `server` for one run, dropped afterwards."""
    name = f"twinstack_bench_{uuid.uuid4().hex[:12]}"
    conninfo = libpq_url(server)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_twinstack(workdir: Path, settle: float, threads: int, seconds: float,
                      replicas: int = 1, database_url: str | None = None, sessions: int = 0,
                      combined: bool = False) -> dict[str, Any]:
    data_dir = workdir / (f"twinstack-{replicas}-{'pg' if database_url else 'sqlite'}"
                          f"{'-combined' if combined else ''}")
    args = ("--replicas", str(replicas),
            *(("--database-url", database_url) if database_url else ()),
            *(("--combined",) if combined else ()))
    env = {**os.environ, "TWINSTACK_CAPACITY": str(max(sessions, 4)),
           "TWINSTACK_SESSION_MEMORY_MB": "100000"}  # every session placed, none queued
    with twinstack_up(data_dir, workdir / f"{data_dir.name}.log", env, args,
                      ports=24 + REPLICA_PORTS * (replicas - 1)):
        add_twinstack_user(data_dir)
        time.sleep(settle)  # idle: what it holds at rest
        idle = footprint(str(data_dir).encode())
        log(f"twinstack ({data_dir.name}) idle: {idle['rss_mib']} MiB RSS, "
            f"{idle['pss_mib']} MiB PSS")
        url = json.loads((data_dir / "platform.json").read_text())["url"]  # every gss replica
        ca = data_dir / "pki" / "ca.pem"
        rate = logins_per_second(url, ca, threads, seconds)
        log(f"twinstack ({data_dir.name}): {rate} logins/s")
        result = {"idle": idle, "logins_per_s": rate, "replicas": replicas,
                  "database": "postgresql" if database_url else "sqlite", "combined": combined,
                  "goal_idle_rss_mib": GOAL_RSS_MIB}
        if sessions:
            result["session_opens_per_s"] = opens_per_second(url, ca, threads, sessions)
            log(f"twinstack ({data_dir.name}): {result['session_opens_per_s']} opens/s")
    return result


def measure_replicas(workdir: Path, server: str, settle: float, threads: int, seconds: float,
                     sessions: int) -> dict[str, Any]:
    """One and two replicas of the front door, each on a fresh PostgreSQL database."""
    result: dict[str, Any] = {}
    for replicas in (1, 2):
        with postgres_database(server) as url:
            result[str(replicas)] = measure_twinstack(workdir, settle, threads, seconds,
                                                      replicas, url, sessions)
    one, two = result["1"], result["2"]
    result["logins_ratio_2_to_1"] = round(two["logins_per_s"] / one["logins_per_s"], 2)
    result["opens_ratio_2_to_1"] = round(
        two["session_opens_per_s"] / one["session_opens_per_s"], 2)
    return result


def measure_jupyterhub(workdir: Path, settle: float, proxy: str | None) -> dict[str, Any]:
    hub_dir, url, token = configured_hub(workdir, proxy, 0)
    log_file = workdir / "jupyterhub.log"
    with running([sys.executable, "-m", "jupyterhub", "-f", str(hub_dir / "jupyterhub_config.py")],
                 log_file, cwd=hub_dir) as proc:
        wait_until(HubApi(url, token).up, "jupyterhub", proc, log_file)
        time.sleep(settle)
        proxy_pid = int((hub_dir / "proxy.pid").read_text())  # its command line names no file
        idle = footprint(str(hub_dir).encode(), (proxy_pid,))  # the hub, and its proxy
        log(f"jupyterhub idle: {idle['rss_mib']} MiB RSS, {idle['pss_mib']} MiB PSS")
    return {"idle": idle}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the "
                        "footprint is taken (5)")
    parser.add_argument("--threads", type=int, default=4, help="clients logging in (4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long they do (10)")
    parser.add_argument("--proxy", default=None, help="configurable-http-proxy executable")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/"
                        "postgres", help="PostgreSQL server for the replica runs (a database "
                        "is made on it for each run and dropped)")
    parser.add_argument("--sessions", type=int, default=8, help="sessions opened per replica "
                        "run (8)")
    parser.add_argument("--skip-jupyterhub", action="store_true")
    args = parser.parse_args()
    proxy = args.proxy or shutil.which("configurable-http-proxy")
    with tempfile.TemporaryDirectory(prefix="twinstack-control-plane-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"machine": machine()}
        result["twinstack"] = guarded("twinstack", lambda: measure_twinstack(
            work, args.settle, args.threads, args.seconds))
        result["twinstack_combined"] = guarded("twinstack --combined", lambda: measure_twinstack(
            work, args.settle, args.threads, args.seconds, combined=True))
        result["front_door_replicas"] = guarded("replicas", lambda: measure_replicas(
            work, args.postgres, args.settle, args.threads, args.seconds, args.sessions))
        result["jupyterhub"] = {"error": "skipped (--skip-jupyterhub)"} if args.skip_jupyterhub \
            else guarded("jupyterhub", lambda: measure_jupyterhub(work, args.settle, proxy))
    theirs = result["jupyterhub"].get("idle")
    for mode in ("twinstack", "twinstack_combined"):
        ours = result[mode].get("idle")
        if ours and theirs:
            result[f"{mode}_idle_rss_ratio"] = round(ours["rss_mib"] / theirs["rss_mib"], 2)
            result[f"{mode}_idle_pss_ratio"] = round(ours["pss_mib"] / theirs["pss_mib"], 2)
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result["twinstack"] else 1


if __name__ == "__main__":
    sys.exit(main())
