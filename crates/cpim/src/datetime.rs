//! Timestamps: the RFC 3339 `date-time` used by the Message/CPIM `DateTime` header (RFC 3862
//! §4.4), the PIDF `<timestamp>` element (RFC 3863 §4.1.7) and the XEP-0203 `stamp` attribute
//! (XEP-0082 profile, which is the same grammar).
//!
//! The library has no clock: callers pass "now" in as a [`DateTime`] built with
//! [`DateTime::from_unix_millis`]. A parsed value keeps the offset and the number of fractional
//! digits it was written with, so `parse(s).to_string() == s` for every canonical `s`
//! (upper-case `T`/`Z`); [`DateTime::to_utc`] gives the `Z` form XEP-0203 wants.

use std::fmt;

/// A validated RFC 3339 `date-time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    /// 0..=60: RFC 3339 allows a leap second.
    second: u8,
    /// Fraction of the second in nanoseconds.
    nanos: u32,
    /// How many fraction digits to print (0 = no fraction); at most 9.
    frac_digits: u8,
    /// `None` = `Z`; `Some(m)` = a numeric offset of `m` minutes (`+00:00` is kept apart from `Z`).
    offset_minutes: Option<i16>,
}

/// Why a string is not an RFC 3339 `date-time`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 date-time: {0:?}")]
pub struct DateTimeError(pub String);

impl DateTime {
    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)` (RFC 3339 §5.6; `t`/`z` accepted).
    pub fn parse(s: &str) -> Result<Self, DateTimeError> {
        let err = || DateTimeError(s.to_owned());
        let b = s.as_bytes();
        if b.len() < 20 || !b.is_ascii() {
            return Err(err());
        }
        let num = |from: usize, len: usize| -> Result<u32, DateTimeError> {
            let part = &b[from..from + len];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(err());
            }
            Ok(part
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
        };
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(err());
        }
        let year = num(0, 4)?;
        let month = num(5, 2)?;
        let day = num(8, 2)?;
        let hour = num(11, 2)?;
        let minute = num(14, 2)?;
        let second = num(17, 2)?;
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(err());
        }
        let mut i = 19;
        let mut nanos = 0u32;
        let mut frac_digits = 0u8;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + u32::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 || n > 9 {
                return Err(err());
            }
            frac_digits = n as u8;
            nanos *= 10u32.pow(9 - n as u32);
        }
        let offset_minutes = match &b[i..] {
            [b'Z' | b'z'] => None,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let digits = [*h1, *h2, *m1, *m2];
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(err());
                }
                let h = i16::from(h1 - b'0') * 10 + i16::from(h2 - b'0');
                let m = i16::from(m1 - b'0') * 10 + i16::from(m2 - b'0');
                if h > 23 || m > 59 {
                    return Err(err());
                }
                let total = h * 60 + m;
                Some(if *sign == b'-' { -total } else { total })
            }
            _ => return Err(err()),
        };
        Ok(DateTime {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            nanos,
            frac_digits,
            offset_minutes,
        })
    }

    /// The UTC instant `ms` milliseconds after 1970-01-01T00:00:00Z, printed with three fraction
    /// digits (`2026-01-05T11:58:02.120Z`). This is how callers hand "now" to the library.
    pub fn from_unix_millis(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000) as u32;
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year: year.clamp(0, 9999) as u16,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            nanos: millis * 1_000_000,
            frac_digits: 3,
            offset_minutes: None,
        }
    }

    /// Milliseconds since the Unix epoch (sub-millisecond digits are truncated; a leap second
    /// counts as the first second of the next minute).
    pub fn unix_millis(&self) -> i64 {
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset_minutes.unwrap_or(0)) * 60;
        secs * 1000 + i64::from(self.nanos / 1_000_000)
    }

    /// The same instant written in UTC with `Z`, keeping the fraction digits.
    pub fn to_utc(&self) -> Self {
        let Some(offset) = self.offset_minutes else {
            return *self;
        };
        let local_secs = days_from_civil(i64::from(self.year), self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60;
        let utc = local_secs - i64::from(offset) * 60;
        let (year, month, day) = civil_from_days(utc.div_euclid(86_400));
        let rem = utc.rem_euclid(86_400);
        DateTime {
            year: year.clamp(0, 9999) as u16,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            offset_minutes: None,
            ..*self
        }
    }

    /// True when both denote the same instant, whatever their offsets.
    pub fn same_instant(&self, other: &DateTime) -> bool {
        let a = self.to_utc();
        let b = other.to_utc();
        (a.year, a.month, a.day, a.hour, a.minute, a.second, a.nanos)
            == (b.year, b.month, b.day, b.hour, b.minute, b.second, b.nanos)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if self.frac_digits > 0 {
            let digits = format!("{:09}", self.nanos);
            write!(f, ".{}", &digits[..usize::from(self.frac_digits)])?;
        }
        match self.offset_minutes {
            None => f.write_str("Z"),
            Some(m) => {
                let sign = if m < 0 { '-' } else { '+' };
                write!(f, "{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
            }
        }
    }
}

impl std::str::FromStr for DateTime {
    type Err = DateTimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse(s)
    }
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_rfc_examples() {
        // RFC 3862 §6 example and RFC 3339 §5.8 examples, printed back unchanged.
        for s in [
            "2000-12-13T13:40:00-08:00",
            "1985-04-12T23:20:50.52Z",
            "1996-12-19T16:39:57-08:00",
            "1990-12-31T23:59:60Z",
            "1937-01-01T12:00:27.87+00:20",
            "2003-12-09T11:45:36.66Z",
        ] {
            assert_eq!(DateTime::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn lower_case_separators_are_accepted_and_normalised() {
        let t = DateTime::parse("2001-10-27t16:49:29z").unwrap();
        assert_eq!(t.to_string(), "2001-10-27T16:49:29Z");
    }

    #[test]
    fn converts_offsets_to_utc() {
        // RFC 3339 §5.8: 1996-12-19T16:39:57-08:00 is 1996-12-20T00:39:57Z.
        let t = DateTime::parse("1996-12-19T16:39:57-08:00").unwrap();
        assert_eq!(t.to_utc().to_string(), "1996-12-20T00:39:57Z");
        assert!(t.same_instant(&DateTime::parse("1996-12-20T00:39:57Z").unwrap()));
    }

    #[test]
    fn unix_millis_round_trip() {
        // 2026-01-05T11:58:02.120Z, computed by hand: 20458 days * 86400 + 43082 s.
        let ms = (20_458i64 * 86_400 + 11 * 3600 + 58 * 60 + 2) * 1000 + 120;
        let t = DateTime::from_unix_millis(ms);
        assert_eq!(t.to_string(), "2026-01-05T11:58:02.120Z");
        assert_eq!(t.unix_millis(), ms);
        assert_eq!(
            DateTime::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2000-12-13",
            "2000-12-13T13:40:00",
            "2000-13-13T13:40:00Z",
            "2001-02-29T00:00:00Z",
            "2000-12-13T24:00:00Z",
            "2000-12-13T13:40:00.Z",
            "2000-12-13T13:40:00+0800",
            "2000-12-13 13:40:00Z",
            "2000-12-13T13:40:00.1234567890Z",
            "２000-12-13T13:40:00Z",
        ] {
            assert!(DateTime::parse(s).is_err(), "{s:?} accepted");
        }
        assert!(DateTime::parse("2000-02-29T00:00:00Z").is_ok());
    }
}
