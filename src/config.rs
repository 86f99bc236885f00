//! Configuration: the pipeline file model, flag overrides, precedence and validation.
//!
//! Precedence: **flags > environment > pipeline file > defaults**. Flags that have an
//! environment variable (see `cli`) are already merged with it by clap; [`Overrides`] then
//! replaces the file's values field by field. [`Settings::validate`] is pure (no I/O, no
//! network): every problem is reported at once, each naming the key or flag, the value and the
//! fix. [`Settings::build`] then does the I/O a run needs before any request: reads the API
//! key (`ENGATI_API_KEY` or `api_key_file`; never a flag value or a file value), creates the
//! output directory and checks that it is writable.
//!
//! Relative paths (`out`, `users_file`, `api_key_file`, `state_dir`) are relative to the
//! current directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::engati::client::ClientConfig;
use crate::engati::provider::Provider;
use crate::engati::users::AttributeFilter;
use crate::engati::wire::UsersKeys;
use crate::pipeline::{Mode, OutputSpec, RunSpec, UsersSource};
use crate::report::ReportOptions;
use crate::secret::Secret;
use crate::sink::{Encoding, Format};
use crate::time::{format_duration_ms, parse_duration_ms, parse_user_instant, rfc3339_ms};

/// Default `page_size` (the API's documented default and our maximum).
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// Default requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default requests per second.
pub const DEFAULT_MAX_RPS: u32 = 50;
/// Default request timeout, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Default retries per request.
pub const DEFAULT_MAX_RETRIES: usize = 8;
/// Default window.
pub const DEFAULT_WINDOW: &str = "1d";
/// Default lookback for incremental runs.
pub const DEFAULT_LOOKBACK: &str = "1d";
/// Default file rotation size: 128 MiB.
pub const DEFAULT_TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;
/// Default Parquet row-group size: 4 MiB (estimated encoded bytes; about 40,000 messages).
pub const DEFAULT_ROW_GROUP_BYTES: usize = 4 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Default cells per checkpoint unit.
pub const DEFAULT_CHECKPOINT_USERS: usize = 5000;
/// Cells fetched ahead of the one being written, at most.
pub const DEFAULT_LOOKAHEAD_CELLS: usize = 1024;
/// Page bodies buffered ahead of the writer before only the cell being written may fetch: 8 MiB.
pub const DEFAULT_BUFFER_BYTES: u64 = 8 * 1024 * 1024;
/// The environment variable holding the API key.
pub const API_KEY_ENV: &str = "ENGATI_API_KEY";

/// A pipeline file (`pipelines/*.toml`). Unknown keys are errors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline name, for logs and reports. Default: the file name.
    pub name: Option<String>,
    /// Where the data comes from.
    #[serde(default)]
    pub source: SourceSection,
    /// Which time range.
    #[serde(default)]
    pub range: RangeSection,
    /// Where the data goes.
    #[serde(default)]
    pub sink: SinkSection,
    /// Run against the embedded sandbox instead of a real API.
    pub sandbox: Option<SandboxSection>,
    /// `engati-etl send run`: what to send to whom (`send::config`).
    pub send: Option<crate::send::config::SendSection>,
}

fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
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

/// `[source]`: the Engati tenant and how to talk to it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `engati` | `engati-com` | `alertspanel` | `floatchat` | `technowiz` | `custom`.
    pub provider: Option<String>,
    /// Base URL; required for `technowiz` and `custom`, overrides the preset otherwise.
    pub base_url: Option<String>,
    /// Numeric customer id (Integrations > Engati API).
    #[serde(default, deserialize_with = "string_or_int")]
    pub customer_id: Option<String>,
    /// Bot key, 16 hex characters.
    pub bot_key: Option<String>,
    /// File holding the API key (else `ENGATI_API_KEY`). Never put the key itself here.
    pub api_key_file: Option<PathBuf>,
    /// Attribute filters `NAME=VALUE`; users matching any of them are exported.
    pub attributes: Option<Vec<String>>,
    /// File of channel-user ids (instead of `attributes`).
    pub users_file: Option<PathBuf>,
    /// Messages per page, 1..=500. Default 500.
    pub page_size: Option<u32>,
    /// Requests in flight at most. Default 16.
    pub concurrency: Option<usize>,
    /// Requests per second at most, across all tasks. Default 50.
    pub max_rps: Option<u32>,
    /// Request timeout, seconds. Default 30.
    pub timeout_secs: Option<u64>,
    /// Retries per request after the first attempt. Default 8.
    pub max_retries: Option<usize>,
    /// Keys that may hold the Users API list. Default `["users"]`.
    pub users_list_keys: Option<Vec<String>>,
    /// Keys that may hold a user's id. Default `["channel_user_id", "channelUserId", "user_id"]`.
    pub user_id_keys: Option<Vec<String>>,
    /// Keys that may hold a Conversations page. Default `["conversations", "messages"]`.
    pub conversations_keys: Option<Vec<String>>,
}

