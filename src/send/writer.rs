//! The ledger writer: one thread owns the state store while a campaign sends, and applies
//! the workers' changes in **group commits**: it takes every command waiting, applies them in
//! one SQLite transaction, commits (`synchronous = FULL`: durable), then answers. A worker
//! sends its request only after `begin` was answered, so `in_flight` is on disk first;
//! results (`finish`) are queued without waiting, and are on disk no later than the next
//! `begin` of any worker (commands are applied in order).
//!
//! After a failed commit every later command fails too: the engine stops (exit 6) and the
//! rows whose answers could not be recorded are found `in_flight` by the next run
//! (-> `unknown`).

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::Status;
use super::classify::Outcome;
use super::ledger::{self, JobRow};
use super::render::Request;
use crate::state::StateStore;

/// A ledger write failed (exit 6).
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct LedgerError {
    /// The database.
    pub path: String,
    /// SQLite's message.
    pub message: String,
}

/// A row of a job with its attempt number.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Row key.
    pub key: String,
    /// This attempt's number (1 = first ever).
    pub attempt: u32,
    /// The row's status before the job (restored by [`LedgerWriter::release`]).
    pub prev: Status,
}

enum Cmd {
    Fetch {
        status: Status,
        after_seq: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<JobRow>, LedgerError>>,
    },
    Begin {
        rows: Arc<[Attempt]>,
        manual: Option<bool>,
        batch: Option<Request>,
        now_ms: i64,
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
    Attempted {
        rows: Arc<[Attempt]>,
        outcome: Outcome,
        now_ms: i64,
    },
    Finish {
        rows: Arc<[Attempt]>,
        outcome: Outcome,
        now_ms: i64,
    },
    Release {
        rows: Arc<[Attempt]>,
        note: String,
    },
    Flush {
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
}

/// Handle to the writer thread of one campaign.
pub struct LedgerWriter {
    tx: mpsc::UnboundedSender<Cmd>,
    thread: Option<JoinHandle<(StateStore, Option<LedgerError>)>>,
}

impl LedgerWriter {
    /// Moves `store` to a new writer thread for `campaign`.
    pub fn start(store: StateStore, campaign: &str) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let campaign = campaign.to_owned();
        let thread = std::thread::Builder::new()
            .name("send-ledger".into())
            .spawn(move || run(store, &campaign, rx))
            .expect("spawning the ledger thread");
        LedgerWriter {
            tx,
            thread: Some(thread),
        }
    }

    fn gone() -> LedgerError {
        LedgerError {
            path: "(ledger)".into(),
            message: "the ledger writer stopped".into(),
        }
    }

    /// Up to `limit` rows in `status` after `after_seq`, in `seq` order.
    ///
    /// # Errors
    /// [`LedgerError`].
    pub async fn fetch(
        &self,
        status: Status,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<JobRow>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Fetch {
                status,
                after_seq,
                limit,
                reply,
            })
            .map_err(|_| Self::gone())?;
        rx.await.map_err(|_| Self::gone())?
    }

    /// Records the rows `in_flight` (attempt numbers as given; `manual`: `Some(true)` on the
    /// first attempt of a `send retry`, which counts a manual retry) and, for a broadcast, its
    /// request; returns once that is durable.
    ///
    /// # Errors
    /// [`LedgerError`]: do not send.
    pub async fn begin(
        &self,
        rows: Arc<[Attempt]>,
        manual: Option<bool>,
        batch: Option<Request>,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Begin {
                rows,
                manual,
                batch,
                now_ms,
                reply,
            })
            .map_err(|_| Self::gone())?;
        rx.await.map_err(|_| Self::gone())?
    }

    /// Records an attempt that certainly was not processed; the rows stay `in_flight`.
    pub fn attempted(&self, rows: Arc<[Attempt]>, outcome: Outcome, now_ms: i64) {
        let _ = self.tx.send(Cmd::Attempted {
            rows,
            outcome,
            now_ms,
        });
    }

    /// Records the final answer (`Sent` / `Refused` / `Maybe`) of the rows' attempt.
    pub fn finish(&self, rows: Arc<[Attempt]>, outcome: Outcome, now_ms: i64) {
        let _ = self.tx.send(Cmd::Finish {
            rows,
            outcome,
            now_ms,
        });
    }

    /// Puts rows that were not processed back to their previous status.
    pub fn release(&self, rows: Arc<[Attempt]>, note: String) {
        let _ = self.tx.send(Cmd::Release { rows, note });
    }

    /// Waits until everything queued is durable.
    ///
    /// # Errors
    /// [`LedgerError`] of any failed commit.
    pub async fn flush(&self) -> Result<(), LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush { reply })
            .map_err(|_| Self::gone())?;
        rx.await.map_err(|_| Self::gone())?
    }

    /// Stops the thread and returns the store and the first error, if any.
    pub fn close(mut self) -> (StateStore, Option<LedgerError>) {
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.tx, tx));
        self.thread
            .take()
            .expect("closed once")
            .join()
            .expect("the ledger thread does not panic")
    }
}

