//! Transcripts for presence subscriptions, RFC 6121 §3 (and the roster side effects of §2.5):
//! the request/approval flow, denial, unsubscribe and cancellation, pre-approval (§3.4),
//! redelivery of pending requests at login (§3.1.3), requests to unknown users and remote
//! domains, and removing a contact with subscriptions. Every stanza each party receives is
//! asserted, in order, and `quiet` proves nothing else arrives.

mod im_support;

use im_support::*;
use starling_tests::stanza_error_condition;

#[tokio::test]
async fn alice_subscribes_to_bob_bob_approves_and_they_see_each_other() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    // The whole §3.1 exchange in both directions (asserted step by step in the helper).
    befriend(&mut alice, &mut bob).await;
    assert_eq!(
        items(&roster_get(&mut alice, None).await.unwrap()),
        [("bob@localhost".into(), "both".into(), None)]
    );

    // §4.4: subsequent presence reaches the subscriber and the sender itself.
    alice
        .send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    let me = expect_presence(
        &mut alice,
        "alice@localhost/phone",
        "alice@localhost/phone",
        None,
    )
    .await;
    assert_eq!(me.get_child("show", CLIENT).unwrap().text(), "away");
    quiet(&mut alice).await;
    let got = expect_presence(&mut bob, "alice@localhost/phone", "bob@localhost", None).await;
    assert_eq!(got.get_child("status", CLIENT).unwrap().text(), "lunch");
    quiet(&mut bob).await;

    // A repeated request while subscribed: routed (A.2.1), bob's server answers `subscribed`
    // by itself (A.3.1) with bob's presence; alice's state does not change, so the answer is
    // not delivered and nothing is pushed.
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    expect_presence(&mut alice, "bob@localhost/laptop", "alice@localhost", None).await;
    quiet(&mut alice).await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn bob_denies_the_request() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    alice
        .send("<presence to='bob@localhost' type='subscribe' id='req'><status>it's alice</status></presence>")
        .await;
    expect_push(&mut alice, "bob@localhost", "none", Some("subscribe")).await;
    quiet(&mut alice).await;
    // The request keeps its id and content; alice is not put on bob's roster (§3.1.3).
    let req = expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("subscribe"),
    )
    .await;
    assert_eq!(req.attr("id"), Some("req"));
    assert_eq!(
        req.get_child("status", CLIENT).unwrap().text(),
        "it's alice"
    );
    quiet(&mut bob).await;
    assert_eq!(
        roster_get(&mut bob, None).await.unwrap().children().count(),
        0
    );

    // A second request while one is pending is not delivered again (A.3.1).
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    quiet(&mut alice).await;
    quiet(&mut bob).await;

    // bob says no (A.2.4): no push for bob (alice was never on his roster); alice learns it.
    bob.send("<presence to='alice@localhost' type='unsubscribed'/>")
        .await;
    quiet(&mut bob).await;
    expect_presence(
        &mut alice,
        "bob@localhost",
        "alice@localhost",
        Some("unsubscribed"),
    )
    .await;
    expect_push(&mut alice, "bob@localhost", "none", None).await;
    quiet(&mut alice).await;

    // Approving now is a pre-approval, not an answer: nothing is routed to alice.
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let item = expect_push(&mut bob, "alice@localhost", "none", None).await;
    assert_eq!(item.attr("approved"), Some("true"));
    quiet(&mut bob).await;
    quiet(&mut alice).await;
}

