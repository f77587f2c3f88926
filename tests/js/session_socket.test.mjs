// The page's SessionSocket (api.js) against a real WebSocket server on loopback that
// tests/unit/test_web_functions.py runs: it closes the first connection as soon as it opens
// (as a relay restart does) and answers calls on the next one. RELAY_URL says where it is.
import assert from "node:assert/strict";
import { test } from "node:test";

globalThis.sessionStorage = { getItem: () => null };  // api.js reads the login from it
const { SessionSocket, state } = await import("../../src/twinstack/web/src/api.js");
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
