//! The send ledger, kept in the state store (`StateStore::connection`): one row per
//! (campaign, row key) with its status, the exact request, every attempt, and the input rows
//! of the campaign's last run (for the result log).
//!
//! Tables (created here, next to their queries):
//! - `send_campaigns`: kind, tenant (no key), settings, output directory;
//! - `send_rows`: status (`pending`, `in_flight`, `sent`, `failed`, `skipped`, `unknown`),
//!   content hash, request (method, path, body; broadcasts: the batch), attempts and manual
//!   retries, the API's answer (HTTP status, code, message id, response, error), attempt
//!   times (ms since epoch UTC), and how the status was settled (`response`,
//!   `reconciliation`, `crash`);
//! - `send_batches`: one broadcast request (its recipients are the rows with its id);
//! - `send_attempts`: the audit trail, one row per HTTP attempt (`manual` for `send retry`);
//! - `send_inputs`: input row number -> row key (and duplicate / changed flags) of the last
//!   planned run, so the result log has exactly one row per input row.
//!
//! The store runs with `synchronous = FULL`: a committed `in_flight` survives a crash, which
//! is what makes "never twice" hold (issue 10).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::Status;
use super::render::Request;

/// The ledger's tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS send_campaigns(
  campaign TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  source TEXT NOT NULL,
  message TEXT NOT NULL,
  out_dir TEXT NOT NULL,
  log_format TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS send_rows(
  campaign TEXT NOT NULL,
  row_key TEXT NOT NULL,
  seq INTEGER NOT NULL,
  recipient TEXT,
  status TEXT NOT NULL,
  reason TEXT,
  content_hash TEXT NOT NULL,
  method TEXT,
  path TEXT,
  body TEXT,
  batch_id INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  manual_retries INTEGER NOT NULL DEFAULT 0,
  http_status INTEGER,
  api_code INTEGER,
  message_id TEXT,
  response TEXT,
  error TEXT,
  first_attempt_ms INTEGER,
  in_flight_ms INTEGER,
  finished_ms INTEGER,
  settled_by TEXT,
  PRIMARY KEY(campaign, row_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS send_rows_by_status ON send_rows(campaign, status, seq);
CREATE TABLE IF NOT EXISTS send_batches(
  batch_id INTEGER PRIMARY KEY,
  campaign TEXT NOT NULL,
  method TEXT NOT NULL,
  path TEXT NOT NULL,
  body TEXT,
  created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS send_attempts(
  campaign TEXT NOT NULL,
  row_key TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  manual INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  finished_ms INTEGER,
  outcome TEXT NOT NULL,
  http_status INTEGER,
  api_code INTEGER,
  error TEXT,
  PRIMARY KEY(campaign, row_key, attempt)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS send_inputs(
  campaign TEXT NOT NULL,
  input_row INTEGER NOT NULL,
  row_key TEXT NOT NULL,
  duplicate_of INTEGER,
  changed INTEGER NOT NULL,
  PRIMARY KEY(campaign, input_row)) WITHOUT ROWID;
";

/// Creates the tables (idempotent).
///
/// # Errors
/// SQLite errors.
pub fn init(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)
}

/// Rows left `in_flight` by a run that stopped without recording the answer (a crash,
/// `kill -9`) may have reached the API: they become `unknown`. Returns how many.
///
/// # Errors
/// SQLite errors.
pub fn recover_in_flight(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE send_attempts SET outcome='crash', finished_ms=?1,
           error='the run stopped while this request was in flight'
         WHERE (campaign, row_key, attempt) IN
           (SELECT campaign, row_key, attempts FROM send_rows WHERE status='in_flight')",
        [now_ms],
    )?;
    conn.execute(
        "UPDATE send_rows SET status='unknown', finished_ms=?1, settled_by='crash',
           error='in flight when a previous run stopped (crash or kill): the request may have reached the API; not re-sent'
         WHERE status='in_flight'",
        [now_ms],
    )
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRecord {
    /// `template`, `trigger`, `broadcast`.
    pub kind: String,
    /// `SourceSpec` as JSON.
    pub source: String,
    /// `Message` as JSON.
    pub message: String,
    /// Output directory of its last run.
    pub out_dir: String,
    /// Result-log format of its last run (`parquet`, `jsonl`).
    pub log_format: String,
}

/// The stored campaign, if any.
///
/// # Errors
/// SQLite errors.
pub fn campaign(conn: &Connection, id: &str) -> rusqlite::Result<Option<CampaignRecord>> {
    conn.query_row(
        "SELECT kind, source, message, out_dir, log_format FROM send_campaigns WHERE campaign=?1",
        [id],
        |r| {
            Ok(CampaignRecord {
                kind: r.get(0)?,
                source: r.get(1)?,
                message: r.get(2)?,
                out_dir: r.get(3)?,
                log_format: r.get(4)?,
            })
        },
    )
    .optional()
}

/// Creates or updates the campaign record.
///
/// # Errors
/// SQLite errors.
pub fn put_campaign(
    conn: &Connection,
    id: &str,
    rec: &CampaignRecord,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO send_campaigns(campaign, kind, source, message, out_dir, log_format, created_ms, updated_ms)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT(campaign) DO UPDATE SET source=excluded.source, message=excluded.message,
           out_dir=excluded.out_dir, log_format=excluded.log_format, updated_ms=excluded.updated_ms",
        params![id, rec.kind, rec.source, rec.message, rec.out_dir, rec.log_format, now_ms],
    )
    .map(|_| ())
}

/// What the ledger knows of a key: its status and content hash.
///
/// # Errors
/// SQLite errors.
pub fn lookup(
    conn: &Connection,
    campaign: &str,
    key: &str,
) -> rusqlite::Result<Option<(Status, String)>> {
    conn.prepare_cached(
        "SELECT status, content_hash FROM send_rows WHERE campaign=?1 AND row_key=?2",
    )?
    .query_row([campaign, key], |r| {
        let s: String = r.get(0)?;
        Ok((s.parse().unwrap_or(Status::Unknown), r.get(1)?))
    })
    .optional()
}

/// The next free `seq` of a campaign (rows are sent in `seq` order).
///
/// # Errors
/// SQLite errors.
pub fn next_seq(conn: &Connection, campaign: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM send_rows WHERE campaign=?1",
        [campaign],
        |r| r.get(0),
    )
}

/// A row as planned from the input.
#[derive(Debug, Clone)]
pub struct PlannedRow<'a> {
    /// Row key.
    pub key: &'a str,
    /// Normalized recipient, if valid.
    pub recipient: Option<&'a str>,
    /// `pending` or `skipped`.
    pub status: Status,
    /// Skip category (`consent`, `invalid_phone`, ...).
    pub reason: Option<&'static str>,
    /// Skip reason in words.
    pub error: Option<&'a str>,
    /// Content hash.
    pub hash: &'a str,
    /// The request (template, trigger; `None` for broadcasts and skipped rows).
    pub request: Option<&'a Request>,
}

