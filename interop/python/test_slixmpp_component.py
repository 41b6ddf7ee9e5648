"""slixmpp as an external component (XEP-0114): slixmpp's ComponentXMPP connects to the
component port with the shared secret, serves $STARLING_COMPONENT_DOMAIN, and answers every
message to a JID of that domain with "component: <body>". alice (a normal slixmpp client)
sends one to weather@<component domain> and gets the answer from that JID; the component
also sees alice's full JID as the sender. A component started with the wrong secret is
refused.
"""

import asyncio
import os

import slixmpp

from harness import STEP_SECONDS, Peer, TestFailure, check, check_equal, run_test

DOMAIN = os.environ["STARLING_COMPONENT_DOMAIN"]
SECRET = os.environ["STARLING_COMPONENT_SECRET"]
PORT = int(os.environ["STARLING_COMPONENT_PORT"])


class Bot(slixmpp.ComponentXMPP):
    def __init__(self, secret: str) -> None:
        super().__init__(DOMAIN, secret, "127.0.0.1", PORT)
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.seen: list[str] = []
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("message", self._on_message)

    def _on_start(self, _event) -> None:
        if not self.ready.done():
            self.ready.set_result("session")

    def _on_disconnected(self, _event) -> None:
        if not self.ready.done():
            self.ready.set_result("disconnected")

    def _on_message(self, msg) -> None:
        self.seen.append(str(msg["from"]))
        msg.reply(f"component: {msg['body']}").send()


async def start(secret: str) -> tuple[Bot, str]:
    bot = Bot(secret)
    bot.connect()
    try:
        outcome = await asyncio.wait_for(asyncio.shield(bot.ready), STEP_SECONDS)
    except asyncio.TimeoutError:
        bot.abort()
        raise TestFailure("the component neither connected nor was refused") from None
    return bot, outcome


async def main() -> None:
    wrong, outcome = await start("not-the-secret")
    check_equal(outcome, "disconnected", "component with a wrong secret")
    wrong.abort()

    bot, outcome = await start(SECRET)
    check_equal(outcome, "session", "component with the right secret")

    alice = Peer("alice", resource="desk")
    await alice.login()
    alice.send_chat(f"weather@{DOMAIN}", "rain tomorrow?")
    reply = await alice.next_message()
    check_equal(reply["body"], "component: rain tomorrow?", "the component's answer")
    check_equal(str(reply["from"].bare), f"weather@{DOMAIN}", "'from' of the answer")
    check(alice.full_jid in bot.seen, f"component saw senders {bot.seen}")

    await alice.logout()
    bot.disconnect()
    await asyncio.sleep(0.2)


run_test(main)
