//! Multi-user chat transcripts (XEP-0045), occupant side: creating a room (201, locked until
//! configured), entering (110, 100, 170, 210; others' presence first, with real JIDs only for
//! those allowed to see them), groupchat messages with stanza and occupant ids, discussion
//! history limits, the subject, nickname changes (303) and conflicts, private messages,
//! leaving, and sessions that end without leaving.

mod muc_support;

use std::time::Duration;

use muc_support::*;
use starling_tests::*;

#[tokio::test]
async fn create_enter_talk_leave() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("coven");

    // Alice creates the room: a locked room she owns (§10.1.1).
    let own = join_ok(&mut alice, &r, "Alice").await;
    assert_eq!(codes(&own), vec![110, 170, 201], "{}", xml(&own));
    assert_eq!(aff_role(&own), ("owner".into(), "moderator".into()));
    assert_eq!(item(&own).attr("jid"), Some("alice@localhost/r"));
    assert!(occupant_id(&own).is_some());
    // Locked: bob cannot enter yet.
    assert_eq!(join_err(&mut bob, &r, "Bob", "").await, "item-not-found");
    // The instant room (§10.1.2) unlocks it.
    let answer = iq(
        &mut alice,
        &r,
        "set",
        "i1",
        &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query>"),
    )
    .await;
    ok(&answer);

    // Bob enters: alice's presence first (no real JID: semi-anonymous), then his own with
    // 110 and 170 (logged), then the empty subject.
    let got = join(&mut bob, &r, "Bob", "").await;
    assert_eq!(
        got.len(),
        3,
        "{:?}",
        got.iter().map(xml).collect::<Vec<_>>()
    );
    assert_eq!(got[0].attr("from"), Some(format!("{r}/Alice").as_str()));
    assert_eq!(aff_role(&got[0]), ("owner".into(), "moderator".into()));
    assert_eq!(item(&got[0]).attr("jid"), None);
    assert_eq!(codes(&got[1]), vec![110, 170]);
    assert_eq!(aff_role(&got[1]), ("none".into(), "participant".into()));
    assert!(is_subject(&got[2]));
    assert_eq!(got[2].get_child("subject", CLIENT).unwrap().text(), "");
    // Alice, a moderator, sees bob's real JID.
    let p = presence_from(&mut alice, &format!("{r}/Bob")).await;
    assert_eq!(item(&p).attr("jid"), Some("bob@localhost/r"));
    assert!(codes(&p).is_empty());

    // A message reaches both, from the nickname, with the room's stanza id and bob's
    // occupant id (a forged one is replaced).
    bob.send(&format!(
        "<message type='groupchat' to='{r}' id='m1'><body>hello</body>\
         <occupant-id xmlns='{OCC}' id='forged'/></message>"
    ))
    .await;
    for c in [&mut alice, &mut bob] {
        let m = groupchat(c).await;
        assert_eq!(m.attr("from"), Some(format!("{r}/Bob").as_str()));
        assert_eq!(m.attr("id"), Some("m1"), "stable id (§6.4)");
        assert_eq!(body(&m), "hello");
        assert!(stanza_id(&m, &r).is_some(), "{}", xml(&m));
        let oid = occupant_id(&m).unwrap();
        assert_ne!(oid, "forged");
        assert_eq!(Some(oid), occupant_id(&got[1]));
        assert_eq!(m.children().filter(|c| c.is("occupant-id", OCC)).count(), 1);
    }

    // Bob leaves: alice sees him go, bob gets his own unavailable with 110.
    bob.send(&format!(
        "<presence type='unavailable' to='{r}/Bob'><status>bye</status></presence>"
    ))
    .await;
    let gone = presence_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(gone.attr("type"), Some("unavailable"));
    assert_eq!(codes(&gone), vec![110]);
    let seen = presence_from(&mut alice, &format!("{r}/Bob")).await;
    assert_eq!(seen.attr("type"), Some("unavailable"));
    assert_eq!(aff_role(&seen).1, "none");
    assert_eq!(seen.get_child("status", CLIENT).unwrap().text(), "bye");
    // No longer an occupant: groupchat is refused.
    say(&mut bob, &r, "still here?").await;
    let e = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("not-acceptable")
    );
}

