// The platform's public API as the page uses it: actions on gss and auth (POST /actions/NAME
// with a JSON body and a bearer token), a session's WebSocket through the relay, and blobs from
// the relay. The same calls the Python client makes.

export const state = {
  info: null,
  token: sessionStorage.getItem("twinstack.token"),
  user: sessionStorage.getItem("twinstack.user"),
  using: { auth_url: 0, relay_url: 0 },  // which replica of each the page talks to
};

// auth and the relay may run as several replicas (`twinstack up --replicas`): gss's info gives
// each as a comma-separated list of URLs. The page talks to one and moves on to the next
// when that one cannot be reached, as the Python client does.
function replicas(key) {
  const urls = state.info[key].split(",").map((url) => url.trim()).filter(Boolean);
  return { urls, index: state.using[key] % urls.length };
}

export function replicaUrl(key) {
  const { urls, index } = replicas(key);
  return urls[index];
}

export function nextReplica(key) {
  const { urls, index } = replicas(key);
  state.using[key] = (index + 1) % urls.length;
}

// An action on auth, on the next replica where one cannot be reached (each tried once).
export async function callAuth(action, params = {}) {
  for (let tried = 1; ; tried += 1) {
    try {
      return await call(replicaUrl("auth_url"), action, params);
    } catch (err) {
      if (err.status !== 0 || tried >= replicas("auth_url").urls.length) throw err;
      nextReplica("auth_url");
    }
  }
}

export class PlatformError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
  }
}

export async function call(base, action, params = {}) {
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

// A blob (GLB, picture, exported file) by its hash, through the relay with the token.
export async function fetchBlob(sessionId, hash) {
  const response = await fetch(`${replicaUrl("relay_url")}/blobs/${hash}?session=${sessionId}`,
                               { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new PlatformError(response.status, body.error || {});
  }
  return response.arrayBuffer();
}

const RETRY_MS = [250, 500, 1000, 2000, 4000];  // then every 4 s
const TOKEN_CLOSE = new Set([4401, 4403]);  // the token was revoked, the access withdrawn
const DOWN = "the session's connection is down; it reconnects by itself";

// One WebSocket to the relay for a session: events arrive as {"event": ...}, calls are
// {"id", "service", "action", "params"} answered by {"id", "result" | "error"}. When the
// connection drops (a relay restart, a network change) it says so and connects again by
// itself, to the next relay replica where there are several; the calls that were in flight
// fail with a message, nothing else is lost.
export class SessionSocket {
  constructor(sessionId, { onEvent, onLink }) {
    this.id = sessionId;
    this.onEvent = onEvent;
    this.onLink = onLink;  // "connected" | "reconnecting" | "closed", a reason, attempts
    this.pending = new Map();
    this.next = 1;
    this.attempt = 0;
    this.leaving = false;
    this.connect();
  }

  connect() {
    const url = `${replicaUrl("relay_url").replace(/^https:/, "wss:")}/session?id=${this.id}`;
    const socket = new WebSocket(url, [`twinstack.bearer.${state.token}`]);
    this.socket = socket;
    let ended = null;  // what ends this connection, once: its close, or an error before open
    this.opened = new Promise((resolve, reject) => {
      socket.addEventListener("open", () => {
        this.attempt = 0;
        this.onLink("connected");
        resolve();
      }, { once: true });
      ended = (closed) => {
        if (ended === null) return;
        ended = null;
        reject(new PlatformError(0, { message: DOWN }));
        this.closed(closed);
      };
    });
    this.opened.catch(() => undefined);  // a caller that never waited is not an error
    socket.addEventListener("message", (message) => this.receive(JSON.parse(message.data)));
    socket.addEventListener("close", (closed) => ended?.(closed));
    // A connection that fails before it opens: browsers then close it too, Node's WebSocket
    // (20) does not.
    socket.addEventListener("error", () => {
      if (socket.readyState !== WebSocket.OPEN) ended?.({ code: 1006, reason: "" });
    });
  }

  receive(data) {
    if (data.event) this.onEvent(data.event);
    const waiting = this.pending.get(data.id);
    if (!waiting) return;
    this.pending.delete(data.id);
    if (data.error) waiting.reject(new PlatformError(data.error.status || 500, data.error));
    else waiting.resolve(data.result);
  }

  closed(closed) {
    for (const waiting of this.pending.values()) {
      waiting.reject(new PlatformError(0, { message: "the connection dropped before the "
        + "answer came: check the history before doing it again" }));
    }
    this.pending.clear();
    if (this.leaving) return;
    if (TOKEN_CLOSE.has(closed.code)) {
      this.onLink("closed", closed.reason || "the platform refused this login");
      return;
    }
    const wait = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    nextReplica("relay_url");  // a relay that went away may be gone for good
    this.onLink("reconnecting", closed.reason || "the connection to the platform dropped",
                this.attempt);
    this.retry = setTimeout(() => this.connect(), wait);
  }

  async call(service, action, params = {}) {
    await this.opened;
    // closed but not yet connecting again, `opened` is the last connection's: a message sent
    // now would be dropped and its call never answered
    if (this.socket.readyState !== WebSocket.OPEN) {
      throw new PlatformError(0, { message: DOWN });
    }
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(JSON.stringify({ id, service, action, params }));
    });
  }

  close() {
    this.leaving = true;
    clearTimeout(this.retry);
    this.socket.close(1000, "left the project");
  }
}
