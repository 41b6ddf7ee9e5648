//! Transcripts for push notifications (XEP-0357). The app server is played by a local account
//! (`pushsvc@localhost/app`, reached by its full JID). alice's account advertises
//! `urn:xmpp:push:0`; she registers the app server with a secret in publish-options; while
//! her session is connected nothing is pushed; when her connection is cut (hibernated by
//! stream management) a message from bob makes the server publish a summary (count, sender,
//! no body by default) with her publish-options; after the hibernation times out (offline)
//! the next message is pushed too, with the count going up; an error answer disables the
//! registration; `<disable/>` removes it; nobody but alice may register for her.

mod im_support;

use std::time::Duration;

use im_support::*;
use minidom::Element;
use starling_proto::jid::Jid;
use starling_tests::*;

const PUSH: &str = "urn:xmpp:push:0";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const DATA: &str = "jabber:x:data";
const SM: &str = "urn:xmpp:sm:3";

async fn start(tweak: impl FnOnce(&mut starling_core::Config)) -> TestServer {
    let server = TestServer::start_with(|c| {
        c.c2s.resume_timeout_secs = 2;
        tweak(c);
    })
    .await;
    for u in ["alice", "bob", "pushsvc"] {
        server.add_user(u, &format!("pw-{u}")).await;
    }
    server
}

const ENABLE: &str = "<iq type='set' id='en'><enable xmlns='urn:xmpp:push:0' \
    jid='pushsvc@localhost/app' node='node-1'><x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
    <field var='secret'><value>s3cret</value></field></x></enable></iq>";

/// The value of `var` in a data form.
fn field(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.attr("var") == Some(var))
        .and_then(|f| f.get_child("value", DATA))
        .map(|v| v.text())
}

/// Receives a push notification at the app server and checks its shape; returns its id
/// and the summary form.
async fn expect_notification(app: &mut Conn) -> (String, Element) {
    let iq = app.recv().await;
    assert_eq!(iq.name(), "iq", "{}", xml(&iq));
    assert_eq!(iq.attr("type"), Some("set"), "{}", xml(&iq));
    assert_eq!(iq.attr("from"), Some("alice@localhost"), "{}", xml(&iq));
    let pubsub = iq.get_child("pubsub", PUBSUB).expect("pubsub");
    let publish = pubsub.get_child("publish", PUBSUB).expect("publish");
    assert_eq!(publish.attr("node"), Some("node-1"));
    let form = publish
        .get_child("item", PUBSUB)
        .and_then(|i| i.get_child("notification", PUSH))
        .and_then(|n| n.get_child("x", DATA))
        .unwrap_or_else(|| panic!("{}", xml(&iq)))
        .clone();
    assert_eq!(
        field(&form, "FORM_TYPE").as_deref(),
        Some("urn:xmpp:push:summary")
    );
    let options = pubsub
        .get_child("publish-options", PUBSUB)
        .and_then(|o| o.get_child("x", DATA))
        .unwrap_or_else(|| panic!("no publish-options: {}", xml(&iq)));
    assert_eq!(field(options, "secret").as_deref(), Some("s3cret"));
    (iq.attr("id").unwrap().to_owned(), form)
}

async fn cut_and_hibernate(server: &TestServer, alice: Conn) {
    let full = alice.jid.clone().unwrap();
    drop(alice);
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !server
        .server()
        .router()
        .session(&full)
        .is_some_and(|s| s.is_hibernated())
    {
        assert!(tokio::time::Instant::now() < deadline, "never hibernated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn hibernated_and_offline_accounts_are_notified() {
    let server = start(|_| {}).await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice.available().await;
    // The account advertises push.
    alice
        .send("<iq type='get' id='di' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.recv().await;
    let features: Vec<_> = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .map(str::to_owned)
        .collect();
    assert!(features.iter().any(|f| f == PUSH), "{features:?}");
    alice.send(ENABLE).await;
    expect_result(&mut alice, "en").await;
    alice
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = alice.recv().await;
    assert!(enabled.is("enabled", SM), "{}", xml(&enabled));

    let mut app = server.login("pushsvc", "pw-pushsvc", "app").await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;

    // alice is connected: no push.
    bob.send("<message to='alice@localhost' type='chat' id='b1'><body>one</body></message>")
        .await;
    let m = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("b1"));
    // She acknowledges it (so it is not re-routed when her session times out).
    alice.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    alice.ping_server().await;
    app.expect_silence(Duration::from_millis(300)).await;

    // Her connection dies: the session hibernates and the next message is pushed.
    cut_and_hibernate(&server, alice).await;
    bob.send("<message to='alice@localhost' type='chat' id='b2'><body>two</body></message>")
        .await;
    let (id, form) = expect_notification(&mut app).await;
    assert_eq!(field(&form, "message-count").as_deref(), Some("1"));
    assert_eq!(
        field(&form, "last-message-sender").as_deref(),
        Some("bob@localhost/laptop")
    );
    assert_eq!(
        field(&form, "last-message-body"),
        None,
        "no body by default"
    );
    app.send(&format!(
        "<iq type='result' id='{id}' to='alice@localhost'/>"
    ))
    .await;

    // The hibernation times out: alice is offline, and pushed to again.
    server
        .wait_unbound(&Jid::parse("alice@localhost/phone").unwrap())
        .await;
    // The timed-out session re-routes "two" to offline storage: it was notified already.
    app.expect_silence(Duration::from_millis(300)).await;
    bob.send("<message to='alice@localhost' type='chat' id='b3'><body>three</body></message>")
        .await;
    let (id, form) = expect_notification(&mut app).await;
    assert_eq!(field(&form, "message-count").as_deref(), Some("2"));
    // The app server refuses: the registration is disabled.
    app.send(&format!(
        "<iq type='error' id='{id}' to='alice@localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    app.ping_server().await;
    bob.send("<message to='alice@localhost' type='chat' id='b4'><body>four</body></message>")
        .await;
    bob.ping_server().await;
    app.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn body_is_included_when_configured_and_disable_stops_pushes() {
    let server = start(|c| c.push.include_body = true).await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice.send(ENABLE).await;
    expect_result(&mut alice, "en").await;
    alice.close().await;
    let mut app = server.login("pushsvc", "pw-pushsvc", "app").await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    bob.send("<message to='alice@localhost' type='chat' id='b1'><body>hello</body></message>")
        .await;
    let (_, form) = expect_notification(&mut app).await;
    assert_eq!(field(&form, "last-message-body").as_deref(), Some("hello"));

    // bob may not register (or unregister) anything for alice.
    bob.send(
        "<iq type='set' id='evil' to='alice@localhost'><enable xmlns='urn:xmpp:push:0' \
         jid='bob@localhost/laptop' node='x'/></iq>",
    )
    .await;
    expect_error(&mut bob, "evil", "forbidden").await;

    // alice disables her registration (all nodes of that app server).
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice
        .send("<iq type='set' id='dis'><disable xmlns='urn:xmpp:push:0' jid='pushsvc@localhost/app'/></iq>")
        .await;
    expect_result(&mut alice, "dis").await;
    alice.close().await;
    server
        .wait_unbound(&Jid::parse("alice@localhost/phone").unwrap())
        .await;
    bob.send("<message to='alice@localhost' type='chat' id='b2'><body>again</body></message>")
        .await;
    bob.ping_server().await;
    app.expect_silence(Duration::from_millis(300)).await;
}
