//! A room's configuration and its data form (XEP-0045 §10.2, the `muc#roomconfig` FORM_TYPE
//! of §15.5.3, data forms of XEP-0004). The same submitted form is what persistence stores,
//! so there is one parser for both. No I/O.

use minidom::Element;
use starling_core::xml::BuilderExt;

use super::roles::Role;
use crate::pep::config::NS_DATA;

/// The FORM_TYPE of the configuration form.
pub const FORM_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";

/// Who may see occupants' real JIDs (`muc#roomconfig_whois`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// Who may send private messages (`muc#roomconfig_allowpm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowPm {
    /// Every occupant.
    Anyone,
    /// Participants and moderators.
    Participants,
    /// Moderators only.
    Moderators,
    /// Nobody.
    None,
}

impl AllowPm {
    fn as_str(self) -> &'static str {
        match self {
            AllowPm::Anyone => "anyone",
            AllowPm::Participants => "participants",
            AllowPm::Moderators => "moderators",
            AllowPm::None => "none",
        }
    }

    /// Whether an occupant with `role` may send a private message.
    pub fn allows(self, role: Role) -> bool {
        match self {
            AllowPm::Anyone => role >= Role::Visitor,
            AllowPm::Participants => role >= Role::Participant,
            AllowPm::Moderators => role == Role::Moderator,
            AllowPm::None => false,
        }
    }
}

/// Every standard `muc#roomconfig` field (XEP-0045 §15.5.3). Owner and admin lists are not
/// kept here: the form's `roomowners`/`roomadmins` fields edit the affiliation table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    /// `roomname`: a natural-language name.
    pub name: String,
    /// `roomdesc`: a short description.
    pub description: String,
    /// `lang`: the room's language.
    pub lang: String,
    /// `persistentroom`: survives its last occupant leaving (and restarts).
    pub persistent: bool,
    /// `publicroom`: listed in the service's disco#items.
    pub public: bool,
    /// `membersonly`: only members (and above) may enter.
    pub members_only: bool,
    /// `moderatedroom`: only participants (voice) may speak.
    pub moderated: bool,
    /// `passwordprotectedroom`: entering needs `secret`.
    pub password_protected: bool,
    /// `roomsecret`.
    pub secret: String,
    /// `maxusers`: occupant cap (within the service's cap).
    pub max_users: usize,
    /// `whois`.
    pub whois: Whois,
    /// `allowpm`.
    pub allow_pm: AllowPm,
    /// `allowinvites`: occupants (not only admins) may invite.
    pub allow_invites: bool,
    /// `changesubject`: occupants (not only moderators) may change the subject.
    pub change_subject: bool,
    /// `enablelogging`: messages are archived (MAM on the room JID).
    pub logging: bool,
    /// `getmemberlist`: roles that may retrieve the member list.
    pub get_member_list: Vec<Role>,
    /// `presencebroadcast`: roles whose presence is broadcast.
    pub presence_broadcast: Vec<Role>,
    /// `pubsub`: the node associated with the room.
    pub pubsub: String,
    /// `muc#maxhistoryfetch`: most history messages one join gets.
    pub max_history_fetch: usize,
}

