//! Transcripts for presence, RFC 6121 §4: initial presence with probes and their answers
//! (§4.2, §4.3), subsequent and unavailable presence (§4.4, §4.5, also when the connection
//! just ends), directed presence and the unavailable that undoes it (§4.6), several resources
//! of one account, and that presence never reaches anyone without a subscription or directed
//! presence.

mod im_support;

use im_support::*;

#[tokio::test]
async fn initial_presence_probes_contacts_and_reaches_subscribers() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;

    // bob logs off: alice sees him go.
    bob.close().await;
    expect_presence(
        &mut alice,
        "bob@localhost/laptop",
        "alice@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut alice).await;

    // bob comes back: his probe is answered with alice's presence (to his full JID), then his
    // own presence comes back to him; alice gets his initial presence.
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    roster_get(&mut bob, None).await;
    bob.send("<presence><priority>5</priority></presence>")
        .await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost/laptop",
        None,
    )
    .await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
    let got = expect_presence(&mut alice, "bob@localhost/laptop", "alice@localhost", None).await;
    assert_eq!(got.get_child("priority", CLIENT).unwrap().text(), "5");
    quiet(&mut alice).await;

    // An explicit unavailable goes to subscribers; later presence is initial presence again.
    bob.send("<presence type='unavailable'><status>bye</status></presence>")
        .await;
    quiet(&mut bob).await;
    let got = expect_presence(
        &mut alice,
        "bob@localhost/laptop",
        "alice@localhost",
        Some("unavailable"),
    )
    .await;
    assert_eq!(got.get_child("status", CLIENT).unwrap().text(), "bye");
    quiet(&mut alice).await;
    bob.send("<presence/>").await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost/laptop",
        None,
    )
    .await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
    expect_presence(&mut alice, "bob@localhost/laptop", "alice@localhost", None).await;
    quiet(&mut alice).await;
}

#[tokio::test]
async fn a_probe_for_an_offline_contact_is_answered_with_unavailable() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;
    bob.close().await;
    alice.close().await;

    // §4.3.2: bob has no available resource: the answer is unavailable from his bare JID.
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    roster_get(&mut alice, None).await;
    alice.send("<presence/>").await;
    expect_presence(
        &mut alice,
        "bob@localhost",
        "alice@localhost/phone",
        Some("unavailable"),
    )
    .await;
    expect_presence(
        &mut alice,
        "alice@localhost/phone",
        "alice@localhost/phone",
        None,
    )
    .await;
    quiet(&mut alice).await;
}

#[tokio::test]
async fn presence_never_leaks_without_a_subscription() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    let mut carol = online(&server, "carol", "tablet").await;
    befriend(&mut alice, &mut bob).await;

    // carol is on alice's roster without any subscription: she sees nothing.
    let answer = roster_set(&mut alice, "<item jid='carol@localhost'/>").await;
    assert_push(&answer, "carol@localhost", "none", None);
    expect_result(&mut alice, "rs").await;
    alice.send("<presence><show>chat</show></presence>").await;
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
    quiet(&mut carol).await;

    // A probe from carol gets no presence (§4.3.2: `unsubscribed`, which carol's server does
    // not deliver since carol has nothing to cancel); alice never sees the probe.
    carol
        .send("<presence to='alice@localhost' type='probe'/>")
        .await;
    quiet(&mut carol).await;
    quiet(&mut alice).await;

    // Pending requests do not open the door either.
    carol
        .send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    expect_push(&mut carol, "alice@localhost", "none", Some("subscribe")).await;
    quiet(&mut carol).await;
    expect_presence(
        &mut alice,
        "carol@localhost",
        "alice@localhost",
        Some("subscribe"),
    )
    .await;
    quiet(&mut alice).await;
    alice.send("<presence><show>dnd</show></presence>").await;
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
    quiet(&mut carol).await;
}

#[tokio::test]
async fn directed_presence_is_undone_at_logoff() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    let mut carol = online(&server, "carol", "tablet").await;
    befriend(&mut alice, &mut bob).await;

    // §4.6: alice sends directed presence to carol (no subscription) and to bob (subscribed).
    alice
        .send("<presence to='carol@localhost/tablet'><show>chat</show></presence>")
        .await;
    alice.send("<presence to='bob@localhost'/>").await;
    quiet(&mut alice).await;
    expect_presence(
        &mut carol,
        "alice@localhost/phone",
        "carol@localhost/tablet",
        None,
    )
    .await;
    quiet(&mut carol).await;
    expect_presence(&mut bob, "alice@localhost/phone", "bob@localhost", None).await;
    quiet(&mut bob).await;

    // Broadcast presence still goes only to the subscriber.
    alice.send("<presence><show>away</show></presence>").await;
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
    quiet(&mut carol).await;

    // The connection simply ends: bob (subscriber) and carol (directed) each get one
    // unavailable.
    alice.close().await;
    expect_presence(
        &mut carol,
        "alice@localhost/phone",
        "carol@localhost/tablet",
        Some("unavailable"),
    )
    .await;
    quiet(&mut carol).await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut bob).await;

    // A directed unavailable ends the directed presence early: nothing more at logoff.
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    roster_get(&mut alice, None).await;
    alice.send("<presence/>").await;
    expect_presence(
        &mut alice,
        "bob@localhost/laptop",
        "alice@localhost/phone",
        None,
    )
    .await;
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
    alice.send("<presence to='carol@localhost'/>").await;
    alice
        .send("<presence to='carol@localhost' type='unavailable'/>")
        .await;
    quiet(&mut alice).await;
    expect_presence(&mut carol, "alice@localhost/phone", "carol@localhost", None).await;
    expect_presence(
        &mut carol,
        "alice@localhost/phone",
        "carol@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut carol).await;
    alice.close().await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut bob).await;
    quiet(&mut carol).await;
}

