//! The file sink: Hive-partitioned Parquet or JSONL under an output directory, one commit per
//! unit.
//!
//! Layout (relative to the output directory):
//! - `messages/date=YYYY-MM-DD/part-<unit>-<cell>-<seq>.parquet` (or `.jsonl`, `.jsonl.gz`),
//!   by the UTC date of `sent_at`; files rotate at `target_file_bytes` ([`RotatingWriter`]);
//! - `users/part-<hash>.parquet`: every user exported to this output (rewritten each run);
//! - `_dead_letter/part-<unit>-<cell>.jsonl`: rejected messages with reasons;
//! - `_state/`: the state store (ledger, journal, runs).
//!
//! Files are written under hidden staged names (`.part-....tmp`) and only appear under their
//! final names through a state-store commit, after they were fsynced; the commit also takes
//! the re-exported rows out of earlier files ([`supersede`](super::supersede)).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::durable::{sync_parents, write_file};
use super::part::Encoding;
use super::rotating::{RotatingWriter, StagedFile};
use super::supersede::{self, CellMap, Replacement};
use super::{
    CellRef, Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo, WrittenFile,
    watermark_moves,
};
use crate::model::{User, Window};
use crate::privacy::Privacy;
use crate::schema::{self, RowContext};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore};
use crate::time::{DAY_MS, date_string};

/// Arrow memory, bytes, that a unit whose window spans several UTC days may hold in rows
/// waiting for their date partition (Parquet only). Beyond it the partition holding the most
/// is written out as one row group. Why not keep one Parquet writer building a row group per
/// date: each column of each open row group holds a zstd context (about 1 MB), so 31 dates x
/// 20 columns would cost hundreds of MB; this way one row group is encoded at a time. Tests
/// lower it with the failpoint `files::pending_limit=return(BYTES)` (feature
/// `fault-injection`) to make the spill path run on small data.
pub const MAX_PENDING_BYTES: usize = 32 * 1024 * 1024;

fn pending_limit() -> usize {
    fail::fail_point!("files::pending_limit", |v| {
        v.and_then(|s| s.parse().ok()).unwrap_or(MAX_PENDING_BYTES)
    });
    MAX_PENDING_BYTES
}

/// The file output, validated (`config::sink`).
#[derive(Debug, Clone)]
pub struct FilesSpec {
    /// Output directory.
    pub out_dir: PathBuf,
    /// State directory (default `<out>/_state`).
    pub state_dir: PathBuf,
    /// Format and encoding.
    pub encoding: Encoding,
    /// Rotate a file when its estimated size reaches this many bytes.
    pub target_file_bytes: u64,
    /// Accept an output directory holding files this tool did not write.
    pub allow_foreign_files: bool,
}

/// The file sink of one run.
pub struct FilesSink {
    spec: FilesSpec,
    run_id: String,
    run8: String,
    /// Watermark namespace to advance on commit (incremental runs).
    watermarks: Option<String>,
    state: StateStore,
    unit: Option<OpenUnit>,
    pending_limit: usize,
    /// The privacy policy the rows were written under (the runner applies it to rows): re-exported
    /// rows are found by their pseudonymized ids, file names carry keyed hashes.
    privacy: Option<Privacy>,
}

/// One date partition of the open unit.
struct DayPart {
    writer: RotatingWriter,
    /// Rows of a multi-day unit waiting to be written, in arrival order.
    pending: Vec<RecordBatch>,
    /// Their Arrow memory, bytes.
    pending_bytes: usize,
}

struct OpenUnit {
    info: Arc<UnitInfo>,
    parts: BTreeMap<i64, DayPart>,
    /// Sum of the partitions' `pending_bytes`.
    pending_bytes: usize,
    /// True when the unit's window spans several UTC days and the format is Parquet.
    multi_day: bool,
}

impl FilesSink {
    /// The sink for run `run_id` over `state`; `watermarks` is the namespace whose watermarks
    /// commits advance (incremental runs), if any.
    pub fn new(
        spec: FilesSpec,
        state: StateStore,
        run_id: &str,
        watermarks: Option<String>,
    ) -> Self {
        FilesSink {
            run8: super::run8(run_id),
            run_id: run_id.to_owned(),
            spec,
            watermarks,
            state,
            unit: None,
            pending_limit: pending_limit(),
            privacy: None,
        }
    }

    /// The sink writing under `privacy` (see the field).
    #[must_use]
    pub fn with_privacy(mut self, privacy: Option<Privacy>) -> Self {
        self.privacy = privacy;
        self
    }

