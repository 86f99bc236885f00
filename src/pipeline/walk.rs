//! The writer loop: walks the plan's units in order, keeps up to `lookahead` cells fetching
//! ahead of the one being written (the *head*), normalizes the head's pages into shared batches
//! and sends them to the sink, and ends each unit with its commit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Notify, mpsc};

use super::batcher::Batcher;
use super::cell::{self, CellEvent, CellTask};
use super::gate::FetchGate;
use super::resume::Prepared;
use super::{RunControl, RunError, RunSpec};
use crate::engati::cell_read::ReadSpec;
use crate::engati::client::{Client, Page};
use crate::engati::seek::WindowsReport;
use crate::normalize::PageNormalizer;
use crate::plan::{Unit, Units};
use crate::schema::RowContext;
use crate::sink::{CellRef, SinkError, SinkMsg, UnitInfo};

/// What the walk counted, for the report.
#[derive(Debug, Default)]
pub struct Walked {
    /// Cells skipped because a resumed run had committed them.
    pub cells_skipped: u64,
    /// Messages the API returned just outside a cell's window (the 1 ms overlap), skipped.
    pub outside_window: u64,
    /// Cells whose pages shifted while being read and that were read again.
    pub cells_reread: u64,
    /// Cells whose pages kept shifting: dead-lettered, not written.
    pub cells_unreadable: u64,
    /// What adaptive windows did (`window = "auto"` only).
    pub windows: Option<WindowsReport>,
}

/// A cell being fetched.
struct InFlight {
    seq: u64,
    /// Index into `Walker::units`.
    unit: usize,
    /// Index into the unit's cells.
    cell: u32,
    rx: mpsc::Receiver<CellEvent>,
    task: tokio::task::JoinHandle<()>,
    /// Wakes the cell's task when it becomes the head (exempt from the gate).
    became_head: Arc<Notify>,
    /// A page of this cell was written: it must be finished before a commit.
    started: bool,
}

struct Walker<'a> {
    spec: &'a RunSpec,
    control: &'a RunControl,
    client: &'a Client,
    cx: &'a RowContext,
    prepared: &'a Prepared,
    tx: &'a mpsc::Sender<SinkMsg>,
    gate: Arc<FetchGate>,
    /// How cells are read (offsets, or adaptive windows with their shared state).
    read: ReadSpec,
    unit_iter: Units<'a>,
    /// Units dispatched and not yet ended: unit `first_unit + i` is `units[i]` (units are
    /// numbered in plan order; an ended unit leaves, so memory stays one lookahead deep).
    units: VecDeque<Arc<UnitInfo>>,
    first_unit: usize,
    queue: VecDeque<InFlight>,
    next_seq: u64,
    next_unit: usize,
    next_cell: u32,
    exhausted: bool,
    /// The unit open in the sink and the cells of it written.
    current: Option<(usize, u32)>,
    batcher: Batcher,
    /// The head's normalizer (it counts identical messages across the cell's pages).
    normalizer: Option<(u64, PageNormalizer<'a>)>,
}

/// Walks the plan. Counts go to `walked`; rows go to the sink over `tx`.
///
/// # Errors
/// The first cell's [`RunError::Source`], or the sink having stopped.
pub async fn walk(
    spec: &RunSpec,
    control: &RunControl,
    client: &Client,
    prepared: &Prepared,
    cx: &RowContext,
    tx: &mpsc::Sender<SinkMsg>,
    walked: &mut Walked,
) -> Result<(), RunError> {
    let mut w = Walker {
        spec,
        control,
        client,
        cx,
        prepared,
        tx,
        gate: Arc::new(FetchGate::new(spec.tuning.buffer_bytes)),
        read: spec.read_spec(),
        unit_iter: prepared.plan.units(),
        units: VecDeque::new(),
        first_unit: 0,
        queue: VecDeque::new(),
        next_seq: 0,
        next_unit: 0,
        next_cell: 0,
        exhausted: false,
        current: None,
        batcher: Batcher::new(),
        normalizer: None,
    };
    let result = w.run(walked).await;
    walked.windows = w.read.adaptive.as_ref().map(|a| a.report());
    if result.is_err() {
        for f in w.queue.drain(..) {
            f.task.abort();
        }
        let _ = w.send(SinkMsg::AbortUnit).await;
    }
    result
}

