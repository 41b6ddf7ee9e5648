//! Transcripts for the message archive (XEP-0313 with XEP-0059 paging and XEP-0359 stanza
//! ids): alice and bob chat, both archives fill up, the ids on delivered messages are the
//! archive ids, and queries filter and page through them — every message once, in order.

use std::time::Duration;

use minidom::Element;
use starling_storage::ArchiveItem;
use starling_tests::*;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";
const FORWARD: &str = "urn:xmpp:forward:0";
const DELAY: &str = "urn:xmpp:delay";
const SID: &str = "urn:xmpp:sid:0";
const CLIENT: &str = "jabber:client";

fn xml(el: &Element) -> String {
    starling_proto::writer::element_to_string(el)
}

fn body(el: &Element) -> String {
    el.get_child("body", CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

fn is_message(el: &Element) -> bool {
    el.name() == "message"
}

/// The `<stanza-id/>` a message carries for `by`.
fn stanza_id(el: &Element, by: &str) -> Option<String> {
    el.children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .map(|c| c.attr("id").unwrap_or_default().to_owned())
}

/// One archive result: its id, delay stamp and the forwarded message.
#[derive(Debug)]
struct Hit {
    id: String,
    stamp: String,
    msg: Element,
}

/// The `<fin/>` of a query.
#[derive(Debug)]
struct Fin {
    complete: bool,
    first: Option<String>,
    last: Option<String>,
    count: Option<u64>,
}

/// Sends a query (`fields` inside the form, `rsm` inside `<set/>`, `extra` after it) and
/// collects the results up to the IQ result. Err(condition) for an error answer.
async fn query(
    c: &mut Conn,
    fields: &str,
    rsm: &str,
    extra: &str,
) -> Result<(Vec<Hit>, Fin), String> {
    c.send(&format!(
        "<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2' queryid='qid'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>\
         <set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>{extra}</query></iq>"
    ))
    .await;
    let mut hits = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("q") {
            if el.attr("type") == Some("error") {
                return Err(stanza_error_condition(&el).unwrap_or_default());
            }
            assert_eq!(el.attr("type"), Some("result"), "{}", xml(&el));
            let fin = el.get_child("fin", MAM).expect("fin");
            let set = fin.get_child("set", RSM).expect("rsm set");
            let text = |n: &str| set.get_child(n, RSM).map(|e| e.text());
            return Ok((
                hits,
                Fin {
                    complete: fin.attr("complete") == Some("true"),
                    first: text("first"),
                    last: text("last"),
                    count: text("count").map(|c| c.parse().unwrap()),
                },
            ));
        }
        let Some(result) = el.get_child("result", MAM) else {
            continue; // presence and the like
        };
        assert_eq!(el.attr("from"), Some(who_bare(c).as_str()), "{}", xml(&el));
        assert_eq!(result.attr("queryid"), Some("qid"));
        let fwd = result.get_child("forwarded", FORWARD).expect("forwarded");
        hits.push(Hit {
            id: result.attr("id").unwrap().to_owned(),
            stamp: fwd
                .get_child("delay", DELAY)
                .and_then(|d| d.attr("stamp"))
                .expect("delay stamp")
                .to_owned(),
            msg: fwd.get_child("message", CLIENT).expect("message").clone(),
        });
    }
}

fn who_bare(c: &Conn) -> String {
    c.jid.as_ref().unwrap().bare().as_str().to_owned()
}

fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

fn bodies(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| body(&h.msg)).collect()
}

async fn count(server: &TestServer, user: &str) -> u64 {
    server
        .server()
        .storage()
        .archive_count("localhost", user, "mam")
        .await
        .unwrap()
}

async fn pair() -> (TestServer, Conn, Conn) {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    server.add_user("carol", "pw-c").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "pc").await;
    alice.available().await;
    bob.available().await;
    (server, alice, bob)
}

