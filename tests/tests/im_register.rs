//! Transcripts for in-band registration (XEP-0077): a client creates its account before
//! authenticating (§3.1) when the operator enabled it, with or without an invite token, under a
//! per-IP throttle; a logged-in user changes the password (§3.3) or removes the account (§3.2).

mod im_support;

use im_support::*;
use minidom::Element;
use starling_core::config::RegisterPolicy;
use starling_sasl::ScramHash;
use starling_tests::*;

const REGISTER: &str = "jabber:iq:register";
const FEATURE: &str = "http://jabber.org/features/iq-register";
const DATA: &str = "jabber:x:data";

async fn enabled(policy: RegisterPolicy, max_per_ip: u32) -> TestServer {
    TestServer::start_with(|c| {
        c.register.enabled = true;
        c.register.policy = policy;
        c.register.tokens = vec!["let-me-in".into()];
        c.register.max_per_ip_per_hour = max_per_ip;
    })
    .await
}

/// A connection after STARTTLS, not authenticated; also returns its features.
async fn unauthenticated(server: &TestServer) -> (Conn, Element) {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    let features = c.starttls().await;
    (c, features)
}

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

fn plain_set(id: &str, user: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
         <username>{user}</username><password>{password}</password></query></iq>"
    )
}

fn form_set(id: &str, user: &str, password: &str, token: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>jabber:iq:register</value></field>\
         <field var='username'><value>{user}</value></field>\
         <field var='password'><value>{password}</value></field>\
         <field var='token'><value>{token}</value></field></x></query></iq>"
    )
}

fn assert_error(el: &Element, condition: &str) {
    assert_eq!(el.attr("type"), Some("error"), "{}", xml(el));
    assert_eq!(
        stanza_error_condition(el).as_deref(),
        Some(condition),
        "{}",
        xml(el)
    );
    // Error replies never echo the request: it holds a password.
    assert!(
        el.get_child("query", REGISTER).is_none(),
        "echoed: {}",
        xml(el)
    );
}

fn assert_result(el: &Element) {
    assert_eq!(el.attr("type"), Some("result"), "{}", xml(el));
}

