//! Privacy controls for exports: conversation data carries personal data (WhatsApp ids are
//! phone numbers, user names, free text with e-mail addresses and numbers), and analysts often
//! may not receive it raw. Set in `[privacy]` or by flags (`config::privacy`), applied to every
//! file the output gets (messages, users, dead letters) and to stdout:
//!
//! - **Pseudonymize** identifier columns (`channel_user_id`, `user_id`, `user_name`): each
//!   value becomes HMAC-SHA256(key, value), the first 16 bytes in hex (32 chars). The key comes
//!   from an environment variable (`key_env`, default `ENGATI_ETL_PSEUDONYM_KEY`, at least 16
//!   bytes), so the same id gives the same pseudonym on every run and joins across runs and
//!   tables still match; without the key it cannot be reversed or recomputed. Where a
//!   pseudonymized id occurs inside `content`, `text` or `raw_json` of its own row (the
//!   message's `user_id` is in its raw JSON), it is replaced by its pseudonym too. When
//!   `channel_user_id` is pseudonymized, `message_id` (a plain hash of the id and the message)
//!   is keyed the same way, and the names of the output files carry a keyed hash instead of the
//!   plan's (which hashes raw ids): neither can be used to guess a phone number.
//! - **Redact** e-mail addresses and/or phone numbers in `content`, `text`, `raw_json`'s string
//!   values, dead letters and user attribute values ([`redact`]).
//! - **Drop** named columns (`raw_json`, `attributes`, ...); `channel_user_id` and `sent_at`
//!   cannot be dropped (re-exports read them back).
//!
//! Exactly once still holds: re-exported rows are found in earlier files by their
//! pseudonymized `channel_user_id` ([`Privacy::user_key`]). An output keeps one policy: a run
//! whose policy (or key) differs from the one the output's files were written with is refused
//! ([`check_output`]). The state store (`state_dir`) keeps raw ids (watermarks, the file
//! ledger): keep it where analysts do not read (`--state-dir` outside a shared output).

mod batch;
pub mod redact;

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::ConfigError;
use crate::engati::users::RejectedUser;
use crate::state::StateStore;

/// Key bytes at least.
pub const MIN_KEY_BYTES: usize = 16;

/// An identifier column that can be pseudonymized.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum IdColumn {
    /// `channel_user_id` (messages, users, dead letters).
    #[value(name = "channel_user_id")]
    ChannelUserId,
    /// `user_id` (messages).
    #[value(name = "user_id")]
    UserId,
    /// `user_name` (users).
    #[value(name = "user_name")]
    UserName,
}

/// What free text is redacted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Redaction {
    /// E-mail addresses, replaced by `[email]`.
    Email,
    /// Phone numbers (8+ digits), replaced by `[phone]`.
    Phone,
}

/// A validated policy (no key yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrivacyPolicy {
    /// Columns replaced by their keyed hash.
    pub pseudonymize: Vec<IdColumn>,
    /// The environment variable holding the key.
    pub key_env: String,
    /// Kinds of personal data redacted in free text.
    pub redact: Vec<Redaction>,
    /// Columns left out.
    pub drop_columns: Vec<String>,
}

/// What the run report says about the policy (`privacy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyReport {
    /// Columns pseudonymized.
    pub pseudonymized: Vec<IdColumn>,
    /// The key's environment variable, when a key is used.
    pub key_env: Option<String>,
    /// The key's public fingerprint (HMAC of a fixed text): equal fingerprints, equal keys.
    pub key_id: Option<String>,
    /// Kinds redacted.
    pub redacted: Vec<Redaction>,
    /// Columns dropped.
    pub dropped_columns: Vec<String>,
}

impl PrivacyReport {
    /// `pseudonymized channel_user_id, user_id (key 6f8d...); redacted email; dropped raw_json`.
    pub fn describe(&self) -> String {
        // The names as the pipeline file spells them (their serde names).
        fn names<T: Serialize>(v: &[T]) -> String {
            v.iter()
                .filter_map(|x| serde_json::to_value(x).ok())
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join(", ")
        }
        let mut parts = Vec::new();
        if !self.pseudonymized.is_empty() {
            let key = self.key_id.as_deref().unwrap_or("-");
            parts.push(format!(
                "pseudonymized {} (key {key})",
                names(&self.pseudonymized)
            ));
        }
        if !self.redacted.is_empty() {
            parts.push(format!("redacted {}", names(&self.redacted)));
        }
        if !self.dropped_columns.is_empty() {
            parts.push(format!("dropped {}", self.dropped_columns.join(", ")));
        }
        if parts.is_empty() {
            return "none".into();
        }
        parts.join("; ")
    }

