//! The export, end to end: users -> windows x pages -> normalize -> sink -> state -> report.
//!
//! [`run`] lists the users, plans cells and units (`plan`), and walks the units in order. Each
//! cell is fetched by its own task (pages until a short page), normalized on the way into
//! Arrow batches, and handed to the sink thread **in plan order**, so the output is the same
//! on every run and a unit can be committed cell by cell as a prefix. To keep requests flowing
//! while the cell being written waits (a slow page, a 429 with `Retry-After`), cells ahead of
//! it are fetched and buffered: a page request starts only while the buffered batches stay
//! under `buffer_bytes` (the cell being written is never held back, so the gate cannot
//! deadlock), at most `lookahead` cells are ahead, and each cell buffers at most four pages,
//! so memory stays bounded however many users or messages there are. At most
//! `concurrency` requests are in flight and at most `max_rps` are sent per second (the client
//! enforces both). A unit is committed when its last cell is written.
//!
//! Ctrl-C / SIGTERM ([`RunControl::stop`]): no new cell starts; the cell being written is
//! finished, cells already fetched in full are written too, the rest is dropped; what was
//! written is committed; the run ends `interrupted` (exit 130) and resumes from there.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::engati::client::{Client, ClientBuildError, ClientConfig, Page};
use crate::engati::error::{ApiError, RequestError};
use crate::engati::provider::Provider;
use crate::engati::users::{self, AttributeFilter, UsersFileError};
use crate::model::{User, Window};
use crate::normalize::PageNormalizer;
use crate::plan::{Plan, Unit};
use crate::report::{
    CellCounts, MessageCounts, ReportOptions, RequestCounts, RunReport, RunStatus,
};
use crate::schema::{MessageBatchBuilder, RowContext};
use crate::sink::files::{self, FileSinkConfig};
use crate::sink::{CellRef, Encoding, SinkCounters, SinkError, SinkMsg, SinkReport, UnitInfo};
use crate::state::{StateError, StateStore};
use crate::time::{now_ms, rfc3339_ms};

/// Where the users come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersSource {
    /// Users API, one call per filter, union.
    Filters(Vec<AttributeFilter>),
    /// A file of channel-user ids.
    File(PathBuf),
}

/// Which range a run exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A fixed range `[since_ms, until_ms)` (export, fixed pipelines, backfill).
    Range {
        /// Start, ms since epoch UTC.
        since_ms: i64,
        /// End (exclusive).
        until_ms: i64,
    },
    /// Per user from its watermark minus `lookback_ms` (or `start_ms` for a new user) to
    /// `until_ms`.
    Incremental {
        /// Where a new user's history starts.
        start_ms: i64,
        /// Re-read this much before the watermark, for late messages.
        lookback_ms: i64,
        /// End (exclusive).
        until_ms: i64,
    },
}

/// Where rows go.
#[derive(Debug, Clone)]
pub enum OutputSpec {
    /// Files under a directory, with a state store.
    Files {
        /// Output directory.
        out_dir: PathBuf,
        /// State directory.
        state_dir: PathBuf,
        /// Encoding.
        encoding: Encoding,
        /// Rotate files at this size.
        target_file_bytes: u64,
        /// Crash tests: abort after this many journaled commits.
        crash_after_journal: Option<u64>,
    },
    /// JSONL on stdout.
    Stdout,
    /// A CRM (HubSpot or BottleCRM), with its ledger in the state store.
    Crm {
        /// Dead letters and the run report go here.
        out_dir: PathBuf,
        /// State directory (ledger, runs).
        state_dir: PathBuf,
        /// The CRM settings.
        crm: CrmOutput,
        /// Crash tests: abort after this many journaled commits.
        crash_after_journal: Option<u64>,
    },
}

impl OutputSpec {
    /// (output dir, state dir, crash point) of the outputs that keep state.
    fn dirs(&self) -> Option<(&PathBuf, &PathBuf, Option<u64>)> {
        match self {
            OutputSpec::Files {
                out_dir,
                state_dir,
                crash_after_journal,
                ..
            }
            | OutputSpec::Crm {
                out_dir,
                state_dir,
                crash_after_journal,
                ..
            } => Some((out_dir, state_dir, *crash_after_journal)),
            OutputSpec::Stdout => None,
        }
    }
}

