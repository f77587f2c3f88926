// The geochemistry panel (phreeqc, kriging): samples read from a CSV file into a table and
// speciated in one call; a PHREEQC input written with its keywords at hand and run as a job
// with a progress bar and Cancel (a refused input selects the line PHREEQC points at); the
// project's result tables, a run's columns plotted along its steps, and a speciation's column
// (a saturation index) kriged into a map with a colour bar. Results are entities, so every
// page of the session sees them.

import { $, keepChoice, tableRow } from "./dom.js";
import { JobTracker } from "./jobs.js";
import { krigingMap, pointSet } from "./kriging.js";

export const MAX_SAMPLES = 20_000;  // the service's limit for one call
const PREVIEW_ROWS = 10;  // of a samples file, before it is sent
const SHOWN_ROWS = 200;  // of a result table; all of them are plotted or kriged
const PAGE_ROWS = 200_000;  // a bigger table is for the Python client, not the page
const PLOTTED_POINTS = 5_000;  // per line: a longer table is thinned evenly
const MAP_GRID = 80;
const NEIGHBOURS = 40;  // a map of a big survey krige from the nearest samples: quick
const NOT_A_STEP = -99;  // PHREEQC's step, time or distance of rows before a path's steps
const DATABASE_ROLE = "phreeqc database";
const PATH_AXES = ["dist_x", "time", "step", "reaction"];  // what a plot is drawn along
const BOOKKEEPING = new Set(["sim", "state", "soln", "dist_x", "time", "step", "sample", "x", "y"]);
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

// The editor's keywords, each a block to start from.
export const KEYWORDS = {
  SOLUTION: "SOLUTION 1\n    units mg/L\n    temp 25\n    pH 7.0\n    Ca 40\n"
    + "    Alkalinity 120 as HCO3\n",
  EQUILIBRIUM_PHASES: "EQUILIBRIUM_PHASES 1\n    Calcite 0 10\n    CO2(g) -3.5 10\n",
  REACTION: "REACTION 1\n    CO2 1\n    0.01 mol in 10 steps\n",
  MIX: "MIX 1\n    1 0.5\n    2 0.5\n",
  KINETICS: "RATES\nCalcite\n-start\n10 rate = 1e-8 * (1 - SR(\"Calcite\"))\n"
    + "20 save rate * TIME\n-end\nKINETICS 1\nCalcite\n    -m0 1\n    -steps 86400 in 24 steps\n",
  TRANSPORT: "TRANSPORT\n    -cells 20\n    -shifts 40\n    -lengths 20*0.1\n"
    + "    -dispersivities 20*0.01\n    -punch_cells 20\n",
  SELECTED_OUTPUT: "SELECTED_OUTPUT 1\n    -reset false\n    -step true\n    -pH true\n"
    + "    -totals Ca\n    -saturation_indices Calcite\n",
  USER_PUNCH: "USER_PUNCH 1\n    -headings Ca_mmol\n10 PUNCH TOT(\"Ca\") * 1e3\n",
  SAVE: "SAVE solution 1\n",
  USE: "USE solution 1\n",
  END: "END\n",
};

// What the editor holds at first: a reaction path to run as it is.
export const FIRST_INPUT = `SOLUTION 1
    units mg/L
    temp 12
    pH 7.3
    Ca 60
    Alkalinity 180 as HCO3
EQUILIBRIUM_PHASES 1
    Calcite 0 1
REACTION 1
    CO2 1
    0.02 mol in 20 steps
SELECTED_OUTPUT 1
    -reset false
    -step true
    -pH true
    -totals Ca C(4)
    -saturation_indices Calcite
END
`;

// A CSV file of samples as its header and rows, for the table shown before it is sent (the
// service reads the file itself and says what is wrong in it). Quoted fields may hold commas.
export function parseCsv(text) {
  const lines = text.split(/\r?\n/).filter((line) => line.trim());
  const count = lines.length - 1;
  if (count < 1) throw new Error("the file needs a header line and at least one sample");
  if (count > MAX_SAMPLES) {
    throw new Error(`${count.toLocaleString("en")} samples; one call takes up to `
                    + `${MAX_SAMPLES.toLocaleString("en")}: split the file`);
  }
  const [header, ...rows] = lines.map(csvCells);
  return { header, rows };
}

