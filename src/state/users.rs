//! Users in the store: the users a run lists (`listed_users`: streamed in as the Users API body
//! or the users file is read, walked by the plan a page at a time) and the users exported to
//! this output (`users`: the source of the `users` table, latest attributes winning).

use std::sync::Mutex;

use crate::grid::Grid;

use super::*;

/// Listed users inserted per transaction.
pub const LISTING_BATCH: usize = 10_000;

/// SQLite page cache of a [`ListedReader`]: it reads pages in key order and needs little.
const READER_CACHE_KIB: i64 = 2048;

/// A listed user as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRow {
    /// Channel-user id.
    pub user: String,
    /// Channel, when known.
    pub channel: Option<String>,
    /// Start of the user's range, ms since epoch UTC (inclusive).
    pub from_ms: i64,
}

/// Totals over the listed users, for a plan ending at `until_ms` in windows on a [`Grid`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListedStats {
    /// Users listed.
    pub users: u64,
    /// Users listed that have at least one cell (their range is not empty).
    pub users_with_cells: u64,
    /// Cells (user x grid window clipped to the user's range), all users together.
    pub cells: u64,
    /// The earliest start of a range that has a cell, ms since epoch UTC.
    pub earliest_ms: Option<i64>,
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let attrs: String = r.get(3)?;
    let matched: String = r.get(4)?;
    Ok(User {
        channel_user_id: r.get(0)?,
        channel: r.get(1)?,
        user_name: r.get(2)?,
        attributes: serde_json::from_str(&attrs).unwrap_or_default(),
        matched_filters: serde_json::from_str(&matched).unwrap_or_default(),
    })
}

const UPSERT: &str =
    "INSERT INTO users(user, channel, user_name, attributes, matched_filters, run_id, extracted_ms)
     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT(user) DO UPDATE SET channel=excluded.channel, user_name=excluded.user_name,
       attributes=excluded.attributes, matched_filters=excluded.matched_filters,
       run_id=excluded.run_id, extracted_ms=excluded.extracted_ms";

/// [`UPSERT`], where the incoming row is newer.
const MERGE: &str =
    "INSERT INTO users(user, channel, user_name, attributes, matched_filters, run_id, extracted_ms)
     VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT(user) DO UPDATE SET channel=excluded.channel, user_name=excluded.user_name,
       attributes=excluded.attributes, matched_filters=excluded.matched_filters,
       run_id=excluded.run_id, extracted_ms=excluded.extracted_ms
     WHERE excluded.extracted_ms > users.extracted_ms";