/// The CRM part of a run (validated by `config`).
#[derive(Debug, Clone)]
pub struct CrmOutput {
    /// HubSpot or BottleCRM.
    pub kind: crate::sink::crm::CrmKind,
    /// Base URL.
    pub base_url: String,
    /// Token (empty for a dry run without one).
    pub token: crate::secret::Secret,
    /// Inactivity gap that starts a new session, ms.
    pub session_gap_ms: i64,
    /// Create missing contacts.
    pub create_contacts: bool,
    /// Requests per rolling 10 s.
    pub rate_per_10s: u32,
    /// HubSpot channel type for non-WhatsApp users.
    pub other_channel_type: String,
    /// Plan only.
    pub dry_run: bool,
    /// Crash tests: abort after this many CRM write batches.
    pub crash_after_writes: Option<u64>,
}

/// A validated, ready-to-run export (built by `config`).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Provider.
    pub provider: Provider,
    /// HTTP client settings (with the key).
    pub client: ClientConfig,
    /// Users.
    pub users: UsersSource,
    /// Range.
    pub mode: Mode,
    /// Window length, ms.
    pub window_ms: i64,
    /// Page size (1..=500).
    pub page_size: u32,
    /// Cells per unit.
    pub checkpoint_users: usize,
    /// Cells fetched ahead of the one being written, at most.
    pub lookahead: usize,
    /// Bytes of normalized batches buffered ahead of the sink before no new cell starts.
    pub buffer_bytes: u64,
    /// Output.
    pub output: OutputSpec,
    /// State namespace (`export`, `range`, `incremental`, `backfill:<from>:<to>`).
    pub namespace: String,
    /// Options as reported.
    pub report_options: ReportOptions,
}

