//! Sinks: where normalized rows go, committed atomically.
//!
//! **The contract.** A sink implements [`Sink`]: a unit of work comes in
//! ([`Sink::begin_unit`]), its rows arrive in batches in plan order ([`Sink::write`]), and the
//! unit is committed ([`Sink::commit`]: the first `cells_done` cells and their dead letters
//! become durable together with the state's record of them) or aborted ([`Sink::abort`]).
//! [`runner::spawn`] drives any sink on its own thread (encoding, file and CRM I/O stay off
//! the async executor) from the pipeline's [`SinkMsg`]s, buffers each unit's dead letters,
//! keeps the counters and the [`SinkReport`]: a new sink is one file implementing the trait.
//!
//! The sinks: [`files`] (Hive-partitioned Parquet or JSONL through [`rotating`] writers,
//! re-exported rows replaced by [`supersede`], each unit committed through the state store's
//! journal), [`stdout`] (JSONL on standard output) and [`crm`] (transcripts on CRM contact
//! timelines).

pub mod crm;
pub mod dead_letter;
pub mod delta;
mod durable;
pub mod files;
pub mod part;
pub mod partitions;
pub mod remote_files;
mod remote_orphans;
pub mod remote_replay;
pub mod rotating;
pub mod runner;
pub mod stdout;
pub mod supersede;
mod users_table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use serde::Serialize;

pub use dead_letter::DeadLetters;
pub use part::{Encoding, Format};

use crate::model::Window;
use crate::normalize::Reject;
use crate::plan::UnitKey;
use crate::schema::RowContext;
use crate::state::{StateError, StateStore, WatermarkMove};
use files::FilesSpec;

/// Where rows go, validated (`config::sink`).
#[derive(Debug, Clone)]
pub enum OutputSpec {
    /// Files under a directory, with a state store.
    Files(files::FilesSpec),
    /// JSONL on stdout (no state).
    Stdout,
    /// A CRM (HubSpot or BottleCRM), with its ledger in the state store.
    Crm(crm::CrmSpec),
    /// A Delta Lake table (local or on object storage).
    Delta(delta::DeltaSpec),
}

impl OutputSpec {
    /// The local directory of the output (created before the run; the run report goes
    /// there): the output directory, a CRM's dead-letter directory, a local Delta table, or
    /// the state directory of an output on object storage.
    pub fn out_dir(&self) -> Option<&Path> {
        match self {
            OutputSpec::Files(f) if f.remote.is_some() => Some(&f.state_dir),
            OutputSpec::Files(f) => Some(&f.out_dir),
            OutputSpec::Crm(c) => Some(&c.out_dir),
            OutputSpec::Delta(d) if crate::storage::is_remote(&d.location) => Some(&d.state_dir),
            OutputSpec::Delta(d) => Some(Path::new(&d.location)),
            OutputSpec::Stdout => None,
        }
    }

    /// The state directory, if the output keeps state.
    pub fn state_dir(&self) -> Option<&Path> {
        match self {
            OutputSpec::Files(f) => Some(&f.state_dir),
            OutputSpec::Crm(c) => Some(&c.state_dir),
            OutputSpec::Delta(d) => Some(&d.state_dir),
            OutputSpec::Stdout => None,
        }
    }

    /// Where the output is, as the user named it (a directory, a URL, `-`).
    pub fn location(&self) -> String {
        match self {
            OutputSpec::Delta(d) => d.location.clone(),
            OutputSpec::Files(FilesSpec {
                remote: Some(url), ..
            }) => url.clone(),
            _ => self
                .out_dir()
                .map_or_else(|| "-".into(), |p| p.display().to_string()),
        }
    }

    /// `parquet`, `jsonl`, `jsonl.gz`, `delta` or `crm:<crm>` (reports).
    pub fn format_label(&self) -> String {
        match self {
            OutputSpec::Crm(c) => format!("crm:{}", c.kind.as_str()),
            _ => self.format_key().into(),
        }
    }

    /// The name that identifies the output format in a run's resume parameters.
    pub fn format_key(&self) -> &'static str {
        match self {
            OutputSpec::Files(f) => f.encoding.extension(),
            OutputSpec::Stdout => "jsonl",
            OutputSpec::Crm(c) => c.kind.as_str(),
            OutputSpec::Delta(_) => "delta",
        }
    }
}

