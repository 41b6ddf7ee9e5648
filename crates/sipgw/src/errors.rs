//! Error mapping between SIP status codes and XMPP stanza error conditions.
//!
//! RFC 3922 §6 names three (unknown target -> `item-not-found`, access denied ->
//! `forbidden`, existing or pending subscription -> `conflict`); for the rest we follow the
//! tables of RFC 7247 §8 (XMPP -> SIP, SIP -> XMPP) as we remember them (the RFC body was not
//! at hand when this was written: check it before relying on a rarer code), since RFC 3922
//! maps to abstract CPIM and has no status codes. The two directions are not inverses: several SIP
//! codes fold into one condition and back to the most general code.

use starling_proto::error::StanzaErrorCondition as Cond;

/// The XMPP condition for a SIP final error response (3xx-6xx).
pub fn sip_to_condition(code: u16) -> Cond {
    match code {
        300..=399 => Cond::Redirect(None),
        400 => Cond::BadRequest,
        401 => Cond::NotAuthorized,
        402 => Cond::BadRequest,
        403 => Cond::Forbidden,
        404 | 481 | 484 | 485 | 604 => Cond::ItemNotFound,
        405 => Cond::NotAllowed,
        406 | 421 | 482 | 483 | 488 | 606 => Cond::NotAcceptable,
        407 => Cond::RegistrationRequired,
        408 | 504 => Cond::RemoteServerTimeout,
        410 => Cond::Gone(None),
        413 | 513 => Cond::PolicyViolation,
        414 | 416 => Cond::JidMalformed,
        415 | 420 | 501 => Cond::FeatureNotImplemented,
        480 | 486 | 600 => Cond::RecipientUnavailable,
        491 => Cond::UnexpectedRequest,
        500 => Cond::InternalServerError,
        502 => Cond::RemoteServerNotFound,
        503 => Cond::ServiceUnavailable,
        603 => Cond::Forbidden,
        _ => Cond::UndefinedCondition,
    }
}

/// The SIP status code for an XMPP error condition received in answer to a SIP request.
pub fn condition_to_sip(cond: &Cond) -> u16 {
    match cond {
        Cond::BadRequest | Cond::Conflict | Cond::JidMalformed => 400,
        Cond::FeatureNotImplemented => 501,
        Cond::Forbidden | Cond::NotAllowed | Cond::PolicyViolation => 403,
        Cond::Gone(_) => 410,
        Cond::InternalServerError | Cond::ResourceConstraint => 500,
        Cond::ItemNotFound | Cond::RemoteServerNotFound => 404,
        Cond::NotAcceptable => 406,
        Cond::NotAuthorized => 401,
        Cond::RecipientUnavailable => 480,
        Cond::Redirect(_) => 302,
        Cond::RegistrationRequired | Cond::SubscriptionRequired | Cond::UndefinedCondition => 400,
        Cond::RemoteServerTimeout => 408,
        Cond::ServiceUnavailable => 503,
        Cond::UnexpectedRequest => 491,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3922_section_6_conditions() {
        assert_eq!(sip_to_condition(404), Cond::ItemNotFound);
        assert_eq!(sip_to_condition(403), Cond::Forbidden);
        assert_eq!(condition_to_sip(&Cond::ItemNotFound), 404);
        assert_eq!(condition_to_sip(&Cond::Forbidden), 403);
    }

    #[test]
    fn every_class_maps_somewhere_sensible() {
        assert_eq!(sip_to_condition(302), Cond::Redirect(None));
        assert_eq!(sip_to_condition(486), Cond::RecipientUnavailable);
        assert_eq!(sip_to_condition(503), Cond::ServiceUnavailable);
        assert_eq!(sip_to_condition(699), Cond::UndefinedCondition);
        assert_eq!(condition_to_sip(&Cond::ServiceUnavailable), 503);
        assert_eq!(condition_to_sip(&Cond::RecipientUnavailable), 480);
    }
}
