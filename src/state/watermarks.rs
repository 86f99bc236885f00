//! Per-user watermarks of incremental runs: the exported range `[start_ms, end_ms)`, moved only
//! by contiguous extension, with the value before the current run so a resumed run plans the
//! same cells.

use std::collections::HashMap;

use super::*;

impl StateStore {
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

pub(super) fn advance_watermarks(
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
