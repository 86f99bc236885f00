//! `validate`: a pure check of a pipeline file, then one cheap authenticated call.

use std::process::ExitCode;

use super::{load, prepare};
use crate::cli::ValidateArgs;
use crate::config::{self, Command};
use crate::engati::UsersSource;
use crate::engati::client::Client;
use crate::error::Error;
use crate::pipeline::{RunError, RunSpec};
use crate::time::{now_ms, rfc3339_ms};

/// `engati-etl validate PIPELINE.toml [--offline]`.
///
/// # Errors
/// Configuration errors (exit 2) and the probe call's error (3, 4, 5).
pub async fn validate(a: ValidateArgs) -> Result<ExitCode, Error> {
    let file = load(&a.pipeline)?
        .merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink))
        .merge_privacy(&a.privacy);
    if a.offline {
        let spec = config::validate(&file, Command::Run, now_ms())?;
        println!(
            "{}: configuration OK ({})",
            a.pipeline.display(),
            describe(&spec)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let prepared = prepare(file, Command::Run).await?;
    let spec = &prepared.spec;
    let client = Client::new(spec.source.client.clone()).map_err(RunError::from)?;
    let started = std::time::Instant::now();
    let msg = probe(&client, spec).await?;
    println!(
        "{}: configuration OK ({}); connection OK: {msg} in {} ms",
        a.pipeline.display(),
        describe(spec),
        started.elapsed().as_millis()
    );
    Ok(ExitCode::SUCCESS)
}

/// One cheap call that proves the key, customer id and bot key: a Users API query for an
/// attribute no user has (or, with a users file, one message of its first user).
async fn probe(client: &Client, spec: &RunSpec) -> Result<String, Error> {
    match &spec.source.users {
        UsersSource::Filters(_) => {
            let u = client
                .users("__engati_etl_validate__", "1")
                .await
                .map_err(RunError::from)?;
            Ok(format!(
                "Users API answered ({} users for a probe attribute)",
                u.len()
            ))
        }
        UsersSource::File(p) => {
            let list = crate::engati::users::read_users_file(p).map_err(RunError::from)?;
            let until = spec.range.mode.until_ms();
            let first = &list[0].channel_user_id;
            client
                .conversations_page(first, until - 1, until, 1, 1, || {
                    format!("Conversations API, user {first}")
                })
                .await
                .map_err(RunError::from)?;
            Ok(format!("Conversations API answered for user {first}"))
        }
    }
}

fn describe(s: &RunSpec) -> String {
    format!(
        "provider {}, {} .. {}, {} windows, {}",
        s.source.provider,
        rfc3339_ms(s.range.mode.start_ms()),
        rfc3339_ms(s.range.mode.until_ms()),
        s.range.window_text(),
        s.output.format_label()
    )
}
