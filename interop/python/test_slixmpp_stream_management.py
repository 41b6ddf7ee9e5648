"""slixmpp: stream management (XEP-0198) with acks and resumption after a forced disconnect.

alice logs in with slixmpp's xep_0198 plugin, which enables stream management with
resumption after binding: the server answers <enabled/> with an id. With an ack request after
every stanza she sends (window 1), her message to bob is acknowledged by the server
(slixmpp's `stanza_acked` event), and her own handled count follows bob's messages. Then her
TCP connection is cut (slixmpp's abort(): no closing tag), bob sends two messages while she
is away, and alice reconnects: slixmpp sends <resume previd h/>, the server answers <resumed/> (no new bind, no
new session_start), and the two messages arrive, each once. Both close their streams.
"""

import asyncio

from harness import (
    C2S_PORT,
    STEP_SECONDS,
    Peer,
    TestFailure,
    check,
    check_equal,
    run_test,
)


async def wait_event(client, name: str):
    """Waits (bounded) for one slixmpp event; returns its argument."""
    future = asyncio.get_running_loop().create_future()

    def handler(arg):
        if not future.done():
            future.set_result(arg)

    client.add_event_handler(name, handler, disposable=True)
    try:
        return await asyncio.wait_for(future, STEP_SECONDS)
    except asyncio.TimeoutError:
        raise TestFailure(f"no {name} event within {STEP_SECONDS}s") from None


async def main() -> None:
    alice = Peer("alice", resource="train")
    alice.client.register_plugin("xep_0198")
    sm = alice.client.plugin["xep_0198"]
    # An ack request after every stanza alice sends (the counter starts at the window).
    sm.window = 1
    sm.window_counter = 1
    acked: asyncio.Queue = asyncio.Queue()
    alice.client.add_event_handler("stanza_acked", acked.put_nowait)
    bob = Peer("bob", resource="home")

    enabled = asyncio.ensure_future(wait_event(alice.client, "sm_enabled"))
    await alice.login()
    await enabled
    check(bool(sm.sm_id), "the server gave a resumption id")
    await bob.login()

    # alice's message is acknowledged by the server.
    alice.send_chat(bob.full_jid, "on the train")
    got = await bob.next_message()
    check_equal(got["body"], "on the train", "bob's message")
    # slixmpp writes its window's <r/> before the stanza that fills the window, so ask once
    # more now that the message is out.
    sm.request_ack()
    while True:
        try:
            stanza = await asyncio.wait_for(acked.get(), STEP_SECONDS)
        except asyncio.TimeoutError:
            raise TestFailure("the server never acknowledged alice's message") from None
        if stanza.name == "message" and stanza["body"] == "on the train":
            break
    check(not sm.unacked_queue, f"still unacknowledged: {list(sm.unacked_queue)}")

    # bob's messages count towards alice's handled counter.
    handled_before = sm.handled
    bob.send_chat(alice.full_jid, "hello 1")
    got = await alice.next_message()
    check_equal(got["body"], "hello 1", "first message")
    check(sm.handled == handled_before + 1, f"handled {sm.handled}, was {handled_before}")

    # The train enters a tunnel: the TCP connection dies without a closing tag.
    alice.client.abort()
    await asyncio.sleep(0.5)
    bob.send_chat(alice.full_jid, "hello 2")
    bob.send_chat(alice.full_jid, "hello 3")
    await bob.ping_server()

    resumed = asyncio.ensure_future(wait_event(alice.client, "session_resumed"))
    alice.client.connect(host="127.0.0.1", port=C2S_PORT)
    await resumed
    bodies = []
    for _ in range(2):
        bodies.append((await alice.next_message())["body"])
    check_equal(bodies, ["hello 2", "hello 3"], "messages sent while alice was away")
    await alice.ping_server()
    check(alice.messages.empty(), "no message arrives twice")

    await alice.logout()
    await bob.logout()


if __name__ == "__main__":
    run_test(main)
