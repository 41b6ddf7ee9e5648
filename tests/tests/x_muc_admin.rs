//! Multi-user chat transcripts (XEP-0045), moderator, admin and owner side: reserved rooms
//! and the configuration form, entry refusals (password, members-only, ban, capacity), kick
//! (307), ban (301), voice and moderator roles, affiliation lists, member removal (321) and
//! the members-only switch (322), the last owner, mediated invitations and declines, and
//! destruction with an alternate venue.

mod muc_support;

use muc_support::*;
use starling_tests::*;

#[tokio::test]
async fn reserved_room_configuration_form() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("reserved");
    let own = join_ok(&mut alice, &r, "Alice").await;
    assert!(codes(&own).contains(&201));
    // §10.1.3: the owner asks for the form; every standard field is there.
    let answer = iq(
        &mut alice,
        &r,
        "get",
        "f1",
        &format!("<query xmlns='{MUC_OWNER}'/>"),
    )
    .await;
    ok(&answer);
    let form = answer
        .get_child("query", MUC_OWNER)
        .and_then(|q| q.get_child("x", DATA))
        .expect("form");
    assert_eq!(form.attr("type"), Some("form"));
    let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
    for v in [
        "FORM_TYPE",
        "roomname",
        "roomdesc",
        "lang",
        "persistentroom",
        "publicroom",
        "membersonly",
        "moderatedroom",
        "passwordprotectedroom",
        "roomsecret",
        "maxusers",
        "whois",
        "allowpm",
        "allowinvites",
        "changesubject",
        "enablelogging",
        "getmemberlist",
        "presencebroadcast",
        "roomadmins",
        "roomowners",
        "pubsub",
    ] {
        let full = if v == "FORM_TYPE" {
            v.to_owned()
        } else {
            format!("muc#roomconfig_{v}")
        };
        assert!(vars.contains(&full.as_str()), "missing {full}");
    }
    // Others may not read it.
    let (_, _) = (join_err(&mut bob, &r, "Bob", "").await, ());
    err(
        &iq(
            &mut bob,
            &r,
            "get",
            "f2",
            &format!("<query xmlns='{MUC_OWNER}'/>"),
        )
        .await,
        "item-not-found",
    );
    // Submitting unlocks the room with the new settings.
    ok(&configure(
        &mut alice,
        &r,
        &[("roomname", "The Reserve"), ("roomdesc", "quiet")],
    )
    .await);
    join_ok(&mut bob, &r, "Bob").await;
    err(
        &iq(
            &mut bob,
            &r,
            "get",
            "f3",
            &format!("<query xmlns='{MUC_OWNER}'/>"),
        )
        .await,
        "forbidden",
    );
    let info = iq(
        &mut bob,
        &r,
        "get",
        "di",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    let id = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .and_then(|q| q.get_child("identity", "http://jabber.org/protocol/disco#info"))
        .unwrap();
    assert_eq!(id.attr("category"), Some("conference"));
    assert_eq!(id.attr("name"), Some("The Reserve"));
    // A bad value is refused and changes nothing.
    err(
        &configure(&mut alice, &r, &[("whois", "everyone")]).await,
        "not-acceptable",
    );

    // §10.1.3: cancelling the initial configuration destroys a new room.
    let r2 = room("cancelled");
    join_ok(&mut alice, &r2, "Alice").await;
    let (answer, others) = iq_collect(
        &mut alice,
        &r2,
        "set",
        "c1",
        &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='cancel'/></query>"),
    )
    .await;
    ok(&answer);
    assert!(others.iter().any(|p| p.attr("type") == Some("unavailable")));
    err(
        &iq(
            &mut alice,
            &r2,
            "get",
            "c2",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await,
        "item-not-found",
    );
}

#[tokio::test]
async fn entry_refusals() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("guarded");
    create(&mut alice, &r, "Alice").await;

    // §7.2.6 password.
    ok(&configure(
        &mut alice,
        &r,
        &[("passwordprotectedroom", "1"), ("roomsecret", "cauldron")],
    )
    .await);
    assert_eq!(join_err(&mut bob, &r, "Bob", "").await, "not-authorized");
    assert_eq!(
        join_err(&mut bob, &r, "Bob", "<password>wrong</password>").await,
        "not-authorized"
    );
    let got = join(&mut bob, &r, "Bob", "<password>cauldron</password>").await;
    assert!(is_subject(got.last().unwrap()));
    bob.send(&format!("<presence type='unavailable' to='{r}/Bob'/>"))
        .await;
    presence_from(&mut bob, &format!("{r}/Bob")).await;
    ok(&configure(&mut alice, &r, &[("passwordprotectedroom", "0")]).await);

    // §7.2.7 members-only.
    ok(&configure(&mut alice, &r, &[("membersonly", "1")]).await);
    assert_eq!(
        join_err(&mut bob, &r, "Bob", "").await,
        "registration-required"
    );
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='member' jid='bob@localhost'",
        None,
    )
    .await;
    ok(&a);
    join_ok(&mut bob, &r, "Bob").await;
    ok(&configure(&mut alice, &r, &[("membersonly", "0")]).await);

    // §7.2.8 banned.
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='outcast' jid='carol@localhost'",
        Some("spam"),
    )
    .await;
    ok(&a);
    // §9.1: carol, not in the room, is told of her new affiliation (101).
    let note = carol.recv_until(|e| e.name() == "message").await;
    assert_eq!(note.attr("from"), Some(r.as_str()));
    assert_eq!(codes(&note), vec![101], "{}", xml(&note));
    assert_eq!(item(&note).attr("affiliation"), Some("outcast"));
    assert_eq!(join_err(&mut carol, &r, "Carol", "").await, "forbidden");
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='none' jid='carol@localhost'",
        None,
    )
    .await;
    ok(&a);

    // §7.2.10 capacity: two occupants already, maxusers 2.
    ok(&configure(&mut alice, &r, &[("maxusers", "2")]).await);
    assert_eq!(
        join_err(&mut carol, &r, "Carol", "").await,
        "service-unavailable"
    );
    ok(&configure(&mut alice, &r, &[("maxusers", "10")]).await);
    join_ok(&mut carol, &r, "Carol").await;

    // Room creation policy: with create = "admins", a plain user cannot create; service
    // admins may, and own every room; at most max_rooms rooms live at once.
    let ts2 = TestServer::start_with(|c| {
        c.muc.create = starling_core::config::RoomCreation::Admins;
        c.muc.admins = vec!["root@localhost".into()];
        c.muc.max_rooms = 1;
    })
    .await;
    let mut dave = user(&ts2, "dave").await;
    assert_eq!(
        join_err(&mut dave, &room("nope"), "Dave", "").await,
        "not-allowed"
    );
    let mut root = user(&ts2, "root").await;
    let own = create(&mut root, &room("admins"), "Root").await;
    assert_eq!(aff_role(&own).0, "owner");
    assert_eq!(
        join_err(&mut root, &room("second"), "Root", "").await,
        "resource-constraint"
    );
}

