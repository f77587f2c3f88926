"""A spawner that fails on purpose, for fault-injection tests of the real LSS and gss.

The LSS loads it through the test-only `spawner_factory` setting
(TWINSTACK_SPAWNER_FACTORY=tests.fault_spawners:make). Which fault each service gets is read,
at every start, from the JSON file named by FAULT_PLAN: {"service": {"fault": F, ...}}, where F is
  raise      start() raises OSError before anything runs
  exit       the process exits with code 7 while starting
  hang       the process runs but never becomes ready (start's timeout: "timeout")
  late       the process becomes ready "delay" seconds after it starts (past "timeout")
  bad-ready  the process writes a ready file that names no address, then waits
  ok         (or no entry) the real service, started as the process spawner does.
Every process it starts carries `--session ID` on its command line, so tests find them in /proc.
A service whose name is not a real one (e.g. "kriging-b") runs as kriging: sessions of two
services for the sibling tests.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twinstack.spawners import ServiceSpec, Spawner
from twinstack.spawners.process import ProcessSpawner

HANG = "import time; time.sleep(600)"


def make(spec: ServiceSpec, lss: Any) -> Spawner:
    return FaultySpawner(spec, host=lss.settings.spawn_host,
                         lease=lss.sessions_dir / spec.session / "lease",
                         lease_seconds=lss.settings.lease_seconds)


def plan() -> dict[str, dict[str, Any]]:
    path = os.environ.get("FAULT_PLAN")
    return json.loads(Path(path).read_text()) if path and Path(path).exists() else {}


class FaultySpawner(ProcessSpawner):
    def _fault(self) -> dict[str, Any]:
        return plan().get(self.spec.service, {})

    def _command(self) -> list[str]:
        real = super()._command()
        real[4] = self.spec.service.split("-")[0]  # `serve kriging-b` runs kriging
        marker = ["--session", self.spec.session]
        fault = self._fault().get("fault", "ok")
        if fault == "exit":
            return [sys.executable, "-c", "raise SystemExit(7)", *marker]
        if fault == "hang":
            return [sys.executable, "-c", HANG, *marker]
        if fault == "bad-ready":
            # replaced atomically, as a service does: the LSS must see the wrong content,
            # never an empty file caught between open and write
            tmp = f"{self.ready_file}.tmp"
            code = (f"import os; open({tmp!r}, 'w').write('[]'); "
                    f"os.replace({tmp!r}, {str(self.ready_file)!r}); {HANG}")
            return [sys.executable, "-c", code, *marker]
        if fault == "late":
            delay = float(self._fault().get("delay", 3))
            code = ("import os, sys, time; time.sleep(float(sys.argv[1])); "
                    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")
            return [sys.executable, "-c", code, str(delay), *real[1:]]
        return real

    async def start(self, timeout: float = 60.0) -> str:
        fault = self._fault()
        if fault.get("fault") == "raise":
            raise OSError(28, "injected fault: no space left on device")
        return await super().start(float(fault.get("timeout", timeout)))
