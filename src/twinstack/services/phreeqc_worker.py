"""The process the phreeqc service runs PHREEQC in (`python -m twinstack.services.phreeqc_worker
MEMORY_MB`): PHREEQC holds the GIL for a whole run and cannot be interrupted, so it runs here,
where the service can watch it, and end it by its PID to cancel, without blocking its own loop.

One JSON request per line on stdin, one JSON reply per line on stdout:
  {"op": "load", "digest": d, "text": database}                 -> {"ok": true}
  {"op": "run", "digest": d, "input": text, "selected_file": p}  -> {"ok": true, "tables",
                                                                     "warnings"}
  {"op": "speciate", "digest": d, "samples": [...], "phases": [...], "number_from": n}
                                                -> {"ok": true, "columns", "rows", "errors"}
  a refusal: {"ok": false, "error": message, "line": n or null, "text": the line or null}
The address space is capped at MEMORY_MB: a run that needs more fails in PHREEQC, not the host.
"""

from __future__ import annotations

import json
import resource
import sys
from typing import Any

from twinstack.sim import geochem


def handle(engines: dict[str, geochem.Engine], request: dict[str, Any]) -> dict[str, Any]:
    if request["op"] == "load":
        engines.clear()  # one database at a time: each holds ~10 MB of PHREEQC's tables
        engines[request["digest"]] = geochem.Engine(request["text"])
        return {"ok": True}
    engine = engines[request["digest"]]
    if request["op"] == "run":
        outcome = engine.run(request["input"], request.get("selected_file"))
        return {"ok": True, "tables": [t.as_dict() for t in outcome.tables],
                "warnings": outcome.warnings}
    found = geochem.speciate(engine, request["samples"], request["phases"],
                             request.get("number_from", 1))
    return {"ok": True, "columns": found.columns, "rows": found.rows,
            "errors": {str(k): v for k, v in found.errors.items()}}


def main() -> None:
    memory = int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    engines: dict[str, geochem.Engine] = {}
    for line in sys.stdin:
        try:
            reply = handle(engines, json.loads(line))
        except geochem.InputError as exc:
            reply = {"ok": False, "error": exc.message, "line": exc.line, "text": exc.text}
        except (ValueError, KeyError, MemoryError) as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "line": None,
                     "text": None}
        sys.stdout.write(json.dumps(reply, allow_nan=False) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