/// Inserts a new key, or replaces a `pending` one (never attempted: the input's latest
/// content wins). Rows in any other status are left alone.
///
/// # Errors
/// SQLite errors.
pub fn upsert_planned(
    conn: &Connection,
    campaign: &str,
    seq: i64,
    row: &PlannedRow<'_>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO send_rows(campaign, row_key, seq, recipient, status, reason, error, content_hash, method, path, body)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(campaign, row_key) DO UPDATE SET recipient=excluded.recipient,
           status=excluded.status, reason=excluded.reason, error=excluded.error,
           content_hash=excluded.content_hash, method=excluded.method, path=excluded.path,
           body=excluded.body
         WHERE send_rows.status='pending'",
    )?
    .execute(params![
        campaign,
        row.key,
        seq,
        row.recipient,
        row.status.as_str(),
        row.reason,
        row.error,
        row.hash,
        row.request.map(|r| r.method.as_str()),
        row.request.map(|r| r.path.as_str()),
        row.request.and_then(|r| r.body.as_deref()),
    ])
    .map(|_| ())
}

/// Brings a settled key up to date with the input where that is safe (issue 10: settled rows
/// are never re-sent by a run; `send retry` must not send what the input no longer allows):
/// - `failed` (certainly not processed): takes the new request, or becomes `skipped` when the
///   input now skips the row;
/// - `unknown` (maybe delivered): keeps its request; `reason = 'hold'` keeps it from
///   `send retry` while the input skips the row, and is cleared otherwise;
/// - other statuses: unchanged.
///
/// # Errors
/// SQLite errors.
pub fn refresh_settled(
    conn: &Connection,
    campaign: &str,
    status: Status,
    key: &str,
    hash: &str,
    request: Option<&Request>,
    skip: Option<(&str, &str)>,
) -> rusqlite::Result<()> {
    match (status, skip) {
        (Status::Failed, Some((category, reason))) => conn
            .prepare_cached(
                "UPDATE send_rows SET status='skipped', reason=?3, error=?4, content_hash=?5
                 WHERE campaign=?1 AND row_key=?2 AND status='failed'",
            )?
            .execute(params![campaign, key, category, reason, hash]),
        (Status::Failed, None) => conn
            .prepare_cached(
                "UPDATE send_rows SET content_hash=?3, method=COALESCE(?4, method),
                   path=COALESCE(?5, path), body=COALESCE(?6, body)
                 WHERE campaign=?1 AND row_key=?2 AND status='failed'",
            )?
            .execute(params![
                campaign,
                key,
                hash,
                request.map(|r| r.method.as_str()),
                request.map(|r| r.path.as_str()),
                request.and_then(|r| r.body.as_deref()),
            ]),
        (Status::Unknown, skip) => conn
            .prepare_cached("UPDATE send_rows SET reason=?3 WHERE campaign=?1 AND row_key=?2 AND status='unknown'")?
            .execute(params![campaign, key, skip.map(|_| "hold")]),
        _ => Ok(0),
    }
    .map(|_| ())
}

