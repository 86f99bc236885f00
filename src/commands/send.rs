//! `send`: flags (and a pipeline's `[send]` section) -> a campaign -> a run, a dry run, a
//! retry or a status; the summary on stderr; the exit code (README, "Send").

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::process::ExitCode;

use super::{Shown, install_signals};
use crate::config::{API_KEY_ENV, ConfigError, PipelineFile};
use crate::error::Error;
use crate::pipeline::RunControl;
use crate::secret::Secret;
use crate::send::args::{CampaignTarget, RetryArgs, SendCmd, SendSourceArgs, StatusArgs};
use crate::send::config::{self, Campaign, Limits, SendSection, SourceSpec};
use crate::send::engine::Control;
use crate::send::run::{self, Failure, Setup};
use crate::send::{Status, dryrun, ledger};
use crate::sink::Format;

/// Runs a `send` subcommand.
///
/// # Errors
/// [`Error::Send`] with the command's exit code (README, "Send": 2 usage, 3 auth, 6 state or
/// output, ...) and its message; a campaign that ran returns its own exit code as `Ok`.
pub async fn send(cmd: SendCmd, shown: Shown) -> Result<ExitCode, Error> {
    match send_command(cmd, shown.quiet).await {
        Ok(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        Err(f) => Err(Error::Send {
            code: u8::try_from(f.code).unwrap_or(1),
            message: f.message,
        }),
    }
}

async fn send_command(cmd: SendCmd, quiet: bool) -> Result<i32, Failure> {
    match cmd {
        SendCmd::Template(a) => {
            campaign(
                PipelineFile::default(),
                &a.source,
                a.section(),
                quiet,
                "send template",
            )
            .await
        }
        SendCmd::Trigger(a) => {
            campaign(
                PipelineFile::default(),
                &a.source,
                a.section(),
                quiet,
                "send trigger",
            )
            .await
        }
        SendCmd::Broadcast(a) => {
            campaign(
                PipelineFile::default(),
                &a.source,
                a.section(),
                quiet,
                "send broadcast",
            )
            .await
        }
        SendCmd::Run(a) => match PipelineFile::load(&a.pipeline) {
            Ok(f) => {
                campaign(
                    f,
                    &a.source,
                    a.common.section(None, &a.source),
                    quiet,
                    "send run",
                )
                .await
            }
            Err(e) => Err(Failure {
                code: 2,
                message: e.to_string(),
            }),
        },
        SendCmd::Status(a) => status(a, quiet).await,
        SendCmd::Retry(a) => retry(a, quiet).await,
    }
}

fn exit(f: Failure) -> Result<i32, Failure> {
    Err(f)
}

async fn campaign(
    mut file: PipelineFile,
    source: &SendSourceArgs,
    flags: SendSection,
    quiet: bool,
    command: &str,
) -> Result<i32, Failure> {
    source.apply(&mut file.source);
    let section = file.send.take().unwrap_or_default().merge(&flags);
    let sandbox = file.sandbox.clone().filter(|s| s.enabled);
    let mut c = match config::validate(
        &section,
        &file.source,
        sandbox.is_some(),
        crate::time::now_ms(),
    ) {
        Ok(c) => c,
        Err(p) => {
            return exit(Failure {
                code: 2,
                message: ConfigError::Invalid(p).to_string(),
            });
        }
    };
    let handle = match &sandbox {
        Some(s) => match start_sandbox(s, &mut c).await {
            Ok(h) => Some(h),
            Err(f) => return exit(f),
        },
        None => None,
    };
    let key = match (&handle, c.dry_run) {
        (Some(h), _) => Secret::new(h.ids.api_key.clone()),
        (None, true) => Secret::new(""),
        (None, false) => match config::read_key(&c.source, std::env::var(API_KEY_ENV).ok()) {
            Ok(k) => k,
            Err(e) => {
                return exit(Failure {
                    code: 2,
                    message: e,
                });
            }
        },
    };
    if c.dry_run {
        return dry_run(&c);
    }
    let control = Control::new(Arc::new(RunControl::default()));
    install_signals(control.run.clone());
    let progress = Progress::start(&control, quiet);
    let result = run::campaign(&c, &key, &control, command).await;
    progress.finish();
    drop(handle);
    done(result, quiet)
}

/// Starts the embedded sandbox of a pipeline's `[sandbox]` section and points `c` at it.
async fn start_sandbox(
    s: &crate::config::SandboxSection,
    c: &mut Campaign,
) -> Result<crate::sandbox::SandboxHandle, Failure> {
    let cfg = s.config().map_err(|e| Failure {
        code: 2,
        message: e.to_string(),
    })?;
    let h = crate::sandbox::start(cfg).await.map_err(|e| Failure {
        code: 2,
        message: format!("sandbox: {e}"),
    })?;
    c.source = SourceSpec {
        provider: crate::engati::provider::Provider::Custom,
        base_url: h.base_url.clone(),
        customer_id: h.ids.customer_id.clone(),
        bot_key: h.ids.bot_key.clone(),
        api_key_file: None,
    };
    Ok(h)
}

fn done(
    result: Result<crate::send::report::SendReport, Failure>,
    quiet: bool,
) -> Result<i32, Failure> {
    match result {
        Ok(r) => {
            if !quiet {
                eprint!("{}", r.summary());
            }
            match r.error {
                Some(e) if r.exit_code > 1 => Err(Failure {
                    code: r.exit_code,
                    message: e.to_string(),
                }),
                _ => Ok(r.exit_code),
            }
        }
        Err(f) => exit(f),
    }
}

fn dry_run(c: &Campaign) -> Result<i32, Failure> {
    let planner = crate::send::plan::Planner::new(c);
    let reader = match crate::send::input::InputReader::open(
        &c.input,
        c.input_format,
        &planner.columns.names,
    ) {
        Ok(r) => r,
        Err(e) => {
            return exit(Failure {
                code: 2,
                message: e.to_string(),
            });
        }
    };
    match dryrun::run(c, &planner, reader, crate::time::now_ms()) {
        Ok(s) => {
            let p = &s.plan;
            let skipped: u64 = p.skipped.values().sum();
            let by: Vec<String> = p.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!(
                "dry run of campaign {} ({}): nothing was sent",
                c.id,
                c.kind()
            );
            println!("  input rows        {}", p.input_rows);
            println!(
                "  would send        {} rows in {} requests",
                p.to_send, s.requests
            );
            println!(
                "  skipped           {skipped}{}",
                if by.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", by.join(", "))
                }
            );
            println!("  duplicates        {}", p.duplicates);
            println!(
                "  already settled   {} ({} changed: reported, not re-sent)",
                p.already_settled, p.changed
            );
            println!("  requests in       {}", s.file.display());
            Ok(0)
        }
        Err(dryrun::DryRunError::Plan(crate::send::plan::PlanError::Input(e))) => exit(Failure {
            code: 2,
            message: e.to_string(),
        }),
        Err(e) => exit(Failure {
            code: 6,
            message: e.to_string(),
        }),
    }
}

