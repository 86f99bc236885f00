//! The send loop: rows in `seq` order from the ledger, at most `concurrency` requests in
//! flight and `max_rps` per second, and for each request:
//!
//! 1. wait for a slot and the rate limiter;
//! 2. record `in_flight` and wait until it is durable (group commit, see `writer`);
//! 3. send once; classify the answer (`classify`);
//! 4. certainly not processed (connection refused, 429, 408): record the attempt, back off
//!    (`backon`'s exponential policy, full jitter, `Retry-After` honoured) and go to 1;
//!    401/403: put the row back and stop the campaign (exit 3); anything else: record the
//!    final status (`sent`, `failed`, `unknown`) and feed the circuit breaker.
//!
//! A stop (Ctrl-C, auth, breaker, ledger failure) takes no new row; requests in flight finish
//! and are recorded. Rows fetched but not begun stay as they were.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::StreamExt;

use super::breaker::{Breaker, Trip};
use super::classify::Outcome;
use super::config::{Limits, SourceSpec};
use super::http::Sender;
use super::ledger::JobRow;
use super::message::Message;
use super::render::{self, Request};
use super::writer::{Attempt, LedgerWriter};
use super::{Status, crash_point};
use crate::pipeline::RunControl;
use crate::time::now_ms;

/// Why a campaign stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Ctrl-C / SIGTERM (exit 130).
    Interrupted,
    /// 401 / 403 (exit 3).
    Auth(String),
    /// A circuit breaker (exit 4 refused, exit 5 unavailable).
    Breaker(Trip),
    /// Certainly-unprocessed attempts exhausted their retries (exit 5).
    Unavailable(String),
    /// The ledger could not be written (exit 6).
    Ledger(String),
}

/// Progress counters, shared with the progress bar.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows to send in this run (set once known).
    pub total: AtomicU64,
    /// Rows answered.
    pub done: AtomicU64,
    /// Rows sent.
    pub sent: AtomicU64,
    /// Rows refused.
    pub failed: AtomicU64,
    /// Rows that may have been processed.
    pub unknown: AtomicU64,
}

/// Stop flag (shared with the signal handler) and counters.
pub struct Control {
    /// The run control the signal handler stops.
    pub run: Arc<RunControl>,
    reason: Mutex<Option<Stop>>,
    /// Counters.
    pub counters: Arc<Counters>,
}

impl Control {
    /// A fresh control around `run`.
    pub fn new(run: Arc<RunControl>) -> Self {
        Control {
            run,
            reason: Mutex::new(None),
            counters: Arc::new(Counters::default()),
        }
    }

    /// True once a stop was asked (by a signal or [`stop`](Self::stop)).
    pub fn stopping(&self) -> bool {
        self.run.stopping()
    }

    /// Stops the run for `why` (the first reason is kept).
    pub fn stop(&self, why: Stop) {
        self.reason.lock().expect("stop lock").get_or_insert(why);
        self.run.stop();
    }

    /// Why the run stopped, if it did (a signal counts as `Interrupted`).
    pub fn reason(&self) -> Option<Stop> {
        let r = self.reason.lock().expect("stop lock").clone();
        r.or_else(|| self.stopping().then_some(Stop::Interrupted))
    }
}

/// One campaign's send loop.
pub struct Engine<'a> {
    /// HTTP.
    pub sender: &'a Sender,
    /// The ledger.
    pub ledger: &'a LedgerWriter,
    /// Stop and counters.
    pub control: &'a Control,
    /// What to send.
    pub message: &'a Message,
    /// The tenant.
    pub source: &'a SourceSpec,
    /// Limits.
    pub limits: Limits,
    /// `send retry`: attempts are audited as manual.
    pub manual: bool,
    /// The breaker.
    pub breaker: Mutex<Breaker>,
}

/// Rows fetched from the ledger per query (template, trigger).
const PAGE: usize = 256;

