//! The export, end to end: users -> windows x pages -> normalize -> sink -> state -> report.
//!
//! [`run`] opens the state, lists the users into it as they are read ([`listing`]: memory does
//! not grow with the number of users), prepares the run ([`resume`]: start or resume it, plan
//! each user's range in the store), starts the sink ([`sink::runner`]) and walks the plan's
//! units in order ([`walk`]), reading the users from the store a unit at a time. Each cell (one user's window) is fetched by its own
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
pub mod listing;
mod resume;
mod walk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use cell::{HOLD_BYTES, PAGES_AHEAD};

/// Rows per batch handed to the sink, at most.
pub const BATCH_ROWS: usize = batcher::Batcher::ROWS;

use crate::engati::SourceSpec;
use crate::engati::client::{Client, ClientBuildError};
use crate::engati::error::{ApiError, RequestError};
use crate::engati::users::UsersFileError;
use crate::plan::RangeSpec;
use crate::report::RunReport;
use crate::schema::RowContext;
use crate::sink::{OutputSpec, SinkCounters, SinkError, SinkMsg};
use crate::state::{StateError, StateStore};

/// A validated, ready-to-run export (built by `config::validate`).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The pipeline's name, if it has one.
    pub name: Option<String>,
    /// State namespace (`export`, `range`, `incremental`, `backfill:<from>:<to>`; a sharded
    /// run's ends with `@s<I>of<N>`).
    pub namespace: String,
    /// The shard this worker exports, if sharded (`crate::shard`).
    pub shard: Option<crate::shard::Shard>,
    /// Where the messages come from.
    pub source: SourceSpec,
    /// Which range, in which windows.
    pub range: RangeSpec,
    /// Where rows go.
    pub output: OutputSpec,
    /// Units and buffers.
    pub tuning: Tuning,
    /// Privacy controls applied to the output, if any (the key is read by
    /// `commands::prepare`, until then a placeholder).
    pub privacy: Option<crate::privacy::Privacy>,
    /// What the `raw_json` column holds (`sink.raw_json`).
    pub raw_json: crate::schema::RawJson,
}

impl RunSpec {
    /// How this run reads its cells: its page size and double reads, and for adaptive
    /// windows (`window = "auto"`) fresh shared state starting from `max_window`.
    pub fn read_spec(&self) -> crate::engati::cell_read::ReadSpec {
        crate::engati::cell_read::ReadSpec {
            page_size: self.source.page_size,
            double_read: self.source.double_read,
            adaptive: (self.range.windowing == crate::plan::Windowing::Auto)
                .then(|| crate::engati::seek::AdaptiveWindows::new(self.range.window_ms)),
        }
    }
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
    /// Request counters (the run's client counts into them).
    pub requests: Arc<crate::engati::client::RequestStats>,
    /// The run's time series, sampled from the counters.
    pub timeline: crate::timeline::Recorder,
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
    /// The output (exit 6; 7 when another worker commits to the same output and namespace).
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl RunError {
    /// The process exit code (README, "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) | RunError::UsersFile(_) | RunError::Client(_) => 2,
            RunError::State(StateError::Locked(_) | StateError::Shard { .. }) => 2,
            RunError::Source(e) => match &e.source {
                ApiError::Spool { .. } => 6,
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
            RunError::Sink(SinkError::AnotherWorker { .. }) => 7,
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

/// Says what listing found: the listed ids that cannot be exported (each warned about on
/// stderr, 20 at most) and an empty listing.
fn warn_listing(prepared: &resume::Prepared) {
    for r in prepared.rejected_users.iter().take(20) {
        tracing::warn!(
            user = %r.channel_user_id,
            reason = %r.reason,
            "The Users API listed a user whose id cannot be exported; skipped."
        );
    }
    if let Some(s) = prepared.plan.shard {
        tracing::info!(
            shard = %s,
            users = prepared.plan.user_count,
            other_shards = prepared.other_shards,
            "Kept this shard's users."
        );
    }
    if prepared.plan.user_count == 0 {
        tracing::warn!("No user matched: nothing to export (check the attribute filters).");
    }
}

/// The run's users listed into its store (the output's, or a scratch one for stdout) and the
/// run prepared over them. The scratch store, if any, lives as long as the returned value.
async fn list_and_prepare(
    spec: &RunSpec,
    client: &Client,
    state: Option<StateStore>,
    started: i64,
) -> Result<
    (
        resume::Prepared,
        Option<StateStore>,
        Option<listing::Scratch>,
    ),
    RunError,
> {
    let (store, scratch) = match state {
        Some(st) => (st, None),
        None => {
            let s = listing::scratch_store()?;
            (s.store, Some(s.dir))
        }
    };
    let from_ms = spec.range.mode.start_ms();
    let (mut store, listed) =
        listing::list_users(client, &spec.source.users, spec.shard, from_ms, store).await;
    let keeps_state = scratch.is_none();
    let prepared = resume::prepare(spec, &mut store, keeps_state, listed?, started)?;
    warn_listing(&prepared);
    Ok(match scratch {
        None => (prepared, Some(store), None),
        Some(dir) => (prepared, None, Some(listing::Scratch { store, dir })),
    })
}

/// Runs an export. Always returns a report once the run started (written to
/// `OUT/_run_report.json` and the run history for file outputs); the error, if any, says why it
/// stopped.
pub async fn run(spec: &RunSpec, control: &RunControl) -> RunOutcome {
    let started = resume::start_ms();
    let client = match Client::with_stats(spec.source.client.clone(), control.requests.clone()) {
        Ok(c) => c,
        Err(e) => return failed(e.into()),
    };
    let state = match resume::open_state(spec) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let state = match resume::replay_remote(spec, state).await {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if let Some(st) = &state
        && let Err(e) = crate::privacy::check_output(st, spec.privacy.as_ref())
    {
        return failed(e);
    }
    let (prepared, state, _scratch) = match list_and_prepare(spec, &client, state, started).await {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    crate::logging::set_run_id(&prepared.run_id);
    let cells = prepared.plan.cell_count();
    control.cells_planned.store(cells, Ordering::Relaxed);
    warn_if_large(cells, spec);
    let cx = RowContext {
        provider: spec.source.provider.as_str().into(),
        customer_id: spec.source.client.customer_id.as_str().into(),
        bot_key: spec.source.client.bot_key.as_str().into(),
        run_id: prepared.run_id.as_str().into(),
        extracted_at_ms: started,
        raw_json: spec.raw_json,
    };
    let (tx, sink) = match finish::spawn_sink(spec, state, &prepared, control) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let mut walked = walk::Walked::default();
    let result = {
        let walking = walk::walk(spec, control, &client, &prepared, &cx, &tx, &mut walked);
        let sampling = control.timeline.run(&control.requests, &control.sink);
        tokio::select! {
            r = walking => r,
            () = sampling => unreachable!("the sampler never ends"),
        }
    };
    let interrupted = control.stopping();
    if result.is_ok() && prepared.plan.user_count > 0 {
        let _ = tx.send(SinkMsg::WriteUsers { cx }).await;
    }
    drop(tx);
    let ended = sink.join().await;
    control.timeline.sample(&control.requests, &control.sink);
    let ended = finish::Ended {
        walked,
        walk: result,
        sink: ended,
        interrupted,
        timeline: control.timeline.snapshot(),
    };
    let (outcome, state) = finish::finish(spec, &client, &prepared, ended, started);
    finish::record_remote_finish(spec, state, &outcome).await;
    outcome
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