/// Commands applied per transaction at most.
const GROUP: usize = 2048;

fn run(
    mut store: StateStore,
    campaign: &str,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
) -> (StateStore, Option<LedgerError>) {
    let path = store.path().display().to_string();
    let mut broken: Option<LedgerError> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let result = match &broken {
            Some(e) => Err(e.clone()),
            None => {
                apply_group(store.connection(), campaign, &mut group).map_err(|e| LedgerError {
                    path: path.clone(),
                    message: e.to_string(),
                })
            }
        };
        if let Err(e) = &result {
            broken.get_or_insert_with(|| e.clone());
        }
        answer(group, result);
    }
    (store, broken)
}

/// Fetch results, by position in the group.
type Fetched = Vec<Option<Vec<JobRow>>>;

fn apply_group(
    conn: &mut Connection,
    campaign: &str,
    group: &mut [Cmd],
) -> rusqlite::Result<Fetched> {
    let tx = conn.transaction()?;
    let mut fetched = Vec::with_capacity(group.len());
    for cmd in group.iter() {
        fetched.push(apply(&tx, campaign, cmd)?);
    }
    tx.commit()?;
    Ok(fetched)
}

fn answer(group: Vec<Cmd>, result: Result<Fetched, LedgerError>) {
    let (done, fetched): (Result<(), LedgerError>, Fetched) = match result {
        Ok(f) => (Ok(()), f),
        Err(e) => (Err(e), Vec::new()),
    };
    let mut fetched = fetched.into_iter();
    for cmd in group {
        let rows = fetched.next().flatten();
        match cmd {
            Cmd::Fetch { reply, .. } => {
                let _ = reply.send(done.clone().map(|()| rows.unwrap_or_default()));
            }
            Cmd::Begin { reply, .. } | Cmd::Flush { reply } => {
                let _ = reply.send(done.clone());
            }
            Cmd::Attempted { .. } | Cmd::Finish { .. } | Cmd::Release { .. } => {}
        }
    }
}

fn apply(tx: &Connection, campaign: &str, cmd: &Cmd) -> rusqlite::Result<Option<Vec<JobRow>>> {
    match cmd {
        Cmd::Fetch {
            status,
            after_seq,
            limit,
            ..
        } => {
            return ledger::rows_to_send(tx, campaign, *status, *after_seq, *limit).map(Some);
        }
        Cmd::Begin {
            rows,
            manual,
            batch,
            now_ms,
            ..
        } => begin(tx, campaign, rows, *manual, batch.as_ref(), *now_ms)?,
        Cmd::Attempted {
            rows,
            outcome,
            now_ms,
        } => {
            for r in rows.iter() {
                end_attempt(tx, campaign, r, outcome, *now_ms)?;
            }
        }
        Cmd::Finish {
            rows,
            outcome,
            now_ms,
        } => {
            for r in rows.iter() {
                end_attempt(tx, campaign, r, outcome, *now_ms)?;
                finish(tx, campaign, r, outcome, *now_ms)?;
            }
        }
        Cmd::Release { rows, note } => {
            let mut st = tx.prepare_cached(
                "UPDATE send_rows SET status=?3, error=CASE WHEN ?3='pending' THEN ?4 ELSE error END
                 WHERE campaign=?1 AND row_key=?2 AND status='in_flight'",
            )?;
            for r in rows.iter() {
                st.execute(params![campaign, r.key, r.prev.as_str(), note])?;
            }
        }
        Cmd::Flush { .. } => {}
    }
    Ok(None)
}