#[tokio::test]
async fn kick_ban_and_voice() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("court");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    join_ok(&mut carol, &r, "Carol").await;

    // A participant may not kick.
    let (a, _) = admin(&mut bob, &r, "nick='Carol' role='none'", None).await;
    err(&a, "forbidden");
    // §8.2 kick: 307 with actor and reason, to the victim (with 110) and everyone else.
    let (a, _) = admin(&mut alice, &r, "nick='Bob' role='none'", Some("rude")).await;
    ok(&a);
    let p = presence_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    assert_eq!(codes(&p), vec![110, 307]);
    let it = item(&p);
    assert_eq!(it.attr("role"), Some("none"));
    assert_eq!(
        it.get_child("actor", MUC_USER).and_then(|a| a.attr("nick")),
        Some("Alice")
    );
    assert_eq!(
        it.get_child("reason", MUC_USER)
            .map(|r| r.text())
            .as_deref(),
        Some("rude")
    );
    let p = presence_from(&mut carol, &format!("{r}/Bob")).await;
    assert_eq!(codes(&p), vec![307]);
    // A kicked user may come back.
    join_ok(&mut bob, &r, "Bob").await;

    // §9.1 ban: 301, and no way back.
    let (a, _) = admin(
        &mut alice,
        &r,
        "jid='bob@localhost' affiliation='outcast'",
        Some("again"),
    )
    .await;
    ok(&a);
    let p = unavailable_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(codes(&p), vec![110, 301]);
    assert_eq!(aff_role(&p), ("outcast".into(), "none".into()));
    let p = unavailable_from(&mut carol, &format!("{r}/Bob")).await;
    assert_eq!(codes(&p), vec![301]);
    assert_eq!(join_err(&mut bob, &r, "Bob", "").await, "forbidden");
    // The ban list (§9.2).
    let list = iq(
        &mut alice,
        &r,
        "get",
        "bl",
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
    )
    .await;
    let items: Vec<_> = list
        .get_child("query", MUC_ADMIN)
        .unwrap()
        .children()
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].attr("jid"), Some("bob@localhost"));
    assert_eq!(
        items[0].get_child("reason", MUC_ADMIN).unwrap().text(),
        "again"
    );
    // Not for participants.
    err(
        &iq(
            &mut carol,
            &r,
            "get",
            "bl2",
            &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='outcast'/></query>"),
        )
        .await,
        "forbidden",
    );

    // §8.3/§8.4 voice in a moderated room: a newcomer is a visitor and cannot speak.
    ok(&configure(&mut alice, &r, &[("moderatedroom", "1")]).await);
    let mut dave = user(&ts, "dave").await;
    let own = join_ok(&mut dave, &r, "Dave").await;
    assert_eq!(aff_role(&own).1, "visitor");
    say(&mut dave, &r, "hello?").await;
    let e = dave
        .recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("forbidden"));
    let (a, _) = admin(&mut alice, &r, "nick='Dave' role='participant'", None).await;
    ok(&a);
    let dave_jid = format!("{r}/Dave");
    presence_from(&mut carol, &dave_jid).await; // his entry, as a visitor
    let p = presence_from(&mut carol, &dave_jid).await;
    assert_eq!(aff_role(&p).1, "participant");
    say(&mut dave, &r, "thanks").await;
    assert_eq!(body(&groupchat(&mut carol).await), "thanks");

    // §7.13 voice request: revoked again, dave asks; alice gets the form and approves.
    let (a, _) = admin(&mut alice, &r, "nick='Dave' role='visitor'", None).await;
    ok(&a);
    dave.recv_until(|e| {
        e.name() == "presence"
            && e.attr("from") == Some(dave_jid.as_str())
            && aff_role(e).1 == "visitor"
    })
    .await;
    let request = |extra: &str| {
        format!(
            "<message to='{r}'><x xmlns='{DATA}' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>\
             <field var='muc#role'><value>participant</value></field>{extra}</x></message>"
        )
    };
    dave.send(&request("")).await;
    let form = alice
        .recv_until(|e| e.name() == "message" && e.get_child("x", DATA).is_some())
        .await;
    assert_eq!(form.attr("from"), Some(r.as_str()));
    assert!(xml(&form).contains("dave@localhost/r"), "{}", xml(&form));
    assert!(xml(&form).contains("muc#request_allow"));
    alice
        .send(&request(
            "<field var='muc#roomnick'><value>Dave</value></field>\
             <field var='muc#request_allow'><value>true</value></field>",
        ))
        .await;
    let p = presence_from(&mut dave, &dave_jid).await;
    assert_eq!(aff_role(&p).1, "participant", "{}", xml(&p));

    // §9.6 moderator: only admins grant it; then the role list shows two moderators.
    let (a, _) = admin(&mut alice, &r, "nick='Carol' role='moderator'", None).await;
    ok(&a);
    let p = presence_from(&mut dave, &format!("{r}/Carol")).await;
    assert_eq!(aff_role(&p).1, "moderator");
    let list = iq(
        &mut carol,
        &r,
        "get",
        "ml",
        &format!("<query xmlns='{MUC_ADMIN}'><item role='moderator'/></query>"),
    )
    .await;
    assert_eq!(
        list.get_child("query", MUC_ADMIN)
            .unwrap()
            .children()
            .count(),
        2,
        "{}",
        xml(&list)
    );
    // A moderator without affiliation may not kick an owner (not-allowed) nor revoke
    // another moderator (forbidden).
    let (a, _) = admin(&mut carol, &r, "nick='Alice' role='none'", None).await;
    err(&a, "forbidden");
    let (a, _) = admin(&mut carol, &r, "nick='Dave' role='visitor'", None).await;
    ok(&a);
}

