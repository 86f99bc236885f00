//! A campaign's settings: the pipeline file's `[send]` section, flag overrides (flags win),
//! and validation into a [`Campaign`]. Every problem is reported at once, naming the key or
//! flag and the fix (exit 2). The tenant comes from `[source]` (`provider`, `base_url`,
//! `customer_id`, `bot_key`, `api_key_file`) as for `export`; the key from `ENGATI_API_KEY`
//! or `api_key_file`, never from a flag or a file value.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Kind;
use super::input::InputFormat;
pub use super::message::{BroadcastContent, Message, TemplateBody, TriggerApi};
use crate::config::SourceSection;
use crate::engati::provider::Provider;
use crate::secret::Secret;
use crate::sink::Format;

/// Default requests in flight for sends.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default requests per second for sends.
pub const DEFAULT_MAX_RPS: u32 = 10;
/// Default rows per broadcast.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default circuit-breaker window: the first this many rows.
pub const DEFAULT_BREAKER_ROWS: usize = 20;

/// `[send]`: what to send to whom. Every key has a flag of the same name (kebab-case).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSection {
    /// `template`, `trigger` or `broadcast` (`send run` needs it; a subcommand sets it).
    pub kind: Option<String>,
    /// The table: a Parquet file or directory, a CSV, or a JSONL / JSONL.gz file.
    pub input: Option<PathBuf>,
    /// `parquet`, `csv`, `jsonl` or `jsonl.gz`. Default: from the extension.
    pub input_format: Option<String>,
    /// Names this send; the ledger key with the row key. Letters, digits, `.`, `_`, `-`.
    pub campaign: Option<String>,
    /// Output directory: result log (`sends/campaign=ID/`) and `_send_report.json`.
    pub out: Option<PathBuf>,
    /// State directory (the ledger). Default `<out>/_state`.
    pub state_dir: Option<PathBuf>,
    /// Result log format: `parquet` (default) or `jsonl`.
    pub format: Option<String>,
    /// The row's identity in the campaign. Default: the normalized phone number (templates,
    /// triggers) or the user id (broadcasts).
    pub key_column: Option<String>,
    /// Rows whose value here is false/no/0/empty are skipped (and counted).
    pub consent_column: Option<String>,
    /// ISO country (`IN`) for phone numbers written without a country code. Default: none
    /// (numbers without `+` must start with the country code).
    pub default_country: Option<String>,
    /// Validate and render every request to `dry-run.jsonl`; send nothing. Default false.
    pub dry_run: Option<bool>,
    /// Requests in flight at most. Default 4.
    pub concurrency: Option<usize>,
    /// Requests per second at most. Default 10.
    pub max_rps: Option<u32>,
    /// Whole-request timeout, seconds. Default 30.
    pub timeout_secs: Option<u64>,
    /// Retries of a request that certainly was not processed (connection refused, 429).
    /// Default 8.
    pub max_retries: Option<usize>,
    /// Stop (exit 4) when the first this many rows all fail with the same API error; 0 = off.
    /// Default 20.
    pub circuit_breaker: Option<usize>,
    /// Templates and triggers: the column with the phone number.
    pub phone_column: Option<String>,
    /// Template (and template broadcast) name.
    pub template_name: Option<String>,
    /// Template namespace.
    pub template_namespace: Option<String>,
    /// Template language code. Default `en`.
    pub language: Option<String>,
    /// Template body parameters: columns, in order, sent as text.
    pub params: Option<Vec<String>>,
    /// Template: a components JSON file with `{{column}}` placeholders (instead of `params`).
    pub components: Option<PathBuf>,
    /// Trigger: the flow key (in the URL).
    pub flow_key: Option<String>,
    /// Trigger API version: `v1` (query parameters) or `v2` (JSON body). Default `v2`.
    pub api: Option<String>,
    /// `whatsapp` (default) or, for triggers v2, `rcs`.
    pub channel: Option<String>,
    /// Trigger attributes `NAME=COLUMN` (v2: body key NAME; v1: query parameter NAME).
    pub attributes: Option<Vec<String>>,
    /// Broadcast: the column with the channel-user id (WhatsApp: the phone number).
    pub user_id_column: Option<String>,
    /// Broadcast title.
    pub title: Option<String>,
    /// Broadcast: a direct text message (else a template broadcast).
    pub message: Option<String>,
    /// Broadcast publication time (`2026-12-01T09:00:00Z`, a date, `now`). Default: now
    /// (a time in the past is sent immediately).
    pub publish_at: Option<String>,
    /// Broadcast: recipients per broadcast. Default 1000.
    pub batch_size: Option<usize>,
}

