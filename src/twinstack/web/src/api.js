// The platform's public API as the page uses it: actions on gss and auth (POST /actions/NAME
// with a JSON body and a bearer token), a session's WebSocket through the relay, and blobs from
// the relay. The same calls the Python client makes.

export const state = {
  info: null,
  token: sessionStorage.getItem("twinstack.token"),
  user: sessionStorage.getItem("twinstack.user"),
};

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
  const response = await fetch(`${state.info.relay_url}/blobs/${hash}?session=${sessionId}`,
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
// itself; the calls that were in flight fail with a message, nothing else is lost.
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
    const url = `${state.info.relay_url.replace(/^https:/, "wss:")}/session?id=${this.id}`;
    const socket = new WebSocket(url, [`twinstack.bearer.${state.token}`]);
    this.socket = socket;
    this.opened = new Promise((resolve, reject) => {
      socket.addEventListener("open", () => {
        this.attempt = 0;
        this.onLink("connected");
        resolve();
      }, { once: true });
      socket.addEventListener("close", () => reject(new PlatformError(0, { message: DOWN })),
                              { once: true });
    });
    this.opened.catch(() => undefined);  // a caller that never waited is not an error
    socket.addEventListener("message", (message) => this.receive(JSON.parse(message.data)));
    socket.addEventListener("close", (closed) => this.closed(closed));
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
