"""slixmpp: instant messaging and presence with three accounts (RFC 6121 §3, §4, §8.5.2;
XEP-0160 with XEP-0203; XEP-0191).

alice, bob and carol log in as clients do (roster, then initial presence) with slixmpp's
automatic subscription handling off, so that every subscription stanza is one the test sent
and every presence a peer sees is one the server routed. In order:

1. Subscription: alice asks to see bob's presence; bob approves and asks back; alice
   approves. Each roster ends with the other at subscription "both" (roster pushes), and each
   side sees the other's resource available, sent by the server on approval (§3.1.5, §3.1.6).
2. Presence: alice goes "away" with a status text, bob "dnd" with another; each sees the
   other's show and status. carol, subscribed to no one, sees none of alice's presence at any
   point of the test (checked at the end: presence is never leaked, §4.3, §4.4).
3. Two resources: alice logs in a second resource. A chat message from bob to alice's bare
   JID reaches only the resource with the highest priority (§8.5.2.1.1), whichever one that
   is; with equal priorities it reaches both. That a resource did *not* get a message is
   shown by a marker bob then sends to that resource's full JID: it must be the next message
   the resource receives.
4. Offline: both of alice's resources log out (bob sees both go unavailable); bob's chat
   message to alice is stored, and delivered once when she logs in again, from bob's full
   JID, with a <delay/> from the server stamped with the time bob sent it (XEP-0160, XEP-0203).
5. Blocking: carol's message reaches alice; alice blocks carol with slixmpp's XEP-0191 plugin
   (the blocklist then holds carol); carol's next message bounces with a service-unavailable
   error and alice never gets it (XEP-0191 §3.5), and alice's message to carol is refused
   with not-acceptable and <blocked/> and carol never gets it (§3.3); alice unblocks carol
   (the blocklist is empty), and carol's next message reaches her.
"""

import asyncio
import datetime
import time

from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

from harness import STEP_SECONDS, Peer, TestFailure, bare, check, check_equal, run_test

DELAY_NS = "urn:xmpp:delay"
BLOCKED_ERRORS_NS = "urn:xmpp:blocking:errors"
ALICE, BOB, CAROL = bare("alice"), bare("bob"), bare("carol")


class Client(Peer):
    """A Peer that handles no subscription by itself and remembers every presence and every
    message error it receives."""

    def __init__(self, user: str, *, resource: str) -> None:
        super().__init__(user, resource=resource)
        roster = self.client.roster
        roster.auto_authorize = None  # neither approve nor refuse: the test answers
        roster.auto_subscribe = False
        self.presences: list = []
        self.errors: asyncio.Queue = asyncio.Queue()
        self.client.add_event_handler("presence", self.presences.append)
        # slixmpp raises "message" for every <message/> with a <body/>, errors included (a
        # bounce carries the original body): errors go to their own queue only.
        self.client.del_event_handler("message", self.messages.put_nowait)
        self.client.add_event_handler("message", self._on_message)
        self.client.add_event_handler("message_error", self.errors.put_nowait)

    def _on_message(self, message) -> None:
        if message["type"] != "error":
            self.messages.put_nowait(message)

    async def presence_from(self, what: str, since: int = 0, **want) -> object:
        """Waits (bounded) for a presence stanza received at index `since` or later whose
        fields equal `want` (from, type, show, status, priority)."""
        deadline = time.monotonic() + STEP_SECONDS
        while True:
            for stanza in self.presences[since:]:
                if all(_field(stanza, k) == v for k, v in want.items()):
                    return stanza
            if time.monotonic() > deadline:
                seen = "\n  ".join(str(p) for p in self.presences[since:]) or "(none)"
                raise TestFailure(
                    f"{self.full_jid} did not see {what} within {STEP_SECONDS}s; "
                    f"presence received:\n  {seen}"
                )
            await asyncio.sleep(0.05)

    async def next_error(self):
        try:
            return await asyncio.wait_for(self.errors.get(), STEP_SECONDS)
        except asyncio.TimeoutError:
            raise TestFailure(f"{self.full_jid}: no message error within {STEP_SECONDS}s") from None

    async def expect_message(self, sender: str, body: str):
        got = await self.next_message()
        check_equal(
            (str(got["from"]), got["body"]),
            (sender, body),
            f"the next message {self.full_jid} received (from, body)",
        )
        return got

    def subscription(self, contact: str) -> str:
        roster = self.client.client_roster
        return roster[contact]["subscription"] if contact in roster else "(no item)"

    async def presence(self, **fields) -> None:
        """Sends a presence broadcast and waits until the server has processed it."""
        self.client.send_presence(**fields)
        await self.ping_server()


def _field(stanza, key: str):
    if key == "from":
        return str(stanza["from"])
    return stanza[key]


async def eventually(what: str, condition) -> None:
    deadline = time.monotonic() + STEP_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise TestFailure(f"not within {STEP_SECONDS}s: {what}")
        await asyncio.sleep(0.05)


