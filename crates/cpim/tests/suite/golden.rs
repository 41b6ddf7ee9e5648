//! Golden vectors for every mapping table. Expected values are written out by hand from the
//! RFC rules (the hex of each percent-escape, each priority quotient) — see the comments.

use minidom::Element;
use starling_cpim::address::*;
use starling_cpim::cpim::*;
use starling_cpim::message::*;
use starling_cpim::pidf::*;
use starling_cpim::presence::*;
use starling_cpim::subscription::*;
use starling_cpim::DateTime;

use crate::canonical;

// ----------------------------------------------------------------------------- addresses (§3)

#[test]
fn jid_to_im_and_pres_drop_the_resource() {
    assert_eq!(
        jid_to_im_uri("alice@xmpp.example/laptop").unwrap(),
        "im:alice@xmpp.example"
    );
    assert_eq!(
        jid_to_pres_uri("alice@xmpp.example/laptop").unwrap(),
        "pres:alice@xmpp.example"
    );
    assert_eq!(
        jid_to_im_uri("alice@xmpp.example").unwrap(),
        "im:alice@xmpp.example"
    );
}

#[test]
fn jid_to_uri_percent_encodes_outside_the_rfc3922_set() {
    // RFC 3922 §3.1 keeps A-Za-z0-9!$*.?_~+= (we also encode '?'); everything else is %XX.
    let cases = [
        ("o\\27brien@sip.example", "im:o%27brien@sip.example"), // ' = 0x27 (XEP-0106 input)
        ("o#27;brien@sip.example", "im:o%27brien@sip.example"), // RFC 3922's own escape form
        ("a\\26b@x.example", "im:a%26b@x.example"),             // & = 0x26
        ("a\\2fb@x.example", "im:a%2Fb@x.example"),             // / = 0x2F
        ("a#2F;b@x.example", "im:a%2Fb@x.example"),
        ("jean-luc@x.example", "im:jean%2Dluc@x.example"), // - = 0x2D is not in the set
        ("a\\20b@x.example", "im:a%20b@x.example"),        // space
        ("100%@x.example", "im:100%25@x.example"),         // % = 0x25
        ("who?@x.example", "im:who%3F@x.example"),         // deviation 1: '?' = 0x3F
        ("rené@sip.example", "im:ren%C3%A9@sip.example"),  // é = U+00E9 = C3 A9
        ("a\\40b@x.example", "im:a%40b@x.example"),        // @ = 0x40
        ("c\\5c27d@x.example", "im:c%5C27d@x.example"),    // a literal backslash = 0x5C
        ("x!$*._~+=@x.example", "im:x!$*._~+=@x.example"),
        ("alice@bücher.example", "im:alice@xn--bcher-kva.example"), // IDNA ToASCII
        ("alice@XMPP.Example", "im:alice@xmpp.example"),
    ];
    for (jid, uri) in cases {
        assert_eq!(jid_to_im_uri(jid).unwrap(), uri, "{jid}");
    }
}

#[test]
fn uri_to_jid_decodes_and_escapes() {
    let cases = [
        (
            "im:o'brien@sip.example",
            CpimScheme::Im,
            "o\\27brien@sip.example",
        ),
        (
            "pres:o%27brien@sip.example",
            CpimScheme::Pres,
            "o\\27brien@sip.example",
        ),
        (
            "im:ren%C3%A9@sip.example",
            CpimScheme::Im,
            "rené@sip.example",
        ),
        (
            "im:ren%c3%a9@sip.example",
            CpimScheme::Im,
            "rené@sip.example",
        ),
        ("IM:a&b@x.example", CpimScheme::Im, "a\\26b@x.example"),
        ("im:a%2Fb@x.example", CpimScheme::Im, "a\\2fb@x.example"),
        ("im:a%20b@x.example", CpimScheme::Im, "a\\20b@x.example"),
        ("im:a%5C27b@x.example", CpimScheme::Im, "a\\5c27b@x.example"),
        ("im:a%5Cb@x.example", CpimScheme::Im, "a\\b@x.example"),
        (
            "im:jean%2Dluc@x.example",
            CpimScheme::Im,
            "jean-luc@x.example",
        ),
        (
            "im:jean-luc@x.example",
            CpimScheme::Im,
            "jean-luc@x.example",
        ),
        (
            "im:alice@xn--bcher-kva.example",
            CpimScheme::Im,
            "alice@bücher.example",
        ),
    ];
    for (uri, scheme, jid) in cases {
        assert_eq!(
            cpim_uri_to_jid(uri).unwrap(),
            (scheme, jid.to_owned()),
            "{uri}"
        );
    }
    // RFC 3922 §3.2 literally: & ' / become #26; #27; #2f;.
    assert_eq!(
        cpim_uri_to_jid_with("im:o'brien&co@x.example", JidEscaping::Rfc3922)
            .unwrap()
            .1,
        "o#27;brien#26;co@x.example"
    );
}