#[tokio::test]
async fn history_limits_on_entering() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("hist");
    create(&mut alice, &r, "Alice").await;
    for i in 1..=3 {
        say(&mut alice, &r, &format!("line {i}")).await;
        groupchat(&mut alice).await;
    }
    // maxstanzas='2': the last two, oldest first, each with a delay from the room.
    let got = join(&mut bob, &r, "Bob", "<history maxstanzas='2'/>").await;
    let hist: Vec<_> = got
        .iter()
        .filter(|e| e.get_child("body", CLIENT).is_some())
        .collect();
    assert_eq!(
        hist.iter().map(|m| body(m)).collect::<Vec<_>>(),
        ["line 2", "line 3"]
    );
    for m in &hist {
        let d = m.get_child("delay", DELAY).expect("delay");
        assert_eq!(d.attr("from"), Some(r.as_str()));
        assert_eq!(m.attr("from"), Some(format!("{r}/Alice").as_str()));
    }
    // History comes after the presences and before the subject.
    let first_hist = got
        .iter()
        .position(|e| e.get_child("body", CLIENT).is_some())
        .unwrap();
    let own = got.iter().position(|e| codes(e).contains(&110)).unwrap();
    assert!(own < first_hist && first_hist < got.len() - 1);
    bob.send(&format!("<presence type='unavailable' to='{r}/Bob'/>"))
        .await;
    presence_from(&mut bob, &format!("{r}/Bob")).await;

    // maxstanzas='0': none. A 'since' in the future: none. Default: all three.
    for (x, n) in [
        ("<history maxstanzas='0'/>", 0),
        ("<history since='2999-01-01T00:00:00Z'/>", 0),
        ("<history seconds='3600'/>", 3),
        ("<history maxchars='0'/>", 0),
        ("", 3),
    ] {
        let got = join(&mut bob, &r, "Bob", x).await;
        let hist = got
            .iter()
            .filter(|e| e.get_child("body", CLIENT).is_some())
            .count();
        assert_eq!(hist, n, "{x}");
        bob.send(&format!("<presence type='unavailable' to='{r}/Bob'/>"))
            .await;
        presence_from(&mut bob, &format!("{r}/Bob")).await;
    }
}

#[tokio::test]
async fn subject_rules() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("topic");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;

    // A moderator sets the subject; everyone gets it.
    alice
        .send(&format!(
            "<message type='groupchat' to='{r}'><subject>Spells</subject></message>"
        ))
        .await;
    for c in [&mut alice, &mut bob] {
        let m = c.recv_until(is_subject).await;
        assert_eq!(m.get_child("subject", CLIENT).unwrap().text(), "Spells");
        assert_eq!(m.attr("from"), Some(format!("{r}/Alice").as_str()));
    }
    // A participant may not (changesubject is off).
    bob.send(&format!(
        "<message type='groupchat' to='{r}'><subject>Mine</subject></message>"
    ))
    .await;
    let e = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("forbidden"),
        "{}",
        xml(&e)
    );
    // With changesubject on, he may; 104 tells occupants the configuration changed.
    ok(&configure(&mut alice, &r, &[("changesubject", "1")]).await);
    let note = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(codes(&note), vec![104], "{}", xml(&note));
    bob.send(&format!(
        "<message type='groupchat' to='{r}'><subject>Mine</subject></message>"
    ))
    .await;
    let m = alice
        .recv_until(|e| is_subject(e) && e.attr("from") == Some(format!("{r}/Bob").as_str()))
        .await;
    assert_eq!(m.get_child("subject", CLIENT).unwrap().text(), "Mine");
    // A newcomer gets the current subject last, from who set it.
    let mut carol = user(&ts, "carol").await;
    let got = join(&mut carol, &r, "Carol", "").await;
    let s = got.last().unwrap();
    assert_eq!(s.get_child("subject", CLIENT).unwrap().text(), "Mine");
    assert_eq!(s.attr("from"), Some(format!("{r}/Bob").as_str()));
}

