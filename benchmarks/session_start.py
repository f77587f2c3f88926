"""Session start latency: TwinStack `open_session` vs a JupyterHub single-user spawn.

Install (once, from the repository root):

    .venv/bin/pip install -e '.[test]'                  # TwinStack itself
    .venv/bin/pip install jupyterhub jupyter_server     # the hub and `jupyterhub-singleuser`
    npm install --prefix /tmp/chp configurable-http-proxy
    export PATH="/tmp/chp/node_modules/.bin:$PATH"      # or pass --proxy PATH

Run:

    .venv/bin/python benchmarks/session_start.py --runs 20 > result.json

Both peers run on this machine, one after the other, on 127.0.0.1 only, in a temporary
directory that is removed afterwards:

* TwinStack: `twinstack up`, one user, then per run a new project of the one-service session
  type ("data analysis": a kriging service); the time is `Client.open_session` (request to
  "ready"); the session is then closed and the script waits until the platform reports it
  closed before the next run. Once per spawner (`--spawners`): `process` starts each service
  as a new interpreter, `forked` forks it from the LSS's warm parent. With each open session,
  the memory of its compute processes is taken: PSS (shared pages split between the processes
  that map them) and USS (the pages only they map: what one more session adds).
* JupyterHub: a real hub (`SimpleLocalProcessSpawner`, configurable-http-proxy, an API token of
  a service with admin scopes); the time is `POST /hub/api/users/NAME/server` until the hub says
  the server is ready (the POST's 201, or the `ready` event of the progress stream after a
  202); the server is then stopped with `DELETE` and the script waits until it is gone.

Then, for each N of `--concurrent` (10 and 30 by default), on each platform N other users open
one session (one server) each at the same moment (threads released together); each open is
timed as above and the N times summarized. With all N open, the PSS of every compute process
(TwinStack: with the warm parent; JupyterHub: its single-user servers) gives what one more
compute service adds, `pss_mib_added_per_service`: the growth of that total from one session
open (the runs above) to N, over the services added. All are closed, and the script waits
until they are gone. TwinStack runs with its LSS's `capacity` set to the largest N (its
default here, from 2 cores, would admit 4 sessions; JupyterHub has no such limit) and its
`session_memory_mb` to N sessions' declared needs (from the warm parent each takes far less
than a process's declared memory; the PSS figures say how much); each user has their own
client.

The JSON result goes to stdout, one progress line per run to stderr. If JupyterHub is missing or
fails, its entry is `{"error": ...}` and the TwinStack figure is still printed; the exit status
is non-zero only when the TwinStack measurement fails.

The JupyterHub figure depends a lot on which IRI checker jsonschema loads in the single-user
server (`jsonschema_iri_checker` in the result): see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twinstack.client import Client
from twinstack.sessiontypes import SESSION_TYPE_NEEDS, SESSION_TYPES

USER = "bench"
PASSWORD = "bench-password-123"
SESSION_TYPE = "data analysis"  # one compute service, kriging (--session-type)
# What `twinstack serve kriging` (the session's one service) imports before it can listen.
TWINSTACK_SERVICE_MODULES = ("twinstack.cli, twinstack.logs, twinstack.wire.runtime, "
                             "twinstack.services.kriging")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
WARM_PARENT = b"twinstack.spawners.forked"  # in the command line of the LSS's warm parent
SINGLE_USER = b"jupyterhub-singleuser"  # and of JupyterHub's servers
POOL = 2  # waiting children of each compute service kind with `--spawners pooled`


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# statistics -------------------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median and p95 (linear interpolation between order statistics, as numpy's default)."""
    p95 = (statistics.quantiles(samples, n=100, method="inclusive")[94] if len(samples) > 1
           else samples[0])
    return {"median_s": round(statistics.median(samples), 4), "p95_s": round(p95, 4),
            "min_s": round(min(samples), 4), "max_s": round(max(samples), 4),
            "samples_s": [round(s, 4) for s in samples]}


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_1m": round(os.getloadavg()[0], 2)}


