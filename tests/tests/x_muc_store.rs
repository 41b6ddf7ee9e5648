//! Multi-user chat transcripts: what rooms keep. Persistent rooms survive a restart with
//! their configuration, affiliations, subject and archive; the room archive answers MAM
//! queries (XEP-0313) with the room's stanza ids; moderators retract messages (XEP-0425) and
//! authors their own (XEP-0424), leaving tombstones; nicknames are registered (§7.10) and
//! discovered (§7.12); the service and its public rooms are discoverable (§6).

mod muc_support;

use minidom::Element;
use muc_support::*;
use starling_core::config::ListenerKind;
use starling_sasl::ScramHash;
use starling_tests::*;

const MAM: &str = "urn:xmpp:mam:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const RETRACT: &str = "urn:xmpp:message-retract:1";
const MODERATE: &str = "urn:xmpp:message-moderate:1";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// A MAM query to `room`; the forwarded messages with their archive ids, and the fin.
async fn mam(c: &mut Conn, room: &str, inner: &str) -> (Vec<(String, Element)>, Element) {
    let (answer, others) = iq_collect(
        c,
        room,
        "set",
        "q",
        &format!("<query xmlns='{MAM}' queryid='qq'>{inner}</query>"),
    )
    .await;
    ok(&answer);
    let hits = others
        .into_iter()
        .filter_map(|m| {
            let r = m.get_child("result", MAM)?;
            assert_eq!(r.attr("queryid"), Some("qq"));
            let fwd = r.get_child("forwarded", FORWARD)?;
            Some((
                r.attr("id")?.to_owned(),
                fwd.get_child("message", CLIENT)?.clone(),
            ))
        })
        .collect();
    (hits, answer.get_child("fin", MAM).unwrap().clone())
}

/// Logs in to a server started by hand (the restart below).
async fn login_at(addr: std::net::SocketAddr, user: &str) -> Conn {
    let mut c = Conn::connect(addr).await;
    c.open("localhost").await;
    c.starttls().await;
    c.scram(ScramHash::Sha256, false, user, "pw").await.unwrap();
    c.bind(Some("r")).await;
    c.available().await;
    c
}

#[tokio::test]
async fn persistent_room_survives_restart() {
    let mut ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("keep");
    create(&mut alice, &r, "Alice").await;
    ok(&configure(
        &mut alice,
        &r,
        &[
            ("persistentroom", "1"),
            ("roomname", "Keep"),
            ("moderatedroom", "1"),
        ],
    )
    .await);
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='member' jid='bob@localhost'",
        None,
    )
    .await;
    ok(&a);
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='outcast' jid='mallory@localhost'",
        None,
    )
    .await;
    ok(&a);
    alice
        .send(&format!(
            "<message type='groupchat' to='{r}'><subject>Kept</subject></message>"
        ))
        .await;
    alice.recv_until(is_subject).await;
    say(&mut alice, &r, "before the restart").await;
    let sent = groupchat(&mut alice).await;
    let sid = stanza_id(&sent, &r).unwrap();
    // Everyone leaves: a persistent room stays.
    alice
        .send(&format!("<presence type='unavailable' to='{r}/Alice'/>"))
        .await;
    presence_from(&mut alice, &format!("{r}/Alice")).await;
    bob.close().await;
    alice.close().await;

    // Restart on the same data directory.
    let data = ts.data_dir();
    ts.stop().await;
    let mut config = starling_core::Config::default();
    config.server.data_dir = data;
    config.listeners = vec![starling_core::config::ListenerConfig {
        kind: ListenerKind::C2s,
        address: "127.0.0.1:0".parse().unwrap(),
    }];
    let running = starling::start(config).await.expect("restarts");
    let addr = running.listeners.address(ListenerKind::C2s).unwrap();
    let mut alice = login_at(addr, "alice").await;
    let mut bob = login_at(addr, "bob").await;

    // Listed, with its name, in the service's items.
    let items = iq(
        &mut bob,
        SERVICE,
        "get",
        "it",
        &format!("<query xmlns='{DISCO_ITEMS}'/>"),
    )
    .await;
    let listed: Vec<_> = items
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .children()
        .map(|i| {
            (
                i.attr("jid").unwrap().to_owned(),
                i.attr("name").unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, [(r.clone(), "Keep".to_owned())]);
    // Bob, a member, is a participant in the moderated room, gets the history from the
    // archive and the subject.
    let got = join(&mut bob, &r, "Bob", "").await;
    let own = got.iter().find(|e| codes(e).contains(&110)).unwrap();
    assert_eq!(aff_role(own), ("member".into(), "participant".into()));
    let hist: Vec<_> = got
        .iter()
        .filter(|e| e.get_child("body", CLIENT).is_some())
        .collect();
    assert_eq!(hist.len(), 1);
    assert_eq!(body(hist[0]), "before the restart");
    assert_eq!(stanza_id(hist[0], &r), Some(sid.clone()));
    assert_eq!(
        got.last()
            .unwrap()
            .get_child("subject", CLIENT)
            .unwrap()
            .text(),
        "Kept"
    );
    // Alice is still the owner; the configuration and the ban list are kept.
    let own = join_ok(&mut alice, &r, "Alice").await;
    assert_eq!(aff_role(&own), ("owner".into(), "moderator".into()));
    let form = iq(
        &mut alice,
        &r,
        "get",
        "f",
        &format!("<query xmlns='{MUC_OWNER}'/>"),
    )
    .await;
    let x = form
        .get_child("query", MUC_OWNER)
        .unwrap()
        .get_child("x", DATA)
        .unwrap();
    let value = |var: &str| {
        x.children()
            .find(|f| f.attr("var") == Some(var))
            .and_then(|f| f.children().next())
            .map(|v| v.text())
    };
    assert_eq!(value("muc#roomconfig_roomname").as_deref(), Some("Keep"));
    assert_eq!(value("muc#roomconfig_persistentroom").as_deref(), Some("1"));
    assert_eq!(value("muc#roomconfig_moderatedroom").as_deref(), Some("1"));
    let list = iq(
        &mut alice,
        &r,
        "get",
        "bl",
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
    )
    .await;
    assert_eq!(
        list.get_child("query", MUC_ADMIN)
            .unwrap()
            .children()
            .next()
            .unwrap()
            .attr("jid"),
        Some("mallory@localhost")
    );
    // And the archive answers with the same id.
    let (hits, _) = mam(&mut alice, &r, "").await;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, sid);
    running.shutdown().await;
}