impl Engine<'_> {
    /// Sends every row in `status` (`pending`; `unknown`/`failed` for `send retry`).
    pub async fn run(&self, status: Status) {
        let batch = match self.message {
            Message::Broadcast { batch_size, .. } => *batch_size,
            _ => 1,
        };
        let jobs = futures_util::stream::unfold(
            (0i64, Vec::<JobRow>::new(), false),
            move |(mut after, mut buf, mut done)| async move {
                loop {
                    if self.control.stopping() {
                        return None;
                    }
                    if buf.len() >= batch || (done && !buf.is_empty()) {
                        let job: Vec<JobRow> = buf.drain(..batch.min(buf.len())).collect();
                        return Some((job, (after, buf, done)));
                    }
                    if done {
                        return None;
                    }
                    match self.ledger.fetch(status, after, PAGE.max(batch)).await {
                        Ok(rows) => {
                            done = rows.is_empty();
                            after = rows.last().map_or(after, |r| r.seq);
                            buf.extend(rows);
                        }
                        Err(e) => {
                            self.control.stop(Stop::Ledger(e.to_string()));
                            return None;
                        }
                    }
                }
            },
        );
        jobs.for_each_concurrent(self.limits.concurrency, |job| self.process(job))
            .await;
    }

    fn request_for(&self, rows: &[JobRow]) -> Option<(Request, bool)> {
        match self.message {
            Message::Broadcast {
                channel,
                title,
                content,
                publish_at_ms,
                ..
            } => {
                let ids: Vec<String> = rows.iter().filter_map(|r| r.recipient.clone()).collect();
                let at = publish_at_ms.unwrap_or_else(now_ms);
                Some((
                    render::broadcast(self.source, channel, title, content, at, &ids),
                    true,
                ))
            }
            _ => rows.first()?.request.clone().map(|r| (r, false)),
        }
    }

    async fn process(&self, rows: Vec<JobRow>) {
        let Some((request, is_batch)) = self.request_for(&rows) else {
            return;
        };
        let mut attempts: Arc<[Attempt]> = rows
            .iter()
            .map(|r| Attempt {
                key: r.key.clone(),
                attempt: r.attempts + 1,
                prev: r.status,
            })
            .collect();
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.limits.max_retries)
            .build();
        let mut first = true;
        loop {
            let permit = self.sender.admit().await;
            if self.control.stopping() {
                if !first {
                    self.ledger
                        .release(attempts, "not sent: the run stopped".into());
                }
                return;
            }
            let manual = self.manual.then_some(first);
            let batch = (is_batch && first).then(|| request.clone());
            if let Err(e) = self
                .ledger
                .begin(attempts.clone(), manual, batch, now_ms())
                .await
            {
                self.control.stop(Stop::Ledger(e.to_string()));
                return;
            }
            crash_point("send::after_in_flight");
            let outcome = self.sender.post(&request).await;
            crash_point("send::after_response");
            drop(permit);
            match outcome {
                Outcome::NotProcessed { .. } => {
                    match self.again(attempts, outcome, backoff.next()).await {
                        Some(next) => attempts = next,
                        None => return,
                    }
                    first = false;
                }
                Outcome::Auth { ref error, .. } => {
                    let error = error.clone();
                    self.ledger.attempted(attempts.clone(), outcome, now_ms());
                    self.ledger.release(attempts, format!("not sent: {error}"));
                    self.control.stop(Stop::Auth(error));
                    return;
                }
                _ => return self.record(&attempts, outcome),
            }
        }
    }

    /// After a certainly-unprocessed attempt: records it, then either waits for the next
    /// attempt (`Retry-After` honoured, else the backoff `delay` with full jitter) and returns
    /// its attempt numbers, or, retries exhausted or the run stopping, puts the rows back and
    /// stops the run as unavailable.
    async fn again(
        &self,
        attempts: Arc<[Attempt]>,
        outcome: Outcome,
        delay: Option<Duration>,
    ) -> Option<Arc<[Attempt]>> {
        let Outcome::NotProcessed {
            retry_after,
            ref error,
            ..
        } = outcome
        else {
            return None;
        };
        let error = error.clone();
        self.ledger.attempted(attempts.clone(), outcome, now_ms());
        match delay {
            Some(d) if !self.control.stopping() => {
                self.sender.note_retry();
                tokio::time::sleep(crate::retry::delay(d, retry_after)).await;
                Some(
                    attempts
                        .iter()
                        .map(|a| Attempt {
                            attempt: a.attempt + 1,
                            ..a.clone()
                        })
                        .collect(),
                )
            }
            _ => {
                let tries = attempts.first().map_or(0, |a| a.attempt);
                let note = format!("not sent: {error} (attempt {tries})");
                self.ledger.release(attempts, note.clone());
                if !self.control.stopping() {
                    self.control.stop(Stop::Unavailable(note));
                }
                None
            }
        }
    }

    fn record(&self, attempts: &Arc<[Attempt]>, outcome: Outcome) {
        let n = attempts.len() as u64;
        let c = &self.control.counters;
        match &outcome {
            Outcome::Sent { .. } => c.sent.fetch_add(n, Ordering::Relaxed),
            Outcome::Refused { .. } => c.failed.fetch_add(n, Ordering::Relaxed),
            _ => c.unknown.fetch_add(n, Ordering::Relaxed),
        };
        c.done.fetch_add(n, Ordering::Relaxed);
        let trip = self
            .breaker
            .lock()
            .expect("breaker lock")
            .observe(&outcome, attempts.len());
        self.ledger.finish(attempts.clone(), outcome, now_ms());
        if let Some(t) = trip {
            self.control.stop(Stop::Breaker(t));
        }
    }
}

/// The exit code of a stop reason (issue 10, "Exit codes").
pub fn stop_exit_code(s: &Stop) -> i32 {
    match s {
        Stop::Interrupted => 130,
        Stop::Auth(_) => 3,
        Stop::Breaker(Trip::Refused { .. }) => 4,
        Stop::Breaker(Trip::Unavailable { .. }) | Stop::Unavailable(_) => 5,
        Stop::Ledger(_) => 6,
    }
}
