//! `verify`: prove a local Parquet/JSONL output complete and consistent with its state store
//! (checks in [`crate::verify`]); with `--against-api`, compare sampled cells with the API.
//! Reads the store without its lock and writes nothing. Exit 0 consistent, 1 not (with the
//! report), 2 usage (including outputs it does not support yet: Delta, CRM, object storage).

use std::path::Path;
use std::process::ExitCode;

use super::{connect, load, sandbox_placeholders};
use crate::cli::{StateTarget, VerifyArgs};
use crate::config::{self, Command, OutputFormat};
use crate::engati::client::Client;
use crate::error::Error;
use crate::pipeline::RunError;
use crate::schema::RowContext;
use crate::state::StateStore;
use crate::verify::api::{self, ApiCheck, ApiFailure};
use crate::verify::{self as v, render};

/// `engati-etl verify (PIPELINE.toml | --out DIR [--state-dir DIR]) [--json] [--against-api]`.
///
/// # Errors
/// [`Error::Usage`] (exit 2) for a missing or unsupported output; [`Error::State`] when the
/// store cannot be read; [`Error::Run`] when an API request of `--against-api` fails.
pub async fn verify(a: VerifyArgs) -> Result<ExitCode, Error> {
    refuse_unsupported(&a)?;
    let target = StateTarget {
        pipeline: a.pipeline.clone(),
        out: a.out.clone(),
        state_dir: a.state_dir.clone(),
        shard: None,
    };
    let (out, dir, _) = super::state::locate_with(
        &target,
        "verify does not check sharded outputs yet; each shard keeps its own state",
    )?;
    let running = lock_is_held(&dir);
    let st = StateStore::open_read_only(&dir)?;
    let mut local = v::check_local(&out, &st, running)?;
    let api_ran = match &a.pipeline {
        Some(p) if a.against_api => {
            // The embedded sandbox, if the pipeline has one, serves until verify ends.
            let (check, _server) = api_check(p, &a).await?;
            let cells = api::pick_cells(&st, &local.ledger, check.grid, check.sample, a.seed)?;
            local.totals.api_cells =
                match api::check(&out, &st, &cells, &check, &mut local.findings).await {
                    Ok(n) => n,
                    Err(ApiFailure::Request(e)) => return Err(RunError::from(e).into()),
                    Err(ApiFailure::State(e)) => return Err(e.into()),
                };
            true
        }
        _ => false,
    };
    let report = local.report(&out, &st, api_ran);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", render::table(&report));
    }
    Ok(if report.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Refuses (exit 2) what `verify` cannot check yet: a Delta table, a CRM, an object-storage
/// URL; and `--against-api` without a pipeline file (it needs the source settings).
fn refuse_unsupported(a: &VerifyArgs) -> Result<(), Error> {
    let not_yet = |what: &str| {
        Error::Usage(format!(
            "verify: {what} is not supported yet; verify checks local Parquet/JSONL outputs"
        ))
    };
    let mut out = a.out.clone();
    if let Some(p) = &a.pipeline {
        let f = load(p)?;
        match f.sink.format {
            Some(OutputFormat::Delta) => return Err(not_yet("a Delta Lake table")),
            Some(OutputFormat::Crm) => return Err(not_yet("a CRM output")),
            _ => {}
        }
        out = out.or(f.sink.out);
    }
    if let Some(o) = &out {
        if crate::storage::is_remote(&o.to_string_lossy()) {
            return Err(not_yet("an output on object storage"));
        }
        if o.join("_delta_log").is_dir() {
            return Err(not_yet("a Delta Lake table"));
        }
    }
    if a.against_api && a.pipeline.is_none() {
        return Err(Error::Usage(
            "verify --against-api needs the PIPELINE.toml (its source settings) to fetch from"
                .into(),
        ));
    }
    Ok(())
}

/// True when a run holds the store's lock now (probed without keeping it).
fn lock_is_held(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(dir.join("lock")) else {
        return false;
    };
    match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The client and normalization context of the pipeline's source (the embedded sandbox
/// started if the pipeline has one).
async fn api_check(
    pipeline: &Path,
    a: &VerifyArgs,
) -> Result<(ApiCheck, Option<crate::sandbox::SandboxHandle>), Error> {
    let mut file = load(pipeline)?;
    let sandbox = sandbox_placeholders(&mut file)?;
    let mut spec = config::validate(&file, Command::Run, crate::time::now_ms())?;
    if spec.privacy.is_some() {
        return Err(Error::Usage(
            "verify --against-api: a pseudonymized output is not supported yet (its ids are keyed)"
                .into(),
        ));
    }
    let server = connect(sandbox, &mut spec.source).await?;
    let client = Client::new(spec.source.client.clone()).map_err(RunError::from)?;
    let cx = RowContext {
        provider: spec.source.provider.as_str().into(),
        customer_id: spec.source.client.customer_id.as_str().into(),
        bot_key: spec.source.client.bot_key.as_str().into(),
        run_id: "verify".into(),
        extracted_at_ms: 0,
        raw_json: spec.raw_json,
    };
    let check = ApiCheck {
        client,
        cx,
        grid: spec.range.grid(),
        read: spec.read_spec(),
        sample: a.sample,
        seed: a.seed,
    };
    Ok((check, server))
}
