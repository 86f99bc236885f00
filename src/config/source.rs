//! `[source]` and the source flags: the Engati tenant, which users, and how hard to press the
//! API. Validates into an [`engati::SourceSpec`](crate::engati::SourceSpec).

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use super::values::{ConcurrencyParser, EnumParser, NumParser, check_base_url, string_or_int};
use super::{
    DEFAULT_CONCURRENCY, DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_MAX_RPS,
    DEFAULT_PAGE_SIZE, DEFAULT_TIMEOUT_SECS, Problems, merge_fields,
};
use crate::engati::adaptive::Concurrency;
use crate::engati::client::ClientConfig;
use crate::engati::provider::Provider;
use crate::engati::users::AttributeFilter;
use crate::engati::wire::UsersKeys;
use crate::engati::{SourceSpec, UsersSource};
use crate::secret::Secret;
use crate::shard::Shard;

/// `[source]`: the Engati tenant and how to talk to it. Also the source flags.
#[derive(Debug, Clone, Default, Deserialize, Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Source")]
pub struct SourceSection {
    /// engati | engati-com | alertspanel | floatchat | technowiz | custom.
    #[arg(long, value_name = "PROVIDER", env = "ENGATI_PROVIDER",
          value_parser = EnumParser::<Provider>::new("provider (--provider)"))]
    pub provider: Option<Provider>,
    /// API base URL (required for technowiz and custom; overrides a provider's preset).
    #[arg(long, value_name = "URL", env = "ENGATI_BASE_URL")]
    pub base_url: Option<String>,
    /// Numeric customer id (Integrations > Engati API).
    #[arg(long, value_name = "ID", env = "ENGATI_CUSTOMER_ID")]
    #[serde(default, deserialize_with = "string_or_int")]
    pub customer_id: Option<String>,
    /// Bot key (16 hex characters).
    #[arg(long, value_name = "KEY", env = "ENGATI_BOT_KEY")]
    pub bot_key: Option<String>,
    /// Read the API key from this file instead of ENGATI_API_KEY (never put the key itself in a
    /// pipeline file or a flag).
    #[arg(long, value_name = "PATH", env = "ENGATI_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Users whose attribute NAME equals VALUE; repeat for a union (each user once).
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    pub attributes: Option<Vec<String>>,
    /// A text/CSV file of channel-user ids (skips the Users API).
    #[arg(long, value_name = "PATH")]
    pub users_file: Option<PathBuf>,
    /// Messages per request, 1..=500 [default: 500].
    #[arg(long, value_name = "N", help_heading = "Tuning",
          value_parser = NumParser::<u32>::new("page_size (--page-size)", 1, 500))]
    pub page_size: Option<u32>,
    /// Requests in flight at most, or `auto`: adapted to the server's round-trip times and
    /// 429/503 answers, within --max-concurrency [default: 16].
    #[arg(long, value_name = "N|auto", env = "ENGATI_ETL_CONCURRENCY", help_heading = "Tuning",
          value_parser = ConcurrencyParser::new(
              "concurrency (--concurrency or ENGATI_ETL_CONCURRENCY)", 1024))]
    pub concurrency: Option<Concurrency>,
    /// With `--concurrency auto`: the most requests in flight it may reach [default: 64].
    #[arg(long, value_name = "N", help_heading = "Tuning",
          value_parser = NumParser::<usize>::new("max_concurrency (--max-concurrency)", 1, 1024))]
    pub max_concurrency: Option<usize>,
    /// Requests per second at most, all tasks together [default: 50].
    #[arg(long, value_name = "N", env = "ENGATI_ETL_MAX_RPS", help_heading = "Tuning",
          value_parser = NumParser::<u32>::new(
              "max_rps (--max-rps or ENGATI_ETL_MAX_RPS)", 1, 100_000))]
    pub max_rps: Option<u32>,
    /// Request timeout in seconds (connect, headers and body) [default: 30].
    #[arg(long, value_name = "SECS", help_heading = "Tuning",
          value_parser = NumParser::<u64>::new("timeout_secs (--timeout-secs)", 1, 3600))]
    pub timeout_secs: Option<u64>,
    /// Retries per request on 429/5xx/timeouts/truncated bodies [default: 8].
    #[arg(long, value_name = "N", help_heading = "Tuning",
          value_parser = NumParser::<usize>::new("max_retries (--max-retries)", 0, 100))]
    pub max_retries: Option<usize>,
    /// Read each window of more than one page twice and keep it only when both reads agree:
    /// also catches a message deleted while its window is paged; costs one more read of those
    /// windows [default: false].
    #[arg(
        long,
        help_heading = "Tuning",
        num_args = 0,
        default_missing_value = "true"
    )]
    pub double_read: Option<bool>,
    /// Keys that may hold the Users API list (tolerant reader). Default `["users"]`.
    #[arg(skip)]
    pub users_list_keys: Option<Vec<String>>,
    /// Keys that may hold a user's id. Default `["channel_user_id", "channelUserId", "user_id"]`.
    #[arg(skip)]
    pub user_id_keys: Option<Vec<String>>,
    /// Keys that may hold a Conversations page. Default `["conversations", "messages"]`.
    #[arg(skip)]
    pub conversations_keys: Option<Vec<String>>,
    /// Export only shard I of N (0-based, e.g. 0/4): the users whose xxh3_64(channel_user_id)
    /// mod N is I. Each shard keeps its own state; N shards may write one output at once.
    #[arg(
        long,
        value_name = "I/N",
        env = "ENGATI_ETL_SHARD",
        help_heading = "Shards"
    )]
    pub shard: Option<String>,
    /// Number of shards N, the shard index I coming from JOB_COMPLETION_INDEX (a Kubernetes
    /// Indexed Job) when --shard is not given.
    #[arg(long, value_name = "N", help_heading = "Shards",
          value_parser = NumParser::<u32>::new("shards (--shards)", 1, crate::shard::MAX_SHARDS))]
    pub shards: Option<u32>,
    /// The shard index a Kubernetes Indexed Job gives each pod (JOB_COMPLETION_INDEX); used
    /// with `shards`. Not a pipeline key.
    #[arg(long, hide = true, env = "JOB_COMPLETION_INDEX", value_name = "I")]
    #[serde(skip)]
    pub job_completion_index: Option<String>,
}

