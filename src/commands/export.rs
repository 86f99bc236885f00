//! `export` (flags only), `run` (a pipeline file plus flag overrides) and `backfill` (a
//! pipeline's source and sink over a closed range, in its own state namespace). Each ends with
//! the one-line JSON summary ([`crate::summary`]) and, with `--metrics-file`, the metrics file.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Shown, install_signals, load, prepare};
use crate::cli::{BackfillArgs, ExportArgs, OpsArgs, RunArgs};
use crate::config::{Command, PipelineFile, RangeSection};
use crate::error::Error;
use crate::metrics::Snapshot;
use crate::pipeline::{self, RunControl, RunOutcome, RunSpec};
use crate::progress::Progress;
use crate::report::RunStatus;
use crate::summary::Summary;

/// `engati-etl export ...`.
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn export(a: ExportArgs, shown: Shown) -> Result<ExitCode, Error> {
    let mut job = Job::new("export", "export".into(), &a.ops, shown);
    let file = PipelineFile::default()
        .merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink))
        .merge_privacy(&a.privacy);
    let result = job.execute(file, Command::Export).await;
    job.finish(result)
}

/// `engati-etl run PIPELINE.toml ...`.
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn run(a: RunArgs, shown: Shown) -> Result<ExitCode, Error> {
    let mut job = Job::new("run", file_name(&a.pipeline), &a.ops, shown);
    let result = match load(&a.pipeline) {
        Ok(file) => {
            let file = file
                .merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink))
                .merge_privacy(&a.privacy);
            job.execute(file, Command::Run).await
        }
        Err(e) => Err(e),
    };
    job.finish(result)
}

/// `engati-etl backfill PIPELINE.toml --from DATE --to DATE ...`: the pipeline's source and
/// sink, a fixed range in its own state namespace (nightly watermarks untouched).
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn backfill(a: BackfillArgs, shown: Shown) -> Result<ExitCode, Error> {
    let mut job = Job::new("backfill", file_name(&a.pipeline), &a.ops, shown);
    let result = match load(&a.pipeline) {
        Ok(file) => {
            let mut file = file
                .merge_flags(Some(&a.source), None, Some(&a.sink))
                .merge_privacy(&a.privacy);
            file.range = RangeSection {
                mode: None,
                since: Some(a.from.clone()),
                until: Some(a.to.clone()),
                window: a.window.clone().or(file.range.window),
                ..RangeSection::default()
            };
            job.execute(file, Command::Backfill).await
        }
        Err(e) => Err(e),
    };
    job.finish(result)
}

/// A pipeline's label: the file name without `.toml`.
fn file_name(p: &Path) -> String {
    p.file_stem()
        .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned())
}

/// One scheduled run: what it shows, where its summary and metrics go.
struct Job {
    command: &'static str,
    pipeline: String,
    ops: OpsArgs,
    shown: Shown,
    /// True when stdout carries data (`--out -`, `--dry-run`): the summary goes to stderr.
    data_on_stdout: bool,
    summary: Option<Summary>,
    /// Set once the final metrics are written: a periodic write still in flight (a blocking
    /// write outlives its aborted task) must not put a `running` file back over them.
    metrics_done: Arc<std::sync::Mutex<bool>>,
}

impl Job {
    fn new(command: &'static str, pipeline: String, ops: &OpsArgs, shown: Shown) -> Self {
        Job {
            command,
            pipeline,
            ops: ops.clone(),
            shown,
            data_on_stdout: false,
            summary: None,
            metrics_done: Arc::default(),
        }
    }

    async fn execute(&mut self, file: PipelineFile, command: Command) -> Result<ExitCode, Error> {
        if let Some(name) = &file.name {
            self.pipeline.clone_from(name);
        }
        self.data_on_stdout =
            file.sink.out.as_deref() == Some(Path::new("-")) || file.sink.dry_run == Some(true);
        let prepared = prepare(file, command).await?;
        let spec = &prepared.spec;
        let control = Arc::new(RunControl::default());
        install_signals(control.clone());
        let quiet = self.shown.quiet;
        let progress = Progress::start(control.clone(), quiet, self.shown.heartbeat_secs);
        let live_metrics = self.live_metrics(&control);
        let server = self.metrics_server(&control).await?;
        let outcome = pipeline::run(spec, &control).await;
        progress.finish();
        for t in [live_metrics, server].into_iter().flatten() {
            t.abort();
        }
        if let Some(r) = &outcome.report
            && !quiet
            && !crate::logging::is_json()
        {
            eprint!("{}", r.summary(outcome.report_file.as_deref()));
        }
        let code = self.exit_code(&outcome);
        self.record(spec, &outcome, code);
        drop(prepared);
        match outcome.error {
            Some(e) => Err(e.into()),
            None => Ok(ExitCode::from(code)),
        }
    }

    /// The exit code: the error's, else the status's (`--rejects-exit-code` for rejects).
    fn exit_code(&self, outcome: &RunOutcome) -> u8 {
        match (&outcome.error, &outcome.report) {
            (None, Some(r)) if r.status == RunStatus::CompletedWithRejects => {
                self.ops.rejects_exit_code
            }
            _ => outcome.exit_code(),
        }
    }