# processes and ports ----------------------------------------------------------------------------


def port_block(count: int) -> int:
    """The first of `count` consecutive ports that are free on 127.0.0.1 right now."""
    for base in range(20000, 60000, count):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError(f"no block of {count} free ports on 127.0.0.1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_seconds(modules: str, repeat: int = 3) -> float:
    """Median wall time of a fresh interpreter importing `modules`: a service process's floor."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times), 3)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running(cmd: list[str], log_file: Path, *, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` (output to `log_file`) for the duration of the block; SIGTERM it afterwards."""
    with log_file.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} still running {STOP_TIMEOUT:g} s after SIGTERM; killing it")
        proc.kill()
        proc.wait()
    log(f"pid {proc.pid} stopped in {time.perf_counter() - started:.1f} s")


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes],
               log_file: Path, timeout: float = START_TIMEOUT) -> float:
    """Poll `ready` until true; fail early if `proc` exits. Returns the seconds waited."""
    started = time.perf_counter()
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting:\n"
                               f"{tail(log_file)}")
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{what} not ready after {timeout:g} s:\n{tail(log_file)}")
        time.sleep(0.05)
    return time.perf_counter() - started


# TwinStack --------------------------------------------------------------------------------------


def twinstack(*args: str) -> list[str]:
    return [sys.executable, "-m", "twinstack", *args]


@contextlib.contextmanager
def twinstack_up(data_dir: Path, log_file: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = (), ports: int = 20) -> Iterator[tuple[int, float]]:
    """`twinstack up ARGS` on a free block of `ports` ports for the duration of the block: its
    base port, and the seconds it took to say it is up."""
    port = port_block(ports)
    with running(twinstack("up", "--data-dir", str(data_dir), "--port", str(port), *args),
                 log_file, env=env) as proc:
        yield port, wait_until(
            lambda: "TwinStack is up" in log_file.read_text(errors="replace"), "twinstack up",
            proc, log_file)


def add_twinstack_user(data_dir: Path, name: str = USER) -> None:
    subprocess.run(twinstack("user", "add", name, "--password-stdin", "--data-dir", str(data_dir)),
                   input=f"{PASSWORD}\n", text=True, check=True, capture_output=True)


def at_once(count: int, prepare: Callable[[int], Any], timed: Callable[[Any], float]
            ) -> list[float]:
    """`prepare(n)` for n < count in threads, then `timed(prepared)` in all of them released
    at the same moment: the seconds each took."""
    gate = threading.Barrier(count)

    def one(n: int) -> float:
        prepared = prepare(n)
        gate.wait(timeout=START_TIMEOUT)
        return timed(prepared)

    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def twinstack_at_once(url: str, ca: Path, tw: Client, count: int, session_type: str
                      ) -> dict[str, Any]:
    """`count` users (added before) each open a session of a new project at once; with all
    open, the PSS of their compute processes and the warm parent's."""
    opened: list[tuple[Client, Any]] = []
    lock = threading.Lock()

    def prepare(n: int) -> tuple[Client, str]:
        client = Client(url, ca=ca)
        client.login(f"{USER}-{n}", PASSWORD)
        return client, client.create_project(f"at-once-{count}-{n}", session_type)["id"]

    def timed(prepared: tuple[Client, str]) -> float:
        client, project = prepared
        started = time.perf_counter()
        session = client.open_session(project, timeout=START_TIMEOUT)
        elapsed = time.perf_counter() - started
        with lock:
            opened.append((client, session))
        return elapsed

    try:
        samples = at_once(count, prepare, timed)
        pss = memory_mib(WARM_PARENT, *(session.id.encode() for _, session in opened))[0]
    finally:
        for client, session in opened:
            session.close()
            wait_twinstack_closed(tw, session.id)
            client.close()
    log(f"twinstack: {count} at once: median {statistics.median(samples):.3f} s, "
        f"max {max(samples):.3f} s")
    return {**summarize(samples), "compute_pss_mib": round(pss, 1)}


