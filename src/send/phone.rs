//! Phone numbers: validated and normalized with the `phonenumber` crate (a port of Google's
//! libphonenumber with its metadata), never with a hand-written pattern.
//!
//! Forms (docs/engati-api.md): the template API takes E.164 (`+919565428256`); the API trigger
//! and WhatsApp channel-user ids take the digits with the country code and no `+`
//! (`919565428256`). Input is read as follows:
//! - `+…` or `00…`: international, any formatting (`+91 95654-28256`);
//! - otherwise, with a default country (`--default-country IN`): parsed as dialled in that
//!   country (`095654 28256`, `9565428256`; a leading country code is recognised too);
//! - otherwise: digits that already carry the country code (the WhatsApp channel-user id form
//!   of Engati's own Users API and of this tool's `users` table).
//!
//! A number libphonenumber does not consider valid for its country is refused with the reason;
//! the row is then skipped before any request.

use phonenumber::country::Id;
use phonenumber::{Mode, PhoneNumber};

/// A valid phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    e164: String,
}

impl Phone {
    /// E.164 with the `+` (`+919565428256`): the template API's `phoneNumber`.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// Digits with the country code, no `+` (`919565428256`): the trigger's `user.phone_no`
    /// and the WhatsApp channel-user id.
    pub fn digits(&self) -> &str {
        &self.e164[1..]
    }
}

/// Why a value is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Empty or missing.
    #[error("no phone number (empty value)")]
    Empty,
    /// libphonenumber could not read it at all.
    #[error("invalid phone number `{value}`: {reason}")]
    Unreadable {
        /// The value as given.
        value: String,
        /// The parser's reason.
        reason: String,
    },
    /// Read, but not a valid number for its country (wrong length or range).
    #[error(
        "invalid phone number `{value}`: not a valid number for country code +{code} (wrong length or unassigned range){hint}"
    )]
    Invalid {
        /// The value as given.
        value: String,
        /// The country calling code it was read with.
        code: u16,
        /// A hint when the number has no country code and no default country was given.
        hint: &'static str,
    },
}

/// Parses a default country (`IN`, `us`): an ISO 3166-1 alpha-2 code.
///
/// # Errors
/// A message naming the value.
pub fn parse_country(s: &str) -> Result<Id, String> {
    s.trim().to_ascii_uppercase().parse::<Id>().map_err(|_| {
        format!("default country `{s}` is not an ISO 3166-1 alpha-2 code such as IN, US, GB")
    })
}

/// Validates and normalizes `raw` (see the module docs for the forms read).
///
/// # Errors
/// [`PhoneError`] with the reason.
pub fn normalize(raw: &str, default_country: Option<Id>) -> Result<Phone, PhoneError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(PhoneError::Empty);
    }
    let international = value.starts_with('+') || value.starts_with("00");
    let parsed = if let Some(rest) = value.strip_prefix("00") {
        phonenumber::parse(None, format!("+{rest}"))
    } else if international {
        phonenumber::parse(None, value)
    } else if let Some(country) = default_country {
        phonenumber::parse(Some(country), value)
    } else {
        phonenumber::parse(None, format!("+{value}"))
    };
    let number: PhoneNumber = parsed.map_err(|e| PhoneError::Unreadable {
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if !phonenumber::is_valid(&number) {
        return Err(PhoneError::Invalid {
            value: value.to_owned(),
            code: number.code().value(),
            hint: if international || default_country.is_some() {
                ""
            } else {
                "; numbers without `+` are read as including the country code (set --default-country for local numbers)"
            },
        });
    }
    Ok(Phone {
        e164: number.format().mode(Mode::E164).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_normalizes_to_the_same_number() {
        let want = "+919565428256";
        for raw in [
            "919565428256",
            "+919565428256",
            " +91 95654-28256 ",
            "0091 9565428256",
            "+91 (956) 542 8256",
        ] {
            let p = normalize(raw, None).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(p.e164(), want, "{raw}");
            assert_eq!(p.digits(), "919565428256");
        }
        let india = parse_country("in").unwrap();
        for raw in ["9565428256", "09565428256", "919565428256", "+919565428256"] {
            assert_eq!(normalize(raw, Some(india)).unwrap().e164(), want, "{raw}");
        }
        assert_eq!(
            normalize("(415) 555-2671", Some(parse_country("US").unwrap()))
                .unwrap()
                .e164(),
            "+14155552671"
        );
    }

    #[test]
    fn invalid_numbers_are_refused_with_a_reason() {
        assert_eq!(normalize("  ", None), Err(PhoneError::Empty));
        let e = normalize("12345", None).unwrap_err().to_string();
        assert!(e.contains("12345"), "{e}");
        let e = normalize("9195654", None).unwrap_err().to_string();
        assert!(e.contains("not a valid number"), "{e}");
        assert!(normalize("not a phone", None).is_err());
        // A local number without a default country is read as a country code + number: here
        // +7 (not valid), and the hint says why. Some local numbers are valid numbers of
        // another country this way (9565428256 is +95 Myanmar): the README says to pass
        // --default-country for tables of local numbers.
        let e = normalize("7012345678", None).unwrap_err().to_string();
        assert!(e.contains("--default-country"), "{e}");
        assert_ne!(
            normalize("9565428256", None).unwrap().e164(),
            "+919565428256"
        );
        assert!(parse_country("India").is_err());
    }
}
