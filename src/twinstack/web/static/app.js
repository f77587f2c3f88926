// The TwinStack page: log in at auth, list and create projects at gss. Every call is the
// platform's public action API (POST /actions/NAME with a JSON body and a bearer token),
// the same one the Python client uses.
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
  const signedIn = view === "projects";
  $("login").hidden = signedIn;
  $("projects").hidden = !signedIn;
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

async function showProjects() {
  const listed = await guarded(() => call("", "list_projects"));
  if (!listed) return;
  const rows = $("project-rows");
  rows.replaceChildren(...listed.projects.map((p) => {
    const row = document.createElement("tr");
    row.dataset.id = p.id;
    for (const value of [p.name, p.session_type, p.owner, p.role]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    return row;
  }));
  $("no-projects").hidden = listed.projects.length > 0;
  show("projects");
}

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
