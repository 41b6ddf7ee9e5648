//! Entity Capabilities (XEP-0115) of the server itself.
//!
//! The server's disco#info (its identity and every feature the enabled modules declare; no
//! extended forms) is hashed with the algorithm of XEP-0115 §5.1 (sha-1, base64) into a
//! verification string `ver`, offered after authentication as the stream feature
//! `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='…' ver='…'/>` (§6.3), so a
//! client that has seen this `ver` before can skip the disco#info round trip. A disco#info
//! request to `node#ver` (§6.2) is answered by [`crate::disco`] with the same information.
//!
//! The `ver` is computed once, at start, from the module list ([`Caps::for_modules`]): the
//! module set never changes while the server runs.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use minidom::Element;
use sha1::{Digest, Sha1};
use starling_core::xml::BuilderExt;
use starling_core::Module;

/// The caps namespace (XEP-0115 §8), also the disco feature saying we publish caps.
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// The `node` we publish: a URI naming the software (XEP-0115 §4).
pub const NODE: &str = "https://starling.example/caps";

/// One disco#info identity (XEP-0030 §3.1), as far as the hash is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    /// `category` attribute.
    pub category: &'a str,
    /// `type` attribute.
    pub kind: &'a str,
    /// `xml:lang`, empty when absent.
    pub lang: &'a str,
    /// `name`, empty when absent.
    pub name: &'a str,
}

/// The string S of XEP-0115 §5.1 steps 1–6 (no extended forms): identities sorted by
/// category, type and xml:lang, each as `category/type/lang/name<`, then the sorted
/// features, each as `feature<`. Sorting is by octets (i;octet, RFC 4790).
pub fn verification_string(identities: &[Identity<'_>], features: &[&str]) -> String {
    let mut ids = identities.to_vec();
    ids.sort_by(|a, b| {
        (a.category.as_bytes(), a.kind.as_bytes(), a.lang.as_bytes()).cmp(&(
            b.category.as_bytes(),
            b.kind.as_bytes(),
            b.lang.as_bytes(),
        ))
    });
    let mut feats = features.to_vec();
    feats.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut s = String::new();
    for i in ids {
        s.push_str(&format!("{}/{}/{}/{}<", i.category, i.kind, i.lang, i.name));
    }
    for f in feats {
        s.push_str(f);
        s.push('<');
    }
    s
}

/// The `ver` attribute: base64 of the SHA-1 of [`verification_string`] (§5.1 step 7–8).
pub fn ver(identities: &[Identity<'_>], features: &[&str]) -> String {
    let digest = Sha1::digest(verification_string(identities, features).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The caps module: offers the server's `ver` as a stream feature.
pub struct Caps {
    /// The verification string of the server's disco#info, computed at start.
    ver: String,
}

impl Caps {
    /// Caps for a server running `modules` plus this one. The identity is the server's
    /// ([`crate::disco::SERVER_IDENTITY`]); the features are every module's and ours,
    /// exactly what [`starling_core::Server::disco_features`] will list.
    pub fn for_modules(modules: &[Arc<dyn Module>]) -> Caps {
        let mut features: Vec<&str> = modules.iter().flat_map(|m| m.disco_features()).collect();
        features.push(NS_CAPS);
        features.sort_unstable();
        features.dedup();
        Caps {
            ver: ver(&[crate::disco::SERVER_IDENTITY], &features),
        }
    }

    /// The verification string offered.
    pub fn ver(&self) -> &str {
        &self.ver
    }
}

#[async_trait]
impl Module for Caps {
    fn name(&self) -> &'static str {
        "caps"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_CAPS]
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![Element::builder("c", NS_CAPS)
            .with_attr("hash", "sha-1")
            .with_attr("node", NODE)
            .with_attr("ver", self.ver.as_str())
            .build()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XEP-0115 §5.2, the simple example (Exodus 0.9.1).
    #[test]
    fn simple_worked_example() {
        let identities = [Identity {
            category: "client",
            kind: "pc",
            lang: "",
            name: "Exodus 0.9.1",
        }];
        // Given out of order on purpose: the algorithm sorts.
        let features = [
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#items",
        ];
        assert_eq!(
            verification_string(&identities, &features),
            "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<"
        );
        assert_eq!(ver(&identities, &features), "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }

    /// Identities sort by category, then type, then xml:lang (§5.1 step 2).
    #[test]
    fn identities_sort_by_category_type_lang() {
        let a = Identity {
            category: "client",
            kind: "pc",
            lang: "en",
            name: "Psi 0.11",
        };
        let b = Identity {
            category: "client",
            kind: "pc",
            lang: "el",
            name: "Ψ 0.11",
        };
        let s = verification_string(&[a, b], &[]);
        assert_eq!(s, "client/pc/el/Ψ 0.11<client/pc/en/Psi 0.11<");
    }

    #[test]
    fn stream_feature_carries_the_ver() {
        let caps = Caps::for_modules(&[Arc::new(crate::ping::Ping)]);
        let f = &caps.stream_features()[0];
        assert!(f.is("c", NS_CAPS));
        assert_eq!(f.attr("hash"), Some("sha-1"));
        assert_eq!(f.attr("node"), Some(NODE));
        assert_eq!(f.attr("ver"), Some(caps.ver()));
        let expected = ver(
            &[crate::disco::SERVER_IDENTITY],
            &[NS_CAPS, starling_proto::ns::PING],
        );
        assert_eq!(caps.ver(), expected);
    }
}
