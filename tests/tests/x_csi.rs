//! Transcripts for client state indication (XEP-0352): the feature is offered after
//! authentication; while alice is inactive, bob's presence updates are held (only the latest
//! reaches her) and his messages arrive at once; when alice is active again, the held presence
//! arrives; standalone chat states are dropped without an error to the sender.

mod im_support;

use im_support::*;
use starling_sasl::ScramHash;
use starling_tests::*;

const CSI: &str = "urn:xmpp:csi:0";

#[tokio::test]
async fn csi_is_offered_after_authentication() {
    let server = server().await;
    let mut c = Conn::connect(server.c2s).await;
    let before = c.open("localhost").await;
    assert!(before.get_child("csi", CSI).is_none());
    c.starttls().await;
    let features = c
        .scram(ScramHash::Sha256, false, "alice", "pw-alice")
        .await
        .unwrap();
    assert!(
        features.get_child("csi", CSI).is_some(),
        "{}",
        xml(&features)
    );
    c.bind(Some("phone")).await;
    // The nonzas are accepted silently.
    c.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    c.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    quiet(&mut c).await;
}

#[tokio::test]
async fn inactive_holds_presence_and_delivers_messages() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;
    let bob_full = "bob@localhost/laptop";

    // alice's phone goes into her pocket.
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    quiet(&mut alice).await;

    // bob changes his status twice, then sends a message.
    for status in ["away for lunch", "back soon"] {
        bob.send(&format!(
            "<presence><show>away</show><status>{status}</status></presence>"
        ))
        .await;
        expect_presence(&mut bob, bob_full, bob_full, None).await;
    }
    // A bare chat state is dropped silently (bob gets no error), to the full and the bare JID.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='cs1'>\
         <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await;
    bob.send(
        "<message to='alice@localhost' type='chat' id='cs2'>\
         <paused xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await;
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='m1'><body>lunch?</body>\
         <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    )
    .await;
    quiet(&mut bob).await;

    // alice receives the message at once, and nothing else.
    let msg = alice.recv().await;
    assert_eq!(msg.name(), "message", "{}", xml(&msg));
    assert_eq!(msg.attr("id"), Some("m1"));
    assert_eq!(msg.get_child("body", CLIENT).unwrap().text(), "lunch?");
    quiet(&mut alice).await;

    // She looks at her phone: only bob's latest presence arrives.
    alice.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let got = expect_presence(&mut alice, bob_full, "alice@localhost", None).await;
    assert_eq!(got.get_child("status", CLIENT).unwrap().text(), "back soon");
    quiet(&mut alice).await;

    // Active again: presence flows at once.
    bob.send("<presence/>").await;
    expect_presence(&mut bob, bob_full, bob_full, None).await;
    quiet(&mut bob).await;
    expect_presence(&mut alice, bob_full, "alice@localhost", None).await;
    quiet(&mut alice).await;
}
