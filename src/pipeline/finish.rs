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
use crate::sink::delta::DeltaSink;
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
            let sink = FilesSink::new(f.clone(), state.ok_or_else(missing)?, &run_id, watermarks)
                .with_privacy(spec.privacy.clone());
            runner::spawn_with(sink, run_id, counters, SINK_QUEUE, spec.privacy.clone())
        }
        OutputSpec::Stdout => runner::spawn_with(
            StdoutSink::default(),
            run_id,
            counters,
            SINK_QUEUE,
            spec.privacy.clone(),
        ),
        OutputSpec::Delta(d) => {
            let st = state.ok_or_else(missing)?;
            let sink = DeltaSink::new(d.clone(), st, &run_id, &spec.namespace, watermarks);
            runner::spawn(sink, run_id, counters, SINK_QUEUE)
        }
        OutputSpec::Crm(c) => {
            let run = CrmRun {
                run_id: run_id.clone(),
                bot_key: spec.source.client.bot_key.clone(),
                watermarks,
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
    /// The run's time series.
    pub timeline: crate::timeline::Timeline,
}

/// Ends the run: the error that counts, the status, the report, recorded. Hands the state
/// store back for [`record_remote_finish`].
pub fn finish(
    spec: &RunSpec,
    client: &Client,
    prepared: &Prepared,
    ended: Ended,
    started: i64,
) -> (RunOutcome, Option<StateStore>) {
    let Ended {
        walked,
        walk,
        sink,
        interrupted,
        timeline,
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
        users: prepared.plan.user_count,
        users_rejected: match &spec.privacy {
            Some(p) => p.rejected_users(prepared.rejected_users.clone()),
            None => prepared.rejected_users.clone(),
        },
        cells: CellCounts {
            planned: prepared.plan.cell_count(),
            skipped: walked.cells_skipped,
            committed: sink_report.cells_committed,
            reread: walked.cells_reread,
            unreadable: walked.cells_unreadable,
        },
        requests: request_counts(client),
        windows: walked.windows.clone(),
        messages: MessageCounts {
            written: sink_report.rows_written,
            rejected: sink_report.rejects_written,
            outside_window: walked.outside_window,
        },
        sink: sink_report,
        privacy: spec.privacy.as_ref().map(|p| p.report()),
        timeline,
    };
    let report_file = record(spec, state.as_mut(), &report, finished);
    let outcome = RunOutcome {
        report: Some(report),
        report_file,
        error,
    };
    (outcome, state)
}

/// For an output on object storage: records the run's end in the output (a `finish`
/// manifest), so a fresh worker does not resume a finished run. Best effort: a failure is
/// logged (the run then looks interrupted to a fresh worker, which resumes it and skips its
/// committed units). Runs on a thread of its own, off the executor.
pub async fn record_remote_finish(spec: &RunSpec, state: Option<StateStore>, outcome: &RunOutcome) {
    let (OutputSpec::Files(f), Some(mut st), Some(report)) = (&spec.output, state, &outcome.report)
    else {
        return;
    };
    let Some(url) = f.remote.clone() else {
        return;
    };
    if matches!(
        outcome.error,
        Some(RunError::Sink(SinkError::AnotherWorker { .. }))
    ) {
        return;
    }
    let (run_id, status) = (report.run_id.clone(), report.status.as_str());
    let json = serde_json::to_string(report).unwrap_or_default();
    let job =
        move || crate::sink::remote_files::record_finish(&url, &mut st, &run_id, status, &json);
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::info!("Another worker wrote to the namespace since; no finish manifest.")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "Could not record the run's end in the output."),
        Err(e) => tracing::warn!(error = %e, "Could not record the run's end in the output."),
    }
}

/// Records the run in the state store's history and writes `_run_report.json`; returns where.
fn record(
    spec: &RunSpec,
    state: Option<&mut StateStore>,
    report: &RunReport,
    finished: i64,
) -> Option<std::path::PathBuf> {
    let (st, out_dir) = (state?, spec.output.out_dir()?);
    let json = serde_json::to_string(report).unwrap_or_default();
    if let Err(e) = st.finish_run(&report.run_id, report.status.as_str(), &json, finished) {
        tracing::warn!(error = %e, "Could not record the run in the state store.");
    }
    let path = out_dir.join(report_file_name(spec.shard));
    match report.write(&path) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "Could not write the run report.");
            None
        }
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
        window: spec.range.window_text(),
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
        out: spec.output.location(),
        state_dir: spec.output.state_dir().map(|p| p.display().to_string()),
        state_namespace: spec.namespace.clone(),
    }
}

/// The range the plan covers: from the earliest user's start to the end.
fn fetched_range(prepared: &Prepared) -> Option<crate::report::FetchedRange> {
    let plan = &prepared.plan;
    Some(crate::report::FetchedRange {
        from: rfc3339_ms(plan.earliest_ms?),
        until: rfc3339_ms(plan.until_ms),
    })
}

/// The run report's file in the output: `_run_report.json`, or `_run_report-s<I>of<N>.json`
/// for a shard (N shards share the output).
pub fn report_file_name(shard: Option<crate::shard::Shard>) -> String {
    match shard {
        Some(s) => format!("_run_report-{}.json", s.tag()),
        None => "_run_report.json".into(),
    }
}
