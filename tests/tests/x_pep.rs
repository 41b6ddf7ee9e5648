//! Transcripts for the Personal Eventing Protocol (XEP-0163) and the XEP-0060 subset behind
//! it: publish with auto-create and publish-options, notifications filtered by the `+notify`
//! features of entity capabilities (XEP-0115), the last item for a newly available resource,
//! access models on retrieval, retract and delete notifications, limits, and the node patterns
//! of avatars (XEP-0084), bookmarks (XEP-0402) and OMEMO (XEP-0384).
//!
//! The clients here answer the server's disco#info query about their caps themselves
//! ([`Peer::drain`]); their `ver` is computed by the test from their features (XEP-0115 §5.1),
//! independently of the server.

mod im_support;

use base64::Engine;
use im_support::{befriend, online, server, xml};
use minidom::Element;
use sha1::{Digest, Sha1};
use starling_tests::*;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const CAPS_NODE: &str = "https://client.example/test";

const TUNE: &str = "http://jabber.org/protocol/tune";
const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const AVATAR_META: &str = "urn:xmpp:avatar:metadata";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const DEVICELIST: &str = "eu.siacs.conversations.axolotl.devicelist";
const OMEMO2_DEVICES: &str = "urn:xmpp:omemo:2:devices";
const OMEMO2_BUNDLES: &str = "urn:xmpp:omemo:2:bundles";

/// A logged-in client with a set of disco features, which it announces through caps.
struct Peer {
    c: Conn,
    features: Vec<String>,
    /// Disco queries about our caps answered so far.
    queries: usize,
}