/// Stop flag and live counters shared with the CLI (signals, progress bar).
#[derive(Debug, Default)]
pub struct RunControl {
    stop: AtomicBool,
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
    /// The state store (exit 2 when locked, else 6).
    #[error(transparent)]
    State(#[from] StateError),
    /// The output (exit 6).
    #[error(transparent)]
    Sink(#[from] SinkError),
}

impl RunError {
    /// The process exit code (README, "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) | RunError::UsersFile(_) | RunError::Client(_) => 2,
            RunError::State(StateError::Locked(_)) => 2,
            RunError::Source(e) => match &e.source {
                ApiError::Auth { .. } => 3,
                ApiError::Rejected { .. } | ApiError::NotFound | ApiError::Unexpected { .. } => 4,
                _ => 5,
            },
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
    /// The error that stopped the run.
    pub error: Option<RunError>,
}

impl RunOutcome {
    /// Exit code: the error's, else from the report's status.
    pub fn exit_code(&self) -> i32 {
        match (&self.error, &self.report) {
            (Some(e), _) => e.exit_code(),
            (None, Some(r)) => r.exit_code(),
            (None, None) => 0,
        }
    }
}

#[derive(Serialize)]
struct ParamsForResume<'a> {
    namespace: &'a str,
    provider: &'a str,
    base_url: &'a str,
    customer_id: &'a str,
    bot_key: &'a str,
    users: String,
    mode: String,
    window_ms: i64,
    page_size: u32,
    checkpoint_users: usize,
    format: &'a str,
}

fn new_run_id(now: i64) -> String {
    let t = rfc3339_ms(now);
    let compact: String = t[..19]
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("{compact}Z-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Runs an export. Always returns a report once the run started (written to
/// `OUT/_run_report.json` and the run history for file outputs); the error, if any, says why it
/// stopped.
pub async fn run(spec: &RunSpec, control: &RunControl) -> RunOutcome {
    let started = now_ms();
    let result = run_inner(spec, control, started).await;
    match result {
        Ok(report) => RunOutcome {
            report: Some(report),
            error: None,
        },
        Err((report, error)) => RunOutcome {
            report,
            error: Some(error),
        },
    }
}

struct Partial {
    run_id: String,
    resumed: bool,
    users: u64,
    cells: CellCounts,
    messages: MessageCounts,
}

type Failure = (Option<RunReport>, RunError);

async fn run_inner(
    spec: &RunSpec,
    control: &RunControl,
    started: i64,
) -> Result<RunReport, Failure> {
    let fail = |e: RunError| (None, e);
    let client = Client::new(spec.client.clone()).map_err(|e| fail(e.into()))?;

    // State first: recover an interrupted commit before anything reads the output.
    let mut state = match spec.output.dirs() {
        Some((out_dir, state_dir, crash)) => {
            std::fs::create_dir_all(out_dir).map_err(|e| {
                fail(RunError::Config(format!(
                    "out: cannot create output directory {}: {e}",
                    out_dir.display()
                )))
            })?;
            let mut st = StateStore::open(state_dir).map_err(|e| fail(e.into()))?;
            if let Some(n) = crash {
                st.crash_after_journal(n);
            }
            let (finished, strays) = st.recover(out_dir).map_err(|e| fail(e.into()))?;
            if finished + strays > 0 {
                tracing::info!(
                    commits = finished,
                    staged_files = strays,
                    "Recovered from an interrupted run."
                );
            }
            Some(st)
        }
        None => None,
    };

    let users: Vec<User> = match &spec.users {
        UsersSource::Filters(filters) => users::list_users(&client, filters)
            .await
            .map_err(|e| fail(e.into()))?,
        UsersSource::File(path) => users::read_users_file(path).map_err(|e| fail(e.into()))?,
    };

    let format_name = match &spec.output {
        OutputSpec::Files { encoding, .. } => encoding.extension(),
        OutputSpec::Stdout => "jsonl",
        OutputSpec::Crm { crm, .. } => crm.kind.as_str(),
    };
    let params = ParamsForResume {
        namespace: &spec.namespace,
        provider: spec.provider.as_str(),
        base_url: &spec.client.base_url,
        customer_id: &spec.client.customer_id,
        bot_key: &spec.client.bot_key,
        users: match &spec.users {
            UsersSource::Filters(f) => f
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            UsersSource::File(p) => format!("file:{}", p.display()),
        },
        mode: format!("{:?}", spec.mode),
        window_ms: spec.window_ms,
        page_size: spec.page_size,
        checkpoint_users: spec.checkpoint_users,
        format: format_name,
    };
    let params_json = serde_json::to_string(&params).unwrap_or_default();
    let params_hash = format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(params_json.as_bytes())
    );
    let until_ms = match spec.mode {
        Mode::Range { until_ms, .. } | Mode::Incremental { until_ms, .. } => until_ms,
    };

    let (run_id, resumed, done_units) = match state.as_mut() {
        Some(st) => {
            let start = st
                .begin_run(
                    &spec.namespace,
                    &params_hash,
                    &params_json,
                    Some(until_ms),
                    &new_run_id(started),
                    started,
                )
                .map_err(|e| fail(e.into()))?;
            let done = if start.resumed {
                st.run_units(&start.run_id).map_err(|e| fail(e.into()))?
            } else {
                HashMap::new()
            };
            (start.run_id, start.resumed, done)
        }
        None => (new_run_id(started), false, HashMap::new()),
    };

    // Plan: per-user ranges.
    let from_ms: Vec<i64> = match spec.mode {
        Mode::Range { since_ms, .. } => vec![since_ms; users.len()],
        Mode::Incremental {
            start_ms,
            lookback_ms,
            ..
        } => {
            let marks = match state.as_ref() {
                Some(st) => st
                    .watermarks(&spec.namespace, &run_id)
                    .map_err(|e| fail(e.into()))?,
                None => HashMap::new(),
            };
            users
                .iter()
                .map(|u| match marks.get(&u.channel_user_id) {
                    Some(&(_, end)) if end >= until_ms => until_ms,
                    Some(&(_, end)) => (end - lookback_ms).max(start_ms),
                    None => start_ms,
                })
                .collect()
        }
    };
    let users = Arc::new(users);
    let plan = Plan {
        users: users.clone(),
        from_ms: Arc::new(from_ms),
        until_ms,
        window_ms: spec.window_ms,
        checkpoint_users: spec.checkpoint_users,
    };
    let planned = plan.cell_count();
    control.cells_planned.store(planned, Ordering::Relaxed);

    let cx = RowContext {
        provider: spec.provider.as_str().into(),
        customer_id: spec.client.customer_id.as_str().into(),
        bot_key: spec.client.bot_key.as_str().into(),
        run_id: run_id.as_str().into(),
        extracted_at_ms: started,
    };

    // The sink.
    let (tx, join): (mpsc::Sender<SinkMsg>, SinkJoin) = match &spec.output {
        OutputSpec::Files {
            out_dir,
            encoding,
            target_file_bytes,
            ..
        } => {
            let cfg = FileSinkConfig {
                out_dir: out_dir.clone(),
                encoding: encoding.clone(),
                target_file_bytes: *target_file_bytes,
                run_id: run_id.clone(),
                watermark_namespace: matches!(spec.mode, Mode::Incremental { .. })
                    .then(|| spec.namespace.clone()),
            };
            let st = state.take().expect("file outputs have a state store");
            let (tx, h) = files::spawn(cfg, st, control.sink.clone(), 2);
            (tx, SinkJoin::Files(h))
        }
        OutputSpec::Stdout => {
            let (tx, h) = crate::sink::stdout::spawn(run_id.clone(), control.sink.clone(), 2);
            (tx, SinkJoin::Stdout(h))
        }
        OutputSpec::Crm { out_dir, crm, .. } => {
            let cfg = crate::sink::crm::CrmSinkConfig {
                kind: crm.kind,
                base_url: crm.base_url.clone(),
                token: crm.token.clone(),
                session_gap_ms: crm.session_gap_ms,
                create_contacts: crm.create_contacts,
                dry_run: crm.dry_run,
                rate_per_10s: crm.rate_per_10s,
                other_channel_type: crm.other_channel_type.clone(),
                out_dir: out_dir.clone(),
                run_id: run_id.clone(),
                bot_key: spec.client.bot_key.clone(),
                watermark_namespace: matches!(spec.mode, Mode::Incremental { .. })
                    .then(|| spec.namespace.clone()),
                users: users.clone(),
                timeout: spec.client.timeout,
                max_retries: spec.client.max_retries,
                crash_after_writes: crm.crash_after_writes,
            };
            let st = state.take().expect("CRM outputs have a state store");
            let (tx, h) = crate::sink::crm::spawn(cfg, st, control.sink.clone(), 2);
            (tx, SinkJoin::Files(h))
        }
    };

    let mut partial = Partial {
        run_id: run_id.clone(),
        resumed,
        users: users.len() as u64,
        cells: CellCounts {
            planned,
            ..Default::default()
        },
        messages: MessageCounts::default(),
    };
    let walk = walk_units(
        spec,
        control,
        &client,
        &plan,
        &cx,
        &done_units,
        &tx,
        &mut partial,
    )
    .await;
    let interrupted = control.stopping();
    if walk.is_ok() && !users.is_empty() {
        let _ = tx
            .send(SinkMsg::WriteUsers {
                users: users.clone(),
                cx: cx.clone(),
            })
            .await;
    }
    drop(tx);
    let (sink_report, sink_error, mut state) = join.join().await;

    // When the sink thread failed, the walk only saw a closed channel: report the sink's
    // own error, which says what went wrong.
    let error: Option<RunError> = match (walk, sink_error) {
        (Err(RunError::Sink(SinkError::Crashed(_))), Some(e)) => Some(e.into()),
        (Err(e), _) => Some(e),
        (Ok(()), Some(e)) => Some(e.into()),
        (Ok(()), None) => None,
    };
    partial.cells.committed = sink_report.cells_committed;
    partial.messages.written = sink_report.rows_written;
    partial.messages.rejected = sink_report.rejects_written;
    let status = match (&error, interrupted) {
        (Some(RunError::Sink(SinkError::OutputClosed)), _) => RunStatus::Interrupted,
        (Some(_), _) => RunStatus::Failed,
        (None, true) => RunStatus::Interrupted,
        (None, false) if sink_report.rejects_written > 0 => RunStatus::CompletedWithRejects,
        (None, false) => RunStatus::Succeeded,
    };
    let finished = now_ms();
    let stats = client.stats();
    let report = RunReport {
        run_id: partial.run_id.clone(),
        status,
        error: error.as_ref().map(|e| e.to_string()),
        resumed: partial.resumed,
        started_at: rfc3339_ms(started),
        finished_at: rfc3339_ms(finished),
        duration_ms: (finished - started).max(0) as u64,
        options: spec.report_options.clone(),
        users: partial.users,
        cells: partial.cells.clone(),
        requests: RequestCounts {
            total: stats.attempts(),
            by_status: stats
                .by_status()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            transport_errors: stats.transport_errors.load(Ordering::Relaxed),
            decode_errors: stats.decode_errors.load(Ordering::Relaxed),
            retries: stats.retries.load(Ordering::Relaxed),
            bytes_received: stats.bytes.load(Ordering::Relaxed),
        },
        messages: partial.messages.clone(),
        sink: sink_report,
    };
    if let (Some(st), Some((out_dir, _, _))) = (state.as_mut(), spec.output.dirs()) {
        let json = serde_json::to_string(&report).unwrap_or_default();
        let history_status = match (status, &error) {
            (RunStatus::Failed, _) => "failed",
            (s, _) => s.as_str(),
        };
        if let Err(e) = st.finish_run(&run_id, history_status, &json, finished) {
            tracing::warn!(error = %e, "Could not record the run in the state store.");
        }
        if let Err(e) = report.write(&out_dir.join("_run_report.json")) {
            tracing::warn!(error = %e, "Could not write the run report.");
        }
    }
    match error {
        Some(e) => Err((Some(report), e)),
        None => Ok(report),
    }
}

enum SinkJoin {
    Files(std::thread::JoinHandle<files::SinkOutcome>),
    Stdout(std::thread::JoinHandle<(SinkReport, Option<SinkError>)>),
}

impl SinkJoin {
    async fn join(self) -> (SinkReport, Option<SinkError>, Option<StateStore>) {
        let res = tokio::task::spawn_blocking(move || match self {
            SinkJoin::Files(h) => h
                .join()
                .map(|o| (o.report, o.error, Some(o.state)))
                .map_err(|_| ()),
            SinkJoin::Stdout(h) => h.join().map(|(r, e)| (r, e, None)).map_err(|_| ()),
        })
        .await;
        match res {
            Ok(Ok(v)) => v,
            _ => (
                SinkReport::default(),
                Some(SinkError::Crashed("the sink thread panicked".into())),
                None,
            ),
        }
    }
}

/// What a cell task sends to the writer loop.
enum CellEvent {
    /// A fetched page (its body counts in `Shared::buffered` until normalized).
    Page(Page),
    Done,
    Failed(RequestError),
}

struct InFlight {
    seq: u64,
    unit: usize,
    cell: u32,
    rx: mpsc::Receiver<CellEvent>,
    task: tokio::task::JoinHandle<()>,
    /// Wakes the cell's task when it becomes the cell being written (exempt from the budget).
    wake: Arc<tokio::sync::Notify>,
    /// A page of this cell was written: it must be finished before a commit.
    started: bool,
}

struct Shared {
    client: Client,
    page_size: u32,
    /// Bytes of page bodies fetched but not yet normalized, plus the reservations of requests
    /// in flight.
    buffered: AtomicU64,
    /// Above this, only the cell being written may fetch.
    budget: u64,
    /// Bytes a request reserves before it is sent: the last body's size (at least 4 KiB).
    expected_page: AtomicU64,
    /// Sequence number of the cell being written.
    head_seq: AtomicU64,
    /// Wakes one waiting cell when buffered bytes drop (a woken cell that reserves and leaves
    /// room wakes the next: no thundering herd of the whole lookahead).
    room: tokio::sync::Notify,
}

impl Shared {
    /// Waits until cell `seq` may fetch a page (it is the cell being written, or the buffer
    /// has room) and reserves the expected body size in the buffer; returns the reservation.
    /// Reserving before sending bounds the overshoot by the misestimates of the requests in
    /// flight (at most `concurrency` pages), however many cells wait.
    async fn wait_for_room(&self, seq: u64, wake: &tokio::sync::Notify) -> u64 {
        loop {
            let room = self.room.notified();
            let became_head = wake.notified();
            tokio::pin!(room, became_head);
            room.as_mut().enable();
            became_head.as_mut().enable();
            let want = self.expected_page.load(Ordering::Relaxed);
            let head = self.head_seq.load(Ordering::Acquire) == seq;
            let mut cur = self.buffered.load(Ordering::Acquire);
            loop {
                if !head && cur >= self.budget {
                    break;
                }
                match self.buffered.compare_exchange_weak(
                    cur,
                    cur + want,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        if cur + want < self.budget {
                            self.room.notify_one();
                        }
                        return want;
                    }
                    Err(now) => cur = now,
                }
            }
            tokio::select! {
                () = &mut room => {}
                () = &mut became_head => {}
            }
        }
    }

    /// Replaces a reservation by the body actually received (`actual` bytes; 0 when the
    /// request failed).
    fn settle(&self, reserved: u64, actual: u64) {
        if actual >= reserved {
            self.buffered.fetch_add(actual - reserved, Ordering::AcqRel);
        } else {
            self.buffered.fetch_sub(reserved - actual, Ordering::AcqRel);
            self.room.notify_one();
        }
        if actual > 0 {
            self.expected_page
                .store(actual.max(4096), Ordering::Relaxed);
        }
    }
}

/// Rows accumulated across cells before they go to the sink as one batch: fewer, larger
/// batches make Parquet encoding cheaper and the builders are allocated once per batch.
struct Batcher {
    builder: MessageBatchBuilder,
    bytes: usize,
}

impl Batcher {
    /// Rows per batch at most.
    const ROWS: usize = 4096;
    /// Page bytes per batch at most.
    const BYTES: usize = 2 << 20;