    /// The unit key as file names show it.
    fn file_key<'a>(&self, key: &'a str) -> Cow<'a, str> {
        match &self.privacy {
            Some(p) => p.file_key(key),
            None => Cow::Borrowed(key),
        }
    }

    fn unit(&mut self) -> Result<&mut OpenUnit, SinkError> {
        self.unit
            .as_mut()
            .ok_or_else(|| SinkError::Crashed("rows arrived outside a unit".into()))
    }

    /// Routes one date's rows: straight to the partition's file, or, for a Parquet unit whose
    /// window spans several days, into the partition's pending rows (see
    /// [`MAX_PENDING_BYTES`]).
    fn write_day(&mut self, day: i64, batch: RecordBatch) -> Result<(), SinkError> {
        let (out_dir, run8, enc, target) = (
            &self.spec.out_dir,
            &self.run8,
            &self.spec.encoding,
            self.spec.target_file_bytes,
        );
        let limit = self.pending_limit;
        let unit = self.unit.as_mut().expect("checked by write()");
        let info = &unit.info;
        let file_key = match &self.privacy {
            Some(p) => p.file_key(&info.key.0),
            None => Cow::Borrowed(info.key.0.as_str()),
        };
        let part = unit.parts.entry(day).or_insert_with(|| DayPart {
            writer: RotatingWriter::new(
                out_dir,
                format!("messages/date={}", date_string(day * DAY_MS)),
                format!("part-{file_key}-{:05}", info.first_cell),
                run8,
                enc,
                batch.schema(),
                target,
            ),
            pending: Vec::new(),
            pending_bytes: 0,
        });
        if !unit.multi_day {
            return part.writer.write(&batch);
        }
        let bytes = batch.get_array_memory_size();
        part.pending.push(batch);
        part.pending_bytes += bytes;
        unit.pending_bytes += bytes;
        while unit.pending_bytes > limit {
            let largest = unit
                .parts
                .iter()
                .max_by_key(|(_, p)| p.pending_bytes)
                .map(|(d, _)| *d)
                .expect("pending rows are in some partition");
            drain(unit, largest)?;
        }
        Ok(())
    }

    /// Closes the unit's files: pending rows written, every writer finished.
    fn close_files(&mut self) -> Result<Vec<(i64, StagedFile)>, SinkError> {
        let unit = self.unit.as_mut().expect("checked by commit()");
        let waiting: Vec<i64> = unit
            .parts
            .iter()
            .filter(|(_, p)| !p.pending.is_empty())
            .map(|(d, _)| *d)
            .collect();
        for day in waiting {
            drain(unit, day)?;
        }
        let mut staged = Vec::new();
        for (day, p) in std::mem::take(&mut unit.parts) {
            staged.extend(p.writer.finish()?.into_iter().map(|f| (day, f)));
        }
        Ok(staged)
    }

    /// Stages the dead-letter file of a commit (fsynced).
    fn stage_dead(&self, info: &UnitInfo, dead: &DeadLetters) -> Result<StagedFile, SinkError> {
        let stem = format!("part-{}-{:05}", self.file_key(&info.key.0), info.first_cell);
        let staged = format!("_dead_letter/.{stem}.jsonl.{}{STAGED_SUFFIX}", self.run8);
        write_file(&self.spec.out_dir.join(&staged), &dead.lines)?;
        Ok(StagedFile {
            staged,
            path: format!("_dead_letter/{stem}.jsonl"),
            rows: dead.rows,
            bytes: dead.lines.len() as u64,
        })
    }

    /// Takes the rows the commit re-exports out of the output's earlier files.
    fn replace_earlier(
        &mut self,
        info: &UnitInfo,
        bounds: &Bounds,
        cells: &[CellRef],
    ) -> Result<Replacement, SinkError> {
        let (b, state) = (bounds, &self.state);
        let mut candidates = state.overlapping_files(
            "messages",
            b.span.start_ms,
            b.span.end_ms,
            &b.min_user,
            &b.max_user,
        )?;
        candidates.extend(state.overlapping_files(
            "dead_letter",
            b.span.start_ms,
            b.span.end_ms,
            &b.min_user,
            &b.max_user,
        )?);
        // Rows carry the users as the output writes them (pseudonymized or not).
        let keys: Vec<Cow<'_, str>> = cells
            .iter()
            .map(|c| match &self.privacy {
                Some(p) => p.user_key(&c.user),
                None => Cow::Borrowed(c.user.as_ref()),
            })
            .collect();
        let cell_map: CellMap<'_> = keys
            .iter()
            .zip(cells)
            .map(|(k, c)| (k.as_ref(), c.window))
            .collect();
        let file_key = self.file_key(&info.key.0);
        let same_unit = |f: &FileRecord| {
            !f.unit_key.starts_with("remnant:")
                && f.unit_key == info.key.0
                && f.cells_from >= info.first_cell
                && f.cells_to <= b.cells_to
        };
        let run8 = &self.run8;
        let mut n = 0u32;
        supersede::replace(
            &self.spec.out_dir,
            &self.spec.encoding,
            candidates,
            &cell_map,
            same_unit,
            |f| {
                n += 1;
                let (dir, name) = f.path.rsplit_once('/').unwrap_or(("", ""));
                let ext = name.split_once('.').map_or("", |(_, e)| e);
                let stem = format!("part-{file_key}-{:05}-r{run8}{n:02}", info.first_cell);
                (
                    format!("{dir}/.{stem}.{ext}.{run8}{STAGED_SUFFIX}"),
                    format!("{dir}/{stem}.{ext}"),
                )
            },
        )
    }
}

