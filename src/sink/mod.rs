//! Sinks: where normalized rows go, committed atomically.
//!
//! A sink runs on its own thread (encoding and file I/O stay off the async executor) and is
//! driven by [`SinkMsg`]s in plan order: `BeginUnit`, the unit's pages, `EndUnit` (commit) or
//! `AbortUnit`, and finally `WriteUsers`. The file sink ([`files`]) writes Hive-partitioned
//! Parquet or JSONL under staged names, replaces re-exported rows ([`supersede`]) and commits
//! each unit through the state store's journal; [`stdout`] streams JSONL to standard output.

pub mod crm;
pub mod dead_letter;
pub mod files;
pub mod part;
pub mod stdout;
pub mod supersede;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use serde::Serialize;

pub use part::{Encoding, Format};

use crate::model::User;
use crate::model::Window;
use crate::normalize::Reject;
use crate::plan::UnitKey;
use crate::schema::RowContext;
use crate::state::{StateError, WatermarkMove};

/// Sink failures (exit code 6).
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
    /// Standard output was closed (e.g. piped into `head`).
    #[error("standard output was closed")]
    OutputClosed,
    /// The sink thread stopped unexpectedly.
    #[error("the sink stopped unexpectedly: {0}")]
    Crashed(String),
    /// The CRM (auth: exit 3; unavailable: exit 5).
    #[error(transparent)]
    Crm(#[from] crm::http::CrmError),
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

/// Messages to a sink, in plan order.
#[derive(Debug)]
pub enum SinkMsg {
    /// A unit starts.
    BeginUnit(Arc<UnitInfo>),
    /// Normalized rows of the unit (possibly of several cells), and rejected messages of
    /// cell `cell` (index into `UnitInfo::cells`).
    Page {
        /// Cell of the rejects.
        cell: u32,
        /// Normalized rows (`messages` schema), in plan order.
        rows: Option<RecordBatch>,
        /// Rejected messages of `cell`.
        rejects: Vec<Reject>,
    },
    /// Commit the first `cells_done` cells of the unit (all of it, or fewer when stopping).
    EndUnit {
        /// Cells consumed, from `cells[0]`.
        cells_done: u32,
    },
    /// Drop what the unit wrote (a cell failed).
    AbortUnit,
    /// Record these users and rewrite the `users` table.
    WriteUsers {
        /// The run's users.
        users: Arc<Vec<User>>,
        /// Shared column values.
        cx: RowContext,
    },
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

/// The watermark moves of committed cells: each cell's user has exported its window.
fn watermark_moves(namespace: &str, cells: &[CellRef]) -> Vec<WatermarkMove> {
    cells
        .iter()
        .map(|c| WatermarkMove {
            namespace: namespace.to_owned(),
            user: c.user.to_string(),
            start_ms: c.window.start_ms,
            end_ms: c.window.end_ms,
        })
        .collect()
}

/// Writes a whole staged file (creating its directory) and fsyncs it.
fn write_file(path: &Path, data: &[u8]) -> Result<(), SinkError> {
    use std::io::Write;
    let io = |action, source| SinkError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating directory", e))?;
    }
    let mut f = std::fs::File::create(path).map_err(|e| io("creating", e))?;
    f.write_all(data).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))
}

/// Fsyncs the directories of `paths` (relative to `out_dir`), each once: staged files' entries
/// must be durable before the journal refers to them.
fn sync_parents<'a>(out_dir: &Path, paths: impl Iterator<Item = &'a str>) -> Result<(), SinkError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        if let Some(d) = out_dir.join(p).parent()
            && !dirs.iter().any(|x| x == d)
        {
            dirs.push(d.to_owned());
        }
    }
    for d in dirs {
        crate::state::sync_dir(&d)?;
    }
    Ok(())
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