def wait_twinstack_closed(tw: Client, session_id: str) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        states = [s["state"] for s in tw.sessions() if s["id"] == session_id]
        if not states or states[0] == "closed":
            return
        time.sleep(0.05)
    raise RuntimeError(f"session {session_id} not closed after {STOP_TIMEOUT:g} s")


def memory_mib(*marks: bytes) -> tuple[float, float]:
    """The memory of the processes whose command line holds one of `marks`, summed:
    proportional (PSS: shared pages count by the share each process has) and unique (USS:
    pages no other process maps)."""
    pss = uss = 0
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or not any(
                    mark in (entry / "cmdline").read_bytes() for mark in marks):
                continue
            rollup = (entry / "smaps_rollup").read_text()
        except OSError:
            continue
        sizes = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:]}
        pss += sizes["Pss"]
        uss += sizes["Private_Clean"] + sizes["Private_Dirty"]
    return pss / 1024, uss / 1024


def added_per_service(one: float, many: float, sessions: int, services: int) -> float:
    """PSS (MiB) that one more compute service adds: the growth of the total from one session
    open to `sessions` open, over the services added."""
    return round((many - one) / ((sessions - 1) * services), 1)


def time_twinstack_session(tw: Client, run: int, memory: list[tuple[float, float, float]],
                           session_type: str) -> float:
    project = tw.create_project(f"bench-{run}", session_type)
    started = time.perf_counter()
    session = tw.open_session(project["id"], timeout=START_TIMEOUT)
    elapsed = time.perf_counter() - started
    # the session's processes (their command line names it), then with the warm parent
    memory.append((*memory_mib(session.id.encode()),
                   memory_mib(session.id.encode(), WARM_PARENT)[0]))
    session.close()
    wait_twinstack_closed(tw, session.id)
    return elapsed


def measure_twinstack(workdir: Path, runs: int, warmup: int, spawner: str,
                      session_type: str, concurrent: list[int]) -> dict[str, Any]:
    data_dir = workdir / f"twinstack-{spawner}"
    data_dir.mkdir()
    log_file = workdir / f"twinstack-{spawner}-up.log"
    env = {**os.environ, "TWINSTACK_SPAWNER": spawner}
    if spawner == "pooled":  # forked, from a warm pool of POOL waiting children per kind
        env.update(TWINSTACK_SPAWNER="forked", TWINSTACK_WARM_POOL=str(POOL))
    if concurrent:  # all N admitted at once: what is measured is their start, not the queue
        env["TWINSTACK_CAPACITY"] = str(max(concurrent))
        env["TWINSTACK_SESSION_MEMORY_MB"] = str(
            max(concurrent) * SESSION_TYPE_NEEDS[session_type].memory_mb)
    memory: list[tuple[float, float, float]] = []
    with twinstack_up(data_dir, log_file, env) as (port, up_s):
        log(f"twinstack ({spawner} spawner): platform up on port {port} in {up_s:.2f} s")
        for name in (USER, *(f"{USER}-{n}" for n in range(max(concurrent, default=0)))):
            add_twinstack_user(data_dir, name)
        url, ca = f"https://127.0.0.1:{port}", data_dir / "pki" / "ca.pem"
        with Client(url, ca=ca) as tw:
            tw.login(USER, PASSWORD)
            samples = run_series(f"twinstack ({spawner})", runs, warmup,
                                 lambda run: time_twinstack_session(tw, run, memory,
                                                                    session_type))
            together = {str(n): twinstack_at_once(url, ca, tw, n, session_type)
                        for n in concurrent}
    alone = statistics.median(m[2] for m in memory[warmup:])
    for n, figures in together.items():
        figures["pss_mib_added_per_service"] = added_per_service(
            alone, figures["compute_pss_mib"], int(n), len(SESSION_TYPES[session_type]))
    return {**summarize(samples), "spawner": spawner, "session_type": session_type,
            "concurrent": together,
            "platform_start_s": round(up_s, 2),
            "service_import_s": import_seconds(TWINSTACK_SERVICE_MODULES),
            "pss_mib_per_session_median": round(statistics.median(
                m[0] for m in memory[warmup:]), 1),
            "uss_mib_per_session_median": round(statistics.median(
                m[1] for m in memory[warmup:]), 1)}


