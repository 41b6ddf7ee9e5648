//! Affiliations and roles (XEP-0045 §5) and the privilege rules between them (§5.1.1,
//! §5.2.1, and the admin use cases of §8–§10). No I/O: the room asks these functions whether
//! an actor may do something and what a new occupant's role is.

/// A long-lived relation between a bare JID and a room (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Affiliation {
    /// Banned from the room.
    Outcast,
    /// No affiliation.
    None,
    /// A member (may enter a members-only room).
    Member,
    /// A room administrator.
    Admin,
    /// A room owner.
    Owner,
}

impl Affiliation {
    /// The XEP's attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Outcast => "outcast",
            Affiliation::None => "none",
            Affiliation::Member => "member",
            Affiliation::Admin => "admin",
            Affiliation::Owner => "owner",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "outcast" => Affiliation::Outcast,
            "none" => Affiliation::None,
            "member" => Affiliation::Member,
            "admin" => Affiliation::Admin,
            "owner" => Affiliation::Owner,
            _ => return None,
        })
    }
}

/// A role: what an occupant may do during its visit (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Not in the room.
    None,
    /// Present without voice.
    Visitor,
    /// Present with voice.
    Participant,
    /// Present with moderation privileges.
    Moderator,
}

impl Role {
    /// The XEP's attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Visitor => "visitor",
            Role::Participant => "participant",
            Role::Moderator => "moderator",
        }
    }

    /// Parses an attribute value.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "none" => Role::None,
            "visitor" => Role::Visitor,
            "participant" => Role::Participant,
            "moderator" => Role::Moderator,
            _ => return None,
        })
    }
}

/// The role an occupant gets on entering (§5.1.2 default roles): owners and admins are
/// moderators, members participants, others participants or, in a moderated room, visitors.
/// `None` for outcasts (they do not enter).
pub fn default_role(aff: Affiliation, moderated: bool) -> Role {
    match aff {
        Affiliation::Owner | Affiliation::Admin => Role::Moderator,
        Affiliation::Member => Role::Participant,
        Affiliation::None if moderated => Role::Visitor,
        Affiliation::None => Role::Participant,
        Affiliation::Outcast => Role::None,
    }
}

/// Whether `actor` (with affiliation and role) may give `target` (with its affiliation and
/// current role) the role `new` (§8.2–§8.5, §9.6–§9.7). Errors are `not-allowed` (the target
/// outranks the actor) or `forbidden` (the actor lacks the privilege).
pub fn may_set_role(
    actor: (Affiliation, Role),
    target: (Affiliation, Role),
    new: Role,
) -> Result<(), RoleDenied> {
    let (actor_aff, actor_role) = actor;
    let (target_aff, target_role) = target;
    if actor_role != Role::Moderator {
        return Err(RoleDenied::Forbidden);
    }
    let actor_is_admin = actor_aff >= Affiliation::Admin;
    // Granting or revoking moderator status is an admin's privilege (§9.6, §9.7).
    if (new == Role::Moderator || target_role == Role::Moderator) && !actor_is_admin {
        return Err(RoleDenied::Forbidden);
    }
    // Owners and admins stay moderators (§9.7: not-allowed), and nobody kicks or silences
    // an entity with a higher affiliation (§8.2).
    if target_aff >= Affiliation::Admin && new != Role::Moderator {
        return Err(RoleDenied::NotAllowed);
    }
    if target_aff > actor_aff {
        return Err(RoleDenied::NotAllowed);
    }
    Ok(())
}

/// Whether `actor` may change `target_old` to `new` (§9.1–§9.5, §10.3–§10.7): admins handle
/// outcasts, members and none below admin; owners handle everything.
pub fn may_set_affiliation(
    actor: Affiliation,
    target_old: Affiliation,
    new: Affiliation,
) -> Result<(), RoleDenied> {
    match actor {
        Affiliation::Owner => Ok(()),
        Affiliation::Admin => {
            if new >= Affiliation::Admin {
                Err(RoleDenied::Forbidden)
            } else if target_old >= Affiliation::Admin {
                Err(RoleDenied::NotAllowed)
            } else {
                Ok(())
            }
        }
        _ => Err(RoleDenied::Forbidden),
    }
}

/// Why a role or affiliation change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleDenied {
    /// The actor lacks the privilege.
    Forbidden,
    /// The target may not be changed this way.
    NotAllowed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use Affiliation as A;

    #[test]
    fn parse_round_trip() {
        for a in [A::Outcast, A::None, A::Member, A::Admin, A::Owner] {
            assert_eq!(Affiliation::parse(a.as_str()), Some(a));
        }
        for r in [
            Role::None,
            Role::Visitor,
            Role::Participant,
            Role::Moderator,
        ] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("king"), None);
    }

    #[test]
    fn role_rules() {
        let m = (A::None, Role::Moderator);
        let admin = (A::Admin, Role::Moderator);
        // A moderator kicks a participant, not an admin.
        assert!(may_set_role(m, (A::None, Role::Participant), Role::None).is_ok());
        assert_eq!(
            may_set_role(m, (A::Admin, Role::Moderator), Role::None),
            Err(RoleDenied::Forbidden)
        );
        assert_eq!(
            may_set_role(admin, (A::Owner, Role::Moderator), Role::None),
            Err(RoleDenied::NotAllowed)
        );
        // Only admins grant moderator.
        assert_eq!(
            may_set_role(m, (A::None, Role::Participant), Role::Moderator),
            Err(RoleDenied::Forbidden)
        );
        assert!(may_set_role(admin, (A::Member, Role::Participant), Role::Moderator).is_ok());
        // A participant kicks nobody.
        assert_eq!(
            may_set_role(
                (A::Member, Role::Participant),
                (A::None, Role::Visitor),
                Role::None
            ),
            Err(RoleDenied::Forbidden)
        );
    }

    #[test]
    fn affiliation_rules() {
        assert!(may_set_affiliation(A::Admin, A::None, A::Outcast).is_ok());
        assert_eq!(
            may_set_affiliation(A::Admin, A::Owner, A::Outcast),
            Err(RoleDenied::NotAllowed)
        );
        assert_eq!(
            may_set_affiliation(A::Admin, A::None, A::Admin),
            Err(RoleDenied::Forbidden)
        );
        assert!(may_set_affiliation(A::Owner, A::Admin, A::None).is_ok());
        assert_eq!(
            may_set_affiliation(A::Member, A::None, A::Member),
            Err(RoleDenied::Forbidden)
        );
        assert_eq!(default_role(A::None, true), Role::Visitor);
        assert_eq!(default_role(A::Admin, true), Role::Moderator);
    }
}