impl<'a> Walker<'a> {
    async fn run(&mut self, walked: &mut Walked) -> Result<(), RunError> {
        loop {
            if self.tx.is_closed() {
                // The sink ended (a closed pipe, a failure): no more requests.
                self.control.stop();
            }
            if self.control.stopping() {
                self.cancel_pending();
            }
            self.dispatch(walked)?;
            let Some(head) = self.queue.front() else {
                break;
            };
            if !self.gate.is_head(head.seq) {
                self.gate.set_head(head.seq);
                head.became_head.notify_one();
            }
            if self.control.stopping() && !head.started && !head.task.is_finished() {
                // Stopping: what is not fetched in full and not begun is dropped (refetched on
                // resume); everything before it gets committed.
                for f in self.queue.drain(..) {
                    f.task.abort();
                }
                break;
            }
            let unit = head.unit;
            if self.current.map(|(u, _)| u) != Some(unit) {
                self.end_unit().await?;
                self.current = Some((unit, 0));
                self.send(SinkMsg::BeginUnit(self.unit(unit).clone()))
                    .await?;
            }
            let head = self.queue.front_mut().expect("checked above");
            let event = tokio::select! {
                e = head.rx.recv() => e,
                () = self.control.stopped(), if !self.control.stopping() => continue,
            };
            match event {
                Some(CellEvent::Page(page, ticket)) => {
                    head.started = true;
                    let (seq, unit, cell) = (head.seq, head.unit, head.cell);
                    self.page(seq, unit, cell, &page, walked).await?;
                    self.gate.release(ticket);
                }
                Some(CellEvent::Done { shifted }) => {
                    walked.cells_reread += u64::from(shifted > 0);
                    self.cell_done();
                }
                Some(CellEvent::Unreadable(e)) => {
                    tracing::warn!(error = %e, "A window's pages kept shifting; its cell is dead-lettered.");
                    let reason = format!(
                        "{e}; the cell was not written and its watermark not moved (the next run reads it again)"
                    );
                    let cell = head.cell;
                    walked.cells_unreadable += 1;
                    self.send(SinkMsg::UnreadableCell { cell, reason }).await?;
                    self.cell_done();
                }
                Some(CellEvent::ShiftedWhileWritten(e)) => return Err(RunError::Shifted(e)),
                Some(CellEvent::Failed(e)) => return Err(e.into()),
                None => {
                    return Err(RunError::Sink(SinkError::Crashed(
                        "a fetch task ended without a result".into(),
                    )));
                }
            }
        }
        self.end_unit().await
    }

    /// The head cell was consumed whole.
    fn cell_done(&mut self) {
        self.queue.pop_front();
        if let Some((_, done)) = self.current.as_mut() {
            *done += 1;
        }
        self.control.cells_done.fetch_add(1, Ordering::Relaxed);
    }

    /// On a stop: the cells behind the head that are not fetched in full are cancelled at once
    /// (their queued requests are never sent; a request in flight is dropped), and with them
    /// every cell after them, which could not be committed before them anyway. The head is
    /// finished, and the cells fetched in full before the first cancelled one are written.
    fn cancel_pending(&mut self) {
        let keep = self
            .queue
            .iter()
            .skip(1)
            .position(|f| !f.task.is_finished())
            .map_or(self.queue.len(), |i| i + 1);
        for f in self.queue.drain(keep..) {
            f.task.abort();
        }
    }

    /// Unit `n` (plan order), dispatched and not yet ended.
    fn unit(&self, n: usize) -> &Arc<UnitInfo> {
        &self.units[n - self.first_unit]
    }

