//! The state store: one SQLite database per output (or per `state_dir`).
//!
//! It holds, in one place and under one transaction per commit:
//! - `files`: every data file the output has (path relative to the output directory, stream,
//!   the unit and cell range that wrote it, user and time bounds, rows, bytes);
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
//! - `users`: the users exported to this output (the `users` table is rewritten from it).
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a committed transaction survives a crash
//! or power loss. A lock file keeps two runs from sharing a state directory.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::model::{ExportedUser, User};

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
  commit_id INTEGER NOT NULL);
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
}

/// A committed cell's effect on the incremental watermark of its user.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    _lock: File,
}

/// Maps a SQLite error to [`StateError::Sqlite`] naming the store's file.
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
        Ok(StateStore {
            conn,
            path,
            _lock: lock,
        })
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

    /// Finishes pending commits (roll forward) and deletes staged files no commit refers to.
    /// Returns the number of commits finished and stray files removed.
    ///
    /// # Errors
    /// [`StateError::LostStagedFile`] if a pending commit's staged file vanished; I/O errors.
    pub fn recover(&mut self, out_dir: &Path) -> Result<(usize, usize), StateError> {
        let pending: Vec<(i64, String)> = {
            let mut st = self
                .conn
                .prepare("SELECT id, plan FROM commits WHERE state='pending' ORDER BY id")
                .map_err(sql(&self.path))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql(&self.path))?;
            rows.collect::<Result<_, _>>().map_err(sql(&self.path))?
        };
        for (id, plan) in &pending {
            let plan: CommitPlan = serde_json::from_str(plan).unwrap_or_default();
            self.apply(*id, &plan, out_dir)?;
        }
        let strays = remove_stray_staged_files(out_dir)?;
        Ok((pending.len(), strays))
    }

    /// Records a commit (pending) with its ledger, progress and watermark changes, in one
    /// transaction; then renames/deletes its files and marks it done.
    ///
    /// # Errors
    /// SQLite or I/O errors. If it fails after the transaction, the next
    /// [`recover`](Self::recover) finishes it.
    pub fn commit(
        &mut self,
        run_id: &str,
        plan: &CommitPlan,
        out_dir: &Path,
        now_ms: i64,
    ) -> Result<i64, StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "INSERT INTO commits(run_id, state, plan, created_ms) VALUES(?1, 'pending', ?2, ?3)",
            params![
                run_id,
                serde_json::to_string(plan).unwrap_or_default(),
                now_ms
            ],
        )
        .map_err(&e)?;
        let id = tx.last_insert_rowid();
        {
            let mut del = tx
                .prepare_cached("DELETE FROM files WHERE path=?1")
                .map_err(&e)?;
            for r in &plan.removes {
                del.execute([r]).map_err(&e)?;
            }
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO files(path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes, run_id, commit_id)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(&e)?;
            for f in &plan.records {
                ins.execute(params![
                    f.path,
                    f.stream,
                    f.unit_key,
                    f.cells_from,
                    f.cells_to,
                    f.min_user,
                    f.max_user,
                    f.min_ms,
                    f.max_ms,
                    f.rows as i64,
                    f.bytes as i64,
                    run_id,
                    id
                ])
                .map_err(&e)?;
            }
            if let Some((unit, done)) = &plan.unit_progress {
                tx.execute(
                    "INSERT INTO run_units(run_id, unit_key, cells_done) VALUES(?1, ?2, ?3)
                     ON CONFLICT(run_id, unit_key) DO UPDATE SET cells_done=excluded.cells_done",
                    params![run_id, unit, done],
                )
                .map_err(&e)?;
            }
            advance_watermarks(&tx, run_id, &plan.watermarks).map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        fail::fail_point!("state::after_journal", |_| crate::hooks::crash(
            "after a journaled commit"
        ));
        self.apply(id, plan, out_dir)?;
        Ok(id)
    }

    fn apply(&mut self, id: i64, plan: &CommitPlan, out_dir: &Path) -> Result<(), StateError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (staged, fin) in &plan.adds {
            let (s, f) = (out_dir.join(staged), out_dir.join(fin));
            match std::fs::rename(&s, &f) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    if !f.exists() {
                        return Err(StateError::LostStagedFile {
                            db: self.path.clone(),
                            commit: id,
                            path: s,
                        });
                    }
                }
                Err(source) => {
                    return Err(StateError::Io {
                        action: "renaming staged file to",
                        path: f,
                        source,
                    });
                }
            }
            if let Some(p) = f.parent()
                && !dirs.iter().any(|d| d == p)
            {
                dirs.push(p.to_owned());
            }
            fail::fail_point!("state::mid_apply", |_| crate::hooks::crash(
                "in the middle of a commit's renames"
            ));
        }
        let finals: std::collections::HashSet<&str> =
            plan.adds.iter().map(|(_, f)| f.as_str()).collect();
        for r in &plan.removes {
            if finals.contains(r.as_str()) {
                continue; // replaced in place by the rename
            }
            let p = out_dir.join(r);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Io {
                        action: "removing replaced file",
                        path: p,
                        source,
                    });
                }
            }
            if let Some(parent) = p.parent()
                && !dirs.iter().any(|d| d == parent)
            {
                dirs.push(parent.to_owned());
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        self.conn
            .execute("DELETE FROM commits WHERE id=?1", [id])
            .map_err(sql(&self.path))?;
        Ok(())
    }

    /// Data files of `stream` whose cells overlap `[start_ms, end_ms)` and whose user range
    /// overlaps `[min_user, max_user]`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn overlapping_files(
        &self,
        stream: &str,
        start_ms: i64,
        end_ms: i64,
        min_user: &str,
        max_user: &str,
    ) -> Result<Vec<FileRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes
                 FROM files WHERE stream=?1 AND min_ms < ?3 AND max_ms > ?2 AND max_user >= ?4 AND min_user <= ?5
                 ORDER BY path",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map(
                params![stream, start_ms, end_ms, min_user, max_user],
                file_record,
            )
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// All data files of a stream.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn files(&self, stream: &str) -> Result<Vec<FileRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes
                 FROM files WHERE stream=?1 ORDER BY path",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([stream], file_record)
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Starts a run in `namespace`, or resumes the latest unfinished run there with the same
    /// parameters hash.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_run(
        &mut self,
        namespace: &str,
        params_hash: &str,
        params_json: &str,
        until_ms: Option<i64>,
        new_run_id: &str,
        now_ms: i64,
    ) -> Result<RunStart, StateError> {
        let last: Option<(String, String, String)> = self
            .conn
            .query_row(
                "SELECT run_id, params_hash, status FROM runs WHERE namespace=?1 ORDER BY started_ms DESC, rowid DESC LIMIT 1",
                [namespace],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql(&self.path))?;
        if let Some((run_id, hash, status)) = last {
            if hash == params_hash
                && matches!(status.as_str(), "running" | "interrupted" | "failed")
            {
                self.conn
                    .execute(
                        "UPDATE runs SET status='running', finished_ms=NULL WHERE run_id=?1",
                        [&run_id],
                    )
                    .map_err(sql(&self.path))?;
                return Ok(RunStart {
                    run_id,
                    resumed: true,
                });
            }
            if matches!(status.as_str(), "running" | "interrupted" | "failed") {
                // A different run supersedes it: its committed units stay; it is not resumed.
                self.conn
                    .execute(
                        "UPDATE runs SET status='abandoned' WHERE run_id=?1",
                        [&run_id],
                    )
                    .map_err(sql(&self.path))?;
                self.conn
                    .execute(
                        "UPDATE watermarks SET run_id=NULL, end_before_run=NULL WHERE run_id=?1",
                        [&run_id],
                    )
                    .map_err(sql(&self.path))?;
            }
        }
        self.conn
            .execute(
                "INSERT INTO runs(run_id, namespace, params_hash, params, until_ms, started_ms, status) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'running')",
                params![new_run_id, namespace, params_hash, params_json, until_ms, now_ms],
            )
            .map_err(sql(&self.path))?;
        Ok(RunStart {
            run_id: new_run_id.to_owned(),
            resumed: false,
        })
    }

    /// Units a run committed: `unit_key -> cells done`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_units(&self, run_id: &str) -> Result<HashMap<String, u32>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT unit_key, cells_done FROM run_units WHERE run_id=?1")
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Closes a run with its status and report; a successful run's unit progress is dropped.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn finish_run(
        &mut self,
        run_id: &str,
        status: &str,
        report_json: &str,
        now_ms: i64,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        tx.execute(
            "UPDATE runs SET status=?2, report=?3, finished_ms=?4 WHERE run_id=?1",
            params![run_id, status, report_json, now_ms],
        )
        .map_err(&e)?;
        if matches!(status, "succeeded" | "completed_with_rejects") {
            tx.execute("DELETE FROM run_units WHERE run_id=?1", [run_id])
                .map_err(&e)?;
            tx.execute(
                "UPDATE watermarks SET run_id=NULL, end_before_run=NULL WHERE run_id=?1",
                [run_id],
            )
            .map_err(&e)?;
        }
        tx.commit().map_err(&e)?;
        // Fold the write-ahead log back into the database so the state stays compact between
        // runs (a large run can leave a WAL as big as the tables it touched).
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(&e)
    }

    /// Recent runs, newest first (optionally only one namespace).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn runs(
        &self,
        namespace: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunRecord>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT run_id, namespace, started_ms, finished_ms, status, report FROM runs
                 WHERE (?1 IS NULL OR namespace=?1) ORDER BY started_ms DESC, rowid DESC LIMIT ?2",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![namespace, limit as i64], |r| {
                Ok(RunRecord {
                    run_id: r.get(0)?,
                    namespace: r.get(1)?,
                    started_ms: r.get(2)?,
                    finished_ms: r.get(3)?,
                    status: r.get(4)?,
                    report: r.get(5)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Inserts or updates users (latest wins), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn upsert_users(&mut self, users: &[ExportedUser]) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO users(user, channel, user_name, attributes, matched_filters, run_id, extracted_ms)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT(user) DO UPDATE SET channel=excluded.channel, user_name=excluded.user_name,
                       attributes=excluded.attributes, matched_filters=excluded.matched_filters,
                       run_id=excluded.run_id, extracted_ms=excluded.extracted_ms",
                )
                .map_err(&e)?;
            for u in users {
                let user = &u.user;
                st.execute(params![
                    user.channel_user_id,
                    user.channel,
                    user.user_name,
                    serde_json::to_string(&user.attributes).unwrap_or_default(),
                    serde_json::to_string(&user.matched_filters).unwrap_or_default(),
                    u.run_id,
                    u.extracted_at_ms
                ])
                .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// All stored users, by id.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn users(&self) -> Result<Vec<ExportedUser>, StateError> {
        let mut all = Vec::new();
        loop {
            let page = self.users_page(
                all.last()
                    .map(|u: &ExportedUser| u.user.channel_user_id.as_str()),
                10_000,
            )?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// Up to `limit` stored users after `after` (by id): read the table page by page.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExportedUser>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT user, channel, user_name, attributes, matched_filters, run_id, extracted_ms FROM users
                 WHERE ?1 IS NULL OR user > ?1 ORDER BY user LIMIT ?2",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                let attrs: String = r.get(3)?;
                let matched: String = r.get(4)?;
                Ok(ExportedUser {
                    user: User {
                        channel_user_id: r.get(0)?,
                        channel: r.get(1)?,
                        user_name: r.get(2)?,
                        attributes: serde_json::from_str(&attrs).unwrap_or_default(),
                        matched_filters: serde_json::from_str(&matched).unwrap_or_default(),
                    },
                    run_id: r.get(5)?,
                    extracted_at_ms: r.get(6)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Watermarks of a namespace: `user -> (start_ms, end_ms, end_before_run if moved by
    /// run_id)`. For a resumed run, pass its id to get the values its plan started from.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn watermarks(
        &self,
        namespace: &str,
        run_id: &str,
    ) -> Result<HashMap<String, (i64, i64)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT user, start_ms, end_ms, run_id, end_before_run FROM watermarks WHERE namespace=?1")
            .map_err(sql(&self.path))?;
        let mut out = HashMap::new();
        let rows = st
            .query_map([namespace], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(sql(&self.path))?;
        for row in rows {
            let (user, start, end, by, before) = row.map_err(sql(&self.path))?;
            if by.as_deref() == Some(run_id) {
                // No value before: the user had no watermark before this run.
                if let Some(b) = before {
                    out.insert(user, (start, b));
                }
            } else {
                out.insert(user, (start, end));
            }
        }
        Ok(out)
    }

    /// Deletes watermarks of a namespace (one user or all); returns rows deleted.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reset_watermarks(
        &mut self,
        namespace: &str,
        user: Option<&str>,
        to_ms: Option<i64>,
    ) -> Result<usize, StateError> {
        let n = match (user, to_ms) {
            (Some(u), None) => self.conn.execute("DELETE FROM watermarks WHERE namespace=?1 AND user=?2", params![namespace, u]),
            (None, None) => self.conn.execute("DELETE FROM watermarks WHERE namespace=?1", [namespace]),
            (Some(u), Some(t)) => self.conn.execute(
                "UPDATE watermarks SET end_ms=MAX(start_ms, MIN(end_ms, ?3)), run_id=NULL, end_before_run=NULL WHERE namespace=?1 AND user=?2",
                params![namespace, u, t],
            ),
            (None, Some(t)) => self.conn.execute(
                "UPDATE watermarks SET end_ms=MAX(start_ms, MIN(end_ms, ?2)), run_id=NULL, end_before_run=NULL WHERE namespace=?1",
                params![namespace, t],
            ),
        };
        n.map_err(sql(&self.path))
    }
}

/// Files of one stream: count, rows, bytes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StreamStats {
    /// `messages`, `users`, `dead_letter`.
    pub stream: String,
    /// Files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Watermarks of a namespace, summarized.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct WatermarkSummary {
    /// Namespace.
    pub namespace: String,
    /// Users with a watermark.
    pub users: u64,
    /// Earliest watermark (ms since epoch UTC).
    pub min_end_ms: Option<i64>,
    /// Latest watermark.
    pub max_end_ms: Option<i64>,
}

/// One user's watermark in one namespace.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserWatermark {
    /// Namespace.
    pub namespace: String,
    /// Start of the exported range (ms since epoch UTC).
    pub start_ms: i64,
    /// Watermark: end of the exported range (exclusive).
    pub end_ms: i64,
    /// The unfinished run that last moved it, if any.
    pub run_id: Option<String>,
}

impl StateStore {
    /// Per-stream file counts.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn stream_stats(&self) -> Result<Vec<StreamStats>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT stream, COUNT(*), COALESCE(SUM(rows),0), COALESCE(SUM(bytes),0) FROM files GROUP BY stream ORDER BY stream")
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([], |r| {
                Ok(StreamStats {
                    stream: r.get(0)?,
                    files: r.get::<_, i64>(1)? as u64,
                    rows: r.get::<_, i64>(2)? as u64,
                    bytes: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Watermark summaries per namespace.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn watermark_summaries(&self) -> Result<Vec<WatermarkSummary>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT namespace, COUNT(*), MIN(end_ms), MAX(end_ms) FROM watermarks GROUP BY namespace ORDER BY namespace")
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([], |r| {
                Ok(WatermarkSummary {
                    namespace: r.get(0)?,
                    users: r.get::<_, i64>(1)? as u64,
                    min_end_ms: r.get(2)?,
                    max_end_ms: r.get(3)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// One user's watermarks, all namespaces.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn user_watermarks(&self, user: &str) -> Result<Vec<UserWatermark>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT namespace, start_ms, end_ms, run_id FROM watermarks WHERE user=?1 ORDER BY namespace")
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([user], |r| {
                Ok(UserWatermark {
                    namespace: r.get(0)?,
                    start_ms: r.get(1)?,
                    end_ms: r.get(2)?,
                    run_id: r.get(3)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }
}

fn file_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        path: r.get(0)?,
        stream: r.get(1)?,
        unit_key: r.get(2)?,
        cells_from: r.get(3)?,
        cells_to: r.get(4)?,
        min_user: r.get(5)?,
        max_user: r.get(6)?,
        min_ms: r.get(7)?,
        max_ms: r.get(8)?,
        rows: r.get::<_, i64>(9)? as u64,
        bytes: r.get::<_, i64>(10)? as u64,
    })
}

fn advance_watermarks(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    moves: &[WatermarkMove],
) -> rusqlite::Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    // One statement per move: insert a new user's watermark, or move an existing one, but only
    // by a contiguous extension (a cell inside the covered range, e.g. the lookback, changes
    // nothing; a gap never moves it). The first move by a run keeps the value before it.
    let mut up = tx.prepare_cached(
        "INSERT INTO watermarks(namespace, user, start_ms, end_ms, run_id, end_before_run)
         VALUES(?1, ?2, ?3, ?4, ?5, NULL)
         ON CONFLICT(namespace, user) DO UPDATE SET
           start_ms = MIN(start_ms, excluded.start_ms),
           end_before_run = CASE WHEN run_id IS excluded.run_id THEN end_before_run ELSE end_ms END,
           run_id = excluded.run_id,
           end_ms = excluded.end_ms
         WHERE excluded.start_ms <= watermarks.end_ms AND excluded.end_ms > watermarks.end_ms",
    )?;
    for m in moves {
        up.execute(params![m.namespace, m.user, m.start_ms, m.end_ms, run_id])?;
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

fn remove_stray_staged_files(out_dir: &Path) -> Result<usize, StateError> {
    let mut removed = 0;
    let mut stack = vec![out_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name != "_state" {
                    stack.push(p);
                }
            } else if name.starts_with('.') && name.ends_with(STAGED_SUFFIX) {
                std::fs::remove_file(&p).map_err(|source| StateError::Io {
                    action: "removing stray staged file",
                    path: p.clone(),
                    source,
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, user: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            stream: "messages".into(),
            unit_key: "k".into(),
            cells_from: 0,
            cells_to: 1,
            min_user: user.into(),
            max_user: user.into(),
            min_ms: 0,
            max_ms: 10,
            rows: 1,
            bytes: 1,
        }
    }

    #[test]
    fn a_commit_renames_staged_files_and_replaces_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut st = StateStore::open(&out.join("_state")).unwrap();
        std::fs::write(out.join(".a.tmp"), "new").unwrap();
        std::fs::write(out.join("old"), "old").unwrap();
        let plan = CommitPlan {
            adds: vec![(".a.tmp".into(), "a".into())],
            removes: vec!["old".into()],
            records: vec![rec("a", "u1")],
            ..Default::default()
        };
        st.commit("r1", &plan, out, 0).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a")).unwrap(), "new");
        assert!(!out.join("old").exists() && !out.join(".a.tmp").exists());
        assert_eq!(st.files("messages").unwrap().len(), 1);
        assert_eq!(
            st.overlapping_files("messages", 5, 20, "u0", "u2")
                .unwrap()
                .len(),
            1
        );
        assert!(
            st.overlapping_files("messages", 10, 20, "u0", "u2")
                .unwrap()
                .is_empty()
        );
        assert!(
            st.overlapping_files("messages", 0, 20, "u2", "u3")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn recovery_rolls_pending_commits_forward_and_removes_strays() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        {
            let st = StateStore::open(&out.join("_state")).unwrap();
            // Simulate a crash right after the transaction: pending commit, files not moved.
            let plan = CommitPlan {
                adds: vec![(".b.tmp".into(), "b".into())],
                removes: vec!["gone".into()],
                ..Default::default()
            };
            st.conn
                .execute(
                    "INSERT INTO commits(run_id, state, plan, created_ms) VALUES('r', 'pending', ?1, 0)",
                    [serde_json::to_string(&plan).unwrap()],
                )
                .unwrap();
        }
        std::fs::write(out.join(".b.tmp"), "b").unwrap();
        std::fs::write(out.join("gone"), "x").unwrap();
        std::fs::create_dir_all(out.join("messages")).unwrap();
        std::fs::write(out.join("messages/.stray.parquet.tmp"), "x").unwrap();
        let mut st = StateStore::open(&out.join("_state")).unwrap();
        assert_eq!(st.recover(out).unwrap(), (1, 1));
        assert!(out.join("b").exists() && !out.join("gone").exists());
        assert!(!out.join("messages/.stray.parquet.tmp").exists());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = StateStore::open(dir.path()).unwrap();
        assert!(matches!(
            StateStore::open(dir.path()),
            Err(StateError::Locked(_))
        ));
    }

    #[test]
    fn runs_resume_only_with_the_same_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = StateStore::open(dir.path()).unwrap();
        let a = st.begin_run("export", "h1", "{}", None, "r1", 1).unwrap();
        assert!(!a.resumed);
        let b = st.begin_run("export", "h1", "{}", None, "r2", 2).unwrap();
        assert_eq!(
            b,
            RunStart {
                run_id: "r1".into(),
                resumed: true
            }
        );
        st.finish_run("r1", "succeeded", "{}", 3).unwrap();
        let c = st.begin_run("export", "h1", "{}", None, "r3", 4).unwrap();
        assert_eq!(
            c,
            RunStart {
                run_id: "r3".into(),
                resumed: false
            }
        );
    }

    #[test]
    fn watermarks_move_only_by_contiguous_extension_and_remember_the_start_of_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let mut st = StateStore::open(&out.join("_state")).unwrap();
        let mv = |s, e| WatermarkMove {
            namespace: "incremental".into(),
            user: "u".into(),
            start_ms: s,
            end_ms: e,
        };
        let plan = |m: Vec<WatermarkMove>| CommitPlan {
            watermarks: m,
            ..Default::default()
        };
        st.commit("r1", &plan(vec![mv(0, 10)]), out, 0).unwrap();
        st.finish_run("r1", "succeeded", "{}", 0).unwrap();
        st.commit("r2", &plan(vec![mv(5, 10)]), out, 0).unwrap(); // lookback: no move
        st.commit("r2", &plan(vec![mv(10, 20)]), out, 0).unwrap();
        st.commit("r2", &plan(vec![mv(20, 30)]), out, 0).unwrap();
        assert_eq!(st.watermarks("incremental", "other").unwrap()["u"], (0, 30));
        assert_eq!(st.watermarks("incremental", "r2").unwrap()["u"], (0, 10));
        st.commit("r2", &plan(vec![mv(40, 50)]), out, 0).unwrap(); // a gap: no move
        assert_eq!(st.watermarks("incremental", "x").unwrap()["u"], (0, 30));
    }
}