impl StateStore {
    /// Starts a listing: forgets the previous run's listed users.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn begin_listing(&mut self) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM listed_users", [])
            .map(|_| ())
            .map_err(sql(&self.path))
    }

    /// Adds listed users in one transaction, each with `from_ms` as the start of its range. A
    /// user listed before keeps its fields (the first listing wins) and gains `filter` in its
    /// `matched_filters` (a union of filters; `None` for a users file).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn add_listed_users(
        &mut self,
        users: &[User],
        filter: Option<&str>,
        from_ms: i64,
    ) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let first =
            serde_json::to_string(&filter.into_iter().collect::<Vec<_>>()).unwrap_or_default();
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO listed_users(user, channel, user_name, attributes, matched_filters, from_ms)
                     VALUES(?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(user) DO UPDATE SET matched_filters = CASE
                       WHEN ?7 IS NULL OR EXISTS(SELECT 1 FROM json_each(listed_users.matched_filters) WHERE value = ?7)
                         THEN listed_users.matched_filters
                       ELSE json_insert(listed_users.matched_filters, '$[#]', ?7) END",
                )
                .map_err(&e)?;
            for u in users {
                st.execute(params![
                    u.channel_user_id,
                    u.channel,
                    u.user_name,
                    serde_json::to_string(&u.attributes).unwrap_or_default(),
                    first,
                    from_ms,
                    filter
                ])
                .map_err(&e)?;
            }
        }
        tx.commit().map_err(&e)
    }

    /// Incremental runs: starts each listed user's range from its watermark in `namespace`
    /// (in the watermarks table of database `schema`: `main`, or an attached one), as
    /// `max(watermark - lookback_ms, start_ms)`, or `until_ms` when the watermark is there
    /// already. A watermark moved by `run_id` (the run being resumed) counts with its value
    /// before that run, so a resumed run plans the cells it planned first; `""` for none.
    /// Users without a watermark keep the `from_ms` they were listed with.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn start_from_watermarks(
        &mut self,
        schema: &str,
        namespace: &str,
        run_id: &str,
        start_ms: i64,
        lookback_ms: i64,
        until_ms: i64,
    ) -> Result<(), StateError> {
        let before = "CASE WHEN w.run_id IS ?2 THEN w.end_before_run ELSE w.end_ms END";
        let query = format!(
            "UPDATE listed_users SET from_ms = CASE
               WHEN w.run_id IS ?2 AND w.end_before_run IS NULL THEN ?3
               WHEN ({before}) >= ?5 THEN ?5
               ELSE MAX(({before}) - ?4, ?3) END
             FROM {schema}.watermarks AS w
             WHERE w.namespace = ?1 AND w.user = listed_users.user"
        );
        self.conn
            .execute(
                &query,
                params![namespace, run_id, start_ms, lookback_ms, until_ms],
            )
            .map(|_| ())
            .map_err(sql(&self.path))
    }

    /// Users listed, cells and the earliest range start for a plan ending at `until_ms` with
    /// windows on `grid` (`plan`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn listed_stats(&self, until_ms: i64, grid: Grid) -> Result<ListedStats, StateError> {
        // A window's index is (t - origin + step) / step: both operands are non-negative
        // (t >= 0, origin < step), so SQLite's truncating division is the floor.
        self.conn
            .query_row(
                "SELECT COUNT(*), COUNT(CASE WHEN from_ms < ?1 THEN 1 END),
                   COALESCE(SUM(CASE WHEN from_ms < ?1
                     THEN (?1 - 1 - ?3 + ?2) / ?2 - (from_ms - ?3 + ?2) / ?2 + 1 ELSE 0 END), 0),
                   MIN(CASE WHEN from_ms < ?1 THEN from_ms END)
                 FROM listed_users",
                params![until_ms, grid.step_ms(), grid.origin_ms()],
                |r| {
                    Ok(ListedStats {
                        users: r.get::<_, i64>(0)? as u64,
                        users_with_cells: r.get::<_, i64>(1)? as u64,
                        cells: r.get::<_, i64>(2)? as u64,
                        earliest_ms: r.get(3)?,
                    })
                },
            )
            .map_err(sql(&self.path))
    }

    /// Attaches another store's database read-only as `schema` (the `plan` command reads the
    /// output's watermarks without taking its lock or writing to it).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn attach_read_only(&mut self, schema: &str, db: &Path) -> Result<(), StateError> {
        const URI: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
            .add(b' ')
            .add(b'#')
            .add(b'?')
            .add(b'%');
        let uri = format!(
            "file:{}?mode=ro",
            percent_encoding::utf8_percent_encode(&db.to_string_lossy(), URI)
        );
        self.conn
            .execute(&format!("ATTACH DATABASE ?1 AS {schema}"), [uri])
            .map(|_| ())
            .map_err(sql(&self.path))
    }

    /// One listed user, if listed.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn listed_user(&self, user: &str) -> Result<Option<User>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT user, channel, user_name, attributes, matched_filters FROM listed_users WHERE user=?1",
            )
            .and_then(|mut st| st.query_row([user], user_from_row).optional())
            .map_err(sql(&self.path))
    }

    /// Up to `limit` listed users after `after` (by id), in id order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn listed_users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<User>, StateError> {
        let cols = "user, channel, user_name, attributes, matched_filters";
        let (query, key) = match after {
            None => (
                format!("SELECT {cols} FROM listed_users ORDER BY user LIMIT ?2"),
                "",
            ),
            Some(a) => (
                format!("SELECT {cols} FROM listed_users WHERE user > ?1 ORDER BY user LIMIT ?2"),
                a,
            ),
        };
        let mut st = self.conn.prepare_cached(&query).map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![key, limit as i64], user_from_row)
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Records the listed users as exported by `run_id` (started at `extracted_ms`), latest
    /// attributes winning; returns how many.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn promote_listed_users(
        &mut self,
        run_id: &str,
        extracted_ms: i64,
    ) -> Result<u64, StateError> {
        self.conn
            .execute(
                "INSERT INTO users(user, channel, user_name, attributes, matched_filters, run_id, extracted_ms)
                 SELECT user, channel, user_name, attributes, matched_filters, ?1, ?2 FROM listed_users WHERE true
                 ON CONFLICT(user) DO UPDATE SET channel=excluded.channel, user_name=excluded.user_name,
                   attributes=excluded.attributes, matched_filters=excluded.matched_filters,
                   run_id=excluded.run_id, extracted_ms=excluded.extracted_ms",
                params![run_id, extracted_ms],
            )
            .map(|n| n as u64)
            .map_err(sql(&self.path))
    }

    /// Inserts or updates users (latest wins), in one transaction.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn upsert_users(&mut self, users: &[ExportedUser]) -> Result<(), StateError> {
        self.write_users(users, false)
    }

    /// Merges users read back from an output's users file: a user is inserted, or updated
    /// when the file's row is newer (`extracted_at_ms`) than the stored one. What an output on
    /// object storage does before rewriting its users file, so users exported by another
    /// worker (or before this state directory existed) are kept.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn merge_users(&mut self, users: &[ExportedUser]) -> Result<(), StateError> {
        self.write_users(users, true)
    }

    fn write_users(&mut self, users: &[ExportedUser], newer_only: bool) -> Result<(), StateError> {
        let path = self.path.clone();
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        {
            let mut st = tx
                .prepare_cached(if newer_only { MERGE } else { UPSERT })
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

    /// Up to `limit` stored users after `after` (by id): read the table page by page (each
    /// page a seek in the key, not a scan from the start).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn users_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExportedUser>, StateError> {
        let cols = "user, channel, user_name, attributes, matched_filters, run_id, extracted_ms";
        let (query, key) = match after {
            None => (
                format!("SELECT {cols} FROM users ORDER BY user LIMIT ?2"),
                "",
            ),
            Some(a) => (
                format!("SELECT {cols} FROM users WHERE user > ?1 ORDER BY user LIMIT ?2"),
                a,
            ),
        };
        let mut st = self.conn.prepare_cached(&query).map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![key, limit as i64], |r| {
                Ok(ExportedUser {
                    user: user_from_row(r)?,
                    run_id: r.get(5)?,
                    extracted_at_ms: r.get(6)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }
}

/// A second, read-only connection to a store, for the walk: it reads the listed users a page
/// at a time in id order while the sink's connection commits (SQLite's WAL lets a reader in
/// beside the writer; each page is its own short read, so the WAL can be checkpointed), and
/// what a resumed run committed. Shared across tasks behind a mutex held only for a query.
pub struct ListedReader {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for ListedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListedReader")
            .field("path", &self.path)
            .finish()
    }
}

impl ListedReader {
    /// Opens the store at `db` (a `state.sqlite3`) read-only.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open(db: &Path) -> Result<Self, StateError> {
        let conn = Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql(db))?;
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout=5000; PRAGMA cache_size=-{READER_CACHE_KIB};"
        ))
        .map_err(sql(db))?;
        Ok(ListedReader {
            conn: Mutex::new(conn),
            path: db.to_owned(),
        })
    }

    /// Up to `limit` listed users after `after` (by id) whose range starts before `before_ms`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn page(
        &self,
        after: Option<&str>,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ListedRow>, StateError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let (query, key) = match after {
            None => (
                "SELECT user, channel, from_ms FROM listed_users WHERE from_ms < ?2 ORDER BY user LIMIT ?3",
                "",
            ),
            Some(a) => (
                "SELECT user, channel, from_ms FROM listed_users WHERE user > ?1 AND from_ms < ?2 ORDER BY user LIMIT ?3",
                a,
            ),
        };
        let mut st = conn.prepare_cached(query).map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![key, before_ms, limit as i64], |r| {
                Ok(ListedRow {
                    user: r.get(0)?,
                    channel: r.get(1)?,
                    from_ms: r.get(2)?,
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Cells of unit `unit_key` that run `run_id` committed, if any (resume).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn cells_done(&self, run_id: &str, unit_key: &str) -> Result<Option<u32>, StateError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.prepare_cached("SELECT cells_done FROM run_units WHERE run_id=?1 AND unit_key=?2")
            .and_then(|mut st| st.query_row([run_id, unit_key], |r| r.get(0)).optional())
            .map_err(sql(&self.path))
    }
}