def run_series(name: str, runs: int, warmup: int, once: Callable[[int], float]) -> list[float]:
    samples = []
    for run in range(warmup + runs):
        elapsed = once(run)
        label = f"warm-up {run + 1}/{warmup}" if run < warmup else f"run {run - warmup + 1}/{runs}"
        log(f"{name} {label}: {elapsed:.3f} s")
        if run >= warmup:
            samples.append(elapsed)
    return samples


# JupyterHub -------------------------------------------------------------------------------------


class HubApi:
    """The hub's REST API with a service token (stdlib only, plain HTTP on 127.0.0.1)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/hub/api"
        self.token = token

    def open(self, method: str, path: str, timeout: float = START_TIMEOUT) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        return urllib.request.urlopen(request, timeout=timeout)

    def json(self, method: str, path: str) -> tuple[int, Any]:
        with self.open(method, path) as reply:
            body = reply.read()
            return reply.status, json.loads(body) if body.strip() else None

    def up(self) -> bool:
        try:
            return self.json("GET", f"/users/{USER}")[0] == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def wait_progress_ready(self, user: str) -> None:
        """Follow the spawn's event stream until the hub sends `ready` (or `failed`)."""
        with self.open("GET", f"/users/{user}/server/progress") as stream:
            for raw in stream:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:"):])
                if event.get("ready"):
                    return
                if event.get("failed"):
                    raise RuntimeError(f"spawn failed: {event.get('message')}")
        raise RuntimeError("progress stream ended without a ready event")


def jupyterhub_version() -> str:
    import jupyterhub  # optional peer: imported only when measured

    return str(jupyterhub.__version__)


def jsonschema_iri_checker() -> str | None:
    """The IRI format checker jsonschema loads in every Jupyter process (it prefers rfc3987).

    rfc3987_syntax builds its parsers at import time, which costs the single-user server seconds
    of start-up; rfc3987 does not.
    """
    return next((m for m in ("rfc3987", "rfc3987_syntax") if importlib.util.find_spec(m)), None)


def find_singleuser() -> str:
    beside = Path(sys.executable).parent / "jupyterhub-singleuser"
    found = str(beside) if beside.exists() else shutil.which("jupyterhub-singleuser")
    if not found:
        raise RuntimeError("jupyterhub-singleuser not found: pip install jupyterhub jupyter_server")
    return found


def hub_config(workdir: Path, proxy: str, token: str, users: int) -> tuple[str, str]:
    """The hub's config file text and its public URL; every port on 127.0.0.1."""
    public_port, hub_port, proxy_api_port = free_port(), free_port(), free_port()
    args = ["--allow-root"] if os.geteuid() == 0 else []
    settings: dict[str, Any] = {
        "JupyterHub.ip": "127.0.0.1", "JupyterHub.port": public_port,
        "JupyterHub.hub_ip": "127.0.0.1", "JupyterHub.hub_port": hub_port,
        "JupyterHub.db_url": f"sqlite:///{workdir / 'jupyterhub.sqlite'}",
        "JupyterHub.cookie_secret_file": str(workdir / "cookie_secret"),
        "JupyterHub.pid_file": str(workdir / "jupyterhub.pid"),
        "JupyterHub.authenticator_class": "dummy",
        "JupyterHub.spawner_class": "simple",
        "JupyterHub.cleanup_servers": True,
        "JupyterHub.services": [{"name": "bench", "api_token": token}],
        "JupyterHub.load_roles": [{"name": "bench", "services": ["bench"],
                                   "scopes": ["admin:users", "admin:servers"]}],
        "Authenticator.allowed_users": {USER, *(f"{USER}-{n}" for n in range(users))},
        "ConfigurableHTTPProxy.command": [proxy],
        "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{proxy_api_port}",
        "ConfigurableHTTPProxy.pid_file": str(workdir / "proxy.pid"),
        "SimpleLocalProcessSpawner.home_dir_template": str(workdir / "home" / "{username}"),
        "Spawner.cmd": [find_singleuser()],
        "Spawner.args": args,
        "Spawner.start_timeout": int(START_TIMEOUT),
        "Spawner.http_timeout": int(START_TIMEOUT),
    }
    text = "c = get_config()  # noqa\n" + "".join(f"c.{k} = {v!r}\n" for k, v in settings.items())
    return text, f"http://127.0.0.1:{public_port}"


