//! Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3): the conditions, their
//! XML form, and the error reply built from a failed stanza (§8.3.1). Deciding *when* to send
//! one is the stream and router's business, not this module's.

use crate::Attr;
use std::fmt;

use minidom::Element;

use crate::ns;

/// A stream error condition (RFC 6120 §4.9.3.1 - §4.9.3.25).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamErrorCondition {
    BadFormat,
    BadNamespacePrefix,
    Conflict,
    ConnectionTimeout,
    HostGone,
    HostUnknown,
    ImproperAddressing,
    InternalServerError,
    InvalidFrom,
    InvalidNamespace,
    InvalidXml,
    NotAuthorized,
    NotWellFormed,
    PolicyViolation,
    RemoteConnectionFailed,
    Reset,
    ResourceConstraint,
    RestrictedXml,
    /// Carries the host (and optional port) the peer should connect to instead (§4.9.3.19).
    SeeOtherHost(String),
    SystemShutdown,
    UndefinedCondition,
    UnsupportedEncoding,
    UnsupportedFeature,
    UnsupportedStanzaType,
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// Every condition without data, for tests and parsers.
    pub const ALL_SIMPLE: [StreamErrorCondition; 24] = [
        Self::BadFormat,
        Self::BadNamespacePrefix,
        Self::Conflict,
        Self::ConnectionTimeout,
        Self::HostGone,
        Self::HostUnknown,
        Self::ImproperAddressing,
        Self::InternalServerError,
        Self::InvalidFrom,
        Self::InvalidNamespace,
        Self::InvalidXml,
        Self::NotAuthorized,
        Self::NotWellFormed,
        Self::PolicyViolation,
        Self::RemoteConnectionFailed,
        Self::Reset,
        Self::ResourceConstraint,
        Self::RestrictedXml,
        Self::SystemShutdown,
        Self::UndefinedCondition,
        Self::UnsupportedEncoding,
        Self::UnsupportedFeature,
        Self::UnsupportedStanzaType,
        Self::UnsupportedVersion,
    ];

    /// The element name of the condition, e.g. `not-well-formed`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::BadNamespacePrefix => "bad-namespace-prefix",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostGone => "host-gone",
            Self::HostUnknown => "host-unknown",
            Self::ImproperAddressing => "improper-addressing",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidFrom => "invalid-from",
            Self::InvalidNamespace => "invalid-namespace",
            Self::InvalidXml => "invalid-xml",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::RemoteConnectionFailed => "remote-connection-failed",
            Self::Reset => "reset",
            Self::ResourceConstraint => "resource-constraint",
            Self::RestrictedXml => "restricted-xml",
            Self::SeeOtherHost(_) => "see-other-host",
            Self::SystemShutdown => "system-shutdown",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::UnsupportedFeature => "unsupported-feature",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }

    /// The condition for an element name; `see-other-host` takes the element's text.
    pub fn from_name(name: &str, text: &str) -> Option<StreamErrorCondition> {
        if name == "see-other-host" {
            return Some(Self::SeeOtherHost(text.to_owned()));
        }
        Self::ALL_SIMPLE.iter().find(|c| c.name() == name).cloned()
    }
}

/// A stream error: fatal, the stream is closed after sending it (RFC 6120 §4.9.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct StreamError {
    pub condition: StreamErrorCondition,
    /// Human-readable detail for logs and the peer; never relied on by software.
    pub text: Option<String>,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition.name())?;
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        Ok(())
    }
}

impl StreamError {
    pub fn new(condition: StreamErrorCondition) -> StreamError {
        StreamError {
            condition,
            text: None,
        }
    }

    pub fn with_text(condition: StreamErrorCondition, text: impl Into<String>) -> StreamError {
        StreamError {
            condition,
            text: Some(text.into()),
        }
    }

    /// `<stream:error><condition xmlns='…xmpp-streams'/><text …/></stream:error>`.
    pub fn to_element(&self) -> Element {
        let mut cond = Element::bare(self.condition.name(), ns::STREAM_ERRORS);
        if let StreamErrorCondition::SeeOtherHost(host) = &self.condition {
            cond.append_text(host.as_str());
        }
        let mut el = Element::bare("error", ns::STREAM);
        el.append_child(cond);
        if let Some(t) = &self.text {
            el.append_child(text_element(ns::STREAM_ERRORS, t));
        }
        el
    }