#[tokio::test]
async fn unsubscribe_and_cancel_end_the_subscriptions() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;

    // §3.3: alice unsubscribes from bob's presence.
    alice
        .send("<presence to='bob@localhost' type='unsubscribe'/>")
        .await;
    expect_push(&mut alice, "bob@localhost", "from", None).await;
    // bob's server makes bob's resources unavailable to alice (§3.3.3); its automatic
    // `unsubscribed` answer changes nothing for alice and is not delivered (A.3.4).
    expect_presence(
        &mut alice,
        "bob@localhost/laptop",
        "alice@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut alice).await;
    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("unsubscribe"),
    )
    .await;
    expect_push(&mut bob, "alice@localhost", "to", None).await;
    quiet(&mut bob).await;

    // bob's presence no longer reaches alice; alice's still reaches bob.
    bob.send("<presence><show>dnd</show></presence>").await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
    quiet(&mut alice).await;
    alice.send("<presence><show>xa</show></presence>").await;
    expect_presence(
        &mut alice,
        "alice@localhost/phone",
        "alice@localhost/phone",
        None,
    )
    .await;
    quiet(&mut alice).await;
    expect_presence(&mut bob, "alice@localhost/phone", "bob@localhost", None).await;
    quiet(&mut bob).await;

    // §3.2: alice cancels bob's subscription: bob first gets alice's unavailable, then the
    // cancellation and his push.
    alice
        .send("<presence to='bob@localhost' type='unsubscribed'/>")
        .await;
    expect_push(&mut alice, "bob@localhost", "none", None).await;
    quiet(&mut alice).await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("unsubscribed"),
    )
    .await;
    expect_push(&mut bob, "alice@localhost", "none", None).await;
    quiet(&mut bob).await;

    // Neither sees the other's presence any more.
    alice.send("<presence/>").await;
    expect_presence(
        &mut alice,
        "alice@localhost/phone",
        "alice@localhost/phone",
        None,
    )
    .await;
    quiet(&mut alice).await;
    quiet(&mut bob).await;
    // Cancelling again changes nothing and is not routed (A.2.4).
    alice
        .send("<presence to='bob@localhost' type='unsubscribed'/>")
        .await;
    quiet(&mut alice).await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn pre_approval_section_3_4() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    // bob pre-approves alice: a roster item with approved='true', nothing routed.
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    let item = expect_push(&mut bob, "alice@localhost", "none", None).await;
    assert_eq!(item.attr("approved"), Some("true"));
    quiet(&mut bob).await;
    quiet(&mut alice).await;

    // alice's request is approved by bob's server at once; bob never sees it.
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    expect_push(&mut alice, "bob@localhost", "none", Some("subscribe")).await;
    expect_presence(
        &mut alice,
        "bob@localhost",
        "alice@localhost",
        Some("subscribed"),
    )
    .await;
    expect_push(&mut alice, "bob@localhost", "to", None).await;
    expect_presence(&mut alice, "bob@localhost/laptop", "alice@localhost", None).await;
    quiet(&mut alice).await;
    let item = expect_push(&mut bob, "alice@localhost", "from", None).await;
    assert_eq!(item.attr("approved"), None, "the pre-approval is used up");
    quiet(&mut bob).await;

    // A pre-approval can be withdrawn (§3.4.1 end): carol is pre-approved, then not.
    bob.send("<presence to='carol@localhost' type='subscribed'/>")
        .await;
    let item = expect_push(&mut bob, "carol@localhost", "none", None).await;
    assert_eq!(item.attr("approved"), Some("true"));
    bob.send("<presence to='carol@localhost' type='unsubscribed'/>")
        .await;
    let item = expect_push(&mut bob, "carol@localhost", "none", None).await;
    assert_eq!(item.attr("approved"), None);
    quiet(&mut bob).await;
    // carol's request now waits for bob.
    let mut carol = online(&server, "carol", "tablet").await;
    carol
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    expect_push(&mut carol, "bob@localhost", "none", Some("subscribe")).await;
    quiet(&mut carol).await;
    expect_presence(
        &mut bob,
        "carol@localhost",
        "bob@localhost",
        Some("subscribe"),
    )
    .await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn pending_requests_are_delivered_again_at_each_login() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    // bob is offline: the request is kept (§3.1.3).
    alice
        .send("<presence to='bob@localhost' type='subscribe'><nick xmlns='http://jabber.org/protocol/nick'>Al</nick></presence>")
        .await;
    expect_push(&mut alice, "bob@localhost", "none", Some("subscribe")).await;
    quiet(&mut alice).await;

    for resource in ["laptop", "desk"] {
        let mut bob = server.login("bob", "pw-bob", resource).await;
        assert_eq!(
            roster_get(&mut bob, None).await.unwrap().children().count(),
            0
        );
        quiet(&mut bob).await;
        bob.send("<presence/>").await;
        let me = format!("bob@localhost/{resource}");
        expect_presence(&mut bob, &me, &me, None).await;
        let req = expect_presence(
            &mut bob,
            "alice@localhost",
            "bob@localhost",
            Some("subscribe"),
        )
        .await;
        assert!(
            req.get_child("nick", "http://jabber.org/protocol/nick")
                .is_some(),
            "the stored request keeps its content"
        );
        quiet(&mut bob).await;
        bob.close().await;
        // bob was never subscribed to by alice: no presence for her.
        quiet(&mut alice).await;
    }

    // Once answered, nothing more is delivered at login.
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    roster_get(&mut bob, None).await;
    bob.send("<presence/>").await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("subscribe"),
    )
    .await;
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    expect_push(&mut bob, "alice@localhost", "from", None).await;
    quiet(&mut bob).await;
    bob.close().await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    roster_get(&mut bob, None).await;
    bob.send("<presence/>").await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn requests_to_unknown_users_are_dropped_and_remote_ones_routed() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    // §3.1.3: no such local user: the request vanishes, no error.
    alice
        .send("<presence to='nobody@localhost' type='subscribe'/>")
        .await;
    expect_push(&mut alice, "nobody@localhost", "none", Some("subscribe")).await;
    quiet(&mut alice).await;
    // A remote domain: routed, and (no federation yet) bounced.
    alice
        .send("<presence to='dana@remote.example' type='subscribe' id='r1'/>")
        .await;
    expect_push(&mut alice, "dana@remote.example", "none", Some("subscribe")).await;
    let err = alice.recv().await;
    assert_eq!(err.name(), "presence");
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(err.attr("from"), Some("dana@remote.example"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
    quiet(&mut alice).await;
}

#[tokio::test]
async fn removing_a_contact_ends_both_subscriptions() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;

    // §2.5.2: alice removes bob: unsubscribe and unsubscribed go to bob.
    let answer = roster_set(
        &mut alice,
        "<item jid='bob@localhost' subscription='remove'/>",
    )
    .await;
    assert_push(&answer, "bob@localhost", "remove", None);
    expect_presence(
        &mut alice,
        "bob@localhost/laptop",
        "alice@localhost",
        Some("unavailable"),
    )
    .await;
    expect_result(&mut alice, "rs").await;
    quiet(&mut alice).await;

    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("unsubscribe"),
    )
    .await;
    expect_push(&mut bob, "alice@localhost", "to", None).await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("unsubscribed"),
    )
    .await;
    expect_push(&mut bob, "alice@localhost", "none", None).await;
    quiet(&mut bob).await;

    assert_eq!(
        roster_get(&mut alice, None)
            .await
            .unwrap()
            .children()
            .count(),
        0
    );
    assert_eq!(
        items(&roster_get(&mut bob, None).await.unwrap()),
        [("alice@localhost".into(), "none".into(), None)]
    );
}
