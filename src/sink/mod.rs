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
use std::sync::atomic::AtomicU64;

use arrow_array::RecordBatch;
use serde::Serialize;

pub use part::{Encoding, Format};

use crate::engati::users::UserSpec;
use crate::normalize::{Reject, Window};
use crate::plan::UnitKey;
use crate::schema::RowContext;
use crate::state::StateError;

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
        users: Arc<Vec<UserSpec>>,
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
