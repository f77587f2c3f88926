"""How long a client's session is away after a fault: the relay or the compute service killed.

Run from the repository root (a `twinstack up` in a temporary directory, 127.0.0.1 only):

    .venv/bin/python benchmarks/client_recovery.py --runs 5 > recovery.json

Per run, on one session opened once (the same `Session` object throughout):

* relay: SIGKILL of the relay process (`twinstack up` restarts it after 0.5 s). Measured: from
  the kill to the answer of a call made right after it (`first_call_s`: the call waits for
  the connection), and the `reconnected` event's `after_s` (from the client noticing the drop
  to attached again: `client_after_s`) and `attempts`.
* compute: SIGKILL of the session's kriging service (the LSS restarts it). Measured: from the
  kill to the answer of an idempotent call made right after it (`first_call_s`), which the
  client sends again once the service is back.

The JSON result goes to stdout, progress to stderr; every process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' platform helpers

from tests.platform_fixtures import running_platform, session_processes
from twinstack.client import Session

KRIGING = {"points": [[0, 0], [1, 0], [0, 1], [1, 1]], "values": [1.0, 2.0, 3.0, 4.0],
           "targets": [[0.5, 0.5]],
           "variogram": {"model": "exponential", "psill": 2.0, "range": 6.0, "nugget": 0.01}}

# The platform's own restart settings, not the tests' fast ones; after a minute of uptime a
# process's restart count starts over, in the launcher (relay) and the LSS (compute) alike.
DEFAULTS = {"TWINSTACK_RESTART_BACKOFF": "0.5", "TWINSTACK_RESTART_LIMIT": "5"}
RESET_S = 62.0


def summary(samples: list[float]) -> dict[str, Any]:
    return {"runs": len(samples), "median": round(statistics.median(samples), 3),
            "min": round(min(samples), 3), "max": round(max(samples), 3),
            "samples": [round(s, 3) for s in samples]}


def relay_kill(platform: Any, session: Session) -> dict[str, float]:
    killed = time.monotonic()
    os.kill(platform.pid("relay"), signal.SIGKILL)
    session.wait_for_event(lambda e: e["type"] == "reconnecting", 60)
    session.call("kriging", "interpolate", timeout=60, **KRIGING)
    answered = time.monotonic() - killed
    back = session.wait_for_event(lambda e: e["type"] == "reconnected", 60)
    return {"first_call_s": answered, "after_s": back["after_s"], "attempts": back["attempts"]}


def compute_kill(session: Session) -> dict[str, float]:
    [pid] = session_processes(session.id)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    session.call("kriging", "interpolate", timeout=60, idempotent=True, **KRIGING)
    answered = time.monotonic() - killed
    session.wait_for_event(lambda e: e["type"] == "restarted", 60)
    return {"first_call_s": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            running_platform(Path(tmp), "bench", env=DEFAULTS) as platform:
        tw = platform.client("bench")
        session = tw.open_session(tw.create_project("recovery", "data analysis")["id"])
        relay, compute = [], []
        for run in range(args.runs):
            if run:  # each fault the first in a minute: restart delays start over (0.5 s)
                time.sleep(RESET_S)
            relay.append(relay_kill(platform, session))
            compute.append(compute_kill(session))
            print(f"run {run + 1}: relay {relay[-1]['first_call_s']:.2f} s, compute "
                  f"{compute[-1]['first_call_s']:.2f} s", file=sys.stderr, flush=True)
    print(json.dumps({
        "relay_kill": {"first_call_s": summary([r["first_call_s"] for r in relay]),
                       "client_after_s": summary([r["after_s"] for r in relay]),
                       "attempts": [r["attempts"] for r in relay]},
        "compute_kill": {"first_call_s": summary([c["first_call_s"] for c in compute])},
        "cpus": os.cpu_count(), "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
