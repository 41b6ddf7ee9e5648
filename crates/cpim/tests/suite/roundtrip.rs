//! Round-trip properties: JID -> URI -> JID, XMPP -> CPIM -> XMPP and XMPP -> PIDF -> XMPP are
//! the identity on the mapped fields; the parsers never panic.

use minidom::Element;
use proptest::prelude::*;
use starling_cpim::address::*;
use starling_cpim::cpim::{CpimMessage, Header, MimeEntity, Subject};
use starling_cpim::message::*;
use starling_cpim::pidf::PidfDocument;
use starling_cpim::presence::*;
use starling_cpim::DateTime;

use crate::reparse;

/// Characters that exercise every escaping rule: URI-safe ASCII, JID-forbidden characters,
/// `%`, `\`, `#`, non-ASCII (2-, 3- and 4-byte UTF-8).
fn user_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        'a', 'Z', '0', '.', '-', '_', '!', '~', '+', '=', '?', '*', ' ', '"', '&', '\'', '/', ':',
        '<', '>', '@', '\\', '%', '#', ';', ',', 'é', 'ß', '€', '中', '😀', '2', '7', 'f', 'c',
        '5',
    ])
}

fn raw_user() -> impl Strategy<Value = String> {
    prop::collection::vec(user_char(), 1..12).prop_map(|v| v.into_iter().collect())
}

fn domain() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}".prop_map(|s| s)
}

/// Text for bodies, subjects and statuses: XML characters, including CR, LF, TAB and `\`.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            'a', ' ', '\n', '\r', '\t', '\\', '"', '<', '&', 'é', '€', '😀', ';', ':', '%', 'u',
        ]),
        0..20,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn lang() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(vec!["en", "de", "fr-CA", "zh-Hant-TW"]).prop_map(str::to_owned),
    )
}