fn caps_ver(features: &[String]) -> String {
    let mut f = features.to_vec();
    f.sort();
    let mut s = String::from("client/pc//Test<");
    for x in f {
        s.push_str(&x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

impl Peer {
    /// `user` online as `res` with `notify` as its `+notify` interests.
    async fn online(server: &TestServer, user: &str, res: &str, notify: &[&str]) -> Peer {
        let c = online(server, user, res).await;
        let mut features = vec![DISCO_INFO.to_owned(), PUBSUB.to_owned()];
        features.extend(notify.iter().map(|n| format!("{n}+notify")));
        Peer {
            c,
            features,
            queries: 0,
        }
    }

    /// Another resource of `user`, logged in with the roster fetched but no presence yet:
    /// its first [`Peer::send_caps`] is its initial presence.
    async fn login(server: &TestServer, user: &str, res: &str, notify: &[&str]) -> Peer {
        let mut c = server.login(user, &format!("pw-{user}"), res).await;
        im_support::roster_get(&mut c, None).await;
        let mut features = vec![DISCO_INFO.to_owned(), PUBSUB.to_owned()];
        features.extend(notify.iter().map(|n| format!("{n}+notify")));
        Peer {
            c,
            features,
            queries: 0,
        }
    }

    /// Broadcasts presence carrying our caps.
    async fn send_caps(&mut self) {
        let ver = caps_ver(&self.features);
        self.c
            .send(&format!(
                "<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
                 node='{CAPS_NODE}' ver='{ver}'/></presence>"
            ))
            .await;
    }

    fn disco_answer(&self, q: &Element) -> String {
        let node = q
            .get_child("query", DISCO_INFO)
            .and_then(|c| c.attr("node"))
            .unwrap_or_default();
        assert_eq!(
            node,
            format!("{CAPS_NODE}#{}", caps_ver(&self.features)),
            "the server asks about our caps node (XEP-0115 §6.2): {}",
            xml(q)
        );
        let mut features = String::new();
        for f in &self.features {
            features.push_str(&format!("<feature var='{f}'/>"));
        }
        format!(
            "<iq type='result' id='{}' to='{}'><query xmlns='{DISCO_INFO}' node='{node}'>\
             <identity category='client' type='pc' name='Test'/>{features}</query></iq>",
            q.attr("id").unwrap(),
            q.attr("from").unwrap()
        )
    }

    /// Everything that arrives until a ping round trip completes, answering the server's
    /// disco#info queries about our caps on the way (those are not returned). Each answer is
    /// followed by one more ping, so what the answer causes is collected too.
    async fn drain(&mut self) -> Vec<Element> {
        const PING: &str =
            "<iq type='get' id='drain' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>";
        self.c.send(PING).await;
        let mut outstanding = 1;
        let mut out = Vec::new();
        loop {
            let el = self.c.recv().await;
            if el.name() == "iq" && el.attr("id") == Some("drain") {
                outstanding -= 1;
                if outstanding == 0 {
                    return out;
                }
            } else if el.name() == "iq"
                && el.attr("type") == Some("get")
                && el.get_child("query", DISCO_INFO).is_some()
            {
                self.queries += 1;
                let answer = self.disco_answer(&el);
                self.c.send(&answer).await;
                self.c.send(PING).await;
                outstanding += 1;
            } else {
                out.push(el);
            }
        }
    }

    /// Sends an IQ with id `id` and returns its answer, with everything else that arrived.
    async fn iq(&mut self, id: &str, xml_text: &str) -> (Element, Vec<Element>) {
        self.c.send(xml_text).await;
        let mut all = self.drain().await;
        let pos = all
            .iter()
            .position(|e| e.name() == "iq" && e.attr("id") == Some(id))
            .unwrap_or_else(|| panic!("no answer to {id}"));
        let answer = all.remove(pos);
        (answer, all)
    }

    /// An IQ that must succeed; returns its payload (if any) and the other stanzas.
    async fn ok(&mut self, id: &str, xml_text: &str) -> (Option<Element>, Vec<Element>) {
        let (r, rest) = self.iq(id, xml_text).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
        (r.children().next().cloned(), rest)
    }

    /// An IQ that must fail with `condition` (and the pubsub condition `app`, if given).
    async fn fails(&mut self, id: &str, xml_text: &str, condition: &str, app: Option<&str>) {
        let (r, _) = self.iq(id, xml_text).await;
        assert_eq!(r.attr("type"), Some("error"), "{}", xml(&r));
        assert_eq!(
            stanza_error_condition(&r).as_deref(),
            Some(condition),
            "{}",
            xml(&r)
        );
        if let Some(app) = app {
            let err = r.children().find(|c| c.name() == "error").unwrap();
            assert!(
                err.get_child(app, ERRORS).is_some(),
                "want <{app}/>: {}",
                xml(&r)
            );
        }
    }
}

/// The pubsub event notifications among `list`: (node, event child) pairs.
fn events(list: &[Element]) -> Vec<(String, Element)> {
    list.iter()
        .filter(|m| m.name() == "message")
        .filter_map(|m| m.get_child("event", EVENT))
        .filter_map(|e| e.children().next())
        .map(|c| (c.attr("node").unwrap_or_default().to_owned(), c.clone()))
        .collect()
}

fn event_messages(list: &[Element]) -> Vec<Element> {
    list.iter()
        .filter(|m| m.name() == "message" && m.get_child("event", EVENT).is_some())
        .cloned()
        .collect()
}

fn publish(
    id: &str,
    node: &str,
    item_id: Option<&str>,
    payload: &str,
    options: &[(&str, &str)],
) -> String {
    let item_id = item_id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    let mut opts = String::new();
    if !options.is_empty() {
        opts.push_str(
            "<publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' \
             type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>",
        );
        for (k, v) in options {
            opts.push_str(&format!("<field var='{k}'><value>{v}</value></field>"));
        }
        opts.push_str("</x></publish-options>");
    }
    format!(
        "<iq type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{node}'>\
         <item{item_id}>{payload}</item></publish>{opts}</pubsub></iq>"
    )
}

fn items_get(id: &str, owner: &str, node: &str, extra: &str) -> String {
    format!(
        "<iq type='get' id='{id}' to='{owner}'><pubsub xmlns='{PUBSUB}'><items node='{node}'{extra}/></pubsub></iq>"
    )
}

fn item_ids(pubsub: &Element) -> Vec<String> {
    pubsub
        .get_child("items", PUBSUB)
        .expect("items")
        .children()
        .map(|i| i.attr("id").unwrap_or_default().to_owned())
        .collect()
}

fn tune(title: &str) -> String {
    format!("<tune xmlns='{TUNE}'><title>{title}</title></tune>")
}

/// alice and bob are mutual contacts, both online with caps; carol is online, a stranger.
async fn trio(
    server: &TestServer,
    alice_notify: &[&str],
    bob_notify: &[&str],
) -> (Peer, Peer, Peer) {
    let mut alice = Peer::online(server, "alice", "phone", alice_notify).await;
    let mut bob = Peer::online(server, "bob", "laptop", bob_notify).await;
    let carol = Peer::online(server, "carol", "pc", &[TUNE, AVATAR_META, DEVICELIST]).await;
    befriend(&mut alice.c, &mut bob.c).await;
    alice.send_caps().await;
    alice.drain().await;
    bob.send_caps().await;
    bob.drain().await;
    alice.drain().await;
    (alice, bob, carol)
}

#[tokio::test]
async fn publish_autocreates_and_notifies_by_caps() {
    let server = server().await;
    let (mut alice, mut bob, mut carol) = trio(&server, &[TUNE], &[TUNE]).await;
    // carol sends alice directed presence with +notify caps: no presence subscription, so no
    // auto-subscription (XEP-0163 §4.1).
    carol
        .c
        .send(&format!(
            "<presence to='alice@localhost'><c xmlns='http://jabber.org/protocol/caps' \
             hash='sha-1' node='{CAPS_NODE}' ver='{}'/></presence>",
            caps_ver(&carol.features)
        ))
        .await;
    carol.drain().await;
    alice.drain().await;

    let (r, rest) = alice
        .ok("p1", &publish("p1", TUNE, Some("t1"), &tune("Finzi"), &[]))
        .await;
    // XEP-0060 §7.1.2: the result names the node and the item id.
    let published = r.unwrap();
    let p = published.get_child("publish", PUBSUB).unwrap();
    assert_eq!(p.attr("node"), Some(TUNE));
    assert_eq!(p.get_child("item", PUBSUB).unwrap().attr("id"), Some("t1"));
    // The owner's own resource wants tune: it gets the notification too (XEP-0163 §3).
    let mine = event_messages(&rest);
    assert_eq!(mine.len(), 1, "{rest:?}");
    let bobs = event_messages(&bob.drain().await);
    assert_eq!(bobs.len(), 1);
    let n = &bobs[0];
    // §4.3.1: from the owner's bare JID, a headline, to the full JID.
    assert_eq!(n.attr("from"), Some("alice@localhost"), "{}", xml(n));
    assert_eq!(n.attr("to"), Some("bob@localhost/laptop"));
    assert_eq!(n.attr("type"), Some("headline"));
    let items = n
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap();
    assert_eq!(items.attr("node"), Some(TUNE));
    let item = items.get_child("item", EVENT).unwrap();
    assert_eq!(item.attr("id"), Some("t1"));
    assert_eq!(
        item.get_child("tune", TUNE)
            .unwrap()
            .get_child("title", TUNE)
            .unwrap()
            .text(),
        "Finzi"
    );
    assert!(
        events(&carol.drain().await).is_empty(),
        "carol has no subscription"
    );

    // A publish without an id gets one generated; still one notification each.
    let (r, _) = alice
        .ok("p2", &publish("p2", TUNE, None, &tune("Holst"), &[]))
        .await;
    let id = r
        .unwrap()
        .get_child("publish", PUBSUB)
        .unwrap()
        .get_child("item", PUBSUB)
        .unwrap()
        .attr("id")
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    let got = events(&bob.drain().await);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1.get_child("item", EVENT).unwrap().attr("id"),
        Some(id.as_str())
    );

    // A node bob has no +notify for is not notified to him.
    alice
        .ok(
            "p3",
            &publish(
                "p3",
                AVATAR_META,
                None,
                "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
                &[],
            ),
        )
        .await;
    assert!(events(&bob.drain().await).is_empty());

    // Only the owner publishes (XEP-0060 §7.1.3.1).
    bob.fails(
        "p4",
        &format!("<iq type='set' id='p4' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><publish node='{TUNE}'><item>{}</item></publish></pubsub></iq>", tune("x")),
        "forbidden",
        None,
    )
    .await;
}

#[tokio::test]
async fn caps_queried_once_then_cached() {
    let server = server().await;
    let (mut alice, mut bob, _carol) = trio(&server, &[TUNE], &[TUNE]).await;
    // alice's caps are asked once although two services (hers and bob's) want them; bob
    // has the same features, hence the same ver, which alice's verified answer taught.
    assert_eq!(alice.queries, 1, "one query for alice's caps");
    assert_eq!(bob.queries, 0, "bob's ver was already known");
    // The same caps again: no query, no last item again.
    bob.send_caps().await;
    let again = bob.drain().await;
    assert_eq!(bob.queries, 0);
    assert!(events(&again).is_empty());
    alice.drain().await;
    // A second resource of bob with the same ver: known, no query.
    let mut bob2 = Peer::login(&server, "bob", "tablet", &[TUNE]).await;
    bob2.send_caps().await;
    bob2.drain().await;
    assert_eq!(bob2.queries, 0, "a verified ver is cached (XEP-0115 §5.4)");
    alice
        .ok("p", &publish("p", TUNE, Some("a"), &tune("A"), &[]))
        .await;
    assert_eq!(events(&bob.drain().await).len(), 1);
    assert_eq!(events(&bob2.drain().await).len(), 1);
}

#[tokio::test]
async fn last_item_on_caps_and_presence() {
    let server = server().await;
    let mut alice = Peer::online(&server, "alice", "phone", &[]).await;
    let mut bob = Peer::online(&server, "bob", "laptop", &[TUNE]).await;
    befriend(&mut alice.c, &mut bob.c).await;
    alice
        .ok("p1", &publish("p1", TUNE, Some("old"), &tune("Old"), &[]))
        .await;
    alice
        .ok("p2", &publish("p2", TUNE, Some("new"), &tune("New"), &[]))
        .await;
    // bob's caps arrive: after his answer to the query, the last item (XEP-0163 §4.3.4).
    bob.send_caps().await;
    let got = bob.drain().await;
    assert_eq!(bob.queries, 1);
    let ev = event_messages(&got);
    assert_eq!(ev.len(), 1, "only the last item: {got:?}");
    let item = ev[0]
        .get_child("event", EVENT)
        .unwrap()
        .get_child("items", EVENT)
        .unwrap()
        .get_child("item", EVENT)
        .unwrap();
    assert_eq!(item.attr("id"), Some("new"));
    assert!(
        ev[0].get_child("delay", "urn:xmpp:delay").is_some(),
        "{}",
        xml(&ev[0])
    );
    // Presence again with the same caps: nothing new.
    bob.send_caps().await;
    assert!(events(&bob.drain().await).is_empty());
    // Unavailable, then available again: the newly available resource gets it again.
    bob.c.send("<presence type='unavailable'/>").await;
    bob.drain().await;
    bob.send_caps().await;
    let again = events(&bob.drain().await);
    assert_eq!(again.len(), 1, "last item on presence");
    // The owner's own new resource gets it too (§4.3.4 "including the account owner").
    let mut alice2 = Peer::login(&server, "alice", "tablet", &[TUNE]).await;
    alice2.send_caps().await;
    assert_eq!(events(&alice2.drain().await).len(), 1);
}

#[tokio::test]
async fn access_models_on_retrieval_and_notification() {
    let server = server().await;
    let (mut alice, mut bob, mut carol) = trio(
        &server,
        &[],
        &[TUNE, "urn:example:open", "urn:example:secret"],
    )
    .await;
    // Default access model: presence. bob (subscribed) may read, carol may not.
    alice
        .ok("p1", &publish("p1", TUNE, Some("1"), &tune("T"), &[]))
        .await;
    let (r, _) = bob
        .ok("g1", &items_get("g1", "alice@localhost", TUNE, ""))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["1"]);
    carol
        .fails(
            "g2",
            &items_get("g2", "alice@localhost", TUNE, ""),
            "not-authorized",
            Some("presence-subscription-required"),
        )
        .await;
    // Open: anyone.
    alice
        .ok(
            "p2",
            &publish(
                "p2",
                "urn:example:open",
                Some("o"),
                "<x xmlns='urn:example:open'/>",
                &[("pubsub#access_model", "open")],
            ),
        )
        .await;
    let (r, _) = carol
        .ok(
            "g3",
            &items_get("g3", "alice@localhost", "urn:example:open", ""),
        )
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["o"]);
    // Whitelist: the owner only, and no notification to bob despite his +notify.
    bob.drain().await;
    alice
        .ok(
            "p3",
            &publish(
                "p3",
                "urn:example:secret",
                Some("s"),
                "<x xmlns='urn:example:secret'/>",
                &[("pubsub#access_model", "whitelist")],
            ),
        )
        .await;
    assert!(
        events(&bob.drain().await).is_empty(),
        "whitelist is not notified to contacts"
    );
    bob.fails(
        "g4",
        &items_get("g4", "alice@localhost", "urn:example:secret", ""),
        "not-allowed",
        Some("closed-node"),
    )
    .await;
    let (r, _) = alice
        .ok(
            "g5",
            &items_get("g5", "alice@localhost", "urn:example:secret", ""),
        )
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["s"]);
    // A missing node.
    bob.fails(
        "g6",
        &items_get("g6", "alice@localhost", "urn:example:none", ""),
        "item-not-found",
        None,
    )
    .await;
    // Disco on the bare JID: the pep identity, publish-options, and only visible nodes.
    let (r, _) = carol
        .ok(
            "d1",
            &format!(
                "<iq type='get' id='d1' to='alice@localhost'><query xmlns='{DISCO_INFO}'/></iq>"
            ),
        )
        .await;
    let q = r.unwrap();
    assert!(
        q.children().any(|c| c.name() == "identity"
            && c.attr("category") == Some("pubsub")
            && c.attr("type") == Some("pep")),
        "{}",
        xml(&q)
    );
    assert!(q
        .children()
        .any(|c| c.attr("var") == Some("http://jabber.org/protocol/pubsub#publish-options")));
    let nodes = |q: &Element| -> Vec<String> {
        let mut v: Vec<String> = q
            .children()
            .filter_map(|i| i.attr("node").map(str::to_owned))
            .collect();
        v.sort();
        v
    };
    let items_q = |id: &str| {
        format!("<iq type='get' id='{id}' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    };
    let (r, _) = carol.ok("d2", &items_q("d2")).await;
    assert_eq!(nodes(&r.unwrap()), vec!["urn:example:open"]);
    let (r, _) = bob.ok("d3", &items_q("d3")).await;
    assert_eq!(
        nodes(&r.unwrap()),
        vec![TUNE.to_owned(), "urn:example:open".to_owned()]
    );
    let (r, _) = alice.ok("d4", &items_q("d4")).await;
    assert_eq!(nodes(&r.unwrap()).len(), 3);
}

#[tokio::test]
async fn publish_options_precondition_and_configuration() {
    let server = server().await;
    let (mut alice, _bob, mut carol) = trio(&server, &[], &[]).await;
    alice
        .ok(
            "p1",
            &publish(
                "p1",
                DEVICELIST,
                Some("current"),
                "<list xmlns='eu.siacs.conversations.axolotl'/>",
                &[("pubsub#access_model", "open")],
            ),
        )
        .await;
    // Same options: fine. Conflicting ones: XEP-0060 §7.1.5.
    alice
        .ok(
            "p2",
            &publish(
                "p2",
                DEVICELIST,
                Some("current"),
                "<list xmlns='eu.siacs.conversations.axolotl'/>",
                &[("pubsub#access_model", "open")],
            ),
        )
        .await;
    alice
        .fails(
            "p3",
            &publish(
                "p3",
                DEVICELIST,
                Some("current"),
                "<list xmlns='eu.siacs.conversations.axolotl'/>",
                &[("pubsub#access_model", "whitelist")],
            ),
            "conflict",
            Some("precondition-not-met"),
        )
        .await;
    // An option the service does not know cannot be met either.
    alice
        .fails(
            "p4",
            &publish(
                "p4",
                DEVICELIST,
                None,
                "<list xmlns='eu.siacs.conversations.axolotl'/>",
                &[("pubsub#bogus", "1")],
            ),
            "conflict",
            Some("precondition-not-met"),
        )
        .await;
    // The client then reconfigures the node (XEP-0060 §8.2) and publishes again.
    let (r, _) = alice
        .ok("c1", &format!("<iq type='get' id='c1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{DEVICELIST}'/></pubsub></iq>"))
        .await;
    let form = r.unwrap();
    let access = form
        .get_child("configure", "http://jabber.org/protocol/pubsub#owner")
        .unwrap()
        .get_child("x", "jabber:x:data")
        .unwrap()
        .children()
        .find(|f| f.attr("var") == Some("pubsub#access_model"))
        .unwrap()
        .children()
        .find(|v| v.name() == "value")
        .unwrap()
        .text();
    assert_eq!(access, "open");
    alice
        .ok("c2", &format!("<iq type='set' id='c2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{DEVICELIST}'>\
            <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
            <field var='pubsub#access_model'><value>whitelist</value></field></x></configure></pubsub></iq>"))
        .await;
    alice
        .ok(
            "p5",
            &publish(
                "p5",
                DEVICELIST,
                Some("current"),
                "<list xmlns='eu.siacs.conversations.axolotl'/>",
                &[("pubsub#access_model", "whitelist")],
            ),
        )
        .await;
    // Only the owner configures.
    carol.fails("c3", &format!("<iq type='get' id='c3' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='{DEVICELIST}'/></pubsub></iq>"), "forbidden", None).await;
}

#[tokio::test]
async fn retract_and_delete_are_notified() {
    let server = server().await;
    let (mut alice, mut bob, _carol) = trio(&server, &[], &[TUNE]).await;
    alice
        .ok(
            "p1",
            &publish(
                "p1",
                TUNE,
                Some("a"),
                &tune("A"),
                &[("pubsub#max_items", "10")],
            ),
        )
        .await;
    alice
        .ok(
            "p2",
            &publish(
                "p2",
                TUNE,
                Some("b"),
                &tune("B"),
                &[("pubsub#max_items", "10")],
            ),
        )
        .await;
    bob.drain().await;
    // Without notify: silent (XEP-0060 §7.2.2.1).
    alice.ok("r1", &format!("<iq type='set' id='r1'><pubsub xmlns='{PUBSUB}'><retract node='{TUNE}'><item id='a'/></retract></pubsub></iq>")).await;
    assert!(events(&bob.drain().await).is_empty());
    // With notify='true': <retract id/>.
    alice.ok("r2", &format!("<iq type='set' id='r2'><pubsub xmlns='{PUBSUB}'><retract node='{TUNE}' notify='true'><item id='b'/></retract></pubsub></iq>")).await;
    let got = events(&bob.drain().await);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1.get_child("retract", EVENT).unwrap().attr("id"),
        Some("b")
    );
    // Retracting a missing item.
    alice.fails("r3", &format!("<iq type='set' id='r3'><pubsub xmlns='{PUBSUB}'><retract node='{TUNE}'><item id='b'/></retract></pubsub></iq>"), "item-not-found", None).await;
    let (r, _) = alice
        .ok("g", &items_get("g", "alice@localhost", TUNE, ""))
        .await;
    assert!(item_ids(&r.unwrap()).is_empty());
    // Delete (XEP-0060 §8.4): <delete node/> to bob, then the node is gone.
    alice.ok("d1", &format!("<iq type='set' id='d1'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='{TUNE}'/></pubsub></iq>")).await;
    let got = events(&bob.drain().await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.name(), "delete");
    assert_eq!(got[0].0, TUNE);
    alice
        .fails(
            "g2",
            &items_get("g2", "alice@localhost", TUNE, ""),
            "item-not-found",
            None,
        )
        .await;
    alice.fails("d2", &format!("<iq type='set' id='d2'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'><delete node='{TUNE}'/></pubsub></iq>"), "item-not-found", None).await;
}

#[tokio::test]
async fn items_retrieval_max_items_and_by_id() {
    let server = server().await;
    let (mut alice, mut bob, _carol) = trio(&server, &[], &[]).await;
    for i in 1..=4 {
        alice
            .ok(
                "p",
                &publish(
                    "p",
                    TUNE,
                    Some(&i.to_string()),
                    &tune(&i.to_string()),
                    &[("pubsub#max_items", "3")],
                ),
            )
            .await;
    }
    // Only the last three are kept.
    let (r, _) = bob
        .ok("g1", &items_get("g1", "alice@localhost", TUNE, ""))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["2", "3", "4"]);
    let (r, _) = bob
        .ok(
            "g2",
            &items_get("g2", "alice@localhost", TUNE, " max_items='1'"),
        )
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["4"]);
    let (r, _) = bob
        .ok("g3", &format!("<iq type='get' id='g3' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='{TUNE}'><item id='3'/></items></pubsub></iq>"))
        .await;
    let r = r.unwrap();
    assert_eq!(item_ids(&r), vec!["3"]);
    let payload = r
        .get_child("items", PUBSUB)
        .unwrap()
        .get_child("item", PUBSUB)
        .unwrap()
        .get_child("tune", TUNE)
        .unwrap();
    assert_eq!(payload.get_child("title", TUNE).unwrap().text(), "3");
    // Republishing an id replaces the item and makes it the newest.
    alice
        .ok(
            "p",
            &publish(
                "p",
                TUNE,
                Some("2"),
                &tune("again"),
                &[("pubsub#max_items", "3")],
            ),
        )
        .await;
    let (r, _) = bob
        .ok("g4", &items_get("g4", "alice@localhost", TUNE, ""))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["3", "4", "2"]);
}