fn state_dir(t: &CampaignTarget) -> PathBuf {
    match (&t.state_dir, &t.out) {
        (Some(s), _) => s.clone(),
        (None, Some(o)) => o.join("_state"),
        (None, None) => PathBuf::from("_state"),
    }
}

/// The campaign as recorded in the ledger, with flag overrides for the tenant and limits.
fn setup_from_ledger(
    conn: &rusqlite::Connection,
    t: &CampaignTarget,
    limits: (Option<usize>, Option<u32>),
    format: Option<&str>,
) -> Result<Setup, Failure> {
    let rec = ledger::campaign(conn, &t.campaign)
        .map_err(|e| Failure {
            code: 6,
            message: format!("state store: {e}"),
        })?
        .ok_or_else(|| Failure {
            code: 2,
            message: format!("no campaign `{}` in {}", t.campaign, state_dir(t).display()),
        })?;
    let bad = |e: serde_json::Error| Failure {
        code: 6,
        message: format!("campaign `{}`: unreadable record: {e}", t.campaign),
    };
    let mut source: SourceSpec = serde_json::from_str(&rec.source).map_err(bad)?;
    let s = &t.source;
    if let Some(p) = s.provider {
        source.provider = p;
    }
    for (dst, v) in [
        (&mut source.base_url, &s.base_url),
        (&mut source.customer_id, &s.customer_id),
        (&mut source.bot_key, &s.bot_key),
    ] {
        if let Some(v) = v {
            v.clone_into(dst);
        }
    }
    source.api_key_file.clone_from(&s.api_key_file);
    let out = t.out.clone().unwrap_or_else(|| PathBuf::from(&rec.out_dir));
    let format = match format {
        Some("jsonl") => Format::Jsonl,
        Some("parquet") => Format::Parquet,
        Some(f) => {
            return Err(Failure {
                code: 2,
                message: format!("format (--format) `{f}` must be parquet or jsonl"),
            });
        }
        None if rec.log_format == "jsonl" => Format::Jsonl,
        None => Format::Parquet,
    };
    Ok(Setup {
        id: t.campaign.clone(),
        message: serde_json::from_str(&rec.message).map_err(bad)?,
        source,
        out,
        format,
        limits: Limits {
            concurrency: limits
                .0
                .unwrap_or(config::DEFAULT_CONCURRENCY)
                .clamp(1, 256),
            max_rps: limits.1.unwrap_or(config::DEFAULT_MAX_RPS).max(1),
            timeout_secs: s
                .timeout_secs
                .unwrap_or(crate::config::DEFAULT_TIMEOUT_SECS)
                .max(1),
            max_retries: s.max_retries.unwrap_or(crate::config::DEFAULT_MAX_RETRIES),
            breaker_rows: 0,
        },
    })
}

fn key_for(source: &SourceSpec) -> Result<Secret, Failure> {
    config::read_key(source, std::env::var(API_KEY_ENV).ok()).map_err(|e| Failure {
        code: 2,
        message: e,
    })
}

