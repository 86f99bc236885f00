//! The result log: `OUT/sends/campaign=ID/results.parquet` (or `.jsonl`), exactly one row per
//! row of the campaign's last planned input, in input order, rewritten whole (staged, fsynced,
//! renamed) after every run, retry and reconciliation. Duplicates of an earlier row's key are
//! rows of their own (`skipped`, naming the first row).
//!
//! Columns: `input_row` (1-based), `campaign`, `kind`, `row_key`, `recipient`, `status`,
//! `api_code`, `http_status`, `message_id`, `attempts`, `manual_retries`,
//! `first_attempt_at` and `finished_at` (timestamp ms, UTC), `error`, `settled_by`
//! (`response`, `reconciliation`, `crash`), `content_changed` (the input now differs from
//! what was settled; not re-sent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use arrow_array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rusqlite::{Connection, params};

use super::Kind;
use super::ledger::Listed;
use crate::sink::part::PartWriter;
use crate::sink::{Encoding, Format};

/// Rows per record batch.
const BATCH: usize = 8192;

/// The result log's schema.
pub static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("input_row", DataType::Int64, false),
        Field::new("campaign", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("row_key", DataType::Utf8, false),
        Field::new("recipient", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("api_code", DataType::Int64, true),
        Field::new("http_status", DataType::Int32, true),
        Field::new("message_id", DataType::Utf8, true),
        Field::new("attempts", DataType::Int32, false),
        Field::new("manual_retries", DataType::Int32, false),
        Field::new("first_attempt_at", ts.clone(), true),
        Field::new("finished_at", ts, true),
        Field::new("error", DataType::Utf8, true),
        Field::new("settled_by", DataType::Utf8, true),
        Field::new("content_changed", DataType::Boolean, false),
    ]))
});

/// The result log as written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogSummary {
    /// The file.
    pub path: PathBuf,
    /// Rows (= input rows).
    pub rows: u64,
    /// Rows per status (duplicates count as `skipped`).
    pub by_status: BTreeMap<String, u64>,
    /// Every `failed` row.
    pub failed: Vec<Listed>,
    /// Every `unknown` row.
    pub unknown: Vec<Listed>,
}

/// Writing the log failed (exit 6).
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// Reading the ledger.
    #[error("state store: {0}")]
    State(#[from] rusqlite::Error),
    /// Writing the file.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// One result-log row, from the ledger.
struct Row {
    input_row: i64,
    key: String,
    duplicate_of: Option<i64>,
    changed: bool,
    recipient: Option<String>,
    status: Option<String>,
    api_code: Option<i64>,
    http_status: Option<i32>,
    message_id: Option<String>,
    attempts: i32,
    manual_retries: i32,
    first_ms: Option<i64>,
    finished_ms: Option<i64>,
    error: Option<String>,
    settled_by: Option<String>,
}

impl Row {
    /// Status and error as the log shows them (a duplicate is a skipped row of its own).
    fn shown(&self) -> (String, Option<String>) {
        match self.duplicate_of {
            Some(first) => (
                "skipped".into(),
                Some(format!("duplicate key: same row key as input row {first}")),
            ),
            None => (
                self.status.clone().unwrap_or_else(|| "pending".into()),
                self.error.clone(),
            ),
        }
    }
}

fn page(conn: &Connection, campaign: &str, after: i64) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare_cached(
        "SELECT i.input_row, i.row_key, i.duplicate_of, i.changed, r.recipient, r.status, r.api_code,
                r.http_status, r.message_id, r.attempts, r.manual_retries, r.first_attempt_ms,
                r.finished_ms, r.error, r.settled_by
         FROM send_inputs i LEFT JOIN send_rows r ON r.campaign=i.campaign AND r.row_key=i.row_key
         WHERE i.campaign=?1 AND i.input_row>?2 ORDER BY i.input_row LIMIT ?3",
    )?;
    let rows = st.query_map(params![campaign, after, BATCH as i64], |r| {
        let dup: Option<i64> = r.get(2)?;
        let pick = |i: usize| -> rusqlite::Result<Option<i64>> {
            if dup.is_some() { Ok(None) } else { r.get(i) }
        };
        Ok(Row {
            input_row: r.get(0)?,
            key: r.get(1)?,
            duplicate_of: dup,
            changed: r.get(3)?,
            recipient: r.get(4)?,
            status: r.get(5)?,
            api_code: pick(6)?,
            http_status: pick(7)?.map(|v| v as i32),
            message_id: if dup.is_some() { None } else { r.get(8)? },
            attempts: pick(9)?.unwrap_or(0) as i32,
            manual_retries: pick(10)?.unwrap_or(0) as i32,
            first_ms: pick(11)?,
            finished_ms: pick(12)?,
            error: r.get(13)?,
            settled_by: if dup.is_some() { None } else { r.get(14)? },
        })
    })?;
    rows.collect()
}

