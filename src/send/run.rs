//! The steps of a campaign run, a `send retry` and a `send status --reconcile`, in order, with
//! their exit codes (issue 10: 0 all rows sent or skipped; 1 some failed or unknown; 2 usage;
//! 3 auth; 4 circuit breaker; 5 API unavailable; 6 state/output; 130 interrupted):
//!
//! ```text
//! open input -> lock state -> in_flight of a stopped run => unknown -> plan into the ledger
//!   -> send pending rows (engine) -> reconcile unknown rows -> result log -> report
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::config::{Campaign, Limits, SourceSpec};
use super::engine::{Control, Engine, Stop, stop_exit_code};
use super::http::Sender;
use super::input::InputReader;
use super::message::Message;
use super::plan::{self, PlanError, PlanStats, Planner};
use super::reconcile::{self, ReconcileStats};
use super::report::{Requests, RunCounts, SendReport};
use super::writer::LedgerWriter;
use super::{Kind, Status, crash_point, ledger, results};
use crate::engati::client::{Client, ClientConfig};
use crate::secret::Secret;
use crate::sink::Format;
use crate::state::{StateError, StateStore};
use crate::time::{now_ms, rfc3339_ms};

/// A run that could not complete: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Exit code (2 usage, 6 state/output, ...).
    pub code: i32,
    /// The message.
    pub message: String,
}

fn fail(code: i32, message: impl std::fmt::Display) -> Failure {
    Failure {
        code,
        message: message.to_string(),
    }
}

/// Everything the steps after planning need, from a [`Campaign`] or from the ledger.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Campaign id.
    pub id: String,
    /// What is sent.
    pub message: Message,
    /// The tenant.
    pub source: SourceSpec,
    /// Output directory.
    pub out: PathBuf,
    /// Result-log format.
    pub format: Format,
    /// Limits.
    pub limits: Limits,
}

impl Setup {
    /// From a validated campaign.
    pub fn of(c: &Campaign) -> Self {
        Setup {
            id: c.id.clone(),
            message: c.message.clone(),
            source: c.source.clone(),
            out: c.out.clone(),
            format: c.format,
            limits: c.limits,
        }
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.message.kind()
    }
}

/// Opens (locks) the state store and its ledger tables; rows left `in_flight` by a stopped
/// run become `unknown`. Returns the store and how many rows that was.
///
/// # Errors
/// Exit 2 when another run holds the lock, else 6.
pub fn open_store(state_dir: &Path) -> Result<(StateStore, u64), Failure> {
    let mut store = StateStore::open(state_dir).map_err(|e| match e {
        StateError::Locked(_) => fail(2, e),
        e => fail(6, e),
    })?;
    let path = store.path().display().to_string();
    let sql = |e: rusqlite::Error| fail(6, format!("state store {path}: {e}"));
    ledger::init(store.connection()).map_err(sql)?;
    let n = ledger::recover_in_flight(store.connection(), now_ms()).map_err(sql)?;
    Ok((store, n as u64))
}

/// Records the campaign, refusing a campaign id already used for another kind or bot.
fn register(store: &mut StateStore, c: &Campaign) -> Result<(), Failure> {
    let sql = |e: rusqlite::Error| fail(6, format!("state store: {e}"));
    let conn = store.connection();
    if let Some(old) = ledger::campaign(conn, &c.id).map_err(sql)? {
        let src: Option<SourceSpec> = serde_json::from_str(&old.source).ok();
        let same_bot = src.is_some_and(|s| {
            s.customer_id == c.source.customer_id && s.bot_key == c.source.bot_key
        });
        if old.kind != c.kind().as_str() || !same_bot {
            return Err(fail(
                2,
                format!(
                    "campaign `{}` in {} was a {} campaign for another bot or kind; choose another --campaign",
                    c.id,
                    c.state_dir.display(),
                    old.kind
                ),
            ));
        }
    }
    let rec = ledger::CampaignRecord {
        kind: c.kind().as_str().into(),
        source: serde_json::to_string(&c.source).expect("serializable"),
        message: serde_json::to_string(&c.message).expect("serializable"),
        out_dir: c.out.display().to_string(),
        log_format: results::file_name(c.format)
            .trim_start_matches("results.")
            .to_owned(),
    };
    ledger::put_campaign(conn, &c.id, &rec, now_ms()).map_err(sql)
}

/// A report with nothing filled in yet.
fn new_report(s: &Setup, command: &str, started_ms: i64) -> SendReport {
    SendReport {
        campaign: s.id.clone(),
        kind: s.kind(),
        command: command.to_owned(),
        outcome: String::new(),
        exit_code: 0,
        error: None,
        started_at: rfc3339_ms(started_ms),
        finished_at: String::new(),
        wall_time_ms: 0,
        source: s.source.clone(),
        recovered_in_flight: 0,
        plan: None,
        this_run: RunCounts::default(),
        unknown_before_reconcile: 0,
        reconciliation: None,
        rows: Default::default(),
        campaign_keys: Default::default(),
        requests: Requests::default(),
        result_log: String::new(),
        failed_rows: Vec::new(),
        unknown_rows: Vec::new(),
        changed_rows: Vec::new(),
    }
}