#[tokio::test]
async fn affiliations_members_and_owners() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("guild");
    create(&mut alice, &r, "Alice").await;
    join_ok(&mut bob, &r, "Bob").await;
    join_ok(&mut carol, &r, "Carol").await;

    // Membership: bob becomes a member (presence update to all), in the member list.
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='member' jid='bob@localhost'",
        None,
    )
    .await;
    ok(&a);
    let p = presence_from(&mut carol, &format!("{r}/Bob")).await;
    assert_eq!(aff_role(&p), ("member".into(), "participant".into()));
    let list = iq(
        &mut carol,
        &r,
        "get",
        "mem",
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='member'/></query>"),
    )
    .await;
    ok(&list);
    assert_eq!(
        list.get_child("query", MUC_ADMIN)
            .unwrap()
            .children()
            .next()
            .unwrap()
            .attr("jid"),
        Some("bob@localhost")
    );

    // §9.3: entering members-only removes non-members (322).
    ok(&configure(&mut alice, &r, &[("membersonly", "1")]).await);
    let p = unavailable_from(&mut carol, &format!("{r}/Carol")).await;
    assert_eq!(codes(&p), vec![110, 322]);
    // §9.4: losing membership in a members-only room removes bob (321).
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='none' jid='bob@localhost'",
        None,
    )
    .await;
    ok(&a);
    let p = unavailable_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(codes(&p), vec![110, 321]);

    // Admins: granted by owners only; an admin may not touch an owner.
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='admin' jid='bob@localhost'",
        None,
    )
    .await;
    ok(&a);
    join_ok(&mut bob, &r, "Bob").await;
    let (a, _) = admin(
        &mut bob,
        &r,
        "affiliation='outcast' jid='alice@localhost'",
        None,
    )
    .await;
    err(&a, "not-allowed");
    let (a, _) = admin(
        &mut bob,
        &r,
        "affiliation='owner' jid='carol@localhost'",
        None,
    )
    .await;
    err(&a, "forbidden");
    // An admin manages members.
    let (a, _) = admin(
        &mut bob,
        &r,
        "affiliation='member' jid='carol@localhost'",
        None,
    )
    .await;
    ok(&a);
    join_ok(&mut carol, &r, "Carol").await;
    // §10.6/§10.7: the last owner cannot leave ownership; with a second owner she can.
    let (a, _) = admin(
        &mut alice,
        &r,
        "affiliation='admin' jid='alice@localhost'",
        None,
    )
    .await;
    err(&a, "conflict");
    ok(&configure(&mut alice, &r, &[("roomowners", "bob@localhost")]).await);
    let p = presence_from(&mut carol, &format!("{r}/Bob")).await;
    assert_eq!(aff_role(&p), ("owner".into(), "moderator".into()));
    let p = presence_from(&mut carol, &format!("{r}/Alice")).await;
    assert_eq!(aff_role(&p).0, "none");
    let list = iq(
        &mut bob,
        &r,
        "get",
        "own",
        &format!("<query xmlns='{MUC_ADMIN}'><item affiliation='owner'/></query>"),
    )
    .await;
    let owners: Vec<_> = list
        .get_child("query", MUC_ADMIN)
        .unwrap()
        .children()
        .map(|i| i.attr("jid").unwrap().to_owned())
        .collect();
    assert_eq!(owners, ["bob@localhost"]);
}