#[tokio::test]
async fn both_sides_are_archived_and_delivered_messages_carry_the_archive_id() {
    let (server, mut alice, mut bob) = pair().await;
    // Advertised on the account (XEP-0313 §6) and the server (XEP-0359 §4).
    alice
        .send("<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = alice.recv_until(|e| e.attr("id") == Some("d")).await;
    let vars: Vec<_> = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect();
    for f in [MAM, "urn:xmpp:mam:2#extended", SID] {
        assert!(vars.iter().any(|v| v == f), "{f} missing from {vars:?}");
    }

    // alice writes; she slips in an id "by" bob's archive, which must not survive.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='m1'><body>one</body>\
               <stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>\
               <stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='mine'/></message>",
        )
        .await;
    let got = bob.recv_until(is_message).await;
    let bob_id = stanza_id(&got, "bob@localhost").expect("archive id on delivery");
    assert_ne!(bob_id, "forged");
    assert_eq!(
        got.children().filter(|c| c.is("stanza-id", SID)).count(),
        1,
        "{}",
        xml(&got)
    );
    bob.send("<message to='alice@localhost/phone' type='chat' id='m2'><body>two</body></message>")
        .await;
    let got = alice.recv_until(is_message).await;
    let alice_id = stanza_id(&got, "alice@localhost").expect("archive id on delivery");
    // Not archived: chat states, headlines, errors, no-store.
    alice
        .send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='chat'><body>off the record</body><no-store xmlns='urn:xmpp:hints'/></message>")
        .await;
    alice.ping_server().await;
    bob.ping_server().await;

    // Each archive holds both messages, once.
    assert_eq!(count(&server, "alice").await, 2);
    assert_eq!(count(&server, "bob").await, 2);
    let (hits, fin) = query(&mut bob, "", "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["one", "two"]);
    assert!(fin.complete);
    assert_eq!(fin.count, Some(2));
    assert_eq!(fin.first.as_deref(), Some(hits[0].id.as_str()));
    assert_eq!(fin.last.as_deref(), Some(hits[1].id.as_str()));
    // The id bob saw on delivery is the archive id of that message.
    assert_eq!(hits[0].id, bob_id);
    assert_eq!(hits[0].msg.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(hits[0].msg.attr("id"), Some("m1"));
    assert_eq!(hits[1].msg.attr("to"), Some("alice@localhost/phone"));
    // Nothing claims to come from bob's archive in what was stored.
    assert!(stanza_id(&hits[0].msg, "bob@localhost").is_none());

    let (hits, _) = query(&mut alice, "", "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["one", "two"]);
    assert_eq!(hits[1].id, alice_id);
    // alice's own made-up id was dropped before archiving.
    assert!(
        stanza_id(&hits[0].msg, "alice@localhost").is_none(),
        "{}",
        xml(&hits[0].msg)
    );

    // Only the owner may read an archive (§8.1).
    alice
        .send("<iq type='set' id='q2' to='bob@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>")
        .await;
    let r = alice.recv_until(|e| e.attr("id") == Some("q2")).await;
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("forbidden"));
}

#[tokio::test]
async fn queries_filter_by_with_time_and_ids() {
    let (server, mut alice, mut bob) = pair().await;
    let mut carol = server.login("carol", "pw-c", "tab").await;
    carol.available().await;
    // Distinct milliseconds so that start/end can tell the messages apart.
    for (i, peer) in ["bob", "carol", "bob", "carol", "bob"].iter().enumerate() {
        alice
            .send(&format!(
                "<message to='{peer}@localhost' type='chat'><body>m{i}</body></message>"
            ))
            .await;
        alice.ping_server().await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    carol
        .send("<message to='alice@localhost/phone' type='chat'><body>from carol</body></message>")
        .await;
    carol.ping_server().await;
    bob.ping_server().await;

    let (all, _) = query(&mut alice, "", "", "").await.unwrap();
    assert_eq!(bodies(&all), ["m0", "m1", "m2", "m3", "m4", "from carol"]);

    // with: a bare JID matches both directions and every resource.
    let (hits, fin) = query(&mut alice, &field("with", "carol@localhost"), "", "")
        .await
        .unwrap();
    assert_eq!(bodies(&hits), ["m1", "m3", "from carol"]);
    assert!(fin.complete);
    assert_eq!(fin.count, None);
    // A full JID only that resource.
    let (hits, _) = query(&mut alice, &field("with", "carol@localhost/tab"), "", "")
        .await
        .unwrap();
    assert_eq!(bodies(&hits), ["from carol"]);
    let (hits, _) = query(&mut alice, &field("with", "carol@localhost/other"), "", "")
        .await
        .unwrap();
    assert!(hits.is_empty());

    // start and end are inclusive.
    let range = format!(
        "{}{}",
        field("start", &all[1].stamp),
        field("end", &all[3].stamp)
    );
    let (hits, _) = query(&mut alice, &range, "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["m1", "m2", "m3"]);
    let (hits, _) = query(
        &mut alice,
        &format!(
            "{}{}",
            field("with", "bob@localhost"),
            field("start", &all[1].stamp)
        ),
        "",
        "",
    )
    .await
    .unwrap();
    assert_eq!(bodies(&hits), ["m2", "m4"]);

    // after-id / before-id bound a range; ids fetches exactly those.
    let between = format!(
        "{}{}",
        field("after-id", &all[0].id),
        field("before-id", &all[4].id)
    );
    let (hits, _) = query(&mut alice, &between, "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["m1", "m2", "m3"]);
    let ids = format!(
        "<field var='ids'><value>{}</value><value>{}</value></field>",
        all[4].id, all[1].id
    );
    let (hits, fin) = query(&mut alice, &ids, "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["m1", "m4"]);
    assert!(fin.complete);
    // RSM after inside an after-id range: the tighter bound wins.
    let (hits, _) = query(
        &mut alice,
        &field("after-id", &all[0].id),
        &format!("<after>{}</after>", all[2].id),
        "",
    )
    .await
    .unwrap();
    assert_eq!(bodies(&hits), ["m3", "m4", "from carol"]);

    // Unknown ids anywhere are item-not-found (§4.1.3, §4.3.2).
    for (fields, rsm) in [
        (field("after-id", "nope"), String::new()),
        (field("before-id", "nope"), String::new()),
        (
            format!(
                "<field var='ids'><value>{}</value><value>nope</value></field>",
                all[0].id
            ),
            String::new(),
        ),
        (String::new(), "<after>nope</after>".to_owned()),
        (String::new(), "<before>nope</before>".to_owned()),
    ] {
        assert_eq!(
            query(&mut alice, &fields, &rsm, "").await.unwrap_err(),
            "item-not-found",
            "{fields} {rsm}"
        );
    }
    // Unknown fields are feature-not-implemented; bad dates bad-request.
    assert_eq!(
        query(&mut alice, &field("{urn:x}search", "a"), "", "")
            .await
            .unwrap_err(),
        "feature-not-implemented"
    );
    assert_eq!(
        query(&mut alice, &field("start", "last tuesday"), "", "")
            .await
            .unwrap_err(),
        "bad-request"
    );
}

/// Sends `n` numbered messages from `from` to bob's bare JID.
async fn chatter(from: &mut Conn, n: usize) {
    for i in 0..n {
        from.send(&format!(
            "<message to='bob@localhost' type='chat'><body>{i:03}</body></message>"
        ))
        .await;
        if i % 50 == 49 {
            from.ping_server().await;
        }
    }
    from.ping_server().await;
}

#[tokio::test]
async fn paging_forward_and_backward_returns_every_message_once_in_order() {
    let (server, mut alice, mut bob) = pair().await;
    const N: usize = 250;
    chatter(&mut alice, N).await;
    let expected: Vec<String> = (0..N).map(|i| format!("{i:03}")).collect();
    assert_eq!(count(&server, "bob").await, N as u64);
    // bob's queue holds the live messages too: drain them first.
    for _ in 0..N {
        bob.recv_until(is_message).await;
    }

    // Forward, 40 at a time: 7 pages, only the last complete.
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let rsm = match &after {
            Some(id) => format!("<max>40</max><after>{id}</after>"),
            None => "<max>40</max>".to_owned(),
        };
        let (hits, fin) = query(&mut bob, "", &rsm, "").await.unwrap();
        pages += 1;
        assert!(hits.len() <= 40);
        assert_eq!(fin.count, Some(N as u64));
        got.extend(bodies(&hits));
        if fin.complete {
            break;
        }
        assert_eq!(hits.len(), 40);
        after = Some(fin.last.expect("last"));
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, 7);
    assert_eq!(got, expected);

    // Backward from the end (<before/>), 60 at a time; each page oldest first.
    let mut got: Vec<String> = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let rsm = match &before {
            Some(id) => format!("<max>60</max><before>{id}</before>"),
            None => "<max>60</max><before/>".to_owned(),
        };
        let (hits, fin) = query(&mut bob, "", &rsm, "").await.unwrap();
        pages += 1;
        let mut page = bodies(&hits);
        if pages == 1 {
            assert_eq!(page.last().map(String::as_str), Some("249"));
        }
        page.extend(got);
        got = page;
        if fin.complete {
            break;
        }
        assert_eq!(hits.len(), 60);
        before = Some(fin.first.expect("first"));
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(pages, 5);
    assert_eq!(got, expected);

    // The server's page cap (100), and a flipped page (§4.3.4): same items, newest first.
    let (hits, fin) = query(&mut bob, "", "<max>1000</max>", "").await.unwrap();
    assert_eq!(hits.len(), 100);
    assert!(!fin.complete);
    let (hits, fin) = query(&mut bob, "", "<max>3</max><before/>", "<flip-page/>")
        .await
        .unwrap();
    assert_eq!(bodies(&hits), ["249", "248", "247"]);
    assert_eq!(fin.first.as_deref(), Some(hits[2].id.as_str()));
    // max=0: nothing but the count.
    let (hits, fin) = query(&mut bob, "", "<max>0</max>", "").await.unwrap();
    assert!(hits.is_empty());
    assert_eq!(fin.count, Some(N as u64));

    // Metadata (§5): the first and last message.
    bob.send("<iq type='get' id='meta'><metadata xmlns='urn:xmpp:mam:2'/></iq>")
        .await;
    let meta = bob.recv_until(|e| e.attr("id") == Some("meta")).await;
    let meta = meta.get_child("metadata", MAM).expect("metadata");
    let (first, _) = query(&mut bob, "", "<max>1</max>", "").await.unwrap();
    let (last, _) = query(&mut bob, "", "<max>1</max><before/>", "")
        .await
        .unwrap();
    assert_eq!(
        meta.get_child("start", MAM).unwrap().attr("id"),
        Some(first[0].id.as_str())
    );
    assert_eq!(
        meta.get_child("end", MAM).unwrap().attr("id"),
        Some(last[0].id.as_str())
    );
}

/// Sets archiving preferences; the answer.
async fn prefs(c: &mut Conn, prefs: &str) -> Element {
    c.send(&format!("<iq type='set' id='p'>{prefs}</iq>")).await;
    c.recv_until(|e| e.attr("id") == Some("p")).await
}

#[tokio::test]
async fn preferences_decide_what_is_archived() {
    let (server, mut alice, mut bob) = pair().await;
    // Default: always.
    alice
        .send("<iq type='get' id='p'><prefs xmlns='urn:xmpp:mam:2'/></iq>")
        .await;
    let r = alice.recv_until(|e| e.attr("id") == Some("p")).await;
    assert_eq!(
        r.get_child("prefs", MAM).unwrap().attr("default"),
        Some("always")
    );
    // never: bob's messages are neither archived nor stamped.
    let r = prefs(
        &mut alice,
        "<prefs xmlns='urn:xmpp:mam:2' default='never'/>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    bob.send("<message to='alice@localhost' type='chat'><body>unrecorded</body></message>")
        .await;
    let got = alice.recv_until(is_message).await;
    assert_eq!(body(&got), "unrecorded");
    assert!(
        stanza_id(&got, "alice@localhost").is_none(),
        "{}",
        xml(&got)
    );
    alice
        .send("<message to='bob@localhost' type='chat'><body>me neither</body></message>")
        .await;
    alice.ping_server().await;
    assert_eq!(count(&server, "alice").await, 0);
    // bob's own archive follows bob's preferences.
    assert_eq!(count(&server, "bob").await, 2);

    // never by default, but always with bob; carol stays out.
    let r = prefs(
        &mut alice,
        "<prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>bob@localhost</jid></always></prefs>",
    )
    .await;
    let always = r
        .get_child("prefs", MAM)
        .and_then(|p| p.get_child("always", MAM))
        .map(|a| a.children().map(|j| j.text()).collect::<Vec<_>>());
    assert_eq!(always, Some(vec!["bob@localhost".to_owned()]));
    bob.send("<message to='alice@localhost' type='chat'><body>recorded</body></message>")
        .await;
    assert!(stanza_id(&alice.recv_until(is_message).await, "alice@localhost").is_some());
    let mut carol = server.login("carol", "pw-c", "tab").await;
    carol
        .send("<message to='alice@localhost/phone' type='chat'><body>not recorded</body></message>")
        .await;
    carol.ping_server().await;
    alice.recv_until(is_message).await;
    let (hits, _) = query(&mut alice, "", "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["recorded"]);

    // The preferences survive a restart of the module's cache: they are in storage.
    let stored = server
        .server()
        .storage()
        .kv_get("localhost", "alice", "mam-prefs")
        .await
        .unwrap()
        .expect("stored prefs");
    assert!(String::from_utf8(stored).unwrap().contains("bob@localhost"));
    let r = prefs(
        &mut alice,
        "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
    )
    .await;
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn offline_messages_and_e2e_payloads_come_back_unchanged() {
    let (server, mut alice, _bob) = pair().await;
    // carol is offline: her archive id rides along with the stored message.
    let payload = "<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>Content-Type: application/pkcs7-mime&#xD;\n\
                   &#xD;\nMIIB]]&gt;x==&#xD;\n</e2e>\
                   <thing xmlns='urn:example:unknown' a='1'><inner xmlns='urn:example:other'>t<x/></inner></thing>";
    alice
        .send(&format!(
            "<message to='carol@localhost' type='chat' id='e1'>{payload}</message>"
        ))
        .await;
    alice.ping_server().await;
    let mut carol = server.login("carol", "pw-c", "tab").await;
    carol.send("<presence/>").await;
    let got = carol.recv_until(is_message).await;
    let id = stanza_id(&got, "carol@localhost").expect("archive id on the offline message");
    let (hits, _) = query(&mut carol, "", "", "").await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, id);
    for name in ["e2e", "thing"] {
        let a = got.children().find(|c| c.name() == name).unwrap();
        let b = hits[0].msg.children().find(|c| c.name() == name).unwrap();
        assert_eq!(xml(a), xml(b));
        assert_eq!(a, b);
    }
    assert_eq!(
        hits[0]
            .msg
            .get_child("e2e", "urn:ietf:params:xml:ns:xmpp-e2e")
            .unwrap()
            .text(),
        "Content-Type: application/pkcs7-mime\r\n\r\nMIIB]]>x==\r\n"
    );
    // The sender's archive has the same payload.
    let (sent, _) = query(&mut alice, "", "", "").await.unwrap();
    let a = got.children().find(|c| c.name() == "e2e").unwrap();
    let b = sent[0].msg.children().find(|c| c.name() == "e2e").unwrap();
    assert_eq!(xml(a), xml(b));
}

#[tokio::test]
async fn expired_messages_are_swept_and_never_returned() {
    let server = TestServer::start_with(|c| c.mam.retention_days = 7).await;
    server.add_user("alice", "pw-a").await;
    let storage = server.server().storage().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let put = |id: &'static str, age_days: i64| {
        let storage = storage.clone();
        async move {
            let msg = format!(
                "<message xmlns='jabber:client' from='bob@localhost/pc' to='alice@localhost' type='chat'><body>{id}</body></message>"
            );
            storage
                .archive_append(
                    "localhost",
                    "alice",
                    "mam",
                    &ArchiveItem {
                        id: id.into(),
                        when_ms: now - age_days * 86_400_000,
                        with: "bob@localhost".into(),
                        payload: msg.into_bytes(),
                    },
                )
                .await
                .unwrap();
        }
    };
    put("ancient", 30).await;
    // The sweep starts with the first session and deletes it for good.
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut swept = false;
    for _ in 0..200 {
        if count(&server, "alice").await == 0 {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(swept, "the expired message was not deleted");
    // Between sweeps, queries leave expired messages out.
    put("old", 8).await;
    put("recent", 6).await;
    let (hits, fin) = query(&mut alice, "", "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["recent"]);
    assert!(fin.complete);
    assert_eq!(
        query(&mut alice, "", "<before/>", "")
            .await
            .map(|(h, _)| bodies(&h)),
        Ok(vec!["recent".to_owned()])
    );
}

#[tokio::test]
async fn a_rerouted_message_is_archived_once_and_a_forged_id_is_replaced() {
    let (server, mut alice, mut bob) = pair().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='r1'><body>once</body></message>")
        .await;
    let got = bob.recv_until(is_message).await;
    let id = stanza_id(&got, "bob@localhost").unwrap();
    assert_eq!(count(&server, "bob").await, 1);
    // What the router does with a message a closing session still had queued: route it again.
    server.server().route(got.clone()).await;
    let again = bob.recv_until(is_message).await;
    assert_eq!(stanza_id(&again, "bob@localhost"), Some(id.clone()));
    assert_eq!(count(&server, "bob").await, 1);
    // The same id on another message is a forgery: archived afresh under a new id.
    let mut forged = got.clone();
    forged
        .get_child_mut("body", CLIENT)
        .unwrap()
        .append_text(" more");
    server.server().route(forged).await;
    let third = bob.recv_until(is_message).await;
    assert_eq!(body(&third), "once more");
    let new_id = stanza_id(&third, "bob@localhost").unwrap();
    assert_ne!(new_id, id);
    assert_eq!(count(&server, "bob").await, 2);
    let (hits, _) = query(&mut bob, "", "", "").await.unwrap();
    assert_eq!(bodies(&hits), ["once", "once more"]);
    assert_eq!(
        [hits[0].id.as_str(), hits[1].id.as_str()],
        [id.as_str(), new_id.as_str()]
    );
}
