// What the Converse.js browser tests share: a loopback web server for the Converse.js page,
// headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core), and the chat
// itself with an slixmpp peer (bob_peer.py).
//
// The page logs alice in over the given transport (WebSocket or BOSH, on the server's
// plaintext HTTP listener: a loopback peer counts as secure). A tiny Converse plugin records
// when the session is connected and its full JID. Then bob (slixmpp, TCP) sends alice a
// message; it must appear in Converse's chat view; the test types a reply into Converse's
// text area and presses Enter; bob must receive exactly that reply from alice's full JID.
// A screenshot of the chat is written to $INTEROP_ARTIFACTS/converse-<transport>.png.

import { spawn } from "node:child_process";
import { createReadStream, existsSync, mkdirSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const DIST = join(HERE, "node_modules", "converse.js", "dist");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const STEP_MS = 20_000;

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".map": "application/json",
};

function page(options) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Starling + Converse.js</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script src="/dist/converse.min.js"></script>
</head><body class="converse-fullscreen">
<script>
  window.starling = { connected: false, jid: null, errors: [] };
  converse.plugins.add("starling-test", {
    initialize() {
      const { api } = this._converse;
      api.listen.on("connected", () => {
        window.starling.connected = true;
        window.starling.jid = api.connection.get().jid;
      });
      api.listen.on("disconnected", () => { window.starling.connected = false; });
    },
  });
  converse.initialize(${JSON.stringify(options)});
</script>
</body></html>`;
}

/** Serves the page and Converse's dist folder on 127.0.0.1; resolves to the server. */
function serve(options) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/" || url.pathname === "/index.html") {
      res.writeHead(200, { "content-type": TYPES[".html"] });
      res.end(page(options));
      return;
    }
    if (url.pathname.startsWith("/dist/")) {
      const rel = normalize(decodeURIComponent(url.pathname.slice("/dist/".length)));
      const file = join(DIST, rel);
      if (!rel.startsWith("..") && file.startsWith(DIST) && existsSync(file) && statSync(file).isFile()) {
        res.writeHead(200, { "content-type": TYPES[extname(file)] || "application/octet-stream" });
        createReadStream(file).pipe(res);
        return;
      }
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

function runBob(aliceJid, greeting, reply) {
  const python = process.env.INTEROP_PYTHON || join(HERE, "..", ".venv", "bin", "python");
  const child = spawn(python, [join(HERE, "bob_peer.py"), aliceJid, greeting, reply], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const done = new Promise((resolve) => child.on("exit", (code) => resolve({ code, output })));
  return { child, done, output: () => output };
}

/** The whole test for `transport` ("websocket" or "bosh"). Exits the process. */
export async function converseChat(transport, name) {
  const fail = (message) => {
    console.log(`${name}: FAILED: ${message}`);
    process.exit(1);
  };
  const deadline = setTimeout(() => fail("did not finish within 55 s"), 55_000);
  const domain = process.env.STARLING_DOMAIN;
  const httpPort = process.env.STARLING_HTTP_PORT;
  const password = process.env.INTEROP_PASSWORD_ALICE;
  if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM} (Debian package chromium)`);
  const options = {
    jid: `alice@${domain}`,
    password,
    auto_login: true,
    auto_reconnect: false,
    discover_connection_methods: false,
    allow_non_roster_messaging: true,
    view_mode: "fullscreen",
    assets_path: "/dist/",
    whitelisted_plugins: ["starling-test"],
    loglevel: "info",
    i18n: "en",
    show_controlbox_by_default: true,
  };
  if (transport === "websocket") {
    options.websocket_url = `ws://127.0.0.1:${httpPort}/xmpp-websocket`;
  } else {
    options.bosh_service_url = `http://127.0.0.1:${httpPort}/http-bind`;
  }
  const web = await serve(options);
  const pageUrl = `http://127.0.0.1:${web.address().port}/`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  let bob = null;
  const shot = join(process.env.INTEROP_ARTIFACTS || join(HERE, "..", "artifacts"), `converse-${transport}.png`);
  mkdirSync(dirname(shot), { recursive: true });
  const pageErrors = [];
  let tab = null;
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    tab = await context.newPage();
    tab.on("console", (m) => console.log(`[browser ${m.type()}] ${m.text()}`));
    tab.on("pageerror", (e) => pageErrors.push(String(e)));
    const sockets = [];
    tab.on("websocket", (ws) => sockets.push(ws.url()));
    const boshPosts = [];
    tab.on("request", (r) => {
      if (r.url().includes("/http-bind") && r.method() === "POST") boshPosts.push(r.url());
    });
    await tab.goto(pageUrl);
    await tab.waitForFunction(() => window.starling?.connected && window.starling.jid, null, {
      timeout: STEP_MS,
    });
    const aliceJid = await tab.evaluate(() => window.starling.jid);
    console.log(`${name}: Converse.js logged in as ${aliceJid}`);
    if (!aliceJid.startsWith(`alice@${domain}/`)) fail(`bound JID ${aliceJid}`);
    if (transport === "websocket" && !sockets.some((u) => u.endsWith("/xmpp-websocket"))) {
      fail(`Converse did not use the WebSocket endpoint (sockets: ${sockets})`);
    }
    if (transport === "bosh" && boshPosts.length === 0) fail("Converse did not POST to /http-bind");
    if (transport === "bosh" && sockets.length > 0) fail(`unexpected WebSocket use: ${sockets}`);

    const greeting = `Hello from slixmpp over ${transport}`;
    const reply = `Reply from Converse.js over ${transport}`;
    bob = runBob(aliceJid, greeting, reply);
    // bob shows up in the contacts list with an unread message; opening the chat shows it.
    const contact = tab.locator("converse-roster a.open-chat", { hasText: `bob@${domain}` }).first();
    await contact.waitFor({ timeout: STEP_MS });
    await contact.click();
    await tab.getByText(greeting).first().waitFor({ timeout: STEP_MS });
    const textarea = tab.locator("textarea.chat-textarea").first();
    await textarea.waitFor({ timeout: STEP_MS });
    await textarea.fill(reply);
    await textarea.press("Enter");
    // And Converse shows it as sent.
    await tab.getByText(reply).first().waitFor({ timeout: STEP_MS });
    const result = await Promise.race([
      bob.done,
      new Promise((resolve) => setTimeout(() => resolve({ code: "timeout", output: bob.output() }), STEP_MS)),
    ]);
    console.log(result.output.trimEnd());
    await tab.screenshot({ path: shot });
    console.log(`${name}: screenshot ${shot}`);
    if (result.code !== 0) fail(`bob (slixmpp) did not get the reply: exit ${result.code}`);
    if (!result.output.includes("bob_peer: got reply")) fail("bob's output lacks the reply line");
    if (pageErrors.length) fail(`errors in the page: ${pageErrors.join("; ")}`);
  } catch (error) {
    if (tab) await tab.screenshot({ path: shot }).catch(() => {});
    if (bob) console.log(bob.output());
    fail(error?.stack ?? String(error));
  } finally {
    if (bob) bob.child.kill();
    await browser.close();
    web.close();
  }
  clearTimeout(deadline);
  console.log(`${name}: ok`);
  process.exit(0);
}
