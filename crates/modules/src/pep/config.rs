//! A PEP node's configuration: the XEP-0060 §16.4.4 `pubsub#node_config` fields PEP clients
//! use, their data-form (XEP-0004) reading and writing, the publish-options preconditions of
//! XEP-0060 §7.1.5, and the stored form.
//!
//! Defaults follow XEP-0163 §5 and Prosody: access model `presence`, items persisted, one
//! item kept, the last item sent on subscription and presence.

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_proto::Attr;

/// `jabber:x:data` (XEP-0004).
pub const NS_DATA: &str = "jabber:x:data";
/// FORM_TYPE of node configuration forms (XEP-0060 §16.4.4).
pub const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// FORM_TYPE of publish-options forms (XEP-0060 §16.4.5).
pub const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// Namespace of the stored form (not on the wire).
const NS_STORED: &str = "urn:starling:pep:0";

/// Who may retrieve items and receive notifications (XEP-0060 §4.5). The owner always may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    /// Anyone.
    Open,
    /// Contacts subscribed to the owner's presence (`from` or `both`).
    Presence,
    /// Contacts subscribed to the owner's presence and in one of the allowed roster groups.
    Roster,
    /// Only the owner (PEP keeps no other affiliations).
    Whitelist,
}

impl AccessModel {
    fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }
}

/// When the last item is sent to a new subscriber (XEP-0060 §12.16, XEP-0163 §4.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLast {
    /// Never (XEP-0402 bookmarks ask for this).
    Never,
    /// When an entity subscribes.
    OnSub,
    /// When an entity subscribes and whenever a resource of it becomes available.
    OnSubAndPresence,
}

impl SendLast {
    fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }
}

/// One node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// `pubsub#access_model`.
    pub access_model: AccessModel,
    /// `pubsub#roster_groups_allowed`: the groups of the [`AccessModel::Roster`] model.
    pub roster_groups: Vec<String>,
    /// `pubsub#persist_items`. A node that does not persist still keeps its last item, so
    /// that it can be sent to new subscribers (as Prosody keeps it in memory).
    pub persist_items: bool,
    /// `pubsub#max_items`, already capped by the server's limit (`max` means the limit).
    pub max_items: usize,
    /// `pubsub#notify_retract`: retractions are notified even without `notify='true'`.
    pub notify_retract: bool,
    /// `pubsub#notify_delete`: node deletion is notified.
    pub notify_delete: bool,
    /// `pubsub#deliver_notifications`: notifications are sent at all.
    pub deliver_notifications: bool,
    /// `pubsub#deliver_payloads`: notifications carry the item's payload.
    pub deliver_payloads: bool,
    /// `pubsub#send_last_published_item`.
    pub send_last: SendLast,
    /// `pubsub#title`, free text.
    pub title: String,
    /// `pubsub#type`, the payload namespace (free text).
    pub payload_type: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig::new()
    }
}

impl NodeConfig {
    /// The defaults of a new node (XEP-0163 §5).
    pub fn new() -> NodeConfig {
        NodeConfig {
            access_model: AccessModel::Presence,
            roster_groups: Vec::new(),
            persist_items: true,
            max_items: 1,
            notify_retract: false,
            notify_delete: true,
            deliver_notifications: true,
            deliver_payloads: true,
            send_last: SendLast::OnSubAndPresence,
            title: String::new(),
            payload_type: String::new(),
        }
    }

    /// How many items the node keeps.
    pub fn kept_items(&self) -> usize {
        if self.persist_items {
            self.max_items
        } else {
            1
        }
    }
}

/// Why a form cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Not a data form of the expected FORM_TYPE, or a value that does not parse
    /// (`bad-request` / `not-acceptable`).
    Invalid(String),
    /// A field this service does not support.
    Unsupported(String),
}

/// The fields of a submitted form, in order: (var, values). FORM_TYPE is checked against
/// `form_type` (a missing FORM_TYPE is accepted) and left out.
pub fn submitted_fields(
    x: &Element,
    form_type: &str,
) -> Result<Vec<(String, Vec<String>)>, FormError> {
    if !x.is("x", NS_DATA) || !matches!(x.attribute("type"), Some("submit") | None) {
        return Err(FormError::Invalid("expected a submitted data form".into()));
    }
    let mut out = Vec::new();
    for f in x.children().filter(|c| c.is("field", NS_DATA)) {
        let Some(var) = f.attribute("var") else {
            continue;
        };
        let values: Vec<String> = f
            .children()
            .filter(|v| v.is("value", NS_DATA))
            .map(|v| v.text())
            .collect();
        if var == "FORM_TYPE" {
            if values.first().map(String::as_str) != Some(form_type) {
                return Err(FormError::Invalid(format!("FORM_TYPE must be {form_type}")));
            }
            continue;
        }
        out.push((var.to_owned(), values));
    }
    Ok(out)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn single(var: &str, values: &[String]) -> Result<String, FormError> {
    match values {
        [v] => Ok(v.trim().to_owned()),
        [] => Ok(String::new()),
        _ => Err(FormError::Invalid(format!("{var} takes one value"))),
    }
}

fn parse_max_items(v: &str, cap: usize) -> Result<usize, FormError> {
    if v == "max" {
        return Ok(cap);
    }
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n.min(cap)),
        _ => Err(FormError::Invalid(format!(
            "pubsub#max_items must be a positive number or 'max', not '{v}'"
        ))),
    }
}