impl RoomConfig {
    /// The defaults of a new room, within the service's caps.
    pub fn new(max_users: usize, logging: bool, persistent: bool, history: usize) -> RoomConfig {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            lang: String::new(),
            persistent,
            public: true,
            members_only: false,
            moderated: false,
            password_protected: false,
            secret: String::new(),
            max_users,
            whois: Whois::Moderators,
            allow_pm: AllowPm::Anyone,
            allow_invites: false,
            change_subject: false,
            logging,
            get_member_list: vec![Role::Moderator, Role::Participant, Role::Visitor],
            presence_broadcast: vec![Role::Moderator, Role::Participant, Role::Visitor],
            pubsub: String::new(),
            max_history_fetch: history,
        }
    }

    /// Whether an occupant with `role` has its presence broadcast.
    pub fn broadcasts(&self, role: Role) -> bool {
        self.presence_broadcast.contains(&role)
    }

    /// Applies submitted fields. `owners`/`admins` come back for the caller to apply to the
    /// affiliation table. `cap` is the service's occupant cap.
    pub fn apply(&mut self, fields: &[(String, Vec<String>)], cap: usize) -> Result<Lists, String> {
        let mut next = self.clone();
        let mut lists = Lists::default();
        for (var, values) in fields {
            let one = || {
                values
                    .first()
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_default()
            };
            let flag = || match one().as_str() {
                "1" | "true" => Ok(true),
                "0" | "false" | "" => Ok(false),
                other => Err(format!("{var}: '{other}' is not a boolean")),
            };
            let roles = || -> Result<Vec<Role>, String> {
                values
                    .iter()
                    .map(|v| Role::parse(v.trim()).ok_or_else(|| format!("{var}: bad role '{v}'")))
                    .collect()
            };
            let short = var.strip_prefix("muc#roomconfig_").unwrap_or(var);
            match short {
                "roomname" => next.name = one(),
                "roomdesc" => next.description = one(),
                "lang" => next.lang = one(),
                "persistentroom" => next.persistent = flag()?,
                "publicroom" => next.public = flag()?,
                "membersonly" => next.members_only = flag()?,
                "moderatedroom" => next.moderated = flag()?,
                "passwordprotectedroom" => next.password_protected = flag()?,
                "roomsecret" => next.secret = values.first().cloned().unwrap_or_default(),
                "maxusers" => {
                    let v = one();
                    next.max_users = if v.is_empty() || v == "none" {
                        cap
                    } else {
                        v.parse::<usize>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("{var}: '{v}' is not a number"))?
                            .min(cap)
                    };
                }
                "whois" => {
                    next.whois = match one().as_str() {
                        "moderators" => Whois::Moderators,
                        "anyone" => Whois::Anyone,
                        other => return Err(format!("{var}: '{other}' is not allowed")),
                    }
                }
                "allowpm" => {
                    next.allow_pm = match one().as_str() {
                        "anyone" => AllowPm::Anyone,
                        "participants" => AllowPm::Participants,
                        "moderators" => AllowPm::Moderators,
                        "none" => AllowPm::None,
                        other => return Err(format!("{var}: '{other}' is not allowed")),
                    }
                }
                "allowinvites" => next.allow_invites = flag()?,
                "changesubject" => next.change_subject = flag()?,
                "enablelogging" => next.logging = flag()?,
                "getmemberlist" => next.get_member_list = roles()?,
                "presencebroadcast" => next.presence_broadcast = roles()?,
                "pubsub" => next.pubsub = one(),
                "roomowners" => lists.owners = Some(values.clone()),
                "roomadmins" => lists.admins = Some(values.clone()),
                _ if var == "muc#maxhistoryfetch" => {
                    let v = one();
                    next.max_history_fetch = v
                        .parse()
                        .map_err(|_| format!("{var}: '{v}' is not a number"))?;
                }
                // Unknown fields are ignored (XEP-0004 §3.2 lets a service ignore them), so
                // forms written for other servers still configure the standard fields.
                _ => {}
            }
        }
        if next.password_protected && next.secret.is_empty() {
            return Err("a password-protected room needs a muc#roomconfig_roomsecret".into());
        }
        *self = next;
        Ok(lists)
    }

    /// The form (`type='form'` for an owner's request, `'submit'` for storage). `owners`
    /// and `admins` fill the list fields.
    pub fn to_form(&self, kind: &str, owners: &[String], admins: &[String]) -> Element {
        let b = |v: bool| if v { "1" } else { "0" };
        let roles = |list: &[Role]| list.iter().map(|r| r.as_str().to_owned()).collect();
        let fields: Vec<(&str, &str, &str, Vec<String>)> = vec![
            (
                "muc#roomconfig_roomname",
                "text-single",
                "Room name",
                vec![self.name.clone()],
            ),
            (
                "muc#roomconfig_roomdesc",
                "text-single",
                "Description",
                vec![self.description.clone()],
            ),
            (
                "muc#roomconfig_lang",
                "text-single",
                "Language",
                vec![self.lang.clone()],
            ),
            (
                "muc#roomconfig_persistentroom",
                "boolean",
                "Persistent",
                vec![b(self.persistent).into()],
            ),
            (
                "muc#roomconfig_publicroom",
                "boolean",
                "Listed publicly",
                vec![b(self.public).into()],
            ),
            (
                "muc#roomconfig_membersonly",
                "boolean",
                "Members only",
                vec![b(self.members_only).into()],
            ),
            (
                "muc#roomconfig_moderatedroom",
                "boolean",
                "Moderated",
                vec![b(self.moderated).into()],
            ),
            (
                "muc#roomconfig_passwordprotectedroom",
                "boolean",
                "Password protected",
                vec![b(self.password_protected).into()],
            ),
            (
                "muc#roomconfig_roomsecret",
                "text-private",
                "Password",
                vec![self.secret.clone()],
            ),
            (
                "muc#roomconfig_maxusers",
                "list-single",
                "Maximum occupants",
                vec![self.max_users.to_string()],
            ),
            (
                "muc#roomconfig_whois",
                "list-single",
                "Who may see real JIDs",
                vec![match self.whois {
                    Whois::Anyone => "anyone".into(),
                    Whois::Moderators => "moderators".into(),
                }],
            ),
            (
                "muc#roomconfig_allowpm",
                "list-single",
                "Who may send private messages",
                vec![self.allow_pm.as_str().into()],
            ),
            (
                "muc#roomconfig_allowinvites",
                "boolean",
                "Occupants may invite",
                vec![b(self.allow_invites).into()],
            ),
            (
                "muc#roomconfig_changesubject",
                "boolean",
                "Occupants may change the subject",
                vec![b(self.change_subject).into()],
            ),
            (
                "muc#roomconfig_enablelogging",
                "boolean",
                "Archive messages",
                vec![b(self.logging).into()],
            ),
            (
                "muc#roomconfig_getmemberlist",
                "list-multi",
                "Roles that may get the member list",
                roles(&self.get_member_list),
            ),
            (
                "muc#roomconfig_presencebroadcast",
                "list-multi",
                "Roles whose presence is broadcast",
                roles(&self.presence_broadcast),
            ),
            (
                "muc#roomconfig_pubsub",
                "text-single",
                "Associated pubsub node",
                vec![self.pubsub.clone()],
            ),
            (
                "muc#maxhistoryfetch",
                "text-single",
                "Most history messages sent on join",
                vec![self.max_history_fetch.to_string()],
            ),
            (
                "muc#roomconfig_roomowners",
                "jid-multi",
                "Owners",
                owners.to_vec(),
            ),
            (
                "muc#roomconfig_roomadmins",
                "jid-multi",
                "Admins",
                admins.to_vec(),
            ),
        ];
        let form_kind = kind == "form";
        let mut x = Element::builder("x", NS_DATA).with_attr("type", kind);
        if form_kind {
            x = x.append(Element::builder("title", NS_DATA).append("Room configuration"));
        }
        x = x.append(
            Element::builder("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .append(Element::builder("value", NS_DATA).append(FORM_ROOMCONFIG)),
        );
        for (var, kind, label, values) in fields {
            let mut f = Element::builder("field", NS_DATA).with_attr("var", var);
            if form_kind {
                f = f.with_attr("type", kind).with_attr("label", label);
                let options: &[&str] = match var {
                    "muc#roomconfig_whois" => &["moderators", "anyone"],
                    "muc#roomconfig_allowpm" => &["anyone", "participants", "moderators", "none"],
                    "muc#roomconfig_getmemberlist" | "muc#roomconfig_presencebroadcast" => {
                        &["moderator", "participant", "visitor"]
                    }
                    "muc#roomconfig_maxusers" => &["10", "20", "30", "50", "100", "none"],
                    _ => &[],
                };
                for o in options {
                    f = f.append(
                        Element::builder("option", NS_DATA)
                            .with_attr("label", *o)
                            .append(Element::builder("value", NS_DATA).append(*o)),
                    );
                }
            }
            for v in values {
                f = f.append(Element::builder("value", NS_DATA).append(v));
            }
            x = x.append(f);
        }
        x.build()
    }
}