/// Forgets the input rows of the campaign's previous run.
///
/// # Errors
/// SQLite errors.
pub fn clear_inputs(conn: &Connection, campaign: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM send_inputs WHERE campaign=?1", [campaign])
        .map(|_| ())
}

/// Records input row `input_row` (1-based) as `key`; `duplicate_of`: the earlier input row
/// with the same key; `changed`: the key was already settled with other content.
///
/// # Errors
/// SQLite errors.
pub fn insert_input(
    conn: &Connection,
    campaign: &str,
    input_row: u64,
    key: &str,
    duplicate_of: Option<u64>,
    changed: bool,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO send_inputs(campaign, input_row, row_key, duplicate_of, changed) VALUES(?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![campaign, input_row as i64, key, duplicate_of.map(|d| d as i64), changed])
    .map(|_| ())
}

/// A row to send.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Order.
    pub seq: i64,
    /// Row key.
    pub key: String,
    /// Recipient (phone digits / user id).
    pub recipient: Option<String>,
    /// Status before this run touched it (`pending`; `unknown`/`failed` for a retry).
    pub status: Status,
    /// Attempts so far.
    pub attempts: u32,
    /// The stored request (`None` for broadcast rows: the batch is built at send time).
    pub request: Option<Request>,
}

/// Up to `limit` rows of `campaign` in `status`, after `after_seq`, in `seq` order (rows on
/// hold excluded: see [`refresh_settled`]).
///
/// # Errors
/// SQLite errors.
pub fn rows_to_send(
    conn: &Connection,
    campaign: &str,
    status: Status,
    after_seq: i64,
    limit: usize,
) -> rusqlite::Result<Vec<JobRow>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, row_key, recipient, status, attempts, method, path, body FROM send_rows
         WHERE campaign=?1 AND status=?2 AND seq>?3 AND COALESCE(reason, '') != 'hold'
         ORDER BY seq LIMIT ?4",
    )?;
    let rows = st.query_map(
        params![campaign, status.as_str(), after_seq, limit as i64],
        |r| {
            let method: Option<String> = r.get(5)?;
            let s: String = r.get(3)?;
            Ok(JobRow {
                seq: r.get(0)?,
                key: r.get(1)?,
                recipient: r.get(2)?,
                status: s.parse().unwrap_or(Status::Unknown),
                attempts: r.get(4)?,
                request: match method {
                    Some(method) => Some(Request {
                        method,
                        path: r.get(6)?,
                        body: r.get(7)?,
                    }),
                    None => None,
                },
            })
        },
    )?;
    rows.collect()
}