    /// Writes the metrics file every `--metrics-interval-secs` while the run goes.
    fn live_metrics(&self, control: &Arc<RunControl>) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.ops.metrics_file.clone()?;
        let secs = self.ops.metrics_interval_secs;
        if secs == 0 {
            return None;
        }
        let (control, pipeline, command) = (
            control.clone(),
            self.pipeline.clone(),
            self.command.to_owned(),
        );
        let started = crate::time::now_ms();
        let done = self.metrics_done.clone();
        Some(tokio::spawn(async move {
            let every = std::time::Duration::from_secs(secs);
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let text = Snapshot::live(&control, &pipeline, &command, started).render();
                let (p, done) = (path.clone(), done.clone());
                let written = tokio::task::spawn_blocking(move || {
                    let done = done.lock().expect("metrics lock");
                    if *done {
                        return Ok(());
                    }
                    crate::metrics::write_atomic(&p, &text)
                })
                .await;
                if let Ok(Err(e)) = written {
                    tracing::warn!(error = %e, path = %path.display(), "Could not write the metrics file.");
                }
            }
        }))
    }

    /// `--metrics-listen`: serves the live metrics while the run goes.
    async fn metrics_server(
        &self,
        control: &Arc<RunControl>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
        let Some(addr) = self.ops.metrics_listen else {
            return Ok(None);
        };
        let (control, pipeline, command) = (
            control.clone(),
            self.pipeline.clone(),
            self.command.to_owned(),
        );
        let started = crate::time::now_ms();
        let render = move || Snapshot::live(&control, &pipeline, &command, started).render();
        let task = crate::metrics::serve(addr, render).await.map_err(|e| {
            Error::Usage(format!("--metrics-listen {addr}: cannot listen there: {e}"))
        })?;
        tracing::info!(%addr, "Serving metrics at /metrics.");
        Ok(Some(task))
    }

    /// The summary and the final metrics file of a run that started.
    fn record(&mut self, spec: &RunSpec, outcome: &RunOutcome, code: u8) {
        let Some(report) = &outcome.report else {
            let error = outcome.error.as_ref().map(ToString::to_string);
            self.summary = Some(Summary::failed(
                self.command,
                &self.pipeline,
                error.unwrap_or_default(),
                code,
            ));
            return;
        };
        let mut summary = Summary::of(report, self.command, &self.pipeline, code);
        summary.report_file = outcome
            .report_file
            .as_ref()
            .map(|p| p.display().to_string());
        if let Some(path) = &self.ops.metrics_file {
            let mut snap = Snapshot::from_report(report, &self.pipeline, self.command, code);
            snap.last_success_s = last_success(spec);
            match self.write_final_metrics(path, &snap) {
                Ok(()) => summary.metrics_file = Some(path.display().to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "Could not write the metrics file.");
                }
            }
        }
        self.summary = Some(summary);
    }

    /// Writes the last metrics file of the run; no periodic write comes after it.
    fn write_final_metrics(&self, path: &Path, snap: &Snapshot) -> std::io::Result<()> {
        let mut done = self.metrics_done.lock().expect("metrics lock");
        *done = true;
        crate::metrics::write_atomic(path, &snap.render())
    }

    /// Prints the summary line (a run that failed before it started gets one too, and a
    /// metrics file saying so); returns the command's result.
    fn finish(mut self, result: Result<ExitCode, Error>) -> Result<ExitCode, Error> {
        if let Err(e) = &result
            && self.summary.is_none()
        {
            let code = e.exit_code();
            self.summary = Some(Summary::failed(
                self.command,
                &self.pipeline,
                e.to_string(),
                code,
            ));
            if let Some(path) = &self.ops.metrics_file {
                let snap = Snapshot {
                    pipeline: self.pipeline.clone(),
                    command: self.command.into(),
                    outcome: "failed".into(),
                    exit_code: Some(code),
                    started_s: crate::time::now_ms() as f64 / 1000.0,
                    ..Snapshot::default()
                };
                if let Err(e) = self.write_final_metrics(path, &snap) {
                    tracing::warn!(error = %e, "Could not write the metrics file.");
                }
            }
        }
        if let Some(s) = &self.summary {
            print_line(&s.line(), self.data_on_stdout);
        }
        result
    }
}

/// The end of the pipeline's last run that exported everything, Unix seconds (from the state
/// store, read-only).
fn last_success(spec: &RunSpec) -> Option<f64> {
    let dir = spec.output.state_dir()?;
    let st = crate::state::StateStore::open_read_only(dir).ok()?;
    st.runs(Some(&spec.namespace), 1000)
        .ok()?
        .into_iter()
        .find(|r| matches!(r.status.as_str(), "succeeded" | "completed_with_rejects"))
        .and_then(|r| r.finished_ms)
        .map(|ms| ms as f64 / 1000.0)
}

/// The summary line, on stdout (stderr when stdout carries data). A closed stdout is ignored.
fn print_line(line: &str, to_stderr: bool) {
    use std::io::Write as _;
    if to_stderr {
        eprintln!("{line}");
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