#[tokio::test]
async fn room_archive_queries() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("log");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    let mut ids = Vec::new();
    for (who, text) in [(0, "one"), (1, "two"), (0, "three")] {
        let c = if who == 0 { &mut alice } else { &mut bob };
        say(c, &r, text).await;
        let m = groupchat_with(c, text).await;
        ids.push(stanza_id(&m, &r).unwrap());
    }
    // Everything, oldest first, ids equal to the stanza ids, as broadcast (no real JIDs).
    let (hits, fin) = mam(&mut bob, &r, "").await;
    assert_eq!(hits.iter().map(|h| h.0.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(
        hits.iter().map(|h| body(&h.1)).collect::<Vec<_>>(),
        ["one", "two", "three"]
    );
    assert_eq!(hits[1].1.attr("from"), Some(format!("{r}/Bob").as_str()));
    assert_eq!(fin.attr("complete"), Some("true"));
    // Paging: the last page of one, then the one before it.
    let (hits, fin) = mam(
        &mut bob,
        &r,
        "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max><before/></set>",
    )
    .await;
    assert_eq!(hits.len(), 1);
    assert_eq!(body(&hits[0].1), "three");
    assert_eq!(fin.attr("complete"), Some("false"));
    let (hits, _) = mam(
        &mut bob,
        &r,
        &format!(
            "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max><before>{}</before></set>",
            ids[2]
        ),
    )
    .await;
    assert_eq!(body(&hits[0].1), "two");
    // Filter by occupant (with = room/nick).
    let (hits, _) = mam(
        &mut bob,
        &r,
        &format!(
            "<x xmlns='{DATA}' type='submit'><field var='FORM_TYPE'><value>{MAM}</value></field>\
             <field var='with'><value>{r}/Alice</value></field></x>"
        ),
    )
    .await;
    assert_eq!(
        hits.iter().map(|h| body(&h.1)).collect::<Vec<_>>(),
        ["one", "three"]
    );
    // A public room's archive is readable from outside; a members-only one's is not.
    assert_eq!(mam(&mut carol, &r, "").await.0.len(), 3);
    ok(&configure(&mut alice, &r, &[("membersonly", "1")]).await);
    let answer = iq(
        &mut carol,
        &r,
        "set",
        "q2",
        &format!("<query xmlns='{MAM}'/>"),
    )
    .await;
    err(&answer, "forbidden");
    // The room advertises MAM.
    let info = iq(
        &mut alice,
        &r,
        "get",
        "di",
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    let feats: Vec<_> = info
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .map(str::to_owned)
        .collect();
    for f in [
        MAM,
        "http://jabber.org/protocol/muc",
        "urn:xmpp:occupant-id:0",
        "urn:xmpp:sid:0",
        MODERATE,
        "muc_membersonly",
        "muc_temporary",
        "muc_semianonymous",
    ] {
        assert!(feats.iter().any(|x| x == f), "missing {f}: {feats:?}");
    }
}

#[tokio::test]
async fn moderation_and_retraction() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("modded");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    join_ok(&mut carol, &r, "Carol").await;
    say(&mut bob, &r, "spam").await;
    let spam = groupchat(&mut alice).await;
    let spam_id = stanza_id(&spam, &r).unwrap();
    groupchat(&mut carol).await;

    // A participant may not moderate.
    let req = format!(
        "<moderate xmlns='{MODERATE}' id='{spam_id}'><retract xmlns='{RETRACT}'/><reason>spam</reason></moderate>"
    );
    err(&iq(&mut carol, &r, "set", "m0", &req).await, "forbidden");
    // A moderator retracts it: everyone gets the retraction from the room.
    ok(&iq(&mut alice, &r, "set", "m1", &req).await);
    let m = carol
        .recv_until(|e| e.name() == "message" && e.get_child("retract", RETRACT).is_some())
        .await;
    assert_eq!(m.attr("from"), Some(r.as_str()));
    let retract = m.get_child("retract", RETRACT).unwrap();
    assert_eq!(retract.attr("id"), Some(spam_id.as_str()));
    let moderated = retract.get_child("moderated", MODERATE).unwrap();
    assert_eq!(moderated.attr("by"), Some(format!("{r}/Alice").as_str()));
    assert_eq!(retract.get_child("reason", RETRACT).unwrap().text(), "spam");
    // The archive keeps a tombstone under the same id, without the body.
    let (hits, _) = mam(&mut carol, &r, "").await;
    let stone = &hits.iter().find(|h| h.0 == spam_id).unwrap().1;
    assert!(stone.get_child("body", CLIENT).is_none(), "{}", xml(stone));
    assert!(stone
        .get_child("retracted", RETRACT)
        .unwrap()
        .get_child("moderated", MODERATE)
        .is_some());
    // Unknown ids: item-not-found.
    let req =
        format!("<moderate xmlns='{MODERATE}' id='nope'><retract xmlns='{RETRACT}'/></moderate>");
    err(
        &iq(&mut alice, &r, "set", "m2", &req).await,
        "item-not-found",
    );

    // XEP-0424: bob retracts his own message; carol may not retract it.
    say(&mut bob, &r, "oops").await;
    let oops = groupchat_with(&mut bob, "oops").await;
    let oops_id = stanza_id(&oops, &r).unwrap();
    carol
        .send(&format!("<message type='groupchat' to='{r}'><retract xmlns='{RETRACT}' id='{oops_id}'/><body>/me retracted</body></message>"))
        .await;
    let e = carol
        .recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("forbidden"));
    bob.send(&format!("<message type='groupchat' to='{r}'><retract xmlns='{RETRACT}' id='{oops_id}'/><body>/me retracted</body></message>"))
        .await;
    let m = alice
        .recv_until(|e| e.name() == "message" && e.get_child("retract", RETRACT).is_some())
        .await;
    assert_eq!(m.attr("from"), Some(format!("{r}/Bob").as_str()));
    let (hits, _) = mam(&mut carol, &r, "").await;
    let stone = &hits.iter().find(|h| h.0 == oops_id).unwrap().1;
    assert!(stone.get_child("body", CLIENT).is_none());
    assert!(stone.get_child("retracted", RETRACT).is_some());
    // History for newcomers no longer has them.
    let mut dave = user(&ts, "dave").await;
    let got = join(&mut dave, &r, "Dave", "").await;
    let bodies: Vec<_> = got
        .iter()
        .filter(|e| e.get_child("body", CLIENT).is_some())
        .map(body)
        .collect();
    assert!(
        !bodies.iter().any(|b| b == "spam" || b == "oops"),
        "{bodies:?}"
    );
}

