//! The files ledger: every data file of the output, and the queries the sinks and `state show`
//! make of it.

use super::*;

impl StateStore {
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
            .prepare_cached(&format!(
                "SELECT {} FROM files
                 WHERE stream=?1 AND min_ms < ?3 AND max_ms > ?2 AND max_user >= ?4 AND min_user <= ?5
                 ORDER BY path",
                self.record_columns()
            ))
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
            .prepare_cached(&format!(
                "SELECT {} FROM files WHERE stream=?1 ORDER BY path",
                self.record_columns()
            ))
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([stream], file_record)
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

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

impl StateStore {
    /// The columns [`file_record`] reads, in its order: a store an older version created, read
    /// before anything migrated it, has no `checksum` column and reads as NULL.
    fn record_columns(&self) -> &'static str {
        if self.has_checksum {
            "path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes, checksum"
        } else {
            "path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes, NULL"
        }
    }
}

pub(super) fn file_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
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
        checksum: r.get(11)?,
    })
}

/// A ledger row with the run and commit that wrote it (`verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerFile {
    /// The file as the sinks see it.
    pub record: FileRecord,
    /// The run whose commit put the file in place (a remnant carries the rewriting run's id).
    pub run_id: String,
    /// The commit id (journal row id, increasing over the store's life).
    pub commit_id: i64,
}

impl StateStore {
    /// Every file of the ledger, all streams, by path, with the run and commit that wrote it.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ledger_files(&self) -> Result<Vec<LedgerFile>, StateError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {}, run_id, commit_id FROM files ORDER BY path",
                self.record_columns()
            ))
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([], |r| {
                Ok(LedgerFile {
                    record: file_record(r)?,
                    run_id: r.get(12)?,
                    commit_id: r.get(13)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Commits journaled but not yet applied (a run crashed between its journal and its
    /// renames; the next run, or `state show`, finishes them).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn pending_commits(&self) -> Result<u64, StateError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM commits WHERE state='pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(sql(&self.path))
    }

    /// Every watermark of the namespaces whose name starts with `prefix`:
    /// `(namespace, user, start_ms, end_ms)`, ms since epoch UTC, `[start, end)`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn watermarks_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, i64, i64)>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT namespace, user, start_ms, end_ms FROM watermarks
                 WHERE substr(namespace, 1, length(?1)) = ?1 ORDER BY namespace, user",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([prefix], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }
}