    /// What the files depend on: the columns, the kinds, the key (by its fingerprint), not
    /// the name of the variable holding the key.
    fn fingerprint(&self) -> Self {
        PrivacyReport {
            key_env: None,
            ..self.clone()
        }
    }
}

/// A policy with its key: what the sinks apply. Cheap to clone; never prints the key.
#[derive(Clone)]
pub struct Privacy {
    policy: PrivacyPolicy,
    mac: Option<Hmac<Sha256>>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("policy", &self.policy)
            .field("key", &self.mac.as_ref().map(|_| "**REDACTED**"))
            .finish()
    }
}

impl Privacy {
    /// The policy with its key read through `var` (the environment) when it pseudonymizes.
    ///
    /// # Errors
    /// [`ConfigError`] when the key is missing or shorter than [`MIN_KEY_BYTES`].
    pub fn with_key_from(
        policy: PrivacyPolicy,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        if policy.pseudonymize.is_empty() {
            return Ok(Privacy { policy, mac: None });
        }
        let name = &policy.key_env;
        let key = var(name).unwrap_or_default();
        if key.len() < MIN_KEY_BYTES {
            return Err(ConfigError::invalid(format!(
                "privacy.pseudonymize needs a key of at least {MIN_KEY_BYTES} bytes in the environment variable {name} ({}); keep it: the same key gives the same pseudonyms on every run",
                if key.is_empty() {
                    "not set"
                } else {
                    "too short"
                }
            )));
        }
        Ok(Self::with_key(policy, key.as_bytes()))
    }

    /// The policy before its key is read (what validation produces): nothing is
    /// pseudonymized until [`with_key_from`](Self::with_key_from) gives it its key.
    pub fn unkeyed(policy: PrivacyPolicy) -> Self {
        Privacy { policy, mac: None }
    }