async fn can_login(server: &TestServer, user: &str, password: &str) -> Result<(), String> {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    c.scram(ScramHash::Sha256, false, user, password)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn disabled_by_default_not_offered_and_refused() {
    let server = TestServer::start().await;
    let (mut c, features) = unauthenticated(&server).await;
    assert!(
        features.get_child("register", FEATURE).is_none(),
        "{}",
        xml(&features)
    );
    // XEP-0077 §3.1: a host without in-band registration answers service-unavailable.
    let res = iq(
        &mut c,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_error(&res, "service-unavailable");
    let res = iq(&mut c, "s", &plain_set("s", "mallory", "pw")).await;
    assert_error(&res, "service-unavailable");
    assert!(!server
        .server()
        .storage()
        .account_exists("localhost", "mallory")
        .await
        .unwrap());
    // The stream lives on: authentication still works.
    server.add_user("alice", "pw-a").await;
    c.scram(ScramHash::Sha256, false, "alice", "pw-a")
        .await
        .expect("login after the refused registration");
}

#[tokio::test]
async fn not_offered_before_tls() {
    let server = enabled(RegisterPolicy::Allow, 5).await;
    let mut c = Conn::connect(server.c2s).await;
    let features = c.open("localhost").await;
    assert!(
        features.get_child("register", FEATURE).is_none(),
        "{}",
        xml(&features)
    );
    let res = iq(&mut c, "s", &plain_set("s", "juliet", "pw")).await;
    assert_error(&res, "service-unavailable");
}

#[tokio::test]
async fn register_then_login_on_the_same_stream() {
    let server = enabled(RegisterPolicy::Allow, 5).await;
    let (mut c, features) = unauthenticated(&server).await;
    assert!(
        features.get_child("register", FEATURE).is_some(),
        "{}",
        xml(&features)
    );
    // The form: username and password (§3.1 example 2).
    let res = iq(
        &mut c,
        "g",
        "<iq type='get' id='g' to='localhost'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_result(&res);
    let q = res.get_child("query", REGISTER).expect("query");
    assert!(q.get_child("username", REGISTER).is_some(), "{}", xml(&res));
    assert!(q.get_child("password", REGISTER).is_some(), "{}", xml(&res));
    assert!(q.get_child("x", DATA).is_none(), "{}", xml(&res));

    let res = iq(&mut c, "s", &plain_set("s", "Juliet", "balcony")).await;
    assert_result(&res);
    assert!(res.children().next().is_none(), "{}", xml(&res));
    // A second registration on the same stream is refused (§3.1.1).
    let res = iq(&mut c, "s2", &plain_set("s2", "nurse", "pw")).await;
    assert_error(&res, "not-acceptable");

    // Then authenticate as the new account (the localpart was case-mapped).
    c.scram(ScramHash::Sha1, false, "juliet", "balcony")
        .await
        .expect("the new account logs in");
    let jid = c.bind(Some("balcony")).await;
    assert_eq!(jid.as_str(), "juliet@localhost/balcony");
    c.ping_server().await;
    can_login(&server, "juliet", "balcony")
        .await
        .expect("SCRAM-SHA-256 credentials too");
}

#[tokio::test]
async fn conflict_and_unacceptable_input() {
    let server = enabled(RegisterPolicy::Allow, 50).await;
    server.add_user("romeo", "pw-r").await;
    let cases = [
        (plain_set("c", "romeo", "other"), "conflict"),
        (plain_set("c", "RoMeO", "other"), "conflict"),
        (plain_set("c", "bad@name", "pw"), "not-acceptable"),
        (plain_set("c", "", "pw"), "not-acceptable"),
        (plain_set("c", "tybalt", ""), "not-acceptable"),
        (
            "<iq type='set' id='c'><query xmlns='jabber:iq:register'><username>tybalt</username>\
             </query></iq>"
                .to_owned(),
            "not-acceptable",
        ),
    ];
    for (request, condition) in cases {
        let (mut c, _) = unauthenticated(&server).await;
        let res = iq(&mut c, "c", &request).await;
        assert_error(&res, condition);
    }
    // The existing account is untouched; nothing was created.
    can_login(&server, "romeo", "pw-r").await.expect("romeo");
    let storage = server.server().storage();
    assert!(!storage.account_exists("localhost", "tybalt").await.unwrap());
}

#[tokio::test]
async fn invite_token_policy() {
    let server = enabled(RegisterPolicy::InviteToken, 50).await;
    let (mut c, features) = unauthenticated(&server).await;
    assert!(features.get_child("register", FEATURE).is_some());
    // The form: a data form with username, password and token (§4), plus instructions.
    let res = iq(
        &mut c,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_result(&res);
    let q = res.get_child("query", REGISTER).expect("query");
    assert!(q.get_child("instructions", REGISTER).is_some());
    let form = q.get_child("x", DATA).expect("a data form");
    assert_eq!(form.attr("type"), Some("form"));
    let vars: Vec<_> = form
        .children()
        .filter(|f| f.name() == "field")
        .filter_map(|f| f.attr("var"))
        .collect();
    assert_eq!(vars, ["FORM_TYPE", "username", "password", "token"]);

    // Wrong token, and no token at all (the plain fields carry none): not-allowed.
    let res = iq(&mut c, "w", &form_set("w", "paris", "pw-p", "let-me-out")).await;
    assert_error(&res, "not-allowed");
    let res = iq(&mut c, "n", &plain_set("n", "paris", "pw-p")).await;
    assert_error(&res, "not-allowed");
    assert!(!server
        .server()
        .storage()
        .account_exists("localhost", "paris")
        .await
        .unwrap());
    // The right token.
    let res = iq(&mut c, "r", &form_set("r", "paris", "pw-p", "let-me-in")).await;
    assert_result(&res);
    c.scram(ScramHash::Sha256, false, "paris", "pw-p")
        .await
        .expect("paris logs in");
    c.bind(None).await;
}

#[tokio::test]
async fn throttled_per_ip_after_n_attempts() {
    let server = enabled(RegisterPolicy::Allow, 3).await;
    server.add_user("taken", "pw").await;
    // Three attempts from 127.0.0.1, failed ones included.
    for (i, (user, ok)) in [("one", true), ("taken", false), ("two", true)]
        .into_iter()
        .enumerate()
    {
        let (mut c, _) = unauthenticated(&server).await;
        let id = format!("t{i}");
        let res = iq(&mut c, &id, &plain_set(&id, user, "pw")).await;
        if ok {
            assert_result(&res);
        } else {
            assert_error(&res, "conflict");
        }
    }
    // The fourth is refused, whatever it asks for.
    let (mut c, _) = unauthenticated(&server).await;
    let res = iq(&mut c, "t3", &plain_set("t3", "three", "pw")).await;
    assert_error(&res, "resource-constraint");
    let err = res.get_child("error", "jabber:client").expect("error");
    assert_eq!(err.attr("type"), Some("wait"), "{}", xml(&res));
    assert!(!server
        .server()
        .storage()
        .account_exists("localhost", "three")
        .await
        .unwrap());
    // The accounts that did get through work.
    can_login(&server, "one", "pw").await.expect("one");
    can_login(&server, "two", "pw").await.expect("two");
}

#[tokio::test]
async fn password_change() {
    let server = server().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    // Get: registered, with the username (§3.1).
    let res = iq(
        &mut alice,
        "g",
        "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>",
    )
    .await;
    assert_result(&res);
    let q = res.get_child("query", REGISTER).expect("query");
    assert!(
        q.get_child("registered", REGISTER).is_some(),
        "{}",
        xml(&res)
    );
    assert_eq!(
        q.get_child("username", REGISTER)
            .map(|u| u.text())
            .as_deref(),
        Some("alice")
    );
    // Someone else's password: forbidden; no username: bad-request; an empty password keeps
    // the old one (§3.3 MUST).
    let res = iq(&mut alice, "x", &plain_set("x", "bob", "hacked")).await;
    assert_error(&res, "forbidden");
    let res = iq(
        &mut alice,
        "y",
        "<iq type='set' id='y'><query xmlns='jabber:iq:register'><password>pw</password>\
         </query></iq>",
    )
    .await;
    assert_error(&res, "bad-request");
    let res = iq(&mut alice, "z", &plain_set("z", "alice", "")).await;
    assert_error(&res, "not-acceptable");
    can_login(&server, "alice", "pw-alice")
        .await
        .expect("the old password still works");
    can_login(&server, "bob", "pw-bob")
        .await
        .expect("bob untouched");

    // The change itself, addressed to the server as in §3.3.
    let res = iq(
        &mut alice,
        "c",
        "<iq type='set' id='c' to='localhost'><query xmlns='jabber:iq:register'>\
         <username>alice</username><password>new-pw</password></query></iq>",
    )
    .await;
    assert_result(&res);
    assert_eq!(
        can_login(&server, "alice", "pw-alice").await,
        Err("not-authorized".to_owned())
    );
    can_login(&server, "alice", "new-pw")
        .await
        .expect("the new password works");
    // The session that changed it lives on.
    alice.ping_server().await;
}

#[tokio::test]
async fn account_removal() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "desk").await;
    befriend(&mut alice, &mut bob).await;
    let mut tablet = server.login("alice", "pw-alice", "tablet").await;

    // <remove/> must be the only child (§3.2).
    let res = iq(
        &mut alice,
        "r0",
        "<iq type='set' id='r0'><query xmlns='jabber:iq:register'><remove/>\
         <username>alice</username></query></iq>",
    )
    .await;
    assert_error(&res, "bad-request");

    alice
        .send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><remove/></query></iq>")
        .await;
    let res = alice
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("r1"))
        .await;
    assert_result(&res);
    // Then every session of the account ends with not-authorized (§3.2).
    alice.expect_stream_error("not-authorized").await;
    tablet.expect_stream_error("not-authorized").await;

    let storage = server.server().storage();
    assert!(!storage.account_exists("localhost", "alice").await.unwrap());
    assert_eq!(
        can_login(&server, "alice", "pw-alice").await,
        Err("not-authorized".to_owned())
    );
    // Bob's subscriptions with alice were cancelled both ways.
    bob.send("<iq type='get' id='rg2'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let res = bob
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("rg2"))
        .await;
    let roster = items(res.get_child("query", ROSTER).expect("roster"));
    assert_eq!(
        roster,
        [("alice@localhost".to_owned(), "none".to_owned(), None)],
        "{}",
        xml(&res)
    );
}