#[tokio::test]
async fn bookmarks_pattern() {
    let server = server().await;
    let (mut alice, mut bob, _carol) = trio(&server, &[BOOKMARKS], &[BOOKMARKS]).await;
    // XEP-0402 §3: publish-options of every bookmarks publish.
    let opts = [
        ("pubsub#persist_items", "true"),
        ("pubsub#max_items", "max"),
        ("pubsub#send_last_published_item", "never"),
        ("pubsub#access_model", "whitelist"),
    ];
    let conf = |name: &str| {
        format!("<conference xmlns='{BOOKMARKS}' name='{name}' autojoin='true'><nick>al</nick></conference>")
    };
    let (_, rest) = alice
        .ok(
            "b1",
            &publish(
                "b1",
                BOOKMARKS,
                Some("theplay@conference.shakespeare.lit"),
                &conf("The Play"),
                &opts,
            ),
        )
        .await;
    assert_eq!(events(&rest).len(), 1, "the owner's resource is notified");
    alice
        .ok(
            "b2",
            &publish(
                "b2",
                BOOKMARKS,
                Some("orchard@conference.shakespeare.lit"),
                &conf("Orchard"),
                &opts,
            ),
        )
        .await;
    // max_items = max keeps both.
    let (r, _) = alice
        .ok("g", &items_get("g", "alice@localhost", BOOKMARKS, ""))
        .await;
    assert_eq!(
        item_ids(&r.unwrap()),
        vec![
            "theplay@conference.shakespeare.lit",
            "orchard@conference.shakespeare.lit"
        ]
    );
    // Private: bob (a contact with +notify) gets nothing and may not read.
    assert!(events(&bob.drain().await).is_empty());
    bob.fails(
        "g2",
        &items_get("g2", "alice@localhost", BOOKMARKS, ""),
        "not-allowed",
        Some("closed-node"),
    )
    .await;
    // send_last_published_item = never: a new resource of alice gets no last item.
    let mut alice2 = Peer::login(&server, "alice", "laptop", &[BOOKMARKS]).await;
    alice2.send_caps().await;
    assert!(events(&alice2.drain().await).is_empty());
    // Removing a bookmark: retract with notify (XEP-0402 §3.4) reaches both resources.
    alice.ok("r", &format!("<iq type='set' id='r'><pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'><item id='orchard@conference.shakespeare.lit'/></retract></pubsub></iq>")).await;
    assert_eq!(events(&alice2.drain().await).len(), 1);
    assert!(events(&bob.drain().await).is_empty());
}