/// `[range]`: which messages.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeSection {
    /// `range` (fixed `since`..`until`, the default) or `incremental` (per-user watermarks).
    pub mode: Option<String>,
    /// Range start (inclusive): `YYYY-MM-DD` (UTC), RFC 3339, `today`, `yesterday`, `today-7d`.
    pub since: Option<String>,
    /// Range end (exclusive), same forms. Incremental default: `today` (UTC midnight).
    pub until: Option<String>,
    /// Incremental: where a new user's history starts.
    pub start: Option<String>,
    /// Incremental: re-read this much before each watermark for late messages. Default `1d`.
    pub lookback: Option<String>,
    /// Window length (`1d`, `6h`, ...). Default `1d`.
    pub window: Option<String>,
}

/// `[sink]`: where rows go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// `parquet` (default) or `jsonl`.
    pub format: Option<String>,
    /// Gzip JSONL files (`.jsonl.gz`). Default false.
    pub gzip: Option<bool>,
    /// Output directory, or `-` for JSONL on stdout.
    pub out: Option<PathBuf>,
    /// State directory. Default `<out>/_state`.
    pub state_dir: Option<PathBuf>,
    /// Rotate files at this size, bytes. Default 134217728 (128 MiB).
    pub target_file_bytes: Option<u64>,
    /// Parquet row-group size, estimated encoded bytes. Default 4194304 (4 MiB).
    pub row_group_bytes: Option<usize>,
    /// zstd level 1..=22. Default 3.
    pub zstd_level: Option<i32>,
    /// Cells (users) per window committed together: the unit of resume. Default 5000.
    pub checkpoint_users: Option<usize>,
    /// CRM sinks (`format = "crm"`): `hubspot` or `bottlecrm`.
    pub crm: Option<String>,
    /// CRM base URL. HubSpot default `https://api.hubapi.com`; required for BottleCRM.
    pub crm_base_url: Option<String>,
    /// File holding the CRM token (else `HUBSPOT_ACCESS_TOKEN` / `BOTTLECRM_TOKEN`).
    pub crm_token_file: Option<PathBuf>,
    /// A new conversation session starts after this much inactivity. Default `30m`.
    pub session_gap: Option<String>,
    /// `create` (default): create missing contacts; `skip`: leave those users out.
    pub contact_policy: Option<String>,
    /// CRM requests per rolling 10 seconds at most. Default 100 (HubSpot's lowest tier).
    pub crm_requests_per_10s: Option<u32>,
    /// HubSpot `hs_communication_channel_type` for users not on WhatsApp. Default `SMS`.
    pub hubspot_other_channel_type: Option<String>,
    /// Print the planned CRM operations as JSONL; send nothing. Default false.
    pub dry_run: Option<bool>,
}

/// `[sandbox]`: start the embedded Engati-compatible sandbox and export from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    /// Use the sandbox. Default true when the section is present.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Data seed. Default 42.
    pub seed: Option<u64>,
    /// Number of users. Default 50.
    pub users: Option<usize>,
    /// First day of data (`YYYY-MM-DD`). Default 2026-08-01.
    pub start: Option<String>,
    /// Days of data. Default 31.
    pub days: Option<u32>,
    /// Average sessions per user. Default 6.
    pub sessions_per_user: Option<f64>,
    /// Added latency per response, ms. Default 0.
    pub latency_ms: Option<u64>,
    /// Share of 500 responses. Default 0.
    pub fail_rate: Option<f64>,
    /// Share of 429 responses. Default 0.
    pub throttle_rate: Option<f64>,
    /// Share of truncated 200 bodies. Default 0.
    pub truncate_rate: Option<f64>,
    /// Share of messages with a garbage timestamp. Default 0.
    pub malformed_rate: Option<f64>,
    /// Read `end_date` as inclusive. Default false.
    pub end_inclusive: Option<bool>,
    /// Read `start_date` as exclusive. Default false.
    pub start_exclusive: Option<bool>,
    /// Also start the HubSpot emulator and send the transcripts there (`format = "crm"`,
    /// `crm = "hubspot"`). Default false.
    pub hubspot: Option<bool>,
}

fn yes() -> bool {
    true
}