#[test]
fn sip_addresses_for_the_gateway() {
    let gw = GatewayAddressing::new("sip.xmpp.example").unwrap();
    let cases = [
        ("sip:bob@sip.example", "bob%sip.example@sip.xmpp.example"),
        (
            "sip:o'brien@sip.example",
            "o\\27brien%sip.example@sip.xmpp.example",
        ),
        (
            "sip:bob@sip.example:5062",
            "bob%sip.example\\3a5062@sip.xmpp.example",
        ),
        (
            "sip:100%25@sip.example",
            "100%%sip.example@sip.xmpp.example",
        ),
        (
            "sip:a%20b@sip.example",
            "a\\20b%sip.example@sip.xmpp.example",
        ),
    ];
    for (sip, jid) in cases {
        assert_eq!(gw.sip_to_jid(sip).unwrap(), jid, "{sip}");
        assert_eq!(gw.jid_to_sip(jid).unwrap(), sip, "{jid}");
    }
    assert_eq!(
        gw.sip_to_jid("sip:bob@sip.example;transport=tcp").unwrap(),
        "bob%sip.example@sip.xmpp.example"
    );
    assert_eq!(
        gw.jid_to_sip("bob%sip.example@sip.xmpp.example/res")
            .unwrap(),
        "sip:bob@sip.example"
    );

    // Native XMPP users as SIP sees them.
    assert_eq!(
        jid_to_sip_uri("alice@xmpp.example/phone").unwrap(),
        "sip:alice@xmpp.example"
    );
    assert_eq!(
        jid_to_sip_uri("o\\27brien@xmpp.example").unwrap(),
        "sip:o'brien@xmpp.example"
    );
    assert_eq!(
        jid_to_sip_uri("a\\20b@xmpp.example").unwrap(),
        "sip:a%20b@xmpp.example"
    );
    assert_eq!(
        sip_uri_to_jid("sip:alice@xmpp.example;transport=tcp").unwrap(),
        "alice@xmpp.example"
    );
    assert_eq!(
        sip_uri_to_jid("sips:o'brien@xmpp.example:5061").unwrap(),
        "o\\27brien@xmpp.example"
    );

    let uri = SipUri::parse("sips:bob@[2001:db8::1]:5061;gr=abc").unwrap();
    assert!(uri.is_secure());
    assert_eq!(
        (uri.user(), uri.host(), uri.port(), uri.params()),
        (Some("bob"), "[2001:db8::1]", Some(5061), Some("gr=abc"))
    );
}

// ------------------------------------------------------------- Message/CPIM (RFC 3862 §6)

/// RFC 3862 §6's example, with the outer MIME header (lines marked m:, s:, h:, e: there).
const RFC3862_EXAMPLE: &str = "Content-type: Message/CPIM\r\n\
\r\n\
From: MR SANDERS <im:piglet@100akerwood.com>\r\n\
To: Depressed Donkey <im:eeyore@100akerwood.com>\r\n\
DateTime: 2000-12-13T13:40:00-08:00\r\n\
Subject: the weather will be fine today\r\n\
Subject:;lang=fr beau temps prevu pour aujourd'hui\r\n\
NS: MyFeatures <mid:MessageFeatures@id.foo.com>\r\n\
Require: MyFeatures.VitalMessageOption\r\n\
MyFeatures.VitalMessageOption: Confirmation-requested\r\n\
MyFeatures.WackyMessageOption: Use-silly-font\r\n\
\r\n\
Content-type: text/xml; charset=utf-8\r\n\
Content-ID: <1234567890@foo.com>\r\n\
\r\n\
<body>\r\n\
Here is the text of my message.\r\n\
</body>\r\n";