#[tokio::test]
async fn avatar_pattern() {
    let server = server().await;
    let (mut alice, mut bob, mut carol) = trio(&server, &[], &[AVATAR_META]).await;
    let hash = "111f4b3c50d7b0df729d299bc6f8e9ef9066971f";
    // XEP-0084 §4.1: data first, then metadata with the same id.
    alice.ok("d", &publish("d", AVATAR_DATA, Some(hash), &format!("<data xmlns='{AVATAR_DATA}'>iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==</data>"), &[])).await;
    assert!(
        events(&bob.drain().await).is_empty(),
        "nobody asks for data notifications"
    );
    alice.ok("m", &publish("m", AVATAR_META, Some(hash), &format!("<metadata xmlns='{AVATAR_META}'><info bytes='70' id='{hash}' height='1' width='1' type='image/png'/></metadata>"), &[])).await;
    let got = events(&bob.drain().await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, AVATAR_META);
    // bob fetches the data by id (XEP-0084 §4.2).
    let (r, _) = bob.ok("f", &format!("<iq type='get' id='f' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='{AVATAR_DATA}'><item id='{hash}'/></items></pubsub></iq>")).await;
    let r = r.unwrap();
    assert!(r
        .get_child("items", PUBSUB)
        .unwrap()
        .get_child("item", PUBSUB)
        .unwrap()
        .get_child("data", AVATAR_DATA)
        .is_some());
    // Default presence access: carol, a stranger, may not.
    carol
        .fails(
            "f2",
            &items_get("f2", "alice@localhost", AVATAR_DATA, ""),
            "not-authorized",
            None,
        )
        .await;
}

