//! Timestamps and replay (RFC 3923 §6, items on timestamps): the protected content carries a
//! UTC timestamp, the Message/CPIM `DateTime` header (RFC 3862 §5.4) or the PIDF `<timestamp>`
//! of its tuples (RFC 3863 §4.1.7), in RFC 3339 form. The receiver MUST check that it is
//! within five minutes of the current time and SHOULD check that it is greater than every
//! timestamp from that sender that passed the check in the last ten minutes; a failure is
//! shown as an "old", "future" or "decreasing" timestamp and MAY be answered with
//! `<bad-timestamp/>` (§7).
//!
//! The clock is the caller's: every check takes `now`.

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{E2eError, Result, TimestampFault};
use crate::mime::Entity;

/// The window of §6: how far the protected timestamp may be from `now`, either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampPolicy {
    /// Allowed distance between the timestamp and `now` (RFC: five minutes).
    pub window: Duration,
}

impl Default for TimestampPolicy {
    fn default() -> Self {
        TimestampPolicy {
            window: Duration::from_secs(5 * 60),
        }
    }
}

impl TimestampPolicy {
    /// Checks the window only.
    pub fn check_window(&self, timestamp: SystemTime, now: SystemTime) -> Result<()> {
        if timestamp + self.window < now {
            return Err(E2eError::BadTimestamp(TimestampFault::Old));
        }
        if timestamp > now + self.window {
            return Err(E2eError::BadTimestamp(TimestampFault::Future));
        }
        Ok(())
    }
}

/// The monotonic check of §6, kept by the caller per sender (bare JID). It remembers the
/// greatest timestamp that passed; one that is not greater is a replay ("decreasing").
/// Since the window is shorter than the RFC's ten-minute memory, remembering the maximum
/// is enough: anything older than it by more than the window already fails the window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayGuard {
    /// The greatest accepted timestamp from this sender.
    last_accepted: Option<SystemTime>,
}

impl ReplayGuard {
    /// A guard that has seen nothing yet.
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// The window check, then the monotonic check; records the timestamp if both pass.
    pub fn check(
        &mut self,
        policy: &TimestampPolicy,
        timestamp: SystemTime,
        now: SystemTime,
    ) -> Result<()> {
        policy.check_window(timestamp, now)?;
        if self.last_accepted.is_some_and(|last| timestamp <= last) {
            return Err(E2eError::BadTimestamp(TimestampFault::Decreasing));
        }
        self.last_accepted = Some(timestamp);
        Ok(())
    }

    /// The greatest timestamp accepted so far.
    pub fn last_accepted(&self) -> Option<SystemTime> {
        self.last_accepted
    }
}

/// Parses an RFC 3339 date-time into a `SystemTime`.
pub fn parse_timestamp(text: &str) -> Result<SystemTime> {
    OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| E2eError::BadTimestamp(TimestampFault::Missing))
}

/// Formats a `SystemTime` the way §6 asks senders to: RFC 3339 UTC with milliseconds.
pub fn format_timestamp(time: SystemTime) -> String {
    let t = OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The protected timestamp of a content entity: `DateTime` of a Message/CPIM entity, or the
/// first `<timestamp>` of a PIDF entity (`application/pidf+xml`).
pub fn content_timestamp(entity: &[u8]) -> Result<SystemTime> {
    let missing = || E2eError::BadTimestamp(TimestampFault::Missing);
    let outer = Entity::parse(entity).map_err(|_| missing())?;
    let ct = outer.content_type();
    match ct.mime_type() {
        "message/cpim" => {
            // The CPIM message headers form a header block like MIME's (RFC 3862 §3).
            let cpim = Entity::parse(outer.body()).map_err(|_| missing())?;
            parse_timestamp(cpim.header("DateTime").ok_or_else(missing)?)
        }
        "application/pidf+xml" => {
            let text = std::str::from_utf8(outer.body()).map_err(|_| missing())?;
            let doc: minidom::Element = text.trim().parse().map_err(|_| missing())?;
            let stamp = find_descendant(&doc, "timestamp").ok_or_else(missing)?;
            parse_timestamp(&stamp.text())
        }
        _ => Err(missing()),
    }
}

fn find_descendant<'e>(element: &'e minidom::Element, name: &str) -> Option<&'e minidom::Element> {
    if element.name() == name {
        return Some(element);
    }
    element.children().find_map(|c| find_descendant(c, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn window_and_monotonic() {
        let policy = TimestampPolicy::default();
        let now = at(1_000_000);
        let mut guard = ReplayGuard::new();
        assert!(guard.check(&policy, at(1_000_000 - 60), now).is_ok());
        let replay = guard.check(&policy, at(1_000_000 - 60), now).unwrap_err();
        assert!(matches!(
            replay,
            E2eError::BadTimestamp(TimestampFault::Decreasing)
        ));
        let old = guard.check(&policy, at(1_000_000 - 360), now).unwrap_err();
        assert!(matches!(old, E2eError::BadTimestamp(TimestampFault::Old)));
        let future = guard.check(&policy, at(1_000_000 + 360), now).unwrap_err();
        assert!(matches!(
            future,
            E2eError::BadTimestamp(TimestampFault::Future)
        ));
        assert!(guard.check(&policy, at(1_000_000 + 1), now).is_ok());
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = parse_timestamp("2026-01-05T11:58:02.120Z").unwrap();
        assert_eq!(format_timestamp(t), "2026-01-05T11:58:02.120Z");
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn cpim_and_pidf_timestamps() {
        let cpim = b"Content-Type: Message/CPIM\r\n\r\nFrom: <im:a@b>\r\nDateTime: 2026-01-05T11:58:02Z\r\n\r\nContent-Type: text/plain\r\n\r\nhi";
        assert_eq!(
            content_timestamp(cpim).unwrap(),
            parse_timestamp("2026-01-05T11:58:02Z").unwrap()
        );
        let pidf = b"Content-Type: application/pidf+xml\r\n\r\n<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'><tuple id='x'><status><basic>open</basic></status><timestamp>2026-01-05T11:58:03Z</timestamp></tuple></presence>";
        assert_eq!(
            content_timestamp(pidf).unwrap(),
            parse_timestamp("2026-01-05T11:58:03Z").unwrap()
        );
        assert!(content_timestamp(b"Content-Type: text/plain\r\n\r\nx").is_err());
    }
}
