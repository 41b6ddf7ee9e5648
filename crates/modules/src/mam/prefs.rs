//! Archiving preferences (XEP-0441, carried in the `urn:xmpp:mam:2` namespace): a default
//! (`always`, `never`, `roster`) and two JID lists, with the matching rules of XEP-0441 §3.3
//! (a listed bare JID matches every resource; a listed full JID only itself). Parsing and the
//! decision only; storage and caching live in the module.

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::Attr;

use super::query::NS_MAM;

/// Most JIDs kept in the `always` and `never` lists together (DESIGN principle 3).
pub const MAX_LISTED: usize = 1000;

/// The `default` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultPolicy {
    /// Archive everything not listed under `never` (the server default, as Prosody's).
    #[default]
    Always,
    /// Archive only what is listed under `always`.
    Never,
    /// Archive messages with contacts in the roster (by bare JID).
    Roster,
}

impl DefaultPolicy {
    fn parse(s: &str) -> Option<DefaultPolicy> {
        Some(match s {
            "always" => DefaultPolicy::Always,
            "never" => DefaultPolicy::Never,
            "roster" => DefaultPolicy::Roster,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Always => "always",
            DefaultPolicy::Never => "never",
            DefaultPolicy::Roster => "roster",
        }
    }
}

/// One user's preferences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prefs {
    /// What happens to JIDs in neither list.
    pub default: DefaultPolicy,
    /// Always archived.
    pub always: Vec<Jid>,
    /// Never archived (unless also under `always`, which is checked first).
    pub never: Vec<Jid>,
}

/// What [`Prefs::decide`] concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Archive.
    Archive,
    /// Do not archive.
    Skip,
    /// Archive if the other party's bare JID is in the roster.
    IfInRoster,
}

fn matches(listed: &Jid, target: &Jid) -> bool {
    if listed.resource().is_some() {
        listed == target
    } else {
        *listed == target.bare()
    }
}

impl Prefs {
    /// Parses a `<prefs/>` element from a client or from storage.
    pub fn parse(el: &Element) -> Result<Prefs, StanzaError> {
        let bad = |t: &str| StanzaError::with_text(Cond::BadRequest, t);
        let default = match el.attribute("default") {
            None => DefaultPolicy::Always,
            Some(d) => DefaultPolicy::parse(d)
                .ok_or_else(|| bad("default must be always, never or roster"))?,
        };
        let list = |name: &str| -> Result<Vec<Jid>, StanzaError> {
            let Some(l) = el.get_child(name, NS_MAM) else {
                return Ok(Vec::new());
            };
            l.children()
                .filter(|c| c.is("jid", NS_MAM))
                .map(|c| Jid::parse(c.text().trim()).map_err(|_| bad("not a JID in the lists")))
                .collect()
        };
        let prefs = Prefs {
            default,
            always: list("always")?,
            never: list("never")?,
        };
        if prefs.always.len() + prefs.never.len() > MAX_LISTED {
            return Err(StanzaError::with_text(
                Cond::PolicyViolation,
                format!("at most {MAX_LISTED} JIDs may be listed"),
            ));
        }
        Ok(prefs)
    }

    /// The `<prefs/>` element (answer to a get or set, and the stored form).
    pub fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[Jid]| {
            let mut l = Element::builder(name, NS_MAM);
            for j in jids {
                l = l.append(Element::builder("jid", NS_MAM).append(j.as_str()));
            }
            l.build()
        };
        Element::builder("prefs", NS_MAM)
            .with_attr("default", self.default.as_str())
            .append(list("always", &self.always))
            .append(list("never", &self.never))
            .build()
    }

    /// Whether a message with `other` (the `to` of an outgoing message, the `from` of an
    /// incoming one) is archived.
    pub fn decide(&self, other: &Jid) -> Decision {
        if self.always.iter().any(|l| matches(l, other)) {
            return Decision::Archive;
        }
        if self.never.iter().any(|l| matches(l, other)) {
            return Decision::Skip;
        }
        match self.default {
            DefaultPolicy::Always => Decision::Archive,
            DefaultPolicy::Never => Decision::Skip,
            DefaultPolicy::Roster => Decision::IfInRoster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn parse_round_trip_and_decide() {
        let el: Element = "<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
            <always><jid>romeo@montague.lit</jid></always>\
            <never><jid>montague@montague.lit</jid><jid>tybalt@capulet.lit/sword</jid></never></prefs>"
            .parse()
            .unwrap();
        let p = Prefs::parse(&el).unwrap();
        assert_eq!(p.default, DefaultPolicy::Roster);
        assert_eq!(Prefs::parse(&p.to_element()).unwrap(), p);
        assert_eq!(
            p.decide(&jid("romeo@montague.lit/orchard")),
            Decision::Archive
        );
        assert_eq!(p.decide(&jid("montague@montague.lit")), Decision::Skip);
        assert_eq!(p.decide(&jid("montague@montague.lit/r")), Decision::Skip);
        // A listed full JID matches only itself.
        assert_eq!(p.decide(&jid("tybalt@capulet.lit/sword")), Decision::Skip);
        assert_eq!(
            p.decide(&jid("tybalt@capulet.lit/dagger")),
            Decision::IfInRoster
        );
        assert_eq!(Prefs::default().decide(&jid("a@b")), Decision::Archive);
    }

    #[test]
    fn invalid_prefs() {
        for bad in [
            "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
            "<prefs xmlns='urn:xmpp:mam:2'><never><jid>@@</jid></never></prefs>",
        ] {
            let el: Element = bad.parse().unwrap();
            assert_eq!(
                Prefs::parse(&el).unwrap_err().condition,
                Cond::BadRequest,
                "{bad}"
            );
        }
    }
}
