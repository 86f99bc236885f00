//! Check 6 (`--against-api --sample N`): committed (user, window) cells fetched again from the
//! API, normalized as the pipeline normalizes them, and their `message_id` sets compared with
//! the rows the output holds for the same user and window.
//!
//! Which cells: the users of the state's users table, each within the user bounds of the
//! ledger's `messages`/`dead_letter` files, in the windows (the run's grid, aligned as the run
//! aligns them) that intersect those files' time spans, clipped to them and, for an
//! incremental user, to the watermark range. N of them are picked by reservoir sampling with a
//! seeded RNG (`--seed`): the same state and seed pick the same cells. Limit: the ledger keeps
//! bounds, not the cells themselves, so a user inside a file's user bounds who was not part of
//! that run (another run's filters) may be sampled, and then differs.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Check, Finding, Findings, read};
use crate::engati::cell_read::{self, ReadSpec};
use crate::engati::client::Client;
use crate::engati::conversations::{PageEvent, PagingError};
use crate::engati::error::RequestError;
use crate::grid::Grid;
use crate::model::Window;
use crate::normalize::PageNormalizer;
use crate::schema::{self, MessageBatchBuilder, RowContext};
use crate::state::{LedgerFile, StateError, StateStore};
use crate::time::rfc3339_ms;

/// Users read from the state per page while collecting cells.
const USERS_PAGE: usize = 10_000;

/// Ids listed in a finding, at most.
const IDS_SHOWN: usize = 5;

/// How to re-fetch cells.
pub struct ApiCheck {
    /// The client (the pipeline's source settings and key).
    pub client: Client,
    /// Row context: provider, customer id and bot key (the ids depend on the bot key).
    pub cx: RowContext,
    /// The pipeline's window grid (cells are picked on it, as the run cut them).
    pub grid: Grid,
    /// How the pipeline reads a cell (page size; adaptive windows).
    pub read: ReadSpec,
    /// Cells to compare.
    pub sample: usize,
    /// RNG seed of the pick.
    pub seed: u64,
}

/// A (user, window) cell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cell {
    /// Channel-user id.
    pub user: String,
    /// Window start, ms since epoch UTC.
    pub start_ms: i64,
    /// Window end (exclusive).
    pub end_ms: i64,
}

/// Picks `sample` committed cells (module docs).
///
/// # Errors
/// SQLite errors.
pub fn pick_cells(
    st: &StateStore,
    ledger: &[LedgerFile],
    grid: Grid,
    sample: usize,
    seed: u64,
) -> Result<Vec<Cell>, StateError> {
    let data: Vec<&LedgerFile> = ledger
        .iter()
        .filter(|f| f.record.stream != "users")
        .collect();
    let marks: HashMap<String, (i64, i64)> = st
        .watermarks_with_prefix("incremental")?
        .into_iter()
        .map(|(_, u, s, e)| (u, (s, e)))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut picked, mut seen) = (Vec::with_capacity(sample), 0u64);
    let mut after: Option<String> = None;
    loop {
        let page = st.users_page(after.as_deref(), USERS_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.user.channel_user_id.clone());
        for u in &page {
            let id = &u.user.channel_user_id;
            let clip = marks.get(id).copied().unwrap_or((i64::MIN, i64::MAX));
            for cell in user_cells(id, &data, grid, clip) {
                // Reservoir sampling: each cell kept with probability sample / seen.
                seen += 1;
                if picked.len() < sample {
                    picked.push(cell);
                } else {
                    let j = rng.random_range(0..seen);
                    if (j as usize) < sample {
                        picked[j as usize] = cell;
                    }
                }
            }
        }
    }
    picked.sort();
    Ok(picked)
}

/// A user's cells: aligned windows intersecting the spans of the files whose user bounds hold
/// the user, clipped to those spans and to `clip`.
fn user_cells(user: &str, data: &[&LedgerFile], grid: Grid, clip: (i64, i64)) -> Vec<Cell> {
    let mut cells = BTreeSet::new();
    for f in data {
        let r = &f.record;
        if r.min_user.as_str() > user || r.max_user.as_str() < user {
            continue;
        }
        let (lo, hi) = (r.min_ms.max(clip.0), r.max_ms.min(clip.1));
        let mut w = grid.window_of(lo);
        while w.start_ms < hi {
            cells.insert((w.start_ms.max(lo), w.end_ms.min(hi)));
            w = grid.window_of(w.end_ms);
        }
    }
    cells
        .into_iter()
        .map(|(start_ms, end_ms)| Cell {
            user: user.to_owned(),
            start_ms,
            end_ms,
        })
        .collect()
}