/// Rows per status for a campaign (every status present, zeros included).
///
/// # Errors
/// SQLite errors.
pub fn counts(conn: &Connection, campaign: &str) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, u64> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    let mut st =
        conn.prepare("SELECT status, COUNT(*) FROM send_rows WHERE campaign=?1 GROUP BY status")?;
    let rows = st.query_map([campaign], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (s, n) = row?;
        out.insert(s, n as u64);
    }
    Ok(out)
}

/// One listed row: key, recipient, error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    /// Row key.
    pub row_key: String,
    /// Recipient.
    pub recipient: Option<String>,
    /// HTTP status of the last answer.
    pub http_status: Option<u16>,
    /// Engati code.
    pub api_code: Option<i64>,
    /// Why.
    pub error: Option<String>,
}

/// Rows of `campaign` in `status`, in `seq` order, at most `limit`.
///
/// # Errors
/// SQLite errors.
pub fn list(
    conn: &Connection,
    campaign: &str,
    status: Status,
    limit: usize,
) -> rusqlite::Result<Vec<Listed>> {
    let mut st = conn.prepare(
        "SELECT row_key, recipient, http_status, api_code, error FROM send_rows
         WHERE campaign=?1 AND status=?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = st.query_map(params![campaign, status.as_str(), limit as i64], |r| {
        Ok(Listed {
            row_key: r.get(0)?,
            recipient: r.get(1)?,
            http_status: r.get(2)?,
            api_code: r.get(3)?,
            error: r.get(4)?,
        })
    })?;
    rows.collect()
}

/// Keys of the last planned input whose content changed after they were settled.
///
/// # Errors
/// SQLite errors.
pub fn changed_keys(conn: &Connection, campaign: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT row_key FROM send_inputs WHERE campaign=?1 AND changed=1 ORDER BY input_row",
    )?;
    let rows = st.query_map([campaign], |r| r.get(0))?;
    rows.collect()
}

/// An `unknown` row that reconciliation may settle.
#[derive(Debug, Clone)]
pub struct UnknownRow {
    /// Row key.
    pub key: String,
    /// Channel-user id (phone digits).
    pub recipient: String,
    /// When its (last) request was sent, ms since epoch UTC.
    pub in_flight_ms: i64,
    /// The request body sent (the row's or its broadcast's).
    pub body: Option<String>,
}

/// `unknown` rows of a campaign that have a recipient and an in-flight time.
///
/// # Errors
/// SQLite errors.
pub fn unknown_rows(conn: &Connection, campaign: &str) -> rusqlite::Result<Vec<UnknownRow>> {
    let mut st = conn.prepare(
        "SELECT r.row_key, r.recipient, r.in_flight_ms, COALESCE(b.body, r.body)
         FROM send_rows r LEFT JOIN send_batches b ON b.batch_id = r.batch_id
         WHERE r.campaign=?1 AND r.status='unknown' AND r.recipient IS NOT NULL
           AND r.in_flight_ms IS NOT NULL
         ORDER BY r.seq",
    )?;
    let rows = st.query_map([campaign], |r| {
        Ok(UnknownRow {
            key: r.get(0)?,
            recipient: r.get(1)?,
            in_flight_ms: r.get(2)?,
            body: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Settles an `unknown` row as `sent`: reconciliation found it in the conversation history.
///
/// # Errors
/// SQLite errors.
pub fn settle_sent(
    conn: &Connection,
    campaign: &str,
    key: &str,
    seen_at_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE send_rows SET status='sent', settled_by='reconciliation', finished_ms=?3,
           error='settled by reconciliation: found in the conversation history at ' || ?4 || ' (the API''s own answer was lost)'
         WHERE campaign=?1 AND row_key=?2 AND status='unknown'",
    )?
    .execute(params![
        campaign,
        key,
        now_ms,
        crate::time::rfc3339_ms(seen_at_ms)
    ])
    .map(|_| ())
}
