//! The `users` table of a file output: the run's users (listed into the state store as they
//! were read) are recorded as exported (latest attributes win), then `users/part-<hash>.<ext>`
//! is rewritten from the store page by page and committed, replacing the previous one. The
//! file is named after its content (ids and the runs that exported them), so an unchanged
//! table keeps its name.
//!
//! A sharded run writes its shard's users to `users/part-s<I>of<N>-<hash>.<ext>` and replaces
//! only its own file: shards partition the users, so the union of the N shards' files is the
//! table, each user once (readers glob `users/*.parquet` either way).
//!
//! On object storage the name also carries the commit's tag (objects are never overwritten), and
//! [`merge_file`] reads the current users file back (Parquet or JSONL) into the state before it
//! is rewritten, so no earlier user is lost to a fresh state.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::durable::{create_dir, sync_parents};
use super::part::{Encoding, Finished, PartWriter};
use super::remote_files::RemoteFiles;
use super::{SinkError, WrittenFile};
use crate::model::{ExportedUser, User};
use crate::privacy::Privacy;
use crate::schema::{self, RowContext, UsersBatchBuilder, users_schema};
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

/// Records the run's listed users as exported and rewrites the table; returns the file and its rows (`None` when the
/// output has no user at all). With `remote`, the file is committed to object storage (its
/// name tagged, a manifest) instead of renamed into `out_dir`.
///
/// # Errors
/// [`SinkError`] for state or file failures.
pub fn write(
    state: &mut StateStore,
    to: &Target<'_>,
    cx: &RowContext,
    mut remote: Option<&mut RemoteFiles>,
) -> Result<Option<(WrittenFile, u64)>, SinkError> {
    state.promote_listed_users(&cx.run_id, cx.extracted_at_ms)?;
    let Target {
        out_dir,
        encoding,
        run_id,
        run8,
        privacy,
    } = *to;
    let ext = encoding.extension();
    let tag = state
        .shard()
        .map(|s| format!("{}-", s.tag()))
        .unwrap_or_default();
    let staged_tag = state
        .shard()
        .map(|s| format!("-{}", s.tag()))
        .unwrap_or_default();
    let staged = format!("users/.part-users{staged_tag}.{ext}.{run8}{STAGED_SUFFIX}");
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
    let path = format!("users/part-{tag}{:016x}.{ext}", hasher.digest());
    let path = match remote.as_mut() {
        Some(r) => super::remote_files::tagged(&path, &r.next_tag()),
        None => path,
    };
    let rows = w.rows();
    let Finished { bytes, checksum } = w.finish()?;
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
            checksum: Some(checksum),
        }],
        ..Default::default()
    };
    match remote {
        Some(r) => {
            r.publish(state, plan)?;
            r.users_written(state, &path)?;
        }
        None => {
            state.commit(run_id, &plan, out_dir, crate::time::now_ms())?;
        }
    }
    Ok(Some((WrittenFile { path, bytes }, rows)))
}

/// Reads the users file `path` (Parquet, or JSONL by its name) and merges its users into the
/// state, newer rows winning ([`StateStore::merge_users`]), one batch at a time. Returns the
/// users read.
///
/// # Errors
/// [`SinkError`] for an unreadable file ([`SinkError::Foreign`] when it is not a users file).
pub fn merge_file(state: &mut StateStore, path: &Path) -> Result<u64, SinkError> {
    let io = |source| SinkError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let name = path.to_string_lossy();
    let batches: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>> =
        if name.ends_with(".parquet") {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(PAGE).build())
                .map_err(|e| SinkError::parquet(path, e))?;
            Box::new(reader)
        } else {
            let read: Box<dyn std::io::Read> = if name.ends_with(".gz") {
                Box::new(flate2::read::MultiGzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let schema = super::part::json_schema(&users_schema());
            let reader = arrow_json::ReaderBuilder::new(schema)
                .with_batch_size(PAGE)
                .build(std::io::BufReader::new(read))
                .map_err(|e| SinkError::arrow(path, e))?;
            Box::new(reader)
        };
    let mut n = 0u64;
    for batch in batches {
        let batch = batch.map_err(|e| SinkError::arrow(path, e))?;
        let users = users_of(&batch).ok_or_else(|| SinkError::Foreign(path.to_owned()))?;
        n += users.len() as u64;
        state.merge_users(&users)?;
    }
    Ok(n)
}

/// The users of a batch of the users table; `None` when its columns are not ours.
fn users_of(batch: &RecordBatch) -> Option<Vec<ExportedUser>> {
    let text = |name: &str| batch.column_by_name(name)?.as_string_opt::<i32>().cloned();
    let (ids, channel, user_name, run_id) = (
        text(schema::CHANNEL_USER_ID)?,
        text(schema::CHANNEL)?,
        text(schema::USER_NAME)?,
        text(schema::RUN_ID)?,
    );
    let attrs = batch
        .column_by_name(schema::ATTRIBUTES)?
        .as_map_opt()?
        .clone();
    let matched = batch
        .column_by_name(schema::MATCHED_FILTERS)?
        .as_list_opt::<i32>()?
        .clone();
    let extracted = arrow_cast::cast(
        batch.column_by_name(schema::EXTRACTED_AT)?,
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )
    .ok()?;
    let extracted = extracted.as_primitive_opt::<TimestampMillisecondType>()?;
    let opt = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let strings = |a: ArrayRef| -> Option<Vec<String>> {
        let a = a.as_string_opt::<i32>()?;
        Some((0..a.len()).map(|j| a.value(j).to_owned()).collect())
    };
    (0..batch.num_rows())
        .map(|i| {
            let entries = attrs.value(i);
            let keys = strings(entries.column(0).clone())?;
            let values = strings(entries.column(1).clone())?;
            Some(ExportedUser {
                user: User {
                    channel_user_id: ids.value(i).to_owned(),
                    channel: opt(&channel, i),
                    user_name: opt(&user_name, i),
                    attributes: keys.into_iter().zip(values).collect(),
                    matched_filters: strings(matched.value(i))?,
                },
                run_id: run_id.value(i).to_owned(),
                extracted_at_ms: extracted.value(i),
            })
        })
        .collect()
}
