//! The subcommands: turn parsed flags into a run, print results, return the exit code. Each
//! returns `Result<ExitCode, Error>`; errors are printed once, by `main`.

mod completions;
mod export;
mod plan;
mod report;
mod sandbox;
mod send;
mod state;
mod users;
mod validate;
mod verify;

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Cmd};
use crate::config::{self, API_KEY_ENV, Command, ConfigError, PipelineFile};
use crate::error::Error;
use crate::pipeline::RunSpec;
use crate::sandbox::hubspot::{self, HubSpotHandle};
use crate::sandbox::{self as sbx, SandboxHandle};
use crate::secret::Secret;
use crate::sink::OutputSpec;

/// Runs the command.
///
/// # Errors
/// The [`Error`] that ended it (its exit code says which kind).
pub async fn dispatch(cli: Cli) -> Result<ExitCode, Error> {
    let quiet = Shown {
        quiet: cli.quiet,
        heartbeat_secs: cli.heartbeat_secs,
    };
    match cli.command {
        Cmd::Export(a) => export::export(a, quiet).await,
        Cmd::Run(a) => export::run(a, quiet).await,
        Cmd::Users(a) => users::users(a).await,
        Cmd::Sandbox(a) => sandbox::sandbox(a).await,
        Cmd::Validate(a) => validate::validate(a).await,
        Cmd::Backfill(a) => export::backfill(a, quiet).await,
        Cmd::State(c) => state::state(c),
        Cmd::Plan(a) => plan::plan(a).await,
        Cmd::Report(a) => report::report(a),
        Cmd::Verify(a) => verify::verify(a).await,
        Cmd::Completions(a) => completions::completions(a),
        Cmd::Manpage(a) => completions::manpage(a),
        Cmd::Send(c) => send::send(c, quiet).await,
    }
}

/// What a run shows on stderr (`--quiet`, `--heartbeat-secs`).
#[derive(Debug, Clone, Copy)]
pub struct Shown {
    /// No progress and no summary.
    pub quiet: bool,
    /// Seconds between progress lines when stderr is not a terminal (0: none).
    pub heartbeat_secs: u64,
}

/// A validated run with its secrets, and the embedded servers it runs against (kept alive for
/// the run).
pub struct Prepared {
    /// The run.
    pub spec: RunSpec,
    /// The embedded sandbox, if the pipeline asked for one.
    pub sandbox: Option<SandboxHandle>,
    /// The embedded HubSpot emulator, if asked.
    pub hubspot: Option<HubSpotHandle>,
}

/// Validates (pure), checks the output, starts the embedded sandbox if asked, reads the key
/// and token.
///
/// # Errors
/// [`ConfigError`] (exit 2).
pub async fn prepare(mut file: PipelineFile, command: Command) -> Result<Prepared, ConfigError> {
    let sandbox_cfg = sandbox_placeholders(&mut file)?;
    let with_hubspot = file.sandbox.as_ref().is_some_and(|s| s.with_hubspot());
    if with_hubspot {
        let k = &mut file.sink;
        k.format = Some(config::OutputFormat::Crm);
        k.crm = Some(crate::sink::crm::CrmKind::HubSpot);
        k.crm_base_url = Some("http://127.0.0.1/".into());
        k.crm_token_file = None;
    }
    let mut spec = config::validate(&file, command, crate::time::now_ms())?;
    config::check_output(&spec.output)?;
    let hubspot = if with_hubspot {
        Some(start_hubspot(&mut spec).await?)
    } else {
        read_crm_token(&mut spec)?;
        None
    };
    if let Some(p) = spec.privacy.take() {
        let policy = p.policy().clone();
        spec.privacy = Some(crate::privacy::Privacy::with_key_from(policy, |v| {
            std::env::var(v).ok()
        })?);
    }
    let sandbox = connect(sandbox_cfg, &mut spec.source).await?;
    Ok(Prepared {
        spec,
        sandbox,
        hubspot,
    })
}

/// With a `[sandbox]` section: its settings, and the tenant's ids put in the source section
/// (known from the seed; the port only once the server is up).
///
/// # Errors
/// [`ConfigError`] for a bad `[sandbox]` section.
pub fn sandbox_placeholders(
    file: &mut PipelineFile,
) -> Result<Option<sbx::SandboxConfig>, ConfigError> {
    let Some(cfg) = file
        .sandbox
        .as_ref()
        .filter(|s| s.enabled)
        .map(|s| s.config())
        .transpose()?
    else {
        return Ok(None);
    };
    let ids = sbx::ids_for_seed(cfg.data.seed);
    let s = &mut file.source;
    s.provider = Some(crate::engati::provider::Provider::Custom);
    s.base_url = Some("http://127.0.0.1/".into());
    s.customer_id = Some(ids.customer_id);
    s.bot_key = Some(ids.bot_key);
    s.api_key_file = None;
    Ok(Some(cfg))
}

/// Fills the source's address and key: the embedded sandbox's when `sandbox` is set (started
/// here and returned), else the key from `ENGATI_API_KEY` or the key file.
///
/// # Errors
/// [`ConfigError`] when the sandbox cannot start or no key is found.
pub async fn connect(
    sandbox: Option<sbx::SandboxConfig>,
    source: &mut crate::engati::SourceSpec,
) -> Result<Option<SandboxHandle>, ConfigError> {
    match sandbox {
        Some(cfg) => {
            let handle = sbx::start(cfg)
                .await
                .map_err(|e| ConfigError::invalid(format!("sandbox: {e}")))?;
            source.client.base_url = handle.base_url.clone();
            source.client.api_key = Secret::new(handle.ids.api_key.clone());
            Ok(Some(handle))
        }
        None => {
            source.client.api_key = config::read_key(
                source.api_key_file.as_deref(),
                std::env::var(API_KEY_ENV).ok(),
            )?;
            Ok(None)
        }
    }
}

async fn start_hubspot(spec: &mut RunSpec) -> Result<HubSpotHandle, ConfigError> {
    let h = hubspot::start(hubspot::HubSpotConfig::default())
        .await
        .map_err(|e| {
            ConfigError::invalid(format!("sandbox.hubspot: cannot listen on 127.0.0.1: {e}"))
        })?;
    if let OutputSpec::Crm(crm) = &mut spec.output {
        crm.base_url.clone_from(&h.base_url);
        crm.token = Secret::new(h.token.clone());
    }
    Ok(h)
}

fn read_crm_token(spec: &mut RunSpec) -> Result<(), ConfigError> {
    if let OutputSpec::Crm(crm) = &mut spec.output
        && let Some(t) = config::read_crm_token(crm, |var| std::env::var(var).ok())?
    {
        crm.token = t;
    }
    Ok(())
}

/// Loads a pipeline file.
///
/// # Errors
/// [`Error::Config`] naming the file, key and line.
pub fn load(path: &std::path::Path) -> Result<PipelineFile, Error> {
    Ok(PipelineFile::load(path)?)
}

/// Installs Ctrl-C / SIGTERM handling: the first signal asks the run to stop after in-flight
/// work; a second one exits at once with 130 (the state journal keeps the output consistent).
pub fn install_signals(control: Arc<crate::pipeline::RunControl>) {
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            wait_signal().await;
            seen += 1;
            if seen == 1 {
                control.stop();
                crate::logging::notice(
                    "engati-etl: stopping: finishing and committing in-flight work (signal again to abort now)",
                );
            } else {
                crate::logging::notice("engati-etl: aborted");
                std::process::exit(130);
            }
        }
    });
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
