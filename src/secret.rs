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
    /// The I/O error of reading `path`, or `InvalidData` when the file is empty.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let secret = Secret::new(text);
        if secret.0.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            ));
        }
        Ok(secret)
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
