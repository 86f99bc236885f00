//! Run history and resume: runs start, resume (same namespace and parameters) and finish here;
//! `run_units` remembers what an unfinished run committed.

use std::collections::HashMap;

use super::*;

impl StateStore {
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
}
