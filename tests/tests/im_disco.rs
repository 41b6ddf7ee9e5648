//! Transcripts for service discovery (XEP-0030) and the server's entity capabilities
//! (XEP-0115): the caps `ver` offered after authentication is the hash of what disco#info
//! answers, the `node#ver` query gets the same answer, bare JIDs are answered by the server on
//! the account's behalf, full JIDs by the client, and the feature list is exactly what the
//! enabled modules serve.

mod im_support;

use base64::Engine;
use im_support::*;
use minidom::Element;
use sha1::Digest;
use starling_sasl::ScramHash;
use starling_tests::*;

const INFO: &str = "http://jabber.org/protocol/disco#info";
const ITEMS: &str = "http://jabber.org/protocol/disco#items";
const CAPS: &str = "http://jabber.org/protocol/caps";

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

/// The XEP-0115 §5.1 hash of a disco#info answer, computed here independently of the server.
fn caps_hash(query: &Element) -> String {
    let mut ids: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", INFO))
        .map(|i| {
            format!(
                "{}/{}/{}/{}<",
                i.attr("category").unwrap_or_default(),
                i.attr("type").unwrap_or_default(),
                i.attr_ns("http://www.w3.org/XML/1998/namespace", "lang")
                    .unwrap_or_default(),
                i.attr("name").unwrap_or_default()
            )
        })
        .collect();
    ids.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort();
    let mut s = ids.concat();
    for f in features {
        s.push_str(f);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(s.as_bytes()))
}

fn features(query: &Element) -> Vec<String> {
    query
        .children()
        .filter(|c| c.is("feature", INFO))
        .filter_map(|f| f.attr("var").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn caps_ver_is_the_hash_of_disco_info() {
    let server = server().await;
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    let pre_auth = c.starttls().await;
    assert!(pre_auth.get_child("c", CAPS).is_none());
    let post_auth = c
        .scram(ScramHash::Sha256, false, "alice", "pw-alice")
        .await
        .expect("login");
    let caps = post_auth.get_child("c", CAPS).expect("caps stream feature");
    assert_eq!(caps.attr("hash"), Some("sha-1"));
    let node = caps.attr("node").expect("node");
    let ver = caps.attr("ver").expect("ver");
    c.bind(Some("phone")).await;

    let res = iq(
        &mut c,
        "i",
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    let info = res.get_child("query", INFO).expect("query");
    assert!(info.get_child("x", "jabber:x:data").is_none(), "no forms");
    assert_eq!(caps_hash(info), ver, "{}", xml(&res));

    // §6.2: node#ver names the same information, and the node is echoed.
    let res = iq(
        &mut c,
        "n",
        &format!(
            "<iq type='get' id='n' to='localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='{node}#{ver}'/></iq>"
        ),
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    let by_node = res.get_child("query", INFO).expect("query");
    assert_eq!(by_node.attr("node"), Some(format!("{node}#{ver}").as_str()));
    assert_eq!(features(by_node), features(info));
    assert_eq!(caps_hash(by_node), ver);

    // Any other node is unknown.
    let res = iq(
        &mut c,
        "o",
        &format!(
            "<iq type='get' id='o' to='localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='{node}#AAAA'/></iq>"
        ),
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );
}

#[tokio::test]
async fn server_features_are_exactly_what_modules_serve() {
    let server = server().await;
    let mut c = server.login("alice", "pw-alice", "phone").await;
    let res = iq(
        &mut c,
        "i",
        "<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    let info = res.get_child("query", INFO).expect("query");
    let identities: Vec<_> = info
        .children()
        .filter(|c| c.is("identity", INFO))
        .map(|i| (i.attr("category"), i.attr("type")))
        .collect();
    assert_eq!(identities, [(Some("server"), Some("im"))]);
    let listed = features(info);
    // Every feature listed is one an enabled module declares, each once...
    let mut served: Vec<String> = server
        .server()
        .modules()
        .iter()
        .flat_map(|m| m.disco_features())
        .map(str::to_owned)
        .collect();
    served.sort();
    served.dedup();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, served);
    assert_eq!(sorted.len(), listed.len(), "no duplicates");
    // ... and the IM features are there.
    for f in [
        INFO,
        ITEMS,
        CAPS,
        "msgoffline",
        "urn:xmpp:blocking",
        "jabber:iq:privacy",
        "vcard-temp",
        "urn:xmpp:time",
        "jabber:iq:last",
        "jabber:iq:version",
        "urn:xmpp:ping",
        "jabber:iq:register",
    ] {
        assert!(listed.iter().any(|l| l == f), "{f} missing from {listed:?}");
    }
    // A module really answers behind the IQ features: a get to the server, or to the
    // user's own account for the per-account ones.
    for (id, to, payload) in [
        ("p", " to='localhost'", "<ping xmlns='urn:xmpp:ping'/>"),
        ("v", " to='localhost'", "<query xmlns='jabber:iq:version'/>"),
        ("t", " to='localhost'", "<time xmlns='urn:xmpp:time'/>"),
        ("l", " to='localhost'", "<query xmlns='jabber:iq:last'/>"),
        ("b", "", "<blocklist xmlns='urn:xmpp:blocking'/>"),
        ("y", "", "<query xmlns='jabber:iq:privacy'/>"),
        ("r", "", "<query xmlns='jabber:iq:register'/>"),
    ] {
        let res = iq(
            &mut c,
            id,
            &format!("<iq type='get' id='{id}'{to}>{payload}</iq>"),
        )
        .await;
        assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    }
}

#[tokio::test]
async fn bare_and_full_jid_disco() {
    let server = server().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    let mut bob = server.login("bob", "pw-bob", "desk").await;

    // A bare JID: the server answers for the account (XEP-0030 §3.1, RFC 6120 §10.5.3.1).
    let res = iq(
        &mut alice,
        "b",
        "<iq type='get' id='b' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    assert_eq!(res.attr("from"), Some("bob@localhost"));
    let info = res.get_child("query", INFO).expect("query");
    let identities: Vec<_> = info
        .children()
        .filter(|c| c.is("identity", INFO))
        .map(|i| (i.attr("category"), i.attr("type")))
        .collect();
    // The account identity (modules such as PEP may add their own beside it).
    assert_eq!(
        identities[0],
        (Some("account"), Some("registered")),
        "{}",
        xml(&res)
    );
    let listed = features(info);
    assert!(listed.iter().any(|f| f == INFO), "{listed:?}");
    // Every account feature a module declares, and not the server's.
    for f in server.server().account_disco_features() {
        assert!(listed.iter().any(|l| l == f), "{f} missing from {listed:?}");
    }
    assert!(!listed.iter().any(|f| f == "msgoffline"), "{listed:?}");

    // disco#items on a bare JID: empty for now.
    let res = iq(
        &mut alice,
        "bi",
        "<iq type='get' id='bi' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    let items = res.get_child("query", ITEMS).expect("query");
    assert_eq!(items.children().count(), 0);

    // No such account: service-unavailable (RFC 6120 §10.5.3.1... the router's rule).
    let res = iq(
        &mut alice,
        "n",
        "<iq type='get' id='n' to='nobody@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("service-unavailable")
    );

    // A full JID: the client itself gets the request.
    alice
        .send("<iq type='get' id='f' to='bob@localhost/desk'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let req = bob.recv().await;
    assert_eq!(
        (req.name(), req.attr("id"), req.attr("from")),
        ("iq", Some("f"), Some("alice@localhost/phone")),
        "{}",
        xml(&req)
    );
    assert!(req.get_child("query", INFO).is_some());
}
