//! The one loop that drives every [`Sink`]: it runs on the sink's own thread, takes the
//! pipeline's [`SinkMsg`]s in plan order, buffers each unit's dead letters, commits or aborts
//! units, and keeps the live counters and the [`SinkReport`].

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{DeadLetters, Sink, SinkCounters, SinkEnd, SinkError, SinkMsg, SinkReport, UnitInfo};
use crate::privacy::Privacy;
use crate::state::StateStore;

/// What the sink thread hands back.
pub struct SinkOutcome {
    /// What it did.
    pub report: SinkReport,
    /// The state store, handed back (outputs that keep state).
    pub state: Option<StateStore>,
    /// The error that stopped it, if any.
    pub error: Option<SinkError>,
}

/// The running sink thread; [`join`](SinkHandle::join) it after dropping the sender.
pub struct SinkHandle(std::thread::JoinHandle<SinkOutcome>);

impl SinkHandle {
    /// Waits for the thread (off the async executor).
    pub async fn join(self) -> SinkOutcome {
        let res = tokio::task::spawn_blocking(move || self.0.join()).await;
        match res {
            Ok(Ok(outcome)) => outcome,
            _ => SinkOutcome {
                report: SinkReport::default(),
                state: None,
                error: Some(SinkError::Crashed("the sink thread panicked".into())),
            },
        }
    }
}

/// Starts `sink` on its own thread, fed by a channel of `capacity` messages. `run_id` goes
/// into dead-letter lines; `counters` show committed progress.
pub fn spawn<S: Sink>(
    sink: S,
    run_id: String,
    counters: Arc<SinkCounters>,
    capacity: usize,
) -> (mpsc::Sender<SinkMsg>, SinkHandle) {
    spawn_with(sink, run_id, counters, capacity, None)
}

/// [`spawn`], with a privacy policy applied to the rows and dead letters before the sink sees
/// them.
pub fn spawn_with<S: Sink>(
    sink: S,
    run_id: String,
    counters: Arc<SinkCounters>,
    capacity: usize,
    privacy: Option<Privacy>,
) -> (mpsc::Sender<SinkMsg>, SinkHandle) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let handle = std::thread::Builder::new()
        .name("engati-etl-sink".into())
        .spawn(move || {
            let mut runner = Runner {
                sink: Box::new(sink),
                run_id,
                counters,
                report: SinkReport::default(),
                unit: None,
                dead: DeadLetters::default(),
                privacy,
            };
            let error = runner.sink.start().and_then(|()| runner.run(rx)).err();
            if runner.unit.take().is_some() {
                runner.sink.abort();
            }
            let SinkEnd {
                crm,
                state,
                rows_uncommitted,
            } = runner.sink.finish();
            runner.report.crm = crm;
            runner.report.rows_written += rows_uncommitted;
            SinkOutcome {
                report: runner.report,
                state,
                error,
            }
        })
        .expect("spawning a thread");
    (tx, SinkHandle(handle))
}

struct Runner {
    sink: Box<dyn Sink>,
    run_id: String,
    counters: Arc<SinkCounters>,
    report: SinkReport,
    unit: Option<Arc<UnitInfo>>,
    dead: DeadLetters,
    privacy: Option<Privacy>,
}

impl Runner {
    fn run(&mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<(), SinkError> {
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                SinkMsg::BeginUnit(info) => {
                    if self.unit.take().is_some() {
                        self.sink.abort();
                    }
                    self.dead = DeadLetters::default();
                    self.unit = Some(info.clone());
                    self.sink.begin_unit(info)?;
                }
                SinkMsg::Rows(rows) => {
                    self.open_unit()?;
                    if rows.num_rows() > 0 {
                        let rows = match &self.privacy {
                            Some(p) => p.messages(&rows).map_err(|e| SinkError::Arrow {
                                path: "messages".into(),
                                source: e,
                            })?,
                            None => rows,
                        };
                        self.sink.write(rows)?;
                    }
                }
                SinkMsg::Rejects { cell, rejects } => {
                    let unit = self.open_unit()?;
                    let c = unit.cells.get(cell as usize).ok_or_else(|| {
                        SinkError::Crashed(format!("cell {cell} is not in the unit"))
                    })?;
                    self.dead
                        .push_rejects(&self.run_id, c, &rejects, self.privacy.as_ref());
                }
                SinkMsg::UnreadableCell { cell, reason } => {
                    let unit = self.open_unit()?;
                    let c = unit.cells.get(cell as usize).ok_or_else(|| {
                        SinkError::Crashed(format!("cell {cell} is not in the unit"))
                    })?;
                    self.dead.push_unreadable(
                        &self.run_id,
                        cell,
                        c,
                        &reason,
                        self.privacy.as_ref(),
                    );
                }
                SinkMsg::EndUnit { cells_done } => self.commit(cells_done)?,
                SinkMsg::AbortUnit => {
                    if self.unit.take().is_some() {
                        self.sink.abort();
                    }
                }
                SinkMsg::WriteUsers { cx } => {
                    if let Some((file, users)) = self.sink.write_users(&cx)? {
                        self.report.users_written = users;
                        self.report.add_file(file);
                    }
                }
            }
        }
        Ok(())
    }

    fn open_unit(&self) -> Result<Arc<UnitInfo>, SinkError> {
        self.unit
            .clone()
            .ok_or_else(|| SinkError::Crashed("rows arrived outside a unit".into()))
    }

    fn commit(&mut self, cells_done: u32) -> Result<(), SinkError> {
        let unit = self
            .unit
            .take()
            .ok_or_else(|| SinkError::Crashed("EndUnit outside a unit".into()))?;
        let done = (cells_done as usize).min(unit.cells.len()) as u32;
        let dead = std::mem::take(&mut self.dead);
        let committed = match self.sink.commit(done, dead) {
            Ok(c) => c,
            Err(e) => {
                self.sink.abort();
                return Err(e);
            }
        };
        self.counters
            .committed(committed.rows, u64::from(done), committed.rejects);
        if done > 0 {
            self.report.add_commit(committed, u64::from(done));
        } else {
            self.report.rows_written += committed.rows;
        }
        Ok(())
    }
}
