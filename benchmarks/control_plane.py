"""The control plane at rest and under logins: TwinStack's platform services against
JupyterHub's hub and proxy, in one run on this machine (127.0.0.1 only, a temporary directory
removed afterwards).

Install as for session_start.py (JupyterHub and configurable-http-proxy). Run:

    .venv/bin/python benchmarks/control_plane.py > result.json

* Idle footprint: `twinstack up` (no session open) and a JupyterHub hub with its proxy (no
  server running), each left alone for `--settle` seconds; then the RSS and PSS of every
  process of each, summed and per process. Issue 15's goal: the idle platform within 250 MiB of
  RSS.
* Logins per second: `--threads` clients logging in to TwinStack over and over for
  `--seconds` (each a password check, argon2id, and a token written).

Not measured yet: two gss replicas (gss runs as one process today) and JupyterHub's logins
(its form login needs a browser's XSRF cookie dance).
The JSON result goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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

from twinstack.client import Client

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


def measure_twinstack(workdir: Path, settle: float, threads: int, seconds: float
                      ) -> dict[str, Any]:
    data_dir = workdir / "twinstack"
    with twinstack_up(data_dir, workdir / "twinstack-up.log") as (port, _):
        add_twinstack_user(data_dir)
        time.sleep(settle)  # idle: what it holds at rest
        idle = footprint(str(data_dir).encode())
        log(f"twinstack idle: {idle['rss_mib']} MiB RSS, {idle['pss_mib']} MiB PSS")
        rate = logins_per_second(f"https://127.0.0.1:{port}", data_dir / "pki" / "ca.pem",
                                 threads, seconds)
        log(f"twinstack: {rate} logins/s")
    return {"idle": idle, "logins_per_s": rate, "gss_replicas": 1,
            "goal_idle_rss_mib": GOAL_RSS_MIB}


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
    parser.add_argument("--skip-jupyterhub", action="store_true")
    args = parser.parse_args()
    proxy = args.proxy or shutil.which("configurable-http-proxy")
    with tempfile.TemporaryDirectory(prefix="twinstack-control-plane-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"machine": machine()}
        result["twinstack"] = guarded("twinstack", lambda: measure_twinstack(
            work, args.settle, args.threads, args.seconds))
        result["jupyterhub"] = {"error": "skipped (--skip-jupyterhub)"} if args.skip_jupyterhub \
            else guarded("jupyterhub", lambda: measure_jupyterhub(work, args.settle, proxy))
    ours, theirs = result["twinstack"].get("idle"), result["jupyterhub"].get("idle")
    if ours and theirs:
        result["idle_rss_ratio"] = round(ours["rss_mib"] / theirs["rss_mib"], 2)
        result["idle_pss_ratio"] = round(ours["pss_mib"] / theirs["pss_mib"], 2)
    print(json.dumps(result, indent=2))
    return 0 if "error" not in result["twinstack"] else 1


if __name__ == "__main__":
    sys.exit(main())
