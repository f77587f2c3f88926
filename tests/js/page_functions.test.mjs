// The web page's pure functions (no DOM, no three.js), run by node's test runner from
// tests/unit/test_web_functions.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { parseValue, shownValue } from "../../src/twinstack/web/src/dom.js";
import {
  KEYWORDS, MAX_SAMPLES, lineSpan, parseCsv, plotDefaults, ticks,
} from "../../src/twinstack/web/src/geochemistry.js";
import { lanes } from "../../src/twinstack/web/src/history.js";
import { colour, parsePoints } from "../../src/twinstack/web/src/kriging.js";
import { progressText, setupFromForm } from "../../src/twinstack/web/src/solver.js";

test("a typed parameter becomes a number, a list or a word", () => {
  assert.equal(parseValue(" 1.5 "), 1.5);
  assert.deepEqual(parseValue("1, 2, 3"), [1, 2, 3]);
  assert.deepEqual(parseValue("[[0, 0], [1, 0], [0, 1]]"), [[0, 0], [1, 0], [0, 1]]);
  assert.equal(parseValue("all"), "all");
  assert.equal(parseValue(""), undefined);
  assert.equal(parseValue("1, two"), undefined);
  assert.equal(parseValue("<b>x</b>"), undefined);
});

test("a parameter shows as it is typed", () => {
  assert.equal(shownValue([0, 0.5, 2]), "0, 0.5, 2");
  assert.equal(shownValue([[0, 0], [1, 0]]), "[[0,0],[1,0]]");
  assert.equal(shownValue("all"), "all");
  for (const value of [[1, 2, 3], 4, "all", [[0, 1], [2, 3]]]) {
    assert.deepEqual(parseValue(shownValue(value)), value);
  }
});

test("history lanes: a branch made after an undo opens a lane of its own", () => {
  // 1 - 2 - 3 ; undo to 2, then 4 (a branch from 2) ; 5 after 4 ; 6 after 3
  const states = [
    { id: 1, parent_id: null }, { id: 2, parent_id: 1 }, { id: 3, parent_id: 2 },
    { id: 4, parent_id: 2 }, { id: 5, parent_id: 4 }, { id: 6, parent_id: 3 },
  ];
  const lane = lanes(states);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map((id) => lane.get(id)), [0, 0, 0, 1, 1, 0]);
});

test("kriging points from CSV: a header is skipped, a bad line is named", () => {
  const points = parsePoints("x;y;value\n0;0;1\n10\t5\t2\n4,8,3\n");
  assert.deepEqual(points.xy, [[0, 0], [10, 5], [4, 8]]);
  assert.deepEqual(points.values, [1, 2, 3]);
  assert.deepEqual([points.xRange, points.yRange], [[0, 10], [0, 8]]);
  assert.throws(() => parsePoints("x,y,v\n1,2,3\n4,five,6\n7,8,9\n"), /line 3 is not/);
  assert.throws(() => parsePoints("1,2,3\n4,5,6\n"), /at least 3 points, the file has 2/);
});

test("the colour map runs from dark violet to yellow and clamps", () => {
  assert.deepEqual(colour(0), [68, 1, 84]);
  assert.deepEqual(colour(1), [253, 231, 37]);
  assert.deepEqual(colour(-3), colour(0));
  assert.deepEqual(colour(7), colour(1));
});