#[test]
fn parses_the_rfc3862_example() {
    let msg = CpimMessage::parse_mime(RFC3862_EXAMPLE.as_bytes()).unwrap();
    let from = msg.from().unwrap();
    assert_eq!(
        (from.formal_name(), from.uri()),
        (Some("MR SANDERS"), "im:piglet@100akerwood.com")
    );
    let to: Vec<_> = msg.to().map(|a| (a.formal_name(), a.uri())).collect();
    assert_eq!(
        to,
        [(Some("Depressed Donkey"), "im:eeyore@100akerwood.com")]
    );
    assert_eq!(
        msg.date_time().unwrap().to_string(),
        "2000-12-13T13:40:00-08:00"
    );
    let subjects: Vec<_> = msg.subjects().map(|s| (s.lang(), s.text())).collect();
    assert_eq!(
        subjects,
        [
            (None, "the weather will be fine today"),
            (Some("fr"), "beau temps prevu pour aujourd'hui")
        ]
    );
    assert_eq!(
        msg.namespace_uri(Some("MyFeatures")),
        Some("mid:MessageFeatures@id.foo.com")
    );
    assert_eq!(
        msg.namespace_uri(None),
        Some("urn:ietf:params:cpim-headers:")
    );
    let required: Vec<String> = msg.required().map(ToString::to_string).collect();
    assert_eq!(required, ["MyFeatures.VitalMessageOption"]);
    let ext: Vec<_> = msg
        .extensions()
        .map(|e| (e.name().prefix(), e.name().name(), e.value()))
        .collect();
    assert_eq!(
        ext,
        [
            (
                Some("MyFeatures"),
                "VitalMessageOption",
                "Confirmation-requested"
            ),
            (Some("MyFeatures"), "WackyMessageOption", "Use-silly-font"),
        ]
    );
    let entity = msg.entity();
    assert_eq!(entity.content_type().unwrap().mime_type(), "text/xml");
    assert_eq!(entity.header("content-id"), Some("<1234567890@foo.com>"));
    assert_eq!(
        entity.body(),
        b"<body>\r\nHere is the text of my message.\r\n</body>\r\n"
    );
    // The entity is kept byte for byte, and the canonical example is re-emitted unchanged.
    assert!(RFC3862_EXAMPLE.as_bytes().ends_with(entity.as_bytes()));
    assert_eq!(msg.to_mime_bytes(), RFC3862_EXAMPLE.as_bytes());
}

#[test]
fn rfc3862_example_is_not_delivered_because_of_require() {
    // RFC 3922 §4.2: Require SHOULD produce an error to the sender; NS is never passed on.
    let msg = CpimMessage::parse_mime(RFC3862_EXAMPLE.as_bytes()).unwrap();
    let err = cpim_to_xmpp_message(&msg, &InboundMessageOptions::default()).unwrap_err();
    assert_eq!(
        err,
        MessageMappingError::UnsupportedRequire(vec!["MyFeatures.VitalMessageOption".into()])
    );
    // Without the Require header, the text/xml entity still cannot become <body/>.
    let without = RFC3862_EXAMPLE.replace("Require: MyFeatures.VitalMessageOption\r\n", "");
    let msg = CpimMessage::parse_mime(without.as_bytes()).unwrap();
    assert!(matches!(
        cpim_to_xmpp_message(&msg, &InboundMessageOptions::default()),
        Err(MessageMappingError::UnsupportedContent(_))
    ));
}

#[test]
fn header_value_escapes_on_the_wire() {
    let mut msg = CpimMessage::new(MimeEntity::text_plain_utf8("x"));
    msg.push(Header::Subject(
        Subject::new(None, "line1\nline2\t\\end\u{7}").unwrap(),
    ))
    .unwrap();
    msg.push(Header::From(
        Address::new(Some("René \"R\" Ü"), "im:r@x.example").unwrap(),
    ))
    .unwrap();
    let bytes = msg.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    // RFC 3862 §3.3: \n, \t, \\ and \u0007 for BEL; a non-token Formal-name is a quoted String.
    assert!(text.starts_with("Subject: line1\\nline2\\t\\\\end\\u0007\r\nFrom: \"René \\\"R\\\" Ü\"<im:r@x.example>\r\n"), "{text}");
    assert_eq!(CpimMessage::parse(&bytes).unwrap(), msg);
}

// --------------------------------------------------------------------- messages (§4)

fn now() -> DateTime {
    DateTime::parse("2026-01-05T11:58:02.120Z").unwrap()
}

#[test]
fn example_a_message_to_cpim_bytes() {
    // cpim-e2e.md §1.5 A, checked against RFC 3922 §4.1: type, thread and id are dropped; the
    // resource is dropped; DateTime is the gateway's. (The example's "Alice" display name is a
    // MAY we leave to the caller.)
    let stanza: Element =
        "<message xmlns='jabber:client' from='alice@xmpp.example/laptop' to='bob@sip.example' \
        type='chat' id='m1'><subject>Lunch</subject><subject xml:lang='de'>Mittagessen</subject>\
        <thread>t-77</thread><body>Noon at the usual place?</body></message>"
            .parse()
            .unwrap();
    let cpim = xmpp_message_to_cpim(&stanza, &now()).unwrap();
    let expected = "Content-type: Message/CPIM\r\n\
\r\n\
From: <im:alice@xmpp.example>\r\n\
To: <im:bob@sip.example>\r\n\
DateTime: 2026-01-05T11:58:02.120Z\r\n\
Subject: Lunch\r\n\
Subject:;lang=de Mittagessen\r\n\
\r\n\
Content-type: text/plain; charset=utf-8\r\n\
\r\n\
Noon at the usual place?";
    assert_eq!(String::from_utf8(cpim.to_mime_bytes()).unwrap(), expected);
}