/// A report for `command` on `setup`, started now.
pub fn report_for(setup: &Setup, command: &str) -> SendReport {
    new_report(setup, command, now_ms())
}

/// Runs a campaign: plan, send, reconcile, log, report.
///
/// # Errors
/// A [`Failure`] before sending started (input, state, client).
pub async fn campaign(
    c: &Campaign,
    key: &Secret,
    control: &Control,
    command: &str,
) -> Result<SendReport, Failure> {
    let (started, started_ms) = (Instant::now(), now_ms());
    let planner = Planner::new(c);
    let reader = InputReader::open(&c.input, c.input_format, &planner.columns.names)
        .map_err(|e| fail(2, e))?;
    std::fs::create_dir_all(&c.out)
        .map_err(|e| fail(2, format!("out (--out) {}: {e}", c.out.display())))?;
    let (mut store, recovered) = open_store(&c.state_dir)?;
    register(&mut store, c)?;
    let stats: PlanStats =
        plan::record(&planner, reader, store.connection(), &c.id).map_err(|e| match e {
            PlanError::Input(e) => fail(2, e),
            PlanError::State(e) => fail(6, format!("state store: {e}")),
        })?;
    crash_point("send::after_plan");
    let setup = Setup::of(c);
    let mut report = new_report(&setup, command, started_ms);
    report.recovered_in_flight = recovered;
    control
        .counters
        .total
        .store(stats.to_send, Ordering::Relaxed);
    report.plan = Some(stats);
    let sender = Sender::new(&c.source, key, &c.limits).map_err(|e| fail(2, e))?;
    let (store, stop) = send(&setup, &sender, store, control, Status::Pending, false).await;
    finish(store, &setup, key, &sender, control, stop, report, started).await
}

/// `send retry`: sends the campaign's rows in `status` again (`unknown` or `failed`), each a
/// second, audited attempt. Unknown rows are first looked up in the conversation history:
/// those found there are settled as `sent`, not sent again.
///
/// # Errors
/// A [`Failure`] before sending started.
pub async fn retry(
    setup: &Setup,
    mut store: StateStore,
    status: Status,
    key: &Secret,
    control: &Control,
) -> Result<SendReport, Failure> {
    let (started, started_ms) = (Instant::now(), now_ms());
    let mut report = new_report(setup, &format!("send retry --status {status}"), started_ms);
    if status == Status::Unknown {
        // What the history already shows as delivered is settled, not sent a second time.
        report.reconciliation = reconcile_unknown(&mut store, setup, key).await?;
    }
    let n = ledger::counts(store.connection(), &setup.id).map_err(|e| fail(6, e))?;
    control.counters.total.store(
        n.get(status.as_str()).copied().unwrap_or(0),
        Ordering::Relaxed,
    );
    let sender = Sender::new(&setup.source, key, &setup.limits).map_err(|e| fail(2, e))?;
    let (store, stop) = send(setup, &sender, store, control, status, true).await;
    finish(store, setup, key, &sender, control, stop, report, started).await
}

/// The send phase: the ledger writer thread and the engine; returns the store and why the run
/// stopped early, if it did.
async fn send(
    setup: &Setup,
    sender: &Sender,
    store: StateStore,
    control: &Control,
    status: Status,
    manual: bool,
) -> (StateStore, Option<Stop>) {
    let writer = LedgerWriter::start(store, &setup.id);
    let engine = Engine {
        sender,
        ledger: &writer,
        control,
        message: &setup.message,
        source: &setup.source,
        limits: setup.limits,
        manual,
        breaker: std::sync::Mutex::new(Breaker::new(if manual {
            0
        } else {
            setup.limits.breaker_rows
        })),
    };
    engine.run(status).await;
    if let Err(e) = writer.flush().await {
        control.stop(Stop::Ledger(e.to_string()));
    }
    let (store, err) = writer.close();
    if let Some(e) = err {
        control.stop(Stop::Ledger(e.to_string()));
    }
    (store, control.reason())
}

/// A read client for reconciliation (the export client: read-side retries are safe).
///
/// # Errors
/// Exit 2 for a bad base URL or key.
pub fn read_client(source: &SourceSpec, key: &Secret, limits: &Limits) -> Result<Client, Failure> {
    Client::new(ClientConfig {
        base_url: source.base_url.clone(),
        customer_id: source.customer_id.clone(),
        bot_key: source.bot_key.clone(),
        api_key: key.clone(),
        timeout: Duration::from_secs(limits.timeout_secs),
        concurrency: limits.concurrency,
        adaptive: false,
        max_rps: limits.max_rps,
        max_retries: limits.max_retries,
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(30),
        conversations_keys: vec!["conversations".into(), "messages".into()],
        users_keys: Default::default(),
    })
    .map_err(|e| fail(2, e))
}

