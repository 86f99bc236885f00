//! Command-line interface (clap derive). Doc comments here are the `--help` text.
//!
//! Flags that have an environment variable read it when the flag is absent, so precedence is
//! flags > environment > pipeline file > defaults. The API key is never a flag: it comes from
//! `ENGATI_API_KEY` or `--api-key-file`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::config::Overrides;

/// Export Engati chatbot conversations to Parquet or JSONL.
///
/// Lists a bot's users by attribute, pages through each user's conversations in date windows
/// with bounded concurrency, normalizes the messages and writes them atomically. Exit codes:
/// 0 success, 1 completed with rejected records, 2 usage or config error, 3 authentication,
/// 4 request rejected by the API, 5 source unavailable, 6 output failure, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "engati-etl", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
    /// More logs on stderr: -v info, -vv debug (RUST_LOG works too).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// No progress bar and no summary on stderr (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Ad hoc export, everything given as flags; no pipeline watermarks are touched.
    Export(ExportArgs),
    /// Run a pipeline file (flags override the file).
    Run(RunArgs),
    /// List the users that match the attribute filters, as JSONL or CSV on stdout.
    Users(UsersArgs),
    /// Run the Engati-compatible sandbox server and print its base URL, ids and key.
    Sandbox(SandboxArgs),
    /// Check a pipeline file, then make one cheap authenticated call.
    Validate(ValidateArgs),
    /// Export a closed historical range with a pipeline's settings, in its own resumable
    /// state namespace (nightly watermarks are not moved).
    Backfill(BackfillArgs),
    /// Show or reset a pipeline's state (watermarks, runs, files).
    #[command(subcommand)]
    State(StateCmd),
    /// Message people from a table (WhatsApp templates, broadcasts, API-triggered flows),
    /// never twice, every row accounted for.
    #[command(subcommand)]
    Send(crate::send::args::SendCmd),
}

/// `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Watermarks, recent runs with counts and outcome, files.
    Show(StateShowArgs),
    /// Move incremental watermarks back (re-export from there next run; no duplicates).
    Reset(StateResetArgs),
}