async def iq(what: str, request):
    try:
        return await request
    except IqError as e:
        raise TestFailure(f"{what}: answered with an error: {e.iq}") from None
    except IqTimeout:
        raise TestFailure(f"{what}: not answered within {STEP_SECONDS}s") from None


async def subscribe(alice: Client, bob: Client) -> None:
    alice.client.send_presence(pto=BOB, ptype="subscribe")
    await bob.presence_from("alice's subscription request", **{"from": ALICE, "type": "subscribe"})
    await eventually(
        f"alice's roster has bob as none + pending out (it says {alice.subscription(BOB)})",
        lambda: alice.subscription(BOB) == "none"
        and alice.client.client_roster[BOB]["pending_out"],
    )

    mark = len(alice.presences)
    bob.client.send_presence(pto=ALICE, ptype="subscribed")
    await alice.presence_from("bob's approval", mark, **{"from": BOB, "type": "subscribed"})
    await alice.presence_from(
        "bob/home available after his approval", mark, **{"from": bob.full_jid, "type": "available"}
    )
    await eventually(
        f"alice's roster has bob at 'to' (it says {alice.subscription(BOB)})",
        lambda: alice.subscription(BOB) == "to",
    )
    await eventually(
        f"bob's roster has alice at 'from' (it says {bob.subscription(ALICE)})",
        lambda: bob.subscription(ALICE) == "from",
    )

    mark = len(bob.presences)
    bob.client.send_presence(pto=ALICE, ptype="subscribe")
    await alice.presence_from("bob's subscription request", **{"from": BOB, "type": "subscribe"})
    alice.client.send_presence(pto=BOB, ptype="subscribed")
    await bob.presence_from("alice's approval", mark, **{"from": ALICE, "type": "subscribed"})
    await bob.presence_from(
        "alice/desk available after her approval",
        mark,
        **{"from": alice.full_jid, "type": "available"},
    )
    for peer, contact in ((alice, BOB), (bob, ALICE)):
        await eventually(
            f"{peer.full_jid}'s roster has {contact} at 'both' "
            f"(it says {peer.subscription(contact)})",
            lambda peer=peer, contact=contact: peer.subscription(contact) == "both",
        )


async def show_and_status(alice: Client, bob: Client) -> None:
    mark = len(bob.presences)
    await alice.presence(pshow="away", pstatus="Walking the dog", ppriority=5)
    await bob.presence_from(
        "alice away, walking the dog, priority 5",
        mark,
        **{"from": alice.full_jid, "show": "away", "status": "Walking the dog", "priority": 5},
    )
    mark = len(alice.presences)
    await bob.presence(pshow="dnd", pstatus="Writing an RFC")
    await alice.presence_from(
        "bob do-not-disturb, writing an RFC",
        mark,
        **{"from": bob.full_jid, "show": "dnd", "status": "Writing an RFC"},
    )


async def bare_jid_routing(desk: Client, bob: Client) -> Client:
    phone = Client("alice", resource="phone")
    await phone.login(request_roster=True)
    mark = len(bob.presences)
    await phone.presence(ppriority=1)
    await bob.presence_from(
        "alice/phone at priority 1", mark, **{"from": phone.full_jid, "priority": 1}
    )

    async def only(winner: Client, loser: Client, body: str) -> None:
        bob.send_chat(ALICE, body)
        await winner.expect_message(bob.full_jid, body)
        marker = f"marker after {body!r}"
        bob.send_chat(loser.full_jid, marker)
        await loser.expect_message(bob.full_jid, marker)

    # desk 5, phone 1: the highest priority only.
    await only(desk, phone, "To the highest priority (desk, 5 > 1)")

    # Equal priorities: both.
    await phone.presence(ppriority=5)
    body = "To both resources at priority 5"
    bob.send_chat(ALICE, body)
    await desk.expect_message(bob.full_jid, body)
    await phone.expect_message(bob.full_jid, body)

    # phone 10, desk 5: now the phone only, so it is priority and not the order of login.
    await phone.presence(ppriority=10)
    await only(phone, desk, "To the highest priority (phone, 10 > 5)")

    await desk.ping_server()
    await phone.ping_server()
    check(desk.messages.empty(), "alice/desk got a message too many")
    check(phone.messages.empty(), "alice/phone got a message too many")
    return phone


