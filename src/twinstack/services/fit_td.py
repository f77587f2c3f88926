"""The fit-td service: time-domain electromagnetic simulations (sim/fit_td) of the model's
Cartesian meshes, run as jobs that survive a restart of the service.

A setup is entities, so it is versioned like the geometry: one `solver` entity, the simulation
(its mesh, frequency range, boundaries, duration, precision), and inside it a `source` entity
per lumped port or plane wave and a `data` entity per monitor: a point probe, or a plane on
which |E| is taken at the DFT frequencies (property `monitor`: probe or plane).
`run` checks the setup and its memory before anything is allocated, then steps it in chunks on
the compute thread: between chunks it reports progress to the session (a `job` event through
the model service: step, simulated time, cell-updates/s, ETA) and looks for a cancel; every
`checkpoint_every` steps it stores the fields (a blob) and names them in the job's record. A
service restarted by its LSS finds the record and resumes from the last checkpoint, with the
setup of the model state the job started from, so it ends with the same result as an
uninterrupted run. Results are `result` entities inside the simulation: probe signals, port
S-parameters (series the visualization service plots) and field planes (values it slices).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field

from twinstack.services.geometry import blob_bytes
from twinstack.services.project import CALLERS, JobParams, ProjectService, the_job
from twinstack.wire.actions import Call, action
from twinstack.wire.errors import ActionError
from twinstack.wire.runtime import Ports

log = logging.getLogger(__name__)

Vector = tuple[float, float, float]
Face = Literal["x-", "x+", "y-", "y+", "z-", "z+"]
FACES: tuple[Face, ...] = ("x-", "x+", "y-", "y+", "z-", "z+")
CHUNK_SECONDS = 0.5  # compute between two looks at progress and cancellation
MAX_STEPS = 10_000_000
SETUP_BYTES_PER_CELL = 160  # measured peak of building the material runs (float64 averages)
ROLE = {"source": "source", "data": "monitor"}  # the property that says what a part is
Name = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9 _.-]+$")


class PortSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Name
    lo: Vector
    hi: Vector
    direction: Literal["x", "y", "z"] = Field(description="the current's direction: the "
                                              "edges along it are in series")
    resistance: float = Field(50.0, gt=0, le=1e6, allow_inf_nan=False)
    excited: bool = True


class PlaneWaveSpec(BaseModel):
    model_config = {"extra": "forbid"}

    lo: Vector = Field(description="the total-field box's corners: inside it the wave and what "
                       "scatters, outside only what scatters")
    hi: Vector
    amplitude: float = Field(1.0, gt=0, le=1e9, allow_inf_nan=False, description="V/m")


class ProbeSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Name
    point: Vector
    component: Literal["ex", "ey", "ez"] = "ez"


class PlaneSpec(BaseModel):
    model_config = {"extra": "forbid"}

    name: str = Name
    axis: Literal["x", "y", "z"]
    position: float = Field(allow_inf_nan=False)


class SetupParams(BaseModel):
    model_config = {"extra": "forbid"}

    mesh: str = Field(description="a Cartesian mesh entity")
    name: str | None = Field(None, min_length=1, max_length=256)
    f_min: float = Field(gt=0, allow_inf_nan=False, description="lowest frequency of interest")
    f_max: float = Field(gt=0, allow_inf_nan=False, description="highest frequency (Hz)")
    ports: list[PortSpec] = Field([], max_length=16)
    plane_wave: PlaneWaveSpec | None = Field(None, description="a plane wave along +z, E along x")
    probes: list[ProbeSpec] = Field([], max_length=64)
    planes: list[PlaneSpec] = Field([], max_length=8)
    frequencies: list[float] = Field([], max_length=16, description="where planes take |E| "
                                     "(default: the band's centre)")
    boundaries: dict[Face, Literal["pec", "pmc", "pml"]] = Field(
        {}, description="per face; default pml on every face")
    pml_cells: int = Field(8, ge=4, le=32)
    duration: float | None = Field(None, gt=0, allow_inf_nan=False,
                                   description="simulated seconds (default 20 / f_min): the "
                                   "longest it runs")
    end_energy_db: float | None = Field(None, ge=-200, lt=0, description="stop earlier, once "
                                        "the excitation is over and the field's energy has "
                                        "fallen this far below its peak (e.g. -50)")
    courant: float = Field(0.99, gt=0, le=1)
    precision: Literal["float32", "float64"] = "float32"
    checkpoint_every: int = Field(2000, ge=10, le=MAX_STEPS, description="steps")


class RunParams(BaseModel):
    model_config = {"extra": "forbid"}

    id: str = Field(description="a simulation (solver entity)")


@dataclass
class Job:
    """A run and how far it got (`record()` is what survives a restart)."""

    id: str
    simulation: str
    state: int | None  # the model state whose setup it runs
    author: str
    steps: int
    checkpoint: str | None = None  # blob of the last checkpoint
    status: str = "running"
    step: int = 0
    peak_energy: float = 0.0
    resumed_from: int = 0
    reason: str | None = None
    results: list[str] = field(default_factory=list)
    cancel: bool = False
    device: str = "cpu"  # where it runs: "gpu" where numba finds one it fits in

    def record(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "simulation", "state", "author", "steps",
                                              "checkpoint", "status", "step", "peak_energy")}


class FitTdService(ProjectService):
    name: ClassVar[str] = "fit-td"
    ports: ClassVar[Ports] = Ports(internal=7510, health=7511)

    async def start(self) -> None:
        await super().start()
        self.job: Job | None = None
        self.runner: asyncio.Task[None] | None = None
        self.starting = asyncio.Lock()  # one `run` checks and starts at a time
        record = await asyncio.to_thread(self._load_record)
        if record is not None and record["status"] == "running":
            self.job = Job(**record)
            self.runner = asyncio.create_task(self._resume(self.job))

    async def stop(self) -> None:
        if self.runner is not None:
            self.runner.cancel()
            await asyncio.gather(self.runner, return_exceptions=True)
        await super().stop()

    # setup ------------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def setup(self, call: Call, params: SetupParams) -> dict[str, Any]:
        """A simulation entity with its ports, probes and planes, checked against its mesh
        (positions, memory) before it is saved."""
        author = self._editor(call)
        if params.f_max <= params.f_min:
            raise ActionError(422, "invalid_params", f"f_max ({params.f_max:g} Hz) must be "
                              f"above f_min ({params.f_min:g} Hz)", "params.f_max")
        state, entities = await self._entities()
        mesh = _find(entities, params.mesh, "mesh", "params.mesh")
        spec = params.model_dump(exclude={"ports", "plane_wave", "probes", "planes", "name"})
        spec["boundaries"] = {face: params.boundaries.get(face, "pml") for face in FACES}
        spec["frequencies"] = params.frequencies or [(params.f_min + params.f_max) / 2]
        size = self._fits(mesh, spec, len(params.planes), params.name or "the simulation")
        waves = [params.plane_wave] if params.plane_wave else []
        parts = [[p.model_dump() for p in items]
                 for items in (params.ports, waves, params.probes, params.planes)]
        if not parts[1] and not any(p["excited"] for p in parts[0]):
            raise ActionError(422, "invalid_setup", "no excited port and no plane wave: "
                              "nothing would drive the simulation", "params.ports")
        await self._compute(self._build, mesh, spec, *parts, _materials(mesh, entities))
        sim_id = uuid.uuid4().hex
        name = params.name or f"FIT-TD of {mesh['name']}"
        creates = [{"id": sim_id, "kind": "solver", "name": name,
                    "properties": {"solver": "fit-td", **spec, **size}}]
        for kind, role, items in (("source", "port", params.ports),
                                  ("source", "plane wave", waves),
                                  ("data", "probe", params.probes),
                                  ("data", "plane", params.planes)):
            creates += [{"kind": kind, "name": getattr(item, "name", role), "parent": sim_id,
                         "properties": {ROLE[kind]: role, **item.model_dump(exclude={"name"})}}
                        for item in items]
        result = await self._commit(author, f"{name}: {size['cells']:,} cells, "
                                    f"{size['steps']:,} steps", state, creates=creates)
        return {"id": sim_id, "name": name, "head": result["head"], **size}

    def _fits(self, mesh: dict[str, Any], spec: dict[str, Any], planes: int,
              name: str) -> dict[str, Any]:
        """The setup's size, or 422 when it needs more than this service may use."""
        size = _size(mesh, spec, planes)
        if size["bytes"] > self.settings.compute_memory_mb * 2**20:
            raise ActionError(422, "too_large", f"{name} needs about "
                              f"{size['bytes'] / 2**20:,.0f} MiB for {size['cells']:,} cells, "
                              f"over this service's {self.settings.compute_memory_mb:,} MiB "
                              "(compute_memory_mb): use larger cells", "params.mesh")
        return size

    def _build(self, mesh: dict[str, Any], spec: dict[str, Any], ports: list[dict[str, Any]],
               waves: list[dict[str, Any]], probes: list[dict[str, Any]],
               planes: list[dict[str, Any]], materials: list[tuple[float, float]]) -> Any:
        """The Simulation of a setup (compute thread); 422 naming what is wrong."""
        from twinstack.sim import fit_td
        from twinstack.sim.fit_td.monitors import FieldDFT
        from twinstack.sim.fit_td.ports import LumpedPort

        arrays = np.load(io.BytesIO(blob_bytes(self.blobs, mesh["blobs"]["grid"],
                                               f"the grid of {mesh['name']}")))
        grid = fit_td.YeeGrid(arrays["x"], arrays["y"], arrays["z"])
        table = [fit_td.Material(*m) for m in materials]
        pulse = _pulse(spec)
        monitors = [FieldDFT(f"{p['name']}:{c}", c, p["axis"], p["position"],
                             tuple(spec["frequencies"]))
                    for p in planes for c in ("ex", "ey", "ez")]
        try:
            sim = fit_td.Simulation(
                grid, ports=[LumpedPort(p["name"], "e" + p["direction"], p["lo"], p["hi"],
                                        p["resistance"], pulse if p["excited"] else None)
                             for p in ports],
                plane_waves=[fit_td.PlaneWave(w["lo"], w["hi"], pulse, w["amplitude"])
                             for w in waves],
                probes=[fit_td.Probe(p["name"], p["component"], p["point"]) for p in probes],
                monitors=monitors, materials=table, cells=arrays["material"],
                fill=arrays["fill"],
                pec_edges=[arrays["pec_x"], arrays["pec_y"], arrays["pec_z"]],
                courant=spec["courant"], dtype=np.dtype(spec["precision"]).type,
                walls=spec["boundaries"], pml_cells=spec["pml_cells"])
        except ValueError as exc:
            raise ActionError(422, "invalid_setup", str(exc), "params") from exc
        return sim

    # jobs -------------------------------------------------------------------------------------

    @action(allow=CALLERS)
    async def run(self, call: Call, params: RunParams) -> dict[str, Any]:
        """Start a simulation as a job (one at a time per session); its progress and end
        arrive as `job` events. Refused before any compute when the setup is wrong or too
        large."""
        author = self._editor(call)
        if self.starting.locked():
            raise ActionError(409, "busy", "another run is being started: wait for it",
                              "params.id")
        async with self.starting:
            if self.job is not None and self.job.status == "running":
                raise ActionError(409, "busy", f"job {self.job.id} is running (step "
                                  f"{self.job.step:,} of {self.job.steps:,}): cancel it or "
                                  "wait", "params.id")
            state, setup = await self._setup(params.id, None)
            sim = await self._compute(self._build, *setup[1:])
            job = Job(uuid.uuid4().hex, params.id, state, author,
                      math.ceil(_duration(setup[2]) / sim.dt))
            self.job = job
            await asyncio.to_thread(self._save_record, job)
            self.runner = asyncio.create_task(self._drive(job, sim, setup[0]))
        return {"job": job.id, "steps": job.steps, "cells": sim.grid.cells,
                "bytes": setup[0]["properties"]["bytes"]}

    @action(allow=CALLERS)
    async def cancel(self, call: Call, params: JobParams) -> dict[str, Any]:
        """Stop the running job after its current chunk (its results are not made)."""
        self._editor(call)
        job = the_job(self.job, params.job, running=True)
        job.cancel = True
        return {"job": job.id, "status": "cancelling"}

    @action(allow=CALLERS)
    async def status(self, call: Call, params: JobParams) -> dict[str, Any]:
        """Where a job is: running (step of steps), done (its results), failed (why),
        cancelled."""
        job = the_job(self.job, params.job)
        return {"job": job.id, "simulation": job.simulation, "status": job.status,
                "step": job.step, "steps": job.steps, "reason": job.reason,
                "results": job.results, "resumed_from": job.resumed_from, "device": job.device}

    async def _setup(self, sim_id: str, state: int | None
                     ) -> tuple[int | None, tuple[Any, ...]]:
        """The model state read (`state`, or the head for None) and, at it, the simulation
        entity and what _build takes: its mesh, spec, ports, plane waves, probes, planes and
        materials; 404/422 before anything is allocated."""
        found = await self._model("entities", state=state)
        entities = found["entities"]
        sim = _find(entities, sim_id, "solver", "params.id")
        spec = sim["properties"]
        mesh = next((e for e in entities if e["id"] == spec["mesh"]), None)
        if mesh is None:
            raise ActionError(404, "not_found", f"{sim['name']} is set up on mesh "
                              f"{spec['mesh']}, which the model no longer has: mesh again "
                              "and set it up anew", "params.id")
        children = [e for e in entities if e.get("parent") == sim_id]

        def of(kind: str, role: str) -> list[dict[str, Any]]:
            return [{"name": e["name"], **{k: v for k, v in e["properties"].items()
                                           if k != ROLE[kind]}}
                    for e in children if e["kind"] == kind
                    and e["properties"].get(ROLE[kind]) == role]
        ports, waves = of("source", "port"), of("source", "plane wave")
        planes = of("data", "plane")
        self._fits(mesh, spec, len(planes), sim["name"])
        if not waves and not any(p.get("excited") for p in ports):
            raise ActionError(422, "invalid_setup", f"{sim['name']} has no excited port and "
                              "no plane wave: nothing would drive it", "params.id")
        return found["state"], (sim, mesh, spec, ports, waves, of("data", "probe"), planes,
                                _materials(mesh, entities))

    async def _resume(self, job: Job) -> None:
        """Carry on a job a previous process of this service was running."""
        try:
            _, setup = await self._setup(job.simulation, job.state)
            simulation = await self._compute(self._build, *setup[1:])
            if job.checkpoint is not None:
                saved = await self._compute(self._load_checkpoint, job.checkpoint)
                simulation.restore(saved)
                job.step = job.resumed_from = simulation.steps
            log.info("resuming job %s at step %d of %d", job.id, job.step, job.steps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job cannot go on: say why, once
            log.exception("job %s cannot resume", job.id)
            await self._finish(job, "failed", f"could not resume: {exc}")
            return
        await self._drive(job, simulation, setup[0])

    async def _drive(self, job: Job, sim: Any, entity: dict[str, Any]) -> None:
        """Step the job in chunks of about CHUNK_SECONDS, reporting and checkpointing between
        them; then make its results."""
        spec = entity["properties"]
        spec_every = int(spec["checkpoint_every"])
        job.device = "cpu" if sim.device is None else "gpu"
        cells = sim.grid.cells
        chunk, started, done_here = 10, time.monotonic(), 0
        ended: str | None = None
        try:
            while sim.steps < job.steps and not job.cancel and ended is None:
                next_checkpoint = (sim.steps // spec_every + 1) * spec_every
                count = min(chunk, job.steps - sim.steps, next_checkpoint - sim.steps,
                            _watch_every(spec, sim))
                began = time.monotonic()
                await self._compute(sim.run, count)
                took = max(time.monotonic() - began, 1e-6)
                chunk = max(1, min(int(count * CHUNK_SECONDS / took), 100_000))
                job.step, done_here = sim.steps, done_here + count
                ended = await self._rung_down(job, sim, spec)
                if sim.steps % spec_every == 0 and sim.steps < job.steps:
                    job.checkpoint = await self._compute(self._save_checkpoint, sim)
                    await asyncio.to_thread(self._save_record, job)
                rate = cells * done_here / max(time.monotonic() - started, 1e-6)
                await self._announce(job, "running", simulated_s=sim.steps * sim.dt,
                                     cell_updates_per_s=rate,
                                     eta_s=(job.steps - sim.steps) * cells / max(rate, 1.0))
            if job.cancel:
                await self._finish(job, "cancelled", "cancelled by a user")
                return
            job.results = await self._results(job, sim, entity)
            await self._finish(job, "done", ended)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed job is a state with a reason, not a dead task
            log.exception("job %s failed", job.id)
            reason = exc.message if isinstance(exc, ActionError) else f"{type(exc).__name__}:" \
                f" {exc}"
            await self._finish(job, "failed", reason)

    async def _rung_down(self, job: Job, sim: Any, spec: dict[str, Any]) -> str | None:
        """Why the job may stop before its duration (the field's energy has fallen
        `end_energy_db` below its peak after the excitation), or None."""
        limit = spec.get("end_energy_db")
        if limit is None:
            return None
        energy = await self._compute(sim.field_energy)
        job.peak_energy = max(job.peak_energy, energy)
        excitation_over = sim.steps * sim.dt > _excitation_end(spec)
        if excitation_over and energy <= job.peak_energy * 10 ** (limit / 10):
            return (f"the field's energy fell {-limit:g} dB below its peak at step "
                    f"{sim.steps:,} (of at most {job.steps:,})")
        return None

    async def _finish(self, job: Job, status: str, reason: str | None) -> None:
        job.status, job.reason = status, reason
        await asyncio.to_thread(self._save_record, job)
        await self._announce(job, status)

    async def _announce(self, job: Job, status: str, **facts: Any) -> None:
        event = {"job": job.id, "simulation": job.simulation, "status": status,
                 "step": job.step, "steps": job.steps, "resumed_from": job.resumed_from,
                 "reason": job.reason, "results": job.results, "device": job.device,
                 **{k: float(f"{v:.6g}") for k, v in facts.items()}}
        try:
            await self._model("announce", **event)
        except ActionError as exc:  # progress is news, not state: the job goes on
            log.warning("job %s: progress not announced: %s", job.id, exc.message)

    # results ----------------------------------------------------------------------------------

    async def _results(self, job: Job, sim: Any, entity: dict[str, Any]) -> list[str]:
        """Probe signals, S-parameters and |E| planes as result entities in the simulation."""
        creates = await self._compute(self._result_entities, job, sim,
                                      entity["properties"]["mesh"])
        result = await self._commit(job.author, f"{entity['name']}: {len(creates)} results "
                                    f"after {sim.steps:,} steps", None, creates=creates)
        return list(result["ids"])

    def _result_entities(self, job: Job, sim: Any, mesh: str) -> list[dict[str, Any]]:
        from twinstack.sim.fit_td.ports import waves

        made: list[dict[str, Any]] = []

        def series(name: str, arrays: dict[str, np.ndarray], **props: Any) -> None:
            out = io.BytesIO()
            np.savez(out, allow_pickle=False, **arrays)
            made.append({"kind": "result", "name": name, "parent": job.simulation,
                         "properties": {"job": job.id, **props},
                         "blobs": {"series": self.blobs.put(out.getvalue())}})

        if sim.probes:
            arrays: dict[str, np.ndarray] = {}
            for n, probe in enumerate(sim.probes):
                t, values = sim.signal(probe)
                arrays[f"x{n}"], arrays[f"y{n}"] = t * 1e9, values
            series("probe signals", arrays, labels=list(sim.probes), x_label="time (ns)",
                   y_label="E (V/m)", title="probe signals")
        excited = [p for p in sim.ports.values() if p.port.waveform is not None]
        if excited:
            source = excited[0]
            pulse = source.port.waveform
            band = np.linspace(pulse.center - pulse.bandwidth / 2,
                               pulse.center + pulse.bandwidth / 2, 201)
            v, i = sim.port_signals(source.port.name)
            a_in, _ = waves(v, i, sim.dt, source.port.resistance, band)
            arrays, labels = {}, []
            into = list(sim.ports.values()).index(source) + 1
            for n, port in enumerate(sim.ports.values()):
                v, i = sim.port_signals(port.port.name)
                _, b = waves(v, i, sim.dt, port.port.resistance, band)
                arrays[f"x{n}"] = band / 1e9
                arrays[f"y{n}"] = 20 * np.log10(np.abs(b / a_in) + 1e-300)
                labels.append(f"S{n + 1}{into} ({port.port.name})")
            series("S-parameters", arrays, labels=labels, x_label="frequency (GHz)",
                   y_label="|S| (dB)", title=f"S-parameters, {source.port.name} excited",
                   ports=[p.port.name for p in sim.ports.values()])
        for plane in sorted({name.split(":")[0] for name in sim.monitors}):
            parts = [sim.monitors[f"{plane}:{c}"] for c in ("ex", "ey", "ez")]
            for f_index, frequency in enumerate(parts[0].frequencies.tolist()):
                magnitude = _plane_magnitude(parts, f_index)
                out = io.BytesIO()
                np.save(out, magnitude.astype(np.float32))
                a = next(a for a, w in enumerate(parts[0].where) if not isinstance(w, slice))
                axis, position = "xyz"[a], parts[0].position
                made.append({"kind": "result", "name": f"|E| on {plane} at "
                             f"{frequency / 1e9:g} GHz", "parent": job.simulation,
                             "properties": {"job": job.id, "mesh": mesh,
                                            "field": f"|E| at {frequency / 1e9:g} GHz",
                                            "unit": "V/m/Hz", "axis": axis, "position": position,
                                            "frequency": frequency},
                             "blobs": {"values": self.blobs.put(out.getvalue())}})
        return made

    # persistence ------------------------------------------------------------------------------

    def _record_key(self) -> str:
        return hashlib.sha256(f"fit-td job of session {self.settings.session}".encode()
                              ).hexdigest()

    def _save_record(self, job: Job) -> None:
        digest = self.blobs.put(json.dumps(job.record()).encode())
        self.blobs.remember(self._record_key(), digest)

    def _load_record(self) -> dict[str, Any] | None:
        digest = self.blobs.recall(self._record_key())
        return None if digest is None else dict(json.loads(self.blobs.get(digest)))

    def _save_checkpoint(self, sim: Any) -> str:
        out = io.BytesIO()
        np.savez(out, allow_pickle=False, **sim.state())
        return self.blobs.put(out.getvalue())

    def _load_checkpoint(self, digest: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.blobs.get(digest))) as saved:
            return {k: saved[k] for k in saved.files}


def _find(entities: list[dict[str, Any]], entity_id: str, kind: str, where: str
          ) -> dict[str, Any]:
    found = next((e for e in entities if e["id"] == entity_id), None)
    if found is None:
        raise ActionError(404, "not_found", f"no {kind} {entity_id} in the model", where)
    if found["kind"] != kind:
        raise ActionError(422, "invalid_params", f"{found['name']} is a {found['kind']}, not "
                          f"a {kind}", where)
    return found


def _pulse(spec: dict[str, Any]) -> Any:
    """The excitation: a modulated Gaussian over f_min..f_max (-20 dB at the ends)."""
    from twinstack.sim import fit_td

    return fit_td.ModulatedGaussian((spec["f_min"] + spec["f_max"]) / 2,
                                    spec["f_max"] - spec["f_min"])


def _excitation_end(spec: dict[str, Any]) -> float:
    """When the pulse has passed (twice its delay: it starts and ends at 1e-7)."""
    from twinstack.sim import fit_td

    envelope = fit_td.GaussianPulse.up_to((spec["f_max"] - spec["f_min"]) / 2)
    return 8 * envelope.width


def _watch_every(spec: dict[str, Any], sim: Any) -> int:
    """The most steps between two looks at the energy: a tenth of the excitation while it
    lasts (its peak must not slip between two looks), any number without end_energy_db."""
    if spec.get("end_energy_db") is None or sim.steps * sim.dt > _excitation_end(spec):
        return MAX_STEPS
    return max(1, int(_excitation_end(spec) / sim.dt / 10))


def _duration(spec: dict[str, Any]) -> float:
    return float(spec.get("duration") or 20.0 / spec["f_min"])


def _size(mesh: dict[str, Any], spec: dict[str, Any], planes: int) -> dict[str, Any]:
    """Cells, time steps and memory of a setup with `planes` |E| planes on `mesh`, from its
    recorded facts alone."""
    from twinstack.sim.fit_td.grid import C0
    from twinstack.sim.fit_td.solver import TAPPED_BYTES

    props = mesh["properties"]
    if props.get("mesher") != "cartesian":
        raise ActionError(422, "invalid_params", f"{mesh['name']} is not a Cartesian mesh: "
                          "FIT-TD needs one", "params.mesh")
    cells = int(props["cells"])
    smallest = float(props["smallest_cell"])
    dt = spec["courant"] * smallest / (C0 * math.sqrt(3))  # at most: vacuum, cubic cells
    duration = _duration(spec)
    steps = math.ceil(duration / dt)
    if steps > MAX_STEPS:
        raise ActionError(422, "too_long", f"{duration:g} s in steps of {dt:.3g} s is "
                          f"{steps:,} steps, over {MAX_STEPS:,}: shorten it or use larger "
                          "cells", "params.duration")
    word = 4 if spec["precision"] == "float32" else 8
    plane_bytes = 3 * 16 * len(spec["frequencies"]) * cells ** (2 / 3)  # complex128 phasors
    taps = min(TAPPED_BYTES, steps * 3 * word * cells ** (2 / 3) * planes)  # a run's E values
    memory = cells * (6 * word + 12 + SETUP_BYTES_PER_CELL) + plane_bytes * planes + taps
    return {"cells": cells, "steps": steps, "bytes": int(memory)}


def _materials(mesh: dict[str, Any], entities: list[dict[str, Any]]
               ) -> list[tuple[float, float]]:
    """The mesh's material table as the solver's (relative permittivity, conductivity): index
    0 and solids without a material are vacuum; PEC ones are PEC edges in the mesh already."""
    by_id = {e["id"]: e for e in entities if e["kind"] == "material"}
    table = [(1.0, 0.0)]
    for entry in sorted(mesh["properties"]["materials"], key=lambda m: m["index"]):
        props = (by_id.get(entry["material"]) or {}).get("properties") or {}
        if abs(float(props.get("mu_r", 1.0)) - 1.0) > 1e-2:
            raise ActionError(422, "invalid_setup", f"material {entry['name']} has mu_r "
                              f"{props['mu_r']:g}: this solver is for non-magnetic media",
                              "params.mesh")
        table += [(1.0, 0.0)] * (entry["index"] - len(table))
        table.append((float(props.get("epsilon_r", 1.0)), float(props.get("sigma", 0.0))))
    return table


def _plane_magnitude(parts: list[Any], f_index: int) -> np.ndarray:
    """|E| at the plane's nodes from the ex, ey, ez phasors of its three DFT monitors (a
    component lying in the plane is on edge centres along its own axis: averaged onto the
    nodes, the end ones repeated)."""
    total = np.zeros(())
    for axis, part in enumerate(parts):
        phasor = part.phasors[f_index]
        in_plane = [a for a in range(3) if isinstance(part.where[a], slice)]
        if axis in in_plane:
            along = np.moveaxis(phasor, in_plane.index(axis), 0)
            padded = np.concatenate([along[:1], along, along[-1:]])
            phasor = np.moveaxis((padded[1:] + padded[:-1]) / 2, 0, in_plane.index(axis))
        total = total + np.abs(phasor) ** 2
    return np.sqrt(total)
