//! `engati-etl send ...` flags (clap derive; doc comments are the `--help` text). The flag
//! contract is fixed (other tooling drives it): see issue 10 and the README's "Send" section.
//! Flags override a pipeline file's `[send]` / `[source]` values.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::config::SendSection;
use crate::config::SourceSection;
use crate::config::values::EnumParser;
use crate::engati::provider::Provider;

/// `send` subcommands.
#[derive(Debug, Subcommand)]
pub enum SendCmd {
    /// Send a WhatsApp template message to each row's phone number.
    Template(TemplateArgs),
    /// Run a bot flow (API trigger v1 or v2, WhatsApp or RCS) for each row's phone number.
    Trigger(TriggerArgs),
    /// Add the rows' users to broadcasts (one per batch): direct text or a WhatsApp template.
    Broadcast(BroadcastArgs),
    /// Run the `[send]` section of a pipeline file (flags override it).
    Run(RunArgs),
    /// A campaign's rows per status, its failed and unknown rows; --reconcile settles unknown
    /// rows from the conversation history.
    Status(StatusArgs),
    /// Send a campaign's unknown or failed rows again, on your decision (audited as manual).
    Retry(RetryArgs),
}

/// The tenant (as for `export`); the key comes from ENGATI_API_KEY or --api-key-file.
#[derive(Debug, Clone, Default, Args)]
pub struct SendSourceArgs {
    /// engati | engati-com | alertspanel | floatchat | technowiz | custom.
    #[arg(long, value_name = "PROVIDER", env = "ENGATI_PROVIDER",
          value_parser = EnumParser::<Provider>::new("provider (--provider)"))]
    pub provider: Option<Provider>,
    /// API base URL (required for technowiz and custom).
    #[arg(long, value_name = "URL", env = "ENGATI_BASE_URL")]
    pub base_url: Option<String>,
    /// Numeric customer id.
    #[arg(long, value_name = "ID", env = "ENGATI_CUSTOMER_ID")]
    pub customer_id: Option<String>,
    /// Bot key.
    #[arg(long, value_name = "KEY", env = "ENGATI_BOT_KEY")]
    pub bot_key: Option<String>,
    /// Read the API key from this file instead of ENGATI_API_KEY.
    #[arg(long, value_name = "PATH", env = "ENGATI_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Whole-request timeout in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
    /// Retries of a request that certainly was not processed (429, connection refused) [default: 8].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<usize>,
}

impl SendSourceArgs {
    /// Applies the flags to a `[source]` section.
    pub fn apply(&self, s: &mut SourceSection) {
        macro_rules! over {
            ($($f:ident),*) => { $( if self.$f.is_some() { s.$f = self.$f.clone(); } )* };
        }
        over!(provider, base_url, customer_id, bot_key, api_key_file);
    }
}

/// Flags every campaign has.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// The table: a Parquet file or directory, a CSV, or a JSONL / JSONL.gz file.
    #[arg(long, value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// parquet | csv | jsonl | jsonl.gz [default: from the extension].
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
    /// Names this send (letters, digits, . _ -); re-runs of the same campaign never send a row twice.
    #[arg(long, value_name = "ID")]
    pub campaign: Option<String>,
    /// Directory for the result log (sends/campaign=ID/) and _send_report.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// State directory (the send ledger) [default: OUT/_state].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The row's identity in the campaign [default: the normalized phone number, or the user id].
    #[arg(long, value_name = "COL")]
    pub key_column: Option<String>,
    /// Skip (and count) rows whose value here is false/no/0/empty.
    #[arg(long, value_name = "COL")]
    pub consent_column: Option<String>,
    /// Country (ISO code, e.g. IN) of phone numbers written without a country code.
    #[arg(long, value_name = "CC")]
    pub default_country: Option<String>,
    /// Validate every row and render every request to dry-run.jsonl; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Requests in flight at most [default: 4].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Requests per second at most [default: 10].
    #[arg(long, value_name = "N")]
    pub max_rps: Option<u32>,
    /// Result log format: parquet or jsonl [default: parquet].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Stop (exit 4) when the first N rows all fail with the same API error; 0 = off [default: 20].
    #[arg(long, value_name = "N")]
    pub circuit_breaker: Option<usize>,
}

impl CommonArgs {
    /// The flags as a `[send]` section (unset flags are `None`).
    pub fn section(&self, kind: Option<&str>, source: &SendSourceArgs) -> SendSection {
        SendSection {
            kind: kind.map(Into::into),
            input: self.input.clone(),
            input_format: self.input_format.clone(),
            campaign: self.campaign.clone(),
            out: self.out.clone(),
            state_dir: self.state_dir.clone(),
            format: self.format.clone(),
            key_column: self.key_column.clone(),
            consent_column: self.consent_column.clone(),
            default_country: self.default_country.clone(),
            dry_run: self.dry_run.then_some(true),
            concurrency: self.concurrency,
            max_rps: self.max_rps,
            timeout_secs: source.timeout_secs,
            max_retries: source.max_retries,
            circuit_breaker: self.circuit_breaker,
            ..SendSection::default()
        }
    }
}

/// `send template` flags.
#[derive(Debug, Clone, Args)]
pub struct TemplateArgs {
    #[command(flatten)]
    /// Tenant.
    pub source: SendSourceArgs,
    #[command(flatten)]
    /// Common.
    pub common: CommonArgs,
    /// Column with the phone number (sent as E.164).
    #[arg(long, value_name = "COL")]
    pub phone_column: Option<String>,
    /// Template name.
    #[arg(long, value_name = "NAME")]
    pub template_name: Option<String>,
    /// Template namespace.
    #[arg(long, value_name = "NS")]
    pub template_namespace: Option<String>,
    /// Template language code [default: en].
    #[arg(long, value_name = "CODE")]
    pub language: Option<String>,
    /// A body parameter, as text, from this column; repeat in order.
    #[arg(long = "param", value_name = "COL")]
    pub params: Vec<String>,
    /// The full components JSON with {{column}} placeholders (instead of --param).
    #[arg(long, value_name = "FILE", conflicts_with = "params")]
    pub components: Option<PathBuf>,
}