    /// Reads a `<stream:error/>` element back (for s2s and the client library).
    pub fn parse(el: &Element) -> Option<StreamError> {
        if !el.is("error", ns::STREAM) {
            return None;
        }
        let mut condition = None;
        let mut text = None;
        for child in el.children().filter(|c| c.has_ns(ns::STREAM_ERRORS)) {
            if child.name() == "text" {
                text = Some(child.text());
            } else if condition.is_none() {
                condition = StreamErrorCondition::from_name(child.name(), &child.text());
            }
        }
        Some(StreamError {
            condition: condition?,
            text,
        })
    }
}

fn text_element(namespace: &str, text: &str) -> Element {
    let mut t = Element::bare("text", namespace);
    t.set_attr(rxml::Namespace::xml().clone(), nc("lang"), "en");
    t.append_text(text);
    t
}

/// An `NcName` from a literal known to be valid.
pub(crate) fn nc(s: &str) -> rxml::NcName {
    rxml::NcName::try_from(s).expect("valid NCName literal")
}

/// The `type` of a stanza error (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry: the error cannot be remedied.
    Cancel,
    /// Proceed: the condition was only a warning.
    Continue,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting: the error is temporary.
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Cancel => "cancel",
            Self::Continue => "continue",
            Self::Modify => "modify",
            Self::Wait => "wait",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorType> {
        Some(match s {
            "auth" => Self::Auth,
            "cancel" => Self::Cancel,
            "continue" => Self::Continue,
            "modify" => Self::Modify,
            "wait" => Self::Wait,
            _ => return None,
        })
    }
}

/// A stanza error condition (RFC 6120 §8.3.3.1 - §8.3.3.22).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StanzaErrorCondition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    /// The new address of the entity, if known (§8.3.3.5).
    Gone(Option<String>),
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    /// Where to send the request instead, if known (§8.3.3.14).
    Redirect(Option<String>),
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl StanzaErrorCondition {
    const SIMPLE: [StanzaErrorCondition; 20] = [
        Self::BadRequest,
        Self::Conflict,
        Self::FeatureNotImplemented,
        Self::Forbidden,
        Self::InternalServerError,
        Self::ItemNotFound,
        Self::JidMalformed,
        Self::NotAcceptable,
        Self::NotAllowed,
        Self::NotAuthorized,
        Self::PolicyViolation,
        Self::RecipientUnavailable,
        Self::RegistrationRequired,
        Self::RemoteServerNotFound,
        Self::RemoteServerTimeout,
        Self::ResourceConstraint,
        Self::ServiceUnavailable,
        Self::SubscriptionRequired,
        Self::UndefinedCondition,
        Self::UnexpectedRequest,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::Conflict => "conflict",
            Self::FeatureNotImplemented => "feature-not-implemented",
            Self::Forbidden => "forbidden",
            Self::Gone(_) => "gone",
            Self::InternalServerError => "internal-server-error",
            Self::ItemNotFound => "item-not-found",
            Self::JidMalformed => "jid-malformed",
            Self::NotAcceptable => "not-acceptable",
            Self::NotAllowed => "not-allowed",
            Self::NotAuthorized => "not-authorized",
            Self::PolicyViolation => "policy-violation",
            Self::RecipientUnavailable => "recipient-unavailable",
            Self::Redirect(_) => "redirect",
            Self::RegistrationRequired => "registration-required",
            Self::RemoteServerNotFound => "remote-server-not-found",
            Self::RemoteServerTimeout => "remote-server-timeout",
            Self::ResourceConstraint => "resource-constraint",
            Self::ServiceUnavailable => "service-unavailable",
            Self::SubscriptionRequired => "subscription-required",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnexpectedRequest => "unexpected-request",
        }
    }

    /// The type RFC 6120 §8.3.3 gives in each condition's example.
    pub fn default_type(&self) -> ErrorType {
        use ErrorType::*;
        match self {
            Self::BadRequest => Modify,
            Self::Conflict => Cancel,
            Self::FeatureNotImplemented => Cancel,
            Self::Forbidden => Auth,
            Self::Gone(_) => Cancel,
            Self::InternalServerError => Cancel,
            Self::ItemNotFound => Cancel,
            Self::JidMalformed => Modify,
            Self::NotAcceptable => Modify,
            Self::NotAllowed => Cancel,
            Self::NotAuthorized => Auth,
            Self::PolicyViolation => Modify,
            Self::RecipientUnavailable => Wait,
            Self::Redirect(_) => Modify,
            Self::RegistrationRequired => Auth,
            Self::RemoteServerNotFound => Cancel,
            Self::RemoteServerTimeout => Wait,
            Self::ResourceConstraint => Wait,
            Self::ServiceUnavailable => Cancel,
            Self::SubscriptionRequired => Auth,
            Self::UndefinedCondition => Modify,
            Self::UnexpectedRequest => Wait,
        }
    }

    /// The condition for an element name; `gone` and `redirect` take the element's text.
    pub fn from_name(name: &str, text: &str) -> Option<StanzaErrorCondition> {
        let uri = (!text.is_empty()).then(|| text.to_owned());
        match name {
            "gone" => Some(Self::Gone(uri)),
            "redirect" => Some(Self::Redirect(uri)),
            _ => Self::SIMPLE.iter().find(|c| c.name() == name).cloned(),
        }
    }
}

