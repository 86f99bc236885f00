//! The `engati-etl` binary: parse flags, set up logging, run the command, print its error once
//! (a closed pipe is not an error), exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    engati_etl::malloc::tune();
    let cli = match engati_etl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    #[cfg(feature = "fault-injection")]
    let _failpoints = arm_test_hooks(&cli.hooks);
    engati_etl::logging::init(cli.log_format, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            engati_etl::logging::error(&format!("cannot start the async runtime: {e}"), 6);
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
                engati_etl::logging::error(&e.to_string(), e.exit_code());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// A command line clap refused (or `--help`, `--version`): printed by clap, or, when JSON logs
/// were asked for, as one JSON error line (every stderr line stays JSON).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let args: Vec<String> = std::env::args().collect();
    let json = args
        .windows(2)
        .any(|w| w[0] == "--log-format" && w[1] == "json")
        || args.iter().any(|a| a == "--log-format=json")
        || std::env::var("ENGATI_ETL_LOG_FORMAT").is_ok_and(|v| v == "json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    engati_etl::logging::init(engati_etl::logging::LogFormat::Json, 0);
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ");
    engati_etl::logging::error(first, 2);
    ExitCode::from(2)
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
