//! `export` (flags only), `run` (a pipeline file plus flag overrides) and `backfill` (a
//! pipeline's source and sink over a closed range, in its own state namespace).

use std::process::ExitCode;
use std::sync::Arc;

use super::{Shown, install_signals, load, prepare};
use crate::cli::{BackfillArgs, ExportArgs, RunArgs};
use crate::config::{Command, PipelineFile, RangeSection};
use crate::error::Error;
use crate::pipeline::{self, RunControl};
use crate::progress::Progress;

/// `engati-etl export ...`.
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn export(a: ExportArgs, shown: Shown) -> Result<ExitCode, Error> {
    let file = PipelineFile::default().merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink));
    execute(file, Command::Export, shown).await
}

/// `engati-etl run PIPELINE.toml ...`.
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn run(a: RunArgs, shown: Shown) -> Result<ExitCode, Error> {
    let file = load(&a.pipeline)?.merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink));
    execute(file, Command::Run, shown).await
}

/// `engati-etl backfill PIPELINE.toml --from DATE --to DATE ...`: the pipeline's source and
/// sink, a fixed range in its own state namespace (nightly watermarks untouched).
///
/// # Errors
/// The configuration's or the run's [`Error`].
pub async fn backfill(a: BackfillArgs, shown: Shown) -> Result<ExitCode, Error> {
    let mut file = load(&a.pipeline)?.merge_flags(Some(&a.source), None, Some(&a.sink));
    file.range = RangeSection {
        mode: None,
        since: Some(a.from.clone()),
        until: Some(a.to.clone()),
        window: a.window.clone().or(file.range.window),
        ..RangeSection::default()
    };
    execute(file, Command::Backfill, shown).await
}

async fn execute(file: PipelineFile, command: Command, shown: Shown) -> Result<ExitCode, Error> {
    let prepared = prepare(file, command).await?;
    let control = Arc::new(RunControl::default());
    install_signals(control.clone());
    let progress = Progress::start(control.clone(), shown.quiet, shown.heartbeat_secs);
    let outcome = pipeline::run(&prepared.spec, &control).await;
    progress.finish();
    if let Some(r) = &outcome.report
        && !shown.quiet
    {
        eprint!("{}", r.summary(outcome.report_file.as_deref()));
    }
    drop(prepared);
    match outcome.error {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::from(outcome.report.map_or(0, |r| r.exit_code()))),
    }
}
