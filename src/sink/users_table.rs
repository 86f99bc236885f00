//! The `users` table of a file output: the run's users are recorded in the state store (latest
//! attributes win), then `users/part-<hash>.<ext>` is rewritten from the store page by page and
//! committed, replacing the previous one. The file is named after its content (ids and the
//! runs that exported them), so an unchanged table keeps its name.

use std::path::Path;

use super::durable::{create_dir, sync_parents};
use super::part::{Encoding, PartWriter};
use super::{SinkError, WrittenFile};
use crate::model::{ExportedUser, User};
use crate::privacy::Privacy;
use crate::schema::{RowContext, UsersBatchBuilder, users_schema};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore};

/// Users per state-store page: a million users never sit in memory twice.
const PAGE: usize = 10_000;

/// Writes one batch, under `privacy` if any.
fn write_batch(
    w: &mut PartWriter,
    batch: &arrow_array::RecordBatch,
    privacy: Option<&Privacy>,
    path: &Path,
) -> Result<(), SinkError> {
    match privacy {
        Some(p) => w.write(&p.users(batch).map_err(|e| SinkError::Arrow {
            path: path.to_owned(),
            source: e,
        })?),
        None => w.write(batch),
    }
}

/// Where and how the table is written.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The output directory.
    pub out_dir: &'a Path,
    /// The file format.
    pub encoding: &'a Encoding,
    /// The run writing it.
    pub run_id: &'a str,
    /// Its staged-name suffix.
    pub run8: &'a str,
    /// The privacy policy applied to the table, if any.
    pub privacy: Option<&'a Privacy>,
}

/// Records `users` and rewrites the table; returns the file and its rows (`None` when the
/// output has no user at all).
///
/// # Errors
/// [`SinkError`] for state or file failures.
pub fn write(
    state: &mut StateStore,
    to: &Target<'_>,
    users: &[User],
    cx: &RowContext,
) -> Result<Option<(WrittenFile, u64)>, SinkError> {
    let Target {
        out_dir,
        encoding,
        run_id,
        run8,
        privacy,
    } = *to;
    for chunk in users.chunks(PAGE) {
        let stored: Vec<ExportedUser> = chunk
            .iter()
            .map(|u| ExportedUser {
                user: u.clone(),
                run_id: cx.run_id.to_string(),
                extracted_at_ms: cx.extracted_at_ms,
            })
            .collect();
        state.upsert_users(&stored)?;
    }
    let ext = encoding.extension();
    let staged = format!("users/.part-users.{ext}.{run8}{STAGED_SUFFIX}");
    create_dir(&out_dir.join("users"))?;
    let schema = privacy.map_or_else(users_schema, |p| p.schema(&users_schema()));
    let mut w = PartWriter::create(&out_dir.join(&staged), encoding, schema)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
    let mut after: Option<String> = None;
    loop {
        let page = state.users_page(after.as_deref(), PAGE)?;
        let Some(tail) = page.last() else { break };
        after = Some(tail.user.channel_user_id.clone());
        let mut b = UsersBatchBuilder::new();
        for u in page {
            let id = &u.user.channel_user_id;
            // The name hashes the ids as written: pseudonyms under a privacy policy.
            let shown = privacy.map_or(std::borrow::Cow::Borrowed(id.as_str()), |p| p.user_key(id));
            hasher.update(shown.as_bytes());
            hasher.update(&[0]);
            hasher.update(u.run_id.as_bytes());
            hasher.update(&[0]);
            first.get_or_insert_with(|| id.clone());
            last = Some(id.clone());
            b.append(cx, &u);
        }
        write_batch(&mut w, &b.finish(), privacy, &out_dir.join(&staged))?;
    }
    let Some(first) = first else {
        w.discard();
        return Ok(None);
    };
    let path = format!("users/part-{:016x}.{ext}", hasher.digest());
    let rows = w.rows();
    let bytes = w.finish()?;
    sync_parents(out_dir, std::iter::once(staged.as_str()))?;
    let old: Vec<String> = state.files("users")?.into_iter().map(|f| f.path).collect();
    let plan = CommitPlan {
        adds: vec![(staged, path.clone())],
        removes: old,
        records: vec![FileRecord {
            path: path.clone(),
            stream: "users".into(),
            unit_key: "users".into(),
            cells_from: 0,
            cells_to: 0,
            min_user: first,
            max_user: last.unwrap_or_default(),
            min_ms: 0,
            max_ms: 0,
            rows,
            bytes,
        }],
        ..Default::default()
    };
    state.commit(run_id, &plan, out_dir, crate::time::now_ms())?;
    Ok(Some((WrittenFile { path, bytes }, rows)))
}
