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

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::durable::{sync_parents, write_file};
use super::part::Encoding;
use super::partitions::{DayPartitions, Layout};
use super::rotating::StagedFile;
use super::supersede::{self, CellMap, Replacement};
use super::{
    CellRef, Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo, WrittenFile,
    watermark_moves,
};
use crate::model::{User, Window};
use crate::schema::{RowContext, messages_schema};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore};
use crate::time::DAY_MS;

pub use super::partitions::MAX_PENDING_BYTES;

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
}

struct OpenUnit {
    info: Arc<UnitInfo>,
    parts: DayPartitions,
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
        }
    }

    fn unit(&mut self) -> Result<&mut OpenUnit, SinkError> {
        self.unit
            .as_mut()
            .ok_or_else(|| SinkError::Crashed("rows arrived outside a unit".into()))
    }

    /// Stages the dead-letter file of a commit (fsynced).
    fn stage_dead(&self, info: &UnitInfo, dead: &DeadLetters) -> Result<StagedFile, SinkError> {
        let stem = format!("part-{}-{:05}", info.key.0, info.first_cell);
        let staged = format!("_dead_letter/.{stem}.jsonl.{}{STAGED_SUFFIX}", self.run8);
        write_file(&self.spec.out_dir.join(&staged), &dead.lines)?;
        Ok(StagedFile {
            staged,
            path: format!("_dead_letter/{stem}.jsonl"),
            rows: dead.rows,
            bytes: dead.lines.len() as u64,
            bounds: None,
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
        let cell_map: CellMap<'_> = cells.iter().map(|c| (c.user.as_ref(), c.window)).collect();
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
                let stem = format!("part-{}-{:05}-r{run8}{n:02}", info.key.0, info.first_cell);
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
        let unit = self
            .unit
            .take()
            .ok_or_else(|| SinkError::Crashed("EndUnit outside a unit".into()))?;
        let info = unit.info;
        let messages = unit.parts.finish()?;
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
            plan.watermarks = watermark_moves(ns, cells, &dead.unreadable);
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

impl Sink for FilesSink {
    fn begin_unit(&mut self, info: Arc<UnitInfo>) -> Result<(), SinkError> {
        self.abort();
        let layout = Layout {
            root: self.spec.out_dir.clone(),
            dir_prefix: "messages/date",
            stem: format!("part-{}-{:05}", info.key.0, info.first_cell),
            run8: self.run8.clone(),
            encoding: self.spec.encoding.clone(),
            schema: messages_schema(),
            target_bytes: self.spec.target_file_bytes,
            stats: false,
            transform: None,
        };
        let parts = DayPartitions::new(layout, info.window.end_ms - info.window.start_ms);
        self.unit = Some(OpenUnit { info, parts });
        Ok(())
    }

    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        self.unit()?.parts.write(rows)
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
            unit.parts.discard();
        }
    }

    fn write_users(
        &mut self,
        users: &[User],
        cx: &RowContext,
    ) -> Result<Option<(WrittenFile, u64)>, SinkError> {
        super::users_table::write(
            &mut self.state,
            &self.spec.out_dir,
            &self.spec.encoding,
            &self.run_id,
            &self.run8,
            users,
            cx,
        )
    }

    fn finish(self: Box<Self>) -> SinkEnd {
        SinkEnd {
            crm: None,
            state: Some(self.state),
            rows_uncommitted: 0,
        }
    }
}