#[tokio::test]
async fn omemo_pattern() {
    let server = server().await;
    let (mut alice, mut bob, mut carol) =
        trio(&server, &[DEVICELIST], &[DEVICELIST, OMEMO2_DEVICES]).await;
    let open = [("pubsub#access_model", "open")];
    // Legacy OMEMO (eu.siacs.conversations.axolotl): device list and a bundle node per device.
    alice
        .ok(
            "l",
            &publish(
                "l",
                DEVICELIST,
                Some("current"),
                "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>",
                &open,
            ),
        )
        .await;
    let got = events(&bob.drain().await);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, DEVICELIST);
    let bundle = "eu.siacs.conversations.axolotl.bundles:1234";
    alice.ok("b", &publish("b", bundle, Some("current"), "<bundle xmlns='eu.siacs.conversations.axolotl'><signedPreKeyPublic signedPreKeyId='1'>AA==</signedPreKeyPublic></bundle>", &open)).await;
    // A stranger may fetch both to start a session (open access).
    let (r, _) = carol
        .ok("g1", &items_get("g1", "alice@localhost", DEVICELIST, ""))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["current"]);
    let (r, _) = carol
        .ok(
            "g2",
            &items_get("g2", "alice@localhost", bundle, " max_items='1'"),
        )
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["current"]);
    // OMEMO 2 (urn:xmpp:omemo:2): devices node, and one bundles node with an item per device.
    alice
        .ok(
            "d",
            &publish(
                "d",
                OMEMO2_DEVICES,
                Some("current"),
                "<devices xmlns='urn:xmpp:omemo:2'><device id='31415'/></devices>",
                &[("pubsub#access_model", "open"), ("pubsub#max_items", "1")],
            ),
        )
        .await;
    assert_eq!(events(&bob.drain().await).len(), 1);
    let bopts = [("pubsub#access_model", "open"), ("pubsub#max_items", "max")];
    alice
        .ok(
            "b1",
            &publish(
                "b1",
                OMEMO2_BUNDLES,
                Some("31415"),
                "<bundle xmlns='urn:xmpp:omemo:2'><spk id='0'>AA==</spk></bundle>",
                &bopts,
            ),
        )
        .await;
    alice
        .ok(
            "b2",
            &publish(
                "b2",
                OMEMO2_BUNDLES,
                Some("27182"),
                "<bundle xmlns='urn:xmpp:omemo:2'><spk id='0'>AQ==</spk></bundle>",
                &bopts,
            ),
        )
        .await;
    let (r, _) = carol
        .ok("g3", &format!("<iq type='get' id='g3' to='alice@localhost'><pubsub xmlns='{PUBSUB}'><items node='{OMEMO2_BUNDLES}'><item id='31415'/></items></pubsub></iq>"))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["31415"]);
    let (r, _) = carol
        .ok(
            "g4",
            &items_get("g4", "alice@localhost", OMEMO2_BUNDLES, ""),
        )
        .await;
    assert_eq!(item_ids(&r.unwrap()).len(), 2);
}