#[tokio::test]
async fn invitations_and_declines() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let mut carol = user(&ts, "carol").await;
    let r = room("party");
    create(&mut alice, &r, "Alice").await;
    ok(&configure(
        &mut alice,
        &r,
        &[
            ("membersonly", "1"),
            ("passwordprotectedroom", "1"),
            ("roomsecret", "s3"),
        ],
    )
    .await);

    // §7.8.2 mediated invitation; in a members-only room the admin's invitee becomes a member.
    alice
        .send(&format!(
            "<message to='{r}'><x xmlns='{MUC_USER}'><invite to='bob@localhost'><reason>come</reason></invite></x></message>"
        ))
        .await;
    let m = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some(r.as_str()));
    let x = m.get_child("x", MUC_USER).unwrap();
    let inv = x.get_child("invite", MUC_USER).unwrap();
    assert_eq!(inv.attr("from"), Some("alice@localhost/r"));
    assert_eq!(inv.get_child("reason", MUC_USER).unwrap().text(), "come");
    assert_eq!(x.get_child("password", MUC_USER).unwrap().text(), "s3");
    // §7.8.2: the invitee declines; the inviter hears it from the room.
    bob.send(&format!(
        "<message to='{r}'><x xmlns='{MUC_USER}'><decline to='alice@localhost'><reason>busy</reason></decline></x></message>"
    ))
    .await;
    let m = alice
        .recv_until(|e| e.name() == "message" && e.get_child("x", MUC_USER).is_some())
        .await;
    let d = m
        .get_child("x", MUC_USER)
        .unwrap()
        .get_child("decline", MUC_USER)
        .unwrap();
    assert_eq!(d.attr("from"), Some("bob@localhost"));
    assert_eq!(d.get_child("reason", MUC_USER).unwrap().text(), "busy");
    // Bob was made a member: he may enter (with the password).
    let got = join(&mut bob, &r, "Bob", "<password>s3</password>").await;
    assert!(is_subject(got.last().unwrap()));
    // Occupants without the privilege may not invite (allowinvites off).
    bob.send(&format!(
        "<message to='{r}'><x xmlns='{MUC_USER}'><invite to='carol@localhost'/></x></message>"
    ))
    .await;
    let e = bob
        .recv_until(|e| e.name() == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(stanza_error_condition(&e).as_deref(), Some("forbidden"));
    carol
        .expect_none(std::time::Duration::from_millis(200), |e| {
            e.name() == "message"
        })
        .await;
}