/// Values given on the command line (already merged with their environment variables).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--provider`.
    pub provider: Option<String>,
    /// `--base-url`.
    pub base_url: Option<String>,
    /// `--customer-id`.
    pub customer_id: Option<String>,
    /// `--bot-key`.
    pub bot_key: Option<String>,
    /// `--api-key-file`.
    pub api_key_file: Option<PathBuf>,
    /// `--attribute` (repeatable; replaces the file's list when given).
    pub attributes: Vec<String>,
    /// `--users-file`.
    pub users_file: Option<PathBuf>,
    /// `--page-size`.
    pub page_size: Option<u32>,
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// `--max-rps`.
    pub max_rps: Option<u32>,
    /// `--timeout-secs`.
    pub timeout_secs: Option<u64>,
    /// `--max-retries`.
    pub max_retries: Option<usize>,
    /// `--since`.
    pub since: Option<String>,
    /// `--until`.
    pub until: Option<String>,
    /// `--window`.
    pub window: Option<String>,
    /// `--format`.
    pub format: Option<String>,
    /// `--gzip` / `--no-gzip`.
    pub gzip: Option<bool>,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--checkpoint-users`.
    pub checkpoint_users: Option<usize>,
    /// `--target-file-bytes`.
    pub target_file_bytes: Option<u64>,
    /// `--row-group-bytes`.
    pub row_group_bytes: Option<usize>,
    /// `--zstd-level`.
    pub zstd_level: Option<i32>,
    /// Hidden `--crash-after-journal` (crash tests).
    pub crash_after_journal: Option<u64>,
    /// `--crm`.
    pub crm: Option<String>,
    /// `--crm-base-url`.
    pub crm_base_url: Option<String>,
    /// `--crm-token-file`.
    pub crm_token_file: Option<PathBuf>,
    /// `--session-gap`.
    pub session_gap: Option<String>,
    /// `--contact-policy`.
    pub contact_policy: Option<String>,
    /// `--dry-run`.
    pub dry_run: Option<bool>,
    /// Hidden `--crash-after-crm-writes` (crash tests).
    pub crash_after_crm_writes: Option<u64>,
}

/// Errors found in configuration (exit 2). Lists every problem found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The pipeline file cannot be read.
    #[error("cannot read pipeline file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The pipeline file is not valid TOML or has unknown keys.
    #[error("pipeline file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        reason: String,
    },
    /// One or more invalid values.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<String>),
}

fn problems_text(p: &[String]) -> String {
    if p.len() == 1 {
        return format!("configuration error: {}", p[0]);
    }
    let mut s = format!("{} configuration errors:", p.len());
    for x in p {
        s.push_str("\n  - ");
        s.push_str(x);
    }
    s
}

impl PipelineFile {
    /// Reads and parses a pipeline file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] / [`ConfigError::Parse`] naming the file, key and line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
    }

    /// Applies flag overrides (flags win).
    pub fn merge(mut self, o: &Overrides) -> Self {
        let s = &mut self.source;
        macro_rules! over {
            ($dst:expr, $src:expr) => {
                if let Some(v) = $src.clone() {
                    $dst = Some(v);
                }
            };
        }
        over!(s.provider, o.provider);
        over!(s.base_url, o.base_url);
        over!(s.customer_id, o.customer_id);
        over!(s.bot_key, o.bot_key);
        over!(s.api_key_file, o.api_key_file);
        if !o.attributes.is_empty() {
            s.attributes = Some(o.attributes.clone());
        }
        over!(s.users_file, o.users_file);
        over!(s.page_size, o.page_size);
        over!(s.concurrency, o.concurrency);
        over!(s.max_rps, o.max_rps);
        over!(s.timeout_secs, o.timeout_secs);
        over!(s.max_retries, o.max_retries);
        let r = &mut self.range;
        over!(r.since, o.since);
        over!(r.until, o.until);
        over!(r.window, o.window);
        let k = &mut self.sink;
        over!(k.format, o.format);
        over!(k.gzip, o.gzip);
        over!(k.out, o.out);
        over!(k.state_dir, o.state_dir);
        over!(k.checkpoint_users, o.checkpoint_users);
        over!(k.target_file_bytes, o.target_file_bytes);
        over!(k.row_group_bytes, o.row_group_bytes);
        over!(k.zstd_level, o.zstd_level);
        over!(k.crm, o.crm);
        over!(k.crm_base_url, o.crm_base_url);
        over!(k.crm_token_file, o.crm_token_file);
        over!(k.session_gap, o.session_gap);
        over!(k.contact_policy, o.contact_policy);
        over!(k.dry_run, o.dry_run);
        self
    }
}

/// What kind of run the settings are for (changes defaults and the state namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `export`: ad hoc, fixed range, state only in `OUT/_state` for exactly-once.
    Export,
    /// `run`: the pipeline's mode.
    Run,
    /// `backfill --from --to`: a fixed range in its own namespace.
    Backfill,
}

/// Validated settings: everything a run needs except the key and the I/O checks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Provider.
    pub provider: Provider,
    /// Base URL.
    pub base_url: String,
    /// Customer id.
    pub customer_id: String,
    /// Bot key.
    pub bot_key: String,
    /// Key file, if any.
    pub api_key_file: Option<PathBuf>,
    /// Users.
    pub users: UsersSource,
    /// Range.
    pub mode: Mode,
    /// Window, ms.
    pub window_ms: i64,
    /// Lookback, ms (incremental).
    pub lookback_ms: Option<i64>,
    /// Page size.
    pub page_size: u32,
    /// Concurrency.
    pub concurrency: usize,
    /// Max requests/s.
    pub max_rps: u32,
    /// Timeout, s.
    pub timeout_secs: u64,
    /// Retries.
    pub max_retries: usize,
    /// Users reader keys.
    pub users_keys: UsersKeys,
    /// Conversations list keys.
    pub conversations_keys: Vec<String>,
    /// Output.
    pub out: OutTarget,
    /// Encoding.
    pub encoding: Encoding,
    /// Rotation size.
    pub target_file_bytes: u64,
    /// Checkpoint unit size.
    pub checkpoint_users: usize,
    /// State namespace.
    pub namespace: String,
    /// Crash tests: abort after this many journaled commits.
    pub crash_after_journal: Option<u64>,
    /// The CRM token, once read ([`Settings::read_crm_token`]).
    pub crm_token: Option<Secret>,
    /// Crash tests: abort after this many CRM write batches.
    pub crash_after_crm_writes: Option<u64>,
}

/// Output target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutTarget {
    /// A directory and its state directory.
    Dir {
        /// Output.
        out: PathBuf,
        /// State.
        state_dir: PathBuf,
    },
    /// Standard output.
    Stdout,
    /// A CRM.
    Crm {
        /// Dead letters and the run report.
        out: PathBuf,
        /// State (ledger).
        state_dir: PathBuf,
        /// Settings.
        crm: CrmSettings,
    },
}

/// Validated CRM settings (the token is read by [`Settings::read_crm_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSettings {
    /// Which CRM.
    pub kind: crate::sink::crm::CrmKind,
    /// Base URL.
    pub base_url: String,
    /// Token file, if any.
    pub token_file: Option<PathBuf>,
    /// Session gap, ms.
    pub session_gap_ms: i64,
    /// Create missing contacts.
    pub create_contacts: bool,
    /// Requests per 10 s.
    pub rate_per_10s: u32,
    /// HubSpot channel type for others.
    pub other_channel_type: String,
    /// Plan only.
    pub dry_run: bool,
}

