"""The slixmpp side of the browser tests: bob logs in over TCP (STARTTLS, certificate
verified), sends a chat message to the full JID given on the command line (Converse.js in
Chromium), and waits for the reply whose body is given as the second argument. Prints
"bob_peer: got reply" and exits 0 when it came from that JID with that body; exits 1
otherwise (harness.run_test prints why)."""

import asyncio
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from harness import Peer, check_equal, run_test  # noqa: E402

ALICE = sys.argv[1]
GREETING = sys.argv[2]
REPLY = sys.argv[3]


async def main() -> None:
    bob = Peer("bob", resource="slixmpp")
    await bob.login()
    bob.client.send_message(mto=ALICE, mbody=GREETING, mtype="chat")
    print("bob_peer: sent greeting", flush=True)
    deadline = asyncio.get_running_loop().time() + 25
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        msg = await asyncio.wait_for(bob.messages.get(), max(remaining, 0.1))
        if msg["body"]:
            break
    check_equal(str(msg["from"]), ALICE, "'from' of the reply")
    check_equal(msg["body"], REPLY, "body of the reply")
    print("bob_peer: got reply", flush=True)
    await bob.logout()


run_test(main)
