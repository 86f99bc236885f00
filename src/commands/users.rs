//! `users`: list the users matching the attribute filters, as JSONL or CSV on stdout.

use std::io::Write;

use super::{prepare, print_error};
use crate::cli::{UsersArgs, overrides};
use crate::config::{Command, PipelineFile};
use crate::engati::client::Client;
use crate::engati::users;
use crate::pipeline::{RunError, UsersSource};

/// `engati-etl users ...`.
pub async fn users(a: UsersArgs) -> i32 {
    if a.format != "jsonl" && a.format != "csv" {
        print_error(&format!("--format `{}` must be jsonl or csv", a.format));
        return 2;
    }
    let file = match &a.pipeline {
        Some(p) => match PipelineFile::load(p) {
            Ok(f) => f,
            Err(e) => {
                print_error(&e);
                return 2;
            }
        },
        None => PipelineFile::default(),
    };
    let mut file = file.merge(&overrides(&a.source, None, None));
    // Only the source matters here: fill the range and sink so validation passes.
    file.range.mode = None;
    file.range.since = Some("1970-01-01".into());
    file.range.until = Some("1970-01-02".into());
    file.sink.out = Some("-".into());
    file.sink.format = Some("jsonl".into());
    file.sink.gzip = None;
    let prepared = match prepare(file, Command::Export).await {
        Ok(p) => p,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let spec = prepared.settings.into_spec(prepared.key);
    let client = match Client::new(spec.client.clone()) {
        Ok(c) => c,
        Err(e) => {
            print_error(&e);
            return 2;
        }
    };
    let list = match &spec.users {
        UsersSource::Filters(f) => users::list_users(&client, f).await.map_err(RunError::from),
        UsersSource::File(p) => users::read_users_file(p).map_err(RunError::from),
    };
    let list = match list {
        Ok(l) => l,
        Err(e) => {
            print_error(&e);
            return e.exit_code();
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result: std::io::Result<()> = (|| {
        if a.format == "csv" {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record([
                "channel_user_id",
                "channel",
                "user_name",
                "matched_filters",
                "attributes",
            ])?;
            for u in &list {
                let attrs: serde_json::Map<String, serde_json::Value> = u
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                w.write_record([
                    u.channel_user_id.as_str(),
                    u.channel.as_deref().unwrap_or(""),
                    u.user_name.as_deref().unwrap_or(""),
                    &u.matched_filters.join(";"),
                    &serde_json::Value::Object(attrs).to_string(),
                ])?;
            }
            w.flush()?;
        } else {
            for u in &list {
                let attrs: serde_json::Map<String, serde_json::Value> = u
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into()))
                    .collect();
                let line = serde_json::json!({
                    "channel_user_id": u.channel_user_id,
                    "channel": u.channel,
                    "user_name": u.user_name,
                    "attributes": attrs,
                    "matched_filters": u.matched_filters,
                });
                writeln!(out, "{line}")?;
            }
        }
        out.flush()
    })();
    match result {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            print_error(&format!("writing to stdout: {e}"));
            6
        }
    }
}
