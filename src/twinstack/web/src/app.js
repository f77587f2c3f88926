// The TwinStack page: log in at auth, the projects (create, rename, share, delete), an
// administrator's view of users, groups, nodes and sessions, and an opened project
// (project.js). Every call is the platform's public API, the one the Python client uses.
// Bundled with three.js by esbuild.
import { call, callAuth, state } from "./api.js";
import { $, button, tableRow } from "./dom.js";
import { ProjectView } from "./project.js";

const INFO_SHOWN_MS = 8000;  // errors stay until the next message; news goes by itself

function say(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = !text;
  clearTimeout(say.fading);
  if (kind === "info") say.fading = setTimeout(() => { message.hidden = true; }, INFO_SHOWN_MS);
}

function show(view) {
  const signedIn = view !== "login";
  $("login").hidden = signedIn;
  $("projects").hidden = view !== "projects";
  $("project").hidden = view !== "project";
  $("admin").hidden = view !== "projects" || !state.admin;
  $("logout").hidden = !signedIn;
  $("who").hidden = !signedIn;
  $("who").textContent = signedIn ? state.user : "";
  if (!signedIn) $("login").elements.user.focus();
}

function forget() {
  state.token = state.user = null;
  state.admin = false;
  sessionStorage.removeItem("twinstack.token");
  sessionStorage.removeItem("twinstack.user");
}

function leaveProject() {
  state.view?.close();
  state.view = null;
}

// A refused token (expired, revoked, logged out elsewhere) sends the user back to log in; any
// other error is said as the platform said it.
async function guarded(work) {
  try {
    return await work();
  } catch (err) {
    if (err.status === 401 && state.token) {
      leaveProject();
      forget();
      show("login");
      say("Your login has expired or was revoked: log in again.");
    } else {
      say(err.message);
    }
    return undefined;
  }
}

// --- projects --------------------------------------------------------------------------------

async function showProjects() {
  const me = await guarded(() => callAuth("whoami"));
  const listed = me && await guarded(() => call("", "list_projects"));
  if (!listed) return;
  state.admin = me.admin;
  $("project-rows").replaceChildren(...listed.projects.map(projectRow));
  $("no-projects").hidden = listed.projects.length > 0;
  show("projects");
  if (state.admin) await showAdmin(listed.projects);
}

function projectRow(p) {
  const actions = document.createElement("span");
  actions.className = "actions";
  const labelled = (text, onClick) => {
    const b = button(text, onClick);
    b.setAttribute("aria-label", `${text} ${p.name}`);
    return b;
  };
  actions.append(labelled("Open", () => openProject(p)));
  if (p.role === "owner") {
    actions.append(labelled("Rename", () => ask("rename", p)),
                   labelled("Share", () => ask("share", p)),
                   labelled("Delete", () => ask("delete", p)));
  }
  const row = tableRow([p.name, p.session_type, p.owner, p.role, actions]);
  row.dataset.id = p.id;
  return row;
}

// One dialog per question (rename, share, delete), each a form that answers it.
function ask(kind, project) {
  const dialog = $(`${kind}-dialog`);
  dialog.dataset.project = project.id;
  dialog.querySelector(".project-name").textContent = project.name;
  const form = dialog.querySelector("form");
  form.reset();
  if (form.elements.name) form.elements.name.value = project.name;
  dialog.showModal();
}

const ANSWERS = {
  rename: (project, f) => call("", "rename_project", { project, name: f.name.value }),
  share: (project, f) => call("", "share_project", {
    project, role: f.role.value, [f.kind.value]: f.who.value.trim() }),
  delete: (project) => call("", "delete_project", { project }),
};

for (const [kind, answer] of Object.entries(ANSWERS)) {
  const dialog = $(`${kind}-dialog`);
  dialog.querySelector("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (event.submitter?.value === "cancel") {
      dialog.close();
      return;
    }
    const done = await guarded(() => answer(dialog.dataset.project, event.target.elements));
    dialog.close();
    if (done) say(`Done: ${kind} ${dialog.querySelector(".project-name").textContent}.`, "info");
    await showProjects();
  });
}

async function showAdmin(projects) {
  const [accounts, nodes, sessions] = await Promise.all([
    guarded(() => callAuth("accounts")), guarded(() => call("", "list_nodes")),
    guarded(() => call("", "list_sessions"))]);
  if (!accounts || !nodes || !sessions) return;
  $("user-rows").replaceChildren(...accounts.users.map((u) => tableRow(
    [u.name, u.admin ? "admin" : "", u.disabled ? "disabled" : "active"])));
  $("group-rows").replaceChildren(...accounts.groups.map((g) => tableRow(
    [g.name, g.members.join(", ")])));
  if (!accounts.groups.length) $("group-rows").append(tableRow(["no groups yet", ""]));
  const time = (iso) => new Date(iso).toLocaleTimeString();
  $("node-rows").replaceChildren(...nodes.nodes.map((n) => tableRow(
    [n.name, n.state, `${n.live_sessions} / ${n.capacity}`, time(n.last_heartbeat)])));
  const names = new Map(projects.map((p) => [p.id, p.name]));
  $("session-rows").replaceChildren(...sessions.sessions.filter(
    (s) => !["closed", "failed", "lost"].includes(s.state)).map((s) => tableRow(
    [s.id.slice(0, 8), names.get(s.project) || s.project.slice(0, 8), s.state, s.lss || "",
     s.services.join(", ")])));
}

