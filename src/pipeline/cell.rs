//! One cell's fetch task: the pages of one (user, window) from `engati::cell_read`, each
//! request let through by the [`FetchGate`], each page handed to the writer loop over a small
//! channel (at most four pages buffered per cell).
//!
//! A page is handed on only once its read of the window is verified (the shift rules of
//! `engati::conversations`): a cell of one page goes at once, a cell of several pages is held
//! whole until its last page (and, with `double_read`, its second read) says the read is
//! consistent. A read found shifted is dropped and the window read again; a window that cannot
//! be read consistently becomes [`CellEvent::Unreadable`] (nothing of it is written; the
//! pipeline dead-letters it). A cell holding more than [`HOLD_BYTES`] is handed on as it comes
//! instead, and a shift found after that stops the run ([`CellEvent::ShiftedWhileWritten`]):
//! part of it was written, so its unit is not committed.
//!
//! With adaptive windows (`engati::seek`) a cell is read piece by piece, each piece verified
//! on its own: its pages go as soon as it is complete, and the next piece starts afresh. A
//! piece read by offsets that cannot be read consistently after earlier pieces were sent is
//! [`CellEvent::ShiftedWhileWritten`], for the same reason.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use super::gate::{FetchGate, Ticket};
use crate::engati::cell_read::{self, ReadSpec};
use crate::engati::client::{Client, Page};
use crate::engati::conversations::{PageEvent, PagingError, ShiftError};
use crate::engati::error::RequestError;
use crate::model::Window;

/// Pages a cell may buffer ahead of the writer.
pub const PAGES_AHEAD: usize = 4;

/// Page bodies a cell of several pages holds until its read is verified, at most: 32 MiB.
pub const HOLD_BYTES: u64 = 32 << 20;

/// What a cell task sends to the writer loop.
pub enum CellEvent {
    /// A fetched page of the verified read, holding its gate permits until normalized.
    Page(Page, Ticket),
    /// The last page was sent.
    Done {
        /// Re-reads of the window because its pages shifted (0 for most cells).
        shifted: u32,
    },
    /// The cell failed (after the client's retries).
    Failed(RequestError),
    /// The window's pages kept shifting: no read of it was consistent and nothing of it was
    /// sent.
    Unreadable(ShiftError),
    /// The pages shifted after part of a cell larger than [`HOLD_BYTES`] was sent.
    ShiftedWhileWritten(ShiftError),
}

/// What a cell task needs.
pub struct CellTask {
    /// The client.
    pub client: Client,
    /// The gate.
    pub gate: Arc<FetchGate>,
    /// The channel-user id.
    pub user: Arc<str>,
    /// The cell's window.
    pub window: Window,
    /// How the cell is read (page size, double reads, adaptive windows).
    pub read: ReadSpec,
    /// The cell's position in the walk.
    pub seq: u64,
    /// Notified when the cell becomes the head.
    pub became_head: Arc<Notify>,
}

/// Spawns the fetch task; its events arrive on the returned receiver.
pub fn spawn(t: CellTask) -> (mpsc::Receiver<CellEvent>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(PAGES_AHEAD);
    (rx, tokio::spawn(fetch(t, tx)))
}

/// The pages of the current read not yet sent.
struct Held {
    pages: Vec<(Page, Ticket)>,
    bytes: u64,
    /// Past [`HOLD_BYTES`]: pages go on as they come.
    streaming: bool,
    /// Pages were sent (while streaming): a later read's pages are not data.
    sent: bool,
    /// A piece of an adaptive window was settled and sent: the cell can no longer be given
    /// up whole.
    settled: bool,
}

impl Held {
    /// Sends the held pages; false when the writer is gone.
    async fn send(&mut self, gate: &FetchGate, tx: &mpsc::Sender<CellEvent>) -> bool {
        let mut pages = std::mem::take(&mut self.pages).into_iter();
        self.bytes = 0;
        while let Some((page, ticket)) = pages.next() {
            self.sent = true;
            if let Err(mpsc::error::SendError(CellEvent::Page(_, ticket))) =
                tx.send(CellEvent::Page(page, ticket)).await
            {
                gate.release(ticket);
                pages.for_each(|(_, t)| gate.release(t));
                return false;
            }
        }
        true
    }

    /// Keeps a page of the current read; true when the held pages should go now (past
    /// [`HOLD_BYTES`]: streaming). A page of a confirming read after pages were sent is only
    /// evidence: dropped.
    fn hold(&mut self, page: Page, ticket: Ticket, gate: &FetchGate) -> bool {
        if self.sent {
            gate.release(ticket);
            return false;
        }
        self.bytes += page.body.len() as u64;
        self.pages.push((page, ticket));
        self.streaming |= self.bytes > HOLD_BYTES;
        self.streaming
    }

    /// Drops the held pages (a discarded read), giving their permits back.
    fn drop_all(&mut self, gate: &FetchGate) {
        for (_, t) in self.pages.drain(..) {
            gate.release(t);
        }
        self.bytes = 0;
    }
}

async fn fetch(t: CellTask, tx: mpsc::Sender<CellEvent>) {
    let mut pages = cell_read::cell_pages(t.client, t.user, t.window, &t.read);
    let mut held = Held {
        pages: Vec::new(),
        bytes: 0,
        streaming: false,
        sent: false,
        settled: false,
    };
    let mut shifted = 0;
    loop {
        let ticket = if pages.will_request() {
            Some(t.gate.reserve(t.seq, &t.became_head).await)
        } else {
            None
        };
        let Some(event) = pages.next().await else {
            break;
        };
        let end = match (event, ticket) {
            (Ok(PageEvent::Page(page)), Some(ticket)) => {
                fail::fail_point!("pipeline::page", |_| crate::hooks::crash(
                    "after a page was received"
                ));
                let ticket = ticket.settle(&t.gate, page.body.len() as u64);
                if held.hold(page, ticket, &t.gate) && !held.send(&t.gate, &tx).await {
                    return;
                }
                continue;
            }
            (event, ticket) => {
                if let Some(ticket) = ticket {
                    // A page asked again to check it, or a request that failed.
                    t.gate.release(ticket);
                }
                match event {
                    Ok(PageEvent::Verified) => {
                        if !held.send(&t.gate, &tx).await {
                            return;
                        }
                        // Adaptive windows settle a cell piece by piece: what was sent is
                        // verified, and the next piece starts afresh.
                        held.settled |= held.sent;
                        held.sent = false;
                        held.streaming = false;
                        continue;
                    }
                    Ok(PageEvent::Reread(shift)) => {
                        held.drop_all(&t.gate);
                        shifted += u32::from(shift.is_some());
                        match shift {
                            Some(last) if held.sent => CellEvent::ShiftedWhileWritten(ShiftError {
                                what: pages.describe(),
                                reads: pages.rereads(),
                                last,
                            }),
                            _ => continue,
                        }
                    }
                    Ok(PageEvent::Checked | PageEvent::Page(_)) => continue,
                    Err(PagingError::Request(e)) => CellEvent::Failed(e),
                    Err(PagingError::Shifted(e)) if held.sent || held.settled => {
                        CellEvent::ShiftedWhileWritten(e)
                    }
                    Err(PagingError::Shifted(e)) => CellEvent::Unreadable(e),
                }
            }
        };
        held.drop_all(&t.gate);
        let _ = tx.send(end).await;
        return;
    }
    let _ = tx.send(CellEvent::Done { shifted }).await;
}