/// Sink failures (exit code 6, except where noted).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// File I/O.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Parquet encoding or decoding.
    #[error("parquet {path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The error.
        source: parquet::errors::ParquetError,
    },
    /// Arrow / JSON encoding.
    #[error("encoding {path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The error.
        source: arrow_schema::ArrowError,
    },
    /// The state store.
    #[error(transparent)]
    State(#[from] StateError),
    /// A file in the output that this tool cannot read back (edited by hand or corrupt).
    #[error(
        "{0} is not a file engati-etl can read back (edited by hand, or corrupt); move it out of the output directory and run again"
    )]
    Foreign(PathBuf),
    /// Standard output was closed (e.g. piped into `head`): exit 0.
    #[error("standard output was closed")]
    OutputClosed,
    /// The sink thread stopped unexpectedly.
    #[error("the sink stopped unexpectedly: {0}")]
    Crashed(String),
    /// The CRM (auth: exit 3; unavailable: exit 5).
    #[error(transparent)]
    Crm(#[from] crm::http::CrmError),
    /// An object store (an output on `s3://`, `gs://`, `az://`, `file://`).
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Another worker committed to the same output and state namespace first: its manifest
    /// took the sequence number this worker's conditional create asked for (exit 7).
    #[error(
        "another worker is committing to {output} in state namespace `{namespace}` (manifest {manifest} was written by someone else first); run one worker per shard/namespace. This worker stopped: its uploads since its last commit are orphans, deleted by the next run's start"
    )]
    AnotherWorker {
        /// The output's URL.
        output: String,
        /// The state namespace.
        namespace: String,
        /// The manifest object that was already there.
        manifest: String,
    },
}

impl SinkError {
    fn parquet(path: &Path, source: parquet::errors::ParquetError) -> Self {
        SinkError::Parquet {
            path: path.to_owned(),
            source,
        }
    }
    fn arrow(path: &Path, source: arrow_schema::ArrowError) -> Self {
        SinkError::Arrow {
            path: path.to_owned(),
            source,
        }
    }
}

/// One cell of a unit, as the sink needs it.
#[derive(Debug, Clone)]
pub struct CellRef {
    /// Channel-user id.
    pub user: Arc<str>,
    /// The user's channel, when known (the `channel` column).
    pub channel: Option<Arc<str>>,
    /// The cell window.
    pub window: Window,
}

/// The unit being written.
#[derive(Debug, Clone)]
pub struct UnitInfo {
    /// Its key (names the files).
    pub key: UnitKey,
    /// Its grid window.
    pub window: Window,
    /// Index of `cells[0]` among the unit's planned cells (non-zero when resuming a unit).
    pub first_cell: u32,
    /// The cells to write, in order.
    pub cells: Vec<CellRef>,
}

/// Messages to a sink's runner, in plan order.
#[derive(Debug)]
pub enum SinkMsg {
    /// A unit starts.
    BeginUnit(Arc<UnitInfo>),
    /// Normalized rows of the open unit (`messages` schema; possibly of several cells).
    Rows(RecordBatch),
    /// Messages of cell `cell` (index into `UnitInfo::cells`) that could not be normalized.
    Rejects {
        /// The cell.
        cell: u32,
        /// The rejected messages.
        rejects: Vec<Reject>,
    },
    /// Cell `cell` (index into `UnitInfo::cells`) could not be read consistently (its pages
    /// kept shifting): it has no rows; a dead-letter record says why, and its watermark does
    /// not move.
    UnreadableCell {
        /// The cell.
        cell: u32,
        /// Why.
        reason: String,
    },
    /// Commit the first `cells_done` cells of the unit (all of it, or fewer when stopping).
    EndUnit {
        /// Cells consumed, from `cells[0]`.
        cells_done: u32,
    },
    /// Drop what the unit wrote (a cell failed).
    AbortUnit,
    /// Record the run's users (after the last unit): the users it listed, read from the
    /// state store.
    WriteUsers {
        /// Shared column values.
        cx: RowContext,
    },
}

/// A file a commit put in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// Size, bytes.
    pub bytes: u64,
}

/// What a unit commit made durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Message rows delivered.
    pub rows: u64,
    /// Dead-letter records written (the pipeline's rejects and the sink's own refusals).
    pub rejects: u64,
    /// Files put in place.
    pub files: Vec<WrittenFile>,
    /// Files of earlier runs removed or rewritten because their rows were re-exported.
    pub files_replaced: u64,
    /// Rows of earlier runs taken out.
    pub rows_replaced: u64,
}

/// What a sink hands back when it ends.
#[derive(Default)]
pub struct SinkEnd {
    /// The CRM section of the report (CRM sinks only).
    pub crm: Option<crm::CrmReport>,
    /// The state store, handed back to the pipeline to record the run.
    pub state: Option<StateStore>,
    /// Rows delivered that no commit counted (stdout: lines written before the pipe closed).
    pub rows_uncommitted: u64,
}

