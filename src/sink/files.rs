//! The file sink: Hive-partitioned Parquet or JSONL under an output directory, one commit per
//! unit.
//!
//! Layout (relative to the output directory):
//! - `messages/date=YYYY-MM-DD/part-<unit>-<cell>-<seq>.parquet` (or `.jsonl`, `.jsonl.gz`),
//!   by the UTC date of `sent_at`; files rotate at `target_file_bytes`;
//! - `users/part-<hash>.parquet`: every user exported to this output (rewritten each run);
//! - `_dead_letter/part-<unit>-<cell>.jsonl`: rejected messages with reasons;
//! - `_state/`: the state store (ledger, journal, runs).
//!
//! Files are written under hidden staged names (`.part-....tmp`) and only appear under their
//! final names through a state-store commit, after they were fsynced. No empty file is ever
//! created: a partition's file is opened by its first row.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{BooleanArray, RecordBatch};
use tokio::sync::mpsc;

use super::part::{Encoding, PartWriter};
use super::supersede::{self, CellMap};
use super::{
    SinkCounters, SinkError, SinkMsg, SinkReport, UnitInfo, dead_letter, sync_parents,
    watermark_moves, write_file,
};
use crate::model::ExportedUser;
use crate::model::Window;
use crate::normalize::Reject;
use crate::schema::{self, UsersBatchBuilder, messages_schema, users_schema};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore};
use crate::time::{DAY_MS, date_string, day_of};

/// Arrow memory, bytes, that a unit whose window spans several UTC days may hold in rows
/// waiting for their date partition (Parquet only). Beyond it the partition holding the most
/// is written out as one row group. Why not keep one Parquet writer building a row group per
/// date: each column of each open row group holds a zstd context (about 1 MB), so 31 dates x
/// 20 columns would cost hundreds of MB; this way one row group is encoded at a time.
/// The environment variable `ENGATI_ETL_PENDING_BYTES` (bytes) overrides it: a testing knob
/// that makes the spill path run on small data.
pub const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

fn pending_limit() -> usize {
    std::env::var("ENGATI_ETL_PENDING_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_PENDING_BYTES)
}

/// File sink settings.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Output directory.
    pub out_dir: PathBuf,
    /// Encoding.
    pub encoding: Encoding,
    /// Rotate a file when it reaches this many bytes.
    pub target_file_bytes: u64,
    /// The run.
    pub run_id: String,
    /// Watermark namespace to advance on commit (incremental runs), if any.
    pub watermark_namespace: Option<String>,
}

/// What the sink thread returns.
pub struct SinkOutcome {
    /// Report.
    pub report: SinkReport,
    /// The state store, handed back.
    pub state: StateStore,
    /// The error that stopped the sink, if any.
    pub error: Option<SinkError>,
}

/// Starts the sink thread. Send [`SinkMsg`]s; drop the sender and join to get the outcome.
pub fn spawn(
    config: FileSinkConfig,
    state: StateStore,
    counters: Arc<SinkCounters>,
    capacity: usize,
) -> (mpsc::Sender<SinkMsg>, std::thread::JoinHandle<SinkOutcome>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let handle = std::thread::Builder::new()
        .name("engati-etl-sink".into())
        .spawn(move || {
            let mut sink = FileSink {
                run8: config
                    .run_id
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(8)
                    .collect(),
                config,
                state,
                counters,
                report: SinkReport::default(),
                unit: None,
                pending_limit: pending_limit(),
            };
            let error = sink.run(rx).err();
            if let Some(unit) = sink.unit.take() {
                unit.discard(&sink.config.out_dir);
            }
            SinkOutcome {
                report: sink.report,
                state: sink.state,
                error,
            }
        })
        .expect("spawning a thread");
    (tx, handle)
}

struct FileSink {
    config: FileSinkConfig,
    run8: String,
    state: StateStore,
    counters: Arc<SinkCounters>,
    report: SinkReport,
    unit: Option<OpenUnit>,
    /// [`MAX_PENDING_BYTES`] or its override.
    pending_limit: usize,
}

struct Partition {
    dir: String,
    writer: Option<PartWriter>,
    seq: u32,
    /// Rows of a multi-day unit waiting to be written, in arrival order.
    pending: Vec<RecordBatch>,
    /// Their Arrow memory, bytes.
    pending_bytes: usize,
}