test("the solver form becomes a fit-td setup, or says what is missing", () => {
  const fields = {
    mesh: "m1", f_min: "1", f_max: "3", direction: "z", resistance: "50",
    port_lo: "0, 0, 0", port_hi: "0 0 0.002", probe: "", plane_axis: "z", plane_at: "0.01",
    duration: "", name: "",
    "face_x-": "pml", "face_x+": "pml", "face_y-": "pec", "face_y+": "pec",
    "face_z-": "pmc", "face_z+": "pml",
  };
  const { params } = setupFromForm(fields);
  assert.equal(params.f_min, 1e9);
  assert.equal(params.f_max, 3e9);
  assert.deepEqual(params.ports, [{ name: "port 1", lo: [0, 0, 0], hi: [0, 0, 0.002],
                                    direction: "z", resistance: 50 }]);
  assert.deepEqual(params.boundaries, { "x-": "pml", "x+": "pml", "y-": "pec", "y+": "pec",
                                        "z-": "pmc", "z+": "pml" });
  assert.deepEqual(params.planes, [{ name: "plane", axis: "z", position: 0.01 }]);
  assert.equal(params.probes, undefined);
  assert.equal(params.duration, undefined);
  assert.match(setupFromForm({ ...fields, mesh: "" }).error, /Mesh first/);
  assert.match(setupFromForm({ ...fields, port_hi: "1, 2" }).error, /two corners/);
  assert.equal(params.plane_wave, undefined);
  const lit = setupFromForm({ ...fields, port_lo: "", port_hi: "", wave_lo: "1, 1, 1",
                              wave_hi: "2, 2, 2" }).params;
  assert.deepEqual(lit.plane_wave, { lo: [1, 1, 1], hi: [2, 2, 2] });
  assert.equal(lit.ports, undefined);
  const more = setupFromForm({ ...fields, probe: "1, 2, 3", duration: "5", end_db: "50" }).params;
  assert.deepEqual(more.probes, [{ name: "probe", point: [1, 2, 3], component: "ez" }]);
  assert.equal(more.duration, 5e-9);
  assert.equal(more.end_energy_db, -50);
});

test("a job's progress reads as steps, simulated time, speed and time left", () => {
  assert.equal(progressText({ step: 1500, steps: 3000, simulated_s: 5.7e-9,
                              cell_updates_per_s: 2.5e8, eta_s: 1.25, resumed_from: 1000 }),
               "step 1,500 of 3,000 · 5.70 ns simulated · 250 M cell-updates/s · 1.3 s left"
               + " · resumed from step 1,000");
  assert.equal(progressText({ step: 0, steps: 10 }), "step 0 of 10");
  assert.equal(progressText({ step: 0, steps: 10, device: "gpu" }), "step 0 of 10 · on the GPU");
  assert.equal(progressText({ step: 0, steps: 10, device: "cpu" }), "step 0 of 10");
});

test("a samples file: its header and rows, quoted commas kept, too many refused", () => {
  const { header, rows } = parseCsv('name,x,y,pH\r\n"well, north",1,2,7.1\n\nw2,3,4,"7.3"\n');
  assert.deepEqual(header, ["name", "x", "y", "pH"]);
  assert.deepEqual(rows, [["well, north", "1", "2", "7.1"], ["w2", "3", "4", "7.3"]]);
  assert.deepEqual(parseCsv('name\n"say ""hi"""\n').rows, [['say "hi"']]);
  assert.throws(() => parseCsv("name,x,y\n"), /a header line and at least one sample/);
  const many = `x\n${"1\n".repeat(MAX_SAMPLES + 1)}`;
  assert.throws(() => parseCsv(many), /20,001 samples; one call takes up to 20,000/);
});

test("a line of the input by its number, as PHREEQC counts them", () => {
  const text = "SOLUTION 1\n    pH seven\nEND";
  assert.deepEqual(lineSpan(text, 1), [0, 10]);
  assert.equal(text.slice(...lineSpan(text, 2)), "    pH seven");
  assert.equal(text.slice(...lineSpan(text, 3)), "END");
  assert.equal(lineSpan(text, 4), null);
});

test("axis ticks are round numbers inside the range", () => {
  assert.deepEqual(ticks(0, 10), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(ticks(1, 20), [5, 10, 15, 20]);
  assert.deepEqual(ticks(-0.43, 0.24), [-0.4, -0.2, 0, 0.2]);
  assert.deepEqual(ticks(3, 3), [3]);
});

test("a run's table is plotted along its steps, distance or time", () => {
  assert.deepEqual(plotDefaults(["step", "pH", "si_Calcite"]), { along: "step", plotted: ["pH"] });
  assert.deepEqual(plotDefaults(["soln", "dist_x", "Ca(mol/kgw)"]),
                   { along: "dist_x", plotted: ["Ca(mol/kgw)"] });
  assert.deepEqual(plotDefaults(["a", "b"]), { along: "a", plotted: ["b"] });
});

test("every keyword block starts with its keyword and ends a line", () => {
  for (const [keyword, block] of Object.entries(KEYWORDS)) {
    assert.ok(block.endsWith("\n"), keyword);
    assert.ok(block.startsWith(keyword) || (keyword === "KINETICS" && block.startsWith("RATES")), keyword);
  }
});
