//! `validate`: a pure check of a pipeline file, then one cheap authenticated call.

use super::{prepare, print_error};
use crate::cli::{ValidateArgs, overrides};
use crate::config::{Command, PipelineFile, Settings};
use crate::engati::client::Client;
use crate::pipeline::{Mode, RunError, UsersSource};
use crate::time::{now_ms, rfc3339_ms};

/// `engati-etl validate PIPELINE.toml [--offline]`.
pub async fn validate(a: ValidateArgs) -> i32 {
    let file = match PipelineFile::load(&a.pipeline) {
        Ok(f) => f.merge(&overrides(&a.source, Some(&a.range), Some(&a.sink))),
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    if a.offline {
        return match Settings::validate(&file, Command::Run, now_ms()) {
            Ok(s) => {
                println!(
                    "{}: configuration OK ({})",
                    a.pipeline.display(),
                    describe(&s)
                );
                0
            }
            Err(e) => {
                print_error(&e);
                2
            }
        };
    }
    let prepared = match prepare(file, Command::Run).await {
        Ok(p) => p,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let summary = describe(&prepared.settings);
    let spec = prepared.settings.into_spec(prepared.key);
    let client = match Client::new(spec.client.clone()) {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let started = std::time::Instant::now();
    // One cheap call that proves the key, customer id and bot key: a Users API query for an
    // attribute no user has (or, with a users file, one message of its first user).
    let check = match &spec.users {
        UsersSource::Filters(_) => client.users("__engati_etl_validate__", "1").await.map(|u| {
            format!(
                "Users API answered ({} users for a probe attribute)",
                u.len()
            )
        }),
        UsersSource::File(p) => match crate::engati::users::read_users_file(p) {
            Ok(list) => {
                let until = match spec.mode {
                    Mode::Range { until_ms, .. } | Mode::Incremental { until_ms, .. } => until_ms,
                };
                let first = &list[0].channel_user_id;
                client
                    .conversations_page(first, until - 1, until, 1, 1, || {
                        format!("Conversations API, user {first}")
                    })
                    .await
                    .map(|_| format!("Conversations API answered for user {first}"))
            }
            Err(e) => {
                print_error(&e);
                return 2;
            }
        },
    };
    match check {
        Ok(msg) => {
            println!(
                "{}: configuration OK ({summary}); connection OK: {msg} in {} ms",
                a.pipeline.display(),
                started.elapsed().as_millis()
            );
            drop(prepared.sandbox);
            0
        }
        Err(e) => {
            let e = RunError::from(e);
            print_error(&e);
            e.exit_code()
        }
    }
}

fn describe(s: &Settings) -> String {
    let (since, until) = match s.mode {
        Mode::Range { since_ms, until_ms } => (since_ms, until_ms),
        Mode::Incremental {
            start_ms, until_ms, ..
        } => (start_ms, until_ms),
    };
    format!(
        "provider {}, {} .. {}, {} windows, {}",
        s.provider,
        rfc3339_ms(since),
        rfc3339_ms(until),
        crate::time::format_duration_ms(s.window_ms),
        s.report_options().format
    )
}
