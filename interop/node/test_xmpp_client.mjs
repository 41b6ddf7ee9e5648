// @xmpp/client (xmpp.js): log in over STARTTLS and chat with an slixmpp peer.
//
// carol connects with @xmpp/client to the STARTTLS port; the server's generated certificate
// is trusted through NODE_EXTRA_CA_CERTS (set by interop/run), so TLS is verified, name
// included. xmpp.js offers SCRAM-SHA-1 first, so that is the mechanism it must use. Once
// online, carol sends initial presence, pings the server, and sends a chat message to the
// bare JID of the echo bot (slixmpp, interop/python/echo_bot.py, started by interop/run);
// the bot's answer "echo: <body>" must reach carol with the bot's full JID as 'from' and
// carol's full JID as 'to'. Then carol closes the stream.

import assert from "node:assert/strict";
import { client, xml } from "@xmpp/client";

const DOMAIN = process.env.STARLING_DOMAIN;
const PORT = process.env.STARLING_C2S_PORT;
const PASSWORD = process.env.INTEROP_PASSWORD_CAROL;
const ECHO_BARE = `echo@${DOMAIN}`;
const ECHO_FULL = `${ECHO_BARE}/bot`;
const STEP_MS = 10_000;
const NAME = "test_xmpp_client.mjs";

function fail(message) {
  console.log(`${NAME}: FAILED: ${message}`);
  process.exit(1);
}

// The whole test, connection included, is bounded; interop/run also has a hard timeout.
const deadline = setTimeout(() => fail("did not finish within 25 s"), 25_000);

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${STEP_MS} ms`)), STEP_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const xmpp = client({
  service: `xmpp://127.0.0.1:${PORT}`,
  domain: DOMAIN,
  username: "carol",
  password: PASSWORD,
  resource: "node",
});
xmpp.reconnect.stop(); // a test connects once; a dropped stream is a failure, not a retry

const sent = [];
const received = [];
xmpp.on("send", (element) => sent.push(element));
xmpp.on("element", (element) => received.push(element));
xmpp.on("error", (error) => fail(`client error: ${error?.stack ?? error}`));

// Messages arrive through this queue.
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
  assert.equal(me, `carol@${DOMAIN}/node`, "bound JID");

  // STARTTLS was offered, taken, and the socket is TLS.
  const firstFeatures = received.find((el) => el.is("features"));
  assert.ok(
    firstFeatures?.getChild("starttls", "urn:ietf:params:xml:ns:xmpp-tls"),
    "the first stream features offer STARTTLS",
  );
  assert.ok(
    sent.some((el) => el.is("starttls")),
    "the client sent <starttls/>",
  );
  assert.ok(xmpp.socket?.secure, "the socket is TLS after STARTTLS");
  const auth = sent.find((el) => el.is("auth", "urn:ietf:params:xml:ns:xmpp-sasl"));
  assert.equal(auth?.attrs.mechanism, "SCRAM-SHA-1", "SASL mechanism used");
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

  const body = "Hello from xmpp.js \u2014 <&> \u00e9 \u{1F426}";
  await xmpp.send(xml("message", { type: "chat", to: ECHO_BARE }, xml("body", {}, body)));
  const answer = await nextMessage();
  assert.equal(answer.getChildText("body"), `echo: ${body}`, "echoed body");
  assert.equal(answer.attrs.from, ECHO_FULL, "'from' of the echo");
  assert.equal(answer.attrs.to, me, "'to' of the echo");
  assert.equal(answer.attrs.type, "chat", "type of the echo");

  await withTimeout(xmpp.stop(), "closing the stream");
  assert.equal(xmpp.status, "offline", "status after stop");
} catch (error) {
  fail(error?.stack ?? String(error));
}

clearTimeout(deadline);
console.log(`${NAME}: ok`);