impl NodeConfig {
    /// Applies submitted fields (node configuration, or the options of a node auto-created
    /// by a publish). `cap` is the server's item limit.
    pub fn apply(&mut self, fields: &[(String, Vec<String>)], cap: usize) -> Result<(), FormError> {
        let mut next = self.clone();
        for (var, values) in fields {
            let bad = |what: &str| FormError::Invalid(format!("{var}: {what}"));
            match var.as_str() {
                "pubsub#access_model" => {
                    next.access_model = AccessModel::parse(&single(var, values)?)
                        .ok_or_else(|| bad("unknown access model"))?;
                }
                "pubsub#roster_groups_allowed" => next.roster_groups = values.clone(),
                "pubsub#max_items" => next.max_items = parse_max_items(&single(var, values)?, cap)?,
                "pubsub#send_last_published_item" => {
                    next.send_last = SendLast::parse(&single(var, values)?)
                        .ok_or_else(|| bad("unknown value"))?;
                }
                "pubsub#title" => next.title = single(var, values)?,
                "pubsub#type" => next.payload_type = single(var, values)?,
                "pubsub#publish_model" => {
                    // Only the owner publishes to a PEP node (XEP-0163 §2.2).
                    if single(var, values)? != "publishers" {
                        return Err(FormError::Unsupported(var.clone()));
                    }
                }
                _ => {
                    let flag = match var.as_str() {
                        "pubsub#persist_items" => &mut next.persist_items,
                        "pubsub#notify_retract" => &mut next.notify_retract,
                        "pubsub#notify_delete" => &mut next.notify_delete,
                        "pubsub#deliver_notifications" => &mut next.deliver_notifications,
                        "pubsub#deliver_payloads" => &mut next.deliver_payloads,
                        _ => return Err(FormError::Unsupported(var.clone())),
                    };
                    *flag =
                        parse_bool(&single(var, values)?).ok_or_else(|| bad("not a boolean"))?;
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// Whether the node satisfies publish-options `fields` (XEP-0060 §7.1.5): every field
    /// must equal the node's value; a field the service does not know is not satisfied.
    pub fn satisfies(&self, fields: &[(String, Vec<String>)], cap: usize) -> bool {
        let mut wanted = self.clone();
        // Applying the options to a copy normalises their values ("true" vs "1", "max").
        wanted.apply(fields, cap).is_ok() && wanted == *self
    }

    /// The configuration form (XEP-0060 §8.2.1), `type='form'`.
    pub fn to_form(&self) -> Element {
        let field = |var: &str, kind: &str, label: &str| {
            Element::builder("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", kind)
                .with_attr("label", label)
        };
        let value = |v: &str| Element::builder("value", NS_DATA).append(v);
        let option = |v: &str| Element::builder("option", NS_DATA).append(value(v));
        let boolean = |var: &str, label: &str, on: bool| {
            field(var, "boolean", label).append(value(if on { "1" } else { "0" }))
        };
        let mut access = field("pubsub#access_model", "list-single", "Access model");
        for m in ["open", "presence", "roster", "whitelist"] {
            access = access.append(option(m));
        }
        let mut groups = field(
            "pubsub#roster_groups_allowed",
            "list-multi",
            "Roster groups allowed to access the node",
        );
        for g in &self.roster_groups {
            groups = groups.append(value(g));
        }
        let mut send_last = field(
            "pubsub#send_last_published_item",
            "list-single",
            "When to send the last published item",
        );
        for m in ["never", "on_sub", "on_sub_and_presence"] {
            send_last = send_last.append(option(m));
        }
        Element::builder("x", NS_DATA)
            .with_attr("type", "form")
            .append(
                Element::builder("field", NS_DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .append(value(FORM_NODE_CONFIG)),
            )
            .append(access.append(value(self.access_model.as_str())))
            .append(groups)
            .append(boolean(
                "pubsub#persist_items",
                "Persist items to storage",
                self.persist_items,
            ))
            .append(
                field(
                    "pubsub#max_items",
                    "text-single",
                    "Max number of items to persist",
                )
                .append(value(&self.max_items.to_string())),
            )
            .append(boolean(
                "pubsub#notify_retract",
                "Notify subscribers when items are removed",
                self.notify_retract,
            ))
            .append(boolean(
                "pubsub#notify_delete",
                "Notify subscribers when the node is deleted",
                self.notify_delete,
            ))
            .append(boolean(
                "pubsub#deliver_notifications",
                "Deliver event notifications",
                self.deliver_notifications,
            ))
            .append(boolean(
                "pubsub#deliver_payloads",
                "Deliver payloads with event notifications",
                self.deliver_payloads,
            ))
            .append(send_last.append(value(self.send_last.as_str())))
            .append(field("pubsub#title", "text-single", "Title").append(value(&self.title)))
            .append(
                field("pubsub#type", "text-single", "Payload namespace")
                    .append(value(&self.payload_type)),
            )
            .append(
                field("pubsub#publish_model", "list-single", "Who may publish")
                    .append(option("publishers"))
                    .append(value("publishers")),
            )
            .build()
    }

    /// The stored form, with the node's item sequence counter.
    pub fn encode(&self, seq: u64) -> Element {
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut b = Element::builder("node", NS_STORED)
            .with_attr("seq", seq.to_string())
            .with_attr("access", self.access_model.as_str())
            .with_attr("persist", flag(self.persist_items))
            .with_attr("max", self.max_items.to_string())
            .with_attr("notify-retract", flag(self.notify_retract))
            .with_attr("notify-delete", flag(self.notify_delete))
            .with_attr("deliver", flag(self.deliver_notifications))
            .with_attr("payloads", flag(self.deliver_payloads))
            .with_attr("send-last", self.send_last.as_str())
            .with_attr("title", self.title.as_str())
            .with_attr("type", self.payload_type.as_str());
        for g in &self.roster_groups {
            b = b.append(Element::builder("group", NS_STORED).append(g.as_str()));
        }
        b.build()
    }

    /// Parses the stored form: the configuration and the sequence counter.
    pub fn decode(el: &Element) -> Option<(NodeConfig, u64)> {
        if !el.is("node", NS_STORED) {
            return None;
        }
        let flag = |name: &str| el.attribute(name) == Some("1");
        let config = NodeConfig {
            access_model: AccessModel::parse(el.attribute("access")?)?,
            roster_groups: el
                .children()
                .filter(|c| c.is("group", NS_STORED))
                .map(|c| c.text())
                .collect(),
            persist_items: flag("persist"),
            max_items: el.attribute("max")?.parse().ok()?,
            notify_retract: flag("notify-retract"),
            notify_delete: flag("notify-delete"),
            deliver_notifications: flag("deliver"),
            deliver_payloads: flag("payloads"),
            send_last: SendLast::parse(el.attribute("send-last")?)?,
            title: el.attribute("title").unwrap_or_default().to_owned(),
            payload_type: el.attribute("type").unwrap_or_default().to_owned(),
        };
        Some((config, el.attribute("seq")?.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    #[test]
    fn bookmarks_options_apply_and_are_then_satisfied() {
        // XEP-0402 §3's publish-options.
        let opts = fields(&[
            ("pubsub#persist_items", "true"),
            ("pubsub#max_items", "max"),
            ("pubsub#send_last_published_item", "never"),
            ("pubsub#access_model", "whitelist"),
        ]);
        let mut c = NodeConfig::new();
        assert!(!c.satisfies(&opts, 500));
        c.apply(&opts, 500).unwrap();
        assert_eq!(c.max_items, 500);
        assert_eq!(c.access_model, AccessModel::Whitelist);
        assert!(c.satisfies(&opts, 500));
        assert!(c.satisfies(&fields(&[("pubsub#persist_items", "1")]), 500));
        assert!(!c.satisfies(&fields(&[("pubsub#access_model", "open")]), 500));
        assert!(!c.satisfies(&fields(&[("pubsub#unknown", "1")]), 500));
    }

    #[test]
    fn bad_values_are_refused_whole() {
        let mut c = NodeConfig::new();
        let before = c.clone();
        let r = c.apply(
            &fields(&[("pubsub#access_model", "open"), ("pubsub#max_items", "0")]),
            10,
        );
        assert!(matches!(r, Err(FormError::Invalid(_))));
        assert_eq!(c, before, "nothing applied");
        assert_eq!(
            c.apply(&fields(&[("pubsub#bogus", "x")]), 10),
            Err(FormError::Unsupported("pubsub#bogus".into()))
        );
        c.apply(&fields(&[("pubsub#max_items", "99")]), 10).unwrap();
        assert_eq!(c.max_items, 10, "capped");
    }

    #[test]
    fn stored_form_round_trips_and_form_reads_back() {
        let mut c = NodeConfig::new();
        c.access_model = AccessModel::Roster;
        c.roster_groups = vec!["Friends".into(), "A & B".into()];
        c.title = "t".into();
        assert_eq!(NodeConfig::decode(&c.encode(42)), Some((c.clone(), 42)));
        // The configuration form, submitted back, changes nothing.
        let mut form = c.to_form();
        starling_core::xml::ElementExt::put_attr(&mut form, "type", "submit");
        let f = submitted_fields(&form, FORM_NODE_CONFIG).unwrap();
        let mut again = NodeConfig::new();
        again.apply(&f, 1000).unwrap();
        assert_eq!(again, c);
        assert!(submitted_fields(&form, FORM_PUBLISH_OPTIONS).is_err());
    }
}