async function openProject(project) {
  say("");
  const record = await guarded(() => call("", "open_session", { project: project.id }));
  if (!record) return;
  leaveProject();
  state.view = new ProjectView({ project, record, say, guarded });
  show("project");
  state.view.open();
}

// --- the project view's controls (static elements; the view behind them changes) ------------

const view = () => state.view;
const onSubmit = (id, work) => $(id).addEventListener("submit", (event) => {
  event.preventDefault();
  if (view()) work(view(), event.target);
});

onSubmit("feature-form", (v, form) => v.addFeature(form));
onSubmit("property-form", () => undefined);  // its Apply button does the work
onSubmit("cartesian-form", (v) => v.mesh("cartesian"));
onSubmit("tet-form", (v) => v.mesh("tetrahedral"));
onSubmit("import-form", (v, form) => v.importFile(form));
onSubmit("export-form", (v, form) => v.exportShape(form.elements.format.value));
onSubmit("material-form", (v, form) => v.createMaterial(form));
onSubmit("kriging-form", (v, form) => v.krige(form));
onSubmit("solver-form", (v, form) => v.solver.setup(form));
onSubmit("solver-run", (v, form) => v.solver.run(form));
$("solver-cancel").addEventListener("click", () => view()?.solver.jobs.cancel());
const geochemistry = () => view()?.geochemistry;
onSubmit("geochem-database", (v, form) => v.geochemistry.uploadDatabase(form));
onSubmit("geochem-samples", (v, form) => v.geochemistry.speciate(form));
$("geochem-samples").elements.file.addEventListener("change", (event) => geochemistry()?.preview(event.target.form));
onSubmit("geochem-run", (v, form) => v.geochemistry.run(form));
$("geochem-run").elements.keyword.addEventListener("change", (event) => geochemistry()?.insertKeyword(event.target));
for (const type of ["click", "keyup"]) {
  $("geochem-run").elements.input.addEventListener(type, () => geochemistry()?.showCursor());
}
$("geochem-cancel").addEventListener("click", () => geochemistry()?.jobs.cancel());
$("geochem-results").elements.table.addEventListener("change", (event) => geochemistry()?.showTable(view().byId(event.target.value)));
$("geochem-plot").addEventListener("change", () => geochemistry()?.plot());
onSubmit("geochem-map-form", (v) => v.geochemistry.krige());
onSubmit("label-form", async (v, form) => {
  if (await v.call("model", "label", { name: form.elements.label.value.trim() })) form.reset();
});
$("feature-form").elements.feature.addEventListener("change", () => view()?.showFeatureParameters());
$("undo").addEventListener("click", () => view()?.call("model", "undo"));
$("redo").addEventListener("click", () => view()?.call("model", "redo"));
$("fit").addEventListener("click", () => view()?.fit());
$("section-axis").addEventListener("change", () => view()?.applySection());
$("section-at").addEventListener("input", () => view()?.applySection(false));
$("section-at").addEventListener("change", () => view()?.applySection());
for (const tab of document.querySelectorAll("#tabs [role=tab]")) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll("#tabs [role=tab]")) {
      other.setAttribute("aria-selected", String(other === tab));
      $(other.getAttribute("aria-controls")).hidden = other !== tab;
    }
  });
}
document.addEventListener("keydown", (event) => {  // z / y with Ctrl: undo, redo
  if (!view() || !(event.ctrlKey || event.metaKey) || event.target.closest("input, select")) return;
  if (event.key === "z" && !$("undo").disabled) { event.preventDefault(); $("undo").click(); }
  if (event.key === "y" && !$("redo").disabled) { event.preventDefault(); $("redo").click(); }
});

$("leave").addEventListener("click", async () => {
  leaveProject();
  await showProjects();
});

// --- login and logout ------------------------------------------------------------------------

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  say("");
  const reply = await guarded(() => callAuth("login",
    { user: form.elements.user.value, password: form.elements.password.value }));
  form.elements.password.value = "";
  if (!reply) return;
  state.token = reply.token;
  state.user = reply.user.name || form.elements.user.value;
  sessionStorage.setItem("twinstack.token", state.token);
  sessionStorage.setItem("twinstack.user", state.user);
  await showProjects();
});

$("create").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const made = await guarded(() => call("", "create_project",
    { name: form.elements.name.value, session_type: form.elements.session_type.value }));
  if (!made) return;
  form.elements.name.value = "";
  say(`Project ${made.name} created.`, "info");
  await showProjects();
});

$("logout").addEventListener("click", async () => {
  leaveProject();
  await callAuth("logout").catch(() => undefined);  // gone already is fine
  forget();
  show("login");
  say("You are logged out.", "info");
});

async function start() {
  try {
    state.info = await call("", "info");
  } catch (err) {
    say(err.message);
    return;
  }
  $("create").elements.session_type.replaceChildren(
    ...Object.keys(state.info.session_types).map((name) => new Option(name, name)));
  if (state.token) await showProjects(); else show("login");
}

start();
