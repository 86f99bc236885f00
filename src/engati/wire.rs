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
//! ([`parse_users`]); an unrecognised shape is an error naming the keys looked for and found,
//! never an empty result.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::User;
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

    fn syntax(err: &serde_json::Error, len: usize) -> Self {
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

/// One message as the Conversations API sends it (docs/engati-api.md, "Conversations API").
/// Every field is optional on the wire; unknown fields are ignored here and kept in the raw JSON.
#[derive(Debug, Deserialize)]
pub struct WireMessage<'a> {
    /// `"user"`, `"bot"`, `"agent"` or anything else (unknown values are data).
    #[serde(borrow, default)]
    pub sender: Option<Text<'a>>,
    /// `TEXT`, `OPTIONS`, `AGENT_PARTICIPATION_STATUS`, `FILE_RECEIVED`, media types, or other.
    #[serde(borrow, default)]
    pub message_type: Option<Text<'a>>,
    /// The content, normally a JSON string; kept raw so a non-string value survives verbatim.
    #[serde(borrow, default)]
    pub response: Option<&'a RawValue>,
    /// `yyyy-MM-dd HH:mm:ss.SSS±HHMM` (or with slashes), or a number of ms.
    #[serde(borrow, default)]
    pub timestamp: Option<&'a RawValue>,
    /// The message's own `user_id` (often a web session UUID).
    #[serde(borrow, default)]
    pub user_id: Option<Text<'a>>,
    /// `{"url", "mimeType", "uploadType"}` on FILE_RECEIVED, else null.
    #[serde(borrow, default)]
    pub file: Option<WireFile<'a>>,
    /// Fallback content some clients read (`m.response || m.text`).
    #[serde(borrow, default)]
    pub text: Option<Text<'a>>,
    /// Fallback media object some clients read (`m.media.value`, `m.media.mimeType`).
    #[serde(borrow, default)]
    pub media: Option<WireMedia<'a>>,
}

/// The `file` object of a FILE_RECEIVED message.
#[derive(Debug, Deserialize)]
pub struct WireFile<'a> {
    /// Download URL (its extension may be mangled by the platform's storage).
    #[serde(borrow, default)]
    pub url: Option<Text<'a>>,
    /// MIME type, `mimeType` on the wire (also read as `mime_type`).
    #[serde(borrow, default, rename = "mimeType", alias = "mime_type")]
    pub mime_type: Option<Text<'a>>,
}

/// The `media` fallback object.
#[derive(Debug, Deserialize)]
pub struct WireMedia<'a> {
    /// URL of the media.
    #[serde(borrow, default)]
    pub value: Option<Text<'a>>,
    /// MIME type.
    #[serde(borrow, default, rename = "mimeType", alias = "mime_type")]
    pub mime_type: Option<Text<'a>>,
}

