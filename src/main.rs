//! The `engati-etl` binary: parse flags, set up logging, run the command, exit with its code.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Crash points for tests (`FAILPOINTS`), only in builds with `fault-injection`.
    #[cfg(feature = "fault-injection")]
    let _failpoints = fail::FailScenario::setup();
    let cli = engati_etl::cli::Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},hyper=warn,reqwest=warn,h2=warn,axum=warn"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("engati-etl: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(6);
        }
    };
    let code = runtime.block_on(engati_etl::commands::dispatch(cli));
    // Do not wait for background tasks (the sandbox, progress) on the way out.
    runtime.shutdown_background();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(6))
}
