//! `Secret`: a string that never prints itself.
//!
//! API keys and CRM tokens travel through the program as `Secret`. Its `Debug` and `Display`
//! print `**REDACTED**`, so a secret cannot leak through logs, error messages, run reports or
//! panics by accident (the habit comes from Vector's `SensitiveString`). The only way to read the
//! value is [`Secret::expose`], called where the value is put on the wire.

use std::fmt;
use std::path::Path;

/// A secret string (API key, access token). Prints as `**REDACTED**`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. Surrounding whitespace (a trailing newline in a key file) is removed.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        Secret(value.trim().to_owned())
    }

    /// Reads a secret from a file, trimming whitespace.
    ///
    /// # Errors
    /// The I/O error of reading `path`, or `InvalidData` when the file is empty, holds more
    /// than one line or a character a header cannot carry (the message never shows the value).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let secret = Secret::new(text);
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if secret.0.is_empty() {
            return Err(invalid("the file is empty".into()));
        }
        let lines = secret.0.lines().count();
        if lines > 1 {
            return Err(invalid(format!(
                "the file has {lines} lines; it must hold the key alone, on one line"
            )));
        }
        if let Some(bad) = secret.problem() {
            return Err(invalid(bad));
        }
        Ok(secret)
    }

    /// Why the value cannot be sent in an HTTP header, if it cannot (never shows the value).
    pub fn problem(&self) -> Option<String> {
        let bad = self
            .0
            .chars()
            .position(|c| !c.is_ascii_graphic() && c != ' ')?;
        Some(format!(
            "character {} of the key is not printable ASCII (a stray byte, a tab or a BOM?); keys are letters, digits and dashes",
            bad + 1
        ))
    }

    /// The value itself. Call it only where the value is sent (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("0f8e6a1c-1111-2222-3333-444455556666-AbC1dEf\n");
        assert_eq!(format!("{s:?}"), "**REDACTED**");
        assert_eq!(format!("{s}"), "**REDACTED**");
        assert_eq!(s.expose(), "0f8e6a1c-1111-2222-3333-444455556666-AbC1dEf");
    }
}