/// Default CRM state directory: `$XDG_DATA_HOME/engati-etl/crm/<crm>-<customer>-<bot>`
/// (else `~/.local/share/...`, else `./engati-etl-state/...`).
pub fn default_crm_state_dir(
    crm: &str,
    customer_id: &str,
    bot_key: &str,
    xdg: Option<String>,
    home: Option<String>,
) -> PathBuf {
    let base = match (
        xdg.filter(|x| !x.is_empty()),
        home.filter(|h| !h.is_empty()),
    ) {
        (Some(x), _) => PathBuf::from(x).join("engati-etl"),
        (None, Some(h)) => PathBuf::from(h).join(".local/share/engati-etl"),
        (None, None) => PathBuf::from("engati-etl-state"),
    };
    base.join("crm")
        .join(format!("{crm}-{customer_id}-{bot_key}"))
}

impl Settings {
    /// Validates a merged pipeline file (pure: no I/O, no network). `now_ms` resolves relative
    /// dates (`today`, `yesterday`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem, each naming the key/flag and the fix.
    pub fn validate(
        file: &PipelineFile,
        command: Command,
        now_ms: i64,
    ) -> Result<Settings, ConfigError> {
        let mut p: Vec<String> = Vec::new();
        let s = &file.source;
        let sandbox = file.sandbox.as_ref().is_some_and(|x| x.enabled);

        let provider = match s.provider.as_deref() {
            Some(v) => v
                .parse::<Provider>()
                .map_err(|e| p.push(format!("provider (--provider): {e}")))
                .ok(),
            None if sandbox => Some(Provider::Custom),
            None => {
                p.push("provider (--provider) is required: engati, engati-com, alertspanel, floatchat, technowiz or custom".into());
                None
            }
        };
        let base_url = match (provider, s.base_url.as_deref()) {
            (_, Some(u)) => match reqwest::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => u.to_owned(),
                _ => {
                    p.push(format!("base_url (--base-url) `{u}` is not an http(s) URL, e.g. https://api.engati.ai/"));
                    String::new()
                }
            },
            (Some(pr), None) => match pr.base_url() {
                Some(b) => b.to_owned(),
                None if sandbox => String::new(),
                None => {
                    p.push(format!("base_url (--base-url) is required for provider `{pr}` (its host is not known)"));
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        let customer_id = match s.customer_id.as_deref() {
            Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => c.to_owned(),
            Some(c) => {
                p.push(format!("customer_id (--customer-id) `{c}` must be digits, e.g. 61179 (Integrations > Engati API)"));
                String::new()
            }
            None if sandbox => String::new(),
            None => {
                p.push("customer_id (--customer-id) is required".into());
                String::new()
            }
        };
        let bot_key = match s.bot_key.as_deref() {
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_alphanumeric()) => {
                b.to_owned()
            }
            Some(b) => {
                p.push(format!(
                    "bot_key (--bot-key) `{b}` must be letters and digits, e.g. bb67e0773bed4c7e"
                ));
                String::new()
            }
            None if sandbox => String::new(),
            None => {
                p.push("bot_key (--bot-key) is required".into());
                String::new()
            }
        };

        let attrs = s.attributes.clone().unwrap_or_default();
        let mut filters = Vec::new();
        for a in &attrs {
            match a.parse::<AttributeFilter>() {
                Ok(f) => {
                    if !filters.contains(&f) {
                        filters.push(f)
                    }
                }
                Err(e) => p.push(format!("attributes (--attribute): {e}")),
            }
        }
        let users = match (&s.users_file, attrs.is_empty()) {
            (Some(f), true) => UsersSource::File(f.clone()),
            (Some(_), false) => {
                p.push(
                    "use either attributes (--attribute) or users_file (--users-file), not both"
                        .into(),
                );
                UsersSource::Filters(filters)
            }
            (None, false) => UsersSource::Filters(filters),
            (None, true) => {
                p.push(
                    "say which users: --attribute NAME=VALUE (repeatable) or --users-file PATH"
                        .into(),
                );
                UsersSource::Filters(filters)
            }
        };

        let page_size = s.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=500).contains(&page_size) {
            p.push(format!("page_size (--page-size) {page_size} must be between 1 and 500 (the API's largest page)"));
        }
        let concurrency = s.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=1024).contains(&concurrency) {
            p.push(format!(
                "concurrency (--concurrency) {concurrency} must be between 1 and 1024"
            ));
        }
        let max_rps = s.max_rps.unwrap_or(DEFAULT_MAX_RPS);
        if max_rps == 0 {
            p.push("max_rps (--max-rps) must be at least 1".into());
        }
        let timeout_secs = s.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            p.push("timeout_secs (--timeout-secs) must be at least 1".into());
        }
        let max_retries = s.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);

        let r = &file.range;
        fn dur(p: &mut Vec<String>, key: &str, v: Option<&str>, default: &str) -> i64 {
            parse_duration_ms(v.unwrap_or(default)).unwrap_or_else(|e| {
                p.push(format!("{key}: {e}"));
                1
            })
        }
        fn instant(p: &mut Vec<String>, now_ms: i64, key: &str, v: Option<&str>) -> Option<i64> {
            parse_user_instant(v?, now_ms)
                .map_err(|e| p.push(format!("{key}: {e}")))
                .ok()
        }
        let window_ms = dur(
            &mut p,
            "window (--window)",
            r.window.as_deref(),
            DEFAULT_WINDOW,
        );
        let incremental = match r.mode.as_deref() {
            None | Some("range") => false,
            Some("incremental") => true,
            Some(m) => {
                p.push(format!("range.mode `{m}` must be `range` or `incremental`"));
                false
            }
        };
        let incremental = incremental && command == Command::Run;
        let lookback_ms = incremental.then(|| {
            dur(
                &mut p,
                "range.lookback",
                r.lookback.as_deref(),
                DEFAULT_LOOKBACK,
            )
        });
        let mode = if incremental {
            let start = instant(&mut p, now_ms, "range.start", r.start.as_deref());
            let until = instant(
                &mut p,
                now_ms,
                "range.until (--until)",
                r.until.as_deref().or(Some("today")),
            );
            if r.start.is_none() {
                p.push("range.start is required for incremental mode: where a new user's history begins, e.g. start = \"2025-01-01\"".into());
            }
            if r.since.is_some() {
                p.push("range.since is for mode = \"range\"; incremental runs start from each user's watermark (use range.start)".into());
            }
            match (start, until) {
                (Some(s0), Some(u)) if s0 >= u => {
                    p.push(format!(
                        "range.start {} must be before range.until {}",
                        rfc3339_ms(s0),
                        rfc3339_ms(u)
                    ));
                    None
                }
                (Some(s0), Some(u)) => Some(Mode::Incremental {
                    start_ms: s0,
                    lookback_ms: lookback_ms.unwrap_or(0),
                    until_ms: u,
                }),
                _ => None,
            }
        } else {
            let since = instant(&mut p, now_ms, "since (--since)", r.since.as_deref());
            let until = instant(&mut p, now_ms, "until (--until)", r.until.as_deref());
            if r.since.is_none() {
                p.push("since (--since) is required: a UTC date like 2026-01-31 or an RFC 3339 timestamp".into());
            }
            if r.until.is_none() {
                p.push("until (--until) is required: a UTC date like 2026-02-01 or an RFC 3339 timestamp (exclusive)".into());
            }
            match (since, until) {
                (Some(a), Some(b)) if a >= b => {
                    p.push(format!(
                        "since {} must be before until {} (the range is [since, until) in UTC)",
                        r.since.as_deref().unwrap_or_default(),
                        r.until.as_deref().unwrap_or_default()
                    ));
                    None
                }
                (Some(a), Some(b)) => Some(Mode::Range {
                    since_ms: a,
                    until_ms: b,
                }),
                _ => None,
            }
        };

        let k = &file.sink;
        let is_crm = k.format.as_deref() == Some("crm");
        let format = match k.format.as_deref() {
            Some("parquet") => Some(Format::Parquet),
            Some("jsonl") => Some(Format::Jsonl),
            Some("crm") => None,
            Some(f) => {
                p.push(format!(
                    "format (--format) `{f}` must be parquet, jsonl or crm"
                ));
                None
            }
            None if command == Command::Export => {
                p.push("format (--format) is required: parquet, jsonl or crm".into());
                None
            }
            None => Some(Format::Parquet),
        };
        let crm = if is_crm {
            use crate::sink::crm::CrmKind;
            let kind = match k.crm.as_deref() {
                Some("hubspot") => Some(CrmKind::HubSpot),
                Some("bottlecrm") => Some(CrmKind::BottleCrm),
                Some(c) => {
                    p.push(format!("crm (--crm) `{c}` must be hubspot or bottlecrm"));
                    None
                }
                None => {
                    p.push("crm (--crm) is required with format crm: hubspot or bottlecrm".into());
                    None
                }
            };
            let base_url = match (kind, k.crm_base_url.as_deref()) {
                (_, Some(u)) => match reqwest::Url::parse(u) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => u.to_owned(),
                    _ => {
                        p.push(format!(
                            "crm_base_url (--crm-base-url) `{u}` is not an http(s) URL"
                        ));
                        String::new()
                    }
                },
                (Some(CrmKind::HubSpot), None) => "https://api.hubapi.com".to_owned(),
                (Some(CrmKind::BottleCrm), None) if sandbox => String::new(),
                (Some(CrmKind::BottleCrm), None) => {
                    p.push("crm_base_url (--crm-base-url) is required for BottleCRM: the URL of your server, e.g. http://127.0.0.1:8800".into());
                    String::new()
                }
                (None, None) => String::new(),
            };
            let session_gap_ms = dur(
                &mut p,
                "session_gap (--session-gap)",
                k.session_gap.as_deref(),
                "30m",
            );
            let create_contacts = match k.contact_policy.as_deref() {
                None | Some("create") => true,
                Some("skip") => false,
                Some(v) => {
                    p.push(format!(
                        "contact_policy (--contact-policy) `{v}` must be create or skip"
                    ));
                    true
                }
            };
            let rate_per_10s = k.crm_requests_per_10s.unwrap_or(100);
            if rate_per_10s < 2 {
                p.push("crm_requests_per_10s must be at least 2".into());
            }
            let other = k
                .hubspot_other_channel_type
                .clone()
                .unwrap_or_else(|| "SMS".into());
            if !matches!(other.as_str(), "SMS" | "WHATS_APP" | "LINKEDIN_MESSAGE") {
                p.push(format!("hubspot_other_channel_type `{other}` must be SMS, WHATS_APP or LINKEDIN_MESSAGE"));
            }
            kind.map(|kind| CrmSettings {
                kind,
                base_url,
                token_file: k.crm_token_file.clone(),
                session_gap_ms,
                create_contacts,
                rate_per_10s,
                other_channel_type: other,
                dry_run: k.dry_run.unwrap_or(false),
            })
        } else {
            if k.crm.is_some() || k.crm_base_url.is_some() || k.dry_run == Some(true) {
                p.push("crm, crm_base_url and dry_run (--crm, --crm-base-url, --dry-run) need format crm (--format crm)".into());
            }
            None
        };
        let out = match (k.out.as_deref(), &crm) {
            (_, Some(c)) => {
                let state_dir = k.state_dir.clone().unwrap_or_else(|| {
                    default_crm_state_dir(
                        c.kind.as_str(),
                        s.customer_id.as_deref().unwrap_or("customer"),
                        s.bot_key.as_deref().unwrap_or("bot"),
                        std::env::var("XDG_DATA_HOME").ok(),
                        std::env::var("HOME").ok(),
                    )
                });
                let out = match k.out.as_deref() {
                    Some(o) if o != Path::new("-") => o.to_owned(),
                    _ => state_dir.clone(),
                };
                Some(OutTarget::Crm {
                    out,
                    state_dir,
                    crm: c.clone(),
                })
            }
            (Some(o), None) if o == Path::new("-") => {
                if format == Some(Format::Parquet) {
                    p.push(
                        "--out - (stdout) needs --format jsonl; Parquet needs a directory".into(),
                    );
                }
                if k.gzip == Some(true) {
                    p.push(
                        "--gzip does not apply to --out - (stdout); pipe into gzip instead".into(),
                    );
                }
                Some(OutTarget::Stdout)
            }
            (Some(o), None) => Some(OutTarget::Dir {
                out: o.to_owned(),
                state_dir: k.state_dir.clone().unwrap_or_else(|| o.join("_state")),
            }),
            (None, None) if is_crm => None,
            (None, None) => {
                p.push(
                    "out (--out) is required: an output directory, or - for JSONL on stdout".into(),
                );
                None
            }
        };
        let gzip = k.gzip.unwrap_or(false);
        if gzip && format == Some(Format::Parquet) {
            p.push("gzip (--gzip) applies to JSONL only; Parquet files are zstd-compressed".into());
        }
        let target_file_bytes = k.target_file_bytes.unwrap_or(DEFAULT_TARGET_FILE_BYTES);
        if target_file_bytes < 1024 {
            p.push(format!(
                "target_file_bytes {target_file_bytes} is too small (at least 1024)"
            ));
        }
        let row_group_bytes = k.row_group_bytes.unwrap_or(DEFAULT_ROW_GROUP_BYTES);
        if row_group_bytes < 1024 {
            p.push(format!(
                "row_group_bytes {row_group_bytes} is too small (at least 1024)"
            ));
        }
        let checkpoint_users = k.checkpoint_users.unwrap_or(DEFAULT_CHECKPOINT_USERS);
        if checkpoint_users == 0 {
            p.push("checkpoint_users must be at least 1".into());
        }
        let encoding = Encoding::new(
            format.unwrap_or(Format::Parquet),
            gzip,
            k.zstd_level.unwrap_or(DEFAULT_ZSTD_LEVEL),
            row_group_bytes.max(1),
            6,
        )
        .map_err(|e| p.push(format!("zstd_level: {e}")))
        .ok();

        let namespace = match (command, mode) {
            (Command::Export, _) => "export".to_owned(),
            (Command::Backfill, Some(Mode::Range { since_ms, until_ms })) => {
                format!("backfill:{}:{}", rfc3339_ms(since_ms), rfc3339_ms(until_ms))
            }
            (_, Some(Mode::Incremental { .. })) => "incremental".to_owned(),
            _ => "range".to_owned(),
        };

        if !p.is_empty() {
            return Err(ConfigError::Invalid(p));
        }
        Ok(Settings {
            provider: provider.unwrap_or(Provider::Custom),
            base_url,
            customer_id,
            bot_key,
            api_key_file: s.api_key_file.clone(),
            users,
            mode: mode.expect("checked above"),
            window_ms,
            lookback_ms,
            page_size,
            concurrency,
            max_rps,
            timeout_secs,
            max_retries,
            users_keys: UsersKeys {
                list_keys: s
                    .users_list_keys
                    .clone()
                    .unwrap_or_else(|| UsersKeys::default().list_keys),
                id_keys: s
                    .user_id_keys
                    .clone()
                    .unwrap_or_else(|| UsersKeys::default().id_keys),
            },
            conversations_keys: s
                .conversations_keys
                .clone()
                .unwrap_or_else(|| vec!["conversations".into(), "messages".into()]),
            out: out.expect("checked above"),
            encoding: encoding.expect("checked above"),
            target_file_bytes,
            checkpoint_users,
            namespace,
            crash_after_journal: None,
            crm_token: None,
            crash_after_crm_writes: None,
        })
    }

    /// Reads the API key: `api_key_file` if set, else `ENGATI_API_KEY`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the file or variable.
    pub fn read_key(&self, env_key: Option<String>) -> Result<Secret, ConfigError> {
        if let Some(f) = &self.api_key_file {
            return Secret::from_file(f).map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "api_key_file (--api-key-file) {}: {e}",
                    f.display()
                )])
            });
        }
        match env_key.map(Secret::new) {
            Some(k) if !k.is_empty() => Ok(k),
            _ => Err(ConfigError::Invalid(vec![format!(
                "no API key: set {API_KEY_ENV} or pass --api-key-file PATH (the key is never a flag or a pipeline value)"
            )])),
        }
    }

    /// Reads the CRM token: `crm_token_file` if set, else the CRM's environment variable
    /// (`env_value`). A dry run needs none.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the file or variable.
    pub fn read_crm_token(
        &self,
        env_value: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Option<Secret>, ConfigError> {
        let OutTarget::Crm { crm, .. } = &self.out else {
            return Ok(None);
        };
        if let Some(f) = &crm.token_file {
            return Secret::from_file(f).map(Some).map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "crm_token_file (--crm-token-file) {}: {e}",
                    f.display()
                )])
            });
        }
        let var = crm.kind.token_env();
        match env_value(var).map(Secret::new) {
            Some(t) if !t.is_empty() => Ok(Some(t)),
            _ if crm.dry_run => Ok(None),
            _ => Err(ConfigError::Invalid(vec![format!(
                "no {} token: set {var} or pass --crm-token-file PATH (never a flag value or a pipeline value)",
                crm.kind.as_str()
            )])),
        }
    }

    /// Checks the output directory can be created and written (before any request).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the directory.
    pub fn check_output(&self) -> Result<(), ConfigError> {
        let (OutTarget::Dir { out, .. } | OutTarget::Crm { out, .. }) = &self.out else {
            return Ok(());
        };
        let bad = |e: std::io::Error| {
            ConfigError::Invalid(vec![format!(
                "out (--out) {}: not writable ({e}); choose a directory you can write to",
                out.display()
            )])
        };
        std::fs::create_dir_all(out).map_err(bad)?;
        let probe = out.join(".engati-etl-write-probe.tmp");
        std::fs::write(&probe, b"").map_err(bad)?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// Builds the run spec with the key.
    pub fn into_spec(self, api_key: Secret) -> RunSpec {
        let report_options = self.report_options();
        let client = ClientConfig {
            base_url: self.base_url.clone(),
            customer_id: self.customer_id.clone(),
            bot_key: self.bot_key.clone(),
            api_key,
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            concurrency: self.concurrency,
            max_rps: self.max_rps,
            max_retries: self.max_retries,
            backoff_min: std::time::Duration::from_millis(200),
            backoff_max: std::time::Duration::from_secs(30),
            conversations_keys: self.conversations_keys.clone(),
            users_keys: self.users_keys.clone(),
        };
        let output = match &self.out {
            OutTarget::Dir { out, state_dir } => OutputSpec::Files {
                out_dir: out.clone(),
                state_dir: state_dir.clone(),
                encoding: self.encoding.clone(),
                target_file_bytes: self.target_file_bytes,
                crash_after_journal: self.crash_after_journal,
            },
            OutTarget::Stdout => OutputSpec::Stdout,
            OutTarget::Crm {
                out,
                state_dir,
                crm,
            } => OutputSpec::Crm {
                out_dir: out.clone(),
                state_dir: state_dir.clone(),
                crm: crate::pipeline::CrmOutput {
                    kind: crm.kind,
                    base_url: crm.base_url.clone(),
                    token: self.crm_token.clone().unwrap_or_else(|| Secret::new("")),
                    session_gap_ms: crm.session_gap_ms,
                    create_contacts: crm.create_contacts,
                    rate_per_10s: crm.rate_per_10s,
                    other_channel_type: crm.other_channel_type.clone(),
                    dry_run: crm.dry_run,
                    crash_after_writes: self.crash_after_crm_writes,
                },
                crash_after_journal: self.crash_after_journal,
            },
        };
        RunSpec {
            provider: self.provider,
            client,
            users: self.users,
            mode: self.mode,
            window_ms: self.window_ms,
            page_size: self.page_size,
            checkpoint_users: self.checkpoint_users,
            lookahead: DEFAULT_LOOKAHEAD_CELLS,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            output,
            namespace: self.namespace,
            report_options,
        }
    }

    /// The options as the run report shows them (no secrets).
    pub fn report_options(&self) -> ReportOptions {
        let (mode, since, until) = match self.mode {
            Mode::Range { since_ms, until_ms } => (
                if self.namespace.starts_with("backfill") {
                    "backfill"
                } else {
                    "range"
                },
                since_ms,
                until_ms,
            ),
            Mode::Incremental {
                start_ms, until_ms, ..
            } => ("incremental", start_ms, until_ms),
        };
        ReportOptions {
            provider: self.provider.to_string(),
            base_url: self.base_url.clone(),
            customer_id: self.customer_id.clone(),
            bot_key: self.bot_key.clone(),
            attributes: match &self.users {
                UsersSource::Filters(f) => f.iter().map(ToString::to_string).collect(),
                UsersSource::File(_) => Vec::new(),
            },
            users_file: match &self.users {
                UsersSource::File(p) => Some(p.display().to_string()),
                UsersSource::Filters(_) => None,
            },
            mode: mode.into(),
            since: rfc3339_ms(since),
            until: rfc3339_ms(until),
            window: format_duration_ms(self.window_ms),
            lookback: self.lookback_ms.map(format_duration_ms),
            page_size: self.page_size,
            concurrency: self.concurrency,
            max_rps: self.max_rps,
            format: match &self.out {
                OutTarget::Stdout => "jsonl".into(),
                OutTarget::Dir { .. } => self.encoding.extension().into(),
                OutTarget::Crm { crm, .. } => format!("crm:{}", crm.kind.as_str()),
            },
            out: match &self.out {
                OutTarget::Dir { out, .. } | OutTarget::Crm { out, .. } => {
                    out.display().to_string()
                }
                OutTarget::Stdout => "-".into(),
            },
            state_dir: match &self.out {
                OutTarget::Dir { state_dir, .. } | OutTarget::Crm { state_dir, .. } => {
                    Some(state_dir.display().to_string())
                }
                OutTarget::Stdout => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PipelineFile {
        toml::from_str(
            r#"
            [source]
            provider = "engati"
            customer_id = 61179
            bot_key = "bb67e0773bed4c7e"
            attributes = ["feedback=1"]
            [range]
            since = "2026-01-01"
            until = "2026-02-01"
            [sink]
            format = "parquet"
            out = "out/x"
        "#,
        )
        .unwrap()
    }

    #[test]
    fn a_complete_file_validates_with_defaults() {
        let s = Settings::validate(&base(), Command::Run, 0).unwrap();
        assert_eq!(s.base_url, "https://api.engati.ai/");
        assert_eq!(s.customer_id, "61179");
        assert_eq!((s.page_size, s.concurrency, s.max_rps), (500, 16, 50));
        assert_eq!(s.window_ms, crate::time::DAY_MS);
        assert_eq!(s.namespace, "range");
        assert_eq!(
            s.out,
            OutTarget::Dir {
                out: "out/x".into(),
                state_dir: "out/x/_state".into()
            }
        );
    }

    #[test]
    fn flags_override_the_file() {
        let o = Overrides {
            concurrency: Some(4),
            attributes: vec!["segment=vip".into()],
            ..Default::default()
        };
        let s = Settings::validate(&base().merge(&o), Command::Run, 0).unwrap();
        assert_eq!(s.concurrency, 4);
        assert_eq!(
            s.users,
            UsersSource::Filters(vec!["segment=vip".parse().unwrap()])
        );
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let o = Overrides {
            since: Some("2026-03-01".into()),
            attributes: vec!["nonsense".into()],
            page_size: Some(900),
            provider: Some("custom".into()),
            ..Default::default()
        };
        let err = Settings::validate(&base().merge(&o), Command::Run, 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("since 2026-03-01 must be before until 2026-02-01"),
            "{err}"
        );
        assert!(
            err.contains("`nonsense` must look like NAME=VALUE"),
            "{err}"
        );
        assert!(err.contains("page_size (--page-size) 900"), "{err}");
        assert!(
            err.contains("base_url (--base-url) is required for provider `custom`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, "[source]\nprovider = \"engati\"\nconcurency = 4\n").unwrap();
        let err = PipelineFile::load(&f).unwrap_err().to_string();
        assert!(err.contains("concurency"), "{err}");
    }

    #[test]
    fn stdout_needs_jsonl_and_the_key_never_comes_from_flags() {
        let o = Overrides {
            out: Some("-".into()),
            ..Default::default()
        };
        let err = Settings::validate(&base().merge(&o), Command::Export, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --format jsonl"), "{err}");
        let s = Settings::validate(&base(), Command::Run, 0).unwrap();
        let err = s.read_key(None).unwrap_err().to_string();
        assert!(err.contains("ENGATI_API_KEY"), "{err}");
        assert_eq!(s.read_key(Some("abc".into())).unwrap().expose(), "abc");
    }
}
