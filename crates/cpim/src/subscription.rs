//! Subscriptions: XMPP `subscribe`/`subscribed`/`unsubscribe`/`unsubscribed` <-> the CPIM
//! presence service operations (RFC 3922 §6, over RFC 3859 CPP), as plain data.
//!
//! | XMPP stanza | CPP operation |
//! |---|---|
//! | `subscribe` from W to T | `subscribe(watcher=pres:W, target=pres:T, duration=until cancelled, TransID=id)` |
//! | `unsubscribe` from W to T | `subscribe(watcher=pres:W, target=pres:T, duration=0)` |
//! | `subscribed` from T to W (T approves) | `response(success)` to W's pending subscribe |
//! | `unsubscribed` from T to W (T denies or cancels) | `response(failure: denied)`; for an active subscription the gateway also ends it (duration 0) |
//!
//! And back: a foreign `subscribe` becomes an XMPP `subscribe` (watcher -> from, target -> to,
//! TransID -> id); with duration 0, an `unsubscribe`; a `response(success)`, `subscribed`; a
//! failure, `unsubscribed`. XMPP subscriptions have no duration, so the gateway keeps
//! refreshing time-limited foreign ones (in SIP: re-SUBSCRIBE before Expires) and may expire
//! foreign ones by local policy. Failures map to the stanza error conditions RFC 3922 §6 names
//! ([`CppFailure::xmpp_condition`]). Resources are dropped: subscriptions are between bare JIDs.

use minidom::Element;

use crate::address::{cpim_uri_to_jid, jid_to_pres_uri, AddressError};
use crate::xml::{is_stanza_ns, ncname, NS_CLIENT};

/// How long a CPP subscription lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionDuration {
    /// XMPP semantics: until cancelled. The gateway refreshes the foreign subscription.
    UntilCancelled,
    /// A foreign, time-limited subscription (seconds; never 0).
    Seconds(u32),
    /// Duration 0: cancel (XMPP `unsubscribe`).
    Cancel,
}

/// Why a CPP subscription failed, and the XMPP error it becomes (RFC 3922 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CppFailure {
    /// The target does not exist -> `<item-not-found/>`.
    NotFound,
    /// The watcher may not subscribe -> `<forbidden/>`.
    AccessDenied,
    /// A subscription exists or is pending -> `<conflict/>`.
    Conflict,
    /// The presentity declined (XMPP `unsubscribed`).
    Denied,
}

impl CppFailure {
    /// The RFC 6120 stanza error condition for this failure (`Denied` has none: it is an
    /// `unsubscribed` stanza, not an error).
    pub fn xmpp_condition(self) -> Option<&'static str> {
        match self {
            CppFailure::NotFound => Some("item-not-found"),
            CppFailure::AccessDenied => Some("forbidden"),
            CppFailure::Conflict => Some("conflict"),
            CppFailure::Denied => None,
        }
    }
}

/// The outcome carried by a CPP response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CppStatus {
    Success,
    Failure(CppFailure),
}

/// A CPP subscription operation. Addresses are `pres:` URIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CppOperation {
    /// `subscribe`: `watcher` asks for `target`'s presence.
    Subscribe {
        watcher: String,
        target: String,
        duration: SubscriptionDuration,
        /// The transaction id (from/to the XMPP stanza `id`).
        trans_id: Option<String>,
    },
    /// The answer to a subscribe from `watcher` to `target`.
    Response {
        watcher: String,
        target: String,
        status: CppStatus,
        trans_id: Option<String>,
    },
}

/// Why a subscription stanza or operation could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionMappingError {
    #[error("not a subscription <presence/> (type {0:?})")]
    NotASubscription(Option<String>),
    #[error("the stanza has no '{0}' attribute")]
    MissingAddress(&'static str),
    #[error("address: {0}")]
    Address(#[from] AddressError),
    #[error("a CPP failure with an error condition is answered with a presence error, not a subscription stanza")]
    ErrorResponse(CppFailure),
}

/// Maps an XMPP subscription stanza (`subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`)
/// to the CPP operation the gateway performs. `unsubscribed` is mapped as a denial; when the
/// gateway knows the foreign subscription is active it ends it with a `Cancel` as well.
pub fn xmpp_to_cpp(stanza: &Element) -> Result<CppOperation, SubscriptionMappingError> {
    let ty = stanza.attr("type");
    if stanza.name() != "presence" || !is_stanza_ns(stanza) {
        return Err(SubscriptionMappingError::NotASubscription(
            ty.map(str::to_owned),
        ));
    }
    let from = jid_to_pres_uri(
        stanza
            .attr("from")
            .ok_or(SubscriptionMappingError::MissingAddress("from"))?,
    )?;
    let to = jid_to_pres_uri(
        stanza
            .attr("to")
            .ok_or(SubscriptionMappingError::MissingAddress("to"))?,
    )?;
    let trans_id = stanza.attr("id").map(str::to_owned);
    Ok(match ty {
        Some("subscribe") => CppOperation::Subscribe {
            watcher: from,
            target: to,
            duration: SubscriptionDuration::UntilCancelled,
            trans_id,
        },
        Some("unsubscribe") => CppOperation::Subscribe {
            watcher: from,
            target: to,
            duration: SubscriptionDuration::Cancel,
            trans_id,
        },
        Some("subscribed") => CppOperation::Response {
            watcher: to,
            target: from,
            status: CppStatus::Success,
            trans_id,
        },
        Some("unsubscribed") => CppOperation::Response {
            watcher: to,
            target: from,
            status: CppStatus::Failure(CppFailure::Denied),
            trans_id,
        },
        other => {
            return Err(SubscriptionMappingError::NotASubscription(
                other.map(str::to_owned),
            ))
        }
    })
}

/// Maps a CPP operation from the foreign side to the XMPP subscription stanza, resolving
/// `pres:`/`im:` addresses per RFC 3922 §3.2. A response carrying an error condition
/// ([`CppFailure::xmpp_condition`]) is refused: the gateway answers with a presence error.
pub fn cpp_to_xmpp(op: &CppOperation) -> Result<Element, SubscriptionMappingError> {
    cpp_to_xmpp_with(op, |uri| cpim_uri_to_jid(uri).map(|(_, jid)| jid))
}

/// [`cpp_to_xmpp`] with the caller's address mapping (e.g. SIP users via the gateway scheme).
pub fn cpp_to_xmpp_with(
    op: &CppOperation,
    map_address: impl Fn(&str) -> Result<String, AddressError>,
) -> Result<Element, SubscriptionMappingError> {
    let (from, to, ty, trans_id) = match op {
        CppOperation::Subscribe {
            watcher,
            target,
            duration,
            trans_id,
        } => {
            let ty = match duration {
                SubscriptionDuration::Cancel => "unsubscribe",
                _ => "subscribe",
            };
            (watcher, target, ty, trans_id)
        }
        CppOperation::Response {
            watcher,
            target,
            status,
            trans_id,
        } => {
            let ty = match status {
                CppStatus::Success => "subscribed",
                CppStatus::Failure(CppFailure::Denied) => "unsubscribed",
                CppStatus::Failure(f) => return Err(SubscriptionMappingError::ErrorResponse(*f)),
            };
            (target, watcher, ty, trans_id)
        }
    };
    let mut b = Element::builder("presence", NS_CLIENT)
        .attr(ncname("from"), map_address(from)?)
        .attr(ncname("to"), map_address(to)?)
        .attr(ncname("type"), ty);
    if let Some(id) = trans_id {
        b = b.attr(ncname("id"), id.as_str());
    }
    Ok(b.build())
}
