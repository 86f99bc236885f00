//! `send`: the write side. Take a table (a CRM export, a warehouse query's result, this tool's
//! own `users` output) and, for each row, send a WhatsApp template, add the person to a
//! broadcast, or trigger a bot flow for them (docs/engati-api.md, "Write-side APIs"), never
//! twice, with every row accounted for.
//!
//! ```text
//! input (input: Parquet | CSV | JSONL[.gz], streamed, values as text)
//!   -> plan (plan: phone numbers (phone), consent, row keys, duplicates, request bodies (render))
//!   -> ledger (ledger: SQLite in the state store; pending | in_flight | sent | failed |
//!              skipped | unknown per (campaign, row key); writer: one thread, group commits)
//!   -> send (engine: concurrency, rate limit, in_flight made durable before each request;
//!            http + classify: retry only what certainly was not processed; breaker)
//!   -> reconcile (reconcile: unknown templates/broadcasts looked up in the Conversations API)
//!   -> result log and report (results, report: one row per input row; OUT/_send_report.json)
//! ```
//!
//! The rules, and where they come from: the endpoints and bodies are in docs/engati-api.md
//! ("Write-side APIs") and `seeds/` (vendor docs); "never twice" and "account for every row"
//! are issue 10 of this project.

pub mod args;
pub mod breaker;
pub mod classify;
pub mod config;
pub mod dryrun;
pub mod engine;
pub mod http;
pub mod input;
pub mod ledger;
pub mod message;
pub mod phone;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod report;
pub mod results;
pub mod run;
pub mod writer;

use std::fmt;
use std::str::FromStr;

/// What a campaign sends (one endpoint each; docs/engati-api.md, "Write-side APIs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `POST /whatsapp-api/v1.0/customer/{cid}/bot/{bot}/template`, one request per row.
    Template,
    /// `POST /bot-api/v{1,2}.0/customer/{cid}/bot/{bot}/flow/{flow_key}`, one request per row.
    Trigger,
    /// `POST /bot-api/v1.0/customer/{cid}/bot/{bot}/broadcast`, one request per batch of rows.
    Broadcast,
}

impl Kind {
    /// `template`, `trigger` or `broadcast`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Template => "template",
            Kind::Trigger => "trigger",
            Kind::Broadcast => "broadcast",
        }
    }

    /// True when a sent message shows up in the recipient's conversation history, so an
    /// `unknown` row can be settled by reading it (templates and broadcasts; a flow run's
    /// messages are the flow's own and cannot be told apart).
    pub fn reconcilable(self) -> bool {
        matches!(self, Kind::Template | Kind::Broadcast)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "template" => Ok(Kind::Template),
            "trigger" => Ok(Kind::Trigger),
            "broadcast" => Ok(Kind::Broadcast),
            _ => Err(format!(
                "unknown send kind `{s}`: use template, trigger or broadcast"
            )),
        }
    }
}

/// A row's state in the send ledger (issue 10, "Never twice, every row accounted for").
///
/// `Pending` -> `InFlight` (made durable before the request) -> `Sent` | `Failed` | `Unknown`;
/// `Skipped` rows are never sent. Only `Pending` rows are sent by a run; `Failed` and
/// `Unknown` rows only by `send retry`, on the user's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Never attempted.
    Pending,
    /// Recorded just before its request; a row found in this state by a later run was in
    /// flight during a crash and becomes `Unknown`.
    InFlight,
    /// The API accepted it (or reconciliation found it in the conversation history).
    Sent,
    /// The API refused it definitely (a 400 such as 1004, another 4xx): not processed.
    Failed,
    /// Not sent on purpose: no consent, invalid phone number, duplicate key, empty value.
    Skipped,
    /// The request may have reached the API (timeout after sending, connection reset, 5xx,
    /// a crash in flight): never re-sent automatically.
    Unknown,
}

impl Status {
    /// All statuses, in report order.
    pub const ALL: [Status; 6] = [
        Status::Sent,
        Status::Failed,
        Status::Unknown,
        Status::Skipped,
        Status::Pending,
        Status::InFlight,
    ];

    /// The ledger and result-log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InFlight => "in_flight",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// Crash point for tests: with the `fault-injection` feature and `FAILPOINTS=<name>=...`
/// (the `fail` crate's syntax, e.g. `send::after_response=10*off->return`), aborts the
/// process the way `kill -9` would. Without the feature it compiles to nothing.
#[inline]
pub fn crash_point(name: &str) {
    #[cfg(feature = "fault-injection")]
    fail::fail_point!(name, |_| -> () { std::process::abort() });
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
