"""The phreeqc service: PHREEQC geochemistry (sim/geochem.py) with results as versioned entities.

PHREEQC runs in worker processes (phreeqc_worker.py), never on the service's own loop: warm
workers (`compute_workers`; by default one per core the service may use, up to
SPECIATION_WORKERS) answer the short calls (`speciate` splits a batch between them, a
database check); each `run` is a job in a worker of its own, whose progress is the rows
PHREEQC has written of SELECTED_OUTPUT 1 (a `job` event about twice a second) and which
`cancel` ends by its PID.

Every result names the database it was computed with (its name and SHA-256) and PHREEQC's
version. The databases are the package's own (phreeqc.dat by default) and any a user uploads:
a `data` entity (`role`: phreeqc database) whose blob is the text, so that a result can always
be recomputed. A run that fails commits nothing: the job ends `failed` with PHREEQC's message
and the input line it points at.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from twinstack.services.project import CALLERS, JobParams, ProjectService, the_job
from twinstack.sessiontypes import machine_resources
from twinstack.sim import geochem
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import NoParams, Ports

log = logging.getLogger(__name__)

DATABASE_ROLE = "phreeqc database"
PROGRESS_EVERY = 0.5  # seconds between a job's progress events
MAX_SAMPLES = 20_000  # per speciate call: ~0.2 ms each, so a call stays under ~5 s
MAX_PHASES = 64
SPECIATION_WORKERS = 4  # by default at most: PHREEQC is one thread; a batch is split among them
STEPS = re.compile(r"\bin\s+(\d+)\s+steps?\b|^\s*-steps\s+(\d+)", re.I | re.M)
COLUMN = re.compile(r"[A-Za-z][A-Za-z0-9()+\-]{0,31}")  # an element, or x, y, pH ...
SHIFTS = re.compile(r"^\s*-shifts\s+(\d+)", re.I | re.M)


class DatabaseParams(BaseModel):
    model_config = {"extra": "forbid"}

    database: str = Field("phreeqc.dat", min_length=1, max_length=128, description="a built-in "
                          "database's file name or an uploaded database entity's id")


class RunParams(DatabaseParams):
    input: str = Field(min_length=1, description="PHREEQC input (keywords as in its manual)")
    name: str | None = Field(None, min_length=1, max_length=256)


class SpeciateParams(DatabaseParams):
    samples: list[dict[str, Any]] | None = Field(
        None, max_length=MAX_SAMPLES, description="{x, y, name, pH, pe, temp, units, and "
        "element: concentration}; or csv")
    csv: str | None = Field(None, description="a header of x, y, name, pH, pe, temp and "
                            "element columns (Ca, Mg, Alkalinity, S(6), ...), a sample a row")
    units: str = Field("mg/L", pattern=r"^[A-Za-z/()0-9 ]{1,32}$",
                       description="the concentrations' units (PHREEQC's: mg/L, mmol/kgw, "
                       "ppm ...)")
    phases: list[str] = Field(["Calcite", "Dolomite", "Gypsum", "Halite"], min_length=1,
                              max_length=MAX_PHASES)
    name: str | None = Field(None, min_length=1, max_length=256)


class UploadParams(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, description="the database file's text")


@dataclass
class Database:
    name: str
    digest: str
    text: str

    def named(self) -> dict[str, str]:
        return {"database": self.name, "database_sha256": self.digest}


@dataclass
class Job:
    id: str
    solver: str  # the entity its input and results will be
    author: str
    steps: int  # rows it is expected to write (0: unknown)
    status: str = "running"
    step: int = 0
    reason: str | None = None
    line: int | None = None
    results: list[str] = field(default_factory=list)
    cancel: bool = False


class Worker:
    """A phreeqc_worker process: requests one at a time; ended by its PID when a request is
    cancelled (PHREEQC cannot be interrupted), started again by the next request."""

    def __init__(self, memory_mb: int, message_bytes: int) -> None:
        self.memory_mb, self.message_bytes = memory_mb, message_bytes
        self.process: asyncio.subprocess.Process | None = None
        self.loaded: str | None = None
        self.lock = asyncio.Lock()

    async def request(self, database: Database, **request: Any) -> dict[str, Any]:
        """`request` (op and its fields) against `database`, loaded first where it is not
        (just loaded without an op)."""
        async with self.lock:
            try:
                if self.loaded != database.digest:
                    await self._exchange({"op": "load", "digest": database.digest,
                                          "text": database.text})
                    self.loaded = database.digest
                if not request:
                    return {"ok": True}
                return await self._exchange({"digest": database.digest, **request})
            except geochem.InputError:
                raise  # PHREEQC refused the request: the worker goes on
            except BaseException:
                await self.end()
                raise

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        process = await self._process()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(request).encode() + b"\n")
        await process.stdin.drain()
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            raise ActionError(503, "worker_died", f"PHREEQC's worker process ended (exit code "
                              f"{code}) before it answered: over the service's "
                              f"{self.memory_mb:,} MB (compute_memory_mb)?")
        reply: dict[str, Any] = json.loads(line)
        if not reply["ok"]:
            raise geochem.InputError(reply["error"], reply["line"], reply["text"])
        return reply

    async def _process(self) -> asyncio.subprocess.Process:
        if self.process is None or self.process.returncode is not None:
            self.loaded = None
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "twinstack.services.phreeqc_worker", str(self.memory_mb),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=self.message_bytes)
        return self.process

    async def end(self) -> None:
        process, self.process, self.loaded = self.process, None, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


class PhreeqcService(ProjectService):
    name: ClassVar[str] = "phreeqc"
    ports: ClassVar[Ports] = Ports(internal=7520, health=7521)

    async def start(self) -> None:
        await super().start()
        s = self.settings
        count = s.compute_workers or max(1, min(SPECIATION_WORKERS,
                                                int(machine_resources()[0])))
        self.workers = [Worker(s.compute_memory_mb, s.max_message_bytes) for _ in range(count)]
        self.version = await self._compute(geochem.version)
        self.job: Job | None = None
        self.runner: asyncio.Task[None] | None = None
        self.job_worker: Worker | None = None
        self.built_in: dict[str, Database] = {}  # read and hashed once
        self.warming = asyncio.create_task(self._warm())

    async def _warm(self) -> None:
        """Start the workers with the default database loaded (~0.4 s), so the first call
        does not wait for it."""
        try:
            database = await self._database(geochem.DEFAULT_DATABASE)
            await asyncio.gather(*(worker.request(database) for worker in self.workers))
        except asyncio.CancelledError:
            raise
        except Exception:  # the first call starts it again and says what is wrong
            log.exception("the PHREEQC worker did not start")

    async def stop(self) -> None:
        self.warming.cancel()
        if self.runner is not None:
            self.runner.cancel()
            await asyncio.gather(self.runner, return_exceptions=True)
        await asyncio.gather(*(worker.end() for worker in self.workers))
        await super().stop()

    # databases --------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def databases(self, call: Call, params: NoParams) -> dict[str, Any]:
        """The built-in databases and the project's uploaded ones; PHREEQC's version."""
        _, entities = await self._entities()
        uploaded = [{"id": e["id"], "name": e["name"],
                     "sha256": e["properties"]["database_sha256"]}
                    for e in entities if e["kind"] == "data"
                    and e["properties"].get("role") == DATABASE_ROLE]
        return {"built_in": list(geochem.built_in_databases()), "uploaded": uploaded,
                "default": geochem.DEFAULT_DATABASE, "phreeqc": self.version}

    @action(allow=CALLERS)
    async def upload_database(self, call: Call, params: UploadParams) -> dict[str, Any]:
        """A database as an entity, once PHREEQC has loaded it (422 with its error if not)."""
        author = self._editor(call)
        database = Database(params.name, geochem.digest(params.text), params.text)
        try:
            await self.workers[0].request(database)
        except geochem.InputError as exc:
            raise ActionError(422, "invalid_database", f"PHREEQC does not load "
                              f"{params.name}: {exc}", "params.text") from exc
        blob = await asyncio.to_thread(self.blobs.put, params.text.encode())
        entity = {"id": uuid.uuid4().hex, "kind": "data", "name": params.name,
                  "properties": {"role": DATABASE_ROLE, "database_sha256": database.digest,
                                 "bytes": len(params.text.encode())},
                  "blobs": {"text": blob}}
        result = await self._commit(author, f"PHREEQC database {params.name}", None,
                                    creates=[entity])
        return {"id": entity["id"], "sha256": database.digest, "head": result["head"]}

    async def _database(self, wanted: str) -> Database:
        if wanted in self.built_in:
            return self.built_in[wanted]
        if wanted.endswith(".dat") and wanted in geochem.built_in_databases():
            text = await asyncio.to_thread(geochem.built_in_text, wanted)
            self.built_in[wanted] = Database(wanted, geochem.digest(text), text)
            return self.built_in[wanted]
        _, found = await self._entities([wanted])
        if not found or found[0]["kind"] != "data" \
                or found[0]["properties"].get("role") != DATABASE_ROLE:
            raise ActionError(404, "not_found", f"no database {wanted!r}: give a built-in one "
                              f"({', '.join(geochem.built_in_databases())}) or an uploaded "
                              "database's id", "params.database")
        entity = found[0]
        text = (await asyncio.to_thread(self.blobs.get, entity["blobs"]["text"])).decode()
        return Database(entity["name"], entity["properties"]["database_sha256"], text)

    # speciation -------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def speciate(self, call: Call, params: SpeciateParams) -> dict[str, Any]:
        """Speciate samples (a list or CSV) in one batch: per sample pH, pe, temperature,
        ionic strength, charge-balance error and the phases' saturation indices, stored as a
        result table. A sample PHREEQC cannot solve keeps its place with its error."""
        author = self._editor(call)
        samples = _samples(params)
        database = await self._database(params.database)
        started = time.perf_counter()
        try:
            found = await self._speciate(database, samples, params.phases)
        except geochem.InputError as exc:
            raise ActionError(422, "invalid_samples", str(exc), "params.phases"
                              if "phase" in exc.message else "params.samples") from exc
        took = time.perf_counter() - started
        columns = ["sample", "x", "y", *found.columns]
        failed_row = [None] * len(found.columns)
        rows = [[sample.get("name", str(n + 1)), sample.get("x"), sample.get("y"),
                 *(row or failed_row)]
                for n, (sample, row) in enumerate(zip(samples, found.rows, strict=True))]
        errors = {str(n): message for n, message in found.errors.items()}  # from 0
        table = {"columns": columns, "rows": rows}
        blob = await asyncio.to_thread(self.blobs.put, json.dumps(table).encode())
        name = params.name or f"speciation of {len(samples):,} samples"
        entity = {"id": uuid.uuid4().hex, "kind": "result", "name": name,
                  "properties": {"result": "speciation", **database.named(),
                                 "phreeqc": self.version, "samples": len(samples),
                                 "columns": columns,
                                 "failed": errors},
                  "blobs": {"table": blob}}
        result = await self._commit(author, f"{name} with {database.name}", None,
                                    creates=[entity])
        log.info("speciated %d samples in %.3f s", len(samples), took)
        return {"id": entity["id"], "head": result["head"], **table, "failed": errors,
                **database.named(), "phreeqc": self.version, "seconds": round(took, 4)}

    async def _speciate(self, database: Database, samples: list[dict[str, Any]],
                        phases: list[str]) -> geochem.Speciation:
        """The samples split into a part per worker (of at least geochem.CHUNK), speciated
        side by side and joined in their order."""
        parts = max(1, min(len(self.workers), len(samples) // geochem.CHUNK))
        size = -(-len(samples) // parts)
        replies = await asyncio.gather(*(
            worker.request(database, op="speciate", samples=samples[start:start + size],
                           phases=phases, number_from=start + 1)
            for worker, start in zip(self.workers, range(0, len(samples), size), strict=False)))
        found = geochem.Speciation(next((r["columns"] for r in replies if r["columns"]), []),
                                   [], {})
        for n, reply in enumerate(replies):
            found.rows += reply["rows"]
            found.errors |= {n * size + int(k): v for k, v in reply["errors"].items()}
        return found

    # runs -------------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def run(self, call: Call, params: RunParams) -> dict[str, Any]:
        """Run a PHREEQC input as a job (one at a time per session): `job` events report the
        rows it has written; at the end its input and each SELECTED_OUTPUT table are
        entities, or, if PHREEQC refuses it, the job fails with its message and line and the
        project is unchanged."""
        author = self._editor(call)
        database = await self._database(params.database)
        if self.job is not None and self.job.status == "running":  # no await from here on
            raise ActionError(409, "busy", f"job {self.job.id} is running: cancel it or wait",
                              "params.input")
        job = Job(uuid.uuid4().hex, uuid.uuid4().hex, author, _expected_rows(params.input))
        self.job = job
        self.runner = asyncio.create_task(self._drive(job, database, params))
        return {"job": job.id, "steps": job.steps, **database.named()}

    @action(allow=CALLERS)
    async def cancel(self, call: Call, params: JobParams) -> dict[str, Any]:
        """End the running job now (its worker process is ended; nothing is committed)."""
        self._editor(call)
        job = the_job(self.job, params.job, running=True)
        job.cancel = True
        if self.job_worker is not None:
            await self.job_worker.end()
        return {"job": job.id, "status": "cancelling"}

    @action(allow=CALLERS)
    async def status(self, call: Call, params: JobParams) -> dict[str, Any]:
        job = the_job(self.job, params.job)
        return {"job": job.id, "simulation": job.solver, "status": job.status,
                "step": job.step, "steps": job.steps, "reason": job.reason, "line": job.line,
                "results": job.results}

    async def _drive(self, job: Job, database: Database, params: RunParams) -> None:
        """Run the job's worker, reporting rows written until it answers; commit the
        results, or end the job cancelled or failed with a reason."""
        worker = self.job_worker = Worker(self.settings.compute_memory_mb,
                                          self.settings.max_message_bytes)
        with tempfile.TemporaryDirectory(prefix="phreeqc-") as folder:
            selected = os.path.join(folder, "selected.txt")
            written = RowsWritten(selected)
            running = asyncio.create_task(worker.request(database, op="run", input=params.input,
                                                         selected_file=selected))
            try:
                while not running.done():
                    await asyncio.wait([running], timeout=PROGRESS_EVERY)
                    job.step = await asyncio.to_thread(written.count)
                    if not running.done():
                        await self._announce(job, "running")
                reply = running.result()
                job.results = await self._results(job, database, params, reply)
                job.step = max(job.step, sum(len(t["rows"]) for t in reply["tables"]))
                await self._finish(job, "done", None)
            except asyncio.CancelledError:
                running.cancel()
                raise
            except geochem.InputError as exc:
                job.line = exc.line
                await self._finish(job, "failed", f"PHREEQC: {exc}")
            except Exception as exc:  # a failed job is a state with a reason, not a dead task
                if job.cancel:
                    await self._finish(job, "cancelled", "cancelled by a user")
                else:
                    log.exception("job %s failed", job.id)
                    reason = exc.message if isinstance(exc, ActionError) else \
                        f"{type(exc).__name__}: {exc}"
                    await self._finish(job, "failed", reason)
            finally:
                await worker.end()

    async def _results(self, job: Job, database: Database, params: RunParams,
                       reply: dict[str, Any]) -> list[str]:
        """The input (a solver entity) and its tables (result entities inside it)."""
        name = params.name or f"PHREEQC run {time.strftime('%Y-%m-%d %H:%M:%S')}"
        facts = {**database.named(), "phreeqc": self.version, "job": job.id}
        blob = await asyncio.to_thread(self.blobs.put, params.input.encode())
        creates = [{"id": job.solver, "kind": "solver", "name": name,
                    "properties": {"solver": "phreeqc", **facts,
                                   "warnings": reply["warnings"][:100]},
                    "blobs": {"input": blob}}]
        for table in reply["tables"]:
            data = json.dumps({"columns": table["columns"], "rows": table["rows"]}).encode()
            creates.append({"kind": "result", "name": f"selected output {table['number']}",
                            "parent": job.solver,
                            "properties": {"result": "table", **facts,
                                           "columns": table["columns"],
                                           "rows": len(table["rows"])},
                            "blobs": {"table": await asyncio.to_thread(self.blobs.put, data)}})
        result = await self._commit(job.author, f"{name}: {len(reply['tables'])} tables with "
                                    f"{database.name}", None, creates=creates)
        return list(result["ids"])

    async def _finish(self, job: Job, status: str, reason: str | None) -> None:
        job.status, job.reason = status, reason
        await self._announce(job, status)

    async def _announce(self, job: Job, status: str) -> None:
        event = {"job": job.id, "simulation": job.solver, "status": status, "step": job.step,
                 "steps": job.steps, "reason": job.reason, "line": job.line,
                 "results": job.results}
        try:
            await self._model("announce", **event)
        except ActionError as exc:  # progress is news, not state: the job goes on
            log.warning("job %s: progress not announced: %s", job.id, exc.message)


def _expected_rows(text: str) -> int:
    """Rows a run will write, where its input says (reaction and kinetics steps, transport
    shifts), else 0."""
    steps = sum(int(a or b) for a, b in STEPS.findall(text))
    return steps + sum(int(n) for n in SHIFTS.findall(text))


class RowsWritten:
    """The rows (after the header) of a file PHREEQC is writing, reading only what is new
    since the last count."""

    def __init__(self, path: str) -> None:
        self.path, self.offset, self.lines = path, 0, 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as written:
                written.seek(self.offset)
                new = written.read()
        except FileNotFoundError:
            return 0
        self.offset += len(new)
        self.lines += new.count(b"\n")
        return max(0, self.lines - 1)


def _samples(params: SpeciateParams) -> list[dict[str, Any]]:
    """The samples as dicts of numbers (x, y, pH, pe, temp, elements) and a name; 422 naming
    the row and column of a value that is not a number."""
    if (params.samples is None) == (params.csv is None):
        raise ActionError(422, "invalid_params", "give exactly one of samples or csv",
                          "params.samples")
    rows = params.samples if params.samples is not None else _csv_rows(params.csv or "")
    if not rows:
        raise ActionError(422, "invalid_params", "no samples", "params.samples")
    for key in set().union(*(row.keys() for row in rows)):  # once per column, not per value
        if not COLUMN.fullmatch(str(key)):
            raise ActionError(422, "invalid_samples", f"column {key!r} is not a PHREEQC "
                              "element or a sample field", "params.samples")
    samples = []
    for n, row in enumerate(rows):
        sample: dict[str, Any] = {"units": params.units}
        for key, value in row.items():
            if key == "name":
                sample["name"] = str(value)[:64]
            elif value is not None and value != "":
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ActionError(422, "invalid_samples", f"sample {n + 1}: {key} is "
                                      f"{value!r}, not a number", "params.samples") from None
                if not math.isfinite(number):
                    raise ActionError(422, "invalid_samples", f"sample {n + 1}: {key} is not "
                                      "a finite number", "params.samples")
                sample[key] = number
        samples.append(sample)
    return samples


def _csv_rows(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text.strip()))
    rows = list(reader)
    if len(rows) > MAX_SAMPLES:
        raise ActionError(422, "too_large", f"{len(rows):,} samples, over {MAX_SAMPLES:,} a "
                          "call: split them", "params.csv")
    for n, row in enumerate(rows):
        if None in row:
            raise ActionError(422, "invalid_samples", f"CSV row {n + 2} has more values than "
                              "the header has columns", "params.csv")
    return [{k.strip(): v.strip() if isinstance(v, str) else v for k, v in row.items()}
            for row in rows]
