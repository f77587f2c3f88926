// The solver panel (fit-td): set up a simulation on a Cartesian mesh (band, boundaries, a
// lumped port, a probe, a field plane), run it with a progress bar and Cancel, and show what it
// made: the S-parameters and probe signals as plots, |E| on the plane with its colour bar.
// Setups and results are entities, so every page of the session sees them; progress arrives
// as `job` events, so every page shows the run too.

import { $, keepChoice } from "./dom.js";
import { JobTracker } from "./jobs.js";

const GHZ = 1e9;
const FACES = ["x-", "x+", "y-", "y+", "z-", "z+"];

function numbers(text) {
  const values = text.split(/[\s,]+/).filter(Boolean).map(Number);
  return values.length === 3 && values.every(Number.isFinite) ? values : null;
}

// The setup `fit-td.setup` takes from the form's fields, or a message saying what is missing.
// A port, a plane wave or both: whichever has its two corners.
export function setupFromForm(fields) {
  const lo = numbers(fields.port_lo || ""), hi = numbers(fields.port_hi || "");
  const waveLo = numbers(fields.wave_lo || ""), waveHi = numbers(fields.wave_hi || "");
  if (!fields.mesh) return { error: "Mesh first: the solver runs on a Cartesian mesh." };
  if (!(lo && hi) && !(waveLo && waveHi)) {
    return { error: "Give the port's two corners or the plane wave box's, each as x, y, z." };
  }
  const params = {
    mesh: fields.mesh, f_min: Number(fields.f_min) * GHZ, f_max: Number(fields.f_max) * GHZ,
    boundaries: Object.fromEntries(FACES.map((face) => [face, fields[`face_${face}`]])),
  };
  if (lo && hi) {
    params.ports = [{ name: "port 1", lo, hi, direction: fields.direction,
                      resistance: Number(fields.resistance) }];
  }
  if (waveLo && waveHi) params.plane_wave = { lo: waveLo, hi: waveHi };
  const probe = numbers(fields.probe || "");
  if (probe) params.probes = [{ name: "probe", point: probe, component: `e${fields.direction}` }];
  if (fields.plane_axis && fields.plane_at !== "") {
    params.planes = [{ name: "plane", axis: fields.plane_axis, position: Number(fields.plane_at) }];
  }
  if (fields.duration) params.duration = Number(fields.duration) * 1e-9;
  if (fields.end_db) params.end_energy_db = -Math.abs(Number(fields.end_db));
  if (fields.name) params.name = fields.name;
  return { params };
}

export function progressText(event) {
  const parts = [`step ${event.step.toLocaleString()} of ${event.steps.toLocaleString()}`];
  if (event.simulated_s !== undefined && event.simulated_s !== null) {
    parts.push(`${(event.simulated_s * 1e9).toPrecision(3)} ns simulated`);
  }
  if (event.cell_updates_per_s) {
    parts.push(`${(event.cell_updates_per_s / 1e6).toFixed(0)} M cell-updates/s`);
  }
  if (event.eta_s !== undefined && event.eta_s !== null) parts.push(`${event.eta_s.toFixed(1)} s left`);
  if (event.resumed_from) parts.push(`resumed from step ${event.resumed_from.toLocaleString()}`);
  if (event.device === "gpu") parts.push("on the GPU");
  return parts.join(" · ");
}

export class SolverPanel {
  constructor(view) {
    this.view = view;
    this.jobs = new JobTracker(view, "fit-td", "solver", {
      running: progressText, ended: (event) => event.status === "done" && this.showResults(event.results) });
  }

  show(entities) {
    const meshes = entities.filter((e) => e.kind === "mesh" && e.properties.mesher === "cartesian");
    keepChoice($("solver-form").elements.mesh, meshes.map((e) => [e.id, e.name]));
    const setups = entities.filter((e) => e.kind === "solver");
    keepChoice($("solver-run").elements.simulation, setups.map((e) => [e.id, e.name]));
    $("solver-run").querySelector("button[type=submit]").disabled = !setups.length;
  }

  async setup(form) {
    const fields = Object.fromEntries(new FormData(form).entries());
    const { params, error } = setupFromForm(fields);
    if (error) {
      this.view.say(error);
      return;
    }
    const made = await this.view.call("fit-td", "setup", params);
    if (!made) return;
    this.view.say(`${made.name}: ${made.cells.toLocaleString()} cells, ${made.steps.toLocaleString()} steps`, "info");
    await this.view.refresh();
    $("solver-run").elements.simulation.value = made.id;
  }

  async run(form) {
    const started = await this.view.call("fit-td", "run", { id: form.elements.simulation.value });
    if (!started) return;
    this.jobs.onJob({ job: started.job, status: "running", step: 0, steps: started.steps });
  }

  async showResults(ids) {
    const listed = await this.view.call("model", "entities", { ids });
    if (!listed) return;
    const pictures = listed.entities.map((entity) => this.picture(entity));
    $("solver-results").replaceChildren(...pictures);
  }

  picture(entity) {
    const figure = document.createElement("figure");
    const image = Object.assign(document.createElement("img"), { alt: entity.name });
    figure.append(image, Object.assign(document.createElement("figcaption"), { textContent: entity.name }));
    const request = entity.blobs.series ? ["plot", { id: entity.id }] : ["slice", { id: entity.id }];
    this.view.call("visualization", ...request)
      .then((made) => made && this.view.blob(made.blob))
      .then((png) => {
        if (!png) return;
        image.src = URL.createObjectURL(new Blob([png], { type: "image/png" }));
        image.addEventListener("load", () => {
          URL.revokeObjectURL(image.src);
          figure.dataset.loaded = "true";
        }, { once: true });
      });
    return figure;
  }
}