/// Counts the rows per shown status and lists the failed and unknown ones.
fn tally(rows: &[Row], shown: &[(String, Option<String>)], summary: &mut LogSummary) {
    for (r, (st, err)) in rows.iter().zip(shown) {
        *summary.by_status.entry(st.clone()).or_default() += 1;
        let list = match st.as_str() {
            "failed" => &mut summary.failed,
            "unknown" => &mut summary.unknown,
            _ => continue,
        };
        list.push(Listed {
            row_key: r.key.clone(),
            recipient: r.recipient.clone(),
            http_status: r.http_status.map(|h| h as u16),
            api_code: r.api_code,
            error: err.clone(),
        });
    }
}

fn to_batch(rows: &[Row], campaign: &str, kind: Kind, summary: &mut LogSummary) -> RecordBatch {
    let shown: Vec<(String, Option<String>)> = rows.iter().map(Row::shown).collect();
    tally(rows, &shown, summary);
    let text = |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let int32 = |f: &dyn Fn(&Row) -> Option<i32>| -> ArrayRef {
        Arc::new(Int32Array::from_iter(rows.iter().map(f)))
    };
    let ts = |f: &dyn Fn(&Row) -> Option<i64>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from_iter(rows.iter().map(f)).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.input_row),
        )),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            campaign,
            rows.len(),
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            kind.as_str(),
            rows.len(),
        ))),
        text(&|r| Some(r.key.as_str())),
        text(&|r| r.recipient.as_deref()),
        Arc::new(StringArray::from_iter_values(
            shown.iter().map(|(s, _)| s.as_str()),
        )),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.api_code))),
        int32(&|r| r.http_status),
        text(&|r| r.message_id.as_deref()),
        int32(&|r| Some(r.attempts)),
        int32(&|r| Some(r.manual_retries)),
        ts(&|r| r.first_ms),
        ts(&|r| r.finished_ms),
        Arc::new(StringArray::from_iter(
            shown.iter().map(|(_, e)| e.as_deref()),
        )),
        text(&|r| r.settled_by.as_deref()),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.changed)),
        )),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).expect("columns match the schema")
}

/// The result log's file name for a format.
pub fn file_name(format: Format) -> &'static str {
    match format {
        Format::Parquet => "results.parquet",
        Format::Jsonl => "results.jsonl",
    }
}

/// Rewrites the result log of `campaign` under `out` from the ledger.
///
/// # Errors
/// [`ResultsError`].
pub fn write_log(
    conn: &Connection,
    campaign: &str,
    kind: Kind,
    out: &Path,
    format: Format,
) -> Result<LogSummary, ResultsError> {
    let dir = super::config::log_dir(out, campaign);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ResultsError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let name = file_name(format);
    let path = dir.join(name);
    let staged = dir.join(format!(".{name}.tmp"));
    let enc = Encoding::new(format, false, 3, 4 << 20, 6).expect("valid zstd level");
    let mut w = PartWriter::create(&staged, &enc, SCHEMA.clone())?;
    let mut summary = LogSummary {
        path: path.clone(),
        ..LogSummary::default()
    };
    let mut after = 0;
    loop {
        let rows = page(conn, campaign, after)?;
        let Some(last) = rows.last() else { break };
        after = last.input_row;
        summary.rows += rows.len() as u64;
        w.write(&to_batch(&rows, campaign, kind, &mut summary))?;
        w.flush_row_group()?;
    }
    w.finish()?;
    std::fs::rename(&staged, &path).map_err(io(&path))?;
    let other = dir.join(file_name(match format {
        Format::Parquet => Format::Jsonl,
        Format::Jsonl => Format::Parquet,
    }));
    if other.exists() {
        std::fs::remove_file(&other).map_err(io(&other))?;
    }
    crate::state::sync_dir(&dir).map_err(|e| ResultsError::Io {
        path: dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(summary)
}