/// Where the state is: a pipeline file, or an output / state directory.
#[derive(Debug, Clone, Args)]
pub struct StateTarget {
    /// The pipeline file (its `sink.out` / `sink.state_dir`).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: Option<PathBuf>,
    /// The output directory (state in OUT/_state), e.g. for an `export`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The state directory, when not under the output.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `state show` flags.
#[derive(Debug, Clone, Args)]
pub struct StateShowArgs {
    #[command(flatten)]
    /// Which state.
    pub target: StateTarget,
    /// Show one user's watermarks.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Recent runs to list.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: usize,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `state reset` flags.
#[derive(Debug, Clone, Args)]
pub struct StateResetArgs {
    #[command(flatten)]
    /// Which state.
    pub target: StateTarget,
    /// Only this user (default: every user).
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,
    /// Move watermarks back to this date (default: remove them: full history next run).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
    /// Watermark namespace.
    #[arg(long, value_name = "NS", default_value = "incremental")]
    pub namespace: String,
}

/// `backfill` flags.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// The pipeline file (source and sink settings).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    /// Range start (inclusive), a UTC date or RFC 3339 timestamp.
    #[arg(long, value_name = "DATE")]
    pub from: String,
    /// Range end (exclusive).
    #[arg(long, value_name = "DATE")]
    pub to: String,
    /// Window length [default: the pipeline's, else 1d].
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceArgs,
    #[command(flatten)]
    /// Sink overrides.
    pub sink: SinkArgs,
}

/// Source flags (the Engati tenant, users, request limits).
#[derive(Debug, Clone, Default, Args)]
pub struct SourceArgs {
    /// engati | engati-com | alertspanel | floatchat | technowiz | custom.
    #[arg(long, value_name = "PROVIDER", env = "ENGATI_PROVIDER")]
    pub provider: Option<String>,
    /// API base URL (required for technowiz and custom; overrides a provider's preset).
    #[arg(long, value_name = "URL", env = "ENGATI_BASE_URL")]
    pub base_url: Option<String>,
    /// Numeric customer id (Integrations > Engati API).
    #[arg(long, value_name = "ID", env = "ENGATI_CUSTOMER_ID")]
    pub customer_id: Option<String>,
    /// Bot key (16 hex characters).
    #[arg(long, value_name = "KEY", env = "ENGATI_BOT_KEY")]
    pub bot_key: Option<String>,
    /// Read the API key from this file instead of ENGATI_API_KEY.
    #[arg(long, value_name = "PATH", env = "ENGATI_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Users whose attribute NAME equals VALUE; repeat for a union.
    #[arg(long = "attribute", value_name = "NAME=VALUE")]
    pub attributes: Vec<String>,
    /// A text/CSV file of channel-user ids (skips the Users API).
    #[arg(long, value_name = "PATH")]
    pub users_file: Option<PathBuf>,
    /// Messages per request, 1..=500 [default: 500].
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
    /// Requests in flight at most [default: 16].
    #[arg(long, value_name = "N", env = "ENGATI_ETL_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Requests per second at most, all tasks together [default: 50].
    #[arg(long, value_name = "N", env = "ENGATI_ETL_MAX_RPS")]
    pub max_rps: Option<u32>,
    /// Request timeout in seconds [default: 30].
    #[arg(long, value_name = "SECS")]
    pub timeout_secs: Option<u64>,
    /// Retries per request on 429/5xx/timeouts/truncated bodies [default: 8].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<usize>,
}

/// Range flags.
#[derive(Debug, Clone, Default, Args)]
pub struct RangeArgs {
    /// Start (inclusive): 2026-01-31 (UTC midnight), an RFC 3339 timestamp, today, yesterday, today-7d.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// End (exclusive), same forms.
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,
    /// Window length per request range: 1d, 6h, 30m [default: 1d].
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
}

/// Sink flags.
#[derive(Debug, Clone, Default, Args)]
pub struct SinkArgs {
    /// parquet or jsonl (export: required; run: default parquet).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Output directory, or - for JSONL on stdout.
    #[arg(long, value_name = "DIR", env = "ENGATI_ETL_OUT")]
    pub out: Option<PathBuf>,
    /// Gzip JSONL files (.jsonl.gz).
    #[arg(long, overrides_with = "no_gzip")]
    pub gzip: bool,
    /// Do not gzip JSONL files.
    #[arg(long, overrides_with = "gzip")]
    pub no_gzip: bool,
    /// State directory [default: OUT/_state].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Users per window committed together (the unit of resume) [default: 5000].
    #[arg(long, value_name = "N")]
    pub checkpoint_users: Option<usize>,
    /// Rotate output files at this many bytes [default: 134217728].
    #[arg(long, value_name = "BYTES")]
    pub target_file_bytes: Option<u64>,
    /// Parquet row-group size in bytes [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    pub row_group_bytes: Option<usize>,
    /// zstd level for Parquet, 1..=22 [default: 3].
    #[arg(long, value_name = "N")]
    pub zstd_level: Option<i32>,
    /// Testing only: abort after the N-th journaled commit, before its renames.
    #[arg(long, value_name = "N", hide = true)]
    pub crash_after_journal: Option<u64>,
    /// With --format crm: hubspot or bottlecrm.
    #[arg(long, value_name = "CRM")]
    pub crm: Option<String>,
    /// CRM base URL (HubSpot default https://api.hubapi.com; required for BottleCRM).
    #[arg(long, value_name = "URL")]
    pub crm_base_url: Option<String>,
    /// Read the CRM token from this file (else HUBSPOT_ACCESS_TOKEN / BOTTLECRM_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub crm_token_file: Option<PathBuf>,
    /// Inactivity that starts a new conversation session [default: 30m].
    #[arg(long, value_name = "DURATION")]
    pub session_gap: Option<String>,
    /// create (default) or skip users whose contact is not in the CRM.
    #[arg(long, value_name = "POLICY")]
    pub contact_policy: Option<String>,
    /// Print the planned CRM operations as JSONL on stdout; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Testing only: abort after the N-th CRM write batch, before the ledger records it.
    #[arg(long, value_name = "N", hide = true)]
    pub crash_after_crm_writes: Option<u64>,
}

/// `export` flags.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    /// Source.
    pub source: SourceArgs,
    #[command(flatten)]
    /// Range.
    pub range: RangeArgs,
    #[command(flatten)]
    /// Sink.
    pub sink: SinkArgs,
}

/// `run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The pipeline file (pipelines/*.toml).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceArgs,
    #[command(flatten)]
    /// Range overrides.
    pub range: RangeArgs,
    #[command(flatten)]
    /// Sink overrides.
    pub sink: SinkArgs,
}

/// `users` flags.
#[derive(Debug, Clone, Args)]
pub struct UsersArgs {
    /// Take the source settings from this pipeline file (flags override it).
    #[arg(long, value_name = "PIPELINE.toml")]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    /// Source.
    pub source: SourceArgs,
    /// Output format on stdout: jsonl or csv.
    #[arg(long, value_name = "FORMAT", default_value = "jsonl")]
    pub format: String,
}

/// `validate` flags.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    /// Only check the file; make no request.
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceArgs,
    #[command(flatten)]
    /// Range overrides.
    pub range: RangeArgs,
    #[command(flatten)]
    /// Sink overrides.
    pub sink: SinkArgs,
}

