//! Command-line interface (clap derive). Doc comments here are the `--help` text.
//!
//! The source, range and output flags are the pipeline file's sections themselves
//! (`config::{SourceSection, RangeSection, SinkSection}`), flattened here, so a setting is
//! declared once. Flags that have an environment variable read it when the flag is absent, so
//! precedence is flags > environment > pipeline file > defaults. The API key is never a flag:
//! it comes from `ENGATI_API_KEY` or `--api-key-file`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::config::{PrivacySection, RangeSection, SinkSection, SourceSection};

/// Export Engati chatbot conversations to Parquet, JSONL or a CRM.
///
/// Lists a bot's users by attribute, pages through each user's conversations in date windows
/// with bounded concurrency, normalizes the messages and writes them atomically, exactly once,
/// resumably. Exit codes: 0 success, 1 completed with rejected records, 2 usage or config
/// error, 3 authentication, 4 request rejected by the API, 5 source unavailable, 6 output
/// failure, 7 another worker owns the object-storage output, 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "engati-etl", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
    /// More logs on stderr: -v info, -vv debug (RUST_LOG works too).
    #[arg(short, long, global = true, action = ArgAction::Count, help_heading = "Global")]
    pub verbose: u8,
    /// No progress bar and no summary on stderr (errors are still printed).
    #[arg(short, long, global = true, help_heading = "Global")]
    pub quiet: bool,
    /// When stderr is not a terminal: a progress line every SECS seconds (0 = none).
    #[arg(long, global = true, value_name = "SECS", help_heading = "Global",
          default_value_t = crate::progress::DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat_secs: u64,
    /// Log format on stderr: text (for people) or json (one object a line, for log pipelines).
    #[arg(long, global = true, value_name = "FORMAT", env = "ENGATI_ETL_LOG_FORMAT",
          default_value = "text", help_heading = "Global",
          value_parser = crate::config::values::EnumParser::<crate::logging::LogFormat>::new("--log-format"))]
    pub log_format: crate::logging::LogFormat,
    /// Test hooks (feature `fault-injection` only).
    #[cfg(feature = "fault-injection")]
    #[command(flatten)]
    pub hooks: TestHooks,
}