#[tokio::test]
async fn nickname_registration() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("club");
    create(&mut alice, &r, "Alice").await;
    // §7.10: the form, then registration makes bob a member with a reserved nickname.
    let form = iq(
        &mut bob,
        &r,
        "get",
        "g",
        "<query xmlns='jabber:iq:register'/>",
    )
    .await;
    ok(&form);
    assert!(xml(&form).contains("muc#register_roomnick"));
    let submit = |nick: &str| {
        format!(
            "<query xmlns='jabber:iq:register'><x xmlns='{DATA}' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>\
             <field var='muc#register_roomnick'><value>{nick}</value></field></x></query>"
        )
    };
    ok(&iq(&mut bob, &r, "set", "s", &submit("Bobby")).await);
    // The same nickname for someone else: conflict, both to register and to enter.
    err(
        &iq(&mut carol, &r, "set", "s2", &submit("Bobby")).await,
        "conflict",
    );
    assert_eq!(join_err(&mut carol, &r, "Bobby", "").await, "conflict");
    // §7.12: bob discovers his reserved nickname.
    let d = iq(
        &mut bob,
        &r,
        "get",
        "n",
        &format!("<query xmlns='{DISCO_INFO}' node='x-roomuser-item'/>"),
    )
    .await;
    let id = d
        .get_child("query", DISCO_INFO)
        .unwrap()
        .get_child("identity", DISCO_INFO)
        .unwrap();
    assert_eq!(id.attr("name"), Some("Bobby"));
    let again = iq(
        &mut bob,
        &r,
        "get",
        "g2",
        "<query xmlns='jabber:iq:register'/>",
    )
    .await;
    assert!(again
        .get_child("query", "jabber:iq:register")
        .unwrap()
        .get_child("registered", "jabber:iq:register")
        .is_some());
    let own = join_ok(&mut bob, &r, "Bobby").await;
    assert_eq!(aff_role(&own).0, "member");
    let list = iq(
        &mut alice,
        &r,
        "get",
        "ml",
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query>"),
    )
    .await;
    let it = list
        .get_child("query", MUC_ADMIN)
        .unwrap()
        .children()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        (it.attr("jid"), it.attr("nick")),
        (Some("bob@localhost"), Some("Bobby"))
    );
}

