"""slixmpp's xep_0045 plugin joins, configures and moderates a Starling room.

alice creates conference.<domain>/coven with join_muc_wait (a locked room: 110 and 201),
reads the configuration form with get_room_config (every standard muc#roomconfig field is
there), fills in a name and makes it persistent and non-anonymous with set_room_config; the
service lists the room in its disco#items. bob joins with history limited to one stanza and
gets alice's presence, his own (110, 100), the last of alice's two messages as history and
the subject alice set. They talk; bob changes his nickname with set_self_nick (303). alice
kicks bob with set_role (307 in his self-presence), he comes back, she bans him with
set_affiliation (301), his next join_muc_wait fails with forbidden, and the outcast list has
him. Finally alice destroys the room with an alternate venue.
"""

import asyncio

from slixmpp.exceptions import PresenceError

from harness import DOMAIN, STEP_SECONDS, Peer, bare, check, check_equal, run_test

SERVICE = f"conference.{DOMAIN}"
ROOM = f"coven@{SERVICE}"


def codes(pres) -> set[int]:
    return set(pres["muc"]["status_codes"])


async def main() -> None:
    alice = Peer("alice", resource="cauldron")
    bob = Peer("bob", resource="broom")
    for p in (alice, bob):
        p.client.register_plugin("xep_0030")
        p.client.register_plugin("xep_0045")
        p.client.register_plugin("xep_0004")
    await alice.login()
    await bob.login()
    amuc = alice.client.plugin["xep_0045"]
    bmuc = bob.client.plugin["xep_0045"]

    # Self-presences and groupchat messages as they arrive, for the checks below.
    bob_self: asyncio.Queue = asyncio.Queue()
    bob.client.add_event_handler(f"muc::{ROOM}::self-presence", bob_self.put_nowait)
    bob_chat: asyncio.Queue = asyncio.Queue()
    bob.client.add_event_handler("groupchat_message", bob_chat.put_nowait)

    async def next_of(q: asyncio.Queue, what: str):
        try:
            return await asyncio.wait_for(q.get(), STEP_SECONDS)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {what} within {STEP_SECONDS}s") from None

    # Creation: a locked room, owned by alice.
    pres, _subject, _occupants, _history = await amuc.join_muc_wait(ROOM, "Alice", timeout=STEP_SECONDS)
    check({110, 201} <= codes(pres), f"creation codes: {codes(pres)}")
    check_equal(pres["muc"]["affiliation"], "owner", "creator's affiliation")

    form = await amuc.get_room_config(ROOM, timeout=STEP_SECONDS)
    fields = form.get_fields()
    for var in ("roomname", "roomdesc", "persistentroom", "publicroom", "membersonly",
                "moderatedroom", "passwordprotectedroom", "roomsecret", "maxusers", "whois",
                "allowpm", "allowinvites", "changesubject", "enablelogging", "getmemberlist",
                "presencebroadcast", "roomadmins", "roomowners"):
        check(f"muc#roomconfig_{var}" in fields, f"config form lacks muc#roomconfig_{var}")
    fields["muc#roomconfig_roomname"]["value"] = "The Coven"
    fields["muc#roomconfig_persistentroom"]["value"] = True
    fields["muc#roomconfig_whois"]["value"] = "anyone"
    await amuc.set_room_config(ROOM, form, timeout=STEP_SECONDS)

    items = await alice.client.plugin["xep_0030"].get_items(jid=SERVICE, timeout=STEP_SECONDS)
    listed = {(str(i[0]), i[2]) for i in items["disco_items"]["items"]}
    check((ROOM, "The Coven") in listed, f"service items: {listed}")

    amuc.set_subject(ROOM, "Potions")
    for text in ("first", "second"):
        alice.client.send_message(mto=ROOM, mbody=text, mtype="groupchat")
    await alice.ping_server()

    # bob joins: history limited to one stanza, the subject, non-anonymous (100).
    pres, subject, occupants, history = await bmuc.join_muc_wait(
        ROOM, "Bob", maxstanzas=1, timeout=STEP_SECONDS
    )
    check({110, 100} <= codes(pres), f"bob's join codes: {codes(pres)}")
    check_equal([m["body"] for m in history], ["second"], "history bob got")
    check_equal(subject["subject"], "Potions", "subject bob got")
    by_nick = {o["from"].resource: o for o in occupants}
    check("Alice" in by_nick, f"occupants bob saw: {sorted(by_nick)}")
    check_equal(str(by_nick["Alice"]["muc"]["jid"]), alice.full_jid, "alice's real JID (non-anonymous)")
    await next_of(bob_self, "join self-presence")  # the join's own self-presence

    # Talk.
    alice.client.send_message(mto=ROOM, mbody="welcome", mtype="groupchat")
    while True:
        m = await next_of(bob_chat, "groupchat message")
        if m["body"] == "welcome":
            break
    check_equal(str(m["from"]), f"{ROOM}/Alice", "from of alice's message")

    # Nickname change (303).
    new_nick = await bmuc.set_self_nick(ROOM, "Robert", timeout=STEP_SECONDS)
    check_equal(new_nick, "Robert", "new nickname")
    while (p := await next_of(bob_self, "self-presence under the new nick"))["from"].resource != "Robert":
        pass

    # Kick (307).
    await amuc.set_role(ROOM, "Robert", "none", reason="out", timeout=STEP_SECONDS)
    p = await next_of(bob_self, "kick self-presence")
    check_equal(p["type"], "unavailable", "kicked presence type")
    check({110, 307} <= codes(p), f"kick codes: {codes(p)}")
    await bmuc.join_muc_wait(ROOM, "Bob", maxstanzas=0, timeout=STEP_SECONDS)
    await next_of(bob_self, "rejoin self-presence")

    # Ban (301), then no way back.
    await amuc.set_affiliation(ROOM, "outcast", jid=bare("bob"), reason="banned", timeout=STEP_SECONDS)
    p = await next_of(bob_self, "ban self-presence")
    check({110, 301} <= codes(p), f"ban codes: {codes(p)}")
    try:
        await bmuc.join_muc_wait(ROOM, "Bob", timeout=STEP_SECONDS)
        raise AssertionError("a banned user entered the room")
    except PresenceError as e:
        check_equal(e.condition, "forbidden", "banned user's join error")
    outcasts = await amuc.get_affiliation_list(ROOM, "outcast", timeout=STEP_SECONDS)
    check_equal([str(j) for j in outcasts], [bare("bob")], "outcast list")

    # Destroy with an alternate venue.
    await amuc.destroy(ROOM, reason="closing", altroom=f"haven@{SERVICE}", timeout=STEP_SECONDS)
    await alice.logout()
    await bob.logout()


run_test(main)
