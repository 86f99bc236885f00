//! `export` (flags only) and `run` (a pipeline file plus flag overrides).

use std::sync::Arc;

use super::{install_signals, prepare, print_error};
use crate::cli::{BackfillArgs, ExportArgs, RunArgs, overrides};
use crate::config::{Command, PipelineFile};
use crate::pipeline::{self, RunControl};
use crate::progress::Progress;

/// `engati-etl export ...`.
pub async fn export(a: ExportArgs, quiet: bool) -> i32 {
    let o = overrides(&a.source, Some(&a.range), Some(&a.sink));
    let file = PipelineFile::default().merge(&o);
    execute(
        file,
        Command::Export,
        quiet,
        (o.crash_after_journal, o.crash_after_crm_writes),
    )
    .await
}

/// `engati-etl run PIPELINE.toml ...`.
pub async fn run(a: RunArgs, quiet: bool) -> i32 {
    let file = match PipelineFile::load(&a.pipeline) {
        Ok(f) => f,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let o = overrides(&a.source, Some(&a.range), Some(&a.sink));
    execute(
        file.merge(&o),
        Command::Run,
        quiet,
        (o.crash_after_journal, o.crash_after_crm_writes),
    )
    .await
}

/// `engati-etl backfill PIPELINE.toml --from DATE --to DATE ...`: the pipeline's source and
/// sink, a fixed range in its own state namespace (nightly watermarks untouched).
pub async fn backfill(a: BackfillArgs, quiet: bool) -> i32 {
    let file = match PipelineFile::load(&a.pipeline) {
        Ok(f) => f,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let o = overrides(&a.source, None, Some(&a.sink));
    let mut file = file.merge(&o);
    file.range.mode = None;
    file.range.since = Some(a.from.clone());
    file.range.until = Some(a.to.clone());
    if a.window.is_some() {
        file.range.window.clone_from(&a.window);
    }
    execute(
        file,
        Command::Backfill,
        quiet,
        (o.crash_after_journal, o.crash_after_crm_writes),
    )
    .await
}

async fn execute(
    file: PipelineFile,
    command: Command,
    quiet: bool,
    crash: (Option<u64>, Option<u64>),
) -> i32 {
    let mut prepared = match prepare(file, command).await {
        Ok(p) => p,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    (
        prepared.settings.crash_after_journal,
        prepared.settings.crash_after_crm_writes,
    ) = crash;
    let spec = prepared.settings.into_spec(prepared.key);
    let control = Arc::new(RunControl::default());
    install_signals(control.clone());
    let progress = Progress::start(control.clone(), quiet);
    let outcome = pipeline::run(&spec, &control).await;
    progress.finish();
    if let Some(r) = &outcome.report
        && !quiet
    {
        eprint!("{}", r.summary());
    }
    if let Some(e) = &outcome.error
        && !matches!(
            e,
            pipeline::RunError::Sink(crate::sink::SinkError::OutputClosed)
        )
    {
        print_error(e);
    }
    drop(prepared.sandbox);
    outcome.exit_code()
}
