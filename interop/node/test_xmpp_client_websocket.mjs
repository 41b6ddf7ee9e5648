// @xmpp/client (xmpp.js) over WebSocket (RFC 7395): log in and chat with an slixmpp peer.
//
// carol connects with @xmpp/client to ws://127.0.0.1:$STARLING_HTTP_PORT/xmpp-websocket (the
// server's plaintext HTTP listener, trusted because the peer is on loopback), authenticates
// (no STARTTLS over WebSocket, and no -PLUS: there is no TLS state to bind to), sends initial
// presence, pings the server, and sends a chat message to the bare JID of the slixmpp echo bot
// (interop/python/echo_bot.py, on TCP); the bot's answer "echo: <body>" must reach carol with
// the bot's full JID as 'from' and carol's full JID as 'to'. Then carol closes the stream
// (<close/>).
//
// xmpp.js uses the global WebSocket, which Node 20 has only with --experimental-websocket:
// without it the test runs itself again with that flag.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";

if (typeof globalThis.WebSocket === "undefined") {
  const r = spawnSync(process.execPath, ["--experimental-websocket", ...process.argv.slice(1)], {
    stdio: "inherit",
  });
  process.exit(r.status ?? 1);
}

const { client, xml } = await import("@xmpp/client");

const DOMAIN = process.env.STARLING_DOMAIN;
const PORT = process.env.STARLING_HTTP_PORT;
const PASSWORD = process.env.INTEROP_PASSWORD_CAROL;
const ECHO_BARE = `echo@${DOMAIN}`;
const ECHO_FULL = `${ECHO_BARE}/bot`;
const STEP_MS = 10_000;
const NAME = "test_xmpp_client_websocket.mjs";

function fail(message) {
  console.log(`${NAME}: FAILED: ${message}`);
  process.exit(1);
}

const deadline = setTimeout(() => fail("did not finish within 25 s"), 25_000);

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${STEP_MS} ms`)), STEP_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const xmpp = client({
  service: `ws://127.0.0.1:${PORT}/xmpp-websocket`,
  domain: DOMAIN,
  username: "carol",
  password: PASSWORD,
  resource: "node-ws",
});
xmpp.reconnect.stop();

const sent = [];
const received = [];
xmpp.on("send", (element) => sent.push(element));
xmpp.on("element", (element) => received.push(element));
xmpp.on("error", (error) => fail(`client error: ${error?.stack ?? error}`));

const inbox = [];
let waiter = null;
xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message")) return;
  inbox.push(stanza);
  if (waiter) {
    waiter();
    waiter = null;
  }
});
async function nextMessage() {
  while (inbox.length === 0) {
    await withTimeout(new Promise((resolve) => (waiter = resolve)), "a message for carol");
  }
  return inbox.shift();
}

try {
  const address = await withTimeout(xmpp.start(), "login");
  const me = address.toString();
  assert.equal(me, `carol@${DOMAIN}/node-ws`, "bound JID");

  const firstFeatures = received.find((el) => el.is("features"));
  assert.ok(firstFeatures, "stream features received");
  assert.ok(
    !firstFeatures.getChild("starttls", "urn:ietf:params:xml:ns:xmpp-tls"),
    "no STARTTLS over WebSocket",
  );
  const mechanisms = firstFeatures
    .getChild("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
    .getChildren("mechanism")
    .map((m) => m.text());
  assert.ok(!mechanisms.some((m) => m.endsWith("-PLUS")), `no -PLUS offered: ${mechanisms}`);
  const auth = sent.find((el) => el.is("auth", "urn:ietf:params:xml:ns:xmpp-sasl"));
  assert.ok(auth, "the client authenticated");
  assert.ok(
    received.some((el) => el.is("success", "urn:ietf:params:xml:ns:xmpp-sasl")),
    "SASL <success/>",
  );

  await xmpp.send(xml("presence"));
  const pong = await withTimeout(
    xmpp.iqCaller.request(
      xml("iq", { type: "get", to: DOMAIN }, xml("ping", { xmlns: "urn:xmpp:ping" })),
      STEP_MS,
    ),
    "ping",
  );
  assert.equal(pong.attrs.type, "result", "ping answered");

  const body = "Hello over WebSocket \u2014 <&> \u00e9 \u{1F426}";
  await xmpp.send(xml("message", { type: "chat", to: ECHO_BARE }, xml("body", {}, body)));
  const answer = await nextMessage();
  assert.equal(answer.getChildText("body"), `echo: ${body}`, "echoed body");
  assert.equal(answer.attrs.from, ECHO_FULL, "'from' of the echo");
  assert.equal(answer.attrs.to, me, "'to' of the echo");

  await withTimeout(xmpp.stop(), "closing the stream");
  assert.equal(xmpp.status, "offline", "status after stop");
} catch (error) {
  fail(error?.stack ?? String(error));
}

clearTimeout(deadline);
console.log(`${NAME}: ok`);