/// Hidden test flags that arm failpoints (feature `fault-injection`; see `hooks`).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Default, Args)]
pub struct TestHooks {
    /// Abort after the N-th journaled commit, before its renames.
    #[arg(long, value_name = "N", hide = true, global = true)]
    pub crash_after_journal: Option<u64>,
    /// Abort after the N-th CRM write batch, before the ledger records it.
    #[arg(long, value_name = "N", hide = true, global = true)]
    pub crash_after_crm_writes: Option<u64>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Ad hoc export, everything given as flags; no pipeline watermarks are touched.
    #[command(after_help = "Examples:
  export ENGATI_API_KEY=...   # or --api-key-file PATH
  engati-etl export --provider engati --customer-id 61179 --bot-key bb67e0773bed4c7e \\
      --attribute feedback=1 --since 2026-11-01 --until today --format parquet --out out/feedback
  engati-etl export ... --format jsonl --out - | jq .text
  engati-etl export ... --format crm --crm hubspot --dry-run

Dates: 2026-01-31 (UTC midnight), 2026-01-31T05:30:00+05:30, now, today, yesterday, tomorrow,
today-7d. The range is [since, until) in UTC.")]
    Export(ExportArgs),
    /// Run a pipeline file (flags override the file).
    #[command(after_help = "Examples:
  engati-etl run pipelines/demo.toml                  # the embedded sandbox, no key needed
  engati-etl run pipelines/nightly.toml --quiet       # incremental, from each user's watermark
  engati-etl run pipelines/adhoc.toml --since 2026-10-01 --until 2026-11-01")]
    Run(RunArgs),
    /// List the users that match the attribute filters, as JSONL or CSV on stdout.
    #[command(after_help = "Examples:
  engati-etl users --pipeline pipelines/nightly.toml --format csv > users.csv
  engati-etl users --provider engati --customer-id 61179 --bot-key bb67e0773bed4c7e --attribute opt1=yes")]
    Users(UsersArgs),
    /// Run the Engati-compatible sandbox server and print its base URL, ids and key.
    #[command(after_help = "Example:
  engati-etl sandbox --port 8088 > sandbox.env &
  set -a; . ./sandbox.env; set +a
  engati-etl export --provider custom --attribute opt1=yes --since 2026-08-01 --until 2026-09-01 \\
      --format parquet --out out/sandbox")]
    Sandbox(SandboxArgs),
    /// Check a pipeline file, then make one cheap authenticated call.
    #[command(after_help = "Examples:
  engati-etl validate pipelines/nightly.toml
  engati-etl validate pipelines/nightly.toml --offline   # the file only, no request")]
    Validate(ValidateArgs),
    /// Export a closed historical range with a pipeline's settings, in its own resumable
    /// state namespace (nightly watermarks are not moved).
    #[command(after_help = "Example:
  engati-etl backfill pipelines/nightly.toml --from 2025-01-01 --to 2026-01-01 --window 1d")]
    Backfill(BackfillArgs),
    /// Show or reset a pipeline's state (watermarks, runs, files).
    #[command(subcommand)]
    State(StateCmd),
    /// Estimate a run before it starts: users, cells, requests, bytes and wall time (and with N
    /// shards), from the real user listing and a small sample of cells.
    #[command(after_help = "Examples:
  engati-etl plan pipelines/nightly.toml
  engati-etl plan pipelines/backfill.toml --since 2025-01-01 --until 2026-01-01 --json
  engati-etl plan pipelines/backfill.toml --sample-users 50 --compare-shards 4,16

It lists the users (the same Users API calls as the run), counts the cells exactly, and fetches
each sampled cell's pages as the run would (at most --sample-pages per cell, paced under
max_rps). It writes nothing and takes no lock; the requests it made are reported.")]
    Plan(PlanArgs),
    /// Message people from a table (WhatsApp templates, broadcasts, API-triggered flows),
    /// never twice, every row accounted for.
    #[command(subcommand)]
    Send(crate::send::args::SendCmd),
    /// Prove a local Parquet/JSONL output complete and consistent with its state: ledger files
    /// present with their size, checksum and rows, no stray or staged files, no message_id
    /// twice, rows per partition and run, watermark coverage; optionally sampled cells against
    /// the API.
    #[command(after_help = "Examples:
  engati-etl verify pipelines/nightly.toml
  engati-etl verify --out out/feedback --json
  engati-etl verify pipelines/nightly.toml --against-api --sample 50 --seed 7

Exit codes: 0 consistent, 1 not consistent (the report lists each finding), 2 usage (also
for outputs not supported yet: Delta tables, CRMs, object storage). It reads the state without
its lock and writes nothing.")]
    Verify(VerifyArgs),
    /// Write a self-contained HTML page about an output: charts of the last run and the runs.
    #[command(after_help = "Examples:
  engati-etl report pipelines/nightly.toml --html nightly.html
  engati-etl report --out out/feedback --html feedback.html")]
    Report(ReportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(after_help = "Examples:
  engati-etl completions bash > /usr/share/bash-completion/completions/engati-etl
  engati-etl completions zsh > \"${fpath[1]}/_engati-etl\"
  engati-etl completions fish > ~/.config/fish/completions/engati-etl.fish")]
    Completions(CompletionsArgs),
    /// Write the man pages (engati-etl.1 and one per subcommand), or print engati-etl.1.
    #[command(after_help = "Examples:
  engati-etl manpage --out-dir /usr/share/man/man1
  engati-etl manpage | man -l -")]
    Manpage(ManpageArgs),
}

/// Flags of the runs a scheduler starts (`export`, `run`, `backfill`): metrics and exit codes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operations")]
pub struct OpsArgs {
    /// Write Prometheus metrics (text format, for node_exporter's textfile collector) to this
    /// file, atomically, at the end of the run and every --metrics-interval-secs during it.
    #[arg(long, value_name = "PATH", env = "ENGATI_ETL_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Seconds between metrics-file writes during a run (0: only at the end).
    #[arg(long, value_name = "SECS", default_value_t = crate::metrics::DEFAULT_INTERVAL_SECS)]
    pub metrics_interval_secs: u64,
    /// Also serve the metrics over HTTP at http://ADDR/metrics while the run goes (e.g.
    /// 0.0.0.0:9464 for a Prometheus scrape of a long backfill).
    #[arg(long, value_name = "ADDR", env = "ENGATI_ETL_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Exit code of a run that completed but dead-lettered some messages (0 keeps a scheduler
    /// green; 2-7 and 130 are taken).
    #[arg(long, value_name = "N", env = "ENGATI_ETL_REJECTS_EXIT_CODE", default_value_t = 1,
          value_parser = crate::summary::parse_rejects_exit_code)]
    pub rejects_exit_code: u8,
}