/// `sandbox` flags.
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 8088)]
    pub port: u16,
    /// Data seed: the same seed gives the same users, messages, ids and key.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// First day of data (UTC date).
    #[arg(long, default_value = "2026-08-01")]
    pub start: String,
    /// Days of data.
    #[arg(long, default_value_t = 31)]
    pub days: u32,
    /// Average conversation sessions per user.
    #[arg(long, default_value_t = 6.0)]
    pub sessions_per_user: f64,
    /// Latency added to every response, ms.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Retry-After on 429s, seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Share of 200 responses with a truncated body.
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Share of requests that stall for --stall-ms.
    #[arg(long, default_value_t = 0.0)]
    pub stall_rate: f64,
    /// Stall length, ms.
    #[arg(long, default_value_t = 30_000)]
    pub stall_ms: u64,
    /// Share of messages with a garbage timestamp.
    #[arg(long, default_value_t = 0.0)]
    pub malformed_rate: f64,
    /// Treat end_date as inclusive.
    #[arg(long)]
    pub end_inclusive: bool,
    /// Treat start_date as exclusive.
    #[arg(long)]
    pub start_exclusive: bool,
    /// Users API shape: users, bare-array, response-object-array, response-object-content, response-object-users.
    #[arg(long, default_value = "users")]
    pub users_shape: String,
    /// Key of the user id in Users API objects.
    #[arg(long, default_value = "channel_user_id")]
    pub users_id_key: String,
    /// Key of the Conversations message list.
    #[arg(long, default_value = "conversations")]
    pub conversations_key: String,
    /// Answer 403 to every authenticated request.
    #[arg(long)]
    pub deny_access: bool,
    /// Live arrivals: add messages every N ms while serving (0 = off).
    #[arg(long, default_value_t = 0)]
    pub live_interval_ms: u64,
    /// Live arrivals: messages per tick.
    #[arg(long, default_value_t = 1)]
    pub live_per_tick: usize,
    /// Live arrivals: timestamp them up to this many ms in the past (late delivery).
    #[arg(long, default_value_t = 0)]
    pub live_backdate_ms: i64,
    /// Also run the HubSpot emulator on this port (0 = any) and print its URL and token.
    #[arg(long, value_name = "PORT")]
    pub hubspot_port: Option<u16>,
    /// Write side: share of sends answered 500 before processing (nothing is sent).
    #[arg(long, default_value_t = 0.0)]
    pub send_refuse_rate: f64,
    /// Write side: share of sends answered 429 with Retry-After before processing.
    #[arg(long, default_value_t = 0.0)]
    pub send_throttle_rate: f64,
    /// Write side: share of sends processed (recorded), then answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub send_fail_after_rate: f64,
    /// Write side: share of sends processed, then stalled for --stall-ms.
    #[arg(long, default_value_t = 0.0)]
    pub send_stall_after_rate: f64,
}

impl SourceArgs {
    fn apply(&self, o: &mut Overrides) {
        o.provider.clone_from(&self.provider);
        o.base_url.clone_from(&self.base_url);
        o.customer_id.clone_from(&self.customer_id);
        o.bot_key.clone_from(&self.bot_key);
        o.api_key_file.clone_from(&self.api_key_file);
        o.attributes.clone_from(&self.attributes);
        o.users_file.clone_from(&self.users_file);
        o.page_size = self.page_size;
        o.concurrency = self.concurrency;
        o.max_rps = self.max_rps;
        o.timeout_secs = self.timeout_secs;
        o.max_retries = self.max_retries;
    }
}

/// Collects flag values into [`Overrides`].
pub fn overrides(
    source: &SourceArgs,
    range: Option<&RangeArgs>,
    sink: Option<&SinkArgs>,
) -> Overrides {
    let mut o = Overrides::default();
    source.apply(&mut o);
    if let Some(r) = range {
        o.since.clone_from(&r.since);
        o.until.clone_from(&r.until);
        o.window.clone_from(&r.window);
    }
    if let Some(k) = sink {
        o.format.clone_from(&k.format);
        o.out.clone_from(&k.out);
        o.gzip = match (k.gzip, k.no_gzip) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        o.state_dir.clone_from(&k.state_dir);
        o.checkpoint_users = k.checkpoint_users;
        o.target_file_bytes = k.target_file_bytes;
        o.row_group_bytes = k.row_group_bytes;
        o.zstd_level = k.zstd_level;
        o.crash_after_journal = k.crash_after_journal;
        o.crm.clone_from(&k.crm);
        o.crm_base_url.clone_from(&k.crm_base_url);
        o.crm_token_file.clone_from(&k.crm_token_file);
        o.session_gap.clone_from(&k.session_gap);
        o.contact_policy.clone_from(&k.contact_policy);
        o.dry_run = k.dry_run.then_some(true);
        o.crash_after_crm_writes = k.crash_after_crm_writes;
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_flag_contract_parses() {
        let cli = Cli::try_parse_from([
            "engati-etl",
            "export",
            "--provider",
            "engati",
            "--customer-id",
            "61179",
            "--bot-key",
            "bb67e0773bed4c7e",
            "--attribute",
            "feedback=1",
            "--attribute",
            "feedback=2",
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01",
            "--window",
            "1d",
            "--page-size",
            "500",
            "--concurrency",
            "16",
            "--max-rps",
            "50",
            "--format",
            "parquet",
            "--out",
            "out/x",
        ])
        .unwrap();
        let Cmd::Export(a) = cli.command else {
            panic!("export")
        };
        let o = overrides(&a.source, Some(&a.range), Some(&a.sink));
        assert_eq!(o.attributes, vec!["feedback=1", "feedback=2"]);
        assert_eq!(o.out, Some(PathBuf::from("out/x")));
        assert_eq!(o.gzip, None);
    }

    #[test]
    fn the_key_cannot_be_passed_as_a_flag() {
        assert!(Cli::try_parse_from(["engati-etl", "export", "--api-key", "x"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