/// The `message_id`s the API gives for a cell now, normalized as a run normalizes them.
///
/// # Errors
/// The request's error after the client's retries; a read that kept shifting is reported as
/// [`PagingError::Shifted`]'s message.
pub async fn api_ids(check: &ApiCheck, cell: &Cell) -> Result<BTreeSet<String>, PagingError> {
    let window = Window {
        start_ms: cell.start_ms,
        end_ms: cell.end_ms,
    };
    let user: Arc<str> = cell.user.as_str().into();
    let read = ReadSpec {
        double_read: false,
        ..check.read.clone()
    };
    let mut pages = cell_read::cell_pages(check.client.clone(), user.clone(), window, &read);
    let mut norm = PageNormalizer::for_cell(&check.cx, user, None, window);
    let mut builder = MessageBatchBuilder::with_capacity(0, 0);
    let (mut ids, mut rejects, mut held) = (BTreeSet::new(), Vec::new(), Vec::new());
    while let Some(event) = pages.next().await {
        match event? {
            // Pages are data once their read (or piece) is verified, as in a run.
            PageEvent::Page(page) => held.push(page),
            PageEvent::Reread(_) => held.clear(),
            PageEvent::Checked => {}
            PageEvent::Verified => {
                for page in held.drain(..) {
                    let body = std::str::from_utf8(&page.body).unwrap_or_default();
                    norm.page(body, &page.spans, page.number, &mut builder, &mut rejects);
                    let batch = builder.finish();
                    if let Some(col) = batch.column_by_name(schema::MESSAGE_ID) {
                        let col = col.as_string::<i32>();
                        ids.extend((0..col.len()).map(|i| col.value(i).to_owned()));
                    }
                }
            }
        }
    }
    Ok(ids)
}

/// The `message_id`s the output holds for a cell (the ledger's `messages` files that may hold
/// it, rows of the user within the window).
pub fn output_ids(
    out: &Path,
    st: &StateStore,
    cell: &Cell,
) -> Result<BTreeSet<String>, StateError> {
    let files = st.overlapping_files(
        "messages",
        cell.start_ms,
        cell.end_ms,
        &cell.user,
        &cell.user,
    )?;
    let mut ids = BTreeSet::new();
    for f in files {
        // An unreadable or missing file is check 1's finding; its rows count as absent here.
        let _ = read::for_each_row(&out.join(&f.path), true, |(id, user, t)| {
            if user == cell.user && cell.start_ms <= t && t < cell.end_ms {
                ids.insert(id.to_owned());
            }
        });
    }
    Ok(ids)
}

/// Compares the sampled cells; returns the cells compared.
///
/// # Errors
/// A request that failed after the client's retries ([`RequestError`]); SQLite errors are
/// returned as [`ApiFailure::State`].
pub async fn check(
    out: &Path,
    st: &StateStore,
    cells: &[Cell],
    check: &ApiCheck,
    findings: &mut Findings,
) -> Result<u64, ApiFailure> {
    for cell in cells {
        let api = match api_ids(check, cell).await {
            Ok(ids) => ids,
            Err(PagingError::Request(e)) => return Err(ApiFailure::Request(e)),
            Err(e @ PagingError::Shifted(_)) => {
                findings.push(cell_finding(cell, "api_unsettled", false, e.to_string()));
                continue;
            }
        };
        let have = output_ids(out, st, cell).map_err(ApiFailure::State)?;
        let missing: Vec<&String> = api.difference(&have).collect();
        let extra: Vec<&String> = have.difference(&api).collect();
        if !missing.is_empty() {
            let d = format!(
                "{} messages of the API are not in the output: {}",
                missing.len(),
                shown(&missing)
            );
            findings.push(cell_finding(cell, "api_missing_in_output", true, d));
        }
        if !extra.is_empty() {
            let d = format!(
                "{} messages of the output are no longer on the API: {}",
                extra.len(),
                shown(&extra)
            );
            findings.push(cell_finding(cell, "output_not_in_api", true, d));
        }
    }
    Ok(cells.len() as u64)
}

/// Why the API check stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    /// A request failed after retries.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The state store.
    #[error(transparent)]
    State(#[from] StateError),
}

fn shown(ids: &[&String]) -> String {
    let mut s: Vec<&str> = ids.iter().take(IDS_SHOWN).map(|i| i.as_str()).collect();
    if ids.len() > IDS_SHOWN {
        s.push("...");
    }
    s.join(", ")
}

fn cell_finding(cell: &Cell, kind: &'static str, error: bool, detail: String) -> Finding {
    let detail = format!(
        "window {} .. {}: {detail}",
        rfc3339_ms(cell.start_ms),
        rfc3339_ms(cell.end_ms)
    );
    let f = if error {
        Finding::error(Check::Api, kind, detail)
    } else {
        Finding::warning(Check::Api, kind, detail)
    };
    let date = format!("date={}", crate::time::date_string(cell.start_ms));
    f.of_user(&cell.user).in_partition(&date)
}
