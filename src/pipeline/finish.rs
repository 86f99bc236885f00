//! The sink of a run, started for its output, and the run's end: its status, the report
//! (counts from the walk, the client and the sink), the run history and `_run_report.json`.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::resume::Prepared;
use super::walk::Walked;
use super::{RunControl, RunError, RunOutcome, RunSpec};
use crate::engati::UsersSource;
use crate::engati::client::Client;
use crate::plan::Mode;
use crate::report::{
    CellCounts, MessageCounts, ReportOptions, RequestCounts, RunReport, RunStatus,
};
use crate::sink::crm::{CrmRun, CrmSink};
use crate::sink::files::FilesSink;
use crate::sink::runner::{self, SinkHandle, SinkOutcome};
use crate::sink::stdout::StdoutSink;
use crate::sink::{OutputSpec, SinkError, SinkMsg};
use crate::state::StateStore;
use crate::time::{format_duration_ms, now_ms, rfc3339_ms};

/// Messages buffered between the walk and the sink thread.
const SINK_QUEUE: usize = 2;

/// Starts the sink of `spec.output` on its own thread, with the state store.
///
/// # Errors
/// [`RunError::Sink`] when the sink cannot be set up.
pub fn spawn_sink(
    spec: &RunSpec,
    state: Option<StateStore>,
    prepared: &Prepared,
    control: &RunControl,
) -> Result<(mpsc::Sender<SinkMsg>, SinkHandle), RunError> {
    let run_id = prepared.run_id.clone();
    let watermarks =
        matches!(spec.range.mode, Mode::Incremental { .. }).then(|| spec.namespace.clone());
    let counters = control.sink.clone();
    let missing = || RunError::Sink(SinkError::Crashed("the output has no state store".into()));
    Ok(match &spec.output {
        OutputSpec::Files(f) => {
            let sink = FilesSink::new(f.clone(), state.ok_or_else(missing)?, &run_id, watermarks);
            runner::spawn(sink, run_id, counters, SINK_QUEUE)
        }
        OutputSpec::Stdout => runner::spawn(StdoutSink::default(), run_id, counters, SINK_QUEUE),
        OutputSpec::Crm(c) => {
            let run = CrmRun {
                run_id: run_id.clone(),
                bot_key: spec.source.client.bot_key.clone(),
                watermarks,
                users: prepared.plan.users.clone(),
                timeout: spec.source.client.timeout,
                max_retries: spec.source.client.max_retries,
            };
            let sink = CrmSink::new(c.clone(), run, state.ok_or_else(missing)?)?;
            runner::spawn(sink, run_id, counters, SINK_QUEUE)
        }
    })
}

/// How the walk and the sink ended.
pub struct Ended {
    /// The walk's counts.
    pub walked: Walked,
    /// The walk's result.
    pub walk: Result<(), RunError>,
    /// The sink's outcome.
    pub sink: SinkOutcome,
    /// True when a stop was asked (signal).
    pub interrupted: bool,
}

