//! What the page shows, gathered from the output: the run history and the last run's report
//! (the state store, read-only), and message counts per UTC day and channel and per user
//! (read from the output's own message files: the `sent_at`, `channel` and `channel_user_id`
//! columns only). Both are exact: the files are what a reader of the output sees, the history
//! is what the runs recorded.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::error::Error;
use crate::schema;
use crate::state::StateStore;
use crate::timeline::Timeline;

/// Users shown in "largest users".
pub const TOP_USERS: usize = 15;

/// A run of the history table.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Run id.
    pub run_id: String,
    /// State namespace.
    pub namespace: String,
    /// Start, RFC 3339.
    pub started: String,
    /// Outcome (`crashed` for a run that stopped without a report).
    pub status: String,
    /// Wall time, ms (when finished).
    pub duration_ms: Option<u64>,
    /// Messages written (when finished).
    pub written: Option<u64>,
    /// Messages rejected (when finished).
    pub rejected: Option<u64>,
    /// Requests (when finished).
    pub requests: Option<u64>,
}

/// Everything the page shows.
#[derive(Debug, Default)]
pub struct ReportData {
    /// The output directory.
    pub out_dir: String,
    /// The last finished run's report.
    pub last: Option<Value>,
    /// Its timeline.
    pub timeline: Option<Timeline>,
    /// Recent runs, newest first.
    pub runs: Vec<RunRow>,
    /// Messages in the output per (UTC date, channel).
    pub per_day: BTreeMap<(String, String), u64>,
    /// The users with the most messages in the output (id as written), most first.
    pub top_users: Vec<(String, u64)>,
    /// Messages in the output.
    pub total_rows: u64,
    /// Distinct users in the output.
    pub total_users: u64,
}

/// Reads the history and scans the output's message files.
///
/// # Errors
/// State errors; files the tool cannot read back ([`Error::Usage`] naming them).
pub fn gather(out_dir: &Path, state_dir: &Path, runs: usize) -> Result<ReportData, Error> {
    let st = StateStore::open_read_only(state_dir)?;
    let history = st.runs(None, runs.max(1))?;
    let mut data = ReportData {
        out_dir: out_dir.display().to_string(),
        ..ReportData::default()
    };
    for r in &history {
        let report: Option<Value> = r
            .report
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok());
        let n = |k: &str, f: &str| report.as_ref().and_then(|v| v[k][f].as_u64());
        data.runs.push(RunRow {
            run_id: r.run_id.clone(),
            namespace: r.namespace.clone(),
            started: crate::time::rfc3339_ms(r.started_ms),
            status: match (r.status.as_str(), r.finished_ms) {
                ("running", None) => "crashed or running".into(),
                (s, _) => s.to_owned(),
            },
            duration_ms: report.as_ref().and_then(|v| v["duration_ms"].as_u64()),
            written: n("messages", "written"),
            rejected: n("messages", "rejected"),
            requests: n("requests", "total"),
        });
        if data.last.is_none()
            && let Some(v) = report
        {
            data.timeline = serde_json::from_value(v["timeline"].clone()).ok();
            data.last = Some(v);
        }
    }
    let mut users: HashMap<String, u64> = HashMap::new();
    for f in st.files("messages")? {
        let path = out_dir.join(&f.path);
        let mut add = |day: i64, channel: Option<&str>, user: &str| {
            let key = (
                crate::time::date_string(day),
                channel.unwrap_or("unknown").to_owned(),
            );
            *data.per_day.entry(key).or_default() += 1;
            *users.entry(user.to_owned()).or_default() += 1;
            data.total_rows += 1;
        };
        if f.path.ends_with(".parquet") {
            scan_parquet(&path, &mut add)?;
        } else {
            scan_jsonl(&path, &mut add)?;
        }
    }
    data.total_users = users.len() as u64;
    let mut top: Vec<(String, u64)> = users.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_USERS);
    data.top_users = top;
    Ok(data)
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Usage(format!("cannot read {}: {e}", path.display()))
}

fn scan_parquet(path: &Path, add: &mut impl FnMut(i64, Option<&str>, &str)) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| unreadable(path, e))?;
    let wanted = [schema::SENT_AT, schema::CHANNEL, schema::CHANNEL_USER_ID];
    let mask = ProjectionMask::columns(b.parquet_schema(), wanted);
    let reader = b
        .with_projection(mask)
        .build()
        .map_err(|e| unreadable(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| unreadable(path, e))?;
        let sent = batch
            .column_by_name(schema::SENT_AT)
            .ok_or_else(|| unreadable(path, "no sent_at column"))?
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let users = batch
            .column_by_name(schema::CHANNEL_USER_ID)
            .ok_or_else(|| unreadable(path, "no channel_user_id column"))?
            .as_string::<i32>()
            .clone();
        let channel = batch
            .column_by_name(schema::CHANNEL)
            .map(|c| c.as_string::<i32>().clone());
        for i in 0..batch.num_rows() {
            let ch = channel
                .as_ref()
                .filter(|c| !c.is_null(i))
                .map(|c| c.value(i));
            add(
                crate::time::day_of(sent.value(i)) * crate::time::DAY_MS,
                ch,
                users.value(i),
            );
        }
    }
    Ok(())
}

fn scan_jsonl(path: &Path, add: &mut impl FnMut(i64, Option<&str>, &str)) -> Result<(), Error> {
    let file = std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    for line in reader.lines() {
        let line = line.map_err(|e| unreadable(path, e))?;
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| unreadable(path, e))?;
        let sent = v[schema::SENT_AT]
            .as_str()
            .and_then(crate::time::parse_rfc3339_ms)
            .ok_or_else(|| unreadable(path, "a row without sent_at"))?;
        let user = v[schema::CHANNEL_USER_ID].as_str().unwrap_or("");
        add(
            crate::time::day_of(sent) * crate::time::DAY_MS,
            v[schema::CHANNEL].as_str(),
            user,
        );
    }
    Ok(())
}