/// Reconciles the campaign's unknown rows (templates and broadcasts).
///
/// # Errors
/// Exit 2 (client) or 6 (state).
pub async fn reconcile_unknown(
    store: &mut StateStore,
    setup: &Setup,
    key: &Secret,
) -> Result<Option<ReconcileStats>, Failure> {
    if !setup.kind().reconcilable() {
        return Ok(None);
    }
    let client = read_client(&setup.source, key, &setup.limits)?;
    let stats = reconcile::reconcile(
        store,
        &setup.id,
        &client,
        setup.limits.concurrency,
        now_ms(),
    )
    .await
    .map_err(|e| fail(6, format!("state store: {e}")))?;
    Ok(Some(stats))
}

/// After sending: reconcile (unless the run was stopped by a signal, auth, an unavailable API
/// or the ledger), then the result log and the report, and the exit code.
#[allow(clippy::too_many_arguments)]
async fn finish(
    mut store: StateStore,
    setup: &Setup,
    key: &Secret,
    sender: &Sender,
    control: &Control,
    stop: Option<Stop>,
    mut report: SendReport,
    started: Instant,
) -> Result<SendReport, Failure> {
    let c = &control.counters;
    report.this_run = RunCounts {
        sent: c.sent.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        unknown: c.unknown.load(Ordering::Relaxed),
    };
    let counts = ledger::counts(store.connection(), &setup.id).map_err(|e| fail(6, e))?;
    report.unknown_before_reconcile = counts.get("unknown").copied().unwrap_or(0);
    let reconcile_now = matches!(
        stop,
        None | Some(Stop::Breaker(super::breaker::Trip::Refused { .. }))
    );
    if reconcile_now && report.unknown_before_reconcile > 0 {
        let now = reconcile_unknown(&mut store, setup, key).await?;
        report.reconciliation = match (report.reconciliation, now) {
            (Some(before), Some(now)) => Some(before.plus(now)),
            (before, now) => now.or(before),
        };
    }
    report.requests = Requests::from_stats(&sender.stats);
    write_outputs(&mut store, setup, stop, &mut report, started)?;
    Ok(report)
}

/// Writes the result log and the report; sets outcome, exit code and times.
///
/// # Errors
/// Exit 6.
pub fn write_outputs(
    store: &mut StateStore,
    setup: &Setup,
    stop: Option<Stop>,
    report: &mut SendReport,
    started: Instant,
) -> Result<(), Failure> {
    let conn = store.connection();
    report.campaign_keys = ledger::counts(conn, &setup.id).map_err(|e| fail(6, e))?;
    report.changed_rows = ledger::changed_keys(conn, &setup.id).map_err(|e| fail(6, e))?;
    let log = results::write_log(conn, &setup.id, setup.kind(), &setup.out, setup.format)
        .map_err(|e| fail(6, e))?;
    let unsettled: u64 = ["failed", "unknown", "pending", "in_flight"]
        .iter()
        .map(|s| log.by_status.get(*s).copied().unwrap_or(0))
        .sum();
    report.set_log(log);
    report.exit_code = match &stop {
        Some(s) => stop_exit_code(s),
        None if unsettled > 0 => 1,
        None => 0,
    };
    report.outcome = match &stop {
        None => "completed".into(),
        Some(Stop::Interrupted) => "interrupted (run again to continue)".into(),
        Some(_) => "stopped".into(),
    };
    report.error = stop.as_ref().map(describe);
    report.finished_at = rfc3339_ms(now_ms());
    report.wall_time_ms = started.elapsed().as_millis() as u64;
    report
        .write(&setup.out)
        .map_err(|e| fail(6, format!("{}/_send_report.json: {e}", setup.out.display())))
}

/// A stop reason in words, with what to do next.
pub fn describe(s: &Stop) -> String {
    use super::breaker::Trip;
    match s {
        Stop::Interrupted => {
            "interrupted: rows not yet sent stay pending; run the same command again to continue"
                .into()
        }
        Stop::Auth(e) => format!(
            "{e} (the campaign stopped at once; the row was not processed and stays pending)"
        ),
        Stop::Breaker(Trip::Refused { rows, error }) => format!(
            "circuit breaker: the first {rows} rows were all refused with the same error ({error}); the API refuses the campaign itself (template name, namespace, flow key?). Fix it and run the campaign again: it sends the rest and updates the refused rows, which `engati-etl send retry --campaign ID --status failed` then sends"
        ),
        Stop::Breaker(Trip::Unavailable { rows, error }) => format!(
            "the API looks unavailable: {rows} requests in a row may have been processed without an answer (last: {error}); they are unknown, the rest stays pending"
        ),
        Stop::Unavailable(e) => {
            format!("the API is unavailable: {e}; the rest stays pending, run again later")
        }
        Stop::Ledger(e) => format!("the ledger could not be written: {e}"),
    }
}
