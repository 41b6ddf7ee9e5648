//! In-band account creation before authentication (XEP-0077 §3.1, §3.1.1 "Registration
//! with a Server"), off unless `[register] enabled = true`.
//!
//! Where it sits: an unauthenticated client on a stream that may authenticate (TLS done, or
//! TLS not required) sees `<register xmlns='http://jabber.org/features/iq-register'/>` among
//! its features (§8) and may send `jabber:iq:register` IQs before SASL; [`crate::negotiate`]
//! hands them to [`Registration::handle`]. Password change and account removal, which need
//! an authenticated user, are a module (`starling_modules::register`).
//!
//! The form. Under `policy = "allow"` a get returns `<instructions/>`, `<username/>` and
//! `<password/>`. Under `policy = "invite-token"` it returns `<instructions/>` and a data form
//! (XEP-0004, FORM_TYPE `jabber:iq:register`, §4) with the fields `username`, `password` and
//! `token`: the token is information beyond the fixed iq:register fields, which §4 says to
//! gather with a data form, and the "x:data form + iq:register instructions" combination is
//! the one §6 recommends then. The obsolete `<key/>` element (§7) is not used. A set may
//! carry the form or the plain fields (a plain submission has no token).
//!
//! Answers to a set: `service-unavailable` when registration is not offered (§3.1: a host
//! that does not support in-band registration MUST say so), `resource-constraint` when this
//! IP address (one /64 for IPv6) made `max_per_ip_per_hour` attempts in the last hour (every
//! set counts, so token and username guessing are throttled too), `not-acceptable` for a
//! second registration on one stream (§3.1.1 MAY), `not-allowed` for a missing or wrong token,
//! `not-acceptable` for a missing or invalid username or password (§3.1 MUST for missing
//! ones), `conflict` for a taken username, else an empty result; the client then
//! authenticates as usual. Error replies never echo the request: it holds a password.

use starling_proto::Attr;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use minidom::Element;
use parking_lot::Mutex;
use starling_core::config::RegisterPolicy;
use starling_core::xml::BuilderExt;
use starling_core::Server;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::prep_localpart;
use starling_proto::ns;
use starling_sasl::{new_credentials, ScramHash};
use starling_storage::{ScramRecord, StorageError};
use tokio::time::Instant;

/// The registration namespace (XEP-0077).
pub(crate) const NS_REGISTER: &str = "jabber:iq:register";
/// The stream feature namespace (XEP-0077 §8).
pub(crate) const NS_FEATURE: &str = "http://jabber.org/features/iq-register";
/// Data forms (XEP-0004).
const NS_DATA: &str = "jabber:x:data";
/// The throttle window.
const WINDOW: Duration = Duration::from_secs(3600);
/// Most addresses the throttle remembers (DESIGN principle 3). When it is full of addresses
/// with recent attempts, new addresses are refused rather than forgotten ones let in.
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// Longest password accepted, in bytes.
const MAX_PASSWORD_BYTES: usize = 1023;

/// Registration state shared by every connection: the per-IP attempt throttle.
#[derive(Default)]
pub(crate) struct Registration {
    /// Address key -> times of its attempts within the window, oldest first.
    attempts: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Failed SASL logins per address and account ([`crate::throttle`]): the other piece of
    /// pre-authentication state every connection shares, kept here so that it travels
    /// with the registration throttle from the listener to each connection.
    pub(crate) auth_throttle: crate::throttle::AuthThrottle,
}

/// The throttle key of an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64, the
/// block one subscriber usually holds.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// Compares without an early exit, so response time does not reveal a token's prefix.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What one stream's registration needs from [`crate::negotiate`].
pub(crate) struct Request<'a> {
    pub server: &'a Server,
    pub peer: IpAddr,
    /// The virtual host of the stream.
    pub host: &'a str,
    /// Registration is enabled and this stream may authenticate (TLS done or not required).
    pub offered: bool,
    /// An account was already registered on this stream.
    pub registered: &'a mut bool,
}