/// A sink: one unit at a time, rows in batches, commit or abort, an outcome at the end. Called
/// on the sink's own thread by [`runner::spawn`], in plan order.
pub trait Sink: Send + 'static {
    /// Called once on the sink's thread before the first message (open connections, resolve
    /// what an interrupted run left pending).
    ///
    /// # Errors
    /// [`SinkError`] when the sink cannot start.
    fn start(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// A unit starts (the previous one was committed or aborted).
    ///
    /// # Errors
    /// [`SinkError`] when the sink cannot take it.
    fn begin_unit(&mut self, unit: Arc<UnitInfo>) -> Result<(), SinkError>;

    /// Rows of the open unit (`messages` schema), in plan order; never empty.
    ///
    /// # Errors
    /// [`SinkError`] for encoding or I/O failures.
    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError>;

    /// Makes the first `cells_done` cells of the open unit durable, with `dead` (the unit's
    /// dead-letter lines, to which the sink may add its own), atomically with the state's record
    /// of them. `cells_done` may be 0 (stopping before the first cell was finished).
    ///
    /// # Errors
    /// [`SinkError`]; what the unit staged is then discarded by [`abort`](Self::abort).
    fn commit(&mut self, cells_done: u32, dead: DeadLetters) -> Result<Committed, SinkError>;

    /// Drops what the open unit wrote (staged files are deleted).
    fn abort(&mut self);

    /// The run's users (those it listed, in the state store), after its last unit. Returns
    /// the users table file written, if any, and the number of users in it.
    ///
    /// # Errors
    /// [`SinkError`] for state or file failures.
    fn write_users(&mut self, _cx: &RowContext) -> Result<Option<(WrittenFile, u64)>, SinkError> {
        Ok(None)
    }

    /// Ends the sink.
    fn finish(self: Box<Self>) -> SinkEnd;
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Message rows committed.
    pub rows: AtomicU64,
    /// Cells committed.
    pub cells: AtomicU64,
    /// Rejects committed.
    pub rejects: AtomicU64,
}

impl SinkCounters {
    /// Adds what a unit commit made durable.
    pub fn committed(&self, rows: u64, cells: u64, rejects: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.cells.fetch_add(cells, Ordering::Relaxed);
        self.rejects.fetch_add(rejects, Ordering::Relaxed);
    }
}

/// The watermark moves of committed cells: each cell's user has exported its window, except
/// the cells at the indexes of `unreadable` (dead-lettered unread): they move nothing but
/// anchor a new user's watermark at their start, so a later cell cannot start it past them and
/// the next run reads them again.
fn watermark_moves(namespace: &str, cells: &[CellRef], unreadable: &[u32]) -> Vec<WatermarkMove> {
    cells
        .iter()
        .enumerate()
        .map(|(i, c)| WatermarkMove {
            namespace: namespace.to_owned(),
            user: c.user.to_string(),
            start_ms: c.window.start_ms,
            end_ms: if unreadable.contains(&(i as u32)) {
                c.window.start_ms
            } else {
                c.window.end_ms
            },
        })
        .collect()
}

/// The first 8 alphanumerics of a run id: the suffix of staged file names.
fn run8(run_id: &str) -> String {
    run_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

/// What a sink did, for the run report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SinkReport {
    /// Message rows written (committed).
    pub rows_written: u64,
    /// Dead-letter records written.
    pub rejects_written: u64,
    /// Data files put in place (messages, users, dead letters, remnants).
    pub files_written: u64,
    /// Their bytes.
    pub bytes_written: u64,
    /// Files of earlier runs removed or rewritten because their rows were re-exported.
    pub files_replaced: u64,
    /// Rows of earlier runs taken out (re-exported rows, so no duplicates).
    pub rows_replaced: u64,
    /// Units committed.
    pub units_committed: u64,
    /// Cells committed.
    pub cells_committed: u64,
    /// Users in the `users` table after the run.
    pub users_written: u64,
    /// Paths written (relative to the output), at most the first 1,000.
    pub files: Vec<String>,
    /// CRM counts (CRM sinks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crm: Option<crm::CrmReport>,
}

impl SinkReport {
    /// Adds a file put in place.
    fn add_file(&mut self, f: WrittenFile) {
        self.files_written += 1;
        self.bytes_written += f.bytes;
        if self.files.len() < 1000 {
            self.files.push(f.path);
        }
    }

    /// Adds a unit's commit of `cells` cells.
    fn add_commit(&mut self, c: Committed, cells: u64) {
        self.rows_written += c.rows;
        self.rejects_written += c.rejects;
        self.units_committed += 1;
        self.cells_committed += cells;
        self.files_replaced += c.files_replaced;
        self.rows_replaced += c.rows_replaced;
        for f in c.files {
            self.add_file(f);
        }
    }
}