#[test]
fn unmapped_parts_do_not_appear() {
    let stanza: Element = "<message xmlns='jabber:client' from='a@x.example/r' to='b@y.example' type='headline' id='secret-id'>\
        <thread>t-1</thread><body>hi\nthere</body><body xml:lang='fr'>salut</body>\
        <x xmlns='urn:example:ext'>ext-payload</x></message>"
        .parse()
        .unwrap();
    let bytes = xmpp_message_to_cpim(&stanza, &now()).unwrap().to_bytes();
    let text = String::from_utf8(bytes).unwrap();
    for absent in [
        "headline",
        "secret-id",
        "t-1",
        "ext-payload",
        "salut",
        "Content-ID",
    ] {
        assert!(!text.contains(absent), "{absent} leaked into {text}");
    }
    assert!(text.ends_with("\r\n\r\nhi\r\nthere"), "{text}");
}

#[test]
fn delay_stamp_becomes_date_time() {
    let stanza: Element =
        "<message xmlns='jabber:client' from='a@x.example' to='b@y.example'><body>x</body>\
        <delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:08:25Z'/></message>"
            .parse()
            .unwrap();
    let cpim = xmpp_message_to_cpim(&stanza, &now()).unwrap();
    assert_eq!(
        cpim.date_time().unwrap().to_string(),
        "2002-09-10T23:08:25Z"
    );
}

#[test]
fn cpim_to_message_with_options() {
    let raw = "From: Bob <im:bob@sip.example>\r\n\
To: <im:alice@xmpp.example>\r\n\
cc: <im:carol@sip.example>\r\n\
DateTime: 2000-12-13T13:40:00-08:00\r\n\
Subject:;lang=en Hello\r\n\
\r\n\
Content-Type: text/plain\r\n\
Content-ID: <m-77@sip.example>\r\n\
Content-Language: en\r\n\
\r\n\
two\r\nlines";
    let msg = CpimMessage::parse(raw.as_bytes()).unwrap();
    let opts = InboundMessageOptions {
        message_type: "normal".into(),
        to_resource: Some("laptop".into()),
        include_delay: true,
        id_from_content_id: true,
    };
    let got = cpim_to_xmpp_message(&msg, &opts).unwrap();
    let expected = canonical(
        "<message xmlns='jabber:client' from='bob@sip.example' to='alice@xmpp.example/laptop' type='normal' id='m-77@sip.example'>
           <subject xml:lang='en'>Hello</subject>
           <body xml:lang='en'>two\nlines</body>
           <delay xmlns='urn:xmpp:delay' stamp='2000-12-13T21:40:00Z'/>
         </message>",
    );
    assert_eq!(got, expected);
    // Defaults: type chat, no id, no delay; cc is never passed on.
    let got = cpim_to_xmpp_message(&msg, &InboundMessageOptions::default()).unwrap();
    assert_eq!(got.attr("type"), Some("chat"));
    assert_eq!(got.attr("id"), None);
    assert!(!String::from(&got).contains("carol"));
    assert!(got.get_child("delay", "urn:xmpp:delay").is_none());
}

#[test]
fn inbound_content_rules() {
    let with = |ct: &str, body: &[u8]| {
        let mut bytes = format!(
            "From: <im:b@y.example>\r\nTo: <im:a@x.example>\r\n\r\nContent-Type: {ct}\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        cpim_to_xmpp_message(
            &CpimMessage::parse(&bytes).unwrap(),
            &InboundMessageOptions::default(),
        )
    };
    assert!(with("text/plain; charset=UTF-8", "é".as_bytes()).is_ok());
    assert!(with("text/plain; charset=us-ascii", b"plain").is_ok());
    assert!(matches!(
        with("text/plain; charset=us-ascii", "é".as_bytes()),
        Err(MessageMappingError::UnsupportedContent(_))
    ));
    assert!(matches!(
        with("text/html; charset=utf-8", b"<b>x</b>"),
        Err(MessageMappingError::UnsupportedContent(_))
    ));
    assert!(matches!(
        with("text/plain; charset=iso-8859-1", b"\xe9"),
        Err(MessageMappingError::UnsupportedContent(_))
    ));
    assert_eq!(
        with("text/plain", b"\x01"),
        Err(MessageMappingError::NotXmlText)
    );
    // An empty body maps to no <body/>; with nothing else left there is nothing to deliver.
    assert_eq!(
        with("text/plain", b""),
        Err(MessageMappingError::NothingToMap)
    );
}