#[tokio::test]
async fn destroy_with_alternate_venue() {
    let ts = TestServer::start().await;
    let mut alice = user(&ts, "alice").await;
    let mut bob = user(&ts, "bob").await;
    let r = room("doomed");
    create(&mut alice, &r, "Alice").await;
    ok(&configure(&mut alice, &r, &[("persistentroom", "1")]).await);
    join_ok(&mut bob, &r, "Bob").await;
    // Only owners destroy.
    let d = format!(
        "<query xmlns='{MUC_OWNER}'><destroy jid='{}'><reason>moved</reason></destroy></query>",
        room("haven")
    );
    err(&iq(&mut bob, &r, "set", "d0", &d).await, "forbidden");
    ok(&iq(&mut alice, &r, "set", "d1", &d).await);
    let p = presence_from(&mut bob, &format!("{r}/Bob")).await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    assert_eq!(aff_role(&p), ("none".into(), "none".into()));
    let destroy = p
        .get_child("x", MUC_USER)
        .unwrap()
        .get_child("destroy", MUC_USER)
        .unwrap();
    assert_eq!(destroy.attr("jid"), Some(room("haven").as_str()));
    assert_eq!(
        destroy.get_child("reason", MUC_USER).unwrap().text(),
        "moved"
    );
    // Gone, persistent or not.
    err(
        &iq(
            &mut bob,
            &r,
            "get",
            "d2",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        )
        .await,
        "item-not-found",
    );
    say(&mut bob, &r, "anyone?").await;
    let e = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&e).as_deref(),
        Some("item-not-found")
    );
}
