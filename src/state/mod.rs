//! The state store: one SQLite database per output (or per `state_dir`).
//!
//! It holds, in one place and under one transaction per commit:
//! - `files`: every data file the output has (path relative to the output directory, stream,
//!   the unit and cell range that wrote it, user and time bounds, rows, bytes, and the
//!   checksum of its bytes ([`checksum`]); NULL for files recorded before the column existed);
//! - `commits`: the journal of multi-file commits. A commit is first recorded `pending`
//!   together with its effect on `files`, `run_units` and `watermarks`; then its staged files
//!   are renamed into place and the files it replaces are deleted; then it is marked done.
//!   [`StateStore::recover`] finishes any pending commit (roll forward), so a crash at any
//!   point leaves either the old or the new set of files once the next run starts, and the
//!   state never claims data that is not in place;
//! - `runs` / `run_units`: run history with reports, and which units (and how many of their
//!   cells) each run committed, for resume;
//! - `watermarks`: per (namespace, user) the exported range `[start_ms, end_ms)` (incremental
//!   runs), with the value before the current run so a resumed run plans the same cells;
//! - `users`: the users exported to this output (the `users` table is rewritten from it);
//! - `listed_users`: the users the run being prepared or walked listed (Users API or users
//!   file), streamed in as they are read, with the start of each one's range: the run walks
//!   them from here in id order, a page at a time, so no list of users is held in memory.
//!   It is replaced by the next run's listing; a successful run copies it into `users`.
//! - `remote_manifests` / `remote_removed`: for an output on object storage, the manifests
//!   applied locally and the paths they removed (`state/manifests.rs`).
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a committed transaction survives a crash
//! or power loss. A lock file keeps two runs from sharing a state directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{ExportedUser, User};
use crate::shard::Shard;

/// State store errors.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state store {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A file operation of a commit failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error(
        "another engati-etl run is using the state directory {0} (its lock file is held); wait for it to finish or use another --out / --state-dir"
    )]
    Locked(PathBuf),
    /// A pending commit refers to a staged file that is gone.
    #[error(
        "state store {db}: commit {commit} staged {path} but the file is gone; the output may have been modified by hand. Remove the output directory (or `engati-etl state reset`) and export again"
    )]
    LostStagedFile {
        /// The database.
        db: PathBuf,
        /// Commit id.
        commit: i64,
        /// The missing file.
        path: PathBuf,
    },
    /// A sharded run's state directory is its shard's alone (its recovery only cleans its own
    /// shard's staged files): a store used by another shard, or by an unsharded run, is refused.
    #[error(
        "state directory {path} belongs to {found}, not to {wanted}; each shard keeps its own state (the default is OUT/_state/s<I>of<N>): use another --state-dir"
    )]
    Shard {
        /// The state directory.
        path: PathBuf,
        /// Whose it is (`shard 1/4`, `an unsharded run`).
        found: String,
        /// Who asked.
        wanted: String,
    },
    /// The database was written by a newer version.
    #[error(
        "state store {path} has schema version {found}; this engati-etl understands up to {supported}"
    )]
    Version {
        /// The database.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
}

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
  path TEXT PRIMARY KEY,
  stream TEXT NOT NULL,
  unit_key TEXT NOT NULL,
  cells_from INTEGER NOT NULL,
  cells_to INTEGER NOT NULL,
  min_user TEXT NOT NULL,
  max_user TEXT NOT NULL,
  min_ms INTEGER NOT NULL,
  max_ms INTEGER NOT NULL,
  rows INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  run_id TEXT NOT NULL,
  commit_id INTEGER NOT NULL,
  checksum TEXT);
