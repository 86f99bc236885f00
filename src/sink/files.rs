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
//!
//! On object storage (`FilesSpec::remote`) the same happens in a local mirror under the state
//! directory, and each commit is uploaded and committed by a manifest instead of renamed
//! ([`remote_files`](super::remote_files)); committed names then carry the commit's tag.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;

use super::durable::{sync_parents, write_file};
use super::part::Encoding;
use super::partitions::{DayPartitions, Layout};
use super::remote_files::RemoteFiles;
use super::rotating::StagedFile;
use super::supersede::{self, CellMap, Replacement};
use super::{
    CellRef, Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo, WrittenFile,
    watermark_moves,
};
use crate::model::Window;
use crate::privacy::Privacy;
use crate::schema::{RowContext, messages_schema};
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore, checksum};
use crate::time::DAY_MS;

pub use super::partitions::MAX_PENDING_BYTES;

/// The file output, validated (`config::sink`).
#[derive(Debug, Clone)]
pub struct FilesSpec {
    /// Output directory; for an output on object storage, the local mirror where files are
    /// written before upload (`<state_dir>/mirror`).
    pub out_dir: PathBuf,
    /// The output's URL when it is on object storage (`s3://bucket/prefix`, `gs://`, `az://`,
    /// `file://`): files are committed there by manifests ([`super::remote_files`]).
    pub remote: Option<String>,
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
    /// The object-store side, for an output on object storage (opened by [`Sink::start`]).
    remote: Option<RemoteFiles>,
    /// The privacy policy the rows were written under (the runner applies it to rows): re-exported
    /// rows are found by their pseudonymized ids, file names carry keyed hashes.
    privacy: Option<Privacy>,
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
            remote: None,
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

    /// Stages the dead-letter file of a commit (fsynced).
    fn stage_dead(
        &self,
        info: &UnitInfo,
        dead: &DeadLetters,
        tag: Option<&str>,
    ) -> Result<StagedFile, SinkError> {
        let stem = format!("part-{}-{:05}", self.file_key(&info.key.0), info.first_cell);
        let staged = format!("_dead_letter/.{stem}.jsonl.{}{STAGED_SUFFIX}", self.run8);
        write_file(&self.spec.out_dir.join(&staged), &dead.lines)?;
        Ok(StagedFile {
            staged,
            path: final_name(format!("_dead_letter/{stem}.jsonl"), tag),
            rows: dead.rows,
            bytes: dead.lines.len() as u64,
            checksum: checksum::of_bytes(&dead.lines),
            bounds: None,
        })
    }

    /// Takes the rows the commit re-exports out of the output's earlier files (on object
    /// storage, the files it must read are downloaded into the mirror first).
    fn replace_earlier(
        &mut self,
        info: &UnitInfo,
        bounds: &Bounds,
        cells: &[CellRef],
        tag: Option<&str>,
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
        if let Some(remote) = self.remote.as_mut() {
            remote.fetch(
                candidates
                    .iter()
                    .filter(|f| !same_unit(f))
                    .map(|f| f.path.as_str()),
            )?;
        }
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
                    final_name(format!("{dir}/{stem}.{ext}"), tag),
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
        let tag = self.remote.as_mut().map(RemoteFiles::next_tag);
        let tag = tag.as_deref();
        let cells = &info.cells[..done];
        let bounds = Bounds::of(&info, cells);
        let mut adds: Vec<(StagedFile, FileRecord)> = messages
            .into_iter()
            .map(|(day, mut f)| {
                f.path = final_name(std::mem::take(&mut f.path), tag);
                let rec = bounds.record(&info, &f, "messages", Some(day));
                (f, rec)
            })
            .collect();
        let rows = adds.iter().map(|(f, _)| f.rows).sum();
        if !dead.is_empty() {
            let f = self.stage_dead(&info, &dead, tag)?;
            let rec = bounds.record(&info, &f, "dead_letter", None);
            adds.push((f, rec));
        }
        let replacement = self.replace_earlier(&info, &bounds, cells, tag)?;
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
        let files = plan
            .records
            .iter()
            .map(|r| WrittenFile {
                path: r.path.clone(),
                bytes: r.bytes,
            })
            .collect();
        self.commit_plan(plan)?;
        Ok(Committed {
            rows,
            rejects: dead.rows,
            files,
            files_replaced: replacement.removes.len() as u64,
            rows_replaced: replacement.rows_removed,
        })
    }

    /// Makes a unit's plan durable: journaled and renamed into the output directory, or, on
    /// object storage, uploaded and committed by a manifest ([`RemoteFiles::publish`]).
    fn commit_plan(&mut self, plan: CommitPlan) -> Result<(), SinkError> {
        fail::fail_point!("files::before_journal", |_| crate::hooks::crash(
            "before journaling a commit"
        ));
        fail::fail_point!("files::disk_full", |_| Err(SinkError::Io {
            action: "writing",
            path: self.spec.out_dir.join("messages"),
            source: std::io::Error::from_raw_os_error(28),
        }));
        if let Some(remote) = self.remote.as_mut() {
            return remote.publish(&mut self.state, plan);
        }
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
        Ok(())
    }
}

/// A committed file's name: as staged for a local output; with the commit's `tag` for an
/// output on object storage (unique per commit: a committed object is never overwritten).
fn final_name(path: String, tag: Option<&str>) -> String {
    match tag {
        Some(t) => super::remote_files::tagged(&path, t),
        None => path,
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
            checksum: Some(f.checksum.clone()),
        }
    }
}

impl Sink for FilesSink {
    fn start(&mut self) -> Result<(), SinkError> {
        if let Some(url) = &self.spec.remote {
            let remote =
                RemoteFiles::start(url, &self.spec.out_dir, &mut self.state, &self.run_id)?;
            self.remote = Some(remote);
        }
        Ok(())
    }

    fn begin_unit(&mut self, info: Arc<UnitInfo>) -> Result<(), SinkError> {
        self.abort();
        let layout = Layout {
            root: self.spec.out_dir.clone(),
            dir_prefix: "messages/date",
            stem: format!("part-{}-{:05}", self.file_key(&info.key.0), info.first_cell),
            run8: self.run8.clone(),
            encoding: self.spec.encoding.clone(),
            schema: match &self.privacy {
                Some(p) => p.schema(&messages_schema()),
                None => messages_schema(),
            },
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
        if let Some(remote) = self.remote.as_mut() {
            remote.evict();
        }
        self.unit = None;
        result
    }

    fn abort(&mut self) {
        if let Some(unit) = self.unit.take() {
            unit.parts.discard();
        }
    }

    fn write_users(&mut self, cx: &RowContext) -> Result<Option<(WrittenFile, u64)>, SinkError> {
        if let Some(remote) = self.remote.as_mut() {
            remote.restore_users(&mut self.state)?;
        }
        let to = super::users_table::Target {
            out_dir: &self.spec.out_dir,
            encoding: &self.spec.encoding,
            run_id: &self.run_id,
            run8: &self.run8,
            privacy: self.privacy.as_ref(),
        };
        super::users_table::write(&mut self.state, &to, cx, self.remote.as_mut())
    }

    fn finish(self: Box<Self>) -> SinkEnd {
        SinkEnd {
            crm: None,
            state: Some(self.state),
            rows_uncommitted: 0,
        }
    }
}