function csvCells(line) {
  const cells = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted && c === "\"" && line[i + 1] === "\"") {
      cell += c;
      i++;
    } else if (c === "\"") {
      quoted = !quoted;
    } else if (c === "," && !quoted) {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += c;
    }
  }
  return [...cells, cell.trim()];
}

// Where line `n` (from 1) of `text` starts and ends, or null if it has fewer lines.
export function lineSpan(text, n) {
  let start = 0;
  for (let line = 1; line < n; line++) {
    start = text.indexOf("\n", start) + 1;
    if (start === 0) return null;
  }
  const end = text.indexOf("\n", start);
  return [start, end < 0 ? text.length : end];
}

// Round values about `count` apart from lo to hi (steps of 1, 2 or 5 times a power of ten).
export function ticks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw * (1 - 1e-9));
  const values = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    values.push(Number(v.toPrecision(12)));
  }
  return values;
}

// The column to plot a run's table along, and the first column worth plotting.
export function plotDefaults(columns) {
  const along = PATH_AXES.find((c) => columns.includes(c)) ?? columns[0];
  const first = columns.find((c) => !BOOKKEEPING.has(c) && c !== along) ?? columns[columns.length - 1];
  return { along, plotted: [first] };
}

const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
const shown = (v) => (isNumber(v) ? String(Number(v.toPrecision(5))) : v ?? "—");

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return hi > lo ? [lo, hi] : [lo - 1, hi + 1];
}

// Columns of a table along another, as lines with axes, ticks and a legend; the points
// drawn (rows before a path's steps, or without numbers, are left out).
export function linePlot(canvas, table, along, plotted) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const box = { left: 70, right: width - 16, top: 30, bottom: height - 42 };
  const x = table.columns.indexOf(along);
  const stride = Math.max(1, Math.ceil(table.rows.length / PLOTTED_POINTS));
  const lines = plotted.map((name) => {
    const y = table.columns.indexOf(name);
    const points = table.rows.filter((row, n) => n % stride === 0 && row && isNumber(row[x])
      && row[x] !== NOT_A_STEP && isNumber(row[y])).map((row) => [row[x], row[y]]);
    return { name, points };
  });
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.font = "12px system-ui, sans-serif";
  const count = lines.reduce((sum, line) => sum + line.points.length, 0);
  if (!count) {
    context.fillStyle = "#1d2329";
    context.fillText(`no rows with numbers in ${along} and ${plotted.join(", ")}`, box.left, height / 2);
    return 0;
  }
  const [x0, x1] = extent(lines.flatMap((l) => l.points.map((p) => p[0])));
  const [y0, y1] = extent(lines.flatMap((l) => l.points.map((p) => p[1])));
  const px = (v) => box.left + ((v - x0) / (x1 - x0)) * (box.right - box.left);
  const py = (v) => box.bottom - ((v - y0) / (y1 - y0)) * (box.bottom - box.top);
  context.strokeStyle = "#dde1e6";
  context.fillStyle = "#5a6470";
  context.textAlign = "center";
  for (const v of ticks(x0, x1)) {
    context.beginPath();
    context.moveTo(px(v), box.top);
    context.lineTo(px(v), box.bottom);
    context.stroke();
    context.fillText(shown(v), px(v), box.bottom + 15);
  }
  context.textAlign = "right";
  for (const v of ticks(y0, y1)) {
    context.beginPath();
    context.moveTo(box.left, py(v));
    context.lineTo(box.right, py(v));
    context.stroke();
    context.fillText(shown(v), box.left - 6, py(v) + 4);
  }
  context.strokeStyle = "#1d2329";
  context.strokeRect(box.left, box.top, box.right - box.left, box.bottom - box.top);
  context.textAlign = "center";
  context.fillText(along, (box.left + box.right) / 2, height - 8);
  context.textAlign = "left";
  lines.forEach((line, n) => {
    const colour = COLOURS[n % COLOURS.length];
    context.strokeStyle = context.fillStyle = colour;
    context.lineWidth = 2;
    context.beginPath();
    line.points.forEach(([a, b], i) => (i ? context.lineTo(px(a), py(b)) : context.moveTo(px(a), py(b))));
    context.stroke();
    if (line.points.length <= 60) {
      for (const [a, b] of line.points) context.fillRect(px(a) - 2, py(b) - 2, 4, 4);
    }
    const key = box.left + 10 + n * 130;
    context.fillRect(key, 10, 14, 4);
    context.fillText(line.name, key + 18, 16);
  });
  context.lineWidth = 1;
  return count;
}