merge_fields!(SourceSection; provider, base_url, customer_id, bot_key, api_key_file, attributes,
    users_file, page_size, concurrency, max_concurrency, max_rps, timeout_secs, max_retries,
    double_read, users_list_keys, user_id_keys, conversations_keys, shard, shards,
    job_completion_index);

impl SourceSection {
    /// Validates the section into the source's runtime settings (the API key stays empty until
    /// read by `config::read_key`). With `sandbox`, the tenant's ids come from the sandbox and
    /// may be absent here.
    pub fn validate(&self, sandbox: bool, p: &mut Problems) -> Option<SourceSpec> {
        let provider = self.provider(sandbox, p);
        let base_url = self.base_url(provider, sandbox, p);
        let customer_id = self.customer_id(sandbox, p);
        let bot_key = self.bot_key(sandbox, p);
        let users = self.users(p);
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=500).contains(&page_size) {
            p.push(format!("page_size (--page-size) {page_size} must be between 1 and 500 (the API's largest page)"));
        }
        let max_concurrency = self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if !(1..=1024).contains(&max_concurrency) {
            p.push(format!(
                "max_concurrency (--max-concurrency) {max_concurrency} must be between 1 and 1024"
            ));
        }
        let (concurrency, adaptive) = match self.concurrency {
            None => (DEFAULT_CONCURRENCY, false),
            Some(Concurrency::Fixed(n)) => (n, false),
            Some(Concurrency::Auto) => (max_concurrency, true),
        };
        if !(1..=1024).contains(&concurrency) {
            p.push(format!(
                "concurrency (--concurrency) {concurrency} must be auto or between 1 and 1024"
            ));
        }
        let max_rps = self.max_rps.unwrap_or(DEFAULT_MAX_RPS);
        if !(1..=100_000).contains(&max_rps) {
            p.push(format!(
                "max_rps (--max-rps) {max_rps} must be between 1 and 100000"
            ));
        }
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout_secs) {
            p.push(format!(
                "timeout_secs (--timeout-secs) {timeout_secs} must be between 1 and 3600"
            ));
        }
        let max_retries = self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        if max_retries > 100 {
            p.push(format!(
                "max_retries (--max-retries) {max_retries} must be between 0 and 100"
            ));
        }
        let defaults = UsersKeys::default();
        Some(SourceSpec {
            provider: provider.unwrap_or(Provider::Custom),
            api_key_file: self.api_key_file.clone(),
            users,
            page_size,
            double_read: self.double_read.unwrap_or(false),
            client: ClientConfig {
                base_url,
                customer_id,
                bot_key,
                api_key: Secret::new(""),
                timeout: std::time::Duration::from_secs(timeout_secs),
                concurrency,
                adaptive,
                max_rps,
                max_retries,
                backoff_min: std::time::Duration::from_millis(200),
                backoff_max: std::time::Duration::from_secs(30),
                conversations_keys: self
                    .conversations_keys
                    .clone()
                    .unwrap_or_else(|| vec!["conversations".into(), "messages".into()]),
                users_keys: UsersKeys {
                    list_keys: self.users_list_keys.clone().unwrap_or(defaults.list_keys),
                    id_keys: self.user_id_keys.clone().unwrap_or(defaults.id_keys),
                },
            },
        })
    }

    /// The shard this worker exports: `shard` (`--shard I/N`, `ENGATI_ETL_SHARD`), else
    /// `shards` N with the index from `JOB_COMPLETION_INDEX`. `None` for an unsharded run (no
    /// setting, or one shard).
    pub fn shard_spec(&self, p: &mut Problems) -> Option<Shard> {
        let from_shard = self.shard.as_deref().map(|t| {
            Shard::parse(t).map_err(|e| p.push(format!("shard (--shard or ENGATI_ETL_SHARD): {e}")))
        });
        match (from_shard, self.shards) {
            (Some(Ok(s)), Some(n)) if s.map_or(1, |s| s.count) != n => {
                p.push(format!(
                    "shard (--shard) {} says {} shards but shards (--shards) says {n}; give one of them",
                    self.shard.as_deref().unwrap_or_default().trim(),
                    s.map_or(1, |s| s.count)
                ));
                None
            }
            (Some(Ok(s)), _) => s,
            (Some(Err(())), _) => None,
            (None, Some(n)) => {
                let Some(text) = self.job_completion_index.as_deref() else {
                    p.push(format!("shards (--shards) {n} needs this worker's shard index: JOB_COMPLETION_INDEX (set by a Kubernetes Indexed Job) or --shard I/{n}"));
                    return None;
                };
                let index = text.trim().parse::<u32>().map_err(|_| {
                    p.push(format!(
                        "JOB_COMPLETION_INDEX `{text}` is not a shard index (0 to {})",
                        n.saturating_sub(1)
                    ));
                });
                index
                    .ok()
                    .and_then(|i| {
                        Shard::new(i, n)
                            .map_err(|e| {
                                p.push(format!("JOB_COMPLETION_INDEX with shards (--shards): {e}"))
                            })
                            .ok()
                    })
                    .flatten()
            }
            (None, None) => None,
        }
    }

    fn provider(&self, sandbox: bool, p: &mut Problems) -> Option<Provider> {
        match self.provider {
            Some(v) => Some(v),
            None if sandbox => Some(Provider::Custom),
            None => {
                p.push("provider (--provider) is required: engati, engati-com, alertspanel, floatchat, technowiz or custom");
                None
            }
        }
    }

    fn base_url(&self, provider: Option<Provider>, sandbox: bool, p: &mut Problems) -> String {
        match (provider, self.base_url.as_deref()) {
            (_, Some(u)) => check_base_url("base_url (--base-url)", u).unwrap_or_else(|e| {
                p.push(e);
                String::new()
            }),
            (Some(pr), None) => match pr.base_url() {
                Some(b) => b.to_owned(),
                None if sandbox => String::new(),
                None => {
                    p.push(format!("base_url (--base-url) is required for provider `{pr}` (its host is not known)"));
                    String::new()
                }
            },
            (None, None) => String::new(),
        }
    }

    fn customer_id(&self, sandbox: bool, p: &mut Problems) -> String {
        match self.customer_id.as_deref() {
            Some(c) if !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) => c.to_owned(),
            Some(c) => {
                p.push(format!("customer_id (--customer-id) `{c}` must be digits, e.g. 61179 (Integrations > Engati API)"));
                String::new()
            }
            None if sandbox => String::new(),
            None => {
                p.push("customer_id (--customer-id) is required");
                String::new()
            }
        }
    }

    fn bot_key(&self, sandbox: bool, p: &mut Problems) -> String {
        match self.bot_key.as_deref() {
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
                p.push("bot_key (--bot-key) is required");
                String::new()
            }
        }
    }

    fn users(&self, p: &mut Problems) -> UsersSource {
        let attrs = self.attributes.clone().unwrap_or_default();
        let mut filters = Vec::new();
        for a in &attrs {
            match a.parse::<AttributeFilter>() {
                Ok(f) if !filters.contains(&f) => filters.push(f),
                Ok(_) => {}
                Err(e) => p.push(format!("attributes (--attribute): {e}")),
            }
        }
        match (&self.users_file, attrs.is_empty()) {
            (Some(f), true) => UsersSource::File(f.clone()),
            (Some(_), false) => {
                p.push(
                    "use either attributes (--attribute) or users_file (--users-file), not both",
                );
                UsersSource::Filters(filters)
            }
            (None, false) => UsersSource::Filters(filters),
            (None, true) => {
                p.push("say which users: --attribute NAME=VALUE (repeatable) or --users-file PATH");
                UsersSource::Filters(filters)
            }
        }
    }
}