#[test]
fn outbound_refusals() {
    let cases = [
        ("<message xmlns='jabber:client' from='a@x' to='b@y' type='error'><body>x</body></message>", "UnsupportedType"),
        ("<message xmlns='jabber:client' from='a@x' to='b@y' type='groupchat'><body>x</body></message>", "UnsupportedType"),
        ("<message xmlns='jabber:client' to='b@y'><body>x</body></message>", "MissingAddress"),
        ("<message xmlns='jabber:client' from='a@x' to='b@y'><thread>t</thread></message>", "NothingToMap"),
        ("<message xmlns='jabber:client' from='x' to='b@y'><body>x</body></message>", "Address"),
        ("<presence xmlns='jabber:client' from='a@x' to='b@y'/>", "NotAMessage"),
        ("<message xmlns='jabber:client' from='a@x' to='b@y'><e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>x</e2e></message>", "EndToEnd"),
        ("<message xmlns='jabber:client' from='a@x' to='b@y'><body>x</body><delay xmlns='urn:xmpp:delay' stamp='yesterday'/></message>", "BadDelay"),
    ];
    for (xml, want) in cases {
        let el: Element = xml.parse().unwrap();
        let err = xmpp_message_to_cpim(&el, &now()).unwrap_err();
        assert!(format!("{err:?}").starts_with(want), "{xml}: {err:?}");
    }
}

// ---------------------------------------------------------------------- presence (§5)

#[test]
fn priority_scaling_table() {
    // floor(1000p/127): 1000/127 = 7.87 -> 0.007; 2000/127 = 15.7 -> 0.015; 5000/127 = 39.4 ->
    // 0.039; 13000/127 = 102.4 -> 0.102; 126000/127 = 992.1 -> 0.992; 127 -> 1.
    let table = [
        (0, "0"),
        (1, "0.007"),
        (2, "0.015"),
        (5, "0.039"),
        (13, "0.102"),
        (126, "0.992"),
        (127, "1"),
    ];
    for (p, s) in table {
        assert_eq!(priority_to_pidf(p).unwrap().to_string(), s, "priority {p}");
    }
    assert_eq!(priority_to_pidf(-5), None);
    assert_eq!(priority_to_pidf(-128), None);
    for p in 0..=127i8 {
        assert_eq!(priority_from_pidf(priority_to_pidf(p).unwrap()), p);
    }
    // Foreign values land on the smallest priority at or above them.
    assert_eq!(priority_from_pidf(Priority::parse("0.5").unwrap()), 64); // 64000/127 = 503.9
    assert_eq!(priority_from_pidf(Priority::parse("0.999").unwrap()), 126);
    assert_eq!(priority_from_pidf(Priority::parse("0.001").unwrap()), 1);
}

#[test]
fn tuple_ids() {
    assert_eq!(tuple_id_for_resource(Some("laptop")), "laptop");
    assert_eq!(tuple_id_for_resource(Some("My Phone")), "_4d792050686f6e65"); // "My Phone" in hex
    assert_eq!(tuple_id_for_resource(Some("_x")), "_5f78");
    assert_eq!(tuple_id_for_resource(Some("1st")), "_317374");
    assert_eq!(tuple_id_for_resource(None), "_");
    assert_eq!(
        resource_for_tuple_id("_4d792050686f6e65").as_deref(),
        Some("My Phone")
    );
    assert_eq!(resource_for_tuple_id("sg89ae").as_deref(), Some("sg89ae")); // RFC 3863 §5 id
    assert_eq!(resource_for_tuple_id("_abc").as_deref(), Some("_abc")); // not our form
    assert_eq!(resource_for_tuple_id("_"), None);
}

