//! Time in one unit: milliseconds since the Unix epoch, UTC (`i64`).
//!
//! Every instant inside the program is an `i64` of ms since 1970-01-01T00:00:00Z; conversions
//! happen only at the edges: the CLI/pipeline dates (`2026-01-31`, RFC 3339, `today`,
//! `yesterday`, `today-7d`), window lengths (`1d`, `6h`), the API's timestamp strings (see
//! `engati::wire`), and output formatting (RFC 3339 with milliseconds, `YYYY-MM-DD` partitions).
//! Calendar arithmetic uses the proleptic Gregorian calendar (Howard Hinnant's
//! `days_from_civil`), tested against `jiff`.

use std::fmt::Write as _;

/// Milliseconds in one day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian). `month` is 1..=12.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `(year, month, day)` of a day number (days since 1970-01-01).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days in a month of a year (Gregorian leap years).
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// The UTC day number of an instant (floor division, correct before 1970 too).
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// Appends `YYYY-MM-DD` (the UTC date of `ms`) to `out`.
pub fn push_date(out: &mut String, ms: i64) {
    let (y, m, d) = civil_from_days(day_of(ms));
    let _ = write!(out, "{y:04}-{m:02}-{d:02}");
}

/// `YYYY-MM-DD`, the UTC date of `ms`: the Hive partition value `date=...`.
pub fn date_string(ms: i64) -> String {
    let mut s = String::with_capacity(10);
    push_date(&mut s, ms);
    s
}

/// Appends RFC 3339 UTC with milliseconds (`2026-08-12T08:33:27.512Z`) to `out`.
pub fn push_rfc3339_ms(out: &mut Vec<u8>, ms: i64) {
    let (y, m, d) = civil_from_days(day_of(ms));
    let in_day = ms.rem_euclid(DAY_MS);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (mi, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    let mut buf = [0u8; 24];
    let year = y.clamp(0, 9999) as u32;
    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], m);
    buf[7] = b'-';
    put_digits(&mut buf[8..10], d);
    buf[10] = b'T';
    put_digits(&mut buf[11..13], h as u32);
    buf[13] = b':';
    put_digits(&mut buf[14..16], mi as u32);
    buf[16] = b':';
    put_digits(&mut buf[17..19], s as u32);
    buf[19] = b'.';
    put_digits(&mut buf[20..23], milli as u32);
    buf[23] = b'Z';
    out.extend_from_slice(&buf);
}

/// RFC 3339 UTC with milliseconds, as a `String`.
pub fn rfc3339_ms(ms: i64) -> String {
    let mut v = Vec::with_capacity(24);
    push_rfc3339_ms(&mut v, ms);
    String::from_utf8(v).unwrap_or_default()
}

/// Parses exactly what [`push_rfc3339_ms`] writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`, 24 bytes,
/// UTC) back into ms since epoch UTC: the inverse of the writer, nothing more, so that reading
/// our own output (exactly-once replacement, `verify`) never depends on how lenient the API's
/// timestamp parser is. Returns `None` for any other text.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    for (i, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        if b[i] != sep {
            return None;
        }
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, milli) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(i64::from(y), m) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let day = days_from_civil(i64::from(y), m, d);
    Some(
        day * DAY_MS
            + i64::from(h) * 3_600_000
            + i64::from(mi) * 60_000
            + i64::from(sec) * 1000
            + i64::from(milli),
    )
}

fn put_digits(out: &mut [u8], mut v: u32) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Why a date or duration given by the user was refused. The message names the input and the
/// accepted forms; callers add the name of the flag or key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeInputError {
    /// Not a date, an RFC 3339 timestamp, nor a relative day.
    #[error(
        "`{0}` is not a date: use YYYY-MM-DD (UTC midnight), an RFC 3339 timestamp such as 2026-01-31T10:00:00Z, or today / yesterday / today-7d"
    )]
    BadDate(String),
    /// Not a duration such as `1d`, `6h`, `30m`.
    #[error("`{0}` is not a duration: use a whole number with a unit, e.g. 1d, 6h, 30m, 90s")]
    BadDuration(String),
    /// A duration of zero or less.
    #[error("`{0}` must be longer than zero")]
    NotPositive(String),
}

