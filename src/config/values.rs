//! Value readers shared by the sections: the flag parser for enums (its error names the key, the
//! value and the choices) and lenient TOML readers (a customer id as a number, a date as a TOML
//! date).

use std::marker::PhantomData;

use clap::ValueEnum;
use clap::builder::{PossibleValue, TypedValueParser};
use serde::{Deserialize, Deserializer};

/// A clap value parser for a [`ValueEnum`] whose error says `KEY (--flag) `value` must be a,
/// b or c` (the same sentence a pipeline file's validation would give), and whose choices show
/// in `--help`.
#[derive(Clone)]
pub struct EnumParser<T> {
    key: &'static str,
    _t: PhantomData<fn() -> T>,
}

impl<T> EnumParser<T> {
    /// A parser for the setting named `key` in messages, e.g. `format (--format)`.
    pub fn new(key: &'static str) -> Self {
        EnumParser {
            key,
            _t: PhantomData,
        }
    }
}

/// `a, b or c` from a [`ValueEnum`]'s names.
pub fn choices<T: ValueEnum>() -> String {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

impl<T: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for EnumParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        T::from_str(&text, false).map_err(|_| {
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{} `{text}` must be {}\n", self.key, choices::<T>()),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants()
                .iter()
                .filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// Reads a string or an integer as text (`customer_id = 61179` or `"61179"`).
pub fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        I(i64),
    }
    Ok(Option::<V>::deserialize(d)?.map(|v| match v {
        V::S(s) => s,
        V::I(i) => i.to_string(),
    }))
}

/// Reads a date as text: a string (`"2026-08-01"`, `"today"`) or a TOML date / date-time
/// (`since = 2026-08-01`), which is written back in its RFC 3339 form.
pub fn date_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        D(toml::value::Datetime),
    }
    Ok(Option::<V>::deserialize(d)?.map(|v| match v {
        V::S(s) => s,
        V::D(t) => t.to_string(),
    }))
}

/// A clap value parser for a whole number in `lo..=hi`, whose error names the setting (and
/// its environment variable, when it has one) and the range, the same sentence a pipeline
/// file's validation gives: `page_size (--page-size) -1 must be between 1 and 500`.
#[derive(Clone)]
pub struct NumParser<T> {
    key: &'static str,
    lo: T,
    hi: T,
}

impl<T> NumParser<T> {
    /// A parser for the setting named `key` in messages, accepting `lo..=hi`.
    pub fn new(key: &'static str, lo: T, hi: T) -> Self {
        NumParser { key, lo, hi }
    }
}

impl<T> TypedValueParser for NumParser<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let text = value.to_string_lossy();
        match text.trim().parse::<T>() {
            Ok(v) if v >= self.lo && v <= self.hi => Ok(v),
            _ => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "{} {text} must be a whole number between {} and {}\n",
                    self.key, self.lo, self.hi
                ),
            )
            .with_cmd(cmd)),
        }
    }
}

/// A clap value parser for `concurrency`: `auto` or a whole number in `1..=hi`; the error
/// names the setting and what it accepts.
#[derive(Clone)]
pub struct ConcurrencyParser {
    key: &'static str,
    hi: usize,
}

impl ConcurrencyParser {
    /// A parser for the setting named `key` in messages, accepting `auto` or `1..=hi`.
    pub fn new(key: &'static str, hi: usize) -> Self {
        ConcurrencyParser { key, hi }
    }
}

impl TypedValueParser for ConcurrencyParser {
    type Value = crate::engati::adaptive::Concurrency;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        use crate::engati::adaptive::Concurrency;
        let text = value.to_string_lossy();
        match text.parse::<Concurrency>() {
            Ok(Concurrency::Fixed(n)) if !(1..=self.hi).contains(&n) => {}
            Ok(c) => return Ok(c),
            Err(_) => {}
        }
        Err(clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!(
                "{} {text} must be auto or a whole number between 1 and {}\n",
                self.key, self.hi
            ),
        )
        .with_cmd(cmd))
    }
}

/// `scheme://host/...` with any `user:password@` replaced by `****@`, for messages.
pub fn redact_url(u: &str) -> String {
    match (u.find("://"), u.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let end_of_authority = u[s + 3..].find('/').map_or(u.len(), |i| s + 3 + i);
            if at < end_of_authority {
                return format!("{}****{}", &u[..s + 3], &u[at..]);
            }
            u.to_owned()
        }
        _ => u.to_owned(),
    }
}

/// Checks a base URL: http(s), no credentials. `key` names the setting in messages.
///
/// # Errors
/// The sentence to report.
pub fn check_base_url(key: &str, u: &str) -> Result<String, String> {
    let shown = redact_url(u);
    let url = reqwest::Url::parse(u)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| {
            format!("{key} `{shown}` is not an http(s) URL, e.g. https://api.engati.ai/")
        })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{key} `{shown}` carries credentials: remove them (the API key goes in ENGATI_API_KEY or api_key_file, never in a URL)"
        ));
    }
    Ok(u.to_owned())
}