#[tokio::test]
async fn limits() {
    let server = TestServer::start_with(|c| {
        c.pep.max_nodes = 2;
        c.pep.max_items = 3;
        c.pep.max_item_bytes = 1024;
    })
    .await;
    server.add_user("alice", "pw-alice").await;
    let mut alice = Peer::online(&server, "alice", "phone", &[]).await;
    let big = format!("<x xmlns='urn:example:big'>{}</x>", "a".repeat(2000));
    alice
        .fails(
            "p0",
            &publish("p0", "urn:example:big", None, &big, &[]),
            "not-acceptable",
            Some("payload-too-big"),
        )
        .await;
    // max_items = max means the server's cap: 3.
    for i in 0..5 {
        alice
            .ok(
                "p",
                &publish(
                    "p",
                    "n1",
                    Some(&i.to_string()),
                    "<x xmlns='urn:example'/>",
                    &[("pubsub#max_items", "max")],
                ),
            )
            .await;
    }
    let (r, _) = alice
        .ok("g", &items_get("g", "alice@localhost", "n1", ""))
        .await;
    assert_eq!(item_ids(&r.unwrap()), vec!["2", "3", "4"]);
    alice
        .ok(
            "p2",
            &publish("p2", "n2", None, "<x xmlns='urn:example'/>", &[]),
        )
        .await;
    alice
        .fails(
            "p3",
            &publish("p3", "n3", None, "<x xmlns='urn:example'/>", &[]),
            "not-allowed",
            Some("max-nodes-exceeded"),
        )
        .await;
    // Existing nodes still take items.
    alice
        .ok(
            "p4",
            &publish("p4", "n2", None, "<x xmlns='urn:example'/>", &[]),
        )
        .await;
}