/// Parses a date given by a user into ms since epoch (UTC).
///
/// Accepted: `YYYY-MM-DD` (UTC midnight); an RFC 3339 / ISO 8601 timestamp with an offset
/// (`2026-01-31T10:00:00Z`, `2026-01-31T15:30:00+05:30`); `now`; `today` (UTC midnight of
/// `now_ms`), `yesterday`, and `today-Nd` / `today+Nd`.
///
/// # Errors
/// [`TimeInputError::BadDate`] naming the input.
pub fn parse_user_instant(input: &str, now_ms: i64) -> Result<i64, TimeInputError> {
    let s = input.trim();
    let bad = || TimeInputError::BadDate(input.to_owned());
    let today = day_of(now_ms) * DAY_MS;
    match s {
        "now" => return Ok(now_ms),
        "today" => return Ok(today),
        "yesterday" => return Ok(today - DAY_MS),
        "tomorrow" => return Ok(today + DAY_MS),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("today") {
        let (sign, num) = match rest.as_bytes().first() {
            Some(b'-') => (-1, &rest[1..]),
            Some(b'+') => (1, &rest[1..]),
            _ => return Err(bad()),
        };
        let d = parse_duration_ms(num).map_err(|_| bad())?;
        return Ok(today + sign * d);
    }
    if s.len() == 10 {
        let ts: jiff::civil::Date = s.parse().map_err(|_| bad())?;
        return Ok(
            days_from_civil(i64::from(ts.year()), ts.month() as u32, ts.day() as u32) * DAY_MS,
        );
    }
    let ts: jiff::Timestamp = s.parse().map_err(|_| bad())?;
    Ok(ts.as_millisecond())
}

/// Parses a duration such as `1d`, `6h`, `30m`, `90s`, `500ms` (one number, one unit) into ms.
/// Days are 24 hours (UTC has no daylight saving).
///
/// # Errors
/// [`TimeInputError::BadDuration`] or [`TimeInputError::NotPositive`].
pub fn parse_duration_ms(input: &str) -> Result<i64, TimeInputError> {
    let s = input.trim();
    let bad = || TimeInputError::BadDuration(input.to_owned());
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" => 1000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => DAY_MS,
        "w" | "week" | "weeks" => 7 * DAY_MS,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if ms <= 0 {
        return Err(TimeInputError::NotPositive(input.to_owned()));
    }
    Ok(ms)
}

/// Formats a duration in ms the way [`parse_duration_ms`] reads it (`1d`, `6h`, `90s`).
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, size) in [
        ("w", 7 * DAY_MS),
        ("d", DAY_MS),
        ("h", 3_600_000),
        ("m", 60_000),
    ] {
        if ms % size == 0 && ms >= size {
            return format!("{}{unit}", ms / size);
        }
    }
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Now, in ms since epoch UTC, from the system clock.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rfc3339_ms_inverts_the_writer_and_nothing_else() {
        for ms in [
            0,
            1,
            999,
            DAY_MS - 1,
            1_754_006_400_000,
            1_790_000_000_123,
            253_402_300_799_999,
        ] {
            assert_eq!(parse_rfc3339_ms(&rfc3339_ms(ms)), Some(ms), "{ms}");
        }
        for bad in [
            "2026-08-12T08:33:27.512+00:00",
            "2026-08-12 08:33:27.512Z",
            "2026-08-12T08:33:27Z",
            "2026-02-30T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-08-12T24:00:00.000Z",
            "2026-08-12T08:33:27.5120Z",
            "",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn civil_conversions_match_jiff_over_a_wide_range() {
        for days in (-800_000i64..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            let j = jiff::Timestamp::from_second(days * 86_400)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC);
            assert_eq!(
                (y, m, d),
                (i64::from(j.year()), j.month() as u32, j.day() as u32)
            );
        }
    }

    #[test]
    fn rfc3339_output_has_milliseconds_and_z() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_786_523_607_512), "2026-08-12T08:33:27.512Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(date_string(1_786_523_607_512), "2026-08-12");
    }

    #[test]
    fn user_dates_accept_dates_timestamps_and_relative_days() {
        let now = parse_user_instant("2026-11-22T13:45:00Z", 0).unwrap();
        assert_eq!(
            parse_user_instant("2026-01-31", now).unwrap(),
            days_from_civil(2026, 1, 31) * DAY_MS
        );
        assert_eq!(
            parse_user_instant("2026-01-31T05:30:00+05:30", now).unwrap(),
            days_from_civil(2026, 1, 31) * DAY_MS
        );
        assert_eq!(
            parse_user_instant("today", now).unwrap(),
            days_from_civil(2026, 11, 22) * DAY_MS
        );
        assert_eq!(
            parse_user_instant("yesterday", now).unwrap(),
            days_from_civil(2026, 11, 21) * DAY_MS
        );
        assert_eq!(
            parse_user_instant("today-7d", now).unwrap(),
            days_from_civil(2026, 11, 15) * DAY_MS
        );
        let err = parse_user_instant("31/01/2026", now).unwrap_err();
        assert!(err.to_string().contains("31/01/2026"));
        assert!(parse_user_instant("2026-02-30", now).is_err());
    }

    #[test]
    fn durations_parse_units_and_refuse_zero() {
        assert_eq!(parse_duration_ms("1d").unwrap(), DAY_MS);
        assert_eq!(parse_duration_ms("6h").unwrap(), 6 * 3_600_000);
        assert_eq!(parse_duration_ms("30m").unwrap(), 1_800_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert!(matches!(
            parse_duration_ms("0d"),
            Err(TimeInputError::NotPositive(_))
        ));
        assert!(parse_duration_ms("1 fortnight").is_err());
        assert!(parse_duration_ms("d").is_err());
        assert_eq!(format_duration_ms(DAY_MS), "1d");
        assert_eq!(format_duration_ms(90_000), "90s");
    }
}