impl SendSection {
    /// Applies flag values (`o`): each one given replaces the file's.
    pub fn merge(mut self, o: &SendSection) -> Self {
        macro_rules! over {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f.clone(); } )* };
        }
        over!(
            kind,
            input,
            input_format,
            campaign,
            out,
            state_dir,
            format,
            key_column,
            consent_column,
            default_country,
            dry_run,
            concurrency,
            max_rps,
            timeout_secs,
            max_retries,
            circuit_breaker,
            phone_column,
            template_name,
            template_namespace,
            language,
            params,
            components,
            flow_key,
            api,
            channel,
            attributes,
            user_id_column,
            title,
            message,
            publish_at,
            batch_size
        );
        self
    }
}

/// The tenant, without the key (stored with the campaign, shown in reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Brand.
    pub provider: Provider,
    /// Base URL ending in `/`.
    pub base_url: String,
    /// Numeric customer id.
    pub customer_id: String,
    /// Bot key.
    pub bot_key: String,
    /// Key file (else `ENGATI_API_KEY`).
    #[serde(skip)]
    pub api_key_file: Option<PathBuf>,
}

/// Request limits of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests per second at most.
    pub max_rps: u32,
    /// Whole-request timeout, seconds.
    pub timeout_secs: u64,
    /// Retries of certainly-unprocessed requests.
    pub max_retries: usize,
    /// Circuit-breaker window (rows); 0 = off.
    pub breaker_rows: usize,
}

/// A validated campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Campaign id.
    pub id: String,
    /// The tenant.
    pub source: SourceSpec,
    /// The input table.
    pub input: PathBuf,
    /// Its format.
    pub input_format: InputFormat,
    /// Output directory.
    pub out: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Result-log format.
    pub format: Format,
    /// Key column (else the normalized recipient).
    pub key_column: Option<String>,
    /// Consent column.
    pub consent_column: Option<String>,
    /// Default country for local numbers (ISO code as given, upper case).
    pub default_country: Option<String>,
    /// Send nothing; render `dry-run.jsonl`.
    pub dry_run: bool,
    /// Limits.
    pub limits: Limits,
    /// What to send.
    pub message: Message,
}

impl Campaign {
    /// The kind.
    pub fn kind(&self) -> Kind {
        self.message.kind()
    }

    /// `OUT/sends/campaign=ID`: the result log's directory.
    pub fn log_dir(&self) -> PathBuf {
        log_dir(&self.out, &self.id)
    }
}

/// `OUT/sends/campaign=ID`.
pub fn log_dir(out: &Path, campaign: &str) -> PathBuf {
    out.join("sends").join(format!("campaign={campaign}"))
}

/// True for a usable campaign id: 1 to 100 of `A-Z a-z 0-9 . _ -`, starting alphanumeric (it
/// names a directory).
pub fn valid_campaign_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Validates the tenant (`[source]` merged with flags). `sandbox`: the embedded sandbox fills
/// it in later, so nothing is required.
pub fn validate_source(s: &SourceSection, sandbox: bool, p: &mut Vec<String>) -> SourceSpec {
    let provider = match s.provider {
        Some(v) => v,
        None if sandbox => Provider::Custom,
        None => {
            p.push("provider (--provider) is required: engati, engati-com, alertspanel, floatchat, technowiz or custom".into());
            Provider::Custom
        }
    };
    let base_url = match s.base_url.as_deref() {
        Some(u) => match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => u.to_owned(),
            _ => {
                p.push(format!(
                    "base_url (--base-url) `{u}` is not an http(s) URL, e.g. https://api.engati.ai/"
                ));
                String::new()
            }
        },
        None => match provider.base_url() {
            Some(b) => b.to_owned(),
            None if sandbox => String::new(),
            None => {
                p.push(format!(
                    "base_url (--base-url) is required for provider `{provider}`"
                ));
                String::new()
            }
        },
    };
    let mut id = |key: &str, v: Option<&str>, ok: fn(u8) -> bool, example: &str| match v {
        Some(x) if !x.is_empty() && x.bytes().all(ok) => x.to_owned(),
        Some(x) => {
            p.push(format!("{key} `{x}` is not valid, e.g. {example}"));
            String::new()
        }
        None if sandbox => String::new(),
        None => {
            p.push(format!("{key} is required"));
            String::new()
        }
    };
    let customer_id = id(
        "customer_id (--customer-id)",
        s.customer_id.as_deref(),
        |b| b.is_ascii_digit(),
        "61179",
    );
    let bot_key = id(
        "bot_key (--bot-key)",
        s.bot_key.as_deref(),
        |b| b.is_ascii_alphanumeric(),
        "bb67e0773bed4c7e",
    );
    SourceSpec {
        provider,
        base_url,
        customer_id,
        bot_key,
        api_key_file: s.api_key_file.clone(),
    }
}