#[tokio::test]
async fn nickname_change_and_conflicts() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("names");
    create(&mut alice, &r, "Alice").await;
    // §7.2.9: a nickname in use by someone else.
    assert_eq!(join_err(&mut bob, &r, "Alice", "").await, "conflict");
    // §7.2.1: no nickname at all.
    bob.send(&format!("<presence to='{r}'><x xmlns='{MUC}'/></presence>"))
        .await;
    let e = bob.recv_until(|e| e.name() == "presence").await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("jid-malformed"));
    join_ok(&mut bob, &r, "Bob").await;
    presence_from(&mut alice, &format!("{r}/Bob")).await;

    // §7.6: a change to a taken nickname is refused...
    bob.send(&format!("<presence to='{r}/Alice'/>")).await;
    let e = bob.recv_until(|e| e.name() == "presence").await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("conflict"));
    // ... a free one: unavailable with 303 and the new nick, then available.
    bob.send(&format!("<presence to='{r}/Robert'/>")).await;
    let old = presence_from(&mut alice, &format!("{r}/Bob")).await;
    assert_eq!(old.attr("type"), Some("unavailable"));
    assert_eq!(codes(&old), vec![303]);
    assert_eq!(item(&old).attr("nick"), Some("Robert"));
    let new = presence_from(&mut alice, &format!("{r}/Robert")).await;
    assert_eq!(new.attr("type"), None);
    let own_old = presence_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(codes(&own_old), vec![110, 303]);
    let own_new = presence_from(&mut bob, &format!("{r}/Robert")).await;
    assert_eq!(codes(&own_new), vec![110]);
    // Messages now come from the new nickname.
    say(&mut bob, &r, "renamed").await;
    assert_eq!(
        groupchat(&mut alice).await.attr("from"),
        Some(format!("{r}/Robert").as_str())
    );

    // §7.2.1: a nickname the service normalised (NFC) gets 210.
    let mut carol = user(&ts, "carol").await;
    let own = join_ok(&mut carol, &r, "Rene\u{301}").await;
    assert!(codes(&own).contains(&210), "{}", xml(&own));
    assert_eq!(own.attr("from"), Some(format!("{r}/Ren\u{e9}").as_str()));
}

#[tokio::test]
async fn private_messages() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("whisper");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;

    bob.send(&format!(
        "<message type='chat' to='{r}/Alice' id='pm1'><body>psst</body></message>"
    ))
    .await;
    let m = alice
        .recv_until(|e| e.name() == "message" && e.attr("type") == Some("chat"))
        .await;
    assert_eq!(m.attr("from"), Some(format!("{r}/Bob").as_str()));
    assert_eq!(m.attr("to"), Some("alice@localhost/r"));
    assert_eq!(body(&m), "psst");
    assert!(m.get_child("x", MUC_USER).is_some());
    // To nobody: item-not-found. Groupchat to one occupant: bad-request.
    bob.send(&format!(
        "<message type='chat' to='{r}/Nobody'><body>?</body></message>"
    ))
    .await;
    let e = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("item-not-found")
    );
    bob.send(&format!(
        "<message type='groupchat' to='{r}/Alice'><body>?</body></message>"
    ))
    .await;
    let e = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("bad-request"));
    // A non-occupant: not-acceptable.
    carol
        .send(&format!(
            "<message type='chat' to='{r}/Alice'><body>hi</body></message>"
        ))
        .await;
    let e = carol.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("not-acceptable")
    );
    // allowpm = none: forbidden.
    ok(&configure(&mut alice, &r, &[("allowpm", "none")]).await);
    bob.send(&format!(
        "<message type='chat' to='{r}/Alice'><body>psst</body></message>"
    ))
    .await;
    let e = bob
        .recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn non_anonymous_room_and_self_ping() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("open");
    create(&mut alice, &r, "Alice").await;
    ok(&configure(
        &mut alice,
        &r,
        &[("whois", "anyone"), ("enablelogging", "0")],
    )
    .await);
    // 100 (non-anonymous), no 170 (not logged); the participant sees real JIDs.
    let got = join(&mut bob, &r, "Bob", "").await;
    assert_eq!(item(&got[0]).attr("jid"), Some("alice@localhost/r"));
    assert_eq!(codes(&got[1]), vec![100, 110]);

    // XEP-0410: self-ping answered while joined, not-acceptable when not.
    ok(&iq(
        &mut bob,
        &format!("{r}/Bob"),
        "get",
        "sp1",
        "<ping xmlns='urn:xmpp:ping'/>",
    )
    .await);
    let mut carol = user(&ts, "carol").await;
    err(
        &iq(
            &mut carol,
            &format!("{r}/Carol"),
            "get",
            "sp2",
            "<ping xmlns='urn:xmpp:ping'/>",
        )
        .await,
        "not-acceptable",
    );
}

