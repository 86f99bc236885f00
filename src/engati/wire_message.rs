//! One Conversations message as the API sends it (docs/engati-api.md, "Conversations API"),
//! read in one pass that can also write its **residual**: the JSON object of the fields the
//! typed `messages` columns do not already hold verbatim.
//!
//! The residual is what the `raw_json` column holds by default (`sink.raw_json = "residual"`,
//! README "Output"). A field is left out of it only when a column holds exactly its value:
//! - `sender`, `message_type`, `user_id`: a JSON string, held decoded by the column of that
//!   name;
//! - `response`: a JSON string, held decoded by `content`.
//!
//! Everything else stays, verbatim and in the original order: `timestamp` (its local offset and
//! form are not in `sent_at`), `file`, `attachments`, `text`, `media`, unknown fields, and any of
//! the four above whose value is not a string (`null`, a number, an object), so the original
//! object is the residual plus those columns: nothing is lost, only not stored twice. Keys
//! repeated within one object are an error for the known fields (as before) and kept for the
//! others.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Unexpected, Visitor};
use serde_json::value::RawValue;

use super::wire::Text;

/// One message as the Conversations API sends it (docs/engati-api.md, "Conversations API").
/// Every field is optional on the wire; unknown fields are ignored here and kept in the raw JSON
/// (and in the residual, see the module docs).
#[derive(Debug, Default)]
pub struct WireMessage<'a> {
    /// `"user"`, `"bot"`, `"agent"` or anything else (unknown values are data).
    pub sender: Option<Text<'a>>,
    /// `TEXT`, `OPTIONS`, `AGENT_PARTICIPATION_STATUS`, `FILE_RECEIVED`, media types, or other.
    pub message_type: Option<Text<'a>>,
    /// The content, normally a JSON string; kept raw so a non-string value survives verbatim.
    /// `None` for a missing or `null` value.
    pub response: Option<&'a RawValue>,
    /// `yyyy-MM-dd HH:mm:ss.SSS±HHMM` (or with slashes), or a number of ms. `None` for a
    /// missing or `null` value.
    pub timestamp: Option<&'a RawValue>,
    /// The message's own `user_id` (often a web session UUID).
    pub user_id: Option<Text<'a>>,
    /// `{"url", "mimeType", "uploadType"}` on FILE_RECEIVED, else null.
    pub file: Option<WireFile<'a>>,
    /// Fallback content some clients read (`m.response || m.text`).
    pub text: Option<Text<'a>>,
    /// Fallback media object some clients read (`m.media.value`, `m.media.mimeType`).
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
    /// serde_json's error when the text is not an object of the expected field types (a
    /// known field holding an object where a string belongs, a repeated known field).
    pub fn parse(raw: &'a str) -> Result<Self, serde_json::Error> {
        Self::parse_with(raw, None)
    }

    /// [`parse`](Self::parse), also writing the message's residual (module docs) into
    /// `residual` (cleared first): a JSON object text, `{}` at the least.
    ///
    /// # Errors
    /// As [`parse`](Self::parse); `residual` is then unspecified.
    pub fn parse_residual(raw: &'a str, residual: &mut String) -> Result<Self, serde_json::Error> {
        Self::parse_with(raw, Some(residual))
    }

    fn parse_with(raw: &'a str, residual: Option<&mut String>) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let m = MessageSeed { residual }.deserialize(&mut de)?;
        de.end()?;
        Ok(m)
    }
}

/// Reads a message object; with `residual`, writes the fields no column holds verbatim.
struct MessageSeed<'r> {
    residual: Option<&'r mut String>,
}

impl<'de, 'r> DeserializeSeed<'de> for MessageSeed<'r> {
    type Value = WireMessage<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

/// The message fields read into [`WireMessage`] (the wire names), in the order of the bits of
/// the parser's "seen" mask: a repeated one is an error. Any other key is kept as data.
pub const FIELDS: [&str; 8] = [
    "sender",
    "message_type",
    "response",
    "timestamp",
    "user_id",
    "file",
    "text",
    "media",
];

impl<'de, 'r> Visitor<'de> for MessageSeed<'r> {
    type Value = WireMessage<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = WireMessage::default();
        let mut out = self.residual;
        if let Some(r) = out.as_deref_mut() {
            r.clear();
            r.push('{');
        }
        let mut seen = 0u8;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            let key = key.as_str();
            if let Some(i) = FIELDS.iter().position(|f| *f == key) {
                if seen & (1 << i) != 0 {
                    return Err(de::Error::duplicate_field(FIELDS[i]));
                }
                seen |= 1 << i;
            }
            // Whether a column holds this value exactly (then the residual leaves it out).
            let held = match key {
                "sender" => {
                    m.sender = text(value)?;
                    is_string(value)
                }
                "message_type" => {
                    m.message_type = text(value)?;
                    is_string(value)
                }
                "user_id" => {
                    m.user_id = text(value)?;
                    is_string(value)
                }
                "response" => {
                    m.response = non_null(value);
                    is_string(value)
                }
                "timestamp" => {
                    m.timestamp = non_null(value);
                    false
                }
                "file" => {
                    m.file = object(value)?;
                    false
                }
                "text" => {
                    m.text = text(value)?;
                    false
                }
                "media" => {
                    m.media = object(value)?;
                    false
                }
                _ => false,
            };
            if !held && let Some(r) = out.as_deref_mut() {
                if r.len() > 1 {
                    r.push(',');
                }
                push_key(r, key);
                r.push(':');
                r.push_str(value.get());
            }
        }
        if let Some(r) = out {
            r.push('}');
        }
        Ok(m)
    }
}

