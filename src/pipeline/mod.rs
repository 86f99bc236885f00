//! The export, end to end: users -> windows x pages -> normalize -> sink -> state -> report.
//!
//! [`run`] prepares the state ([`resume`]: recover an interrupted commit, start or resume the
//! run, plan each user's range), lists the users, starts the sink ([`sink::runner`]) and walks
//! the plan's units in order ([`walk`]). Each cell (one user's window) is fetched by its own
//! task ([`cell`]: the pages of `engati::conversations`), normalized on the way into Arrow
//! batches and handed to the sink **in plan order**, so the output is the same on every run
//! and a unit can be committed cell by cell as a prefix. To keep requests flowing while the
//! cell being written waits (a slow page, a 429 with `Retry-After`), cells ahead of it are
//! fetched and buffered within bounds: at most `lookahead` cells, four pages each, and page
//! bodies under `buffer_bytes` ([`gate`]; the cell being written is never held back, so the
//! gate cannot deadlock). At most `concurrency` requests are in flight and at most `max_rps`
//! are sent per second (the client enforces both). The run ends with its report ([`finish`]).
//!
//! Ctrl-C / SIGTERM ([`RunControl::stop`]): no new cell starts; the cell being written is
//! finished, cells already fetched in full are written too, the rest is dropped; what was
//! written is committed; the run ends `interrupted` (exit 130) and resumes from there.

mod batcher;
mod cell;
mod finish;
pub mod gate;
mod resume;
mod walk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use cell::{HOLD_BYTES, PAGES_AHEAD};

/// Rows per batch handed to the sink, at most.
pub const BATCH_ROWS: usize = batcher::Batcher::ROWS;

use crate::engati::SourceSpec;
use crate::engati::UsersSource;
use crate::engati::client::{Client, ClientBuildError};
use crate::engati::error::{ApiError, RequestError};
use crate::engati::users::{self, RejectedUser, UsersFileError};
use crate::model::User;
use crate::plan::RangeSpec;
use crate::report::RunReport;
use crate::schema::RowContext;
use crate::sink::{OutputSpec, SinkCounters, SinkError, SinkMsg};
use crate::state::StateError;

/// A validated, ready-to-run export (built by `config::validate`).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The pipeline's name, if it has one.
    pub name: Option<String>,
    /// State namespace (`export`, `range`, `incremental`, `backfill:<from>:<to>`).
    pub namespace: String,
    /// Where the messages come from.
    pub source: SourceSpec,
    /// Which range, in which windows.
    pub range: RangeSpec,
    /// Where rows go.
    pub output: OutputSpec,
    /// Units and buffers.
    pub tuning: Tuning,
}

/// How the walk is cut and buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Cells per unit of commit (and of resume).
    pub checkpoint_users: usize,
    /// Cells fetched ahead of the one being written, at most.
    pub lookahead: usize,
    /// Bytes of page bodies buffered ahead of the cell being written, at most.
    pub buffer_bytes: u64,
}

/// Stop flag and live counters shared with the CLI (signals, progress bar).
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
    /// Wakes the walk when a stop is asked.
    stop_notify: tokio::sync::Notify,
    /// Cells written to the sink so far (for progress).
    pub cells_done: AtomicU64,
    /// Cells in the plan (set once planned).
    pub cells_planned: AtomicU64,
    /// Message rows written to the sink so far.
    pub rows: AtomicU64,
    /// Sink commit counters.
    pub sink: Arc<SinkCounters>,
}

impl RunControl {
    /// Asks the run to stop taking new work.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_notify.notify_waiters();
    }

    /// Completes once [`stop`](Self::stop) was called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stop_notify.notified();
            if self.stopping() {
                return;
            }
            notified.await;
        }
    }
    /// True once [`stop`](Self::stop) was called.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Why a run failed, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration found at run time (exit 2).
    #[error("{0}")]
    Config(String),
    /// The users file (exit 2).
    #[error(transparent)]
    UsersFile(#[from] UsersFileError),
    /// Building the client (exit 2).
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// The API (exit 3, 4 or 5).
    #[error(transparent)]
    Source(#[from] RequestError),
    /// A window's pages shifted after part of it was written (a cell larger than
    /// [`HOLD_BYTES`]); its unit was not committed (exit 5).
    #[error(
        "{0}; the cell was too large to hold for a re-read and was partly written, so its unit was not committed: run again to resume"
    )]
    Shifted(crate::engati::conversations::ShiftError),
    /// The state store (exit 2 when locked, else 6).
    #[error(transparent)]
    State(#[from] StateError),
    /// The output (exit 6).
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl RunError {
    /// The process exit code (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) | RunError::UsersFile(_) | RunError::Client(_) => 2,
            RunError::State(StateError::Locked(_)) => 2,
            RunError::Source(e) => match &e.source {
                ApiError::Auth { .. } => 3,
                ApiError::Rejected { .. }
                | ApiError::NotFound { .. }
                | ApiError::Redirect { .. }
                | ApiError::NotJson { .. }
                | ApiError::Unexpected { .. } => 4,
                _ => 5,
            },
            RunError::Shifted(_) => 5,
            RunError::State(_) => 6,
            RunError::Sink(SinkError::OutputClosed) => 0,
            RunError::Sink(SinkError::Crm(crate::sink::crm::http::CrmError::Auth { .. })) => 3,
            RunError::Sink(SinkError::Crm(_)) => 5,
            RunError::Sink(_) => 6,
        }
    }
}

