//! The Engati wire format, read tolerantly (docs/engati-api.md, "Users API", "Conversations API").
//!
//! Nothing here is normalized: these are the JSON shapes exactly as the API sends them, parsed
//! with as little copying as possible. A Conversations page is parsed in two steps: the
//! envelope yields each message's raw JSON text as a byte range of the response body
//! ([`parse_conversations_page`]); each message is then read into a borrowed [`WireMessage`]
//! whose strings point into the body unless they contain JSON escapes.
//!
//! Tolerance rules (docs/engati-api.md): the message list is under `conversations` or `messages`
//! (configurable) or is the top-level array; the Users list has documented variants
//! ([`parse_users`], read as a stream by [`users_wire`](super::users_wire)); an unrecognised shape is an error naming the keys looked for and found,
//! never an empty result.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

pub use super::users_wire::{UsersKeys, parse_users};
pub use super::wire_message::{WireFile, WireMedia, WireMessage};
use crate::time::{DAY_MS, days_from_civil, days_in_month};

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or JSON cut short (a truncated body: retryable, the next attempt may be
    /// whole; anything else is not).
    #[error("response body is not valid JSON ({detail}); {len} bytes received{}", if *.truncated { " (cut short)" } else { "" })]
    Syntax {
        /// serde_json's message (line/column of the fault).
        detail: String,
        /// Body length in bytes.
        len: usize,
        /// True when the body ended in the middle of the JSON (a truncated transfer).
        truncated: bool,
    },
    /// Valid JSON but not a shape we know. Not retryable: configure the key names.
    #[error("unexpected response shape at `{path}`: looked for {looked_for}, found {found}")]
    Shape {
        /// JSON path of the value inspected (`$`, `$.responseObject`, `$.users[3]`).
        path: String,
        /// The keys or shapes that were tried.
        looked_for: String,
        /// What the body had instead (its keys, or its JSON type).
        found: String,
    },
}

impl DecodeError {
    /// True for a body cut short (a truncated transfer), which is worth retrying; a body that
    /// is not JSON will not become JSON.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DecodeError::Syntax {
                truncated: true,
                ..
            }
        )
    }

    pub(crate) fn syntax(err: &serde_json::Error, len: usize) -> Self {
        DecodeError::Syntax {
            detail: err.to_string(),
            len,
            truncated: err.is_eof(),
        }
    }
}

/// A borrowed-or-owned string: borrowed from the body when the JSON string has no escapes.
/// Numbers and booleans are accepted and rendered as text (ids are sometimes numeric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl<'a> Text<'a> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a raw JSON value that should be a string: the decoded string (borrowed when it has no
/// escapes), `None` for `null`, or the raw JSON text itself for any other type.
pub fn raw_as_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s = raw.get();
    match s.as_bytes().first() {
        // A string without escapes is its own text between the quotes: no parser needed.
        Some(b'"') if s.len() >= 2 && !s.as_bytes().contains(&b'\\') => {
            Some(Cow::Borrowed(&s[1..s.len() - 1]))
        }
        Some(b'"') => match serde_json::from_str::<Text<'_>>(s) {
            Ok(t) => Some(t.0),
            Err(_) => Some(Cow::Borrowed(s)),
        },
        Some(b'n') if s == "null" => None,
        _ => Some(Cow::Borrowed(s)),
    }
}

/// Finds the message list of a Conversations page and returns the byte range of each message's
/// raw JSON within `body`, in order.
///
/// `list_keys` are tried in order (default `conversations`, then `messages`); a top-level array
/// is accepted too; `null` under a list key is an empty page.
///
/// # Errors
/// [`DecodeError::Syntax`] for bodies that are not JSON (truncated), [`DecodeError::Shape`]
/// naming the keys looked for and found.
pub fn parse_conversations_page(
    body: &[u8],
    list_keys: &[String],
) -> Result<Vec<Range<usize>>, DecodeError> {
    match std::str::from_utf8(body) {
        Ok(text) => parse_conversations_str(text, list_keys),
        // Not UTF-8: serde_json names the fault (and whether the body was cut short).
        Err(_) => {
            parse_conversations_json(serde_json::Deserializer::from_slice(body), body, list_keys)
        }
    }
}

/// [`parse_conversations_page`] of a body already known to be UTF-8: the raw message objects
/// are not validated again (the byte-slice reader checks each one's UTF-8 once more).
///
/// # Errors
/// As [`parse_conversations_page`].
pub fn parse_conversations_str(
    body: &str,
    list_keys: &[String],
) -> Result<Vec<Range<usize>>, DecodeError> {
    parse_conversations_json(
        serde_json::Deserializer::from_str(body),
        body.as_bytes(),
        list_keys,
    )
}

fn parse_conversations_json<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    body: &'de [u8],
    list_keys: &[String],
) -> Result<Vec<Range<usize>>, DecodeError> {
    let found = EnvelopeSeed { list_keys }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| DecodeError::syntax(&e, body.len()))?;
    let items = match found {
        Envelope::List(items) => items,
        Envelope::Missing(found) => {
            return Err(DecodeError::Shape {
                path: "$".into(),
                looked_for: format!(
                    "a list under {} (or a top-level array)",
                    quoted_list(list_keys)
                ),
                found,
            });
        }
    };
    let base = body.as_ptr() as usize;
    Ok(items
        .into_iter()
        .map(|raw| {
            let start = raw.get().as_ptr() as usize - base;
            start..start + raw.get().len()
        })
        .collect())
}

