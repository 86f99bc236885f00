//! `users`: list the users matching the attribute filters, as JSONL or CSV on stdout. Only the
//! source settings are read and validated. The users go through a scratch state store (as a
//! run's do), so a million of them are printed in id order without being held in memory.

use std::io::Write;
use std::process::ExitCode;

use super::{connect, load, sandbox_placeholders};
use crate::cli::{UsersArgs, UsersFormat};
use crate::config::{Merge, PipelineFile, Problems};
use crate::engati::client::Client;
use crate::error::Error;
use crate::model::User;
use crate::pipeline::RunError;
use crate::pipeline::listing;

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
    let shard = file.source.shard_spec(&mut p);
    let mut source = p.into_result(|| source.expect("no problems: the source validated"))?;
    let _server = connect(sandbox, &mut source).await?;
    let client = Client::new(source.client.clone()).map_err(RunError::from)?;
    let scratch = listing::scratch_store()?;
    let (store, listed) =
        listing::list_users(&client, &source.users, shard, 0, scratch.store).await;
    let rejected = listed?.rejected;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        UsersFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record(CSV_HEADER).map_err(std::io::Error::from)?;
            each_page(&store, |page| write_csv(&mut w, page))?;
            w.flush()?;
        }
        UsersFormat::Jsonl => each_page(&store, |page| write_jsonl(&mut out, page))?,
    }
    out.flush()?;
    drop(store);
    drop(scratch.dir);
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

/// Users read from the store per page.
const PAGE: usize = 10_000;

const CSV_HEADER: [&str; 5] = [
    "channel_user_id",
    "channel",
    "user_name",
    "matched_filters",
    "attributes",
];

/// Calls `f` with the listed users, a page at a time in id order.
fn each_page(
    store: &crate::state::StateStore,
    mut f: impl FnMut(&[User]) -> std::io::Result<()>,
) -> Result<(), Error> {
    let mut after: Option<String> = None;
    loop {
        let page = store
            .listed_users_page(after.as_deref(), PAGE)
            .map_err(RunError::from)?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some(last.channel_user_id.clone());
        f(&page)?;
    }
}

/// Writes users as CSV rows.
fn write_csv(w: &mut csv::Writer<impl Write>, list: &[User]) -> std::io::Result<()> {
    for u in list {
        w.write_record([
            u.channel_user_id.as_str(),
            u.channel.as_deref().unwrap_or(""),
            u.user_name.as_deref().unwrap_or(""),
            &u.matched_filters.join(";"),
            &serde_json::Value::Object(attributes(u)).to_string(),
        ])?;
    }
    Ok(())
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