/// Reads the key: `api_key_file` if set, else the value of `ENGATI_API_KEY` (`env_key`).
///
/// # Errors
/// A message naming the file or the variable (exit 2).
pub fn read_key(source: &SourceSpec, env_key: Option<String>) -> Result<Secret, String> {
    if let Some(f) = &source.api_key_file {
        return Secret::from_file(f)
            .map_err(|e| format!("api_key_file (--api-key-file) {}: {e}", f.display()));
    }
    match env_key.map(Secret::new) {
        Some(k) if !k.is_empty() => Ok(k),
        _ => Err(format!(
            "no API key: set {} or pass --api-key-file PATH (the key is never a flag or a pipeline value)",
            crate::config::API_KEY_ENV
        )),
    }
}

/// Validates a merged `[send]` section and `[source]` into a [`Campaign`] (pure but for
/// reading a `components` file). `sandbox`: the tenant comes from the embedded sandbox.
///
/// # Errors
/// Every problem found, each naming the key or flag and the fix.
pub fn validate(
    s: &SendSection,
    source: &SourceSection,
    sandbox: bool,
    now_ms: i64,
) -> Result<Campaign, Vec<String>> {
    let mut p = Vec::new();
    let src = validate_source(source, sandbox, &mut p);
    let kind = match s.kind.as_deref().map(str::parse::<Kind>) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            p.push(format!("send.kind: {e}"));
            None
        }
        None => {
            p.push("send.kind is required: template, trigger or broadcast".into());
            None
        }
    };
    let id = match s.campaign.as_deref() {
        Some(c) if valid_campaign_id(c) => c.to_owned(),
        Some(c) => {
            p.push(format!("campaign (--campaign) `{c}`: use 1-100 letters, digits, `.`, `_` or `-`, starting with a letter or digit"));
            String::new()
        }
        None => {
            p.push("campaign (--campaign) is required: it names this send, e.g. --campaign diwali-2026".into());
            String::new()
        }
    };
    let (input, input_format) = validate_input(s, &mut p);
    let (out, state_dir, format) = validate_output(s, &mut p);
    let default_country = s.default_country.as_deref().and_then(|c| {
        super::phone::parse_country(c)
            .map(|_| c.trim().to_ascii_uppercase())
            .map_err(|e| p.push(format!("default_country (--default-country): {e}")))
            .ok()
    });
    let limits = validate_limits(s, &mut p);
    let message = kind.and_then(|k| super::message::validate_message(k, s, now_ms, &mut p));
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Campaign {
        id,
        source: src,
        input,
        input_format: input_format.expect("checked"),
        out,
        state_dir,
        format,
        key_column: s.key_column.clone(),
        consent_column: s.consent_column.clone(),
        default_country,
        dry_run: s.dry_run.unwrap_or(false),
        limits,
        message: message.expect("checked"),
    })
}

fn validate_input(s: &SendSection, p: &mut Vec<String>) -> (PathBuf, Option<InputFormat>) {
    let input = s.input.clone().unwrap_or_else(|| {
        p.push(
            "input (--input) is required: a Parquet file or directory, a CSV, or a JSONL file"
                .into(),
        );
        PathBuf::new()
    });
    let format = match s.input_format.as_deref() {
        Some(f) => InputFormat::parse(f)
            .map_err(|e| p.push(format!("input_format (--input-format): {e}")))
            .ok(),
        None if s.input.is_none() => None,
        None => InputFormat::detect(&input).or_else(|| {
            p.push(format!("input (--input) {}: cannot tell the format from the name; pass --input-format parquet|csv|jsonl|jsonl.gz", input.display()));
            None
        }),
    };
    (input, format)
}