/// A stanza error: the stream lives on, the sender gets an error reply (RFC 6120 §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    pub type_: ErrorType,
    pub condition: StanzaErrorCondition,
    /// Human-readable detail; never relied on by software.
    pub text: Option<String>,
    /// The entity that generated the error, when not the addressee (§8.3.2 `by`).
    pub by: Option<String>,
    /// An application-specific condition (§8.3.4), e.g. XEP-0060's
    /// `<precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/>`.
    pub app: Option<Box<Element>>,
}

impl StanzaError {
    /// An error with the condition's default type and no text.
    pub fn new(condition: StanzaErrorCondition) -> StanzaError {
        StanzaError {
            type_: condition.default_type(),
            condition,
            text: None,
            by: None,
            app: None,
        }
    }

    /// An error with an application-specific condition element (§8.3.4).
    pub fn with_app(condition: StanzaErrorCondition, app: Element) -> StanzaError {
        StanzaError {
            app: Some(Box::new(app)),
            ..StanzaError::new(condition)
        }
    }

    /// Same, with a text.
    pub fn with_text(condition: StanzaErrorCondition, text: impl Into<String>) -> StanzaError {
        StanzaError {
            text: Some(text.into()),
            ..StanzaError::new(condition)
        }
    }

    /// `<error type='…'>` in `jabber:client`; see [`StanzaError::to_element_in`].
    pub fn to_element(&self) -> Element {
        self.to_element_in(ns::CLIENT)
    }

    /// `<error type='…' by='…'><condition xmlns='…stanzas'/><text/></error>` in the given
    /// content namespace (that of the stanza it goes into).
    pub fn to_element_in(&self, content_ns: &str) -> Element {
        let mut el = Element::bare("error", content_ns);
        el.set_attr(rxml::Namespace::NONE, nc("type"), self.type_.as_str());
        if let Some(by) = &self.by {
            el.set_attr(rxml::Namespace::NONE, nc("by"), by.as_str());
        }
        let mut cond = Element::bare(self.condition.name(), ns::STANZA_ERRORS);
        if let StanzaErrorCondition::Gone(Some(uri)) | StanzaErrorCondition::Redirect(Some(uri)) =
            &self.condition
        {
            cond.append_text(uri.as_str());
        }
        el.append_child(cond);
        if let Some(t) = &self.text {
            el.append_child(text_element(ns::STANZA_ERRORS, t));
        }
        if let Some(app) = &self.app {
            el.append_child((**app).clone());
        }
        el
    }

