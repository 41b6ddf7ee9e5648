"""slixmpp: offline delivery, presence subscription and the roster, with slixmpp's own
roster logic on both sides (RFC 6121 §3, §8.5.2; XEP-0160, XEP-0203).

Both log in as clients do: roster first, then initial presence. alice's roster is empty.
While bob is offline she asks to subscribe to his presence and sends him a chat message to
his bare JID. bob logs in: the message arrives with alice's full JID as 'from' and a <delay/>
stamped by the server; the subscription request arrives too. bob's slixmpp approves it and
asks back (roster auto_authorize and auto_subscribe), alice's slixmpp approves that: both
rosters end with subscription "both" (seen through roster pushes), and each sees the other's
resource available.
"""

import asyncio
import time

from harness import STEP_SECONDS, Peer, TestFailure, bare, check, check_equal, run_test

DELAY_NS = "urn:xmpp:delay"


async def eventually(what: str, condition) -> None:
    """Waits until condition() holds, for STEP_SECONDS at most."""
    deadline = time.monotonic() + STEP_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TestFailure(f"not within {STEP_SECONDS}s: {what}")
        await asyncio.sleep(0.05)


def subscription(peer: Peer, contact: str) -> str:
    roster = peer.client.client_roster
    return roster[contact]["subscription"] if contact in roster else "(no item)"


def available_resources(peer: Peer, contact: str) -> set[str]:
    return set(peer.client.client_roster.presence(contact).keys())


async def main() -> None:
    alice = Peer("alice", resource="balcony")
    roster = await alice.login(request_roster=True)
    check_equal(len(roster["roster"]["items"]), 0, "items in alice's new roster")

    alice.client.send_presence(pto=bare("bob"), ptype="subscribe")
    body = "While you were away, bob."
    alice.send_chat(bare("bob"), body)
    await alice.ping_server()  # both stanzas handled before bob logs in

    bob = Peer("bob", resource="garden")
    bob.client.roster.auto_authorize = True
    bob.client.roster.auto_subscribe = True
    await bob.login(request_roster=True)

    got = await bob.next_message()
    check_equal(got["body"], body, "body of the offline message")
    check_equal(str(got["from"]), alice.full_jid, "'from' of the offline message")
    check_equal(str(got["to"]), bare("bob"), "'to' of the offline message")
    delay = got.xml.find(f"{{{DELAY_NS}}}delay")
    check(delay is not None, f"no XEP-0203 <delay/> on the offline message: {got}")
    check(bool(delay.get("stamp")), f"<delay/> without a stamp: {got}")

    await eventually(
        f"alice's roster has bob with subscription both (it says {subscription(alice, bare('bob'))})",
        lambda: subscription(alice, bare("bob")) == "both",
    )
    await eventually(
        f"bob's roster has alice with subscription both (it says {subscription(bob, bare('alice'))})",
        lambda: subscription(bob, bare("alice")) == "both",
    )
    await eventually(
        f"alice sees bob/garden available (she sees {available_resources(alice, bare('bob'))})",
        lambda: "garden" in available_resources(alice, bare("bob")),
    )
    await eventually(
        f"bob sees alice/balcony available (he sees {available_resources(bob, bare('alice'))})",
        lambda: "balcony" in available_resources(bob, bare("alice")),
    )
    check(bob.messages.empty(), "bob got more than the one offline message")

    await alice.logout()
    await bob.logout()


if __name__ == "__main__":
    run_test(main)