impl<'a> WireMessage<'a> {
    /// Reads one message from its raw JSON object text.
    ///
    /// # Errors
    /// serde_json's error when the text is not an object of the expected field types.
    pub fn parse(raw: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
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
    let mut de = serde_json::Deserializer::from_slice(body);
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

fn quoted_list(keys: &[String]) -> String {
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

/// Key names the tolerant Users reader tries (docs/engati-api.md, "Users API").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersKeys {
    /// Keys that may hold the list in an object body; default `users`.
    pub list_keys: Vec<String>,
    /// Keys that may hold a user's id; default `channel_user_id`, `channelUserId`, `user_id`.
    pub id_keys: Vec<String>,
}

impl Default for UsersKeys {
    fn default() -> Self {
        UsersKeys {
            list_keys: vec!["users".into()],
            id_keys: vec![
                "channel_user_id".into(),
                "channelUserId".into(),
                "user_id".into(),
            ],
        }
    }
}

/// Reads a Users API body tolerantly.
///
/// Shapes read (docs/engati-api.md): `{"users": [...]}` (list key configurable); a bare top-level
/// array; `{"responseObject": [...]}`; `{"responseObject": {"content" | "users": [...]}}`. A
/// user's id is read from the first of `keys.id_keys` present (string or number).
///
/// The list is found with its items left as raw text, and each user is read on its own: the
/// Users API is not paginated, and a tree of a whole million-user body costs about ten times
/// the body (1.7 GiB for 171 MB); this way the peak is the body and the users read.
///
/// # Errors
/// [`DecodeError::Syntax`] for non-JSON bodies; [`DecodeError::Shape`] naming the JSON path,
/// the keys looked for and what was found (never an empty list for a shape we don't know).
pub fn parse_users(body: &[u8], keys: &UsersKeys) -> Result<Vec<User>, DecodeError> {
    let syntax = |e: serde_json::Error| DecodeError::syntax(&e, body.len());
    let top: Level<'_> = serde_json::from_slice(body).map_err(syntax)?;
    let (path, list) = find_user_list(top, keys).map_err(|e| e.into_decode(body.len()))?;
    let mut users = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let item: serde_json::Value = serde_json::from_str(raw.get()).map_err(syntax)?;
        let obj = item.as_object().ok_or_else(|| DecodeError::Shape {
            path: format!("{path}[{i}]"),
            looked_for: "a user object".into(),
            found: json_type(&item).into(),
        })?;
        let id = keys
            .id_keys
            .iter()
            .find_map(|k| obj.get(k).and_then(scalar_text))
            .filter(|id| !id.is_empty())
            .ok_or_else(|| DecodeError::Shape {
                path: format!("{path}[{i}]"),
                looked_for: format!("a user id under {}", quoted_list(&keys.id_keys)),
                found: format!(
                    "keys {}",
                    obj.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
        let text_of = |names: &[&str]| names.iter().find_map(|k| obj.get(*k).and_then(scalar_text));
        let attributes = match obj.get("attributes") {
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let v = scalar_text(v).unwrap_or_else(|| v.to_string());
                    (k.clone(), v)
                })
                .collect(),
            _ => Vec::new(),
        };
        users.push(User {
            channel_user_id: id,
            channel: text_of(&["channel", "channelName", "platform"]),
            user_name: text_of(&["user_name", "userName", "name"]),
            attributes,
            matched_filters: Vec::new(),
        });
    }
    Ok(users)
}

/// One level of a JSON value, its children left as raw text: enough to find the Users list
/// without a tree of the whole body. Object keys are sorted and a repeated key keeps its last
/// value, as in a `serde_json::Map`.
enum Level<'a> {
    Array(Vec<&'a RawValue>),
    Object(std::collections::BTreeMap<String, &'a RawValue>),
    /// Anything else, by its JSON type (`a string`, `null`, ...).
    Other(&'static str),
}

impl<'a> Level<'a> {
    /// The level of a raw value (already checked JSON, so only a fault of ours can fail).
    fn of(raw: &'a RawValue) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw.get())
    }

    /// The array in `raw`, if it is one.
    fn list(raw: &'a RawValue) -> Result<Option<Vec<&'a RawValue>>, serde_json::Error> {
        if !raw.get().starts_with('[') {
            return Ok(None);
        }
        Ok(match Level::of(raw)? {
            Level::Array(list) => Some(list),
            _ => None,
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Level<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Level<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(Level::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut obj = std::collections::BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    obj.insert(k, v);
                }
                Ok(Level::Object(obj))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Level::Other("a string"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Level::Other("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Level::Other("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Level::Other("a number"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Level::Other("a boolean"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Level::Other("null"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A failure finding the Users list: a shape we don't know, or (from re-reading a raw value
/// already checked) a syntax error.
enum ListError {
    Shape(DecodeError),
    Syntax(serde_json::Error),
}

impl ListError {
    fn into_decode(self, len: usize) -> DecodeError {
        match self {
            ListError::Shape(e) => e,
            ListError::Syntax(e) => DecodeError::syntax(&e, len),
        }
    }
}

impl From<serde_json::Error> for ListError {
    fn from(e: serde_json::Error) -> Self {
        ListError::Syntax(e)
    }
}

fn find_user_list<'a>(
    top: Level<'a>,
    keys: &UsersKeys,
) -> Result<(String, Vec<&'a RawValue>), ListError> {
    let looked_for = format!(
        "a list under {} or `responseObject` (an array, or an object with `content` or `users`), or a top-level array",
        quoted_list(&keys.list_keys)
    );
    let obj = match top {
        Level::Array(list) => return Ok(("$".into(), list)),
        Level::Object(obj) => obj,
        Level::Other(found) => {
            return Err(ListError::Shape(DecodeError::Shape {
                path: "$".into(),
                looked_for,
                found: found.into(),
            }));
        }
    };
    let joined = |keys: Vec<&String>| {
        format!(
            "keys {}",
            keys.into_iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    for k in &keys.list_keys {
        if let Some(raw) = obj.get(k)
            && let Some(list) = Level::list(raw)?
        {
            return Ok((format!("$.{k}"), list));
        }
    }
    if let Some(raw) = obj.get("responseObject") {
        if let Some(list) = Level::list(raw)? {
            return Ok(("$.responseObject".into(), list));
        }
        if let Level::Object(inner) = Level::of(raw)? {
            for k in ["content", "users"]
                .into_iter()
                .chain(keys.list_keys.iter().map(String::as_str))
            {
                if let Some(raw) = inner.get(k)
                    && let Some(list) = Level::list(raw)?
                {
                    return Ok((format!("$.responseObject.{k}"), list));
                }
            }
            return Err(ListError::Shape(DecodeError::Shape {
                path: "$.responseObject".into(),
                looked_for,
                found: joined(inner.keys().collect()),
            }));
        }
    }
    Err(ListError::Shape(DecodeError::Shape {
        path: "$".into(),
        looked_for,
        found: if obj.is_empty() {
            "an empty object".into()
        } else {
            joined(obj.keys().collect())
        },
    }))
}

fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
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
    fn users_reader_accepts_documented_variants() {
        let k = UsersKeys::default();
        let bodies: [&[u8]; 5] = [
            br#"{"users":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}"#,
            br#"[{"channelUserId":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]"#,
            br#"{"responseObject":[{"user_id":9195,"channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}"#,
            br#"{"responseObject":{"content":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}}"#,
            br#"{"responseObject":{"users":[{"channel_user_id":"9195","channel":"whatsapp","user_name":"Asha","attributes":{"feedback":"1","n":2}}]}}"#,
        ];
        for body in bodies {
            let users = parse_users(body, &k).unwrap();
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].channel_user_id, "9195");
            assert_eq!(users[0].channel.as_deref(), Some("whatsapp"));
            assert_eq!(
                users[0].attributes,
                vec![("feedback".into(), "1".into()), ("n".into(), "2".into())]
            );
        }
    }

    #[test]
    fn users_reader_names_keys_for_unknown_shapes() {
        let k = UsersKeys::default();
        let err = parse_users(br#"{"data":{"rows":[]}}"#, &k).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`users`") && text.contains("data"), "{text}");
        let err = parse_users(br#"{"users":[{"phone":"1"}]}"#, &k).unwrap_err();
        assert!(err.to_string().contains("channel_user_id"), "{err}");
        assert!(err.to_string().contains("phone"), "{err}");
    }

    #[test]
    fn users_reader_finds_the_list_without_a_tree_of_the_body() {
        let k = UsersKeys::default();
        let ids = |body: &[u8]| -> Vec<String> {
            parse_users(body, &k)
                .unwrap()
                .into_iter()
                .map(|u| u.channel_user_id)
                .collect()
        };
        // A repeated key keeps its last value, as a serde_json::Map does.
        assert_eq!(
            ids(br#"{"users":[{"user_id":"1"}],"users":[{"user_id":"2"}]}"#),
            ["2"]
        );
        // A list key that holds no list falls through to responseObject.
        assert_eq!(
            ids(br#"{"users":{"n":1},"responseObject":{"content":[{"user_id":3}]}}"#),
            ["3"]
        );
        // Deep nesting beside the list is skipped, not parsed into a tree.
        let deep = format!(
            r#"{{"meta":{}1{},"users":[{{"user_id":"4"}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(ids(deep.as_bytes()), ["4"]);
        // Inside a user it is too deep to read, as are numbers out of range.
        let deep_user = format!(
            r#"[{{"user_id":"5","attributes":{{"x":{}1{}}}}}]"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for bad in [deep_user.as_bytes(), br#"[{"user_id":1e400}]"#] {
            assert!(matches!(
                parse_users(bad, &k),
                Err(DecodeError::Syntax { .. })
            ));
        }
        // Keys are named sorted, the path and index of a bad item given.
        let err = parse_users(br#"{"z":1,"a":2}"#, &k).unwrap_err();
        assert!(err.to_string().ends_with("found keys a, z"), "{err}");
        let err = parse_users(br#"{"responseObject":{"b":[],"a":[]}}"#, &k).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Shape { path, found, .. }
            if path == "$.responseObject" && found == "keys a, b"),
            "{err}"
        );
        let err = parse_users(br#"{"users":[{"user_id":"1"},7]}"#, &k).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Shape { path, found, .. }
            if path == "$.users[1]" && found == "a number"),
            "{err}"
        );
        assert!(matches!(
            parse_users(b"null", &k),
            Err(DecodeError::Shape { found, .. }) if found == "null"
        ));
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