#[test]
fn example_b_presence_to_pidf() {
    // cpim-e2e.md §1.5 B, checked against RFC 3922 §5 and RFC 3863 §4.1.
    let stanza: Element = "<presence xmlns='jabber:client' from='alice@xmpp.example/laptop' to='bob@sip.example'>\
        <show>dnd</show><status xml:lang='en'>In a meeting</status><priority>5</priority></presence>"
        .parse()
        .unwrap();
    let doc = xmpp_presence_to_pidf(&stanza, None).unwrap();
    let expected = canonical(
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:im='urn:ietf:params:xml:ns:pidf:im'
                   entity='pres:alice@xmpp.example'>
           <tuple id='laptop'>
             <status><basic>open</basic><im:im>busy</im:im></status>
             <contact priority='0.039'>im:alice@xmpp.example</contact>
             <note xml:lang='en'>In a meeting</note>
           </tuple>
         </presence>",
    );
    assert_eq!(doc.to_element(), expected);
    assert_eq!(
        crate::strip(Element::from_reader(&doc.to_bytes()[..]).unwrap()),
        expected
    );
    assert!(doc.to_bytes().starts_with(b"<?xml version"));

    // Wrapped in Message/CPIM (RFC 3922 §5) with From im:bare.
    let now = DateTime::parse("2026-01-05T11:58:02.120Z").unwrap();
    let cpim = pidf_to_cpim(&doc, "alice@xmpp.example/laptop", "bob@sip.example", &now).unwrap();
    let text = String::from_utf8(cpim.to_bytes()).unwrap();
    assert!(text.starts_with(
        "From: <im:alice@xmpp.example>\r\nTo: <im:bob@sip.example>\r\nDateTime: 2026-01-05T11:58:02.120Z\r\n\r\n\
         Content-type: application/pidf+xml; charset=utf-8\r\n\r\n<?xml"
    ));
    assert_eq!(
        cpim_to_pidf(&CpimMessage::parse(text.as_bytes()).unwrap()).unwrap(),
        doc
    );
}

#[test]
fn presence_mapping_table() {
    let tuple = |xml: &str| xmpp_presence_to_tuple(&xml.parse::<Element>().unwrap(), None).unwrap();
    let t = tuple("<presence xmlns='jabber:client' from='a@x.example/r'/>");
    assert_eq!((t.basic(), t.im_status()), (Some(Basic::Open), None));
    assert_eq!(t.contact().unwrap().priority(), None);
    let t = tuple("<presence xmlns='jabber:client' from='a@x.example/r' type='unavailable'><show>away</show></presence>");
    assert_eq!((t.basic(), t.im_status()), (Some(Basic::Closed), None));
    for (show, im) in [
        ("away", Some("away")),
        ("xa", Some("away")),
        ("dnd", Some("busy")),
        ("chat", None),
    ] {
        let t = tuple(&format!(
            "<presence xmlns='jabber:client' from='a@x.example/r'><show>{show}</show></presence>"
        ));
        assert_eq!(t.im_status(), im, "show {show}");
    }
    let t = tuple(
        "<presence xmlns='jabber:client' from='a@x.example/r'><priority>-5</priority></presence>",
    );
    assert_eq!(t.contact().unwrap().priority(), None);
    let t = tuple(
        "<presence xmlns='jabber:client' from='a@x.example/r'><delay xmlns='urn:xmpp:delay' stamp='2001-10-27T16:49:29Z'/></presence>",
    );
    assert_eq!(t.timestamp().unwrap().to_string(), "2001-10-27T16:49:29Z");
    let ts = DateTime::parse("2026-01-05T11:58:02.120Z").unwrap();
    let t = xmpp_presence_to_tuple(
        &"<presence xmlns='jabber:client' from='a@x.example'/>"
            .parse()
            .unwrap(),
        Some(&ts),
    )
    .unwrap();
    assert_eq!((t.id(), t.timestamp()), ("_", Some(&ts)));

    for ty in ["subscribe", "probe", "error"] {
        let el: Element =
            format!("<presence xmlns='jabber:client' from='a@x.example' type='{ty}'/>")
                .parse()
                .unwrap();
        assert_eq!(
            xmpp_presence_to_tuple(&el, None),
            Err(PresenceMappingError::NotANotification(ty.into()))
        );
    }
}

#[test]
fn all_resources_in_one_document() {
    let a: Element = "<presence xmlns='jabber:client' from='alice@xmpp.example/desk'/>"
        .parse()
        .unwrap();
    let b: Element = "<presence xmlns='jabber:client' from='alice@xmpp.example/phone'><show>away</show></presence>".parse().unwrap();
    let doc = xmpp_presences_to_pidf(&[a.clone(), b], None).unwrap();
    let ids: Vec<_> = doc.tuples().iter().map(|t| t.id()).collect();
    assert_eq!(ids, ["desk", "phone"]);
    let other: Element = "<presence xmlns='jabber:client' from='mallory@xmpp.example/x'/>"
        .parse()
        .unwrap();
    assert!(matches!(
        xmpp_presences_to_pidf(&[a, other], None),
        Err(PresenceMappingError::MixedEntities(..))
    ));
    assert_eq!(
        xmpp_presences_to_pidf(&[], None),
        Err(PresenceMappingError::Empty)
    );
}

