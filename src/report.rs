//! The run report: `OUT/_run_report.json`, the run history in the state store, and the short
//! human summary printed on stderr at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::sink::SinkReport;

/// How a run ended (also the `status` of the run history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything exported; nothing rejected (exit 0).
    Succeeded,
    /// Everything exported; some messages dead-lettered (exit 1).
    CompletedWithRejects,
    /// Stopped by Ctrl-C / SIGTERM after committing what was in flight (exit 130).
    Interrupted,
    /// Stopped by an error (exit 2-7).
    Failed,
}

impl RunStatus {
    /// The name stored in the run history.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::CompletedWithRejects => "completed_with_rejects",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
        }
    }
}

/// The options a run used (no secrets: the key is never part of it).
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReportOptions {
    /// Provider.
    pub provider: String,
    /// Base URL.
    pub base_url: String,
    /// Customer id.
    pub customer_id: String,
    /// Bot key.
    pub bot_key: String,
    /// Attribute filters (`NAME=VALUE`).
    pub attributes: Vec<String>,
    /// Users file, if used.
    pub users_file: Option<String>,
    /// Mode: `range`, `incremental`, `backfill`.
    pub mode: String,
    /// Range start (RFC 3339); for incremental runs the pipeline `start`.
    pub since: String,
    /// Range end (RFC 3339, exclusive).
    pub until: String,
    /// Window length (`1d`).
    pub window: String,
    /// Lookback (incremental), e.g. `1d`.
    pub lookback: Option<String>,
    /// Page size.
    pub page_size: u32,
    /// Requests in flight at most, or `"auto"`.
    pub concurrency: crate::engati::adaptive::Concurrency,
    /// With `"auto"`: the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Requests/s at most.
    pub max_rps: u32,
    /// `parquet`, `jsonl` or `jsonl.gz`.
    pub format: String,
    /// Output directory or `-`.
    pub out: String,
    /// State directory, if any.
    pub state_dir: Option<String>,
    /// The state namespace (`export`, `range`, `incremental`, `backfill:<from>:<to>`).
    pub state_namespace: String,
}

/// Cell counts.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct CellCounts {
    /// Cells in the plan.
    pub planned: u64,
    /// Cells skipped because a resumed run had already committed them.
    pub skipped: u64,
    /// Cells committed by this invocation.
    pub committed: u64,
    /// Cells whose pages shifted while being read (live data) and that were read again
    /// (`docs/engati-api.md`, "Pages that shift").
    pub reread: u64,
    /// Cells whose pages kept shifting: not written, dead-lettered with the reason, their
    /// watermarks not moved.
    pub unreadable: u64,
}

/// Request counts.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct RequestCounts {
    /// Attempts sent (responses plus transport failures).
    pub total: u64,
    /// Responses by HTTP status.
    pub by_status: BTreeMap<String, u64>,
    /// Timeouts and connection errors.
    pub transport_errors: u64,
    /// 200 responses whose body could not be read (truncated), retried.
    pub decode_errors: u64,
    /// Retries (attempts after a failed one).
    pub retries: u64,
    /// Response bytes received.
    pub bytes_received: u64,
    /// What the adaptive limit did (`concurrency = "auto"` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::engati::adaptive::LimitReport>,
}

/// Message counts.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// Rows written (committed).
    pub written: u64,
    /// Messages sent to the dead-letter file.
    pub rejected: u64,
    /// Messages the API returned just outside a window (from the 1 ms overlap that makes
    /// either reading of its date bounds safe), skipped: they belong to the next window.
    pub outside_window: u64,
}

/// The run report (`OUT/_run_report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Outcome.
    pub status: RunStatus,
    /// The error that stopped the run, if any.
    pub error: Option<String>,
    /// True when an interrupted run with the same parameters was continued.
    pub resumed: bool,
    /// Start (RFC 3339 UTC).
    pub started_at: String,
    /// End (RFC 3339 UTC).
    pub finished_at: String,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Options (no secrets).
    pub options: ReportOptions,
    /// The range fetched (none when no user had anything to fetch).
    pub fetched: Option<FetchedRange>,
    /// Users in the plan.
    pub users: u64,
    /// Users the Users API listed whose id cannot be exported, and why (they make the run
    /// `completed_with_rejects`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users_rejected: Vec<crate::engati::users::RejectedUser>,
    /// Cells.
    pub cells: CellCounts,
    /// Requests.
    pub requests: RequestCounts,
    /// What adaptive windows did: the span asked, halvings, splits (`window = "auto"` only;
    /// README, "Adaptive windows").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<crate::engati::seek::WindowsReport>,
    /// Messages.
    pub messages: MessageCounts,
    /// Files written/replaced, bytes.
    pub sink: SinkReport,
    /// The privacy policy applied to the output (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<crate::privacy::PrivacyReport>,
    /// What happened over the run, in time buckets (see [`crate::timeline`]).
    pub timeline: crate::timeline::Timeline,
}