function tableElement(table, limit) {
  const element = document.createElement("table");
  element.createTHead().insertRow().append(...table.columns.map(
    (name) => Object.assign(document.createElement("th"), { textContent: name })));
  element.createTBody().append(...table.rows.slice(0, limit)
    .map((row) => tableRow(row ? row.map(shown) : table.columns.map(() => "—"))));
  return element;
}

export class GeochemistryPanel {
  constructor(view) {
    this.view = view;
    this.tables = new Map();  // entity id -> {columns, rows}: a result never changes
    this.wanted = null;  // the result to show once the model lists it
    this.jobs = new JobTracker(view, "phreeqc", "geochem", {
      running: (event) => (event.steps
        ? `${event.step.toLocaleString("en")} of ${event.steps.toLocaleString("en")} rows written`
        : `${event.step.toLocaleString("en")} rows written`),
      ended: (event) => this.ended(event),
    });
    const editor = $("geochem-run").elements.input;
    if (!editor.value) editor.value = FIRST_INPUT;
  }

  async show(entities) {
    if (!this.builtIn) {
      const found = await this.view.call("phreeqc", "databases");
      this.builtIn = found ? [found.default, ...found.built_in.filter((n) => n !== found.default)] : [];
    }
    const uploaded = entities.filter((e) => e.kind === "data" && e.properties.role === DATABASE_ROLE);
    keepChoice($("geochem-database").elements.database, [
      ...this.builtIn.map((name) => [name, name]),
      ...uploaded.map((e) => [e.id, `${e.name} (uploaded)`])]);
    const byId = new Map(entities.map((e) => [e.id, e]));
    const results = entities.filter((e) => e.kind === "result"
      && ["table", "speciation"].includes(e.properties.result));
    const select = $("geochem-results").elements.table;
    const before = select.value;
    keepChoice(select, results.map((e) => [e.id, resultLabel(e, byId.get(e.parent))]));
    if (this.wanted && results.some((e) => e.id === this.wanted)) {
      select.value = this.wanted;
      this.wanted = null;
    }
    if (select.value !== before || !this.shownTable) await this.showTable(byId.get(select.value));
  }

  // --- samples ---------------------------------------------------------------------------------

  async preview(form) {
    const file = form.elements.file.files[0];
    this.samples = null;
    $("geochem-samples-table").replaceChildren();
    if (!file) return;
    const text = await file.text();
    let parsed;
    try {
      parsed = parseCsv(text);
    } catch (err) {
      this.view.say(`${file.name}: ${err.message}`);
      return;
    }
    this.samples = { name: file.name, text };
    const table = tableElement({ columns: parsed.header, rows: parsed.rows }, PREVIEW_ROWS);
    table.createCaption().textContent = `${file.name}: ${parsed.rows.length.toLocaleString("en")} `
      + `samples${parsed.rows.length > PREVIEW_ROWS ? `, the first ${PREVIEW_ROWS} shown` : ""}`;
    $("geochem-samples-table").replaceChildren(table);
  }