pub(crate) fn quoted_list(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(" or ")
}

enum Envelope<'a> {
    List(Vec<&'a RawValue>),
    Missing(String),
}

struct EnvelopeSeed<'k> {
    list_keys: &'k [String],
}

impl<'de, 'k> DeserializeSeed<'de> for EnvelopeSeed<'k> {
    type Value = Envelope<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'k> Visitor<'de> for EnvelopeSeed<'k> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a message list, or an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(64));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(Envelope::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Best match so far: index into list_keys (lower is better) and the list.
        let mut best: Option<(usize, Vec<&'de RawValue>)> = None;
        let mut seen: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let rank = self.list_keys.iter().position(|k| k == key.as_str());
            match rank {
                Some(r) if best.as_ref().is_none_or(|(b, _)| r < *b) => {
                    let list: Option<Vec<&'de RawValue>> = map.next_value()?;
                    best = Some((r, list.unwrap_or_default()));
                }
                _ => {
                    if seen.len() < 20 {
                        seen.push(key.as_str().to_owned());
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(match best {
            Some((_, list)) => Envelope::List(list),
            None => Envelope::Missing(if seen.is_empty() {
                "an empty object".to_owned()
            } else {
                format!("keys {}", seen.join(", "))
            }),
        })
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("a string".into()))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("a number".into()))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("a number".into()))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("a number".into()))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("a boolean".into()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Envelope::Missing("null".into()))
    }
}

/// Why a message timestamp could not be read (the reason written to the dead-letter file).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TimestampError {
    /// No `timestamp` field, or `null`.
    #[error("message has no timestamp")]
    Missing,
    /// Not one of the documented forms.
    #[error(
        "timestamp `{0}` is not in a known form (yyyy-MM-dd HH:mm:ss.SSS+HHMM, yyyy/MM/dd ..., RFC 3339, or epoch ms)"
    )]
    Unparseable(String),
    /// A date-time without a UTC offset: which zone it is in is unknown.
    #[error("timestamp `{0}` has no UTC offset, so the instant is ambiguous")]
    NoOffset(String),
}

/// Reads a message timestamp into ms since epoch UTC.
///
/// Forms (docs/engati-api.md, "Conversations API"): `2026-08-12 14:03:27.512+0530` (space, ms,
/// offset without colon), `2026/08/12 14:03:27.512+0530`; tolerated too: `T` separator, 0–9
/// fraction digits (truncated to ms), offsets `Z`, `+05:30`, `+05`; a JSON number or digit
/// string of epoch ms (or seconds when below 10^11).
///
/// # Errors
/// [`TimestampError`] naming the value.
pub fn parse_timestamp(raw: Option<&RawValue>) -> Result<i64, TimestampError> {
    let raw = raw.ok_or(TimestampError::Missing)?;
    let text = raw_as_text(raw).ok_or(TimestampError::Missing)?;
    let s = text.trim();
    if s.is_empty() {
        return Err(TimestampError::Missing);
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s
            .parse()
            .map_err(|_| TimestampError::Unparseable(s.to_owned()))?;
        return Ok(if n < 100_000_000_000 { n * 1000 } else { n });
    }
    parse_datetime(s)
}

/// Reads a timestamp string (the forms of [`parse_timestamp`], without JSON quoting) into ms
/// since epoch UTC; used to read back `sent_at` from JSONL output.
///
/// # Errors
/// [`TimestampError`] naming the value.
pub fn parse_datetime(s: &str) -> Result<i64, TimestampError> {
    let bad = || TimestampError::Unparseable(s.to_owned());
    let b = s.as_bytes();
    let num = |r: Range<usize>| -> Result<u32, TimestampError> {
        let part = b.get(r).ok_or_else(bad)?;
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0')))
        } else {
            Err(bad())
        }
    };
    if b.len() < 19 {
        return Err(bad());
    }
    let sep = b[4];
    if !(sep == b'-' || sep == b'/') || b[7] != sep || !(b[10] == b' ' || b[10] == b'T') {
        return Err(bad());
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(i64::from(year), month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let mut i = 19;
    let mut millis = 0u32;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = match b.get(i) {
        None => return Err(TimestampError::NoOffset(s.to_owned())),
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &s[i + 1..];
            let (h, m) = match rest.len() {
                2 => (num(i + 1..i + 3)?, 0),
                4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                5 if rest.as_bytes()[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                _ => return Err(bad()),
            };
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let total = i64::from(h * 60 + m);
            if sign == b'-' { -total } else { total }
        }
        Some(_) => return Err(bad()),
    };
    let days = days_from_civil(i64::from(year), month, day);
    let local_ms = days * DAY_MS
        + i64::from(hour) * 3_600_000
        + i64::from(minute) * 60_000
        + i64::from(second) * 1000
        + i64::from(millis);
    Ok(local_ms - offset_min * 60_000)
}

pub(crate) fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The loose reading of an error body: Engati's `{"status": {"code", "desc"}, "error_details"}`
/// or RFC 7807 `{"title", "detail", "status"}`; whatever is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// Engati's numeric code (1002, 1003, 1004), when present.
    pub code: Option<i64>,
    /// The symbolic name (`INVALID_PAGE_NUMBER`) or RFC 7807 title.
    pub name: Option<String>,
    /// The sentence (`error_details`, RFC 7807 `detail`).
    pub details: Option<String>,
}

