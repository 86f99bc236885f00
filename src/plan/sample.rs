//! The `plan` command's sample: a few cells fetched exactly as the run fetches them, to learn
//! the density of the data (pages, messages and bytes per cell) and the API's latency.
//!
//! Which cells: `users` users evenly spread in id order among those with cells, and for each
//! `windows` of its windows evenly spread over its range ([`estimate::sample_positions`]): the
//! same plan and settings always sample the same cells. Each cell's pages are read until a
//! short page, at most `page_cap` ([`PAGE_CAP`] unless `--sample-pages` says otherwise); so the
//! sample costs at most `users x windows x page_cap` requests. Requests are paced below `max_rps` and run at most [`LANES`] at a time (and within
//! `concurrency`), so neither the rate limit nor a permit is waited for: the time measured is
//! the request's own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::Plan;
use super::estimate::{self, CellSample};
use crate::engati::cell_read::{self, ReadSpec};
use crate::engati::client::Client;
use crate::engati::conversations;
use crate::engati::error::RequestError;
use crate::model::Window;
use crate::state::StateError;

/// Pages read per sampled cell at most, by default (`--sample-pages`); a cell with more is
/// counted as a lower bound.
pub const PAGE_CAP: u32 = 3;

/// Sampled cells fetched at once, at most.
pub const LANES: usize = 4;

/// Users read from the plan per page while picking.
const PICK_PAGE: usize = 10_000;

/// A cell to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCell {
    /// Channel-user id.
    pub user: Arc<str>,
    /// The cell's window, clipped to the user's range.
    pub window: Window,
}

/// Picks the cells to sample (module docs). `users_with_cells` is the number of the plan's
/// users that have a cell.
///
/// # Errors
/// The store's errors.
pub fn pick_cells(
    plan: &Plan,
    users_with_cells: u64,
    users: u64,
    windows: u64,
) -> Result<Vec<SampleCell>, StateError> {
    let wanted = estimate::sample_positions(users_with_cells, users);
    let mut picked = Vec::new();
    let (mut index, mut next) = (0u64, wanted.iter().peekable());
    let mut after: Option<Arc<str>> = None;
    while next.peek().is_some() {
        let page = plan
            .users
            .page(after.as_deref(), plan.until_ms, PICK_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for u in page {
            if next.peek() == Some(&&index) {
                next.next();
                picked.extend(
                    user_windows(plan, u.from_ms, windows).map(|window| SampleCell {
                        user: u.id.clone(),
                        window,
                    }),
                );
            }
            index += 1;
        }
    }
    Ok(picked)
}

/// `windows` of a user's windows (from `from_ms` to the plan's end), evenly spread.
fn user_windows(plan: &Plan, from_ms: i64, windows: u64) -> impl Iterator<Item = Window> + '_ {
    let first = plan.grid.index(from_ms);
    let n = plan.grid.windows_between(from_ms, plan.until_ms);
    estimate::sample_positions(n, windows)
        .into_iter()
        .map(move |j| {
            let w = plan.grid.window(first + j as i64);
            Window {
                start_ms: w.start_ms.max(from_ms),
                end_ms: w.end_ms.min(plan.until_ms),
            }
        })
}

/// Keeps requests at most `rate` per second, spaced evenly.
struct Pacer {
    next: tokio::sync::Mutex<Instant>,
    interval: Duration,
}

impl Pacer {
    async fn wait(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep(*next - now).await;
        }
        *next = (*next).max(now) + self.interval;
    }
}

/// Fetches the sampled cells (module docs), in order, each up to `page_cap` pages of
/// `page_size` messages.
///
/// # Errors
/// The first failed request (after the client's retries).
pub async fn fetch(
    client: &Client,
    cells: Vec<SampleCell>,
    read: &ReadSpec,
    page_cap: u32,
) -> Result<Vec<CellSample>, RequestError> {
    let cfg = client.config();
    // 10% under max_rps: the shared limiter then always has a token ready.
    let per_sec = f64::from(cfg.max_rps.max(1)) * 0.9;
    let pacer = Pacer {
        next: tokio::sync::Mutex::new(Instant::now()),
        interval: Duration::from_secs_f64(1.0 / per_sec),
    };
    let lanes = LANES.min(cfg.concurrency.max(1));
    let pacer = &pacer;
    futures_util::stream::iter(cells)
        .map(|c| sample_cell(client, pacer, c, read, page_cap))
        .buffered(lanes)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn sample_cell(
    client: &Client,
    pacer: &Pacer,
    cell: SampleCell,
    read: &ReadSpec,
    page_cap: u32,
) -> Result<CellSample, RequestError> {
    // One read, as a run with its defaults reads (no double read).
    let read = ReadSpec {
        double_read: false,
        ..read.clone()
    };
    let mut pages = cell_read::cell_pages(client.clone(), cell.user, cell.window, &read);
    let mut s = CellSample {
        pages: 0,
        messages: 0,
        bytes: 0,
        latencies_s: Vec::new(),
        cut: false,
    };
    loop {
        if pages.will_request() {
            if s.pages == page_cap {
                s.cut = true;
                break;
            }
            pacer.wait().await;
        }
        let t = Instant::now();
        let Some(event) = pages.next().await else {
            break;
        };
        let event = match event {
            Ok(e) => e,
            Err(conversations::PagingError::Request(e)) => return Err(e),
            // Pages shifting under live data while sampled: what was read is a lower bound.
            Err(conversations::PagingError::Shifted(_)) => {
                s.cut = true;
                break;
            }
        };
        match event {
            conversations::PageEvent::Page(page) => {
                s.latencies_s.push(t.elapsed().as_secs_f64());
                s.pages += 1;
                s.messages += page.spans.len() as u64;
                s.bytes += page.body.len() as u64;
            }
            // A page asked again to check a repeat: a request, no data.
            conversations::PageEvent::Checked => {
                s.latencies_s.push(t.elapsed().as_secs_f64());
                s.pages += 1;
            }
            // A shifted read starts over: its pages were requests, its data is void.
            conversations::PageEvent::Reread(_) => {
                s.messages = 0;
                s.bytes = 0;
            }
            // The read (or, with adaptive windows, a piece of it) is complete.
            conversations::PageEvent::Verified => {}
        }
    }
    Ok(s)
}