    /// Reads an `<error/>` element, or the `<error/>` child of a stanza. Unknown conditions
    /// become `undefined-condition`; a missing or unknown type, the condition's default.
    pub fn parse(el: &Element) -> Option<StanzaError> {
        let err = if el.name() == "error" && !el.has_ns(ns::STREAM) {
            el
        } else {
            el.children()
                .find(|c| c.name() == "error" && c.ns() == el.ns())?
        };
        let mut condition = None;
        let mut text = None;
        let app = err
            .children()
            .find(|c| !c.has_ns(ns::STANZA_ERRORS))
            .map(|c| Box::new(c.clone()));
        for child in err.children().filter(|c| c.has_ns(ns::STANZA_ERRORS)) {
            if child.name() == "text" {
                text = Some(child.text());
            } else if condition.is_none() {
                condition = Some(
                    StanzaErrorCondition::from_name(child.name(), &child.text())
                        .unwrap_or(StanzaErrorCondition::UndefinedCondition),
                );
            }
        }
        let condition = condition?;
        let type_ = err
            .attribute("type")
            .and_then(ErrorType::parse)
            .unwrap_or_else(|| condition.default_type());
        Some(StanzaError {
            type_,
            condition,
            text,
            by: err.attribute("by").map(str::to_owned),
            app,
        })
    }
}

