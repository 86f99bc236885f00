//! The `engati-etl` binary: parse flags, set up logging, run the command, print its error once
//! (a closed pipe is not an error), exit with its code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = engati_etl::cli::Cli::parse();
    #[cfg(feature = "fault-injection")]
    let _failpoints = arm_test_hooks(&cli.hooks);
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // -v / -vv win over RUST_LOG (flags > environment); RUST_LOG is read without them.
    let from_flags = || {
        EnvFilter::new(format!(
            "{default_level},hyper=warn,reqwest=warn,h2=warn,axum=warn,deltalake_core=off,delta_kernel=off"
        ))
    };
    let filter = if cli.verbose > 0 {
        from_flags()
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| from_flags())
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engati-etl: error: cannot start the async runtime: {e}");
            return ExitCode::from(6);
        }
    };
    let result = runtime.block_on(engati_etl::commands::dispatch(cli));
    // Do not wait for background tasks (the sandbox, progress) on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            if !e.is_silent() {
                eprintln!("engati-etl: error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Arms the failpoints of `FAILPOINTS` and of the hidden test flags.
#[cfg(feature = "fault-injection")]
fn arm_test_hooks(h: &engati_etl::cli::TestHooks) -> fail::FailScenario<'static> {
    let scenario = engati_etl::hooks::setup();
    if let Some(n) = h.crash_after_journal {
        engati_etl::hooks::crash_at("state::after_journal", n);
    }
    if let Some(n) = h.crash_after_crm_writes {
        engati_etl::hooks::crash_at("crm::after_create", n);
    }
    scenario
}
