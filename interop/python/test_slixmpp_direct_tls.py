"""slixmpp: logins over direct TLS (XEP-0368), channel binding, and refused passwords.

1. alice logs in on the direct-TLS port with SCRAM-SHA-256: TLS from the first byte, so the
   server offers no STARTTLS; it offers SCRAM-SHA-256-PLUS and announces its channel-binding
   types (XEP-0440). The session answers a ping.
2. carol logs in on the direct-TLS port with PLAIN (allowed: the stream is encrypted).
3. SCRAM-SHA-256-PLUS: slixmpp 1.17 binds only with `tls-unique` (Python's ssl module has no
   `tls-exporter`, so on TLS 1.3 slixmpp gives -PLUS up before sending anything). The server
   (rustls) has no `tls-unique`, so the one -PLUS login slixmpp can attempt is over TLS 1.2
   with `p=tls-unique`, and the server must refuse it (RFC 5802 §6: an unsupported
   channel-binding type fails authentication) rather than accept unbound credentials. A
   plain SCRAM-SHA-256 login over TLS 1.2 right after shows TLS 1.2 itself works.
4. bob with a wrong password: SCRAM-SHA-256 on direct TLS, and PLAIN after STARTTLS, both end
   in <not-authorized/> (RFC 6120 §6.5.10); so does an account that does not exist (no
   telling which accounts exist).
"""

import ssl

from harness import (
    DOMAIN,
    Peer,
    TestFailure,
    check,
    check_equal,
    run_test,
)

SASL_CB_NS = "urn:xmpp:sasl-cb:0"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"


def channel_binding_types(peer: Peer) -> set[str]:
    """The XEP-0440 channel-binding types announced in the pre-auth stream features."""
    types: set[str] = set()
    for features in peer.stream_features:
        for element in features.xml.iter(f"{{{SASL_CB_NS}}}channel-binding"):
            types.add(element.get("type"))
    return types


async def direct_tls_scram() -> None:
    alice = Peer("alice", resource="direct", transport="direct-tls", mechanisms=["SCRAM-SHA-256"])
    await alice.login()
    check_equal(alice.mechanism, "SCRAM-SHA-256", "SASL mechanism used")
    check(alice.tls_version is not None, "direct TLS: the socket is not TLS")
    check(
        "starttls" not in alice.client.features,
        "direct TLS: STARTTLS negotiated on a stream that was already encrypted",
    )
    check(
        "SCRAM-SHA-256-PLUS" in alice.offered_mechanisms,
        f"SCRAM-SHA-256-PLUS not offered: {sorted(alice.offered_mechanisms)}",
    )
    cb_types = channel_binding_types(alice)
    check(
        "tls-exporter" in cb_types or "tls-server-end-point" in cb_types,
        f"XEP-0440 channel-binding types announced: {sorted(cb_types)}",
    )
    await alice.ping_server()
    await alice.logout()


async def direct_tls_plain() -> None:
    carol = Peer("carol", resource="direct", transport="direct-tls", mechanisms=["PLAIN"])
    await carol.login()
    check_equal(carol.mechanism, "PLAIN", "SASL mechanism used")
    await carol.logout()


async def scram_plus_with_tls_unique_refused() -> None:
    peer = Peer(
        "alice",
        resource="plus",
        transport="direct-tls",
        mechanisms=["SCRAM-SHA-256-PLUS"],
        max_tls=ssl.TLSVersion.TLSv1_2,
    )
    try:
        condition = await peer.login_refused()
    except TestFailure as e:
        raise TestFailure(f"SCRAM-SHA-256-PLUS with tls-unique over TLS 1.2: {e}") from None
    check(
        peer.mechanism is None,
        f"SCRAM-SHA-256-PLUS with tls-unique succeeded as {peer.mechanism}",
    )
    check(condition != "", "empty SASL failure condition")
    print(f"  SCRAM-SHA-256-PLUS with p=tls-unique over TLS 1.2 refused: <{condition}/>")

    tls12 = Peer(
        "alice",
        resource="tls12",
        transport="direct-tls",
        mechanisms=["SCRAM-SHA-256"],
        max_tls=ssl.TLSVersion.TLSv1_2,
    )
    await tls12.login()
    check_equal(tls12.tls_version, "TLSv1.2", "TLS version with maximum_version=TLSv1_2")
    await tls12.logout()


async def wrong_passwords_refused() -> None:
    attempts = [
        ("bob", "direct-tls", "SCRAM-SHA-256", "wrong password, SCRAM-SHA-256, direct TLS"),
        ("bob", "starttls", "PLAIN", "wrong password, PLAIN, STARTTLS"),
        ("nobody", "direct-tls", "SCRAM-SHA-256", "unknown account, SCRAM-SHA-256, direct TLS"),
    ]
    for user, transport, mechanism, what in attempts:
        peer = Peer(
            user,
            resource="wrong",
            secret="not-the-password",
            transport=transport,
            mechanisms=[mechanism],
        )
        try:
            condition = await peer.login_refused()
        except TestFailure as e:
            raise TestFailure(f"{what}: {e}") from None
        check_equal(condition, "not-authorized", f"{what}: SASL failure condition")


async def main() -> None:
    check(DOMAIN != "", "no domain")
    await direct_tls_scram()
    await direct_tls_plain()
    await scram_plus_with_tls_unique_refused()
    await wrong_passwords_refused()


if __name__ == "__main__":
    run_test(main)