/// The error reply to `stanza` (RFC 6120 §8.3.1): same element name and namespace, `from`
/// and `to` swapped, `type='error'`, same `id`, the original children kept, then the error.
/// `None` when `stanza` is itself an error: errors are never answered with errors.
pub fn error_reply(stanza: &Element, err: &StanzaError) -> Option<Element> {
    if stanza.attribute("type") == Some("error") {
        return None;
    }
    let content_ns = stanza.ns();
    let mut reply = Element::bare(stanza.name(), content_ns.as_str());
    let none = rxml::Namespace::NONE;
    if let Some(from) = stanza.attribute("from") {
        reply.set_attr(none.clone(), nc("to"), from);
    }
    if let Some(to) = stanza.attribute("to") {
        reply.set_attr(none.clone(), nc("from"), to);
    }
    if let Some(id) = stanza.attribute("id") {
        reply.set_attr(none.clone(), nc("id"), id);
    }
    reply.set_attr(none, nc("type"), "error");
    if let Some(lang) = stanza.attr_ns(ns::XML, "lang") {
        reply.set_attr(rxml::Namespace::xml().clone(), nc("lang"), lang);
    }
    for node in stanza.nodes() {
        reply.append_node(node.clone());
    }
    reply.append_child(err.to_element_in(&content_ns));
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn stream_condition_names_are_distinct_and_parse_back() {
        let mut names: Vec<_> = StreamErrorCondition::ALL_SIMPLE
            .iter()
            .map(|c| c.name())
            .collect();
        names.push(StreamErrorCondition::SeeOtherHost(String::new()).name());
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert_eq!(n, 25);
        for c in StreamErrorCondition::ALL_SIMPLE {
            assert_eq!(StreamErrorCondition::from_name(c.name(), ""), Some(c));
        }
        assert_eq!(StreamErrorCondition::from_name("bogus", ""), None);
    }

    #[test]
    fn stream_error_element_round_trip() {
        let e = StreamError::with_text(StreamErrorCondition::PolicyViolation, "stanza too big");
        let el = e.to_element();
        assert!(el.is("error", ns::STREAM));
        assert!(el.has_child("policy-violation", ns::STREAM_ERRORS));
        let t = el.get_child("text", ns::STREAM_ERRORS).unwrap();
        assert_eq!(t.text(), "stanza too big");
        assert_eq!(t.attr_ns(ns::XML, "lang"), Some("en"));
        assert_eq!(StreamError::parse(&el), Some(e.clone()));
        let soh = StreamError::new(StreamErrorCondition::SeeOtherHost(
            "[2001:db8::1]:5222".into(),
        ));
        assert_eq!(StreamError::parse(&soh.to_element()), Some(soh));
        assert_eq!(
            StreamError::parse(&Element::bare("error", ns::STREAM)),
            None
        );
        assert_eq!(e.to_string(), "policy-violation: stanza too big");
    }

    #[test]
    fn stanza_conditions_default_types() {
        assert_eq!(StanzaErrorCondition::SIMPLE.len() + 2, 22);
        assert_eq!(
            StanzaErrorCondition::BadRequest.default_type(),
            ErrorType::Modify
        );
        assert_eq!(
            StanzaErrorCondition::Forbidden.default_type(),
            ErrorType::Auth
        );
        assert_eq!(
            StanzaErrorCondition::ServiceUnavailable.default_type(),
            ErrorType::Cancel
        );
        assert_eq!(
            StanzaErrorCondition::RecipientUnavailable.default_type(),
            ErrorType::Wait
        );
        for c in StanzaErrorCondition::SIMPLE {
            assert_eq!(StanzaErrorCondition::from_name(c.name(), ""), Some(c));
        }
    }

    #[test]
    fn stanza_error_round_trip() {
        let mut e = StanzaError::with_text(
            StanzaErrorCondition::Redirect(Some("xmpp:other@example.com".into())),
            "moved",
        );
        e.by = Some("example.com".into());
        let el = e.to_element();
        assert_eq!(el.attribute("type"), Some("modify"));
        assert_eq!(el.attribute("by"), Some("example.com"));
        assert_eq!(StanzaError::parse(&el), Some(e.clone()));
        let gone = StanzaError::new(StanzaErrorCondition::Gone(None));
        assert_eq!(StanzaError::parse(&gone.to_element()), Some(gone));
    }

    #[test]
    fn stanza_error_parse_invalid() {
        assert_eq!(
            StanzaError::parse(&parse("<error xmlns='jabber:client' type='cancel'/>")),
            None
        );
        let unknown = parse(
            "<error xmlns='jabber:client' type='bogus'><x xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
        );
        let e = StanzaError::parse(&unknown).unwrap();
        assert_eq!(e.condition, StanzaErrorCondition::UndefinedCondition);
        assert_eq!(e.type_, ErrorType::Modify);
    }

    #[test]
    fn error_reply_swaps_and_keeps() {
        let iq = parse(
            "<iq xmlns='jabber:client' from='a@b/c' to='b' id='x1' type='get'><query xmlns='q'/></iq>",
        );
        let reply = error_reply(
            &iq,
            &StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
        )
        .unwrap();
        assert!(reply.is("iq", ns::CLIENT));
        assert_eq!(reply.attribute("to"), Some("a@b/c"));
        assert_eq!(reply.attribute("from"), Some("b"));
        assert_eq!(reply.attribute("id"), Some("x1"));
        assert_eq!(reply.attribute("type"), Some("error"));
        assert!(reply.has_child("query", "q"));
        let e = StanzaError::parse(&reply).unwrap();
        assert_eq!(e.condition, StanzaErrorCondition::ServiceUnavailable);
        assert_eq!(e.type_, ErrorType::Cancel);
        assert_eq!(error_reply(&reply, &e), None);
        // Server-to-server stanzas keep their namespace.
        let m = parse("<message xmlns='jabber:server' from='a@x' to='b@y'/>");
        let r = error_reply(&m, &StanzaError::new(StanzaErrorCondition::ItemNotFound)).unwrap();
        assert!(r.is("message", ns::SERVER));
        assert!(r.has_child("error", ns::SERVER));
    }

    #[test]
    fn application_condition_round_trips() {
        let app = Element::bare(
            "precondition-not-met",
            "http://jabber.org/protocol/pubsub#errors",
        );
        let err = StanzaError::with_app(StanzaErrorCondition::Conflict, app.clone());
        let el = err.to_element();
        assert_eq!(el.children().last(), Some(&app));
        let back = StanzaError::parse(&el).unwrap();
        assert_eq!(back, err);
        assert_eq!(
            StanzaError::parse(&StanzaError::new(StanzaErrorCondition::Conflict).to_element())
                .unwrap()
                .app,
            None
        );
    }

    #[test]
    fn sizes() {
        // Errors travel by value through Results on the hot path: keep them a few words.
        assert!(std::mem::size_of::<StreamError>() <= 56);
        assert!(std::mem::size_of::<StanzaError>() <= 96);
    }
}