/// `verify` flags.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The pipeline file (its `sink.out` / `sink.state_dir`; its source for --against-api).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: Option<PathBuf>,
    /// The output directory (state in OUT/_state), e.g. for an `export`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The state directory, when not under the output.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also fetch --sample committed (user, window) cells again from the API and compare their
    /// message ids with the output's (needs PIPELINE.toml and the API key).
    #[arg(long, requires = "pipeline")]
    pub against_api: bool,
    /// Cells to compare with --against-api.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = crate::config::values::NumParser::<usize>::new("--sample", 1, 1_000_000))]
    pub sample: usize,
    /// Seed of the random pick of cells (the same state and seed pick the same cells).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

/// `report` flags.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    /// Which output (its state and files).
    pub target: StateTarget,
    /// Write the HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// Runs to show in the history table.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub runs: usize,
}

/// `completions` flags.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `manpage` flags.
#[derive(Debug, Clone, Args)]
pub struct ManpageArgs {
    /// Write engati-etl.1 and engati-etl-<subcommand>.1 into this directory (else print
    /// engati-etl.1 on stdout).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `plan` flags.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    /// Users to sample, evenly spread in id order (at most 100,000).
    #[arg(long, value_name = "K", default_value_t = 20, help_heading = "Plan",
          value_parser = crate::config::values::NumParser::<u64>::new("--sample-users", 1, 100_000))]
    pub sample_users: u64,
    /// Windows to sample per sampled user, evenly spread over its range (at most 100,000).
    #[arg(long, value_name = "W", default_value_t = 3, help_heading = "Plan",
          value_parser = crate::config::values::NumParser::<u64>::new("--sample-windows", 1, 100_000))]
    pub sample_windows: u64,
    /// Pages read per sampled cell at most; a cell with more makes the figures lower bounds
    /// ("at least"). Raise it when pages are small or cells dense.
    #[arg(long, value_name = "P", default_value_t = crate::plan::sample::PAGE_CAP, help_heading = "Plan",
          value_parser = crate::config::values::NumParser::<u32>::new("--sample-pages", 1, 10_000))]
    pub sample_pages: u32,
    /// Also estimate with these numbers of shards (comma-separated), each 1 to 65,536.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_value = "2,4,8",
          help_heading = "Plan",
          value_parser = crate::config::values::NumParser::<u32>::new("--compare-shards", 1, crate::shard::MAX_SHARDS))]
    pub compare_shards: Vec<u32>,
    /// Print JSON on stdout instead of a table.
    #[arg(long, help_heading = "Plan")]
    pub json: bool,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceSection,
    #[command(flatten)]
    /// Range overrides.
    pub range: RangeSection,
    #[command(flatten)]
    /// Output overrides (the output's state gives incremental ranges).
    pub sink: SinkSection,
}

/// `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Watermarks, recent runs with counts and outcome, files (works while a run is going).
    #[command(after_help = "Examples:
  engati-etl state show pipelines/nightly.toml
  engati-etl state show --out out/feedback --user 919565428256 --json")]
    Show(StateShowArgs),
    /// Move incremental watermarks back (re-export from there next run; no duplicates).
    #[command(after_help = "Examples:
  engati-etl state reset pipelines/nightly.toml --user 919565428256
  engati-etl state reset pipelines/nightly.toml --to 2026-10-01")]
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
    /// A sharded output: the shard whose state (STATE_DIR/s<I>of<N>) to show or reset.
    #[arg(long, value_name = "I/N", env = "ENGATI_ETL_SHARD")]
    pub shard: Option<String>,
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
    #[arg(long, value_name = "DATE", help_heading = "Range")]
    pub from: String,
    /// Range end (exclusive).
    #[arg(long, value_name = "DATE", help_heading = "Range")]
    pub to: String,
    /// Window length [default: the pipeline's, else 1d].
    #[arg(long, value_name = "DURATION", help_heading = "Range")]
    pub window: Option<String>,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceSection,
    #[command(flatten)]
    /// Output overrides.
    pub sink: SinkSection,
    #[command(flatten)]
    /// Privacy overrides.
    pub privacy: PrivacySection,
    #[command(flatten)]
    /// Metrics and exit codes.
    pub ops: OpsArgs,
}