def wait_hub_stopped(api: HubApi, name: str = USER) -> None:
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        _, user = api.json("GET", f"/users/{name}")
        if not user.get("servers") and user.get("pending") is None:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the server of {name} not stopped after {STOP_TIMEOUT:g} s")


def hub_spawn_seconds(api: HubApi, name: str = USER) -> float:
    """POST a user's server until the hub says it is ready; it is left running."""
    started = time.perf_counter()
    status, _ = api.json("POST", f"/users/{name}/server")
    if status == 202:  # still starting after the hub's slow_spawn_timeout: follow its progress
        api.wait_progress_ready(name)
    elapsed = time.perf_counter() - started
    _, user = api.json("GET", f"/users/{name}")
    if not user["servers"].get("", {}).get("ready"):
        raise RuntimeError(f"hub answered {status} but the server is not ready: {user}")
    return elapsed


def hub_stop(api: HubApi, name: str = USER) -> None:
    api.json("DELETE", f"/users/{name}/server")
    wait_hub_stopped(api, name)


def time_hub_spawn(api: HubApi, memory: list[float]) -> float:
    elapsed = hub_spawn_seconds(api)
    memory.append(memory_mib(SINGLE_USER)[0])
    hub_stop(api)
    return elapsed


def hub_at_once(api: HubApi, count: int) -> dict[str, Any]:
    """`count` users (created through the API where new) each spawn their server at once."""
    names = [f"{USER}-{n}" for n in range(count)]
    known = {user["name"] for user in api.json("GET", "/users")[1]}
    for name in names:
        if name not in known:
            api.json("POST", f"/users/{name}")
    try:
        samples = at_once(count, lambda n: names[n], lambda name: hub_spawn_seconds(api, name))
        pss = memory_mib(SINGLE_USER)[0]
    finally:
        for name in names:
            hub_stop(api, name)
    log(f"jupyterhub: {count} at once: median {statistics.median(samples):.3f} s, "
        f"max {max(samples):.3f} s")
    return {**summarize(samples), "compute_pss_mib": round(pss, 1)}


def configured_hub(workdir: Path, proxy: str | None, users: int) -> tuple[Path, str, str]:
    """A hub's folder under `workdir` with its config file: the folder, the hub's URL and the
    API token of the benchmark's service."""
    if not proxy:
        raise RuntimeError("configurable-http-proxy not found: npm install "
                           "configurable-http-proxy, then put its bin on PATH or pass --proxy")
    hub_dir = workdir / "jupyterhub"
    hub_dir.mkdir()
    token = secrets.token_hex(32)
    config, url = hub_config(hub_dir, proxy, token, users)
    (hub_dir / "jupyterhub_config.py").write_text(config)
    return hub_dir, url, token


