//! The archive query payload, parsed without I/O: the XEP-0004 form of XEP-0313 §4.1
//! (`with`, `start`, `end`, and the `urn:xmpp:mam:2#extended` fields `before-id`, `after-id`,
//! `ids`), the XEP-0059 `<set/>` (`max`, `after`, `before`, empty `<before/>` for the last
//! page), `<flip-page/>` (§4.3.4) and `queryid`. Also XEP-0082 `DateTime` parsing for
//! `start`/`end`.
//!
//! What is refused, with the condition XEP-0313 names: an unknown form field
//! (`feature-not-implemented`, §4.1.5), an RSM `<index/>` (XEP-0059 §2.6 lets a responder
//! refuse it with `feature-not-implemented`), malformed dates, JIDs or numbers and a
//! `FORM_TYPE` other than `urn:xmpp:mam:2` (`bad-request`).

use minidom::Element;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::Attr;

/// The MAM namespace.
pub const NS_MAM: &str = "urn:xmpp:mam:2";
/// Data forms (XEP-0004).
pub const NS_DATA: &str = "jabber:x:data";
/// Result Set Management (XEP-0059).
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// Which page of the matching items the client asked for (XEP-0059).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Page {
    /// The first page (no `<after/>`/`<before/>`).
    #[default]
    First,
    /// The page following the item with this id (`<after>id</after>`).
    After(String),
    /// The page preceding the item with this id (`<before>id</before>`).
    Before(String),
    /// The last page (`<before/>` empty).
    Last,
}

/// A parsed `<query xmlns='urn:xmpp:mam:2'/>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MamQuery {
    /// Echoed in every `<result/>` (§4.2).
    pub queryid: Option<String>,
    /// `with`: the other party; bare matches every resource (§4.1.1).
    pub with: Option<Jid>,
    /// `start`, epoch milliseconds, inclusive.
    pub start_ms: Option<i64>,
    /// `end`, epoch milliseconds, inclusive.
    pub end_ms: Option<i64>,
    /// `after-id`: only items after this one.
    pub after_id: Option<String>,
    /// `before-id`: only items before this one.
    pub before_id: Option<String>,
    /// `ids`: only these items (every one must exist, §4.1.3).
    pub ids: Option<Vec<String>>,
    /// RSM `<max/>`; `None` means the server's page size.
    pub max: Option<usize>,
    /// RSM paging.
    pub page: Page,
    /// `<flip-page/>`: send the page newest first.
    pub flip: bool,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::with_text(Cond::BadRequest, text)
}

fn values(field: &Element) -> impl Iterator<Item = String> + '_ {
    field
        .children()
        .filter(|c| c.is("value", NS_DATA))
        .map(|v| v.text())
}