fn begin(
    tx: &Connection,
    campaign: &str,
    rows: &[Attempt],
    manual: Option<bool>,
    batch: Option<&Request>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let batch_id: Option<i64> = match batch {
        Some(b) => {
            tx.prepare_cached(
                "INSERT INTO send_batches(campaign, method, path, body, created_ms) VALUES(?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![campaign, b.method, b.path, b.body, now_ms])?;
            Some(tx.last_insert_rowid())
        }
        None => None,
    };
    let mut row = tx.prepare_cached(
        "UPDATE send_rows SET status='in_flight', attempts=?3, in_flight_ms=?4,
           first_attempt_ms=COALESCE(first_attempt_ms, ?4), manual_retries=manual_retries + ?5,
           batch_id=COALESCE(?6, batch_id)
         WHERE campaign=?1 AND row_key=?2",
    )?;
    let mut attempt = tx.prepare_cached(
        "INSERT OR REPLACE INTO send_attempts(campaign, row_key, attempt, manual, started_ms, outcome)
         VALUES(?1, ?2, ?3, ?4, ?5, 'in_flight')",
    )?;
    for r in rows {
        let counts = i64::from(manual == Some(true));
        row.execute(params![
            campaign, r.key, r.attempt, now_ms, counts, batch_id
        ])?;
        attempt.execute(params![
            campaign,
            r.key,
            r.attempt,
            manual.is_some(),
            now_ms
        ])?;
    }
    Ok(())
}

fn outcome_fields(o: &Outcome) -> (Option<u16>, Option<i64>, Option<&str>) {
    match o {
        Outcome::Sent {
            http_status,
            api_code,
            ..
        } => (Some(*http_status), *api_code, None),
        Outcome::Refused {
            http_status,
            api_code,
            error,
        } => (Some(*http_status), *api_code, Some(error)),
        Outcome::NotProcessed {
            http_status, error, ..
        }
        | Outcome::Maybe { http_status, error } => (*http_status, None, Some(error)),
        Outcome::Auth { http_status, error } => (Some(*http_status), None, Some(error)),
    }
}

fn end_attempt(
    tx: &Connection,
    campaign: &str,
    r: &Attempt,
    o: &Outcome,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let (http, code, error) = outcome_fields(o);
    tx.prepare_cached(
        "UPDATE send_attempts SET outcome=?4, finished_ms=?5, http_status=?6, api_code=?7, error=?8
         WHERE campaign=?1 AND row_key=?2 AND attempt=?3",
    )?
    .execute(params![
        campaign,
        r.key,
        r.attempt,
        o.label(),
        now_ms,
        http,
        code,
        error
    ])
    .map(|_| ())
}

fn finish(
    tx: &Connection,
    campaign: &str,
    r: &Attempt,
    o: &Outcome,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let (http, code, error) = outcome_fields(o);
    let (status, message_id, response) = match o {
        Outcome::Sent {
            message_id,
            response,
            ..
        } => (Status::Sent, message_id.as_deref(), Some(response.as_str())),
        Outcome::Refused { .. } => (Status::Failed, None, None),
        _ => (Status::Unknown, None, None),
    };
    tx.prepare_cached(
        "UPDATE send_rows SET status=?3, http_status=?4, api_code=?5, message_id=?6, response=?7,
           error=?8, finished_ms=?9, settled_by='response'
         WHERE campaign=?1 AND row_key=?2",
    )?
    .execute(params![
        campaign,
        r.key,
        status.as_str(),
        http,
        code,
        message_id,
        response,
        error,
        now_ms
    ])
    .map(|_| ())
}
