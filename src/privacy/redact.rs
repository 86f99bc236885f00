//! Redaction of e-mail addresses and phone numbers in free text, and in the string values of a
//! raw JSON message (its keys, numbers and `timestamp` value are left as they are, so
//! `raw_json` stays valid JSON that still parses back to the same message shape).
//!
//! An e-mail address is `local@domain.tld`; a phone number is any run of 8 or more digits,
//! possibly with a leading `+` and single spaces, dashes, dots or brackets between them, that
//! is not a date (`2026-08-12`, `2026/08/12`). The rule is deliberately wide: a long order
//! number or a card number is redacted too, a 7-digit number is not.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use super::Redaction;

/// Replaces an e-mail address.
pub const EMAIL_MARK: &str = "[email]";
/// Replaces a phone number.
pub const PHONE_MARK: &str = "[phone]";

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}")
        .expect("a valid pattern")
});
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d(?:[ \-.()]{0,2}\d)+").expect("a valid pattern"));
static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}").expect("a valid pattern"));

/// Minimum digits for a phone number.
pub const PHONE_MIN_DIGITS: usize = 8;

/// `text` with the kinds in `kinds` replaced by their marks (borrowed when nothing matched).
pub fn text<'a>(text: &'a str, kinds: &[Redaction]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    if kinds.contains(&Redaction::Email)
        && text.contains('@')
        && let Cow::Owned(s) = EMAIL.replace_all(&out, EMAIL_MARK)
    {
        out = Cow::Owned(s);
    }
    if kinds.contains(&Redaction::Phone)
        && let Some(s) = phones(&out)
    {
        out = Cow::Owned(s);
    }
    out
}

/// The text with phone numbers replaced, or `None` when there is none.
fn phones(text: &str) -> Option<String> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    if digits < PHONE_MIN_DIGITS {
        return None;
    }
    let mut out = String::new();
    let mut last = 0;
    for m in PHONE.find_iter(text) {
        let s = m.as_str();
        let n = s.bytes().filter(u8::is_ascii_digit).count();
        if n < PHONE_MIN_DIGITS || DATE.is_match(s) {
            continue;
        }
        out.push_str(&text[last..m.start()]);
        out.push_str(PHONE_MARK);
        last = m.end();
    }
    if last == 0 {
        return None;
    }
    out.push_str(&text[last..]);
    Some(out)
}

/// A raw JSON text with `edit` applied to the contents of its string values (not keys, not
/// the value of a `timestamp` key). Returns `None` when nothing changed.
pub fn json_strings(json: &str, mut edit: impl FnMut(&str) -> Cow<'_, str>) -> Option<String> {
    let b = json.as_bytes();
    let mut out = String::new();
    let (mut i, mut copied) = (0usize, 0usize);
    let mut key: Option<(usize, usize)> = None;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(b.len());
        let mut k = end + 1;
        while k < b.len() && b[k].is_ascii_whitespace() {
            k += 1;
        }
        let is_key = k < b.len() && b[k] == b':';
        let is_timestamp = key.is_some_and(|(s, e)| &json[s..e] == "timestamp");
        if is_key {
            key = Some((start, end));
        } else {
            key = None;
            if !is_timestamp && let Cow::Owned(new) = edit(&json[start..end]) {
                out.push_str(&json[copied..start]);
                out.push_str(&new);
                copied = end;
            }
        }
        i = end + 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&json[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Redaction] = &[Redaction::Email, Redaction::Phone];

    #[test]
    fn emails_and_phone_numbers_are_redacted() {
        let t = "mail asha.12@example.com or call +91 98765-43210 / 919565428256, order 1234567";
        assert_eq!(
            text(t, BOTH),
            "mail [email] or call [phone] / [phone], order 1234567"
        );
        assert_eq!(text(t, &[Redaction::Email]).matches("[email]").count(), 1);
        assert!(matches!(text("nothing here", BOTH), Cow::Borrowed(_)));
    }

    #[test]
    fn dates_and_times_are_not_phone_numbers() {
        let t = "on 2026-08-12 14:03:27.512+0530 or 2026/08/12";
        assert_eq!(text(t, BOTH), t);
    }

    #[test]
    fn raw_json_keeps_its_keys_numbers_and_timestamp() {
        let j = r#"{"sender":"user","response":"I am 919565428256, a@b.io","timestamp":"2026-08-12 14:03:27.512+0530","n":12345678901,"user_id":"x"}"#;
        let got = json_strings(j, |s| text(s, BOTH)).unwrap();
        assert_eq!(
            got,
            r#"{"sender":"user","response":"I am [phone], [email]","timestamp":"2026-08-12 14:03:27.512+0530","n":12345678901,"user_id":"x"}"#
        );
        serde_json::from_str::<serde_json::Value>(&got).unwrap();
        assert!(json_strings(r#"{"a":"b"}"#, |s| text(s, BOTH)).is_none());
    }

    #[test]
    fn escaped_quotes_do_not_end_a_string() {
        let j = r#"{"response":"say \"hi\" to x@y.org","k":"v"}"#;
        let got = json_strings(j, |s| text(s, BOTH)).unwrap();
        assert_eq!(got, r#"{"response":"say \"hi\" to [email]","k":"v"}"#);
    }
}
