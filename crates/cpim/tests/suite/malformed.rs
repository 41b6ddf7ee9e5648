//! Malformed Message/CPIM, PIDF and addresses are rejected with the matching error variant.

use starling_cpim::address::*;
use starling_cpim::cpim::{CpimError, CpimMessage};
use starling_cpim::pidf::{PidfDocument, PidfError};

/// A predicate on the error a case must produce.
type Check<E> = fn(&E) -> bool;

const GOOD_HEAD: &str = "From: <im:a@x.example>\r\nTo: <im:b@y.example>\r\n";
const GOOD_ENTITY: &str = "\r\nContent-Type: text/plain\r\n\r\nhi";

fn parse_headers(headers: &str) -> Result<CpimMessage, CpimError> {
    CpimMessage::parse(format!("{headers}{GOOD_ENTITY}").as_bytes())
}

#[test]
fn well_formed_baseline_parses() {
    parse_headers(GOOD_HEAD).unwrap();
}

#[test]
fn cpim_errors() {
    use CpimError::*;
    let cases: Vec<(String, Check<CpimError>)> = vec![
        (
            "From: <im:a@x.example>\nTo: <im:b@y.example>\r\n".into(),
            |e| matches!(e, BareLineEnding { line: 1 }),
        ),
        (format!("{GOOD_HEAD}Subject: a\rb\r\n"), |e| {
            matches!(e, BareLineEnding { line: 3 })
        }),
        (format!("{GOOD_HEAD} folded\r\n"), |e| {
            matches!(e, Folding { line: 3 })
        }),
        (format!("{GOOD_HEAD}Bad Name: x\r\n"), |e| {
            matches!(e, BadHeaderName { line: 3, .. })
        }),
        (format!("{GOOD_HEAD}a.b.c: x\r\n"), |e| {
            matches!(e, BadHeaderName { .. })
        }),
        (format!("{GOOD_HEAD}NoColon\r\n"), |e| {
            matches!(e, MalformedHeader { line: 3, .. })
        }),
        (format!("{GOOD_HEAD}Subject:x\r\n"), |e| {
            matches!(e, MalformedHeader { .. })
        }),
        (format!("{GOOD_HEAD}Subject: bad \\q escape\r\n"), |e| {
            matches!(e, BadEscape { line: 3 })
        }),
        (format!("{GOOD_HEAD}Subject: short \\u12\r\n"), |e| {
            matches!(e, BadEscape { .. })
        }),
        (format!("{GOOD_HEAD}Subject: raw\ttab\r\n"), |e| {
            matches!(e, ControlCharacter { ch: '\t', .. })
        }),
        (format!("{GOOD_HEAD}Subject:;lang=not_a_tag x\r\n"), |e| {
            matches!(e, BadLanguageTag { .. })
        }),
        (format!("{GOOD_HEAD}Subject:;charset=x y\r\n"), |e| {
            matches!(e, UnexpectedParameter { .. })
        }),
        (format!("{GOOD_HEAD}DateTime: yesterday\r\n"), |e| {
            matches!(e, BadDateTime { line: 3, .. })
        }),
        (format!("{GOOD_HEAD}To:;x=y <im:c@z.example>\r\n"), |e| {
            matches!(e, UnexpectedParameter { .. })
        }),
        ("From: im:a@x.example\r\n".into(), |e| {
            matches!(e, BadAddress { line: 1 })
        }),
        ("From: <not a uri>\r\n".into(), |e| {
            matches!(e, BadAddress { .. })
        }),
        ("From: \"unterminated <im:a@x>\r\n".into(), |e| {
            matches!(e, BadAddress { .. })
        }),
        ("From: two  spaces <im:a@x>\r\n".into(), |e| {
            matches!(e, BadAddress { .. })
        }),
        (format!("{GOOD_HEAD}From: <im:c@z.example>\r\n"), |e| {
            matches!(e, DuplicateFrom)
        }),
        (format!("{GOOD_HEAD}Ext.Header: x\r\n"), |e| {
            matches!(e, UndeclaredPrefix { line: 3, .. })
        }),
        (format!("{GOOD_HEAD}NS: p im:no-brackets\r\n"), |e| {
            matches!(e, MalformedHeader { .. })
        }),
        (format!("{GOOD_HEAD}Require: ok, bad name\r\n"), |e| {
            matches!(e, BadHeaderName { .. })
        }),
    ];
    for (headers, check) in cases {
        let err = parse_headers(&headers).unwrap_err();
        assert!(check(&err), "{headers:?} gave {err:?}");
    }
    assert_eq!(
        CpimMessage::parse(b"From: <im:a@x>\r\n"),
        Err(UnterminatedHeaders)
    );
    assert_eq!(
        CpimMessage::parse(b"From: <im:a@x>\r\n\r\n"),
        Err(MissingEntity)
    );
    assert!(matches!(
        CpimMessage::parse(b"From: <im:a@x>\r\n\r\nContent-Type: text/plain\r\nno blank line"),
        Err(BadMimeHeader(_))
    ));
    assert_eq!(
        CpimMessage::parse(b"Subject: \xff\r\n\r\n\r\n"),
        Err(NotUtf8 { line: 1 })
    );
    assert!(matches!(
        CpimMessage::parse_mime(b"Content-Type: text/plain\r\n\r\nFrom: <im:a@x>\r\n\r\n\r\nx"),
        Err(NotMessageCpim(_))
    ));
    // Line numbers count from the outer MIME header when there is one.
    assert_eq!(
        CpimMessage::parse_mime(
            b"Content-Type: message/cpim\r\n\r\nFrom: <im:a@x>\r\nDateTime: x\r\n\r\n\r\n"
        ),
        Err(BadDateTime {
            line: 4,
            value: "x".into()
        })
    );
}