impl FilesSink {
    /// Closes the unit's files, stages its dead letters and remnants, and commits them.
    fn stage_and_commit(
        &mut self,
        cells_done: u32,
        dead: DeadLetters,
    ) -> Result<Committed, SinkError> {
        let info = self.unit()?.info.clone();
        let messages = self.close_files()?;
        let done = (cells_done as usize).min(info.cells.len());
        if done == 0 {
            for (_, f) in &messages {
                let _ = std::fs::remove_file(self.spec.out_dir.join(&f.staged));
            }
            return Ok(Committed::default());
        }
        let cells = &info.cells[..done];
        let bounds = Bounds::of(&info, cells);
        let mut adds: Vec<(StagedFile, FileRecord)> = messages
            .into_iter()
            .map(|(day, f)| {
                let rec = bounds.record(&info, &f, "messages", Some(day));
                (f, rec)
            })
            .collect();
        let rows = adds.iter().map(|(f, _)| f.rows).sum();
        if !dead.is_empty() {
            let f = self.stage_dead(&info, &dead)?;
            let rec = bounds.record(&info, &f, "dead_letter", None);
            adds.push((f, rec));
        }
        let replacement = self.replace_earlier(&info, &bounds, cells)?;
        let mut plan = CommitPlan::default();
        for (f, rec) in &adds {
            plan.adds.push((f.staged.clone(), f.path.clone()));
            plan.records.push(rec.clone());
        }
        for (staged, rec) in &replacement.remnants {
            plan.adds.push((staged.clone(), rec.path.clone()));
            plan.records.push(rec.clone());
        }
        plan.removes = replacement.removes.clone();
        plan.unit_progress = Some((info.key.0.clone(), bounds.cells_to));
        if let Some(ns) = &self.watermarks {
            plan.watermarks = watermark_moves(ns, cells);
        }
        fail::fail_point!("files::before_journal", |_| crate::hooks::crash(
            "before journaling a commit"
        ));
        fail::fail_point!("files::disk_full", |_| Err(SinkError::Io {
            action: "writing",
            path: self.spec.out_dir.join("messages"),
            source: std::io::Error::from_raw_os_error(28),
        }));
        sync_parents(
            &self.spec.out_dir,
            plan.adds.iter().map(|(s, _)| s.as_str()),
        )?;
        self.state.commit(
            &self.run_id,
            &plan,
            &self.spec.out_dir,
            crate::time::now_ms(),
        )?;
        Ok(Committed {
            rows,
            rejects: dead.rows,
            files: plan
                .records
                .iter()
                .map(|r| WrittenFile {
                    path: r.path.clone(),
                    bytes: r.bytes,
                })
                .collect(),
            files_replaced: replacement.removes.len() as u64,
            rows_replaced: replacement.rows_removed,
        })
    }
}

/// The users, user range and time span of the cells a commit covers.
struct Bounds {
    min_user: String,
    max_user: String,
    span: Window,
    cells_to: u32,
}

impl Bounds {
    fn of(info: &UnitInfo, cells: &[CellRef]) -> Self {
        let users = || cells.iter().map(|c| c.user.as_ref());
        Bounds {
            min_user: users().min().unwrap_or("").to_owned(),
            max_user: users().max().unwrap_or("").to_owned(),
            span: Window {
                start_ms: cells.iter().map(|c| c.window.start_ms).min().unwrap_or(0),
                end_ms: cells.iter().map(|c| c.window.end_ms).max().unwrap_or(0),
            },
            cells_to: info.first_cell + cells.len() as u32,
        }
    }