fn validate_output(s: &SendSection, p: &mut Vec<String>) -> (PathBuf, PathBuf, Format) {
    let out = s.out.clone().unwrap_or_else(|| {
        p.push("out (--out) is required: the directory for the result log and report".into());
        PathBuf::new()
    });
    let state_dir = s.state_dir.clone().unwrap_or_else(|| out.join("_state"));
    let format = match s.format.as_deref() {
        None | Some("parquet") => Format::Parquet,
        Some("jsonl") => Format::Jsonl,
        Some(f) => {
            p.push(format!("format (--format) `{f}` must be parquet or jsonl"));
            Format::Parquet
        }
    };
    (out, state_dir, format)
}

fn validate_limits(s: &SendSection, p: &mut Vec<String>) -> Limits {
    let concurrency = s.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=256).contains(&concurrency) {
        p.push(format!(
            "concurrency (--concurrency) {concurrency} must be between 1 and 256"
        ));
    }
    let max_rps = s.max_rps.unwrap_or(DEFAULT_MAX_RPS);
    if max_rps == 0 {
        p.push("max_rps (--max-rps) must be at least 1".into());
    }
    let timeout_secs = s
        .timeout_secs
        .unwrap_or(crate::config::DEFAULT_TIMEOUT_SECS);
    if timeout_secs == 0 {
        p.push("timeout_secs (--timeout-secs) must be at least 1".into());
    }
    Limits {
        concurrency,
        max_rps,
        timeout_secs,
        max_retries: s.max_retries.unwrap_or(crate::config::DEFAULT_MAX_RETRIES),
        breaker_rows: s.circuit_breaker.unwrap_or(DEFAULT_BREAKER_ROWS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SourceSection {
        SourceSection {
            provider: Some(crate::engati::provider::Provider::Engati),
            customer_id: Some("61179".into()),
            bot_key: Some("bb67e0773bed4c7e".into()),
            ..SourceSection::default()
        }
    }

    fn template() -> SendSection {
        SendSection {
            kind: Some("template".into()),
            input: Some("people.csv".into()),
            campaign: Some("spring-2026".into()),
            out: Some("out".into()),
            phone_column: Some("phone".into()),
            template_name: Some("order_update".into()),
            template_namespace: Some("ns".into()),
            ..SendSection::default()
        }
    }

    #[test]
    fn a_template_campaign_validates_with_defaults() {
        let c = validate(&template(), &source(), false, 0).unwrap();
        assert_eq!(c.kind(), Kind::Template);
        assert_eq!(c.input_format, InputFormat::Csv);
        assert_eq!(c.state_dir, PathBuf::from("out/_state"));
        assert_eq!(c.limits.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(c.log_dir(), PathBuf::from("out/sends/campaign=spring-2026"));
        let Message::Template { language, body, .. } = &c.message else {
            panic!()
        };
        assert_eq!(language, "en");
        assert_eq!(body, &TemplateBody::Params(vec![]));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let s = SendSection {
            campaign: Some("../etc".into()),
            template_name: None,
            concurrency: Some(0),
            flow_key: Some("f".into()),
            ..template()
        };
        let p = validate(&s, &SourceSection::default(), false, 0).unwrap_err();
        let text = p.join("\n");
        for needle in [
            "provider",
            "customer_id",
            "campaign (--campaign) `../etc`",
            "template_name (--template-name) is required",
            "concurrency",
            "flow_key (--flow-key) does not apply",
        ] {
            assert!(text.contains(needle), "{needle} in:\n{text}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = template();
        let flags = SendSection {
            campaign: Some("other".into()),
            dry_run: Some(true),
            ..SendSection::default()
        };
        let m = file.merge(&flags);
        assert_eq!(m.campaign.as_deref(), Some("other"));
        assert_eq!(m.dry_run, Some(true));
        assert_eq!(m.phone_column.as_deref(), Some("phone"));
    }
}