    fn new() -> Self {
        Batcher {
            builder: MessageBatchBuilder::with_capacity(Self::ROWS, Self::BYTES),
            bytes: 0,
        }
    }

    fn full(&self) -> bool {
        self.builder.len() >= Self::ROWS || self.bytes >= Self::BYTES
    }

    fn take(&mut self) -> Option<arrow_array::RecordBatch> {
        self.bytes = 0;
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }
}

#[allow(clippy::too_many_arguments)]
async fn walk_units(
    spec: &RunSpec,
    control: &RunControl,
    client: &Client,
    plan: &Plan,
    cx: &RowContext,
    done_units: &HashMap<String, u32>,
    tx: &mpsc::Sender<SinkMsg>,
    partial: &mut Partial,
) -> Result<(), RunError> {
    let shared = Arc::new(Shared {
        client: client.clone(),
        page_size: spec.page_size,
        buffered: AtomicU64::new(0),
        budget: spec.buffer_bytes.max(1),
        expected_page: AtomicU64::new(64 * 1024),
        head_seq: AtomicU64::new(u64::MAX),
        room: tokio::sync::Notify::new(),
    });
    let mut next_seq: u64 = 0;
    let users = plan.users.clone();
    // Units to do, with resume offsets; cells flattened in order.
    let mut units: Vec<Arc<UnitInfo>> = Vec::new();
    let mut unit_iter = plan.units().map(|u: Unit| {
        let done = done_units.get(&u.key.0).copied().unwrap_or(0) as usize;
        if done >= u.cells.len() {
            return Err(u.cells.len() as u64);
        }
        let cells: Vec<CellRef> = u.cells[done..]
            .iter()
            .map(|c| CellRef {
                user: users[c.user as usize].channel_user_id.as_str().into(),
                window: c.window,
            })
            .collect();
        Ok((
            done as u64,
            UnitInfo {
                key: u.key,
                window: u.window,
                first_cell: done as u32,
                cells,
            },
        ))
    });
    let user_index: HashMap<&str, usize> = users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.channel_user_id.as_str(), i))
        .collect();

    let lookahead = spec.lookahead.max(1);
    let mut queue: VecDeque<InFlight> = VecDeque::new();
    let mut next_unit: usize = 0; // index into `units` of the next unit to dispatch from
    let mut next_cell: u32 = 0;
    let mut current_unit: Option<usize> = None; // unit open in the sink
    let mut current_done: u32 = 0;
    let mut exhausted = false;
    let mut batcher = Batcher::new();
    // The normalizer of the cell being written (it counts identical messages across pages).
    let mut normalizer: Option<(u64, PageNormalizer<'_>)> = None;

    let send = |msg: SinkMsg| to_sink(tx, msg);
    let abort = |queue: &mut VecDeque<InFlight>| {
        for f in queue.drain(..) {
            f.task.abort();
        }
    };

    loop {
        // Dispatch more cells while there is room and no stop was asked.
        while queue.len() < lookahead && !control.stopping() && !exhausted {
            if next_unit >= units.len() {
                match unit_iter.next() {
                    Some(Ok((skipped, info))) => {
                        partial.cells.skipped += skipped;
                        units.push(Arc::new(info));
                    }
                    Some(Err(skipped)) => {
                        partial.cells.skipped += skipped;
                        control.cells_done.fetch_add(skipped, Ordering::Relaxed);
                        continue;
                    }
                    None => {
                        exhausted = true;
                        break;
                    }
                }
            }
            let info = units[next_unit].clone();
            let cell = &info.cells[next_cell as usize];
            let idx = user_index[cell.user.as_ref()];
            let (ctx, crx) = mpsc::channel(4);
            let seq = next_seq;
            next_seq += 1;
            let wake = Arc::new(tokio::sync::Notify::new());
            let task = tokio::spawn(fetch_cell(
                shared.clone(),
                users.clone(),
                idx,
                cell.window,
                seq,
                wake.clone(),
                ctx,
            ));
            queue.push_back(InFlight {
                seq,
                unit: next_unit,
                cell: next_cell,
                rx: crx,
                task,
                wake,
                started: false,
            });
            next_cell += 1;
            if next_cell as usize >= info.cells.len() {
                next_unit += 1;
                next_cell = 0;
            }
        }
        let Some(head) = queue.front_mut() else { break };
        if shared.head_seq.load(Ordering::Acquire) != head.seq {
            shared.head_seq.store(head.seq, Ordering::Release);
            head.wake.notify_one();
        }
        if control.stopping() && !head.started && !head.task.is_finished() {
            // Stopping: what is not fetched in full and not begun is dropped (refetched on
            // resume); everything before it gets committed.
            abort(&mut queue);
            break;
        }
        if current_unit != Some(head.unit) {
            if let Some(u) = current_unit {
                end_unit(tx, &mut batcher, current_done).await?;
                units_release(&mut units, u);
            }
            current_unit = Some(head.unit);
            current_done = 0;
            send(SinkMsg::BeginUnit(units[head.unit].clone())).await?;
        }
        match head.rx.recv().await {
            Some(CellEvent::Page(page)) => {
                head.started = true;
                let cell = head.cell;
                if normalizer.as_ref().is_none_or(|(seq, _)| *seq != head.seq) {
                    let c = &units[head.unit].cells[cell as usize];
                    let u = &users[user_index[c.user.as_ref()]];
                    normalizer = Some((
                        head.seq,
                        PageNormalizer::new(cx, &u.channel_user_id, u.channel.as_deref(), c.window),
                    ));
                }
                let (_, norm) = normalizer.as_mut().expect("set above");
                // The client checked the body is UTF-8 before returning it.
                let body = std::str::from_utf8(&page.body).unwrap_or("");
                let mut rejects = Vec::new();
                let counts = norm.page(
                    body,
                    &page.spans,
                    page.number,
                    &mut batcher.builder,
                    &mut rejects,
                );
                batcher.bytes += page.body.len();
                shared
                    .buffered
                    .fetch_sub(page.body.len() as u64, Ordering::AcqRel);
                shared.room.notify_one();
                partial.messages.outside_window += counts.out_of_window;
                control.rows.fetch_add(counts.rows, Ordering::Relaxed);
                let rows = if batcher.full() { batcher.take() } else { None };
                if rows.is_some() || !rejects.is_empty() {
                    send(SinkMsg::Page {
                        cell,
                        rows,
                        rejects,
                    })
                    .await?;
                }
            }
            Some(CellEvent::Done) => {
                queue.pop_front();
                current_done += 1;
                control.cells_done.fetch_add(1, Ordering::Relaxed);
            }
            Some(CellEvent::Failed(e)) => {
                abort(&mut queue);
                send(SinkMsg::AbortUnit).await?;
                return Err(e.into());
            }
            None => {
                abort(&mut queue);
                send(SinkMsg::AbortUnit).await?;
                return Err(RunError::Sink(SinkError::Crashed(
                    "a fetch task ended without a result".into(),
                )));
            }
        }
    }
    if current_unit.is_some() {
        end_unit(tx, &mut batcher, current_done).await?;
    }
    Ok(())
}