#[test]
fn pidf_errors() {
    use PidfError::*;
    let ns = "xmlns='urn:ietf:params:xml:ns:pidf'";
    let cases: Vec<(String, Check<PidfError>)> = vec![
        ("not xml".into(), |e| matches!(e, Xml(_))),
        ("<presence entity='pres:a@x'>".into(), |e| matches!(e, Xml(_))),
        ("<presence xmlns='urn:example' entity='pres:a@x'/>".into(), |e| matches!(e, NotPidf(_))),
        (format!("<tuple {ns} id='a'/>"), |e| matches!(e, NotPidf(_))),
        (format!("<presence {ns}/>"), |e| matches!(e, MissingEntity)),
        (format!("<presence {ns} entity='pres:a@x'><tuple><status/></tuple></presence>"), |e| matches!(e, MissingTupleId)),
        (format!("<presence {ns} entity='pres:a@x'><tuple id='9x'><status/></tuple></presence>"), |e| matches!(e, BadTupleId(_))),
        (
            format!("<presence {ns} entity='pres:a@x'><tuple id='a'><status/></tuple><tuple id='a'><status/></tuple></presence>"),
            |e| matches!(e, DuplicateTupleId(_)),
        ),
        (format!("<presence {ns} entity='pres:a@x'><tuple id='a'/></presence>"), |e| matches!(e, MissingStatus(_))),
        (
            format!("<presence {ns} entity='pres:a@x'><tuple id='a'><status><basic>busy</basic></status></tuple></presence>"),
            |e| matches!(e, BadBasic(_)),
        ),
        (
            format!("<presence {ns} entity='pres:a@x'><tuple id='a'><status/><contact priority='1.5'>x:y</contact></tuple></presence>"),
            |e| matches!(e, BadPriority(_)),
        ),
        (
            format!("<presence {ns} entity='pres:a@x'><tuple id='a'><status/><contact>x:y</contact><contact>x:z</contact></tuple></presence>"),
            |e| matches!(e, DuplicateContact(_)),
        ),
        (
            format!("<presence {ns} entity='pres:a@x'><tuple id='a'><status/><timestamp>today</timestamp></tuple></presence>"),
            |e| matches!(e, BadTimestamp(_)),
        ),
    ];
    for (xml, check) in cases {
        let err = PidfDocument::parse(xml.as_bytes()).unwrap_err();
        assert!(check(&err), "{xml:?} gave {err:?}");
    }
}