async def offline_delivery(desk: Client, phone: Client, bob: Client) -> Client:
    mark = len(bob.presences)
    await desk.logout()
    await phone.logout()
    for full in (desk.full_jid, phone.full_jid):
        await bob.presence_from(
            f"{full} unavailable", mark, **{"from": full, "type": "unavailable"}
        )

    body = "While you were out, alice."
    sent = datetime.datetime.now(datetime.timezone.utc)
    bob.send_chat(ALICE, body)
    await bob.ping_server()
    check(bob.errors.empty(), f"bob's message to offline alice bounced: {bob.errors}")

    alice = Client("alice", resource="desk")
    alice.client.register_plugin("xep_0191")
    await alice.login(request_roster=True)
    got = await alice.expect_message(bob.full_jid, body)
    check_equal(str(got["to"]), ALICE, "'to' of the offline message")
    delay = got.xml.find(f"{{{DELAY_NS}}}delay")
    check(delay is not None, f"no XEP-0203 <delay/> on the offline message: {got}")
    check_equal(delay.get("from"), ALICE.split("@")[1], "'from' of the <delay/>")
    stamp = datetime.datetime.fromisoformat(delay.get("stamp", "").replace("Z", "+00:00"))
    check(stamp.tzinfo is not None, f"<delay/> stamp without a time zone: {got}")
    now = datetime.datetime.now(datetime.timezone.utc)
    slack = datetime.timedelta(seconds=2)
    check(
        sent - slack <= stamp <= now + slack,
        f"<delay/> stamp {stamp} is not the time bob sent the message ({sent})",
    )
    await alice.ping_server()
    check(alice.messages.empty(), "the offline message was delivered more than once")
    return alice


async def blocking(alice: Client, bob: Client, carol: Client) -> None:
    blocking = alice.client.plugin["xep_0191"]

    body = "Hello alice, it is carol."
    carol.send_chat(ALICE, body)
    await alice.expect_message(carol.full_jid, body)

    await iq("blocking carol", blocking.block(JID(CAROL), timeout=STEP_SECONDS))
    blocked = await iq("blocklist get", blocking.get_blocked_jids(timeout=STEP_SECONDS))
    check_equal({str(j) for j in blocked}, {CAROL}, "alice's blocklist after blocking carol")

    body = "Are you ignoring me?"
    carol.send_chat(ALICE, body)
    error = await carol.next_error()
    check_equal(str(error["from"]), ALICE, "'from' of the bounce")
    check_equal(error["error"]["condition"], "service-unavailable", "condition of the bounce")
    check_equal(error["error"]["type"], "cancel", "error type of the bounce")
    marker = "marker after carol's blocked message"
    bob.send_chat(ALICE, marker)
    await alice.expect_message(bob.full_jid, marker)  # and not carol's

    # XEP-0191 §3.3: what alice sends to carol is refused with not-acceptable + <blocked/>.
    alice.send_chat(carol.full_jid, "You will not read this.")
    error = await alice.next_error()
    check_equal(str(error["from"]), carol.full_jid, "'from' of the refusal")
    check_equal(error["error"]["condition"], "not-acceptable", "condition of the refusal")
    check(
        error.xml.find(f"{{jabber:client}}error/{{{BLOCKED_ERRORS_NS}}}blocked") is not None,
        f"no <blocked xmlns='{BLOCKED_ERRORS_NS}'/> in the refusal: {error}",
    )
    marker = "marker after alice's blocked message"
    bob.send_chat(carol.full_jid, marker)
    await carol.expect_message(bob.full_jid, marker)  # and not alice's

    await iq("unblocking carol", blocking.unblock(JID(CAROL), timeout=STEP_SECONDS))
    blocked = await iq("blocklist get", blocking.get_blocked_jids(timeout=STEP_SECONDS))
    check_equal(blocked, set(), "alice's blocklist after unblocking carol")

    body = "Sorry, my client ate your messages."
    carol.send_chat(ALICE, body)
    await alice.expect_message(carol.full_jid, body)
    await carol.ping_server()
    check(carol.errors.empty(), "carol's message after the unblock bounced")


async def main() -> None:
    alice = Client("alice", resource="desk")
    bob = Client("bob", resource="home")
    carol = Client("carol", resource="cafe")
    for peer in (alice, bob, carol):
        roster = await peer.login(request_roster=True)
        check_equal(len(roster["roster"]["items"]), 0, f"items in {peer.full_jid}'s roster")

    await subscribe(alice, bob)
    await show_and_status(alice, bob)
    phone = await bare_jid_routing(alice, bob)
    alice = await offline_delivery(alice, phone, bob)
    await blocking(alice, bob, carol)

    await alice.presence(pshow="chat", pstatus="Back")
    await bob.presence_from(
        "alice back", **{"from": alice.full_jid, "show": "chat", "status": "Back"}
    )
    await carol.ping_server()
    leaked = [str(p) for p in carol.presences if str(p["from"]).startswith(ALICE)]
    check(not leaked, "carol, not subscribed, saw alice's presence:\n  " + "\n  ".join(leaked))
    check(
        not [p for p in carol.presences if str(p["from"]).startswith(BOB)],
        "carol, not subscribed, saw bob's presence",
    )

    for peer in (alice, bob, carol):
        await peer.logout()


if __name__ == "__main__":
    run_test(main)