/// Ends the run: the error that counts, the status, the report, recorded.
pub fn finish(
    spec: &RunSpec,
    client: &Client,
    prepared: &Prepared,
    ended: Ended,
    started: i64,
) -> RunOutcome {
    let Ended {
        walked,
        walk,
        sink,
        interrupted,
    } = ended;
    let SinkOutcome {
        report: sink_report,
        mut state,
        error: sink_error,
    } = sink;
    // When the sink thread failed, the walk only saw a closed channel: report the sink's
    // own error, which says what went wrong.
    let error: Option<RunError> = match (walk, sink_error) {
        (Err(RunError::Sink(SinkError::Crashed(_))), Some(e)) => Some(e.into()),
        (Err(e), _) => Some(e),
        (Ok(()), Some(e)) => Some(e.into()),
        (Ok(()), None) => None,
    };
    let status = match (&error, interrupted) {
        (Some(RunError::Sink(SinkError::OutputClosed)), _) => RunStatus::Interrupted,
        (Some(_), _) => RunStatus::Failed,
        (None, true) => RunStatus::Interrupted,
        (None, false) if sink_report.rejects_written > 0 || !prepared.rejected_users.is_empty() => {
            RunStatus::CompletedWithRejects
        }
        (None, false) => RunStatus::Succeeded,
    };
    let finished = now_ms();
    let report = RunReport {
        run_id: prepared.run_id.clone(),
        status,
        error: error.as_ref().map(|e| e.to_string()),
        resumed: prepared.resumed,
        started_at: rfc3339_ms(started),
        finished_at: rfc3339_ms(finished),
        duration_ms: (finished - started).max(0) as u64,
        options: report_options(spec),
        fetched: fetched_range(prepared),
        users: prepared.plan.users.len() as u64,
        users_rejected: prepared.rejected_users.clone(),
        cells: CellCounts {
            planned: prepared.plan.cell_count(),
            skipped: walked.cells_skipped,
            committed: sink_report.cells_committed,
            reread: walked.cells_reread,
            unreadable: walked.cells_unreadable,
        },
        requests: request_counts(client),
        messages: MessageCounts {
            written: sink_report.rows_written,
            rejected: sink_report.rejects_written,
            outside_window: walked.outside_window,
        },
        sink: sink_report,
    };
    let mut report_file = None;
    if let (Some(st), Some(out_dir)) = (state.as_mut(), spec.output.out_dir()) {
        let json = serde_json::to_string(&report).unwrap_or_default();
        if let Err(e) = st.finish_run(&prepared.run_id, status.as_str(), &json, finished) {
            tracing::warn!(error = %e, "Could not record the run in the state store.");
        }
        let path = out_dir.join("_run_report.json");
        match report.write(&path) {
            Ok(()) => report_file = Some(path),
            Err(e) => tracing::warn!(error = %e, "Could not write the run report."),
        }
    }
    RunOutcome {
        report: Some(report),
        report_file,
        error,
    }
}

fn request_counts(client: &Client) -> RequestCounts {
    let stats = client.stats();
    RequestCounts {
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
        concurrency: client.concurrency_report(),
    }
}

/// The options as the run report shows them (no secrets).
pub fn report_options(spec: &RunSpec) -> ReportOptions {
    let s = &spec.source;
    let mode = match spec.range.mode {
        Mode::Range { .. } if spec.namespace.starts_with("backfill") => "backfill",
        Mode::Range { .. } => "range",
        Mode::Incremental { .. } => "incremental",
    };
    let lookback = match spec.range.mode {
        Mode::Incremental { lookback_ms, .. } => Some(format_duration_ms(lookback_ms)),
        Mode::Range { .. } => None,
    };
    ReportOptions {
        provider: s.provider.to_string(),
        base_url: s.client.base_url.clone(),
        customer_id: s.client.customer_id.clone(),
        bot_key: s.client.bot_key.clone(),
        attributes: match &s.users {
            UsersSource::Filters(f) => f.iter().map(ToString::to_string).collect(),
            UsersSource::File(_) => Vec::new(),
        },
        users_file: match &s.users {
            UsersSource::File(p) => Some(p.display().to_string()),
            UsersSource::Filters(_) => None,
        },
        mode: mode.into(),
        since: rfc3339_ms(spec.range.mode.start_ms()),
        until: rfc3339_ms(spec.range.mode.until_ms()),
        window: format_duration_ms(spec.range.window_ms),
        lookback,
        page_size: s.page_size,
        concurrency: if s.client.adaptive {
            crate::engati::adaptive::Concurrency::Auto
        } else {
            crate::engati::adaptive::Concurrency::Fixed(s.client.concurrency)
        },
        max_concurrency: s.client.adaptive.then_some(s.client.concurrency),
        max_rps: s.client.max_rps,
        format: spec.output.format_label(),
        out: spec
            .output
            .out_dir()
            .map_or_else(|| "-".into(), |p| p.display().to_string()),
        state_dir: spec.output.state_dir().map(|p| p.display().to_string()),
        state_namespace: spec.namespace.clone(),
    }
}

/// The range the plan covers: from the earliest user's start to the end.
fn fetched_range(prepared: &Prepared) -> Option<crate::report::FetchedRange> {
    let plan = &prepared.plan;
    let from = plan
        .from_ms
        .iter()
        .copied()
        .filter(|&f| f < plan.until_ms)
        .min()?;
    Some(crate::report::FetchedRange {
        from: rfc3339_ms(from),
        until: rfc3339_ms(plan.until_ms),
    })
}