fn single(field: &Element) -> Result<Option<String>, StanzaError> {
    let mut it = values(field);
    let first = it.next();
    if it.next().is_some() {
        return Err(bad("a single-value field has several values"));
    }
    Ok(first.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
}

/// Parses a query payload.
pub fn parse(query: &Element) -> Result<MamQuery, StanzaError> {
    let mut q = MamQuery {
        queryid: query.attribute("queryid").map(str::to_owned),
        ..MamQuery::default()
    };
    if let Some(form) = query.get_child("x", NS_DATA) {
        if !matches!(form.attribute("type"), Some("submit") | None) {
            return Err(bad("the query form must be of type 'submit'"));
        }
        for field in form.children().filter(|c| c.is("field", NS_DATA)) {
            let var = field.attribute("var").unwrap_or_default();
            match var {
                "FORM_TYPE" => {
                    if single(field)?.as_deref() != Some(NS_MAM) {
                        return Err(bad("FORM_TYPE must be urn:xmpp:mam:2"));
                    }
                }
                "with" => {
                    q.with = match single(field)? {
                        Some(v) => Some(Jid::parse(&v).map_err(|_| bad("'with' is not a JID"))?),
                        None => None,
                    }
                }
                "start" => q.start_ms = single(field)?.map(|v| date(&v)).transpose()?,
                "end" => q.end_ms = single(field)?.map(|v| date(&v)).transpose()?,
                "after-id" => q.after_id = single(field)?,
                "before-id" => q.before_id = single(field)?,
                "ids" => {
                    let ids: Vec<String> = values(field)
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                        .collect();
                    q.ids = Some(ids);
                }
                _ => {
                    return Err(StanzaError::with_text(
                        Cond::FeatureNotImplemented,
                        format!("unknown query field '{var}'"),
                    ))
                }
            }
        }
    }
    if let Some(set) = query.get_child("set", NS_RSM) {
        if set.get_child("index", NS_RSM).is_some() {
            return Err(StanzaError::with_text(
                Cond::FeatureNotImplemented,
                "RSM <index/> is not supported; page with <after/> and <before/>",
            ));
        }
        if let Some(max) = set.get_child("max", NS_RSM) {
            let n = max
                .text()
                .trim()
                .parse::<usize>()
                .map_err(|_| bad("RSM <max/> is not a number"))?;
            q.max = Some(n);
        }
        let after = set.get_child("after", NS_RSM).map(|e| e.text());
        let before = set.get_child("before", NS_RSM).map(|e| e.text());
        q.page = match (after, before) {
            (Some(_), Some(_)) => {
                // XEP-0313 §4.3.2: undefined by RSM; before-id/after-id do this job.
                return Err(bad(
                    "RSM <after/> and <before/> together; use after-id/before-id",
                ));
            }
            (Some(a), None) if a.trim().is_empty() => {
                return Err(bad("RSM <after/> must name an id"));
            }
            (Some(a), None) => Page::After(a.trim().to_owned()),
            (None, Some(b)) if b.trim().is_empty() => Page::Last,
            (None, Some(b)) => Page::Before(b.trim().to_owned()),
            (None, None) => Page::First,
        };
    }
    q.flip = query.get_child("flip-page", NS_MAM).is_some();
    Ok(q)
}

fn date(s: &str) -> Result<i64, StanzaError> {
    parse_datetime(s).ok_or_else(|| bad("not an XEP-0082 DateTime"))
}

/// Parses an XEP-0082 `DateTime` (`CCYY-MM-DDThh:mm:ss[.sss…](Z|±hh:mm)`) to epoch
/// milliseconds; digits beyond milliseconds are dropped.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i..)? {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + millis)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of Howard Hinnant's
/// `civil_from_days`, which `crate::time` uses to format stamps).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::utc_stamp;

    fn q(s: &str) -> Result<MamQuery, StanzaError> {
        parse(&s.parse::<Element>().unwrap())
    }

    fn form(fields: &str) -> String {
        format!(
            "<query xmlns='urn:xmpp:mam:2' queryid='f27'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{fields}</x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>10</max><before/></set><flip-page/></query>"
        )
    }

    #[test]
    fn parses_every_field() {
        let parsed = q(&form(
            "<field var='with'><value>juliet@capulet.lit</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
             <field var='end'><value>2010-07-07T13:23:54.5+02:00</value></field>\
             <field var='after-id'><value>a</value></field>\
             <field var='before-id'><value>b</value></field>\
             <field var='ids'><value>x</value><value>y</value></field>",
        ))
        .unwrap();
        assert_eq!(parsed.queryid.as_deref(), Some("f27"));
        assert_eq!(parsed.with.unwrap().as_str(), "juliet@capulet.lit");
        assert_eq!(
            utc_stamp(parsed.start_ms.unwrap()),
            "2010-06-07T00:00:00.000Z"
        );
        assert_eq!(
            utc_stamp(parsed.end_ms.unwrap()),
            "2010-07-07T11:23:54.500Z"
        );
        assert_eq!(parsed.after_id.as_deref(), Some("a"));
        assert_eq!(parsed.before_id.as_deref(), Some("b"));
        assert_eq!(parsed.ids.unwrap(), ["x", "y"]);
        assert_eq!(parsed.max, Some(10));
        assert_eq!(parsed.page, Page::Last);
        assert!(parsed.flip);
    }

    #[test]
    fn empty_query_is_everything() {
        let parsed = q("<query xmlns='urn:xmpp:mam:2'/>").unwrap();
        assert_eq!(parsed, MamQuery::default());
        let paged = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <after>abc</after></set></query>",
        )
        .unwrap();
        assert_eq!(paged.page, Page::After("abc".into()));
        let back = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <before>abc</before></set></query>",
        )
        .unwrap();
        assert_eq!(back.page, Page::Before("abc".into()));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let cond = |s: &str| q(s).unwrap_err().condition;
        assert_eq!(
            cond(&form(
                "<field var='{urn:x}full-text'><value>x</value></field>"
            )),
            Cond::FeatureNotImplemented
        );
        assert_eq!(
            cond(&form("<field var='start'><value>yesterday</value></field>")),
            Cond::BadRequest
        );
        assert_eq!(
            cond(&form("<field var='with'><value>@@</value></field>")),
            Cond::BadRequest
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
                 <field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>"
            ),
            Cond::BadRequest
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                 <index>3</index></set></query>"
            ),
            Cond::FeatureNotImplemented
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
                 <max>ten</max></set></query>"
            ),
            Cond::BadRequest
        );
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(
            parse_datetime("2002-09-10T23:08:25.123456Z"),
            Some(1_031_699_305_123)
        );
        assert_eq!(
            parse_datetime("2000-02-29T00:00:00.000Z"),
            Some(951_782_400_000)
        );
        // The inverse of the formatter, across centuries.
        for ms in [-14_159_025_000, 0, 4_102_444_799_999, 1_700_000_000_007] {
            assert_eq!(parse_datetime(&utc_stamp(ms)), Some(ms));
        }
        for bad in [
            "",
            "2001-02-29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-01-01 00:00:00Z",
            "2000-01-01T00:00:00",
            "2000-01-01T00:00:00.Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01T00:00:00+0100",
            "2000-01-01T00:00:00Zjunk",
            "２000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        // Parsed once per query; kept small enough to pass around by value.
        assert!(std::mem::size_of::<MamQuery>() <= 256);
    }
}