async fn to_sink(tx: &mpsc::Sender<SinkMsg>, msg: SinkMsg) -> Result<(), RunError> {
    tx.send(msg)
        .await
        .map_err(|_| RunError::Sink(SinkError::Crashed("the sink stopped".into())))
}

/// Ends the unit being written: the rows still batched, then the commit of its first
/// `cells_done` cells.
async fn end_unit(
    tx: &mpsc::Sender<SinkMsg>,
    batcher: &mut Batcher,
    cells_done: u32,
) -> Result<(), RunError> {
    if let Some(rows) = batcher.take() {
        to_sink(
            tx,
            SinkMsg::Page {
                cell: 0,
                rows: Some(rows),
                rejects: Vec::new(),
            },
        )
        .await?;
    }
    to_sink(tx, SinkMsg::EndUnit { cells_done }).await
}

/// Drops the unit's cell list once written (units can hold thousands of cells).
fn units_release(units: &mut [Arc<UnitInfo>], i: usize) {
    if let Some(u) = units.get_mut(i) {
        *u = Arc::new(UnitInfo {
            key: u.key.clone(),
            window: u.window,
            first_cell: u.first_cell,
            cells: Vec::new(),
        });
    }
}

/// Fetches one cell: pages of `[window.start - 1 ms, window.end]` until a short page. Asking
/// 1 ms wider on both sides returns every message of the window whether the API reads
/// `start_date`/`end_date` as inclusive or exclusive (engati-api.md: undocumented); the
/// normalizer then keeps `[window.start, window.end)`, so each message belongs to exactly one
/// window.
async fn fetch_cell(
    shared: Arc<Shared>,
    users: Arc<Vec<User>>,
    user: usize,
    window: Window,
    seq: u64,
    wake: Arc<tokio::sync::Notify>,
    tx: mpsc::Sender<CellEvent>,
) {
    let u = &users[user];
    let req_start = window.start_ms.saturating_sub(1).max(0);
    let req_end = window.end_ms;
    let mut page = 1u32;
    let mut previous_full_page: Option<u64> = None;
    loop {
        let reserved = shared.wait_for_room(seq, &wake).await;
        let result = shared
            .client
            .conversations_page(
                &u.channel_user_id,
                req_start,
                req_end,
                page,
                shared.page_size,
                || {
                    format!(
                        "Conversations API, user {}, window {}..{}, page {page}",
                        u.channel_user_id,
                        rfc3339_ms(window.start_ms),
                        rfc3339_ms(window.end_ms)
                    )
                },
            )
            .await;
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                shared.settle(reserved, 0);
                let _ = tx.send(CellEvent::Failed(e)).await;
                return;
            }
        };
        let bytes = p.body.len() as u64;
        shared.settle(reserved, bytes);
        let n = p.spans.len();
        if n >= shared.page_size as usize {
            // A server that ignores page_number returns the same full page forever: stop
            // with an error instead of looping (a runaway export).
            let h = xxhash_rust::xxh3::xxh3_64(&p.body);
            if previous_full_page == Some(h) {
                let e = RequestError {
                    what: format!("Conversations API, user {}, page {page}", u.channel_user_id),
                    attempts: 1,
                    source: ApiError::Decode(crate::engati::wire::DecodeError::Shape {
                        path: "$".into(),
                        looked_for: format!("page {page} to differ from page {}", page - 1),
                        found: "the same full page twice; the server may ignore page_number".into(),
                    }),
                };
                shared.settle(bytes, 0);
                let _ = tx.send(CellEvent::Failed(e)).await;
                return;
            }
            previous_full_page = Some(h);
        }
        if tx.send(CellEvent::Page(p)).await.is_err() {
            shared.settle(bytes, 0);
            return;
        }
        if n < shared.page_size as usize {
            break;
        }
        page += 1;
    }
    let _ = tx.send(CellEvent::Done).await;
}