impl Registration {
    /// Records an attempt from `ip` at `now`; false when over `max` attempts in the window.
    pub(crate) fn admit(&self, ip: IpAddr, max: u32, now: Instant) -> bool {
        let key = address_key(ip);
        let mut map = self.attempts.lock();
        let expired = |q: &VecDeque<Instant>| q.back().is_none_or(|t| now - *t >= WINDOW);
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED_ADDRESSES {
            map.retain(|_, q| !expired(q));
            if map.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        let q = map.entry(key).or_default();
        while q.front().is_some_and(|t| now - *t >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= max as usize {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Answers one `jabber:iq:register` IQ sent before authentication. The reply carries no
    /// addresses (the client has none yet).
    pub(crate) async fn handle(&self, req: Request<'_>, iq: &Element) -> Element {
        let outcome = self.serve(req, iq).await;
        let mut reply = Element::builder("iq", ns::CLIENT)
            .with_attr("id", iq.attribute("id").unwrap_or_default())
            .with_attr("type", if outcome.is_ok() { "result" } else { "error" })
            .build();
        match outcome {
            Ok(Some(payload)) => {
                reply.append_child(payload);
            }
            Ok(None) => {}
            Err(e) => {
                reply.append_child(e.to_element_in(ns::CLIENT));
            }
        }
        reply
    }

    async fn serve(&self, req: Request<'_>, iq: &Element) -> Result<Option<Element>, StanzaError> {
        let config = &req.server.config().register;
        if !req.offered {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let query = iq
            .get_child("query", NS_REGISTER)
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match iq.attribute("type") {
            Some("get") => return Ok(Some(form(config.policy))),
            Some("set") => {}
            _ => return Err(StanzaError::new(Cond::BadRequest)),
        }
        if *req.registered {
            return Err(StanzaError::with_text(
                Cond::NotAcceptable,
                "one registration per stream; authenticate now",
            ));
        }
        if !self.admit(req.peer, config.max_per_ip_per_hour, Instant::now()) {
            tracing::warn!(peer = %req.peer, "registration throttled");
            return Err(StanzaError::with_text(
                Cond::ResourceConstraint,
                "too many registration attempts from your address; try again later",
            ));
        }
        let fields = Fields::parse(query);
        if config.policy == RegisterPolicy::InviteToken {
            let valid = fields
                .token
                .as_deref()
                .is_some_and(|t| config.tokens.iter().any(|k| same_secret(k, t.trim())));
            if !valid {
                tracing::info!(peer = %req.peer, "registration with a missing or wrong token");
                return Err(StanzaError::with_text(
                    Cond::NotAllowed,
                    "a valid invite token is required",
                ));
            }
        }
        let user = fields
            .username
            .as_deref()
            .map(str::trim)
            .and_then(|u| prep_localpart(u).ok())
            .ok_or_else(|| StanzaError::with_text(Cond::NotAcceptable, "invalid username"))?;
        let iterations = req.server.config().c2s.scram_iterations;
        let creds = scram_records(fields.password.unwrap_or_default(), iterations)
            .await
            .ok_or_else(|| StanzaError::with_text(Cond::NotAcceptable, "invalid password"))?;
        match req
            .server
            .storage()
            .create_account(req.host, &user, &creds)
            .await
        {
            Ok(()) => {
                tracing::info!(peer = %req.peer, user = %user, host = req.host, "account registered in-band");
                *req.registered = true;
                Ok(None)
            }
            Err(StorageError::AlreadyExists) => Err(StanzaError::new(Cond::Conflict)),
            Err(e) => {
                tracing::error!(error = %e, "storage error during registration");
                Err(StanzaError::new(Cond::InternalServerError))
            }
        }
    }
}

/// The submitted values, from the data form when there is one, else the plain fields.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    username: Option<String>,
    password: Option<String>,
    token: Option<String>,
}

impl Fields {
    fn parse(query: &Element) -> Fields {
        if let Some(x) = query
            .get_child("x", NS_DATA)
            .filter(|x| x.attribute("type") == Some("submit"))
        {
            let value = |var: &str| {
                x.children()
                    .find(|f| f.is("field", NS_DATA) && f.attribute("var") == Some(var))
                    .and_then(|f| f.get_child("value", NS_DATA))
                    .map(|v| v.text())
            };
            return Fields {
                username: value("username"),
                password: value("password"),
                token: value("token"),
            };
        }
        let text = |name: &str| query.get_child(name, NS_REGISTER).map(|e| e.text());
        Fields {
            username: text("username"),
            password: text("password"),
            token: None,
        }
    }
}

fn field(var: &str, kind: &str, label: &str) -> Element {
    Element::builder("field", NS_DATA)
        .with_attr("var", var)
        .with_attr("type", kind)
        .with_attr("label", label)
        .append(Element::builder("required", NS_DATA))
        .build()
}

/// The answer to a get: plain fields, or a data form with the token field.
fn form(policy: RegisterPolicy) -> Element {
    let q = Element::builder("query", NS_REGISTER);
    match policy {
        RegisterPolicy::Allow => q
            .append(
                Element::builder("instructions", NS_REGISTER)
                    .append("Choose a username and password."),
            )
            .append(Element::builder("username", NS_REGISTER))
            .append(Element::builder("password", NS_REGISTER))
            .build(),
        RegisterPolicy::InviteToken => q
            .append(Element::builder("instructions", NS_REGISTER).append(
                "Registration needs an invite token; use a client that supports data forms.",
            ))
            .append(
                Element::builder("x", NS_DATA)
                    .with_attr("type", "form")
                    .append(Element::builder("title", NS_DATA).append("Create an account"))
                    .append(
                        Element::builder("field", NS_DATA)
                            .with_attr("var", "FORM_TYPE")
                            .with_attr("type", "hidden")
                            .append(Element::builder("value", NS_DATA).append(NS_REGISTER)),
                    )
                    .append(field("username", "text-single", "Username"))
                    .append(field("password", "text-private", "Password"))
                    .append(field("token", "text-single", "Invite token")),
            )
            .build(),
    }
}

/// SCRAM-SHA-1 and SCRAM-SHA-256 records for `password`, derived off the async runtime.
/// `None` when the password is empty, too long or not a valid PRECIS OpaqueString.
async fn scram_records(password: String, iterations: u32) -> Option<Vec<ScramRecord>> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return None;
    }
    tokio::task::spawn_blocking(move || {
        [ScramHash::Sha1, ScramHash::Sha256]
            .into_iter()
            .map(|h| {
                new_credentials(&password, h, iterations)
                    .ok()
                    .map(|c| ScramRecord {
                        mechanism: h.name().to_owned(),
                        salt: c.salt,
                        iterations: c.iterations,
                        stored_key: c.stored_key,
                        server_key: c.server_key,
                    })
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_per_address_and_window() {
        let r = Registration::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(r.admit(a, 2, t0));
        assert!(r.admit(a, 2, t0));
        assert!(!r.admit(a, 2, t0), "third attempt in the hour");
        assert!(r.admit(b, 2, t0), "another address has its own budget");
        assert!(r.admit(a, 2, t0 + WINDOW), "the window slides");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let r = Registration::default();
        let t0 = Instant::now();
        assert!(r.admit("2001:db8::1".parse().unwrap(), 1, t0));
        assert!(!r.admit("2001:db8::ffff:2".parse().unwrap(), 1, t0));
        assert!(r.admit("2001:db8:0:1::1".parse().unwrap(), 1, t0));
        assert_eq!(
            address_key("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn full_table_refuses_new_addresses() {
        let r = Registration::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES as u32 {
            assert!(r.admit(IpAddr::V4(i.into()), 5, t0));
        }
        assert!(!r.admit("198.51.100.1".parse().unwrap(), 5, t0));
        // Once the old attempts expire, their slots are reclaimed.
        assert!(r.admit("198.51.100.1".parse().unwrap(), 5, t0 + WINDOW));
        assert_eq!(r.attempts.lock().len(), 1);
    }

    #[test]
    fn fields_from_form_or_plain() {
        let plain: Element = "<query xmlns='jabber:iq:register'><username>bill</username>\
            <password>pw</password></query>"
            .parse()
            .unwrap();
        assert_eq!(
            Fields::parse(&plain),
            Fields {
                username: Some("bill".into()),
                password: Some("pw".into()),
                token: None
            }
        );
        let form: Element =
            "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE'><value>jabber:iq:register</value></field>\
            <field var='username'><value>bill</value></field>\
            <field var='password'><value>pw</value></field>\
            <field var='token'><value>t0k</value></field></x></query>"
                .parse()
                .unwrap();
        assert_eq!(Fields::parse(&form).token.as_deref(), Some("t0k"));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