CREATE INDEX IF NOT EXISTS files_by_time ON files(stream, min_ms);
CREATE TABLE IF NOT EXISTS commits(
  id INTEGER PRIMARY KEY,
  run_id TEXT NOT NULL,
  state TEXT NOT NULL,
  plan TEXT NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs(
  run_id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  params_hash TEXT NOT NULL,
  params TEXT NOT NULL,
  until_ms INTEGER,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  status TEXT NOT NULL,
  report TEXT);
CREATE INDEX IF NOT EXISTS runs_by_ns ON runs(namespace, started_ms);
CREATE TABLE IF NOT EXISTS run_units(
  run_id TEXT NOT NULL,
  unit_key TEXT NOT NULL,
  cells_done INTEGER NOT NULL,
  PRIMARY KEY(run_id, unit_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks(
  namespace TEXT NOT NULL,
  user TEXT NOT NULL,
  start_ms INTEGER NOT NULL,
  end_ms INTEGER NOT NULL,
  run_id TEXT,
  end_before_run INTEGER,
  PRIMARY KEY(namespace, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users(
  user TEXT PRIMARY KEY,
  channel TEXT,
  user_name TEXT,
  attributes TEXT NOT NULL,
  matched_filters TEXT NOT NULL,
  run_id TEXT NOT NULL,
  extracted_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listed_users(
  user TEXT PRIMARY KEY,
  channel TEXT,
  user_name TEXT,
  attributes TEXT NOT NULL,
  matched_filters TEXT NOT NULL,
  from_ms INTEGER NOT NULL) WITHOUT ROWID;
";

/// A data file known to the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the output directory, `/`-separated.
    pub path: String,
    /// `messages`, `dead_letter` or `users`.
    pub stream: String,
    /// The unit that wrote it (`remnant:<unit>` for a rewritten remnant).
    pub unit_key: String,
    /// First cell index of the unit covered (inclusive).
    pub cells_from: u32,
    /// Last cell index covered (exclusive).
    pub cells_to: u32,
    /// Smallest `channel_user_id` in the file's cells.
    pub min_user: String,
    /// Largest `channel_user_id` in the file's cells.
    pub max_user: String,
    /// Start of the cells' time span, ms since epoch UTC (inclusive).
    pub min_ms: i64,
    /// End of the cells' time span (exclusive).
    pub max_ms: i64,
    /// Rows in the file.
    pub rows: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// xxh3-128 of the file's bytes, 32 hex digits ([`checksum`]); `None` for a file recorded
    /// by a version that kept none (and in manifests such a version wrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// A commit: files to put in place, files they replace, and the state that goes with them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitPlan {
    /// (staged path, final path), both relative to the output directory.
    pub adds: Vec<(String, String)>,
    /// Final paths removed (relative).
    pub removes: Vec<String>,
    /// Ledger rows for the added files (same order as `adds`).
    #[serde(skip)]
    pub records: Vec<FileRecord>,
    /// `(unit_key, cells_done)` to record for the run.
    #[serde(skip)]
    pub unit_progress: Option<(String, u32)>,
    /// Watermark moves: `(namespace, user, window)`.
    #[serde(skip)]
    pub watermarks: Vec<WatermarkMove>,
    /// For an output on object storage: the manifest that committed this plan, recorded as
    /// applied (and its removes as dead objects) in the same transaction.
    #[serde(skip)]
    pub manifest: Option<ManifestRef>,
}

/// A committed cell's effect on the incremental watermark of its user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkMove {
    /// Namespace (`incremental`).
    pub namespace: String,
    /// Channel-user id.
    pub user: String,
    /// The cell window, ms since epoch UTC.
    pub start_ms: i64,
    /// Its end (exclusive).
    pub end_ms: i64,
}

/// A row of the run history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Namespace (`export`, `range`, `incremental`, `backfill`).
    pub namespace: String,
    /// Start, ms since epoch UTC.
    pub started_ms: i64,
    /// End, when finished.
    pub finished_ms: Option<i64>,
    /// `running`, `succeeded`, `completed_with_rejects`, `interrupted`, `failed`.
    pub status: String,
    /// The run report (JSON), when finished.
    pub report: Option<String>,
}

/// A run being started or resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The run id (the old one when resumed).
    pub run_id: String,
    /// True when an unfinished run with the same parameters is continued.
    pub resumed: bool,
}

/// The open store.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// The shard whose store this is (from `meta`), if sharded: recovery removes only the
    /// staged files that carry its tag.
    shard: Option<Shard>,
    /// The lock file, held for the store's life (none when opened read-only).
    _lock: Option<File>,
    /// The `files` table has the `checksum` column (always, once opened for writing; a store
    /// an older version created and nothing migrated yet, opened read-only, has not).
    has_checksum: bool,
}

/// Maps a SQLite error to [`StateError::Sqlite`] naming the store's file.
pub mod checksum;
mod files;
mod journal;
mod manifests;
mod runs;
mod users;
mod watermarks;

pub use files::{LedgerFile, StreamStats};
pub use manifests::{
    MANIFEST_VERSION, MANIFESTS_DIR, Manifest, ManifestKind, ManifestRef, RunMeta, UnitProgress,
    manifest_path, namespace_key, parse_manifest_path,
};
pub use users::{LISTING_BATCH, ListedReader, ListedRow, ListedStats};
pub use watermarks::{UserWatermark, WatermarkSummary};

pub(crate) fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> StateError + Copy + '_ {
    move |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

impl StateStore {
    /// Opens (creating) the store in `dir` (`dir/state.sqlite3`, lock `dir/lock`).
    ///
    /// # Errors
    /// [`StateError::Locked`] when another run holds it; I/O or SQLite errors.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            action: "creating state directory",
            path: dir.to_owned(),
            source,
        })?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::Io {
                action: "opening lock file",
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StateError::Io {
                    action: "locking",
                    path: lock_path,
                    source,
                });
            }
        }
        let path = dir.join("state.sqlite3");
        let conn = Connection::open(&path).map_err(sql(&path))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA busy_timeout=5000; PRAGMA cache_size=-32768;",
        )
        .map_err(sql(&path))?;
        conn.execute_batch(SCHEMA).map_err(sql(&path))?;
        conn.execute_batch(manifests::SCHEMA).map_err(sql(&path))?;
        migrate_files_checksum(&conn).map_err(sql(&path))?;
        let version: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key='schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(sql(&path))?
            .and_then(|v| v.parse().ok());
        match version {
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(sql(&path))?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::Version {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(_) => {}
        }
        let mut st = StateStore {
            conn,
            path,
            shard: None,
            _lock: Some(lock),
            has_checksum: true,
        };
        st.shard = st.meta("shard")?.and_then(|t| Shard::tag_in(&t));
        Ok(st)
    }

    /// Opens the store read-only, without the lock: what `state show` does while a run holds
    /// it (SQLite's WAL lets readers in beside the writer). Nothing may be written through it.
    ///
    /// # Errors
    /// SQLite errors (e.g. no database in `dir`).
    pub fn open_read_only(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("state.sqlite3");
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(&path))?;
        conn.execute_batch("PRAGMA busy_timeout=5000;")
            .map_err(sql(&path))?;
        let has_checksum = has_column(&conn, "files", "checksum").map_err(sql(&path))?;
        Ok(StateStore {
            conn,
            path,
            shard: None,
            _lock: None,
            has_checksum,
        })
    }

    /// Claims the store for `shard` (`None`: an unsharded run): a new store is marked with the
    /// shard; a store marked for another shard, or used by an unsharded run before, is refused.
    ///
    /// # Errors
    /// [`StateError::Shard`]; SQLite errors.
    pub fn claim_shard(&mut self, shard: Option<Shard>) -> Result<(), StateError> {
        let who = |s: Option<Shard>| match s {
            Some(s) => format!("shard {s}"),
            None => "an unsharded run".to_owned(),
        };
        let used: bool = self
            .conn
            .query_row("SELECT EXISTS(SELECT 1 FROM runs)", [], |r| r.get(0))
            .map_err(sql(&self.path))?;
        let owner = match (self.shard, used) {
            (Some(s), _) => Some(Some(s)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        match owner {
            Some(o) if o != shard => Err(StateError::Shard {
                path: self.path.parent().unwrap_or(&self.path).to_owned(),
                found: who(o),
                wanted: who(shard),
            }),
            _ => {
                if let Some(s) = shard {
                    self.set_meta("shard", &s.tag())?;
                }
                self.shard = shard;
                Ok(())
            }
        }
    }

    /// The shard whose store this is, if sharded.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// True when this handle holds the lock (no other run is using the store).
    pub fn holds_lock(&self) -> bool {
        self._lock.is_some()
    }

    /// The SQLite connection, for modules that keep their own tables in the store (the CRM
    /// ledger, which creates its own tables next to its queries).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `meta` value.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
            .optional()
            .map_err(sql(&self.path))
    }

    /// Sets a `meta` value.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [key, value],
            )
            .map(|_| ())
            .map_err(sql(&self.path))
    }
}

/// True when `table` has `column`.
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = st.query_map([], |r| r.get::<_, String>(1))?;
    for n in names {
        if n? == column {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Gives a store created before the ledger kept checksums its `files.checksum` column (NULL
/// for the files already recorded: `verify` counts them as not checked). The column is
/// additive and every insert names its columns, so the schema version stays 1: an older
/// engati-etl can still open the store (the files it records get no checksum).
fn migrate_files_checksum(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "files", "checksum")? {
        conn.execute_batch("ALTER TABLE files ADD COLUMN checksum TEXT")?;
    }
    Ok(())
}

/// fsyncs a directory so renames and deletions in it are durable.
///
/// # Errors
/// [`StateError::Io`].
pub fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            action: "syncing directory",
            path: dir.to_owned(),
            source,
        })
}

/// Staged files end with this suffix and start with a dot (hidden from `*.parquet` /
/// `*.jsonl*` globs and from Spark/Hive, which skip `.` and `_` names).
pub const STAGED_SUFFIX: &str = ".tmp";

#[cfg(test)]
mod tests;
