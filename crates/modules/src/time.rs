//! XEP-0202 Entity Time: the server answers `<time xmlns='urn:xmpp:time'/>` gets addressed
//! to it with its UTC time and a zero offset (a server has no user-facing time zone; XEP-0202
//! §3 lets the entity choose which offset to report).
//!
//! Also home to the one UTC formatter the modules share: XEP-0082 `DateTime` profile
//! (`YYYY-MM-DDThh:mm:ss.sssZ`), used for XEP-0202 `<utc/>` and XEP-0203 `stamp`.
//!
//! IQs to an account's bare JID are answered by the server too (RFC 6120 §10.5.3.1 lets the
//! server reply on the account's behalf): XEP-0202 is about the entity's clock, and the
//! account lives on the server's clock.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition};
use starling_proto::stanza::IqType;

/// The XEP-0202 namespace.
pub const NS_TIME: &str = "urn:xmpp:time";

/// The entity time module.
pub struct EntityTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats epoch milliseconds as an XEP-0082 UTC `DateTime` with milliseconds,
/// e.g. `2002-09-10T23:08:25.000Z`.
pub fn utc_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[async_trait]
impl Module for EntityTime {
    fn name(&self) -> &'static str {
        "time"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_TIME]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_TIME, "time")]
    }

    async fn handle_iq(&self, _server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        let mut tzo = Element::bare("tzo", NS_TIME);
        tzo.append_text("+00:00");
        let mut utc = Element::bare("utc", NS_TIME);
        utc.append_text(utc_stamp(now_ms()));
        Ok(Some(
            Element::builder("time", NS_TIME)
                .append(tzo)
                .append(utc)
                .build(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(utc_stamp(0), "1970-01-01T00:00:00.000Z");
        // XEP-0082 example instant 1969-07-21T02:56:15Z, before the epoch.
        assert_eq!(utc_stamp(-14_159_025_000), "1969-07-21T02:56:15.000Z");
        assert_eq!(utc_stamp(1_031_699_305_123), "2002-09-10T23:08:25.123Z");
        // A leap day.
        assert_eq!(utc_stamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_stamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }
}