  async speciate(form) {
    await this.preview(form);  // the file as it is now
    if (!this.samples) return;
    const phases = form.elements.phases.value.split(/[\s,]+/).filter(Boolean);
    const made = await this.view.call("phreeqc", "speciate", {
      csv: this.samples.text, units: form.elements.units.value, phases,
      database: $("geochem-database").elements.database.value,
      name: `speciation of ${this.samples.name}` });
    if (!made) return;
    const failed = Object.keys(made.failed).length;
    this.view.say(`${made.rows.length.toLocaleString("en")} samples speciated with `
                  + `${made.database} in ${made.seconds} s`
                  + `${failed ? `: ${failed} could not be (their rows are empty)` : ""}.`, "info");
    this.tables.set(made.id, { columns: made.columns, rows: made.rows });
    this.wanted = made.id;
    await this.view.refresh();
  }

  // --- runs ------------------------------------------------------------------------------------

  insertKeyword(select) {
    const block = KEYWORDS[select.value];
    select.value = "";
    if (!block) return;
    const editor = $("geochem-run").elements.input;
    const at = editor.selectionStart;
    const lineStart = editor.value.lastIndexOf("\n", at - 1) + 1;  // blocks start a line
    editor.setRangeText(block, lineStart, lineStart, "end");
    editor.focus();
    this.showCursor();
  }

  showCursor() {
    const editor = $("geochem-run").elements.input;
    const line = editor.value.slice(0, editor.selectionStart).split("\n").length;
    $("geochem-cursor").textContent = `line ${line}`;
  }

  async run(form) {
    $("geochem-error").hidden = true;
    const name = form.elements.name.value.trim() || undefined;
    const started = await this.view.call("phreeqc", "run", {
      input: form.elements.input.value, name,
      database: $("geochem-database").elements.database.value });
    if (!started) return;
    this.jobs.onJob({ job: started.job, status: "running", step: 0, steps: started.steps,
                      results: [] });
  }

  async ended(event) {
    if (event.status === "failed" && event.line) this.markLine(event.line, event.reason);
    if (event.status !== "done" || event.results.length < 2) return;
    this.wanted = event.results[1];  // its first table (the first result is its input)
    await this.view.refresh();
  }

  // The line PHREEQC refused, selected in the editor, with its message under it.
  markLine(line, reason) {
    const editor = $("geochem-run").elements.input;
    const span = lineSpan(editor.value, line);
    if (span) {
      editor.focus();
      editor.setSelectionRange(...span);
      const lineHeight = editor.scrollHeight / editor.value.split("\n").length;
      editor.scrollTop = Math.max(0, (line - 3) * lineHeight);
      this.showCursor();
    }
    const error = $("geochem-error");
    error.textContent = `line ${line}: ${reason}`;
    error.dataset.line = String(line);
    error.hidden = false;
  }

  async uploadDatabase(form) {
    const file = form.elements.file.files[0];
    if (!file) return;
    const made = await this.view.call("phreeqc", "upload_database",
                                      { name: file.name, text: await file.text() });
    if (!made) return;
    this.view.say(`${file.name} uploaded (sha256 ${made.sha256.slice(0, 12)}).`, "info");
    await this.view.refresh();
    $("geochem-database").elements.database.value = made.id;
  }

  // --- results ---------------------------------------------------------------------------------

