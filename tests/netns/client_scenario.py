"""A thin client's run, executed inside the client namespace (`ip netns exec ... python THIS`).

    python client_scenario.py GSS_PUBLIC_URL CA USER PROJECT_NAME [--wait-for-lss S]
                              [--call-timeout S] < password

Logs in, creates a "data analysis" project, opens its session (with --wait-for-lss: waiting
that much longer in the queue while no LSS has room, i.e. until one attaches), calls kriging
through the relay and prints one JSON object: the session, where it was placed, its services,
the events seen and the call's outcome (its estimates, or the error). The call runs with a
deadline so that an unreachable compute service shows up as an outcome, not as a hang. The
session is left running (detached).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import time
import traceback
from typing import Any

from twinstack.client import ActionError, Client

KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1, 2, 3, 4],
           "targets": [[0.5, 0.5]],
           "variogram": {"model": "linear", "slope": 1.0, "nugget": 0.0}}


def call(session: Any, timeout: float) -> dict[str, Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(session.call, "kriging", "interpolate", **KRIGING)
    started = time.monotonic()
    try:
        result = future.result(timeout)
        return {"ok": True, "estimates": result["estimates"],
                "seconds": round(time.monotonic() - started, 3)}
    except concurrent.futures.TimeoutError:
        return {"ok": False, "error": "timeout", "message": f"no reply in {timeout:g} s"}
    except ActionError as exc:
        return {"ok": False, "error": type(exc).__name__, "status": exc.status,
                "code": exc.code, "message": exc.message,
                "seconds": round(time.monotonic() - started, 3)}
    finally:
        pool.shutdown(wait=False)


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    for name in ("url", "ca", "user", "project"):
        parser.add_argument(name)
    parser.add_argument("--wait-for-lss", type=float, default=0.0)
    parser.add_argument("--call-timeout", type=float, default=30.0)
    args = parser.parse_args()
    password = sys.stdin.readline().rstrip("\n")
    tw = Client(args.url, ca=args.ca, timeout=60)  # a hang guard, generous for a loaded host
    tw.login(args.user, password)
    project = tw.create_project(args.project, "data analysis")
    session = tw.open_session(project["id"], timeout=60 + args.wait_for_lss)  # queued meanwhile
    placed = {s["id"]: s for s in tw.sessions()}[session.id]
    outcome = call(session, args.call_timeout)
    events = list(session.events(timeout=0.5))
    return {"session": session.id, "state": session.state, "lss": placed["lss"],
            "services": session.services, "call": outcome,
            "events": [{k: e.get(k) for k in ("type", "state", "service", "endpoint")}
                       for e in events if e.get("type") != "log"],
            "relay_url": tw.info()["relay_url"], "auth_url": tw.info()["auth_url"]}


if __name__ == "__main__":
    try:
        print(json.dumps(main()), flush=True)
        code = 0
    except Exception:
        print(json.dumps({"failed": traceback.format_exc()}), flush=True)
        code = 1
    os._exit(code)  # a call still stuck in its thread must not keep the process alive