/// `send trigger` flags.
#[derive(Debug, Clone, Args)]
pub struct TriggerArgs {
    #[command(flatten)]
    /// Tenant.
    pub source: SendSourceArgs,
    #[command(flatten)]
    /// Common.
    pub common: CommonArgs,
    /// Column with the phone number (sent as digits with the country code).
    #[arg(long, value_name = "COL")]
    pub phone_column: Option<String>,
    /// The flow key (Flow > path info).
    #[arg(long, value_name = "KEY")]
    pub flow_key: Option<String>,
    /// v1 (query parameters) or v2 (JSON body) [default: v2].
    #[arg(long, value_name = "VERSION")]
    pub api: Option<String>,
    /// whatsapp or rcs (rcs needs v2) [default: whatsapp].
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// NAME=COL: set user attribute NAME from column COL (v2: body key; v1: query parameter).
    #[arg(long = "attribute", value_name = "NAME=COL")]
    pub attributes: Vec<String>,
}

/// `send broadcast` flags.
#[derive(Debug, Clone, Args)]
pub struct BroadcastArgs {
    #[command(flatten)]
    /// Tenant.
    pub source: SendSourceArgs,
    #[command(flatten)]
    /// Common.
    pub common: CommonArgs,
    /// Column with the channel-user id (WhatsApp: the phone number).
    #[arg(long, value_name = "COL")]
    pub user_id_column: Option<String>,
    /// Channel [default: whatsapp].
    #[arg(long, value_name = "CHANNEL")]
    pub channel: Option<String>,
    /// Broadcast title.
    #[arg(long, value_name = "TITLE")]
    pub title: Option<String>,
    /// A direct text message.
    #[arg(long, value_name = "TEXT", conflicts_with = "template_name")]
    pub message: Option<String>,
    /// A WhatsApp template instead of a text.
    #[arg(long, value_name = "NAME")]
    pub template_name: Option<String>,
    /// Template namespace.
    #[arg(long, value_name = "NS")]
    pub template_namespace: Option<String>,
    /// Template language code [default: en].
    #[arg(long, value_name = "CODE")]
    pub language: Option<String>,
    /// Publication time, UTC (a date or RFC 3339); a past time sends at once [default: now].
    #[arg(long, value_name = "DATE")]
    pub publish_at: Option<String>,
    /// Recipients per broadcast [default: 1000].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
}

/// `send run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The pipeline file with a `[send]` section (pipelines/send-demo.toml).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    #[command(flatten)]
    /// Tenant overrides.
    pub source: SendSourceArgs,
    #[command(flatten)]
    /// Common overrides.
    pub common: CommonArgs,
}

/// Where a campaign's state is, and the tenant overrides for reading the API.
#[derive(Debug, Clone, Args)]
pub struct CampaignTarget {
    /// The campaign id.
    #[arg(long, value_name = "ID")]
    pub campaign: String,
    /// The output directory (ledger in OUT/_state).
    #[arg(long, value_name = "DIR", required_unless_present = "state_dir")]
    pub out: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    /// Tenant overrides (default: as recorded with the campaign).
    pub source: SendSourceArgs,
}

/// `send status` flags.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    /// The campaign.
    pub target: CampaignTarget,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Settle unknown rows from the conversation history (templates, broadcasts) first.
    #[arg(long)]
    pub reconcile: bool,
}

/// `send retry` flags.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    /// The campaign.
    pub target: CampaignTarget,
    /// Which rows: unknown or failed.
    #[arg(long, value_name = "STATUS")]
    pub status: String,
    /// Requests in flight at most [default: 4].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Requests per second at most [default: 10].
    #[arg(long, value_name = "N")]
    pub max_rps: Option<u32>,
    /// Result log format: parquet or jsonl [default: parquet].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

impl TemplateArgs {
    /// The flags as a `[send]` section.
    pub fn section(&self) -> SendSection {
        SendSection {
            phone_column: self.phone_column.clone(),
            template_name: self.template_name.clone(),
            template_namespace: self.template_namespace.clone(),
            language: self.language.clone(),
            params: (!self.params.is_empty()).then(|| self.params.clone()),
            components: self.components.clone(),
            ..self.common.section(Some("template"), &self.source)
        }
    }
}

impl TriggerArgs {
    /// The flags as a `[send]` section.
    pub fn section(&self) -> SendSection {
        SendSection {
            phone_column: self.phone_column.clone(),
            flow_key: self.flow_key.clone(),
            api: self.api.clone(),
            channel: self.channel.clone(),
            attributes: (!self.attributes.is_empty()).then(|| self.attributes.clone()),
            ..self.common.section(Some("trigger"), &self.source)
        }
    }
}

impl BroadcastArgs {
    /// The flags as a `[send]` section.
    pub fn section(&self) -> SendSection {
        SendSection {
            user_id_column: self.user_id_column.clone(),
            channel: self.channel.clone(),
            title: self.title.clone(),
            message: self.message.clone(),
            template_name: self.template_name.clone(),
            template_namespace: self.template_namespace.clone(),
            language: self.language.clone(),
            publish_at: self.publish_at.clone(),
            batch_size: self.batch_size,
            ..self.common.section(Some("broadcast"), &self.source)
        }
    }
}