#[tokio::test]
async fn malformed_publishes_are_refused() {
    let server = server().await;
    let mut alice = Peer::online(&server, "alice", "phone", &[]).await;
    alice.fails("e1", &format!("<iq type='set' id='e1'><pubsub xmlns='{PUBSUB}'><publish><item><x xmlns='a'/></item></publish></pubsub></iq>"), "bad-request", Some("nodeid-required")).await;
    alice.fails("e2", &format!("<iq type='set' id='e2'><pubsub xmlns='{PUBSUB}'><publish node='n'><item/></publish></pubsub></iq>"), "bad-request", Some("payload-required")).await;
    alice.fails("e3", &format!("<iq type='set' id='e3'><pubsub xmlns='{PUBSUB}'><publish node='n'><item><a xmlns='a'/><b xmlns='b'/></item></publish></pubsub></iq>"), "bad-request", Some("invalid-payload")).await;
    alice
        .fails(
            "e4",
            &format!(
                "<iq type='set' id='e4'><pubsub xmlns='{PUBSUB}'><publish node='n'/></pubsub></iq>"
            ),
            "bad-request",
            Some("item-required"),
        )
        .await;
    // Nothing was created.
    alice
        .fails(
            "g",
            &items_get("g", "alice@localhost", "n", ""),
            "item-not-found",
            None,
        )
        .await;
}

#[tokio::test]
async fn blocked_contacts_get_no_notifications() {
    let server = server().await;
    let (mut alice, mut bob, _carol) = trio(&server, &[], &[TUNE]).await;
    alice
        .ok("p1", &publish("p1", TUNE, Some("1"), &tune("before"), &[]))
        .await;
    assert_eq!(events(&bob.drain().await).len(), 1);
    // XEP-0163 §4.3.3 rule 3: alice blocks bob (XEP-0191), then publishes.
    alice
        .ok(
            "b",
            "<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>",
        )
        .await;
    bob.drain().await;
    alice
        .ok("p2", &publish("p2", TUNE, Some("2"), &tune("after"), &[]))
        .await;
    assert!(events(&bob.drain().await).is_empty());
}
