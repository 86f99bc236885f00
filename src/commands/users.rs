//! `users`: list the users matching the attribute filters, as JSONL or CSV on stdout. Only the
//! source settings are read and validated.

use std::io::Write;
use std::process::ExitCode;

use super::{connect, load, sandbox_placeholders};
use crate::cli::{UsersArgs, UsersFormat};
use crate::config::{Merge, PipelineFile, Problems};
use crate::engati::client::Client;
use crate::error::Error;
use crate::model::User;
use crate::pipeline::{RunError, list_users};

/// `engati-etl users ...`.
///
/// # Errors
/// Configuration, API and output errors.
pub async fn users(a: UsersArgs) -> Result<ExitCode, Error> {
    let mut file = match &a.pipeline {
        Some(p) => load(p)?,
        None => PipelineFile::default(),
    };
    file.source = file.source.merge(a.source.clone());
    let sandbox = sandbox_placeholders(&mut file)?;
    let mut p = Problems::default();
    let source = file.source.validate(sandbox.is_some(), &mut p);
    let mut source = p.into_result(|| source.expect("no problems: the source validated"))?;
    let _server = connect(sandbox, &mut source).await?;
    let client = Client::new(source.client.clone()).map_err(RunError::from)?;
    let (list, rejected) = list_users(&client, &source.users).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        UsersFormat::Csv => write_csv(&mut out, &list)?,
        UsersFormat::Jsonl => write_jsonl(&mut out, &list)?,
    }
    out.flush()?;
    if rejected.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rejected {
        eprintln!(
            "engati-etl: skipped user `{}`: {}",
            r.channel_user_id, r.reason
        );
    }
    Ok(ExitCode::from(1))
}

fn attributes(u: &User) -> serde_json::Map<String, serde_json::Value> {
    u.attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect()
}

fn write_csv(out: &mut impl Write, list: &[User]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "channel_user_id",
        "channel",
        "user_name",
        "matched_filters",
        "attributes",
    ])?;
    for u in list {
        w.write_record([
            u.channel_user_id.as_str(),
            u.channel.as_deref().unwrap_or(""),
            u.user_name.as_deref().unwrap_or(""),
            &u.matched_filters.join(";"),
            &serde_json::Value::Object(attributes(u)).to_string(),
        ])?;
    }
    w.flush()
}

fn write_jsonl(out: &mut impl Write, list: &[User]) -> std::io::Result<()> {
    for u in list {
        let line = serde_json::json!({
            "channel_user_id": u.channel_user_id,
            "channel": u.channel,
            "user_name": u.user_name,
            "attributes": attributes(u),
            "matched_filters": u.matched_filters,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
