"""Federation interop: a Starling user and a user of another server (Prosody or ejabberd).

Run by federation/lib.sh, which starts both servers and exports where they are. alice is on
Starling, bob on the peer. Each logs in with slixmpp (TLS verified against the test CA);
alice asks to subscribe to bob, bob's client approves and asks back (slixmpp's default
auto-authorize and auto-subscribe), alice's client approves: both must then see the other's
presence, receive the other's chat message, and get an answer to an XMPP ping sent to the
other's full JID (an IQ round trip through both servers). With FED_FIRST=peer, bob asks
first (so the peer server opens the first stream). Exit status 0 when all of it happened
within the deadlines.
"""

import asyncio
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

STEP = 15.0
CA = os.environ["FED_CA"]


class Fail(Exception):
    pass


class User:
    def __init__(self, jid: str, password: str, host: str, port: int) -> None:
        self.jid = jid
        self.host, self.port = host, port
        self.client = slixmpp.ClientXMPP(jid, password)
        self.client.enable_plaintext = False
        self.client.enable_direct_tls = False
        self.client.ssl_context = ssl.create_default_context(cafile=CA)
        self.client.register_plugin("xep_0199")
        self.started = asyncio.get_running_loop().create_future()
        self.messages: asyncio.Queue = asyncio.Queue()
        self.available: dict[str, asyncio.Event] = {}
        self.client.add_event_handler("session_start", self._started)
        self.client.add_event_handler("message", self._message)
        self.client.add_event_handler("presence_available", self._presence)
        self.client.add_event_handler(
            "connection_failed", lambda e: self._fail(f"connection failed: {e}")
        )
        self.client.add_event_handler("failed_all_auth", lambda _e: self._fail("auth failed"))

    def _fail(self, why: str) -> None:
        if not self.started.done():
            self.started.set_exception(Fail(f"{self.jid}: {why}"))

    def _started(self, _event) -> None:
        if not self.started.done():
            self.started.set_result(True)

    def _message(self, msg) -> None:
        if msg["type"] in ("chat", "normal"):
            self.messages.put_nowait(msg)

    def _presence(self, pres) -> None:
        self.available.setdefault(pres["from"].bare, asyncio.Event()).set()

    async def login(self) -> None:
        self.client.connect(host=self.host, port=self.port)
        await asyncio.wait_for(self.started, STEP)
        await self.client.get_roster(timeout=STEP)
        self.client.send_presence()

    async def sees(self, bare: str) -> None:
        ev = self.available.setdefault(bare, asyncio.Event())
        try:
            await asyncio.wait_for(ev.wait(), STEP)
        except asyncio.TimeoutError:
            raise Fail(f"{self.jid} never saw {bare} available") from None

    async def gets_message(self, sender: str, body: str) -> None:
        try:
            while True:
                msg = await asyncio.wait_for(self.messages.get(), STEP)
                if msg["from"].bare == sender and msg["body"] == body:
                    return
                print(f"{self.jid}: other message {msg}", flush=True)
        except asyncio.TimeoutError:
            raise Fail(f"{self.jid} did not receive {body!r} from {sender}") from None

    async def pings(self, full: str) -> None:
        try:
            await self.client.plugin["xep_0199"].send_ping(full, timeout=STEP)
        except IqError as e:
            raise Fail(f"{self.jid}: ping to {full} answered with an error: {e.iq}") from None
        except IqTimeout:
            raise Fail(f"{self.jid}: ping to {full} not answered in {STEP}s") from None


async def main() -> None:
    alice = User(
        os.environ["FED_STARLING_JID"],
        os.environ["FED_STARLING_PASSWORD"],
        "127.0.0.1",
        int(os.environ["FED_STARLING_C2S_PORT"]),
    )
    bob = User(
        os.environ["FED_PEER_JID"],
        os.environ["FED_PEER_PASSWORD"],
        os.environ["FED_PEER_HOST"],
        int(os.environ["FED_PEER_C2S_PORT"]),
    )
    await alice.login()
    await bob.login()
    a, b = alice.client.boundjid, bob.client.boundjid
    print(f"logged in: {a} and {b}", flush=True)
    if os.environ.get("FED_FIRST") == "peer":
        bob.client.send_presence_subscription(pto=a.bare)
    else:
        alice.client.send_presence_subscription(pto=b.bare)
    await alice.sees(b.bare)
    await bob.sees(a.bare)
    print("presence seen both ways", flush=True)
    alice.client.send_message(mto=b.bare, mbody="hello from starling", mtype="chat")
    await bob.gets_message(a.bare, "hello from starling")
    bob.client.send_message(mto=a.full, mbody="hello from the peer", mtype="chat")
    await alice.gets_message(b.bare, "hello from the peer")
    print("messages both ways", flush=True)
    await alice.pings(b.full)
    await bob.pings(a.full)
    print("pings both ways", flush=True)
    for u in (alice, bob):
        await asyncio.wait_for(u.client.disconnect(wait=2.0), STEP)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("INTEROP_VERBOSE") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(main())
    except Fail as e:
        print(f"im_check: FAILED: {e}", flush=True)
        sys.exit(1)
    print("im_check: ok", flush=True)