async fn retry(a: RetryArgs, quiet: bool) -> Result<i32, Failure> {
    let status = match a.status.as_str() {
        "unknown" => Status::Unknown,
        "failed" => Status::Failed,
        s => {
            return exit(Failure {
                code: 2,
                message: format!("--status `{s}`: retry takes unknown or failed"),
            });
        }
    };
    let (mut store, _) = match run::open_store(&state_dir(&a.target)) {
        Ok(s) => s,
        Err(f) => return exit(f),
    };
    let setup = setup_from_ledger(
        store.connection(),
        &a.target,
        (a.concurrency, a.max_rps),
        a.format.as_deref(),
    );
    let (setup, key) = match setup.and_then(|s| key_for(&s.source).map(|k| (s, k))) {
        Ok(x) => x,
        Err(f) => return exit(f),
    };
    let control = Control::new(Arc::new(RunControl::default()));
    install_signals(control.run.clone());
    let progress = Progress::start(&control, quiet);
    let result = run::retry(&setup, store, status, &key, &control).await;
    progress.finish();
    done(result, quiet)
}

async fn status(a: StatusArgs, quiet: bool) -> Result<i32, Failure> {
    let dir = state_dir(&a.target);
    if a.reconcile {
        let started = std::time::Instant::now();
        let (mut store, _) = match run::open_store(&dir) {
            Ok(s) => s,
            Err(f) => return exit(f),
        };
        let setup = match setup_from_ledger(store.connection(), &a.target, (None, None), None) {
            Ok(s) => s,
            Err(f) => return exit(f),
        };
        let result = async {
            let key = key_for(&setup.source)?;
            let stats = run::reconcile_unknown(&mut store, &setup, &key).await?;
            let mut report = run::report_for(&setup, "send status --reconcile");
            report.reconciliation = stats;
            run::write_outputs(&mut store, &setup, None, &mut report, started)?;
            Ok::<_, Failure>(report)
        }
        .await;
        match result {
            Ok(r) if !quiet && !a.json => eprint!("{}", r.summary()),
            Ok(_) => {}
            Err(f) => return exit(f),
        }
    }
    print_status(&dir, &a)
}

fn print_status(dir: &Path, a: &StatusArgs) -> Result<i32, Failure> {
    let path = dir.join("state.sqlite3");
    let conn = match rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) {
        Ok(c) if path.exists() => c,
        _ => {
            return exit(Failure {
                code: 2,
                message: format!("no state store at {}", path.display()),
            });
        }
    };
    let result = (|| -> Result<serde_json::Value, Failure> {
        let setup = setup_from_ledger(&conn, &a.target, (None, None), None)?;
        let sql = |e: rusqlite::Error| Failure {
            code: 6,
            message: format!("state store: {e}"),
        };
        let keys = ledger::counts(&conn, &setup.id).map_err(sql)?;
        let failed =
            ledger::list(&conn, &setup.id, Status::Failed, usize::MAX >> 1).map_err(sql)?;
        let unknown =
            ledger::list(&conn, &setup.id, Status::Unknown, usize::MAX >> 1).map_err(sql)?;
        Ok(serde_json::json!({
            "campaign": setup.id,
            "kind": setup.kind(),
            "state_dir": dir.display().to_string(),
            "keys": keys,
            "result_log": config::log_dir(&setup.out, &setup.id).join(crate::send::results::file_name(setup.format)).display().to_string(),
            "failed": failed,
            "unknown": unknown,
        }))
    })();
    match result {
        Ok(v) if a.json => {
            println!("{v}");
            Ok(0)
        }
        Ok(v) => {
            println!(
                "campaign {} ({}) in {}",
                v["campaign"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
                dir.display()
            );
            let keys: Vec<String> = Status::ALL
                .iter()
                .map(|s| format!("{s} {}", v["keys"][s.as_str()].as_u64().unwrap_or(0)))
                .collect();
            println!("  keys        {}", keys.join(" · "));
            println!("  result log  {}", v["result_log"].as_str().unwrap_or(""));
            for what in ["failed", "unknown"] {
                let rows = v[what].as_array().cloned().unwrap_or_default();
                if !rows.is_empty() {
                    println!(
                        "  {what:<11} {} rows{}:",
                        rows.len(),
                        if rows.len() > 20 { ", first 20" } else { "" }
                    );
                    for r in rows.iter().take(20) {
                        println!(
                            "              {}  {}",
                            r["row_key"].as_str().unwrap_or(""),
                            r["error"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(0)
        }
        Err(f) => exit(f),
    }
}

/// A progress bar on stderr, only on a terminal and without `--quiet`.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(control: &Control, quiet: bool) -> Self {
        if quiet || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                task: None,
            };
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} rows  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        let b = bar.clone();
        let counters = control.counters.clone();
        let task = tokio::spawn(async move {
            loop {
                b.set_length(counters.total.load(Ordering::Relaxed));
                b.set_position(counters.done.load(Ordering::Relaxed));
                b.set_message(format!(
                    "{} sent, {} failed, {} unknown",
                    counters.sent.load(Ordering::Relaxed),
                    counters.failed.load(Ordering::Relaxed),
                    counters.unknown.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }

    fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