/// `export` flags.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    /// Source.
    pub source: SourceSection,
    #[command(flatten)]
    /// Range.
    pub range: RangeSection,
    #[command(flatten)]
    /// Output.
    pub sink: SinkSection,
    #[command(flatten)]
    /// Privacy controls.
    pub privacy: PrivacySection,
    #[command(flatten)]
    /// Metrics and exit codes.
    pub ops: OpsArgs,
}

/// `run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The pipeline file (pipelines/*.toml).
    #[arg(value_name = "PIPELINE.toml")]
    pub pipeline: PathBuf,
    #[command(flatten)]
    /// Source overrides.
    pub source: SourceSection,
    #[command(flatten)]
    /// Range overrides.
    pub range: RangeSection,
    #[command(flatten)]
    /// Output overrides.
    pub sink: SinkSection,
    #[command(flatten)]
    /// Privacy overrides.
    pub privacy: PrivacySection,
    #[command(flatten)]
    /// Metrics and exit codes.
    pub ops: OpsArgs,
}

/// `users` output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UsersFormat {
    /// One JSON object a line.
    Jsonl,
    /// A header row, then one row a user.
    Csv,
}

/// `users` flags.
#[derive(Debug, Clone, Args)]
pub struct UsersArgs {
    /// Take the source settings from this pipeline file (flags override it).
    #[arg(long, value_name = "PIPELINE.toml")]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    /// Source.
    pub source: SourceSection,
    /// Output format on stdout.
    #[arg(long, value_name = "FORMAT", default_value = "jsonl",
          value_parser = crate::config::values::EnumParser::<UsersFormat>::new("--format"))]
    pub format: UsersFormat,
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
    pub source: SourceSection,
    #[command(flatten)]
    /// Range overrides.
    pub range: RangeSection,
    #[command(flatten)]
    /// Output overrides.
    pub sink: SinkSection,
    #[command(flatten)]
    /// Privacy overrides.
    pub privacy: PrivacySection,
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
    /// Capacity mode: work on K requests at once (at --latency-ms each), queue past K in
    /// flight, answer 429 past 2K (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub capacity: usize,
    /// Refuse ranges (`end_date - start_date`) longer than this with 400/1003, as an API
    /// with a range limit might (e.g. 90d; default: no limit).
    #[arg(long, value_name = "DURATION")]
    pub max_range: Option<String>,
    /// Share of users who are dense (skewed data: most sparse, a few very busy).
    #[arg(long, default_value_t = 0.0)]
    pub dense_rate: f64,
    /// Average sessions of a dense user (with --dense-rate).
    #[arg(long, default_value_t = 200.0)]
    pub dense_sessions: f64,
    /// Order of a window's messages across pages: oldest-first or newest-first.
    #[arg(long, default_value = "oldest-first")]
    pub page_order: String,
    /// Shifting pages: chance per request for page 2 or later that a message is inserted into
    /// that window before the reading position (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub shift_rate: f64,
    /// Shifting pages: changes per (user, window) at most (0 = no limit: it never settles).
    #[arg(long, default_value_t = 1)]
    pub shift_max_per_window: u32,
    /// Shifting pages: delete a message already served instead of inserting one.
    #[arg(long)]
    pub shift_delete: bool,
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
        assert_eq!(
            a.source.attributes,
            Some(vec!["feedback=1".to_string(), "feedback=2".to_string()])
        );
        assert_eq!(a.sink.out, Some(PathBuf::from("out/x")));
        assert_eq!(a.sink.gzip, None);
        assert_eq!(a.sink.dry_run, Some(false));
    }

    #[test]
    fn gzip_flags_override_each_other() {
        let parse = |flags: &[&str]| {
            let mut args = vec!["engati-etl", "export"];
            args.extend_from_slice(flags);
            let Cmd::Export(a) = Cli::try_parse_from(args).unwrap().command else {
                panic!("export")
            };
            let merged = SinkSection {
                gzip: Some(true),
                ..Default::default()
            };
            crate::config::Merge::merge(merged, a.sink).gzip
        };
        assert_eq!(parse(&["--gzip"]), Some(true));
        assert_eq!(parse(&["--no-gzip"]), Some(false));
        assert_eq!(parse(&["--gzip", "--no-gzip"]), Some(false));
        assert_eq!(parse(&[]), Some(true), "the file's value stays");
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