fn is_string(v: &RawValue) -> bool {
    v.get().starts_with('"')
}

fn non_null(v: &RawValue) -> Option<&RawValue> {
    (v.get() != "null").then_some(v)
}

/// A string, number or boolean as [`Text`] (borrowed when the string has no escapes); `None`
/// for `null`; an error naming the type otherwise (the message derive's behaviour before).
fn text<'de, E: de::Error>(v: &'de RawValue) -> Result<Option<Text<'de>>, E> {
    let s = v.get();
    match s.as_bytes()[0] {
        b'"' if !s.contains('\\') => Ok(Some(Text(Cow::Borrowed(&s[1..s.len() - 1])))),
        b'n' => Ok(None),
        b'{' => Err(E::invalid_type(Unexpected::Map, &"a string")),
        b'[' => Err(E::invalid_type(Unexpected::Seq, &"a string")),
        // An escaped string, a number or a boolean: valid JSON already, so this cannot fail.
        _ => serde_json::from_str::<Text<'de>>(s)
            .map(Some)
            .map_err(E::custom),
    }
}

/// An object field (`file`, `media`); `None` for `null`.
fn object<'de, T: Deserialize<'de>, E: de::Error>(v: &'de RawValue) -> Result<Option<T>, E> {
    if v.get() == "null" {
        return Ok(None);
    }
    serde_json::from_str(v.get()).map(Some).map_err(E::custom)
}

/// Writes `key` as a JSON string (quoted; escaped only when it needs to be).
fn push_key(r: &mut String, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        r.push('"');
        r.push_str(key);
        r.push('"');
    } else {
        r.push_str(&serde_json::to_string(key).unwrap_or_else(|_| "\"\"".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residual(raw: &str) -> String {
        let mut r = String::new();
        WireMessage::parse_residual(raw, &mut r).expect("parses");
        r
    }

    #[test]
    fn residual_keeps_what_no_column_holds_in_order() {
        let raw = r#"{"sender":"user","message_type":"TEXT","response":"Hi \"there\"","timestamp":"2026-08-12 14:03:27.512+0530","user_id":"3f6c","file":null,"attachments":null,"wa_message_id":"wamid.1"}"#;
        assert_eq!(
            residual(raw),
            r#"{"timestamp":"2026-08-12 14:03:27.512+0530","file":null,"attachments":null,"wa_message_id":"wamid.1"}"#
        );
        let m = WireMessage::parse(raw).unwrap();
        assert_eq!(m.sender.unwrap().as_str(), "user");
        assert_eq!(m.response.unwrap().get(), r#""Hi \"there\"""#);
    }

    #[test]
    fn values_that_are_not_strings_stay_in_the_residual() {
        let raw = r#"{"sender":null,"message_type":7,"response":{"a":1},"user_id":"u","timestamp":1754000000000}"#;
        assert_eq!(
            residual(raw),
            r#"{"sender":null,"message_type":7,"response":{"a":1},"timestamp":1754000000000}"#
        );
        let m = WireMessage::parse(raw).unwrap();
        assert!(m.sender.is_none());
        assert_eq!(m.message_type.unwrap().as_str(), "7");
        assert_eq!(m.timestamp.unwrap().get(), "1754000000000");
    }

    #[test]
    fn the_residual_plus_the_columns_is_the_original_object() {
        let raw = r#"{ "sender" : "bot", "response": "a\nb", "ke\"y": [1, 2], "message_type": "TEXT", "timestamp": "t", "user_id": "u" }"#;
        let mut back: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&residual(raw)).unwrap();
        let m = WireMessage::parse(raw).unwrap();
        back.insert("sender".into(), m.sender.unwrap().as_str().into());
        back.insert(
            "message_type".into(),
            m.message_type.unwrap().as_str().into(),
        );
        back.insert("user_id".into(), m.user_id.unwrap().as_str().into());
        let content = crate::engati::wire::raw_as_text(m.response.unwrap()).unwrap();
        back.insert("response".into(), content.as_ref().into());
        let original: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(serde_json::Value::Object(back), original);
    }

    #[test]
    fn known_fields_of_the_wrong_type_or_repeated_are_errors() {
        let e = WireMessage::parse(r#"{"sender":{"x":1}}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid type: map, expected a string"),
            "{e}"
        );
        let e = WireMessage::parse(r#"{"sender":"a","sender":"b"}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate field `sender`"), "{e}");
        assert!(WireMessage::parse(r#"["not an object"]"#).is_err());
        assert!(WireMessage::parse(r#"{"x":1,"x":2}"#).is_ok());
        let e = WireMessage::parse(r#"{"file":"nope"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
