"""slixmpp: message archive paging (XEP-0313 with RSM, XEP-0059) over more than 1,000
archived messages.

alice sends bob 1,100 chat messages, numbered; bob receives them live. Then bob pages through
his archive with slixmpp's own MAM iterator (`with` alice, 100 per page) forwards and
backwards: each pass must return every message exactly once, in order (oldest first forwards,
newest first backwards), each with a distinct archive id, and the bodies must be the ones sent.
"""

import asyncio

from harness import Peer, bare, check, check_equal, run_test

COUNT = 1100
PAGE = 100


async def collect(bob: Peer, reverse: bool) -> list:
    mam = bob.client.plugin["xep_0313"]
    return [
        message
        async for message in mam.iterate(
            with_jid=bare("alice"), reverse=reverse, rsm={"max": PAGE}
        )
    ]


def bodies_and_ids(results: list) -> tuple[list[str], list[str]]:
    bodies, ids = [], []
    for result in results:
        forwarded = result["mam_result"]["forwarded"]["stanza"]
        bodies.append(forwarded["body"])
        ids.append(result["mam_result"]["id"])
    return bodies, ids


async def main() -> None:
    alice = Peer("alice", resource="desk")
    bob = Peer("bob", resource="phone")
    bob.client.register_plugin("xep_0059")
    bob.client.register_plugin("xep_0313")
    await alice.login()
    await bob.login()

    sent = [f"message {i:04d}" for i in range(COUNT)]
    for i, body in enumerate(sent):
        alice.send_chat(bare("bob"), body)
        if i % 100 == 99:
            await alice.ping_server()  # keep the sender's burst bounded
    await alice.ping_server()
    for i in range(COUNT):
        got = await bob.next_message()
        check_equal(got["body"], sent[i], f"live message {i}")

    forwards = await collect(bob, reverse=False)
    bodies, ids = bodies_and_ids(forwards)
    check_equal(len(bodies), COUNT, "messages paged forwards")
    check_equal(bodies, sent, "bodies paged forwards, oldest first")
    check_equal(len(set(ids)), COUNT, "distinct archive ids")

    backwards = await collect(bob, reverse=True)
    bodies_back, ids_back = bodies_and_ids(backwards)
    check_equal(len(bodies_back), COUNT, "messages paged backwards")
    check_equal(bodies_back, list(reversed(sent)), "bodies paged backwards, newest first")
    check(ids_back == list(reversed(ids)), "backwards pass returned other archive ids")

    await alice.logout()
    await bob.logout()


run_test(main)
