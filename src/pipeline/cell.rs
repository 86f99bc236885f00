//! One cell's fetch task: the pages of one (user, window) from `engati::conversations`, each
//! request let through by the [`FetchGate`], each page handed to the writer loop over a small
//! channel (at most four pages buffered per cell).

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use super::gate::{FetchGate, Ticket};
use crate::engati::client::{Client, Page};
use crate::engati::conversations;
use crate::engati::error::RequestError;
use crate::model::Window;

/// Pages a cell may buffer ahead of the writer.
pub const PAGES_AHEAD: usize = 4;

/// What a cell task sends to the writer loop.
pub enum CellEvent {
    /// A fetched page, holding its gate permits until normalized.
    Page(Page, Ticket),
    /// The last page was sent.
    Done,
    /// The cell failed (after the client's retries).
    Failed(RequestError),
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
    /// Messages per page.
    pub page_size: u32,
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

async fn fetch(t: CellTask, tx: mpsc::Sender<CellEvent>) {
    let mut pages = conversations::pages(t.client, t.user, t.window, t.page_size);
    while !pages.is_done() {
        let ticket = t.gate.reserve(t.seq, &t.became_head).await;
        match pages.next().await {
            Some(Ok(page)) => {
                fail::fail_point!("pipeline::page", |_| crate::hooks::crash(
                    "after a page was received"
                ));
                let ticket = ticket.settle(&t.gate, page.body.len() as u64);
                if let Err(mpsc::error::SendError(CellEvent::Page(_, ticket))) =
                    tx.send(CellEvent::Page(page, ticket)).await
                {
                    t.gate.release(ticket);
                    return;
                }
            }
            Some(Err(e)) => {
                t.gate.release(ticket);
                let _ = tx.send(CellEvent::Failed(e)).await;
                return;
            }
            None => t.gate.release(ticket),
        }
    }
    let _ = tx.send(CellEvent::Done).await;
}
