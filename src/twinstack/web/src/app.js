// The TwinStack page: log in at auth, list and create projects at gss, open one (its session
// through the relay) and see its solids in 3D. Every call is the platform's public action API
// (POST /actions/NAME with a JSON body and a bearer token, or a message on the session's
// WebSocket), the same one the Python client uses. Bundled with three.js by esbuild.
import { Viewer } from "./viewer.js";

const state = { info: null, token: sessionStorage.getItem("twinstack.token"),
                user: sessionStorage.getItem("twinstack.user") };
const $ = (id) => document.getElementById(id);

class PlatformError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

async function call(base, action, params = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(`${base}/actions/${action}`,
                           { method: "POST", headers, body: JSON.stringify(params) });
  } catch (err) {
    throw new PlatformError(0, { message: `the platform cannot be reached (${err.message})` });
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new PlatformError(response.status, body.error || {});
  return body.result;
}

function say(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = !text;
}

function show(view) {
  const signedIn = view !== "login";
  $("login").hidden = signedIn;
  $("projects").hidden = view !== "projects";
  $("project").hidden = view !== "project";
  $("logout").hidden = !signedIn;
  $("who").hidden = !signedIn;
  $("who").textContent = signedIn ? state.user : "";
  if (!signedIn) $("login").elements.user.focus();
}

function forget() {
  state.token = state.user = null;
  sessionStorage.removeItem("twinstack.token");
  sessionStorage.removeItem("twinstack.user");
}

// A refused token (expired, revoked, logged out elsewhere) sends the user back to log in.
async function guarded(work) {
  try {
    return await work();
  } catch (err) {
    if (err.status === 401 && state.token) {
      forget();
      show("login");
      say("Your login has expired or was revoked: log in again.");
    } else {
      say(err.message);
    }
    return undefined;
  }
}

function tableRow(values) {
  const row = document.createElement("tr");
  for (const value of values) {
    const cell = document.createElement("td");
    cell.textContent = value;  // text, never HTML: names come from users
    row.append(cell);
  }
  return row;
}

async function showProjects() {
  const listed = await guarded(() => call("", "list_projects"));
  if (!listed) return;
  const rows = $("project-rows");
  rows.replaceChildren(...listed.projects.map((p) => {
    const row = tableRow([p.name, p.session_type, p.owner, p.role]);
    row.dataset.id = p.id;
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "Open";
    open.setAttribute("aria-label", `Open ${p.name}`);
    open.addEventListener("click", () => openProject(p));
    const cell = document.createElement("td");
    cell.append(open);
    row.append(cell);
    return row;
  }));
  $("no-projects").hidden = listed.projects.length > 0;
  show("projects");
}

// --- an opened project: its session's start, then its entities -----------------------------

const STATUS = { spawning: "starting", service_ready: "ready", restarting: "restarting",
                 restarted: "ready" };

class SessionSocket {
  // One WebSocket to the relay for the session: events arrive as {"event": ...}, calls are
  // {"id", "service", "action", "params"} answered by {"id", "result" | "error"}.
  constructor(sessionId, onEvent) {
    const url = `${state.info.relay_url.replace(/^https:/, "wss:")}/session?id=${sessionId}`;
    this.id = sessionId;
    this.socket = new WebSocket(url, [`twinstack.bearer.${state.token}`]);
    this.pending = new Map();
    this.next = 1;
    this.opened = new Promise((resolve, reject) => {
      this.socket.addEventListener("open", resolve, { once: true });
      this.socket.addEventListener("error", () => reject(new PlatformError(0,
        { message: "the session's connection could not be opened" })), { once: true });
    });
    this.socket.addEventListener("message", (message) => {
      const data = JSON.parse(message.data);
      if (data.event) onEvent(data.event);
      const waiting = this.pending.get(data.id);
      if (!waiting) return;
      this.pending.delete(data.id);
      if (data.error) waiting.reject(new PlatformError(data.error.status || 500, data.error));
      else waiting.resolve(data.result);
    });
    this.socket.addEventListener("close", (closed) => {
      for (const waiting of this.pending.values()) {
        waiting.reject(new PlatformError(0, { message: closed.reason || "the connection closed" }));
      }
      this.pending.clear();
    });
  }