#[test]
fn example_c_multi_tuple_document_splits() {
    // cpim-e2e.md §1.5 C / RFC 3922 §6: one stanza per tuple.
    let pidf = "<?xml version='1.0' encoding='UTF-8'?>
      <presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:bob@sip.example'>
        <tuple id='desk'><status><basic>open</basic></status><note>At desk</note>
          <timestamp>2001-10-27T16:49:29Z</timestamp></tuple>
        <tuple id='phone'><status><basic>closed</basic></status></tuple>
      </presence>";
    let doc = PidfDocument::parse(pidf.as_bytes()).unwrap();
    let got = pidf_to_xmpp_presences(
        &doc,
        "alice@xmpp.example",
        &InboundPresenceOptions::default(),
    )
    .unwrap();
    let expected = [
        canonical("<presence xmlns='jabber:client' from='bob@sip.example/desk' to='alice@xmpp.example'><status>At desk</status></presence>"),
        canonical("<presence xmlns='jabber:client' from='bob@sip.example/phone' to='alice@xmpp.example' type='unavailable'/>"),
    ];
    assert_eq!(got, expected);

    // The timestamp is passed on only when asked.
    let got = pidf_to_xmpp_presences(
        &doc,
        "alice@xmpp.example",
        &InboundPresenceOptions {
            include_delay: true,
        },
    )
    .unwrap();
    assert_eq!(
        got[0]
            .get_child("delay", "urn:xmpp:delay")
            .unwrap()
            .attr("stamp"),
        Some("2001-10-27T16:49:29Z")
    );

    // An unchanged tuple re-sent produces no stanza.
    let mut filter = TupleChangeFilter::new();
    let first = pidf_to_xmpp_presences(
        &doc,
        "alice@xmpp.example",
        &InboundPresenceOptions::default(),
    )
    .unwrap();
    assert_eq!(filter.filter(first.clone()).len(), 2);
    assert_eq!(filter.filter(first).len(), 0);
    let changed = pidf.replace("<basic>closed</basic>", "<basic>open</basic>");
    let doc = PidfDocument::parse(changed.as_bytes()).unwrap();
    let again = filter.filter(
        pidf_to_xmpp_presences(
            &doc,
            "alice@xmpp.example",
            &InboundPresenceOptions::default(),
        )
        .unwrap(),
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attr("from"), Some("bob@sip.example/phone"));
}