#[tokio::test]
async fn session_end_leaves_the_room_and_temporary_rooms_vanish() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("fleeting");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    presence_from(&mut alice, &format!("{r}/Bob")).await;
    // Bob's connection ends without leaving: everyone sees him go.
    bob.close().await;
    let p = presence_from(&mut alice, &format!("{r}/Bob")).await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    // Alice leaves: the temporary room is gone.
    alice
        .send(&format!("<presence type='unavailable' to='{r}/Alice'/>"))
        .await;
    presence_from(&mut alice, &format!("{r}/Alice")).await;
    let mut found = true;
    for _ in 0..50 {
        let a = iq(
            &mut alice,
            &r,
            "get",
            "d",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await;
        if a.attr("type") == Some("error") {
            assert_eq!(
                stanza_error_condition(&a).as_deref(),
                Some("item-not-found")
            );
            found = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!found, "the temporary room still answers");
}

#[tokio::test]
async fn fan_out_reaches_every_occupant_once() {
    let ts = TestServer::start().await;
    let mut conns = Vec::new();
    for i in 0..8 {
        conns.push(user(&ts, &format!("u{i}")).await);
    }
    let r = room("crowd");
    create(&mut conns[0], &r, "u0").await;
    for (i, c) in conns.iter_mut().enumerate().skip(1) {
        join_ok(c, &r, &format!("u{i}")).await;
    }
    say(&mut conns[3], &r, "to all").await;
    let mut ids = std::collections::HashSet::new();
    for c in conns.iter_mut() {
        let m = groupchat(c).await;
        assert_eq!(body(&m), "to all");
        ids.insert(stanza_id(&m, &r).unwrap());
    }
    assert_eq!(ids.len(), 1, "one message, one id");
    for c in conns.iter_mut() {
        c.expect_none(Duration::from_millis(200), |e| {
            e.name() == "message" && e.get_child("body", CLIENT).is_some()
        })
        .await;
    }
}

#[tokio::test]
async fn iqs_between_occupants_are_proxied() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("proxy");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    // A version query reaches alice's client from bob's room JID; her answer comes back
    // to bob from hers. Neither learns the other's real JID.
    bob.send(&format!(
        "<iq type='get' id='v1' to='{r}/Alice'><query xmlns='jabber:iq:version'/></iq>"
    ))
    .await;
    let q = alice.recv_until(|e| e.name() == "iq").await;
    assert_eq!(q.attr("from"), Some(format!("{r}/Bob").as_str()));
    assert_eq!(q.attr("to"), Some("alice@localhost/r"));
    alice
        .send(&format!(
            "<iq type='result' id='v1' to='{r}/Bob'><query xmlns='jabber:iq:version'><name>A</name></query></iq>"
        ))
        .await;
    let a = bob
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("v1"))
        .await;
    assert_eq!(a.attr("type"), Some("result"));
    assert_eq!(a.attr("from"), Some(format!("{r}/Alice").as_str()));
    assert_eq!(a.attr("to"), Some("bob@localhost/r"));
    // A vCard request is answered by alice's server, through the room.
    alice
        .send("<iq type='set' id='pub'><vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard></iq>")
        .await;
    alice.recv_until(|e| e.attr("id") == Some("pub")).await;
    let a = iq(
        &mut bob,
        &format!("{r}/Alice"),
        "get",
        "vc",
        "<vCard xmlns='vcard-temp'/>",
    )
    .await;
    assert_eq!(
        a.attr("from"),
        Some(format!("{r}/Alice").as_str()),
        "{}",
        xml(&a)
    );
    assert_eq!(a.attr("type"), Some("result"), "{}", xml(&a));
    assert!(xml(&a).contains("Alice A."), "{}", xml(&a));
    // Non-occupants cannot.
    let mut carol = user(&ts, "carol").await;
    err(
        &iq(
            &mut carol,
            &format!("{r}/Alice"),
            "get",
            "v2",
            "<query xmlns='jabber:iq:version'/>",
        )
        .await,
        "not-acceptable",
    );
}