  async call(service, action, params = {}) {
    await this.opened;
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, service, action, params }));
    });
  }

  close() { this.socket.close(1000, "left the project"); }
}

function showServices(names) {
  $("services").replaceChildren(...names.map((name) => {
    const item = document.createElement("li");
    item.dataset.service = name;
    item.dataset.status = "waiting";
    item.textContent = `${name}: waiting`;
    return item;
  }));
}

function markService(name, status) {
  const item = $("services").querySelector(`[data-service="${CSS.escape(name)}"]`);
  if (!item) return;
  item.dataset.status = status;
  item.textContent = `${name}: ${status}`;
}

// A blob (GLB, picture) by its hash, through the relay with the session's token.
async function fetchBlob(sessionId, hash) {
  const response = await fetch(`${state.info.relay_url}/blobs/${hash}?session=${sessionId}`,
                               { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new PlatformError(response.status, body.error || {});
  }
  return response.arrayBuffer();
}

async function drawSolids(session, solids) {
  if (!state.viewer) state.viewer = new Viewer($("view"));
  if (solids.length === 0) {
    state.viewer.clear();
    return;
  }
  const drawn = await guarded(async () => {
    const scene = await session.call("visualization", "scene", { ids: solids.map((e) => e.id) });
    await state.viewer.show(await fetchBlob(session.id, scene.blob));
    return scene;
  });
  if (drawn) $("view").dataset.parts = state.viewer.parts().join(",");
}

async function showEntities() {
  const session = state.session;
  const listed = await guarded(() => session.call("model", "entities"));
  if (!listed) return;
  $("entity-rows").replaceChildren(...listed.entities.map((e) => tableRow([e.name, e.kind])));
  $("entities").hidden = false;
  // The solids a later feature consumed (a boolean's operands) are not drawn: only results.
  const solids = listed.entities.filter((e) => e.kind === "geometry");
  const consumed = new Set(solids.flatMap((e) => e.properties?.inputs || []));
  await drawSolids(session, solids.filter((e) => !consumed.has(e.id)));
}

function onSessionEvent(event) {
  if (event.type && STATUS[event.type] && event.service) markService(event.service, STATUS[event.type]);
  if (event.type === "queued") {
    $("session-state").textContent = `Waiting for a free session node: place ${event.place} in the queue`;
  }
  if (!event.state) return;
  if (event.state === "ready") {
    for (const name of event.services || []) markService(name, "ready");
    $("session-state").textContent = "Session ready";
    if ((event.services || []).includes("model")) showEntities();
  } else if (["failed", "closed", "lost"].includes(event.state)) {
    $("session-state").textContent = `Session ${event.state}${event.reason ? `: ${event.reason}` : ""}`;
  } else if (event.state !== "queued") {
    $("session-state").textContent = `Session ${event.state}…`;
  }
}

async function openProject(project) {
  say("");
  const record = await guarded(() => call("", "open_session", { project: project.id }));
  if (!record) return;
  $("project-name").textContent = project.name;
  $("entities").hidden = true;
  delete $("view").dataset.parts;
  state.viewer?.clear();
  $("session-state").textContent = `Session ${record.state}…`;
  showServices(state.info.session_types[project.session_type] || []);
  show("project");
  state.session = new SessionSocket(record.id, onSessionEvent);
  await guarded(() => state.session.opened);
}

$("fit").addEventListener("click", () => state.viewer?.fit());

$("leave").addEventListener("click", async () => {
  if (state.session) state.session.close();  // the session goes on for the others
  state.session = null;
  await showProjects();
});

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  say("");
  const reply = await guarded(() => call(state.info.auth_url, "login",
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
  if (state.session) state.session.close();
  state.session = null;
  await call(state.info.auth_url, "logout").catch(() => undefined);  // gone already is fine
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