/// The outcome of [`run`]: the report (always, once the run started) and the error if any.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report (also written to `OUT/_run_report.json` for file outputs).
    pub report: Option<RunReport>,
    /// Where the report was written, if it was.
    pub report_file: Option<std::path::PathBuf>,
    /// The error that stopped the run.
    pub error: Option<RunError>,
}

impl RunOutcome {
    /// Exit code: the error's, else from the report's status.
    pub fn exit_code(&self) -> u8 {
        match (&self.error, &self.report) {
            (Some(e), _) => e.exit_code(),
            (None, Some(r)) => r.exit_code(),
            (None, None) => 0,
        }
    }
}

/// Lists the run's users: the Users API (one call per filter, a union) or a users file; and
/// the listed users whose id cannot be exported (each warned about on stderr).
///
/// # Errors
/// [`RunError::Source`] or [`RunError::UsersFile`] (a bad id in a users file is an error).
pub async fn list_users(
    client: &Client,
    source: &UsersSource,
) -> Result<(Vec<User>, Vec<RejectedUser>), RunError> {
    let (users, rejected) = match source {
        UsersSource::Filters(filters) => users::list_users(client, filters).await?,
        UsersSource::File(path) => (users::read_users_file(path)?, Vec::new()),
    };
    for r in rejected.iter().take(20) {
        tracing::warn!(
            user = %r.channel_user_id,
            reason = %r.reason,
            "The Users API listed a user whose id cannot be exported; skipped."
        );
    }
    if users.is_empty() {
        tracing::warn!("No user matched: nothing to export (check the attribute filters).");
    }
    Ok((users, rejected))
}

/// Runs an export. Always returns a report once the run started (written to
/// `OUT/_run_report.json` and the run history for file outputs); the error, if any, says why it
/// stopped.
pub async fn run(spec: &RunSpec, control: &RunControl) -> RunOutcome {
    let started = resume::start_ms();
    let client = match Client::new(spec.source.client.clone()) {
        Ok(c) => c,
        Err(e) => return failed(e.into()),
    };
    let mut state = match resume::open_state(spec) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let (users, rejected) = match list_users(&client, &spec.source.users).await {
        Ok(u) => u,
        Err(e) => return failed(e),
    };
    let prepared = match resume::prepare(spec, state.as_mut(), users, rejected, started) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let cells = prepared.plan.cell_count();
    control.cells_planned.store(cells, Ordering::Relaxed);
    warn_if_large(cells, spec);
    let cx = RowContext {
        provider: spec.source.provider.as_str().into(),
        customer_id: spec.source.client.customer_id.as_str().into(),
        bot_key: spec.source.client.bot_key.as_str().into(),
        run_id: prepared.run_id.as_str().into(),
        extracted_at_ms: started,
    };
    let (tx, sink) = match finish::spawn_sink(spec, state, &prepared, control) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let mut walked = walk::Walked::default();
    let result = walk::walk(spec, control, &client, &prepared, &cx, &tx, &mut walked).await;
    let interrupted = control.stopping();
    if result.is_ok() && !prepared.plan.users.is_empty() {
        let users = prepared.plan.users.clone();
        let _ = tx.send(SinkMsg::WriteUsers { users, cx }).await;
    }
    drop(tx);
    let ended = sink.join().await;
    let ended = finish::Ended {
        walked,
        walk: result,
        sink: ended,
        interrupted,
    };
    finish::finish(spec, &client, &prepared, ended, started)
}

/// Plans past this many cells get a warning with the time they take at the rate limit.
pub const LARGE_PLAN_CELLS: u64 = 100_000;

fn warn_if_large(cells: u64, spec: &RunSpec) {
    if cells <= LARGE_PLAN_CELLS {
        return;
    }
    let rps = u64::from(spec.source.client.max_rps.max(1));
    let hours = cells as f64 / rps as f64 / 3600.0;
    tracing::warn!(
        "Planned {cells} cells (users x windows): at least {cells} requests, at least {hours:.1} h at max_rps {rps}. A longer --window or fewer users cost fewer requests."
    );
}

fn failed(error: RunError) -> RunOutcome {
    RunOutcome {
        report: None,
        report_file: None,
        error: Some(error),
    }
}
