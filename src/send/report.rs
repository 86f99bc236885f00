//! `OUT/_send_report.json` and the one-screen summary on stderr: counts per status, what this
//! run did, reconciliation, requests, wall time, and every failed and unknown row (the key is
//! never in it: only the tenant's ids and base URL).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Kind;
use super::config::SourceSpec;
use super::http::SendStats;
use super::ledger::Listed;
use super::plan::PlanStats;
use super::reconcile::ReconcileStats;
use super::results::LogSummary;

/// Requests made by a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Requests {
    /// HTTP attempts.
    pub total: u64,
    /// Responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Attempts without a response.
    pub transport_errors: u64,
    /// Repeated attempts (after 429 or a refused connection).
    pub retries: u64,
}

impl Requests {
    /// From the sender's counters.
    pub fn from_stats(s: &SendStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Requests {
            total: s.requests.load(Relaxed),
            by_status: s.by_status(),
            transport_errors: s.transport_errors.load(Relaxed),
            retries: s.retries.load(Relaxed),
        }
    }
}

/// Rows answered by this run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RunCounts {
    /// Accepted.
    pub sent: u64,
    /// Refused.
    pub failed: u64,
    /// May have been processed.
    pub unknown: u64,
}

/// The report of one `send` run, `send retry` or `send status --reconcile`.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    /// Campaign id.
    pub campaign: String,
    /// Kind.
    pub kind: Kind,
    /// `send template`, `send retry`, `send status --reconcile`, ...
    pub command: String,
    /// `completed`, `interrupted`, `stopped: ...`.
    pub outcome: String,
    /// The process exit code.
    pub exit_code: i32,
    /// What stopped the run, if anything.
    pub error: Option<String>,
    /// Start, RFC 3339 UTC.
    pub started_at: String,
    /// End.
    pub finished_at: String,
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// The tenant (no key).
    pub source: SourceSpec,
    /// Rows found `in_flight` from a stopped run and marked `unknown` at the start.
    pub recovered_in_flight: u64,
    /// Planning counts (runs that read the input).
    pub plan: Option<PlanStats>,
    /// Rows answered by this run.
    pub this_run: RunCounts,
    /// `unknown` rows of the campaign before the reconciliation of this run.
    pub unknown_before_reconcile: u64,
    /// Reconciliation, if it ran.
    pub reconciliation: Option<ReconcileStats>,
    /// Rows of the result log (one per input row) by status.
    pub rows: BTreeMap<String, u64>,
    /// Keys of the campaign's ledger by status (every key ever planned).
    pub campaign_keys: BTreeMap<String, u64>,
    /// Requests.
    pub requests: Requests,
    /// The result log.
    pub result_log: String,
    /// Every failed row.
    pub failed_rows: Vec<Listed>,
    /// Every unknown row.
    pub unknown_rows: Vec<Listed>,
    /// Keys whose input content changed after they were settled (not re-sent).
    pub changed_rows: Vec<String>,
}

impl SendReport {
    /// Attaches the result log's counts and lists.
    pub fn set_log(&mut self, log: LogSummary) {
        self.result_log = log.path.display().to_string();
        self.rows = log.by_status;
        self.failed_rows = log.failed;
        self.unknown_rows = log.unknown;
    }

    /// Writes the report to `OUT/_send_report.json` (staged, then renamed).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        let path = out.join("_send_report.json");
        let tmp = out.join("._send_report.json.tmp");
        let mut body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        body.push(b'\n');
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, &path)
    }

    /// The one-screen summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let secs = self.wall_time_ms as f64 / 1000.0;
        let _ = writeln!(
            s,
            "engati-etl {} · campaign {} · {} in {secs:.1} s",
            self.command, self.campaign, self.outcome
        );
        if let Some(p) = &self.plan {
            let _ = writeln!(s, "  input     {}", plan_text(p));
        }
        if self.recovered_in_flight > 0 {
            let _ = writeln!(
                s,
                "  recovered {} rows in flight when a previous run stopped: now unknown",
                self.recovered_in_flight
            );
        }
        let r = &self.this_run;
        let _ = writeln!(
            s,
            "  this run  {} sent, {} failed, {} unknown",
            r.sent, r.failed, r.unknown
        );
        if let Some(rc) = &self.reconciliation {
            let failed = if rc.errors > 0 {
                format!(" ({} look-ups failed)", rc.errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "  reconcile {} unknown checked in the conversation history: {} found (now sent), {} still unknown{failed}",
                rc.checked, rc.settled_sent, rc.still_unknown
            );
        }
        let rows: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let rows = if rows.is_empty() {
            "none".into()
        } else {
            rows.join(" · ")
        };
        let _ = writeln!(s, "  rows      {rows}");
        let _ = writeln!(s, "  requests  {}", requests_text(&self.requests));
        let _ = writeln!(s, "  log       {}", self.result_log);
        list(&mut s, "failed", &self.failed_rows);
        list(&mut s, "unknown", &self.unknown_rows);
        if !self.changed_rows.is_empty() {
            let _ = writeln!(
                s,
                "  changed   {} settled rows differ in the input now (not re-sent): {}",
                self.changed_rows.len(),
                first(&self.changed_rows)
            );
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  stopped   {e}");
        }
        s
    }
}

fn plan_text(p: &PlanStats) -> String {
    let skipped: u64 = p.skipped.values().sum();
    let by: Vec<String> = p.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let by = if by.is_empty() {
        String::new()
    } else {
        format!(" ({})", by.join(", "))
    };
    format!(
        "{} rows: {} to send, {skipped} skipped{by}, {} duplicates, {} already settled ({} changed: reported, not re-sent)",
        p.input_rows, p.to_send, p.duplicates, p.already_settled, p.changed
    )
}

fn requests_text(q: &Requests) -> String {
    let mut detail: Vec<String> = q
        .by_status
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    if q.transport_errors > 0 {
        detail.push(format!("no response: {}", q.transport_errors));
    }
    if q.retries > 0 {
        detail.push(format!("{} were retries", q.retries));
    }
    if detail.is_empty() {
        q.total.to_string()
    } else {
        format!("{} ({})", q.total, detail.join(", "))
    }
}

fn first(keys: &[String]) -> String {
    let mut v: Vec<&str> = keys.iter().take(5).map(String::as_str).collect();
    if keys.len() > 5 {
        v.push("…");
    }
    v.join(", ")
}

fn list(s: &mut String, what: &str, rows: &[Listed]) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "  {what:<9} {} rows (all in the result log and _send_report.json), first {}:",
        rows.len(),
        rows.len().min(5)
    );
    for r in rows.iter().take(5) {
        let _ = writeln!(
            s,
            "            {}  {}",
            r.row_key,
            r.error.as_deref().unwrap_or("")
        );
    }
}
