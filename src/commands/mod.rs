//! The subcommands: turn parsed flags into a run, print results, return the exit code.

mod export;
mod sandbox;
mod send;
mod state;
mod users;
mod validate;

use std::sync::Arc;

use crate::cli::{Cli, Cmd};
use crate::config::{API_KEY_ENV, Command, ConfigError, PipelineFile, SandboxSection, Settings};
use crate::sandbox::{self as sbx, DataConfig, FaultConfig, SandboxConfig, SandboxHandle};
use crate::secret::Secret;
use crate::time::{DAY_MS, parse_user_instant};

/// Runs the command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    let quiet = cli.quiet;
    match cli.command {
        Cmd::Export(a) => export::export(a, quiet).await,
        Cmd::Run(a) => export::run(a, quiet).await,
        Cmd::Users(a) => users::users(a).await,
        Cmd::Sandbox(a) => sandbox::sandbox(a).await,
        Cmd::Validate(a) => validate::validate(a).await,
        Cmd::Backfill(a) => export::backfill(a, quiet).await,
        Cmd::State(c) => state::state(c),
        Cmd::Send(c) => send::send(c, quiet).await,
    }
}

/// Prints `engati-etl: error: ...` on stderr.
pub fn print_error(e: &dyn std::fmt::Display) {
    eprintln!("engati-etl: error: {e}");
}

/// A validated run, with the sandbox it runs against (if the pipeline asked for one).
pub struct Prepared {
    /// Settings.
    pub settings: Settings,
    /// The key.
    pub key: Secret,
    /// The embedded sandbox, kept alive for the run.
    pub sandbox: Option<SandboxHandle>,
    /// The embedded HubSpot emulator, kept alive for the run.
    pub hubspot: Option<crate::sandbox::hubspot::HubSpotHandle>,
}

/// Sandbox settings from a pipeline's `[sandbox]` section.
///
/// # Errors
/// [`ConfigError::Invalid`] for a bad `start` date.
pub fn sandbox_config(s: &SandboxSection) -> Result<SandboxConfig, ConfigError> {
    let d = DataConfig::default();
    let start_ms = match &s.start {
        Some(v) => parse_user_instant(v, 0)
            .map_err(|e| ConfigError::Invalid(vec![format!("sandbox.start: {e}")]))?,
        None => d.start_ms,
    };
    Ok(SandboxConfig {
        data: DataConfig {
            seed: s.seed.unwrap_or(d.seed),
            users: s.users.unwrap_or(d.users),
            start_ms: start_ms.div_euclid(DAY_MS) * DAY_MS,
            days: s.days.unwrap_or(d.days),
            sessions_per_user: s.sessions_per_user.unwrap_or(d.sessions_per_user),
            malformed_rate: s.malformed_rate.unwrap_or(0.0),
            ..d
        },
        faults: FaultConfig {
            latency_ms: s.latency_ms.unwrap_or(0),
            fail_rate: s.fail_rate.unwrap_or(0.0),
            throttle_rate: s.throttle_rate.unwrap_or(0.0),
            truncate_rate: s.truncate_rate.unwrap_or(0.0),
            ..FaultConfig::default()
        },
        end_inclusive: s.end_inclusive.unwrap_or(false),
        start_exclusive: s.start_exclusive.unwrap_or(false),
        ..SandboxConfig::default()
    })
}

/// Validates (pure), checks the output, starts the embedded sandbox if asked, reads the key.
///
/// # Errors
/// [`ConfigError`] (exit 2).
pub async fn prepare(mut file: PipelineFile, command: Command) -> Result<Prepared, ConfigError> {
    let sandbox_cfg = match file.sandbox.as_ref().filter(|s| s.enabled) {
        Some(s) => Some(sandbox_config(s)?),
        None => None,
    };
    if let Some(cfg) = &sandbox_cfg {
        // The ids are known from the seed; the port only once the server is up.
        let ids = sbx::ids_for_seed(cfg.data.seed);
        file.source.provider = Some("custom".into());
        file.source.base_url = Some("http://127.0.0.1/".into());
        file.source.customer_id = Some(ids.customer_id);
        file.source.bot_key = Some(ids.bot_key);
        file.source.api_key_file = None;
    }
    let hubspot_emulator = file
        .sandbox
        .as_ref()
        .is_some_and(|s| s.enabled && s.hubspot == Some(true));
    if hubspot_emulator {
        file.sink.format = Some("crm".into());
        file.sink.crm = Some("hubspot".into());
        file.sink.crm_base_url = Some("http://127.0.0.1/".into());
        file.sink.crm_token_file = None;
    }
    let mut settings = Settings::validate(&file, command, crate::time::now_ms())?;
    settings.check_output()?;
    let hubspot = if hubspot_emulator {
        let h = crate::sandbox::hubspot::start(crate::sandbox::hubspot::HubSpotConfig::default())
            .await
            .map_err(|e| {
                ConfigError::Invalid(vec![format!(
                    "sandbox.hubspot: cannot listen on 127.0.0.1: {e}"
                )])
            })?;
        if let crate::config::OutTarget::Crm { crm, .. } = &mut settings.out {
            crm.base_url.clone_from(&h.base_url);
        }
        settings.crm_token = Some(Secret::new(h.token.clone()));
        Some(h)
    } else {
        settings.crm_token = settings.read_crm_token(|var| std::env::var(var).ok())?;
        None
    };
    match sandbox_cfg {
        Some(cfg) => {
            let handle = sbx::start(cfg)
                .await
                .map_err(|e| ConfigError::Invalid(vec![format!("sandbox: {e}")]))?;
            settings.base_url = handle.base_url.clone();
            Ok(Prepared {
                settings,
                key: Secret::new(handle.ids.api_key.clone()),
                sandbox: Some(handle),
                hubspot,
            })
        }
        None => {
            let key = settings.read_key(std::env::var(API_KEY_ENV).ok())?;
            Ok(Prepared {
                settings,
                key,
                sandbox: None,
                hubspot,
            })
        }
    }
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
                eprintln!(
                    "engati-etl: stopping: finishing and committing in-flight work (signal again to abort now)"
                );
            } else {
                eprintln!("engati-etl: aborted");
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