    /// The ledger record of a staged file of `stream` (`day` for a messages partition).
    fn record(
        &self,
        info: &UnitInfo,
        f: &StagedFile,
        stream: &str,
        day: Option<i64>,
    ) -> FileRecord {
        let (min_ms, max_ms) = match day {
            Some(d) => (
                (d * DAY_MS).max(self.span.start_ms),
                ((d + 1) * DAY_MS).min(self.span.end_ms),
            ),
            None => (self.span.start_ms, self.span.end_ms),
        };
        FileRecord {
            path: f.path.clone(),
            stream: stream.into(),
            unit_key: info.key.0.clone(),
            cells_from: info.first_cell,
            cells_to: self.cells_to,
            min_user: self.min_user.clone(),
            max_user: self.max_user.clone(),
            min_ms,
            max_ms,
            rows: f.rows,
            bytes: f.bytes,
        }
    }
}

/// Writes a partition's pending rows as one row group (or more, past the row-group size) and
/// ends it, so that no row group stays open in memory.
fn drain(unit: &mut OpenUnit, day: i64) -> Result<(), SinkError> {
    let part = unit.parts.get_mut(&day).expect("a partition with rows");
    unit.pending_bytes -= std::mem::take(&mut part.pending_bytes);
    for b in std::mem::take(&mut part.pending) {
        part.writer.write(&b)?;
    }
    part.writer.flush_row_group()
}

/// Splits a batch by the UTC date of `sent_at`, in date order.
fn by_day(batch: RecordBatch) -> Result<Vec<(i64, RecordBatch)>, SinkError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    let sent = batch
        .column_by_name(schema::SENT_AT)
        .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
        .ok_or_else(|| SinkError::Crashed("batch without sent_at".into()))?;
    let first_day = crate::time::day_of(sent.value(0));
    if sent
        .values()
        .iter()
        .all(|&t| crate::time::day_of(t) == first_day)
    {
        return Ok(vec![(first_day, batch)]);
    }
    let mut days: Vec<i64> = sent
        .values()
        .iter()
        .map(|&t| crate::time::day_of(t))
        .collect();
    days.sort_unstable();
    days.dedup();
    days.into_iter()
        .map(|day| {
            let mask: arrow_array::BooleanArray = sent
                .values()
                .iter()
                .map(|&t| Some(crate::time::day_of(t) == day))
                .collect();
            arrow_select::filter::filter_record_batch(&batch, &mask)
                .map(|b| (day, b))
                .map_err(|e| SinkError::arrow(std::path::Path::new("messages"), e))
        })
        .collect()
}

impl Sink for FilesSink {
    fn begin_unit(&mut self, info: Arc<UnitInfo>) -> Result<(), SinkError> {
        self.abort();
        let multi_day = self.spec.encoding.format == super::Format::Parquet
            && info.window.end_ms - info.window.start_ms > DAY_MS;
        self.unit = Some(OpenUnit {
            info,
            parts: BTreeMap::new(),
            pending_bytes: 0,
            multi_day,
        });
        Ok(())
    }

    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        self.unit()?;
        for (day, batch) in by_day(rows)? {
            self.write_day(day, batch)?;
        }
        Ok(())
    }

    fn commit(&mut self, cells_done: u32, dead: DeadLetters) -> Result<Committed, SinkError> {
        let result = self.stage_and_commit(cells_done, dead);
        if result.is_err() {
            // Nothing was journaled (or the journal's recovery keeps what it refers to): the
            // unit's staged files go, so a failed run (a full disk) leaves no `.tmp` behind.
            let _ = self.state.recover(&self.spec.out_dir);
        }
        self.unit = None;
        result
    }

    fn abort(&mut self) {
        if let Some(unit) = self.unit.take() {
            for (_, p) in unit.parts {
                p.writer.discard();
            }
        }
    }

    fn write_users(
        &mut self,
        users: &[User],
        cx: &RowContext,
    ) -> Result<Option<(WrittenFile, u64)>, SinkError> {
        let to = super::users_table::Target {
            out_dir: &self.spec.out_dir,
            encoding: &self.spec.encoding,
            run_id: &self.run_id,
            run8: &self.run8,
            privacy: self.privacy.as_ref(),
        };
        super::users_table::write(&mut self.state, &to, users, cx)
    }

    fn finish(self: Box<Self>) -> SinkEnd {
        SinkEnd {
            crm: None,
            state: Some(self.state),
            rows_uncommitted: 0,
        }
    }
}
