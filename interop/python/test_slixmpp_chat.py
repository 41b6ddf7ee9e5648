"""slixmpp: two accounts log in over STARTTLS with SCRAM-SHA-256 and chat both ways.

alice logs in (STARTTLS, SASL restricted to SCRAM-SHA-256; slixmpp checks the server's
signature in the final SCRAM message, so a wrong server proof fails the login), bob does too.
alice sends to bob's full JID: bob receives it with alice's full JID as 'from' and his own
full JID as 'to' (RFC 6120 §8.1.2.1: the server stamps 'from'). bob answers to alice's bare
JID: alice, the only available resource, receives it with bob's full JID as 'from' and her
bare JID as 'to' (RFC 6121 §8.5.2.1.1). Both close their streams.
"""

from harness import (
    DOMAIN,
    Peer,
    bare,
    check,
    check_equal,
    run_test,
)

MECHANISM = "SCRAM-SHA-256"


async def main() -> None:
    alice = Peer("alice", resource="balcony", mechanisms=[MECHANISM])
    bob = Peer("bob", resource="garden", mechanisms=[MECHANISM])
    await alice.login()
    await bob.login()

    for peer in (alice, bob):
        check_equal(peer.mechanism, MECHANISM, f"{peer.full_jid}: SASL mechanism used")
        check(
            "starttls" in peer.client.features,
            f"{peer.full_jid}: STARTTLS was not negotiated (features: {peer.client.features})",
        )
        check(
            peer.tls_version in ("TLSv1.2", "TLSv1.3"),
            f"{peer.full_jid}: TLS version {peer.tls_version}",
        )
        check(
            {"SCRAM-SHA-1", "SCRAM-SHA-256"} <= peer.offered_mechanisms,
            f"offered SASL mechanisms: {sorted(peer.offered_mechanisms)}",
        )

    # alice -> bob's full JID
    body = "Wherefore art thou, bob? \u2014 \u00e9t\u00e9 <&> \U0001f426"
    alice.send_chat(bob.full_jid, body)
    got = await bob.next_message()
    check_equal(got["body"], body, "body bob received")
    check_equal(str(got["from"]), alice.full_jid, "'from' of alice's message")
    check_equal(str(got["to"]), bob.full_jid, "'to' of alice's message")
    check_equal(got["type"], "chat", "type of alice's message")

    # bob -> alice's bare JID
    answer = "In the garden, alice."
    bob.send_chat(bare("alice"), answer)
    got = await alice.next_message()
    check_equal(got["body"], answer, "body alice received")
    check_equal(str(got["from"]), bob.full_jid, "'from' of bob's answer")
    check_equal(str(got["to"]), bare("alice"), "'to' of bob's answer")
    check_equal(got["type"], "chat", "type of bob's answer")

    check(alice.messages.empty() and bob.messages.empty(), "an unexpected extra message")
    check_equal(alice.client.boundjid.domain, DOMAIN, "alice's domain")

    await alice.logout()
    await bob.logout()


if __name__ == "__main__":
    run_test(main)
