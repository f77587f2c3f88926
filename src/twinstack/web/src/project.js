// An opened project: its session starting, then the entity tree, the 3D view, the toolbar of
// features, the property panel, meshing, files, materials, the solver, geochemistry, kriging,
// the history graph, the log and the session's facts. Every change anyone makes comes back as
// a `model_changed` event on the session's socket, and the page redraws from the model then:
// what another user does shows the same way as what this one does.
import { PlatformError, SessionSocket, call, callAuth, fetchBlob, state } from "./api.js";
import { GeochemistryPanel } from "./geochemistry.js";
import { drawHistory } from "./history.js";
import { krigingMap, parsePoints } from "./kriging.js";
import { SolverPanel } from "./solver.js";
import { Viewer } from "./viewer.js";
import { $, button, definitionList, parseValue, shownValue } from "./dom.js";

const STATUS = { spawning: "starting", service_ready: "ready", restarting: "restarting",
                 restarted: "ready" };
const LOG_LINES = 500;
let sharedViewer = null;  // made on the first drawing, kept for every project opened after

export class ProjectView {
  constructor({ project, record, say, guarded }) {
    this.project = project;
    this.record = record;
    this.say = say;
    this.guarded = guarded;
    this.entities = [];
    this.selected = [];  // entity ids, in the order picked (a boolean's first and second)
    this.shown = new Map();  // id -> drawn or not, where the user chose
    this.drawnKey = null;
    this.restarts = {};
    this.services = state.info.session_types[project.session_type] || [];
    this.reconnects = 0;
    this.refreshing = Promise.resolve();
    this.solver = new SolverPanel(this);
    this.geochemistry = this.services.includes("phreeqc") ? new GeochemistryPanel(this) : null;
    this.reloadWaiting = false;
    this.meshShown = null;  // a mesh drawn in the view instead of the shapes
  }

  // --- the session ---------------------------------------------------------------------------

  open() {
    $("project-name").textContent = this.project.name;
    $("role").textContent = this.project.role;
    const viewer = this.project.role === "viewer";
    for (const fieldset of document.querySelectorAll("#project fieldset[data-edit]")) {
      fieldset.disabled = viewer;
    }
    $("project").dataset.role = this.project.role;
    $("project").dataset.reconnects = "0";
    $("workspace").hidden = true;
    $("link-state").hidden = true;
    // only the panels this session type has services for, and its first tab open
    for (const part of document.querySelectorAll("#project [data-needs]")) {
      part.hidden = !this.services.includes(part.dataset.needs);
    }
    document.querySelector("#tabs [role=tab]:not([hidden])")?.click();
    $("workspace").classList.toggle("no-model", !this.services.includes("model"));
    for (const id of ["tree", "log", "mesh-stats", "property-form", "solver-results",
                      "solver-status", "geochem-samples-table", "geochem-status",
                      "geochem-facts", "geochem-table"]) $(id).replaceChildren();
    $("history-graph").replaceChildren();
    $("session-state").textContent = `Session ${this.record.state}…`;
    this.showServices();
    this.showFacts();
    this.socket = new SessionSocket(this.record.id, {
      onEvent: (event) => this.onEvent(event),
      onLink: (link, reason, attempts) => this.onLink(link, reason, attempts),
    });
  }

  close() {
    this.socket?.close();  // the session goes on for the others
    if (this.viewer) {
      this.viewer.onPick = () => undefined;
      this.viewer.clear();
    }
  }

  call(service, action, params = {}) {
    return this.guarded(() => this.socket.call(service, action, params));
  }

  blob(digest) {
    return this.guarded(() => fetchBlob(this.record.id, digest));
  }

  onLink(link, reason, attempts) {
    const shown = $("link-state");
    $("project").dataset.link = link;
    if (link === "connected") {
      if (!shown.hidden) {
        this.reconnects += 1;
        $("project").dataset.reconnects = String(this.reconnects);
        this.log("page", "info", "reconnected to the session");
      }
      shown.hidden = true;
      return;
    }
    if (shown.hidden) this.log("page", "warning", `connection lost (${reason})`);
    shown.hidden = false;
    shown.textContent = link === "closed" ? `Disconnected: ${reason}`
      : `Connection lost (${reason}): reconnecting…`;
    if (link === "closed" || attempts === 3) {  // is it the token? then back to the login
      this.guarded(() => callAuth("whoami"));
    }
  }

