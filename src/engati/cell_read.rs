//! How one (user, window) cell is read: by `page_number` offsets with the shift checks
//! (fixed windows, [`conversations::pages`]) or by a time cursor (adaptive windows,
//! [`seek::seek_pages`]). Both yield the same [`PageEvent`]s; the pipeline, the `plan` sample
//! and `verify --against-api` read cells through this one type.

use std::sync::Arc;

use super::conversations::{self, FetchPage, PageEvent, Pages, PagingError};
use super::seek::{self, AdaptiveWindows, SeekPages};
use crate::model::Window;

/// How a run reads its cells.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    /// Messages per request (1..=500).
    pub page_size: u32,
    /// Read windows of more than one page twice (`source.double_read`; offsets only: a time
    /// cursor's pages cannot shift).
    pub double_read: bool,
    /// Adaptive windows' shared state (`window = "auto"`), or `None` for fixed windows.
    pub adaptive: Option<Arc<AdaptiveWindows>>,
}

/// The pages of one cell.
pub enum CellPages<F> {
    /// Fixed windows: `page_number` 1, 2, ... until a short page.
    Offsets(Pages<F>),
    /// Adaptive windows: page 1 from a time cursor, split where a full page ends.
    Seek(SeekPages<F>),
}

/// The pages of `user`'s messages in `window`, read as `spec` says.
pub fn cell_pages<F: FetchPage>(
    fetcher: F,
    user: Arc<str>,
    window: Window,
    spec: &ReadSpec,
) -> CellPages<F> {
    match &spec.adaptive {
        Some(a) => CellPages::Seek(seek::seek_pages(
            fetcher,
            user,
            window,
            spec.page_size,
            a.clone(),
        )),
        None => CellPages::Offsets(conversations::pages(
            fetcher,
            user,
            window,
            spec.page_size,
            spec.double_read,
        )),
    }
}

impl<F: FetchPage> CellPages<F> {
    /// True when the next call to [`next`](Self::next) sends a request.
    pub fn will_request(&self) -> bool {
        match self {
            CellPages::Offsets(p) => p.will_request(),
            CellPages::Seek(p) => p.will_request(),
        }
    }

    /// `Conversations API, user U, window A..B` (for errors).
    pub fn describe(&self) -> String {
        match self {
            CellPages::Offsets(p) => p.describe(),
            CellPages::Seek(p) => p.describe(),
        }
    }

    /// Re-reads made so far (of the piece being read, for adaptive windows).
    pub fn rereads(&self) -> u32 {
        match self {
            CellPages::Offsets(p) => p.rereads(),
            CellPages::Seek(p) => p.rereads(),
        }
    }

    /// The next event: `None` when the cell is read or after an error. A
    /// [`PageEvent::Verified`] settles the pages since the previous one; with adaptive windows
    /// more may follow.
    pub async fn next(&mut self) -> Option<Result<PageEvent, PagingError>> {
        match self {
            CellPages::Offsets(p) => p.next().await,
            CellPages::Seek(p) => p.next().await,
        }
    }
}