def measure_jupyterhub(workdir: Path, runs: int, warmup: int, proxy: str | None,
                       concurrent: list[int]) -> dict[str, Any]:
    version = jupyterhub_version()
    hub_dir, url, token = configured_hub(workdir, proxy, max(concurrent, default=0))
    log_file = workdir / "jupyterhub.log"
    cmd = [sys.executable, "-m", "jupyterhub", "-f", str(hub_dir / "jupyterhub_config.py")]
    api = HubApi(url, token)
    with running(cmd, log_file, cwd=hub_dir) as proc:
        up_s = wait_until(api.up, "jupyterhub", proc, log_file)
        log(f"jupyterhub {version}: hub up at {url} in {up_s:.2f} s")
        memory: list[float] = []
        samples = run_series("jupyterhub", runs, warmup, lambda _: time_hub_spawn(api, memory))
        together = {str(n): hub_at_once(api, n) for n in concurrent}
    alone = statistics.median(memory[warmup:])
    for n, figures in together.items():  # a single-user server is the one "service"
        figures["pss_mib_added_per_service"] = added_per_service(
            alone, figures["compute_pss_mib"], int(n), 1)
    return {**summarize(samples), "spawner": "SimpleLocalProcessSpawner", "version": version,
            "concurrent": together,
            "platform_start_s": round(up_s, 2),
            "service_import_s": import_seconds("jupyterhub.singleuser"),
            "pss_mib_per_server_median": round(statistics.median(memory[warmup:]), 1),
            "jsonschema_iri_checker": jsonschema_iri_checker()}


# main -------------------------------------------------------------------------------------------


def guarded(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one peer's measurement; a failure becomes `{"error": ...}` in the result."""
    try:
        return measure()
    except Exception as exc:  # report whatever went wrong instead of losing the other figure
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
            message += f"\n{exc.stderr}"
        log(f"{name} failed: {message}")
        return {"error": message}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per peer (20)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured runs before them, per peer (1)")
    parser.add_argument("--proxy", default=shutil.which("configurable-http-proxy"),
                        help="configurable-http-proxy executable (default: from PATH)")
    parser.add_argument("--skip-jupyterhub", action="store_true",
                        help="measure TwinStack only")
    parser.add_argument("--session-type", default=SESSION_TYPE,
                        help=f"TwinStack's session type to open ({SESSION_TYPE!r})")
    parser.add_argument("--spawners", type=lambda text: text.split(","),
                        default=["process", "forked"],
                        help="TwinStack's spawners to measure, comma-separated "
                        f"(process,forked; pooled: forked with --warm-pool {POOL})")
    parser.add_argument("--concurrent", type=int, nargs="*", default=[10, 30],
                        help="sessions opened at once, each by its own user, after the runs "
                        "one at a time (10 30; none: skip)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0 or any(n < 1 for n in args.concurrent):
        parser.error("--runs and each --concurrent must be ≥ 1, --warmup ≥ 0")
    return args


def main() -> int:
    args = parse_args()
    result: dict[str, Any] = {"runs": args.runs, "warmup": args.warmup, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="twinstack-bench-") as tmp:
        workdir = Path(tmp)
        ts = {spawner: guarded(f"twinstack ({spawner})", lambda spawner=spawner:
                               measure_twinstack(workdir, args.runs, args.warmup, spawner,
                                                 args.session_type, args.concurrent))
              for spawner in args.spawners}
        jh = ({"error": "skipped (--skip-jupyterhub)"} if args.skip_jupyterhub else
              guarded("jupyterhub",
                      lambda: measure_jupyterhub(workdir, args.runs, args.warmup, args.proxy,
                                                 args.concurrent)))
    result.update(twinstack=ts, jupyterhub=jh)
    result["ratio_median"] = {spawner: round(jh["median_s"] / ts[spawner]["median_s"], 3)
                              for spawner in ts
                              if "median_s" in ts[spawner] and "median_s" in jh}
    result["ratio_p95_at_once"] = {  # JupyterHub's p95 over TwinStack's, N opened at once
        spawner: {n: round(jh["concurrent"][n]["p95_s"] / ts[spawner]["concurrent"][n]["p95_s"],
                           3)
                  for n in ts[spawner].get("concurrent", {}) if n in jh.get("concurrent", {})}
        for spawner in ts if "concurrent" in ts[spawner]}
    result["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    return 0 if all("error" not in t for t in ts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