  async showTable(entity) {
    this.shownTable = entity ?? null;
    this.table = null;
    for (const id of ["geochem-facts", "geochem-table"]) $(id).replaceChildren();
    $("geochem-plot-panel").hidden = $("geochem-map-panel").hidden = true;
    if (!entity) return;
    const p = entity.properties;
    if ((p.rows ?? p.samples) > PAGE_ROWS) {
      $("geochem-facts").textContent = `${entity.name}: ${(p.rows ?? p.samples).toLocaleString("en")} `
        + `rows, more than the page shows (${PAGE_ROWS.toLocaleString("en")}): read it with the Python client`;
      return;
    }
    let table = this.tables.get(entity.id);
    if (!table) {
      const data = await this.view.blob(entity.blobs.table);
      if (!data) return;
      table = JSON.parse(new TextDecoder().decode(data));
      this.tables.set(entity.id, table);
    }
    if (this.shownTable !== entity) return;  // another was chosen meanwhile
    this.table = table;
    const failed = Object.keys(p.failed || {}).length;
    $("geochem-facts").textContent = `${table.rows.length.toLocaleString("en")} rows · `
      + `${p.database} (sha256 ${String(p.database_sha256).slice(0, 12)}) · PHREEQC ${p.phreeqc}`
      + `${failed ? ` · ${failed} samples failed` : ""}`
      + `${table.rows.length > SHOWN_ROWS ? ` · the first ${SHOWN_ROWS} shown` : ""}`;
    $("geochem-table").replaceChildren(tableElement(table, SHOWN_ROWS));
    const numeric = table.columns.filter((c) => c !== "sample");
    if (p.result === "speciation") {
      const mapped = numeric.filter((c) => !BOOKKEEPING.has(c));
      const column = $("geochem-map-form").elements.column;
      const chosen = column.value;
      keepChoice(column, mapped.map((c) => [c, c]));
      if (column.value !== chosen) column.value = mapped.find((c) => c.startsWith("si_")) ?? mapped[0];
      $("geochem-map-panel").hidden = false;
      if (table.columns.includes("x") && table.columns.includes("y")) await this.krige();
    } else {
      const form = $("geochem-plot");
      const { along, plotted } = plotDefaults(numeric);
      keepChoice(form.elements.along, numeric.map((c) => [c, c]));
      form.elements.along.value = along;
      form.elements.plotted.replaceChildren(...numeric.map((c) => new Option(c, c, false, plotted.includes(c))));
      $("geochem-plot-panel").hidden = false;
      this.plot();
    }
  }

  plot() {
    if (!this.table) return;
    const form = $("geochem-plot");
    const plotted = [...form.elements.plotted.selectedOptions].map((o) => o.value);
    const drawn = linePlot($("geochem-chart"), this.table, form.elements.along.value, plotted);
    $("geochem-chart").dataset.points = String(drawn);
  }

  async krige() {
    const table = this.table;
    const column = $("geochem-map-form").elements.column.value;
    const [x, y, v] = ["x", "y", column].map((c) => table.columns.indexOf(c));
    if (x < 0 || y < 0) {
      this.view.say("a map needs the samples' x and y: this table has no such columns");
      return;
    }
    const usable = table.rows.filter((row) => row && [x, y, v].every((i) => isNumber(row[i])));
    if (usable.length < 3) {
      this.view.say(`a map needs at least 3 samples with x, y and ${column}; `
                    + `this table has ${usable.length}`);
      return;
    }
    let points;
    try {
      points = pointSet(usable.map((row) => [row[x], row[y]]), usable.map((row) => row[v]));
    } catch (err) {
      this.view.say(err.message);
      return;
    }
    const params = { points: points.xy, values: points.values,
                     grid: { x: [...points.xRange, MAP_GRID], y: [...points.yRange, MAP_GRID] } };
    if (points.values.length > NEIGHBOURS) params.neighbours = NEIGHBOURS;
    const result = await this.view.call("kriging", "interpolate", params);
    if (!result || this.table !== table) return;
    const canvas = $("geochem-map");
    const { lo, hi } = krigingMap(canvas, result.estimates, points);
    canvas.dataset.points = String(points.values.length);
    canvas.dataset.column = column;
    $("geochem-map-caption").textContent = `${column} kriged from ${points.values.length
      .toLocaleString("en")} samples: ${lo.toPrecision(3)} to ${hi.toPrecision(3)}`;
  }
}

function resultLabel(entity, parent) {
  const p = entity.properties;
  const size = p.result === "speciation" ? `${p.samples} samples` : `${p.rows} rows`;
  return `${parent ? `${parent.name}: ` : ""}${entity.name} (${size})`;
}