#[test]
fn address_errors() {
    use AddressError::*;
    assert_eq!(jid_to_im_uri("xmpp.example"), Err(MissingLocalpart));
    assert_eq!(jid_to_im_uri(""), Err(Empty));
    assert!(matches!(
        jid_to_im_uri("a b@x.example"),
        Err(ForbiddenChar { ch: ' ', .. })
    ));
    assert!(matches!(
        jid_to_im_uri("a@x example"),
        Err(ForbiddenChar { ch: ' ', .. })
    ));
    assert!(matches!(
        jid_to_im_uri(&format!("{}@x", "a".repeat(1024))),
        Err(TooLong("localpart"))
    ));
    assert!(matches!(
        cpim_uri_to_jid("mailto:a@x.example"),
        Err(WrongScheme(..))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a@x.example?subject=hi"),
        Err(UnsupportedUriPart(_))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a%2@x.example"),
        Err(BadPercentEncoding(_))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a%ZZ@x.example"),
        Err(BadPercentEncoding(_))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a%FF@x.example"),
        Err(NotUtf8(_))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a b@x.example"),
        Err(BadUriChar { ch: ' ', .. })
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:rené@x.example"),
        Err(BadUriChar { ch: 'é', .. })
    ));
    assert_eq!(cpim_uri_to_jid("im:x.example"), Err(MissingLocalpart));
    assert_eq!(cpim_uri_to_jid("im:@x.example"), Err(MissingLocalpart));
    assert!(matches!(
        cpim_uri_to_jid("im:a@b@x.example"),
        Err(ForbiddenChar { ch: '@', .. })
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a@"),
        Err(EmptyPart("domainpart"))
    ));
    assert!(matches!(
        cpim_uri_to_jid("im:a%09b@x.example"),
        Err(ForbiddenChar { ch: '\t', .. })
    ));
    // RFC 3922 escaping can express only & ' /.
    assert!(matches!(
        cpim_uri_to_jid_with("im:a%20b@x.example", JidEscaping::Rfc3922),
        Err(ForbiddenChar { ch: ' ', .. })
    ));

    let gw = GatewayAddressing::new("sip.xmpp.example").unwrap();
    assert!(matches!(
        gw.jid_to_sip("bob%sip.example@xmpp.example"),
        Err(NotGatewayDomain { .. })
    ));
    assert!(matches!(
        gw.jid_to_sip("bob@sip.xmpp.example"),
        Err(MissingSipHost(_))
    ));
    assert!(matches!(
        gw.jid_to_sip("%sip.example@sip.xmpp.example"),
        Err(MissingLocalpart)
    ));
    assert!(matches!(
        gw.jid_to_sip("bob%sip.example\\3ax@sip.xmpp.example"),
        Err(BadPort(_))
    ));
    assert!(matches!(
        gw.sip_to_jid("sip:sip.example"),
        Err(MissingLocalpart)
    ));
    assert!(matches!(gw.sip_to_jid("tel:+123"), Err(WrongScheme(..))));
    assert!(matches!(
        SipUri::parse("sip:bob:secret@sip.example"),
        Err(UnsupportedUriPart(_))
    ));
    assert!(matches!(
        SipUri::parse("sip:bob@sip.example?subject=x"),
        Err(UnsupportedUriPart(_))
    ));
    assert!(matches!(
        SipUri::parse("sip:bob@sip.example:99999"),
        Err(BadPort(_))
    ));
}