    /// The policy with `key` (tests and benchmarks).
    pub fn with_key(policy: PrivacyPolicy, key: &[u8]) -> Self {
        let mac = (!policy.pseudonymize.is_empty())
            .then(|| Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length"));
        Privacy { policy, mac }
    }

    /// The policy.
    pub fn policy(&self) -> &PrivacyPolicy {
        &self.policy
    }

    /// True when `c` is pseudonymized.
    pub fn pseudonymizes(&self, c: IdColumn) -> bool {
        self.mac.is_some() && self.policy.pseudonymize.contains(&c)
    }

    /// True when the column named `name` is dropped.
    pub fn drops(&self, name: &str) -> bool {
        self.policy.drop_columns.iter().any(|c| c == name)
    }

    /// HMAC-SHA256(key, `domain` 0x00 `value`), first 16 bytes as hex; `value` itself without a
    /// key.
    fn keyed(&self, domain: &str, value: &str) -> String {
        let Some(mac) = &self.mac else {
            return value.to_owned();
        };
        let mut m = mac.clone();
        m.update(domain.as_bytes());
        m.update(&[0]);
        m.update(value.as_bytes());
        let digest = m.finalize().into_bytes();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The pseudonym of an identifier (every identifier column shares it, so joins across
    /// columns and tables match).
    pub fn pseudonym(&self, id: &str) -> String {
        self.keyed("id", id)
    }

    /// How `channel_user_id` is written in the output: its pseudonym, or itself.
    pub fn user_key<'a>(&self, channel_user_id: &'a str) -> Cow<'a, str> {
        if self.pseudonymizes(IdColumn::ChannelUserId) {
            Cow::Owned(self.pseudonym(channel_user_id))
        } else {
            Cow::Borrowed(channel_user_id)
        }
    }

    /// The name part of a unit's files: the plan's unit key (`<time>-<hash of raw ids>`), or,
    /// when ids are pseudonymized, the same time with a keyed hash.
    pub fn file_key<'a>(&self, unit_key: &'a str) -> Cow<'a, str> {
        if !self.pseudonymizes(IdColumn::ChannelUserId) {
            return Cow::Borrowed(unit_key);
        }
        let time = unit_key.split_once('-').map_or(unit_key, |(t, _)| t);
        Cow::Owned(format!("{time}-{}", &self.keyed("unit", unit_key)[..12]))
    }

    /// Free text with the policy's redactions.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        redact::text(text, &self.policy.redact)
    }

    /// A dead letter's user and raw JSON as written (raw JSON `None` when dropped).
    pub fn dead_letter<'a>(
        &self,
        user: &'a str,
        raw_json: &'a str,
    ) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
        let raw = (!self.drops(crate::schema::RAW_JSON)).then(|| {
            // The message's own user_id is in its raw JSON (dead letters are rare: parse it).
            let user_id = if self.pseudonymizes(IdColumn::UserId) {
                serde_json::from_str::<serde_json::Value>(raw_json)
                    .ok()
                    .and_then(|v| v.get("user_id").and_then(|u| u.as_str()).map(str::to_owned))
            } else {
                None
            };
            let mut ids = vec![user];
            ids.extend(user_id.as_deref());
            let replaced = self.replace_ids(raw_json, &ids);
            match self.redact_json(&replaced) {
                Some(s) => Cow::Owned(s),
                None => replaced,
            }
        });
        (self.user_key(user), raw)
    }

    /// `text` with each pseudonymized id of `ids` (at least 4 bytes long) replaced by its
    /// pseudonym.
    fn replace_ids<'a>(&self, text: &'a str, ids: &[&str]) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        if self.mac.is_none() {
            return out;
        }
        for id in ids.iter().filter(|i| i.len() >= 4) {
            if out.contains(id) {
                out = Cow::Owned(out.replace(id, &self.pseudonym(id)));
            }
        }
        out
    }

    /// Redacts a raw JSON text's string values (`None`: unchanged).
    fn redact_json(&self, json: &str) -> Option<String> {
        if self.policy.redact.is_empty() {
            return None;
        }
        redact::json_strings(json, |s| self.redact(s))
    }

    /// The report's `privacy` section.
    pub fn report(&self) -> PrivacyReport {
        let keyed = self.mac.is_some();
        PrivacyReport {
            pseudonymized: self.policy.pseudonymize.clone(),
            key_env: keyed.then(|| self.policy.key_env.clone()),
            key_id: keyed.then(|| self.keyed("key-id", "engati-etl")[..16].to_owned()),
            redacted: self.policy.redact.clone(),
            dropped_columns: self.policy.drop_columns.clone(),
        }
    }

    /// The report's rejected users, their ids pseudonymized.
    pub fn rejected_users(&self, users: Vec<RejectedUser>) -> Vec<RejectedUser> {
        users
            .into_iter()
            .map(|u| RejectedUser {
                channel_user_id: self.user_key(&u.channel_user_id).into_owned(),
                ..u
            })
            .collect()
    }
}

/// The `meta` key of the state store holding the policy an output's files were written with.
const META_KEY: &str = "privacy_policy";

/// Refuses a run whose policy differs from the one the output's files were written with (the
/// output would mix raw and pseudonymized ids, and re-exports could not find earlier rows);
/// records the policy when the output has no data file yet.
///
/// # Errors
/// [`RunError::Config`](crate::pipeline::RunError::Config) naming both policies.
pub fn check_output(
    state: &StateStore,
    privacy: Option<&Privacy>,
) -> Result<(), crate::pipeline::RunError> {
    let now = privacy.map(|p| p.report().fingerprint());
    // None: never recorded (an output older than this check, or new).
    let before: Option<Option<PrivacyReport>> = state.meta(META_KEY)?.map(|v| {
        serde_json::from_str::<PrivacyReport>(&v)
            .ok()
            .map(|r| r.fingerprint())
    });
    if before.as_ref() == Some(&now) {
        return Ok(());
    }
    let has_data = !state.files("messages")?.is_empty() || !state.files("users")?.is_empty();
    let differs = match &before {
        Some(b) => b != &now,
        None => now.is_some(),
    };
    if has_data && differs {
        let describe =
            |p: &Option<PrivacyReport>| p.as_ref().map_or("none".into(), PrivacyReport::describe);
        return Err(crate::pipeline::RunError::Config(format!(
            "this output was written with privacy policy `{}`, and this run asks for `{}`: an output keeps one policy (and one key), or it would mix raw and pseudonymized rows; export into a new output directory, or run with the same policy",
            describe(before.as_ref().unwrap_or(&None)),
            describe(&now)
        )));
    }
    let value = now.as_ref().map_or_else(
        || "none".to_owned(),
        |p| serde_json::to_string(p).unwrap_or_default(),
    );
    state.set_meta(META_KEY, &value)?;
    Ok(())
}

#[cfg(test)]
mod tests;