#[tokio::test]
async fn two_resources_see_each_other_and_subscribers_see_both() {
    let server = server().await;
    let mut phone = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut phone, &mut bob).await;

    // A second resource: it gets bob's presence (probe answer), its own presence, then the
    // presence of alice's other resource; the phone and bob see it arrive.
    let mut laptop = server.login("alice", "pw-alice", "laptop").await;
    roster_get(&mut laptop, None).await;
    laptop
        .send("<presence><priority>-1</priority></presence>")
        .await;
    expect_presence(
        &mut laptop,
        "bob@localhost/laptop",
        "alice@localhost/laptop",
        None,
    )
    .await;
    expect_presence(
        &mut laptop,
        "alice@localhost/laptop",
        "alice@localhost/laptop",
        None,
    )
    .await;
    expect_presence(
        &mut laptop,
        "alice@localhost/phone",
        "alice@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut laptop).await;
    let got = expect_presence(
        &mut phone,
        "alice@localhost/laptop",
        "alice@localhost/phone",
        None,
    )
    .await;
    assert_eq!(got.get_child("priority", CLIENT).unwrap().text(), "-1");
    quiet(&mut phone).await;
    expect_presence(&mut bob, "alice@localhost/laptop", "bob@localhost", None).await;
    quiet(&mut bob).await;

    // bob's presence reaches both resources (it is addressed to the bare JID).
    bob.send("<presence><show>away</show></presence>").await;
    expect_presence(
        &mut bob,
        "bob@localhost/laptop",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
    for c in [&mut phone, &mut laptop] {
        expect_presence(c, "bob@localhost/laptop", "alice@localhost", None).await;
        quiet(c).await;
    }

    // A message to alice's bare JID goes to the phone only (laptop has negative priority).
    bob.send("<message to='alice@localhost' type='chat'><body>hi</body></message>")
        .await;
    quiet(&mut bob).await;
    let msg = phone.recv().await;
    assert_eq!(msg.name(), "message");
    quiet(&mut phone).await;
    quiet(&mut laptop).await;

    // The laptop goes unavailable: the phone and bob see it; the phone stays.
    laptop.send("<presence type='unavailable'/>").await;
    quiet(&mut laptop).await;
    expect_presence(
        &mut phone,
        "alice@localhost/laptop",
        "alice@localhost/phone",
        Some("unavailable"),
    )
    .await;
    quiet(&mut phone).await;
    expect_presence(
        &mut bob,
        "alice@localhost/laptop",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    quiet(&mut bob).await;
    // A probe from bob (his own client may send one) is answered with the phone only.
    bob.send("<presence to='alice@localhost' type='probe'/>")
        .await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost/laptop",
        None,
    )
    .await;
    quiet(&mut bob).await;
}

/// A status change goes to the subscribers of the moment, also after earlier status changes
/// (which the server may answer from a copy of the roster in memory) and a change that the
/// contact, not the user, made to the user's roster.
#[tokio::test]
async fn status_changes_follow_the_roster_as_it_changes() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;
    let status = |show: &'static str| format!("<presence><show>{show}</show></presence>");
    let me = "alice@localhost/phone";

    for show in ["away", "xa"] {
        alice.send(&status(show)).await;
        expect_presence(&mut alice, me, me, None).await;
        quiet(&mut alice).await;
        let got = expect_presence(&mut bob, me, "bob@localhost", None).await;
        assert_eq!(got.get_child("show", CLIENT).unwrap().text(), show);
        quiet(&mut bob).await;
    }

    // bob unsubscribes: alice's item for bob loses `from`, by bob's doing.
    bob.send("<presence to='alice@localhost' type='unsubscribe'/>")
        .await;
    expect_push(&mut bob, "alice@localhost", "from", None).await;
    expect_presence(&mut bob, me, "bob@localhost", Some("unavailable")).await;
    quiet(&mut bob).await;
    expect_presence(
        &mut alice,
        "bob@localhost",
        "alice@localhost",
        Some("unsubscribe"),
    )
    .await;
    expect_push(&mut alice, "bob@localhost", "to", None).await;
    quiet(&mut alice).await;
    alice.send(&status("dnd")).await;
    expect_presence(&mut alice, me, me, None).await;
    quiet(&mut alice).await;
    quiet(&mut bob).await;

    // bob asks again and alice approves: her next status reaches him again.
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    expect_push(&mut bob, "alice@localhost", "from", Some("subscribe")).await;
    quiet(&mut bob).await;
    expect_presence(
        &mut alice,
        "bob@localhost",
        "alice@localhost",
        Some("subscribe"),
    )
    .await;
    quiet(&mut alice).await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    expect_push(&mut alice, "bob@localhost", "both", None).await;
    quiet(&mut alice).await;
    expect_presence(
        &mut bob,
        "alice@localhost",
        "bob@localhost",
        Some("subscribed"),
    )
    .await;
    expect_push(&mut bob, "alice@localhost", "both", None).await;
    expect_presence(&mut bob, me, "bob@localhost", None).await;
    quiet(&mut bob).await;
    alice.send(&status("chat")).await;
    expect_presence(&mut alice, me, me, None).await;
    quiet(&mut alice).await;
    let got = expect_presence(&mut bob, me, "bob@localhost", None).await;
    assert_eq!(got.get_child("show", CLIENT).unwrap().text(), "chat");
    quiet(&mut bob).await;
}
