//! `[privacy]` and its flags: what personal data the output may carry. Validates into a
//! [`PrivacyPolicy`]; the key is read later (`privacy::Privacy::with_key_from`), like the API key.

use clap::{ArgAction, Args};
use serde::Deserialize;

use super::Problems;
use crate::privacy::{IdColumn, PrivacyPolicy, Redaction};
use crate::sink::OutputSpec;

/// Default name of the environment variable holding the pseudonymization key.
pub const DEFAULT_KEY_ENV: &str = "ENGATI_ETL_PSEUDONYM_KEY";

/// Columns that cannot be dropped: exactly-once replacement reads them back.
pub const KEPT_COLUMNS: [&str; 2] = [crate::schema::CHANNEL_USER_ID, crate::schema::SENT_AT];

/// `[privacy]`: pseudonymized identifiers, redacted free text, dropped columns. Also the
/// privacy flags. Off by default (the output is the API's data as it is).
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Privacy")]
pub struct PrivacySection {
    /// Replace these identifier columns by a keyed hash (HMAC-SHA256, 32 hex chars, the same
    /// for the same id and key on every run): channel_user_id, user_id, user_name
    /// (comma-separated).
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',',
          value_parser = super::values::EnumParser::<IdColumn>::new("privacy.pseudonymize (--pseudonymize)"))]
    pub pseudonymize: Option<Vec<IdColumn>>,
    /// The environment variable holding the pseudonymization key (at least 16 bytes)
    /// [default: ENGATI_ETL_PSEUDONYM_KEY].
    #[arg(long = "pseudonym-key-env", value_name = "VAR")]
    pub key_env: Option<String>,
    /// Redact e-mail addresses and/or phone numbers in content, text, raw_json, dead letters
    /// and user attributes: email, phone (comma-separated).
    #[arg(long, value_name = "KINDS", value_delimiter = ',',
          value_parser = super::values::EnumParser::<Redaction>::new("privacy.redact (--redact)"))]
    pub redact: Option<Vec<Redaction>>,
    /// Leave these columns out of the output (e.g. raw_json, attributes; repeat or
    /// comma-separate).
    #[arg(long = "drop-column", value_name = "COLUMN", value_delimiter = ',', action = ArgAction::Append)]
    pub drop_columns: Option<Vec<String>>,
}

super::merge_fields!(PrivacySection; pseudonymize, key_env, redact, drop_columns);

impl PrivacySection {
    /// Validates the section for `output`: `None` when no control is asked for.
    pub fn validate(&self, output: Option<&OutputSpec>, p: &mut Problems) -> Option<PrivacyPolicy> {
        let mut pseudonymize = self.pseudonymize.clone().unwrap_or_default();
        pseudonymize.sort();
        pseudonymize.dedup();
        let mut redact = self.redact.clone().unwrap_or_default();
        redact.sort();
        redact.dedup();
        let mut drop_columns = self.drop_columns.clone().unwrap_or_default();
        drop_columns.sort();
        drop_columns.dedup();
        let known = |c: &str| {
            crate::schema::messages_schema().field_with_name(c).is_ok()
                || crate::schema::users_schema().field_with_name(c).is_ok()
        };
        for c in &drop_columns {
            if KEPT_COLUMNS.contains(&c.as_str()) {
                let instead = if c == crate::schema::CHANNEL_USER_ID {
                    " (pseudonymize it instead)"
                } else {
                    ""
                };
                p.push(format!(
                    "privacy.drop_columns (--drop-column) cannot drop {c}: re-exports read it back to replace rows exactly once{instead}"
                ));
            } else if !known(c) {
                p.push(format!(
                    "privacy.drop_columns (--drop-column): no column named `{c}` in the messages or users table"
                ));
            }
        }
        let key_env = self
            .key_env
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_ENV.to_owned());
        if key_env.is_empty() || key_env.contains('=') {
            p.push(format!(
                "privacy.key_env (--pseudonym-key-env) `{key_env}` is not an environment variable name"
            ));
        }
        if pseudonymize.is_empty() && redact.is_empty() && drop_columns.is_empty() {
            return None;
        }
        if matches!(output, Some(OutputSpec::Crm(_))) {
            p.push("privacy controls apply to file and stdout outputs; a CRM needs the real contact (remove [privacy] or --pseudonymize/--redact/--drop-column)");
        }
        if matches!(output, Some(OutputSpec::Files(f)) if f.remote.is_some()) {
            p.push("privacy controls apply to local Parquet, JSONL and stdout outputs, not yet to object storage: a fresh worker could not check the output's recorded policy (write locally, or remove [privacy] / --pseudonymize/--redact/--drop-column)");
        }
        if matches!(output, Some(OutputSpec::Delta(_))) {
            p.push("privacy controls apply to Parquet, JSONL and stdout outputs, not yet to a Delta table (use --format parquet, or remove [privacy] / --pseudonymize/--redact/--drop-column)");
        }
        Some(PrivacyPolicy {
            pseudonymize,
            key_env,
            redact,
            drop_columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privacy_validates_columns_and_is_off_by_default() {
        let mut p = Problems::default();
        let section = PrivacySection {
            drop_columns: Some(vec!["sent_at".into(), "nope".into(), "raw_json".into()]),
            ..PrivacySection::default()
        };
        let policy = section.validate(None, &mut p).expect("a policy");
        assert_eq!(policy.drop_columns, vec!["nope", "raw_json", "sent_at"]);
        let err = p.into_result(|| ()).unwrap_err().to_string();
        assert!(
            err.contains("cannot drop sent_at") && err.contains("no column named `nope`"),
            "{err}"
        );
        let mut p = Problems::default();
        assert!(PrivacySection::default().validate(None, &mut p).is_none());
    }
}
