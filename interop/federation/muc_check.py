"""Federation interop, chat rooms: a user of another server (Prosody) joins a Starling room.

Run by federation/lib.sh PEER MODE muc, which starts both servers and exports where they
are (as for im_check.py). alice is on Starling and creates conference.starling.example/lounge
(locked: 110 and 201), configures it non-anonymous and persistent (which unlocks it); bob,
on the peer server, reads the room's disco#info and joins it over federation, with the
room's presence and messages crossing the s2s streams of the room's own domain. Both must
see each other as occupants (bob's real JID shown to alice, bob's self-presence with 110),
exchange groupchat messages both ways, a private message goes from bob to alice through the
room, and bob's leaving reaches alice. Exit status 0 when all of it happened in time.
"""

import asyncio
import logging
import os
import sys

from slixmpp.exceptions import IqError, IqTimeout, PresenceError

from im_check import STEP, Fail, User

SERVICE = "conference." + os.environ["FED_STARLING_JID"].split("@", 1)[1]
ROOM = f"lounge@{SERVICE}"


def codes(pres) -> set[int]:
    return set(pres["muc"]["status_codes"])


async def next_of(q: asyncio.Queue, what: str, match=lambda _x: True):
    deadline = asyncio.get_running_loop().time() + STEP
    while True:
        left = deadline - asyncio.get_running_loop().time()
        try:
            item = await asyncio.wait_for(q.get(), max(left, 0.01))
        except asyncio.TimeoutError:
            raise Fail(f"no {what} within {STEP}s") from None
        if match(item):
            return item
        print(f"(skipped while waiting for {what}: {item})", flush=True)


def muc_user(jid: str, password: str, host: str, port: int) -> User:
    u = User(jid, password, host, port)
    for plugin in ("xep_0030", "xep_0004", "xep_0045"):
        u.client.register_plugin(plugin)
    u.groupchat = asyncio.Queue()
    u.private = asyncio.Queue()
    u.presences = asyncio.Queue()
    u.client.add_event_handler("groupchat_message", u.groupchat.put_nowait)
    u.client.add_event_handler(
        "message", lambda m: m["type"] == "chat" and u.private.put_nowait(m)
    )
    u.client.add_event_handler(f"muc::{ROOM}::presence", u.presences.put_nowait)
    return u


async def main() -> None:
    alice = muc_user(
        os.environ["FED_STARLING_JID"],
        os.environ["FED_STARLING_PASSWORD"],
        "127.0.0.1",
        int(os.environ["FED_STARLING_C2S_PORT"]),
    )
    bob = muc_user(
        os.environ["FED_PEER_JID"],
        os.environ["FED_PEER_PASSWORD"],
        os.environ["FED_PEER_HOST"],
        int(os.environ["FED_PEER_C2S_PORT"]),
    )
    await alice.login()
    await bob.login()
    a, b = alice.client.boundjid, bob.client.boundjid
    amuc, bmuc = alice.client.plugin["xep_0045"], bob.client.plugin["xep_0045"]
    print(f"logged in: {a} and {b}", flush=True)

    # alice creates the room (locked until configured) and configures it.
    pres, _subject, _occupants, _history = await amuc.join_muc_wait(ROOM, "Alice", timeout=STEP)
    if not {110, 201} <= codes(pres):
        raise Fail(f"creation codes: {codes(pres)}")
    form = await amuc.get_room_config(ROOM, timeout=STEP)
    fields = form.get_fields()
    fields["muc#roomconfig_roomname"]["value"] = "Federated lounge"
    fields["muc#roomconfig_persistentroom"]["value"] = True
    fields["muc#roomconfig_whois"]["value"] = "anyone"
    await amuc.set_room_config(ROOM, form, timeout=STEP)
    print("room created and configured", flush=True)

    # bob, on the peer server, discovers the room over federation.
    try:
        info = await bob.client.plugin["xep_0030"].get_info(jid=ROOM, timeout=STEP)
    except (IqError, IqTimeout) as e:
        raise Fail(f"bob's disco#info of {ROOM} failed: {e}") from None
    features = set(info["disco_info"]["features"])
    if "http://jabber.org/protocol/muc" not in features:
        raise Fail(f"room features seen by bob: {sorted(features)}")
    print("bob read the room's disco#info", flush=True)

    # bob joins over federation.
    try:
        pres, _subject, occupants, _history = await bmuc.join_muc_wait(
            ROOM, "Bob", maxstanzas=0, timeout=STEP
        )
    except (PresenceError, asyncio.TimeoutError) as e:
        raise Fail(f"bob could not join {ROOM}: {e!r}") from None
    if 110 not in codes(pres):
        raise Fail(f"bob's self-presence codes: {codes(pres)}")
    nicks = {o["from"].resource for o in occupants}
    if "Alice" not in nicks:
        raise Fail(f"occupants bob saw: {sorted(nicks)}")
    joined = await next_of(
        alice.presences, "bob's join presence at alice", lambda p: p["from"].resource == "Bob"
    )
    if str(joined["muc"]["jid"]) != str(b):
        raise Fail(f"alice saw bob's real JID as {joined['muc']['jid']}, not {b}")
    print("bob joined; both see each other", flush=True)

    # Groupchat both ways.
    alice.client.send_message(mto=ROOM, mbody="welcome, remote friend", mtype="groupchat")
    m = await next_of(bob.groupchat, "alice's groupchat message at bob",
                      lambda m: m["body"] == "welcome, remote friend")
    if str(m["from"]) != f"{ROOM}/Alice":
        raise Fail(f"alice's message reached bob from {m['from']}")
    bob.client.send_message(mto=ROOM, mbody="thanks from the peer", mtype="groupchat")
    m = await next_of(alice.groupchat, "bob's groupchat message at alice",
                      lambda m: m["body"] == "thanks from the peer")
    if str(m["from"]) != f"{ROOM}/Bob":
        raise Fail(f"bob's message reached alice from {m['from']}")
    # bob's own message comes back to him (reflection, XEP-0045 §7.4).
    await next_of(bob.groupchat, "the reflection of bob's message",
                  lambda m: m["body"] == "thanks from the peer")
    print("groupchat messages both ways", flush=True)

    # A private message through the room.
    bob.client.send_message(mto=f"{ROOM}/Alice", mbody="psst", mtype="chat")
    m = await next_of(alice.private, "bob's private message", lambda m: m["body"] == "psst")
    if str(m["from"]) != f"{ROOM}/Bob":
        raise Fail(f"the private message came from {m['from']}")
    print("private message through the room", flush=True)

    # bob leaves.
    bmuc.leave_muc(ROOM, "Bob")
    await next_of(
        alice.presences,
        "bob's unavailable presence at alice",
        lambda p: p["from"].resource == "Bob" and p["type"] == "unavailable",
    )
    print("bob left", flush=True)
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
        print(f"muc_check: FAILED: {e}", flush=True)
        sys.exit(1)
    print("muc_check: ok", flush=True)