#[tokio::test]
async fn presence_broadcast_limited_by_role() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("quietroom");
    create(&mut alice, &r, "Alice").await;
    // Only moderators' presence is broadcast.
    ok(&configure(&mut alice, &r, &[("presencebroadcast", "moderator")]).await);
    let got = join(&mut bob, &r, "Bob", "").await;
    // Bob sees alice (a moderator) and himself...
    assert_eq!(got[0].attr("from"), Some(format!("{r}/Alice").as_str()));
    assert_eq!(codes(&got[1]), vec![110, 170]);
    // ... but alice does not see bob, a participant, enter nor change his presence.
    bob.send(&format!(
        "<presence to='{r}/Bob'><show>away</show></presence>"
    ))
    .await;
    say(&mut bob, &r, "sync").await;
    let bob_jid = format!("{r}/Bob");
    loop {
        let el = alice.recv().await;
        assert!(
            !(el.name() == "presence" && el.attr("from") == Some(bob_jid.as_str())),
            "alice saw a participant's presence: {}",
            xml(&el)
        );
        if el
            .get_child("body", CLIENT)
            .is_some_and(|b| b.text() == "sync")
        {
            break;
        }
    }
}

/// The last occupant leaves a temporary room while someone else enters it: whichever room
/// the newcomer lands in (the old one, or a new one after the old ended) keeps them. The
/// ending room's task once cleared the registry after its storage cleanup, by then the new
/// room's entry, and the new room vanished with its occupant inside.
#[tokio::test]
async fn entering_as_the_last_occupant_leaves_keeps_the_newcomer() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    for i in 0..25 {
        let r = room(&format!("doorway{i}"));
        create(&mut alice, &r, "Alice").await;
        alice
            .send(&format!("<presence type='unavailable' to='{r}/Alice'/>"))
            .await;
        let own = join_ok(&mut bob, &r, "Bob").await;
        if codes(&own).contains(&201) {
            let a = iq(
                &mut bob,
                &r,
                "set",
                "instant",
                &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query>"),
            )
            .await;
            ok(&a);
        }
        let text = format!("still here {i}");
        say(&mut bob, &r, &text).await;
        let m = bob
            .recv_until(|e| {
                e.name() == "message" && e.attr("from").is_some_and(|f| f.starts_with(&r))
            })
            .await;
        assert_eq!(m.attr("type"), Some("groupchat"), "round {i}: {}", xml(&m));
        assert_eq!(body(&m), text);
        bob.send(&format!("<presence type='unavailable' to='{r}/Bob'/>"))
            .await;
        unavailable_from(&mut bob, &format!("{r}/Bob")).await;
        presence_from(&mut alice, &format!("{r}/Alice")).await;
    }
}