impl Partition {
    fn new(day: i64) -> Self {
        Partition {
            dir: format!("messages/date={}", date_string(day * DAY_MS)),
            writer: None,
            seq: 0,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }
}

struct OpenUnit {
    info: Arc<UnitInfo>,
    parts: BTreeMap<i64, Partition>,
    /// Sum of the partitions' `pending_bytes`.
    pending_bytes: usize,
    staged: Vec<(String, FileRecord)>,
    dead: Vec<u8>,
    dead_rows: u64,
}

impl OpenUnit {
    /// Deletes what the unit staged (recovery would remove the hidden files too).
    fn discard(self, out_dir: &Path) {
        for (_, p) in self.parts {
            if let Some(w) = p.writer {
                w.discard();
            }
        }
        for (staged, _) in &self.staged {
            let _ = std::fs::remove_file(out_dir.join(staged));
        }
    }
}

impl FileSink {
    fn run(&mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<(), SinkError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                SinkMsg::BeginUnit(info) => {
                    if let Some(old) = self.unit.take() {
                        self.discard_staged(old);
                    }
                    self.unit = Some(OpenUnit {
                        info,
                        parts: BTreeMap::new(),
                        pending_bytes: 0,
                        staged: Vec::new(),
                        dead: Vec::new(),
                        dead_rows: 0,
                    });
                }
                SinkMsg::Page {
                    cell,
                    rows,
                    rejects,
                } => self.page(cell, rows, &rejects)?,
                SinkMsg::EndUnit { cells_done } => self.end_unit(cells_done)?,
                SinkMsg::AbortUnit => {
                    if let Some(old) = self.unit.take() {
                        self.discard_staged(old);
                    }
                }
                SinkMsg::WriteUsers { users, cx } => self.write_users(&users, &cx)?,
            }
        }
        Ok(())
    }

    fn discard_staged(&self, unit: OpenUnit) {
        unit.discard(&self.config.out_dir);
    }

    /// `(staged, final)` relative paths for `dir/stem.<ext>`.
    fn names(&self, dir: &str, stem: &str, ext: &str) -> (String, String) {
        (
            format!("{dir}/.{stem}.{ext}.{}{STAGED_SUFFIX}", self.run8),
            format!("{dir}/{stem}.{ext}"),
        )
    }

    fn page(
        &mut self,
        cell: u32,
        rows: Option<RecordBatch>,
        rejects: &[Reject],
    ) -> Result<(), SinkError> {
        let run_id = self.config.run_id.clone();
        let Some(unit) = self.unit.as_mut() else {
            return Err(SinkError::Crashed("a page arrived outside a unit".into()));
        };
        if !rejects.is_empty() {
            let c = unit
                .info
                .cells
                .get(cell as usize)
                .ok_or_else(|| SinkError::Crashed(format!("cell {cell} is not in the unit")))?;
            for r in rejects {
                dead_letter::encode(&mut unit.dead, &run_id, &c.user, c.window, r);
                unit.dead_rows += 1;
            }
        }
        let Some(batch) = rows else { return Ok(()) };
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let sent = batch
            .column_by_name(schema::SENT_AT)
            .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
            .ok_or_else(|| SinkError::Crashed("batch without sent_at".into()))?;
        let first_day = day_of(sent.value(0));
        if sent.values().iter().all(|&t| day_of(t) == first_day) {
            return self.write_day(first_day, &batch);
        }
        let mut days: Vec<i64> = sent.values().iter().map(|&t| day_of(t)).collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            let mask: BooleanArray = sent
                .values()
                .iter()
                .map(|&t| Some(day_of(t) == day))
                .collect();
            let part = arrow_select::filter::filter_record_batch(&batch, &mask)
                .map_err(|e| SinkError::arrow(&self.config.out_dir, e))?;
            self.write_day(day, &part)?;
        }
        Ok(())
    }

    /// Routes one date's rows: straight to the partition's file, or, for a Parquet unit whose
    /// window spans several days, into the partition's pending rows (see
    /// [`MAX_PENDING_BYTES`]).
    fn write_day(&mut self, day: i64, batch: &RecordBatch) -> Result<(), SinkError> {
        let multi_day = self.config.encoding.format == super::Format::Parquet
            && self
                .unit
                .as_ref()
                .is_some_and(|u| u.info.window.end_ms - u.info.window.start_ms > DAY_MS);
        if !multi_day {
            return self.put(day, batch);
        }
        let unit = self.unit.as_mut().expect("checked by page()");
        let part = unit.parts.entry(day).or_insert_with(|| Partition::new(day));
        let bytes = batch.get_array_memory_size();
        part.pending.push(batch.clone());
        part.pending_bytes += bytes;
        unit.pending_bytes += bytes;
        loop {
            let unit = self.unit.as_ref().expect("checked by page()");
            if unit.pending_bytes <= self.pending_limit {
                return Ok(());
            }
            let largest = unit
                .parts
                .iter()
                .max_by_key(|(_, p)| p.pending_bytes)
                .map(|(d, _)| *d)
                .expect("pending rows are in some partition");
            self.drain(largest)?;
        }
    }

    /// Writes a partition's pending rows as one row group (or more, past the row-group size)
    /// and ends it, so that no row group stays open in memory.
    fn drain(&mut self, day: i64) -> Result<(), SinkError> {
        let unit = self.unit.as_mut().expect("checked by page()");
        let part = unit.parts.get_mut(&day).expect("a partition with rows");
        let pending = std::mem::take(&mut part.pending);
        unit.pending_bytes -= std::mem::take(&mut part.pending_bytes);
        for b in &pending {
            self.put(day, b)?;
        }
        drop(pending);
        let unit = self.unit.as_mut().expect("checked by page()");
        if let Some(w) = unit.parts.get_mut(&day).and_then(|p| p.writer.as_mut()) {
            w.flush_row_group()?;
        }
        Ok(())
    }

    /// Appends rows to the partition's open file (opening it on first rows), rotating at
    /// `target_file_bytes`.
    fn put(&mut self, day: i64, batch: &RecordBatch) -> Result<(), SinkError> {
        let ext = self.config.encoding.extension();
        let out_dir = self.config.out_dir.clone();
        let target = self.config.target_file_bytes;
        let unit = self.unit.as_mut().expect("checked by page()");
        let part = unit.parts.entry(day).or_insert_with(|| Partition::new(day));
        if part.writer.is_none() {
            let stem = format!(
                "part-{}-{:05}-{:03}",
                unit.info.key.0, unit.info.first_cell, part.seq
            );
            let staged = format!("{}/.{stem}.{ext}.{}{STAGED_SUFFIX}", part.dir, self.run8);
            let dir = out_dir.join(&part.dir);
            std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
                action: "creating directory",
                path: dir.clone(),
                source,
            })?;
            part.writer = Some(PartWriter::create(
                &out_dir.join(&staged),
                &self.config.encoding,
                messages_schema(),
            )?);
        }
        let writer = part.writer.as_mut().expect("opened above");
        writer.write(batch)?;
        if writer.size_estimate() >= target {
            let w = part.writer.take().expect("present");
            let seq = part.seq;
            part.seq += 1;
            let dir = part.dir.clone();
            let rec = Self::close_part(&self.run8, &out_dir, &unit.info, day, &dir, seq, ext, w)?;
            unit.staged.push(rec);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn close_part(
        run8: &str,
        out_dir: &Path,
        info: &UnitInfo,
        day: i64,
        dir: &str,
        seq: u32,
        ext: &str,
        w: PartWriter,
    ) -> Result<(String, FileRecord), SinkError> {
        let rows = w.rows();
        let staged_abs = w.path().to_owned();
        let bytes = w.finish()?;
        let stem = format!("part-{}-{:05}-{:03}", info.key.0, info.first_cell, seq);
        let staged = staged_abs
            .strip_prefix(out_dir)
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .unwrap_or_else(|_| format!("{dir}/.{stem}.{ext}.{run8}{STAGED_SUFFIX}"));
        let fin = format!("{dir}/{stem}.{ext}");
        Ok((
            staged,
            FileRecord {
                path: fin,
                stream: "messages".into(),
                unit_key: info.key.0.clone(),
                cells_from: info.first_cell,
                cells_to: info.first_cell,
                min_user: String::new(),
                max_user: String::new(),
                min_ms: day * DAY_MS,
                max_ms: (day + 1) * DAY_MS,
                rows,
                bytes,
            },
        ))
    }

    fn end_unit(&mut self, cells_done: u32) -> Result<(), SinkError> {
        let Some(mut unit) = self.unit.take() else {
            return Err(SinkError::Crashed("EndUnit outside a unit".into()));
        };
        let ext = self.config.encoding.extension();
        let out_dir = self.config.out_dir.clone();
        let waiting: Vec<i64> = unit
            .parts
            .iter()
            .filter(|(_, p)| !p.pending.is_empty())
            .map(|(d, _)| *d)
            .collect();
        if !waiting.is_empty() {
            self.unit = Some(unit);
            for day in waiting {
                self.drain(day)?;
            }
            unit = self.unit.take().expect("put back above");
        }
        let parts = std::mem::take(&mut unit.parts);
        for (day, p) in parts {
            if let Some(w) = p.writer {
                let rec =
                    Self::close_part(&self.run8, &out_dir, &unit.info, day, &p.dir, p.seq, ext, w)?;
                unit.staged.push(rec);
            }
        }
        let done = (cells_done as usize).min(unit.info.cells.len());
        if done == 0 {
            self.discard_staged(unit);
            return Ok(());
        }
        let info = unit.info.clone();
        let cells = &info.cells[..done];
        let cell_map: CellMap<'_> = cells.iter().map(|c| (c.user.as_ref(), c.window)).collect();
        let min_user = cells
            .iter()
            .map(|c| c.user.as_ref())
            .min()
            .unwrap_or("")
            .to_owned();
        let max_user = cells
            .iter()
            .map(|c| c.user.as_ref())
            .max()
            .unwrap_or("")
            .to_owned();
        let span = Window {
            start_ms: cells.iter().map(|c| c.window.start_ms).min().unwrap_or(0),
            end_ms: cells.iter().map(|c| c.window.end_ms).max().unwrap_or(0),
        };
        let cells_to = info.first_cell + done as u32;

        // Dead letters of this commit.
        if !unit.dead.is_empty() {
            let stem = format!("part-{}-{:05}", info.key.0, info.first_cell);
            let (staged, fin) = self.names("_dead_letter", &stem, "jsonl");
            let abs = out_dir.join(&staged);
            write_file(&abs, &unit.dead)?;
            unit.staged.push((
                staged,
                FileRecord {
                    path: fin,
                    stream: "dead_letter".into(),
                    unit_key: info.key.0.clone(),
                    cells_from: info.first_cell,
                    cells_to,
                    min_user: String::new(),
                    max_user: String::new(),
                    min_ms: span.start_ms,
                    max_ms: span.end_ms,
                    rows: unit.dead_rows,
                    bytes: unit.dead.len() as u64,
                },
            ));
        }
        for (_, rec) in unit.staged.iter_mut() {
            rec.cells_to = cells_to;
            rec.min_user.clone_from(&min_user);
            rec.max_user.clone_from(&max_user);
            rec.min_ms = rec.min_ms.max(span.start_ms);
            rec.max_ms = rec.max_ms.min(span.end_ms);
        }

        // Take re-exported rows out of earlier files.
        let mut candidates = self.state.overlapping_files(
            "messages",
            span.start_ms,
            span.end_ms,
            &min_user,
            &max_user,
        )?;
        candidates.extend(self.state.overlapping_files(
            "dead_letter",
            span.start_ms,
            span.end_ms,
            &min_user,
            &max_user,
        )?);
        let same_unit = |f: &FileRecord| {
            !f.unit_key.starts_with("remnant:")
                && f.unit_key == info.key.0
                && f.cells_from >= info.first_cell
                && f.cells_to <= cells_to
        };
        let mut n = 0u32;
        let run8 = self.run8.clone();
        let replacement = supersede::replace(
            &out_dir,
            &self.config.encoding,
            candidates,
            &cell_map,
            same_unit,
            |f| {
                n += 1;
                let (dir, ext) = match f.path.rsplit_once('/') {
                    Some((d, name)) => (
                        d.to_owned(),
                        name.split_once('.')
                            .map(|(_, e)| e.to_owned())
                            .unwrap_or_default(),
                    ),
                    None => (String::new(), String::new()),
                };
                let stem = format!("part-{}-{:05}-r{run8}{n:02}", info.key.0, info.first_cell);
                (
                    format!("{dir}/.{stem}.{ext}.{run8}{STAGED_SUFFIX}"),
                    format!("{dir}/{stem}.{ext}"),
                )
            },
        )?;

        let mut plan = CommitPlan::default();
        for (staged, rec) in unit.staged.iter().chain(replacement.remnants.iter()) {
            plan.adds.push((staged.clone(), rec.path.clone()));
            plan.records.push(rec.clone());
        }
        plan.removes = replacement.removes.clone();
        plan.unit_progress = Some((info.key.0.clone(), cells_to));
        if let Some(ns) = &self.config.watermark_namespace {
            plan.watermarks = watermark_moves(ns, cells);
        }
        // The staged files' directory entries must be durable before the journal refers to them.
        sync_parents(&out_dir, plan.adds.iter().map(|(s, _)| s.as_str()))?;
        self.state
            .commit(&self.config.run_id, &plan, &out_dir, crate::time::now_ms())?;

        let rows: u64 = unit
            .staged
            .iter()
            .filter(|(_, r)| r.stream == "messages")
            .map(|(_, r)| r.rows)
            .sum();
        let r = &mut self.report;
        r.rows_written += rows;
        r.rejects_written += unit.dead_rows;
        r.units_committed += 1;
        r.cells_committed += done as u64;
        r.files_replaced += replacement.removes.len() as u64;
        r.rows_replaced += replacement.rows_removed;
        for (_, rec) in unit.staged.iter().chain(replacement.remnants.iter()) {
            r.files_written += 1;
            r.bytes_written += rec.bytes;
            if r.files.len() < 1000 {
                r.files.push(rec.path.clone());
            }
        }
        self.counters.committed(rows, done as u64, unit.dead_rows);
        Ok(())
    }

    fn write_users(
        &mut self,
        users: &[crate::model::User],
        cx: &schema::RowContext,
    ) -> Result<(), SinkError> {
        // In pages: a million users never sit in memory twice.
        for chunk in users.chunks(10_000) {
            let stored: Vec<ExportedUser> = chunk
                .iter()
                .map(|u| ExportedUser {
                    user: u.clone(),
                    run_id: cx.run_id.to_string(),
                    extracted_at_ms: cx.extracted_at_ms,
                })
                .collect();
            self.state.upsert_users(&stored)?;
        }
        let ext = self.config.encoding.extension();
        let staged = format!("users/.part-users.{ext}.{}{STAGED_SUFFIX}", self.run8);
        let out_dir = self.config.out_dir.clone();
        let dir = out_dir.join("users");
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            action: "creating directory",
            path: dir,
            source,
        })?;
        let mut w = PartWriter::create(
            &out_dir.join(&staged),
            &self.config.encoding,
            users_schema(),
        )?;
        // The file is named after its content (ids and runs), known once written.
        let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
        let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
        let mut after: Option<String> = None;
        loop {
            let page = self.state.users_page(after.as_deref(), 10_000)?;
            let Some(tail) = page.last() else { break };
            after = Some(tail.user.channel_user_id.clone());
            let mut b = UsersBatchBuilder::new();
            for u in page {
                let id = &u.user.channel_user_id;
                hasher.update(id.as_bytes());
                hasher.update(&[0]);
                hasher.update(u.run_id.as_bytes());
                hasher.update(&[0]);
                if first.is_none() {
                    first = Some(id.clone());
                }
                last = Some(id.clone());
                b.append(cx, &u);
            }
            w.write(&b.finish())?;
        }
        if first.is_none() {
            w.discard();
            return Ok(());
        }
        let fin = format!("users/part-{:016x}.{ext}", hasher.digest());
        let rows = w.rows();
        let bytes = w.finish()?;
        sync_parents(&out_dir, std::iter::once(staged.as_str()))?;
        let old: Vec<String> = self
            .state
            .files("users")?
            .into_iter()
            .map(|f| f.path)
            .collect();
        let plan = CommitPlan {
            adds: vec![(staged, fin.clone())],
            removes: old,
            records: vec![FileRecord {
                path: fin.clone(),
                stream: "users".into(),
                unit_key: "users".into(),
                cells_from: 0,
                cells_to: 0,
                min_user: first.unwrap_or_default(),
                max_user: last.unwrap_or_default(),
                min_ms: 0,
                max_ms: 0,
                rows,
                bytes,
            }],
            ..Default::default()
        };
        self.state
            .commit(&self.config.run_id, &plan, &out_dir, crate::time::now_ms())?;
        self.report.users_written = rows;
        self.report.files_written += 1;
        self.report.bytes_written += bytes;
        if self.report.files.len() < 1000 {
            self.report.files.push(fin);
        }
        Ok(())
    }
}
