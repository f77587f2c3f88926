// The page's SessionSocket (api.js) against a real WebSocket server on loopback that
// tests/unit/test_web_functions.py runs: it closes the first connection as soon as it opens
// (as a relay restart does) and answers calls on the next one. RELAY_URL says where it is;
// DEAD_URL is a port nothing listens on (a relay replica that is gone).
import assert from "node:assert/strict";
import { test } from "node:test";

globalThis.sessionStorage = { getItem: () => null };  // api.js reads the login from it
const { SessionSocket, callAuth, state } = await import("../../src/twinstack/web/src/api.js");
state.info = { relay_url: process.env.RELAY_URL };

test("a call made while the socket waits to reconnect fails at once; the next is answered",
  async () => {
    const links = [];
    let gap;  // the call made once the socket closed, before its retry is due
    const callInTheGap = new Promise((resolve) => { gap = resolve; });
    let reconnected;
    const again = new Promise((resolve) => { reconnected = resolve; });
    const socket = new SessionSocket("s1", {
      onEvent: () => undefined,
      onLink: (link) => {
        links.push(link);
        if (link === "reconnecting" && links.length === 2) {
          gap(socket.call("model", "entities").then(() => "answered", (err) => err.message));
        }
        if (link === "connected" && links.length === 3) reconnected("still waiting");
      },
    });
    try {
      // it must not wait for the next connection (nor forever: its message went nowhere)
      assert.equal(await Promise.race([callInTheGap, again]),
                   "the session's connection is down; it reconnects by itself");
      await again;
      assert.deepEqual(links, ["connected", "reconnecting", "connected"]);
      assert.deepEqual(await socket.call("model", "entities"), { answered: "entities" });
    } finally {
      socket.close();
    }
  });

test("a relay replica that cannot be reached is passed over for the next one", async () => {
  // (after the test above, the relay answers every connection)
  state.info = { relay_url: `${process.env.DEAD_URL}, ${process.env.RELAY_URL}` };
  const links = [];
  let connected;
  const up = new Promise((resolve) => { connected = resolve; });
  const socket = new SessionSocket("s2", {
    onEvent: () => undefined,
    onLink: (link) => {
      links.push(link);
      if (link === "connected") connected();
    },
  });
  try {
    await up;
    assert.deepEqual(links, ["reconnecting", "connected"]);
    assert.deepEqual(await socket.call("kriging", "interpolate"), { answered: "interpolate" });
  } finally {
    socket.close();
  }
});

test("an auth replica that cannot be reached is passed over for the next one", async () => {
  const [dead, live] = [process.env.DEAD_URL, process.env.RELAY_URL]
    .map((url) => url.replace(/^ws:/, "http:"));
  state.info = { auth_url: `${dead},${live}` };
  state.using.auth_url = 0;
  assert.deepEqual(await callAuth("whoami"), { answered: "whoami" });
  assert.equal(state.using.auth_url, 1);  // and it stays with the one that answered
  assert.deepEqual(await callAuth("accounts"), { answered: "accounts" });
  state.info = { auth_url: dead };  // with none left to try, the failure is the caller's
  state.using.auth_url = 0;
  await assert.rejects(callAuth("whoami"), /the platform cannot be reached/);
});