  onEvent(event) {
    if (event.type === "log") {
      this.log(event.service, event.level, event.msg, event.ts);
      return;
    }
    if (STATUS[event.type] && event.service) {
      this.markService(event.service, STATUS[event.type]);
      if (event.type === "restarting") {
        this.restarts[event.service] = (this.restarts[event.service] || 0) + 1;
        this.log(event.service, "warning", `restarting${event.reason ? `: ${event.reason}` : ""}`);
        this.showFacts();
      }
    }
    if (event.type === "queued") {
      $("session-state").textContent =
        `Waiting for a free session node: place ${event.place} in the queue`;
    }
    if (event.type === "job") {
      (event.service === "phreeqc" ? this.geochemistry : this.solver)?.jobs.onJob(event);
    }
    if (event.type === "model_changed") {
      const described = event.head?.state?.description || "";
      this.log("model", "info", `${event.author}: ${event.operation} ${described}`);
      this.refresh();
    } else if (event.type === "model_head" && this.ready) {
      this.refresh();  // after a reconnect: where the model stands now
    }
    if (event.state) this.onState(event);
  }

  onState(event) {
    this.record.state = event.state;
    if (event.state === "ready") {
      for (const name of event.services || []) this.markService(name, "ready");
      $("session-state").textContent = "Session ready";
      $("workspace").hidden = false;
      this.ready = true;
      this.refresh();
    } else if (["failed", "closed", "lost"].includes(event.state)) {
      $("session-state").textContent =
        `Session ${event.state}${event.reason ? `: ${event.reason}` : ""}`;
    } else if (event.state !== "queued") {
      $("session-state").textContent = `Session ${event.state}…`;
    }
    this.showFacts();
  }

  showServices() {
    $("services").replaceChildren(...this.services.map((name) => {
      const item = document.createElement("li");
      item.dataset.service = name;
      item.dataset.status = "waiting";
      item.textContent = `${name}: waiting`;
      return item;
    }));
  }

  markService(name, status) {
    const item = $("services").querySelector(`[data-service="${CSS.escape(name)}"]`);
    if (!item) return;
    item.dataset.status = status;
    item.textContent = `${name}: ${status}`;
  }

  showFacts() {
    const restarts = this.services.map((s) => `${s} ×${this.restarts[s] || 0}`).join(", ");
    $("session-facts").replaceChildren(...definitionList({
      Session: this.record.id, State: this.record.state, Node: this.record.lss || "not placed yet",
      Services: this.services.join(", "), Restarts: restarts,
    }));
  }