impl RunReport {
    /// The exit code for this outcome (0, 1 or 130; failures carry their own code).
    pub fn exit_code(&self) -> u8 {
        match self.status {
            RunStatus::Succeeded => 0,
            RunStatus::CompletedWithRejects => 1,
            RunStatus::Interrupted => 130,
            RunStatus::Failed => 5,
        }
    }

    /// Writes the report as pretty JSON to `path` atomically (temp file + rename; the temp
    /// file is removed when that fails).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        let result = (|| {
            std::fs::write(&tmp, json)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The command that ran: `export`, `backfill` or `run` (from the state namespace).
    fn command(&self) -> &'static str {
        match self.options.mode.as_str() {
            "backfill" => "backfill",
            _ if self.options.state_namespace == "export" => "export",
            _ => "run",
        }
    }

    /// The one-screen human summary; `report_file` is where the report was written, if it was.
    pub fn summary(&self, report_file: Option<&Path>) -> String {
        let mut s = String::new();
        let secs = self.duration_ms as f64 / 1000.0;
        let _ = writeln!(
            s,
            "engati-etl {} {}: {} in {secs:.1} s{}",
            self.command(),
            self.run_id,
            self.status.as_str().replace('_', " "),
            if self.resumed { " (resumed)" } else { "" }
        );
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error      {e}");
        }
        self.summary_input(&mut s);
        self.summary_output(&mut s);
        let o = &self.options;
        let _ = write!(s, "  output     {} ({})", o.out, o.format);
        if let Some(f) = report_file {
            let _ = write!(s, "; report {}", f.display());
        }
        s.push('\n');
        s
    }

    /// Users, range, cells, requests.
    fn summary_input(&self, s: &mut String) {
        let o = &self.options;
        let who = if let Some(f) = &o.users_file {
            format!("from {f}")
        } else {
            format!("matching {}", o.attributes.join(" or "))
        };
        let skipped = if self.users_rejected.is_empty() {
            String::new()
        } else {
            format!(
                " ({} skipped: ids that cannot be exported)",
                self.users_rejected.len()
            )
        };
        let _ = writeln!(s, "  users      {} {who}{skipped}", self.users);
        let (from, until) = match &self.fetched {
            Some(f) => (f.from.as_str(), f.until.as_str()),
            None => (o.since.as_str(), o.until.as_str()),
        };
        let _ = writeln!(
            s,
            "  range      {from} .. {until} in {} windows ({})",
            o.window, o.mode
        );
        let c = &self.cells;
        let mut shifted = String::new();
        if c.reread > 0 {
            let _ = write!(shifted, ", {} read again (pages shifted)", c.reread);
        }
        if c.unreadable > 0 {
            let _ = write!(
                shifted,
                ", {} unreadable (pages kept shifting; dead-letter)",
                c.unreadable
            );
        }
        let _ = writeln!(
            s,
            "  cells      {} committed, {} skipped (already committed), {} planned{shifted}",
            c.committed, c.skipped, c.planned
        );
        let r = &self.requests;
        let statuses: Vec<String> = r
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let statuses = if statuses.is_empty() {
            String::new()
        } else {
            format!(" ({})", statuses.join(", "))
        };
        let _ = writeln!(
            s,
            "  requests   {}{statuses}, {} retries, {} transport errors, {} received",
            r.total,
            r.retries,
            r.transport_errors,
            human_bytes(r.bytes_received)
        );
        if let Some(c) = &r.concurrency {
            let _ = writeln!(
                s,
                "  concurrency auto: limit {:.1} on average, {} at most, {} at the end ({} raises, {} cuts: {} on 429/503/timeouts)",
                c.mean_limit, c.max_limit, c.final_limit, c.raises, c.cuts, c.pushback_cuts
            );
        }
    }

    /// Messages, files, CRM.
    fn summary_output(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  messages   {} written, {} rejected (dead-letter), {} outside window skipped",
            self.messages.written, self.messages.rejected, self.messages.outside_window
        );
        let _ = writeln!(
            s,
            "  files      {} written ({}), {} replaced ({} earlier rows taken out)",
            self.sink.files_written,
            human_bytes(self.sink.bytes_written),
            self.sink.files_replaced,
            self.sink.rows_replaced
        );
        if let Some(p) = &self.privacy {
            let _ = writeln!(s, "  privacy    {}", p.describe());
        }
        if let Some(c) = &self.sink.crm {
            let _ = writeln!(
                s,
                "  crm        {}{}: {} contacts matched, {} created, {} skipped; activities {} created, {} updated, {} unchanged; {} rejected",
                c.crm,
                if c.dry_run {
                    " (dry run: nothing sent)"
                } else {
                    ""
                },
                c.contacts_matched,
                c.contacts_created,
                c.contacts_skipped,
                c.activities_created,
                c.activities_updated,
                c.activities_unchanged,
                c.rejects
            );
        }
    }
}

/// The range a run actually fetched (for an incremental run: from the earliest user's
/// watermark minus the lookback).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FetchedRange {
    /// Start (RFC 3339 UTC).
    pub from: String,
    /// End (RFC 3339 UTC, exclusive).
    pub until: String,
}

/// `1.2 MB` style sizes (decimal units).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