impl ErrorBody {
    /// Parses any body loosely; never fails (an HTML page gives an empty `ErrorBody`).
    pub fn parse(body: &[u8]) -> Self {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(body)
        else {
            return ErrorBody::default();
        };
        let status = obj.get("status");
        let code = status
            .and_then(|s| s.get("code"))
            .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
        let name = status
            .and_then(|s| s.get("desc").or_else(|| s.get("message")))
            .and_then(scalar_text)
            .or_else(|| obj.get("title").and_then(scalar_text));
        let details = obj
            .get("error_details")
            .or_else(|| obj.get("detail"))
            .or_else(|| obj.get("message"))
            .and_then(scalar_text);
        ErrorBody {
            code,
            name,
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Result<i64, TimestampError> {
        let json = serde_json::to_string(s).unwrap();
        let raw = RawValue::from_string(json).unwrap();
        parse_timestamp(Some(&raw))
    }

    #[test]
    fn reads_every_documented_timestamp_form() {
        // 2026-08-12 14:03:27.512 +05:30 == 08:33:27.512Z
        let want = crate::time::days_from_civil(2026, 8, 12) * DAY_MS + 30_807_512;
        assert_eq!(ts("2026-08-12 14:03:27.512+0530"), Ok(want));
        assert_eq!(ts("2026/08/12 14:03:27.512+0530"), Ok(want));
        assert_eq!(ts("2026-08-12T14:03:27.512+05:30"), Ok(want));
        assert_eq!(ts("2026-08-12T08:33:27.512Z"), Ok(want));
        assert_eq!(ts("2026-08-12 08:33:27.512123Z"), Ok(want));
        assert_eq!(ts("2026-08-12 03:33:27.512-0500"), Ok(want));
        assert_eq!(ts("2026-08-12 08:33:27.5+00"), Ok(want - 12));
        assert_eq!(ts(&want.to_string()), Ok(want));
        let raw = RawValue::from_string(want.to_string()).unwrap();
        assert_eq!(parse_timestamp(Some(&raw)), Ok(want));
    }

    #[test]
    fn refuses_ambiguous_or_broken_timestamps() {
        assert!(matches!(
            ts("2026-08-12 14:03:27.512"),
            Err(TimestampError::NoOffset(_))
        ));
        assert!(matches!(
            ts("12-08-2026 14:03"),
            Err(TimestampError::Unparseable(_))
        ));
        assert!(matches!(
            ts("2026-02-30 10:00:00.000+0000"),
            Err(TimestampError::Unparseable(_))
        ));
        assert!(matches!(ts(""), Err(TimestampError::Missing)));
        assert_eq!(parse_timestamp(None), Err(TimestampError::Missing));
    }

    #[test]
    fn page_envelope_finds_the_list_and_keeps_raw_bytes() {
        let body = br#"{"meta":1,"conversations":[{"a":1},{"b":"x\"y"}]}"#;
        let keys = vec!["conversations".to_string(), "messages".to_string()];
        let spans = parse_conversations_page(body, &keys).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(&body[spans[1].clone()], br#"{"b":"x\"y"}"#);
        let bare = br#"[{"a":1}]"#;
        assert_eq!(parse_conversations_page(bare, &keys).unwrap().len(), 1);
        let msgs = br#"{"messages":[]}"#;
        assert_eq!(parse_conversations_page(msgs, &keys).unwrap().len(), 0);
    }

    #[test]
    fn page_envelope_errors_name_the_keys() {
        let keys = vec!["conversations".to_string(), "messages".to_string()];
        let err = parse_conversations_page(br#"{"data":[1]}"#, &keys).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`conversations`") && text.contains("data"),
            "{text}"
        );
        assert!(!err.is_retryable());
        let trunc = parse_conversations_page(br#"{"conversations":[{"a":"#, &keys).unwrap_err();
        assert!(trunc.is_retryable());
    }

    #[test]
    fn error_bodies_are_read_loosely() {
        let b = ErrorBody::parse(
            br#"{"status":{"code":1004,"desc":"INVALID_PAGE_NUMBER"},"error_details":"page must be >= 1"}"#,
        );
        assert_eq!(b.code, Some(1004));
        assert_eq!(b.name.as_deref(), Some("INVALID_PAGE_NUMBER"));
        let p = ErrorBody::parse(br#"{"type":"about:blank","title":"Unauthorized","status":401}"#);
        assert_eq!(p.name.as_deref(), Some("Unauthorized"));
        assert_eq!(ErrorBody::parse(b"<html>502</html>"), ErrorBody::default());
    }
}