/// Owner and admin lists submitted in a configuration form.
#[derive(Debug, Default)]
pub struct Lists {
    /// `muc#roomconfig_roomowners`, when submitted.
    pub owners: Option<Vec<String>>,
    /// `muc#roomconfig_roomadmins`, when submitted.
    pub admins: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pep::config::submitted_fields;

    #[test]
    fn form_round_trip() {
        let mut c = RoomConfig::new(100, true, false, 20);
        c.name = "Coven".into();
        c.members_only = true;
        c.whois = Whois::Anyone;
        c.presence_broadcast = vec![Role::Moderator];
        let form = c.to_form("submit", &["a@x".into()], &[]);
        let fields = submitted_fields(&form, FORM_ROOMCONFIG).unwrap();
        let mut d = RoomConfig::new(100, false, false, 20);
        let lists = d.apply(&fields, 100).unwrap();
        assert_eq!(c, d);
        assert_eq!(lists.owners, Some(vec!["a@x".to_owned()]));
        assert_eq!(lists.admins, Some(vec![]));
    }

    #[test]
    fn bad_values() {
        let mut c = RoomConfig::new(100, true, false, 20);
        let f = |var: &str, v: &str| vec![(var.to_owned(), vec![v.to_owned()])];
        assert!(c
            .apply(&f("muc#roomconfig_whois", "everyone"), 100)
            .is_err());
        assert!(c.apply(&f("muc#roomconfig_maxusers", "x"), 100).is_err());
        assert!(c
            .apply(&f("muc#roomconfig_passwordprotectedroom", "1"), 100)
            .is_err());
        c.apply(&f("muc#roomconfig_maxusers", "5000"), 100).unwrap();
        assert_eq!(c.max_users, 100);
    }
}