#[tokio::test]
async fn service_discovery() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    // The server lists the service (XEP-0045 §6.1).
    let items = iq(
        &mut alice,
        "localhost",
        "get",
        "i",
        &format!("<query xmlns='{DISCO_ITEMS}'/>"),
    )
    .await;
    let jids: Vec<_> = items
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|i| i.attr("jid"))
        .map(str::to_owned)
        .collect();
    // The upload service (XEP-0363) is listed beside it.
    assert_eq!(jids, [SERVICE, "upload.localhost"]);
    // §6.2: the service is a text conference service speaking MUC.
    let info = iq(
        &mut alice,
        SERVICE,
        "get",
        "s",
        &format!("<query xmlns='{DISCO_INFO}'/>"),
    )
    .await;
    let q = info.get_child("query", DISCO_INFO).unwrap();
    let id = q.get_child("identity", DISCO_INFO).unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("conference"), Some("text"))
    );
    assert!(q
        .children()
        .any(|f| f.attr("var") == Some("http://jabber.org/protocol/muc")));
    // §6.3: public rooms are listed, hidden ones not.
    create(&mut alice, &room("lobby"), "Alice").await;
    ok(&configure(&mut alice, &room("lobby"), &[("roomname", "Lobby")]).await);
    create(&mut alice, &room("secret"), "Alice").await;
    ok(&configure(&mut alice, &room("secret"), &[("publicroom", "0")]).await);
    let items = iq(
        &mut alice,
        SERVICE,
        "get",
        "i2",
        &format!("<query xmlns='{DISCO_ITEMS}'/>"),
    )
    .await;
    let listed: Vec<_> = items
        .get_child("query", DISCO_ITEMS)
        .unwrap()
        .children()
        .map(|i| {
            (
                i.attr("jid").unwrap().to_owned(),
                i.attr("name").unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, [(room("lobby"), "Lobby".to_owned())]);
    // An unknown room does not exist.
    err(
        &iq(
            &mut alice,
            &room("ghost"),
            "get",
            "g",
            &format!("<query xmlns='{DISCO_INFO}'/>"),
        )
        .await,
        "item-not-found",
    );
}