#[test]
fn inbound_show_priority_and_notes() {
    let pidf = "<presence xmlns='urn:ietf:params:xml:ns:pidf' xmlns:im='urn:ietf:params:xml:ns:pidf:im' entity='pres:bob@sip.example'>
        <tuple id='a'><status><basic>open</basic><im:im>busy</im:im></status><contact priority='0.8'>sip:bob@sip.example</contact></tuple>
        <tuple id='b'><status><basic>open</basic><im:im>on-the-phone</im:im></status></tuple>
        <tuple id='c'><status><im:im>away</im:im></status></tuple>
        <note xml:lang='en'>Document note</note>
      </presence>";
    let doc = PidfDocument::parse(pidf.as_bytes()).unwrap();
    let got = pidf_to_xmpp_presences(
        &doc,
        "alice@xmpp.example",
        &InboundPresenceOptions::default(),
    )
    .unwrap();
    // 0.8 -> smallest p with floor(1000p/127) >= 800: 101 (101000/127 = 795.3), 102 (803.1).
    let expected = [
        canonical("<presence xmlns='jabber:client' from='bob@sip.example/a' to='alice@xmpp.example'><show>dnd</show>
          <status xml:lang='en'>Document note</status><priority>102</priority></presence>"),
        canonical("<presence xmlns='jabber:client' from='bob@sip.example/b' to='alice@xmpp.example'>
          <status xml:lang='en'>Document note</status></presence>"),
    ];
    assert_eq!(got, expected); // tuple 'c' has no <basic>: skipped
}

#[test]
fn zero_tuple_documents() {
    let empty = PidfDocument::parse(
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:bob@sip.example'/>",
    )
    .unwrap();
    let got = pidf_to_xmpp_presences(
        &empty,
        "alice@xmpp.example",
        &InboundPresenceOptions::default(),
    )
    .unwrap();
    assert_eq!(
        got,
        [canonical("<presence xmlns='jabber:client' from='bob@sip.example' to='alice@xmpp.example' type='unavailable'/>")]
    );
    let notes_only = PidfDocument::parse(
        b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:bob@sip.example'><note>gone fishing</note></presence>",
    )
    .unwrap();
    assert!(pidf_to_xmpp_presences(
        &notes_only,
        "alice@xmpp.example",
        &InboundPresenceOptions::default()
    )
    .unwrap()
    .is_empty());
}

#[test]
fn rfc3863_example_parses() {
    // RFC 3863 §5 (the basic example), with its tel: contact and timestamp.
    let pidf = r#"<?xml version="1.0" encoding="UTF-8"?>
     <presence xmlns="urn:ietf:params:xml:ns:pidf"
         entity="pres:someone@example.com">
       <tuple id="sg89ae">
         <status>
           <basic>open</basic>
         </status>
         <contact priority="0.8">tel:+09012345678</contact>
       </tuple>
     </presence>"#;
    let doc = PidfDocument::parse(pidf.as_bytes()).unwrap();
    assert_eq!(doc.entity(), "pres:someone@example.com");
    let t = &doc.tuples()[0];
    assert_eq!((t.id(), t.basic()), ("sg89ae", Some(Basic::Open)));
    let c = t.contact().unwrap();
    assert_eq!(
        (c.uri(), c.priority().map(Priority::thousandths)),
        ("tel:+09012345678", Some(800))
    );
}

// ------------------------------------------------------------------ subscriptions (§6)

#[test]
fn subscription_table() {
    let op = |xml: &str| xmpp_to_cpp(&xml.parse::<Element>().unwrap()).unwrap();
    assert_eq!(
        op("<presence xmlns='jabber:client' from='alice@xmpp.example/desk' to='bob@sip.example' type='subscribe' id='s1'/>"),
        CppOperation::Subscribe {
            watcher: "pres:alice@xmpp.example".into(),
            target: "pres:bob@sip.example".into(),
            duration: SubscriptionDuration::UntilCancelled,
            trans_id: Some("s1".into()),
        }
    );
    assert_eq!(
        op("<presence xmlns='jabber:client' from='alice@xmpp.example' to='bob@sip.example' type='unsubscribe'/>"),
        CppOperation::Subscribe {
            watcher: "pres:alice@xmpp.example".into(),
            target: "pres:bob@sip.example".into(),
            duration: SubscriptionDuration::Cancel,
            trans_id: None,
        }
    );
    assert_eq!(
        op("<presence xmlns='jabber:client' from='alice@xmpp.example' to='bob@sip.example' type='subscribed'/>"),
        CppOperation::Response {
            watcher: "pres:bob@sip.example".into(),
            target: "pres:alice@xmpp.example".into(),
            status: CppStatus::Success,
            trans_id: None,
        }
    );
    assert_eq!(
        op("<presence xmlns='jabber:client' from='alice@xmpp.example' to='bob@sip.example' type='unsubscribed'/>"),
        CppOperation::Response {
            watcher: "pres:bob@sip.example".into(),
            target: "pres:alice@xmpp.example".into(),
            status: CppStatus::Failure(CppFailure::Denied),
            trans_id: None,
        }
    );
    let not: Element = "<presence xmlns='jabber:client' from='a@x.example' to='b@y.example'/>"
        .parse()
        .unwrap();
    assert_eq!(
        xmpp_to_cpp(&not),
        Err(SubscriptionMappingError::NotASubscription(None))
    );
}

#[test]
fn foreign_subscription_operations_to_xmpp() {
    let sub = CppOperation::Subscribe {
        watcher: "pres:bob@sip.example".into(),
        target: "pres:alice@xmpp.example".into(),
        duration: SubscriptionDuration::Seconds(3600),
        trans_id: Some("t-9".into()),
    };
    assert_eq!(
        cpp_to_xmpp(&sub).unwrap(),
        canonical("<presence xmlns='jabber:client' from='bob@sip.example' to='alice@xmpp.example' type='subscribe' id='t-9'/>")
    );
    let cancel = CppOperation::Subscribe {
        watcher: "pres:bob@sip.example".into(),
        target: "pres:alice@xmpp.example".into(),
        duration: SubscriptionDuration::Cancel,
        trans_id: None,
    };
    assert_eq!(
        cpp_to_xmpp(&cancel).unwrap().attr("type"),
        Some("unsubscribe")
    );
    let response = |status| CppOperation::Response {
        watcher: "pres:alice@xmpp.example".into(),
        target: "pres:bob@sip.example".into(),
        status,
        trans_id: None,
    };
    assert_eq!(
        cpp_to_xmpp(&response(CppStatus::Success)).unwrap(),
        canonical("<presence xmlns='jabber:client' from='bob@sip.example' to='alice@xmpp.example' type='subscribed'/>")
    );
    assert_eq!(
        cpp_to_xmpp(&response(CppStatus::Failure(CppFailure::Denied)))
            .unwrap()
            .attr("type"),
        Some("unsubscribed")
    );
    for (f, cond) in [
        (CppFailure::NotFound, "item-not-found"),
        (CppFailure::AccessDenied, "forbidden"),
        (CppFailure::Conflict, "conflict"),
    ] {
        assert_eq!(f.xmpp_condition(), Some(cond));
        assert_eq!(
            cpp_to_xmpp(&response(CppStatus::Failure(f))),
            Err(SubscriptionMappingError::ErrorResponse(f))
        );
    }
}