fn el(name: &str, lang: &Option<String>, text: &str) -> Element {
    let mut xml = String::from("<");
    xml.push_str(name);
    xml.push_str(" xmlns='jabber:client'");
    if let Some(l) = lang {
        xml.push_str(&format!(" xml:lang='{l}'"));
    }
    xml.push_str("/>");
    let mut e: Element = xml.parse().unwrap();
    if !text.is_empty() {
        e.append_text_node(text);
    }
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn jid_uri_jid_is_identity(raw in raw_user(), domain in domain(), resource in prop::option::of("[a-z]{1,5}")) {
        // Legacy RFC 3922 `#26;` forms are decoded on the way out and never produced.
        prop_assume!(!raw.to_ascii_lowercase().contains("#2"));
        let bare = format!("{}@{domain}", escape_localpart(&raw));
        let jid = match &resource { Some(r) => format!("{bare}/{r}"), None => bare.clone() };
        let uri = jid_to_im_uri(&jid).unwrap();
        prop_assert!(uri.is_ascii() && !uri.contains(' ') && uri.matches('@').count() == 1, "{}", uri);
        let (scheme, back) = cpim_uri_to_jid(&uri).unwrap();
        prop_assert_eq!(scheme, CpimScheme::Im);
        prop_assert_eq!(&back, &bare);
        // And URI -> JID -> URI.
        prop_assert_eq!(jid_to_pres_uri(&back).unwrap(), uri.replacen("im:", "pres:", 1));
    }

    #[test]
    fn gateway_sip_jid_sip_is_identity(raw in raw_user(), domain in domain(), port in prop::option::of(1u16..)) {
        let gw = GatewayAddressing::new("sip.xmpp.example").unwrap();
        let sip = SipUri::new(false, Some(&raw), &domain, port).unwrap().to_string();
        let jid = gw.sip_to_jid(&sip).unwrap();
        prop_assert!(jid.ends_with("@sip.xmpp.example"));
        prop_assert_eq!(gw.jid_to_sip(&jid).unwrap(), sip.clone());
        let parsed = SipUri::parse(&sip).unwrap();
        prop_assert_eq!(parsed.user(), Some(raw.as_str()));
    }

    #[test]
    fn message_xmpp_cpim_xmpp_is_identity(
        from_user in raw_user(), to_user in raw_user(),
        subjects in prop::collection::vec((lang(), text()), 0..3),
        body in prop::option::of((lang(), text().prop_filter("non-empty", |t| !t.is_empty()))),
    ) {
        prop_assume!(!subjects.is_empty() || body.is_some());
        prop_assume!(!from_user.to_ascii_lowercase().contains("#2") && !to_user.to_ascii_lowercase().contains("#2"));
        let from = format!("{}@x.example", escape_localpart(&from_user));
        let to = format!("{}@y.example", escape_localpart(&to_user));
        let mut stanza: Element = "<message xmlns='jabber:client' type='chat'/>".parse().unwrap();
        stanza.set_attr(rxml::Namespace::NONE, rxml::NcName::try_from("from").unwrap(), format!("{from}/res"));
        stanza.set_attr(rxml::Namespace::NONE, rxml::NcName::try_from("to").unwrap(), to.clone());
        for (l, t) in &subjects {
            stanza.append_child(el("subject", l, t));
        }
        if let Some((l, t)) = &body {
            stanza.append_child(el("body", l, t));
        }
        let now = DateTime::from_unix_millis(1_767_614_282_120);
        let cpim = xmpp_message_to_cpim(&stanza, &now).unwrap();
        let bytes = cpim.to_mime_bytes();
        let parsed = CpimMessage::parse_mime(&bytes).unwrap();
        prop_assert_eq!(&parsed, &cpim);
        let back = cpim_to_xmpp_message(&parsed, &InboundMessageOptions::default()).unwrap();
        prop_assert_eq!(back.attr("from"), Some(from.as_str()));
        prop_assert_eq!(back.attr("to"), Some(to.as_str()));
        let got_subjects: Vec<(Option<String>, String)> = back.children().filter(|c| c.name() == "subject")
            .map(|c| (c.attr_ns(rxml::Namespace::xml(), "lang").map(str::to_owned), c.text())).collect();
        prop_assert_eq!(got_subjects, subjects);
        let got_body = back.get_child("body", "jabber:client")
            .map(|c| (c.attr_ns(rxml::Namespace::xml(), "lang").map(str::to_owned), c.text()));
        prop_assert_eq!(got_body, body);
        // What came back also survives serialization.
        prop_assert_eq!(reparse(&back).children().count(), back.children().count());
    }

    #[test]
    fn presence_xmpp_pidf_xmpp_is_identity(
        resource in prop::collection::vec(user_char(), 1..10).prop_map(|v| v.into_iter().collect::<String>()),
        available in any::<bool>(),
        show in prop::sample::select(vec![None, Some("away"), Some("dnd")]),
        statuses in prop::collection::vec((lang(), text().prop_map(|t| t.replace('\r', ""))), 0..3),
        priority in prop::option::of(0i8..=127),
    ) {
        let from = format!("alice@xmpp.example/{resource}");
        let mut stanza: Element = "<presence xmlns='jabber:client' to='bob@sip.example'/>".parse().unwrap();
        stanza.set_attr(rxml::Namespace::NONE, rxml::NcName::try_from("from").unwrap(), from.clone());
        if !available {
            stanza.set_attr(rxml::Namespace::NONE, rxml::NcName::try_from("type").unwrap(), "unavailable");
        }
        let show = if available { show } else { None };
        if let Some(s) = show {
            stanza.append_child(el("show", &None, s));
        }
        for (l, t) in &statuses {
            stanza.append_child(el("status", l, t));
        }
        if let Some(p) = priority {
            stanza.append_child(el("priority", &None, &p.to_string()));
        }
        let doc = xmpp_presence_to_pidf(&stanza, None).unwrap();
        let parsed = PidfDocument::parse(&doc.to_bytes()).unwrap();
        prop_assert_eq!(&parsed, &doc);
        let back = pidf_to_xmpp_presences(&parsed, "bob@sip.example", &InboundPresenceOptions::default()).unwrap();
        prop_assert_eq!(back.len(), 1);
        let back = &back[0];
        prop_assert_eq!(back.attr("from"), Some(from.as_str()));
        prop_assert_eq!(back.attr("type"), if available { None } else { Some("unavailable") });
        prop_assert_eq!(back.get_child("show", "jabber:client").map(|s| s.text()), show.map(str::to_owned));
        let got: Vec<(Option<String>, String)> = back.children().filter(|c| c.name() == "status")
            .map(|c| (c.attr_ns(rxml::Namespace::xml(), "lang").map(str::to_owned), c.text())).collect();
        prop_assert_eq!(got, statuses);
        prop_assert_eq!(back.get_child("priority", "jabber:client").map(|p| p.text()), priority.map(|p| p.to_string()));
    }

    #[test]
    fn tuple_ids_are_ncnames_and_reversible(resource in prop::collection::vec(any::<char>().prop_filter("no controls", |c| !c.is_control()), 1..12)) {
        let resource: String = resource.into_iter().collect();
        let id = tuple_id_for_resource(Some(&resource));
        prop_assert!(starling_cpim::pidf::Tuple::new(&id, None).is_ok(), "{}", id);
        prop_assert_eq!(resource_for_tuple_id(&id), Some(resource));
    }

    #[test]
    fn any_subject_text_survives_the_wire(s in any::<String>(), l in lang()) {
        let mut msg = CpimMessage::new(MimeEntity::text_plain_utf8("x"));
        msg.push(Header::Subject(Subject::new(l.as_deref(), &s).unwrap())).unwrap();
        let bytes = msg.to_bytes();
        // Escaping leaves no raw CR/LF inside a header line.
        let head_len = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        prop_assert_eq!(bytes[..head_len].iter().filter(|&&b| b == b'\n').count(), 0);
        prop_assert_eq!(CpimMessage::parse(&bytes).unwrap(), msg);
    }

    #[test]
    fn cpim_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = CpimMessage::parse(&bytes);
        let _ = CpimMessage::parse_mime(&bytes);
    }

    #[test]
    fn cpim_parser_never_panics_on_header_like_input(lines in prop::collection::vec("[A-Za-z.;:=<>\"\\\\ @-]{0,30}", 0..6)) {
        let text = format!("{}\r\n\r\nx", lines.join("\r\n"));
        let _ = CpimMessage::parse(text.as_bytes());
    }

    #[test]
    fn address_parsers_never_panic(s in "\\PC{0,40}") {
        let _ = cpim_uri_to_jid(&s);
        let _ = jid_to_im_uri(&s);
        let _ = SipUri::parse(&s);
        let _ = GatewayAddressing::new("gw.example").unwrap().jid_to_sip(&s);
        let _ = DateTime::parse(&s);
    }
}