    /// Starts cells while there is room, no stop was asked and the plan has more.
    ///
    /// # Errors
    /// The state store's, reading the plan's next users.
    fn dispatch(&mut self, walked: &mut Walked) -> Result<(), RunError> {
        let lookahead = self.spec.tuning.lookahead.max(1);
        while self.queue.len() < lookahead && !self.control.stopping() && !self.exhausted {
            if self.next_unit >= self.first_unit + self.units.len()
                && !self.next_planned_unit(walked)?
            {
                continue;
            }
            let info = self.unit(self.next_unit).clone();
            let c = &info.cells[self.next_cell as usize];
            let seq = self.next_seq;
            self.next_seq += 1;
            let became_head = Arc::new(Notify::new());
            let (rx, task) = cell::spawn(CellTask {
                client: self.client.clone(),
                gate: self.gate.clone(),
                user: c.user.clone(),
                window: c.window,
                read: self.read.clone(),
                seq,
                became_head: became_head.clone(),
            });
            self.queue.push_back(InFlight {
                seq,
                unit: self.next_unit,
                cell: self.next_cell,
                rx,
                task,
                became_head,
                started: false,
            });
            self.next_cell += 1;
            if self.next_cell as usize >= info.cells.len() {
                self.next_unit += 1;
                self.next_cell = 0;
            }
        }
        Ok(())
    }

    /// Takes the plan's next unit (skipping what a resumed run committed). Returns false when
    /// the unit was skipped whole or the plan is exhausted.
    ///
    /// # Errors
    /// The state store's, reading the plan's users or the resumed run's progress.
    fn next_planned_unit(&mut self, walked: &mut Walked) -> Result<bool, RunError> {
        let Some(u) = self.unit_iter.next() else {
            self.exhausted = true;
            return Ok(false);
        };
        let Unit {
            key, window, cells, ..
        } = u?;
        let done = self.prepared.cells_done(&key.0)? as usize;
        walked.cells_skipped += done.min(cells.len()) as u64;
        if done >= cells.len() {
            self.control
                .cells_done
                .fetch_add(cells.len() as u64, Ordering::Relaxed);
            return Ok(false);
        }
        let cells = cells
            .into_iter()
            .skip(done)
            .map(|c| CellRef {
                user: c.user,
                channel: c.channel,
                window: c.window,
            })
            .collect();
        self.units.push_back(Arc::new(UnitInfo {
            key,
            window,
            first_cell: done as u32,
            cells,
        }));
        Ok(true)
    }

    /// Normalizes one of the head's pages into the batch; sends the batch when full and the
    /// page's rejects.
    async fn page(
        &mut self,
        seq: u64,
        unit: usize,
        cell: u32,
        page: &Page,
        walked: &mut Walked,
    ) -> Result<(), RunError> {
        if self.normalizer.as_ref().is_none_or(|(s, _)| *s != seq) {
            let c = &self.unit(unit).cells[cell as usize];
            let n = PageNormalizer::for_cell(self.cx, c.user.clone(), c.channel.clone(), c.window);
            self.normalizer = Some((seq, n));
        }
        let (_, norm) = self.normalizer.as_mut().expect("set above");
        // The client checked the body is UTF-8 before returning it.
        let body = std::str::from_utf8(&page.body).unwrap_or("");
        let mut rejects = Vec::new();
        let counts = norm.page(
            body,
            &page.spans,
            page.number,
            &mut self.batcher.builder,
            &mut rejects,
        );
        self.batcher.bytes += page.body.len();
        walked.outside_window += counts.out_of_window;
        self.control.rows.fetch_add(counts.rows, Ordering::Relaxed);
        if self.batcher.full()
            && let Some(rows) = self.batcher.take()
        {
            self.send(SinkMsg::Rows(rows)).await?;
        }
        if !rejects.is_empty() {
            self.send(SinkMsg::Rejects { cell, rejects }).await?;
        }
        Ok(())
    }

    /// Ends the unit open in the sink, if any: the rows still batched, then the commit of the
    /// cells written; the unit (and any before it) then leaves the walker: every cell still
    /// queued belongs to a later unit.
    async fn end_unit(&mut self) -> Result<(), RunError> {
        let Some((unit, cells_done)) = self.current.take() else {
            return Ok(());
        };
        if let Some(rows) = self.batcher.take() {
            self.send(SinkMsg::Rows(rows)).await?;
        }
        self.send(SinkMsg::EndUnit { cells_done }).await?;
        while self.first_unit <= unit && self.units.pop_front().is_some() {
            self.first_unit += 1;
        }
        Ok(())
    }

    async fn send(&self, msg: SinkMsg) -> Result<(), RunError> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| RunError::Sink(SinkError::Crashed("the sink stopped".into())))
    }
}