  log(service, level, message, ts = null) {
    const line = document.createElement("li");
    line.className = level;
    const time = (ts ? new Date(ts * 1000) : new Date()).toLocaleTimeString();
    line.textContent = `${time} ${service} ${level}: ${message}`;
    const list = $("log");
    list.append(line);
    while (list.childElementCount > LOG_LINES) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  // --- the model: read it all after every change ---------------------------------------------

  // One reload at a time, and at most one waiting: a burst of events costs two reads.
  refresh() {
    if (this.reloadWaiting) return this.refreshing;
    this.reloadWaiting = true;
    this.refreshing = this.refreshing.then(() => {
      this.reloadWaiting = false;
      this.meshShown = null;  // a mesh drawn in the view instead of the shapes
      return this.reload();
    }).catch(() => undefined);
    return this.refreshing;
  }

  async reload() {
    if (!this.services.includes("model")) return;
    const [listed, graph] = await Promise.all([this.call("model", "entities"),
                                               this.call("model", "history")]);
    if (!listed || !graph) return;
    this.entities = listed.entities;
    const known = new Set(this.entities.map((e) => e.id));
    this.selected = this.selected.filter((id) => known.has(id));
    if (!this.features && this.services.includes("modeling")) await this.loadFeatures();
    this.showTree();
    this.showInputs(true);
    this.showProperties();
    this.suggestMeshSizes();
    if (this.services.includes("fit-td")) this.solver.show(this.entities);
    await this.geochemistry?.show(this.entities);
    drawHistory($("history-graph"), graph, (s) => this.checkout(s));
    $("undo").disabled = !graph.head || !graph.states.find((s) => s.id === graph.head)?.parent_id;
    $("redo").disabled = graph.head === graph.tip;
    $("project").dataset.state = String(graph.head ?? "");
    await this.draw();
  }

  byId(id) { return this.entities.find((e) => e.id === id); }

  solids() { return this.entities.filter((e) => e.kind === "geometry"); }

  // A solid a later feature consumed (a boolean's operand) is not drawn unless the user asks.
  isShown(entity) {
    if (this.shown.has(entity.id)) return this.shown.get(entity.id);
    return !this.solids().some((e) => (e.properties.inputs || []).includes(entity.id));
  }

  // What the view shows: the shown solids (a GLB scene), or one mesh (its surfaces, cut by
  // the section plane on the server so the cut shows whole elements).
  drawing() {
    const mesh = this.byId(this.meshShown);
    if (mesh) {
      const clip = this.clipPlane(mesh.properties.bounds);
      return { key: `mesh:${mesh.id}:${mesh.version}:${JSON.stringify(clip)}`,
               action: "mesh_view", params: clip ? { id: mesh.id, clip } : { id: mesh.id } };
    }
    this.meshShown = null;
    const drawn = this.drawnSolids();
    return { key: drawn.map((e) => `${e.id}:${e.version}`).join(","), action: "scene",
             params: drawn.length ? { ids: drawn.map((e) => e.id) } : null };
  }

  async draw() {
    if (!this.services.includes("modeling")) return;  // the view draws shapes and their meshes
    const { key, action, params } = this.drawing();
    if (key === this.drawnKey) return;
    this.drawnKey = key;
    if (!this.viewer) {
      sharedViewer ??= new Viewer($("view"));
      this.viewer = sharedViewer;
      this.viewer.onPick = (name, add) => this.pick(name, add);
    }
    this.applySection(false);
    if (!params) {
      this.viewer.clear();
      $("view").dataset.parts = "";
      $("view").dataset.drawn = key;
      return;
    }
    const made = await this.call("visualization", action, params);
    const glb = made && key === this.drawnKey && await this.blob(made.blob);
    if (key !== this.drawnKey) return;  // a newer draw is under way
    if (!glb) {
      this.drawnKey = null;  // it failed (and said why): the next refresh draws it again
      return;
    }
    await this.viewer.show(glb);
    this.viewer.select(this.selected.map((id) => this.byId(id)?.name));
    $("view").dataset.parts = this.viewer.parts().sort().join(",");
    $("view").dataset.drawn = key;
  }

  showMesh(id) {
    this.meshShown = id;
    this.showProperties(true);
    this.draw();
  }

  fit() { this.viewer?.fit(); }

  sectionChoice() {
    return { axis: $("section-axis").value || null, fraction: Number($("section-at").value) };
  }

  // The section plane cuts solids in the browser as the slider moves; a mesh is cut again on
  // the server when the slider is let go (`redraw`).
  applySection(redraw = true) {
    const { axis, fraction } = this.sectionChoice();
    this.viewer?.setSection(this.meshShown ? null : axis, fraction);
    if (redraw && this.meshShown) this.draw();
  }

  clipPlane(bounds) {
    const { axis, fraction } = this.sectionChoice();
    if (!axis || !bounds) return null;
    const i = "xyz".indexOf(axis);
    const origin = bounds[0].map((lo, k) => lo + (k === i ? fraction : 0.5) * (bounds[1][k] - lo));
    return { origin, normal: [0, 1, 2].map((k) => (k === i ? 1 : 0)) };
  }

  // --- the entity tree and the selection ----------------------------------------------------

  showTree() {
    const groups = [["Shapes", "geometry"], ["Materials", "material"], ["Meshes", "mesh"]];
    const other = this.entities.filter((e) => !groups.some(([, kind]) => kind === e.kind));
    const items = [];
    for (const [title, kind] of [...groups, ["Other", null]]) {
      const members = kind ? this.entities.filter((e) => e.kind === kind) : other;
      if (!members.length) continue;
      const heading = document.createElement("li");
      heading.className = "group";
      heading.textContent = title;
      items.push(heading, ...members.map((e) => this.treeItem(e)));
    }
    $("tree").replaceChildren(...items);
  }

  treeItem(entity) {
    const item = document.createElement("li");
    item.dataset.id = entity.id;
    item.setAttribute("aria-selected", String(this.selected.includes(entity.id)));
    if (entity.kind === "geometry") {
      const shown = document.createElement("input");
      shown.type = "checkbox";
      shown.checked = this.isShown(entity);
      shown.setAttribute("aria-label", `Show ${entity.name}`);
      shown.addEventListener("change", () => {
        this.shown.set(entity.id, shown.checked);
        this.draw();
      });
      item.append(shown);
    }
    const name = button(entity.name, (e) => this.pickEntity(entity.id, e.ctrlKey || e.shiftKey));
    name.className = "entity";
    name.title = entity.properties.feature ? `${entity.kind}: ${entity.properties.feature}`
      : entity.kind;
    item.append(name);
    return item;
  }

  pick(name, add) {
    const entity = this.solids().find((e) => e.name === name);
    if (entity) this.pickEntity(entity.id, add);
    else if (!add) this.setSelection([]);
  }

  pickEntity(id, add) {
    if (!add) this.setSelection([id]);
    else if (this.selected.includes(id)) this.setSelection(this.selected.filter((s) => s !== id));
    else this.setSelection([...this.selected, id].slice(-2));
  }

  setSelection(ids) {
    this.selected = ids;
    for (const item of $("tree").querySelectorAll("li[data-id]")) {
      item.setAttribute("aria-selected", String(ids.includes(item.dataset.id)));
    }
    this.viewer?.select(ids.map((id) => this.byId(id)?.name));
    this.showInputs();
    this.showProperties();
  }

  // --- the toolbar: any feature of the modeling service, its inputs from the selection ------

  async loadFeatures() {
    const found = await this.call("modeling", "features");
    if (!found) return;
    this.features = found.features;
    this.materials = found.materials;
    const select = $("feature-form").elements.feature;
    const groups = { Primitives: 0, "Transforms and fillets": 1, Booleans: 2 };
    select.replaceChildren(...Object.entries(groups).map(([title, inputs]) => {
      const group = document.createElement("optgroup");
      group.label = title;
      group.append(...Object.entries(this.features).filter(([, f]) => f.inputs === inputs)
        .map(([name]) => new Option(name, name)));
      return group;
    }));
    this.showFeatureParameters();
  }

  showFeatureParameters() {
    const feature = this.features?.[$("feature-form").elements.feature.value];
    if (!feature) return;
    $("feature-parameters").replaceChildren(...Object.entries(feature.parameters).map(
      ([name, value]) => parameterField(name, value, value === null)));
    this.showInputs();
  }

  showInputs(keepChoice = false) {
    const feature = this.features?.[$("feature-form").elements.feature.value];
    const count = feature ? feature.inputs : 0;
    const solids = this.solids();
    // what the user chose stays (a redraw after someone's change must not undo it); else the
    // selected shapes in the order picked, then the others
    const picked = this.selected.filter((id) => this.byId(id)?.kind === "geometry");
    const chosen = keepChoice ? [...$("feature-inputs").querySelectorAll("select")]
      .map((s) => s.value).filter((id) => this.byId(id)) : [];
    const defaults = [...(chosen.length === count ? chosen : picked),
                      ...solids.map((e) => e.id).filter((id) => !picked.includes(id))];
    $("feature-inputs").replaceChildren(...["First shape", "Second shape"].slice(0, count)
      .map((title, i) => {
        const select = document.createElement("select");
        select.name = `input${i}`;
        select.required = true;
        select.append(...solids.map((e) => new Option(e.name, e.id)));
        select.value = defaults[i] ?? "";
        const label = document.createElement("label");
        label.append(title, select);
        return label;
      }));
  }

  async addFeature(form) {
    const feature = form.elements.feature.value;
    const inputs = [...form.querySelectorAll("#feature-inputs select")].map((s) => s.value);
    const parameters = readParameters($("feature-parameters"));
    if (!parameters) return;
    const name = form.elements.name.value.trim() || undefined;
    const made = await this.call("modeling", "create", { feature, inputs, parameters, name });
    if (!made) return;
    if (form.elements.name.value.trim() === name) form.elements.name.value = "";  // not the next
    this.selected = [made.id];
    this.say(`${made.name} added.`, "info");
  }

  // --- the property panel --------------------------------------------------------------------

  showProperties(force = false) {
    const form = $("property-form");
    const entity = this.byId(this.selected[this.selected.length - 1]);
    if (!entity) {
      form.replaceChildren(Object.assign(document.createElement("p"),
        { textContent: "Select an entity in the tree or the view." }));
      return;
    }
    if (!force && form.dataset.id === entity.id && form.dataset.version === String(entity.version)
        && form.contains(document.activeElement)) return;  // being typed in: keep it
    form.dataset.id = entity.id;
    form.dataset.version = String(entity.version);
    const fields = [];
    const name = labelled("Name", Object.assign(document.createElement("input"),
      { name: "entity-name", value: entity.name, required: true }));
    fields.push(name);
    const props = entity.properties;
    if (entity.kind === "geometry" && props.parameters && props.feature !== "import") {
      fields.push(...Object.entries(props.parameters).map(
        ([key, value]) => parameterField(key, value, true)));
    }
    if (entity.kind === "geometry") fields.push(this.materialField(props.material));
    const apply = button("Apply", () => this.applyProperties(entity));
    apply.type = "submit";
    const facts = definitionList(entityFacts(entity));
    const extra = entity.kind === "mesh" ? this.meshPanel(entity) : [];
    if (entity.kind === "geometry" && props.edges) extra.push(this.edgeList(entity));
    const fieldset = document.createElement("fieldset");
    fieldset.dataset.edit = "";
    fieldset.disabled = this.project.role === "viewer";
    fieldset.append(...fields, apply);
    form.replaceChildren(fieldset, Object.assign(document.createElement("dl"),
      { className: "facts" }), ...extra);
    form.querySelector("dl").append(...facts);
  }

  // A solid's edges as fillet and chamfer number them (index, length, midpoint), read from
  // the modeling service when the list is first opened.
  edgeList(entity) {
    const details = document.createElement("details");
    details.className = "edges";
    details.append(Object.assign(document.createElement("summary"),
      { textContent: `Edges (${entity.properties.edges}): their numbers for fillet, chamfer` }));
    details.addEventListener("toggle", async () => {
      if (!details.open || details.querySelector("ol")) return;
      const found = await this.call("modeling", "properties", { id: entity.id });
      if (!found) return;
      const list = Object.assign(document.createElement("ol"), { start: 0 });
      list.append(...found.edges.map((e) => Object.assign(document.createElement("li"), {
        textContent: `length ${round(e.length)}`
          + (e.midpoint ? ` at (${e.midpoint.map(round).join(", ")})` : "") })));
      details.append(list);
    });
    return details;
  }

  // A mesh's picture (a tetrahedral mesh's quality histogram, a Cartesian mesh's fill
  // fraction through its middle) and a button that draws it in the view.
  meshPanel(mesh) {
    const drawn = this.meshShown === mesh.id;
    const toggle = button(drawn ? "Draw the shapes" : "Draw the mesh in the view",
                          () => this.showMesh(drawn ? null : mesh.id));
    const picture = Object.assign(document.createElement("img"), {
      className: "mesh-picture", alt: mesh.properties.tets !== undefined
        ? "the histogram of the elements' radius ratios" : "the fill fraction through z = middle" });
    const request = mesh.properties.tets !== undefined ? ["plot", { id: mesh.id }]
      : ["slice", { id: mesh.id, field: "fill", axis: "z" }];
    this.call("visualization", ...request)
      .then((made) => made && this.blob(made.blob))
      .then((png) => {
        if (!png) return;
        picture.src = URL.createObjectURL(new Blob([png], { type: "image/png" }));
        picture.addEventListener("load", () => URL.revokeObjectURL(picture.src), { once: true });
      });
    return [toggle, picture];
  }

  materialField(current) {
    const select = document.createElement("select");
    select.name = "material";
    select.append(new Option("none", ""));
    const own = this.entities.filter((e) => e.kind === "material");
    select.append(...own.map((m) => new Option(m.name, m.id)));
    const library = Object.keys(this.materials || {}).filter((n) => !own.some((m) => m.name === n));
    select.append(...library.map((n) => new Option(`${n} (library)`, n)));
    select.value = current || "";
    return labelled("Material", select);
  }

  async applyProperties(entity) {
    const form = $("property-form");
    const name = form.elements["entity-name"].value.trim();
    if (name && name !== entity.name) {
      if (!await this.call("model", "set", { id: entity.id, name })) return;
    }
    const parameters = readParameters(form, Object.keys(entity.properties.parameters || {}));
    if (!parameters) return;
    const changed = Object.fromEntries(Object.entries(parameters).filter(
      ([key, value]) => JSON.stringify(value) !== JSON.stringify(entity.properties.parameters[key])));
    if (Object.keys(changed).length) {
      const done = await this.call("modeling", "set_parameters",
                                   { id: entity.id, parameters: changed });
      if (done) this.say(`${entity.name} changed; ${done.rebuilt.length} shape(s) rebuilt.`, "info");
    }
    const material = form.elements.material?.value;
    if (material && material !== (entity.properties.material || "")) {
      await this.call("modeling", "assign_material", { ids: [entity.id], material });
    }
  }

  // --- history --------------------------------------------------------------------------------

  async checkout(s) {
    if (this.project.role === "viewer") return;
    await this.call("model", "checkout", { state: s.id });
  }

  // --- meshing ----------------------------------------------------------------------------------

  suggestMeshSizes() {
    const boxes = this.drawnSolids().map((e) => e.properties.bbox).filter(Boolean);
    if (!boxes.length) return;
    const size = Math.max(...[0, 1, 2].map((i) => Math.max(...boxes.map((b) => b[1][i]))
      - Math.min(...boxes.map((b) => b[0][i]))));
    for (const [form, field, divisions] of [["cartesian-form", "cell", 24], ["tet-form", "maxh", 6]]) {
      const input = $(form).elements[field];
      input.placeholder = String(Number((size / divisions).toPrecision(2)));
      if (!input.value) input.value = input.placeholder;
    }
  }

  drawnSolids() { return this.solids().filter((e) => this.isShown(e)); }

  async mesh(kind) {
    const solids = this.drawnSolids().map((e) => e.id);
    if (!solids.length) {
      this.say("Nothing to mesh: show at least one shape.");
      return;
    }
    $("mesh-stats").replaceChildren(...definitionList({ Meshing: `${kind}…` }));
    const made = kind === "cartesian"
      ? await this.call("cartesian-mesh", "create", {
        solids, cell: Number($("cartesian-form").elements.cell.value),
        padding: Number($("cartesian-form").elements.padding.value || 0) })
      : await this.call("tet-mesh", "create", {
        solids, maxh: Number($("tet-form").elements.maxh.value) });
    $("mesh-stats").replaceChildren(...definitionList(made ? meshFacts(made) : {}));
    $("mesh-stats").dataset.mesher = made ? kind : "";
  }

  // --- files and materials -------------------------------------------------------------------

  async importFile(form) {
    const file = form.elements.file.files[0];
    if (!file) return;
    const format = { stp: "step", step: "step", brep: "brep", stl: "stl", obj: "obj" }[
      file.name.split(".").pop().toLowerCase()];
    if (!format) {
      this.say(`${file.name}: import takes STEP (.step, .stp), BREP, STL or OBJ files`);
      return;
    }
    const data = await base64(file);
    const name = form.elements.name.value.trim() || file.name.replace(/\.[^.]+$/, "");
    if (await this.call("modeling", "import_file", { name, format, data })) {
      this.say(`${file.name} imported as ${name}.`, "info");
    }
  }

  async exportShape(format) {
    const entity = this.byId(this.selected[this.selected.length - 1]);
    if (!entity || entity.kind !== "geometry") {
      this.say("Select a shape to export.");
      return;
    }
    const file = await this.call("modeling", "export", { id: entity.id, format });
    if (!file) return;
    const data = await this.blob(file.blob);
    if (!data) return;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([data]));
    link.download = `${entity.name}.${format}`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  async createMaterial(form) {
    const f = form.elements;
    const made = await this.call("modeling", "create_material", {
      name: f.name.value.trim(), epsilon_r: Number(f.epsilon_r.value), mu_r: Number(f.mu_r.value),
      sigma: Number(f.sigma.value), pec: f.pec.checked });
    if (made) this.say(`Material ${f.name.value} created.`, "info");
  }

  // --- kriging (data-analysis projects) -----------------------------------------------------

  async krige(form) {
    const file = form.elements.points.files[0];
    if (!file) return;
    let points;
    try {
      points = parsePoints(await file.text());
    } catch (err) {
      this.say(`${file.name}: ${err.message}`);
      return;
    }
    const n = Number(form.elements.n.value);
    const grid = { x: [...points.xRange, n], y: [...points.yRange, n] };
    const result = await this.call("kriging", "interpolate",
                                   { points: points.xy, values: points.values, grid });
    if (!result) return;
    const { lo, hi } = krigingMap($("kriging-map"), result.estimates, points);
    $("kriging-map").dataset.points = String(points.values.length);
    this.say(`${points.values.length} points kriged onto a ${n} × ${n} grid: values from `
             + `${lo.toPrecision(3)} to ${hi.toPrecision(3)} (${result.variogram.model} `
             + "variogram).", "info");
  }
}

// --- small pieces -----------------------------------------------------------------------------

function labelled(title, control) {
  const label = document.createElement("label");
  label.append(title, control);
  return label;
}

function parameterField(name, value, required) {
  const input = document.createElement("input");
  input.name = name;
  input.dataset.parameter = name;
  input.value = value === null ? "" : shownValue(value);
  input.required = required;
  input.spellcheck = false;
  return labelled(name, input);
}

// The parameter fields' values (numbers, lists as "1, 2, 3", "all"), or null after telling
// the browser which one is wrong.
function readParameters(container, names = null) {
  const parameters = {};
  for (const input of container.querySelectorAll("input[data-parameter]")) {
    if (names && !names.includes(input.name)) continue;
    if (input.value.trim() === "" && !input.required) continue;
    const value = parseValue(input.value);
    if (value === undefined) {
      input.setCustomValidity("a number, a list of numbers (1, 2, 3) or all");
      input.reportValidity();
      return null;
    }
    input.setCustomValidity("");
    parameters[input.name] = value;
  }
  return parameters;
}

const round = (v) => (typeof v === "number" ? Number(v.toPrecision(6)) : v);

function entityFacts(entity) {
  const p = entity.properties;
  const facts = { Kind: entity.kind, Version: entity.version };
  if (p.feature) facts.Feature = p.feature;
  if (p.volume !== undefined) facts.Volume = round(p.volume);
  if (p.area !== undefined) facts.Area = round(p.area);
  if (p.bbox) facts["Bounding box"] = p.bbox.map((c) => c.map(round).join(", ")).join(" → ");
  if (entity.kind === "mesh") Object.assign(facts, meshFacts(p));
  if (entity.kind === "material") {
    for (const key of ["epsilon_r", "mu_r", "sigma", "pec"]) facts[key] = String(p[key]);
  }
  return facts;
}

function meshFacts(mesh) {
  if (mesh.tets !== undefined) {
    const q = mesh.quality || {};
    return { Mesher: "tetrahedral", Tetrahedra: mesh.tets.toLocaleString("en"),
             Points: mesh.points.toLocaleString("en"), Volume: round(mesh.volume),
             "Min dihedral angle": `${round(q.min_dihedral_deg ?? q.min_dihedral)}°`,
             "Max dihedral angle": `${round(q.max_dihedral_deg ?? q.max_dihedral)}°`,
             Regions: (mesh.regions || []).map((r) => r.name).join(", ") };
  }
  return { Mesher: "cartesian", Grid: (mesh.shape || []).join(" × "),
           Cells: (mesh.cells ?? 0).toLocaleString("en"), Volume: round(mesh.volume),
           Materials: Object.keys(mesh.material_volumes || {}).join(", ") || "—" };
}

function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(new PlatformError(0, { message: `cannot read ${file.name}` }));
    reader.readAsDataURL(file);
  });
}
