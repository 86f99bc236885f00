//! Adaptive windows (`window = "auto"`): one cell's messages read by a **time cursor** instead
//! of deep `page_number` offsets (README, "Adaptive windows"; docs/engati-api.md,
//! "Conversations API").
//!
//! The cell `[start, end)` is asked whole, page 1 only. A page shorter than `page_size` holds
//! everything: the cell cost one request. A full page shows where the data is: its messages
//! are in time order (page 1 oldest), so everything before the time `t` of its last message is
//! on it, and the rest of the cell is `[t, end)`: the window is **split at `t`**, the page's
//! messages before `t` are kept, and `[t, end)` is asked next, page 1 again. Messages at `t`
//! itself are dropped from the first page and read whole from the second, so a run of
//! identical messages in one millisecond is never cut in two. A dense user therefore costs
//! about `ceil(messages / (page_size - 1))` requests, never reads past page 1, and cannot be
//! hurt by [pages that shift](super::conversations) (each request is its own page 1).
//!
//! Each request asks `[cursor - 1 ms, cut]` like the fixed windows do (the API's bounds may be
//! inclusive or exclusive, undocumented), and keeps `[cursor, cut)`: messages before the cursor
//! were kept from the page before. At the cell's own edges the normalizer keeps `[start, end)`
//! as for any cell (those messages count as outside the window).
//!
//! When a full page cannot move the cursor (all its messages share one millisecond, or its
//! times do not ascend, or none of them can be read), that piece is read by offset paging
//! ([`conversations::pages`], with its shift checks) and the cursor moves past it.
//!
//! **Too long a range.** The API's limit on a range's length is undocumented. A 400 with code
//! 1003 (`INVALID_INPUT_DATE_VALUE`) for a range longer than [`MIN_SPAN_MS`] halves the span
//! asked and asks again; the shorter span is remembered for the rest of the run (shared by all
//! cells, [`AdaptiveWindows`]) and reported.
//!
//! Every piece read is settled with [`PageEvent::Verified`] as soon as it is complete (the
//! pipeline hands its pages on and goes on with the cell), so a cell of any size holds at most
//! one piece's pages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::client::Page;
use super::conversations::{FetchPage, PageEvent, PageRequest, Pages, PagingError, pages};
use super::error::{ApiError, RequestError};
use super::wire::{WireMessage, parse_timestamp};
use crate::model::Window;

/// The shortest span the halving on a 400 goes down to, ms: 1 hour. A 400 for a range this
/// short is the API refusing the request, not its length: the run fails as for any 400.
pub const MIN_SPAN_MS: i64 = 3_600_000;

/// What a run's adaptive windows share: the longest range asked (halved on a 400 for a
/// too-long range, and remembered) and the counts the run report gives.
#[derive(Debug)]
pub struct AdaptiveWindows {
    configured_ms: i64,
    span_ms: AtomicI64,
    halved: AtomicU64,
    splits: AtomicU64,
    offset_reads: AtomicU64,
}

/// The run report's `windows` section (adaptive windows only).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct WindowsReport {
    /// `max_window` as configured, ms.
    pub max_window_ms: i64,
    /// The longest range asked at the end of the run, ms: `max_window_ms` unless the API
    /// refused a range as too long (then halved until it did not).
    pub span_ms: i64,
    /// Times the span was halved after a 400 for a too-long range.
    pub halved: u64,
    /// Full first pages that split their window at their last message's time (each one
    /// request more than a cell of one page).
    pub splits: u64,
    /// Pieces read by `page_number` offsets because a full page could not move the time
    /// cursor (one millisecond with more than `page_size` messages, or pages out of time order).
    pub offset_reads: u64,
}

impl AdaptiveWindows {
    /// Shared state for a run whose windows are at most `max_window_ms` long.
    pub fn new(max_window_ms: i64) -> Arc<Self> {
        Arc::new(AdaptiveWindows {
            configured_ms: max_window_ms,
            span_ms: AtomicI64::new(max_window_ms.max(1)),
            halved: AtomicU64::new(0),
            splits: AtomicU64::new(0),
            offset_reads: AtomicU64::new(0),
        })
    }

    /// The longest range to ask now, ms.
    pub fn span_ms(&self) -> i64 {
        self.span_ms.load(Ordering::Relaxed)
    }

    /// Remembers that a range of `refused_ms` was refused as too long: the span becomes at
    /// most half of it (never below [`MIN_SPAN_MS`]).
    fn halve(&self, refused_ms: i64) {
        let half = (refused_ms / 2).max(MIN_SPAN_MS);
        if self.span_ms.fetch_min(half, Ordering::Relaxed) > half {
            self.halved.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures for the run report.
    pub fn report(&self) -> WindowsReport {
        WindowsReport {
            max_window_ms: self.configured_ms,
            span_ms: self.span_ms(),
            halved: self.halved.load(Ordering::Relaxed),
            splits: self.splits.load(Ordering::Relaxed),
            offset_reads: self.offset_reads.load(Ordering::Relaxed),
        }
    }
}

/// What [`SeekPages::next`] does next.
enum Step<F> {
    /// Ask `[cursor, ..)`, page 1.
    Ask,
    /// The piece just yielded is complete: say so.
    Settle,
    /// A piece `[cursor, end_ms)` read by offsets.
    Offset { pages: Box<Pages<F>>, end_ms: i64 },
    /// Nothing more.
    Done,
}

/// The pages of one cell read by a time cursor (module docs). Yields [`PageEvent::Page`]s,
/// each piece closed by a [`PageEvent::Verified`]; an offset-read piece may also yield
/// [`PageEvent::Reread`] (its own pages since the last `Verified` are void) and
/// [`PageEvent::Checked`].
pub struct SeekPages<F> {
    fetcher: F,
    user: Arc<str>,
    window: Window,
    page_size: u32,
    shared: Arc<AdaptiveWindows>,
    /// The next message time to read, ms since epoch UTC.
    cursor: i64,
    /// The API was seen to read `start_date` as inclusive (a full page of messages at the
    /// time asked as start): ask `[cursor, ..]` instead of `[cursor - 1 ms, ..]`.
    start_inclusive: bool,
    /// Pages yielded so far (their `number`).
    yielded: u32,
    /// Content hashes of the messages kept whose time cannot be read (they may come back in
    /// the next, overlapping request; each is kept once).
    unreadable: HashSet<u64>,
    step: Step<F>,
}

/// The pages of `user`'s messages in `window`, read by a time cursor (module docs).
pub fn seek_pages<F: FetchPage>(
    fetcher: F,
    user: Arc<str>,
    window: Window,
    page_size: u32,
    shared: Arc<AdaptiveWindows>,
) -> SeekPages<F> {
    SeekPages {
        fetcher,
        user,
        cursor: window.start_ms,
        start_inclusive: false,
        window,
        page_size: page_size.max(1),
        shared,
        yielded: 0,
        unreadable: HashSet::new(),
        step: Step::Ask,
    }
}

/// What a full page says about where the cell's data goes on.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Everything up to the piece's end is on this page: keep it all, the piece is done.
    Complete,
    /// Split at `t`: keep the messages before `t`, go on from `t`.
    SplitAt(i64),
    /// The page cannot move the cursor: read up to `end_ms` by offsets.
    Offsets {
        /// End of the piece to read by offsets, ms.
        end_ms: i64,
    },
}

impl<F: FetchPage> SeekPages<F> {
    /// True when the next call to [`next`](Self::next) sends a request.
    pub fn will_request(&self) -> bool {
        match &self.step {
            Step::Ask => self.cursor < self.window.end_ms,
            Step::Offset { pages, .. } => pages.will_request(),
            Step::Settle | Step::Done => false,
        }
    }

    /// `Conversations API, user U, window A..B` (for errors).
    pub fn describe(&self) -> String {
        self.request(self.window.end_ms).describe_window()
    }

    /// Re-reads of offset-read pieces so far.
    pub fn rereads(&self) -> u32 {
        match &self.step {
            Step::Offset { pages, .. } => pages.rereads(),
            _ => 0,
        }
    }

    /// Page 1 of `[cursor, end_ms)`, asked as `[cursor - 1 ms, end_ms]` (or from the cursor
    /// itself once the start is known to be inclusive).
    fn request(&self, end_ms: i64) -> PageRequest {
        let widen = i64::from(!self.start_inclusive || self.cursor == self.window.start_ms);
        PageRequest {
            user: self.user.clone(),
            start_ms: self.cursor.saturating_sub(widen).max(0),
            end_ms,
            page_number: 1,
            page_size: self.page_size,
            window: Window {
                start_ms: self.cursor,
                end_ms,
            },
        }
    }

    /// The next event: `None` once the cell is read (or after an error).
    pub async fn next(&mut self) -> Option<Result<PageEvent, PagingError>> {
        loop {
            match std::mem::replace(&mut self.step, Step::Done) {
                Step::Done => return None,
                Step::Settle => {
                    self.step = Step::Ask;
                    return Some(Ok(PageEvent::Verified));
                }
                Step::Ask if self.cursor >= self.window.end_ms => return None,
                Step::Ask => match self.ask().await {
                    Ok(Some(page)) => return Some(Ok(PageEvent::Page(page))),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e.into())),
                },
                Step::Offset { mut pages, end_ms } => {
                    let event = pages.next().await;
                    self.step = Step::Offset { pages, end_ms };
                    match event {
                        Some(Ok(PageEvent::Page(p))) => {
                            let page = self.keep(p, self.cursor, end_ms, false);
                            return Some(Ok(PageEvent::Page(page)));
                        }
                        Some(Ok(PageEvent::Verified)) | None => {
                            self.cursor = end_ms;
                            self.step = Step::Ask;
                            return Some(Ok(PageEvent::Verified));
                        }
                        Some(Ok(other)) => return Some(Ok(other)),
                        Some(Err(e)) => {
                            self.step = Step::Done;
                            return Some(Err(e));
                        }
                    }
                }
            }
        }
    }

    /// Asks page 1 from the cursor: `Some(page)` to yield (the next step is set), `None` when
    /// the piece goes on by offsets (set as the next step).
    async fn ask(&mut self) -> Result<Option<Page>, RequestError> {
        let (page, end_ms, verdict) = loop {
            let end_ms = self
                .window
                .end_ms
                .min(self.cursor.saturating_add(self.shared.span_ms()));
            let req = self.request(end_ms);
            let page = match self.fetcher.fetch(&req).await {
                Ok(page) => page,
                Err(e) if too_long(&e) && end_ms - self.cursor > MIN_SPAN_MS => {
                    self.shared.halve(end_ms - self.cursor);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if page.spans.len() < self.page_size as usize {
                break (page, end_ms, Verdict::Complete);
            }
            match judge(&page, self.cursor, end_ms) {
                // A full page of messages at `cursor - 1` (the start asked): the API reads
                // `start_date` as inclusive, so the cursor can be asked exactly.
                Verdict::Offsets { .. }
                    if req.start_ms < self.cursor && all_before(&page, self.cursor) =>
                {
                    self.start_inclusive = true;
                }
                verdict => break (page, end_ms, verdict),
            }
        };
        let (keep_until, next_cursor) = match verdict {
            Verdict::Complete => (end_ms, end_ms),
            Verdict::SplitAt(t) => {
                self.shared.splits.fetch_add(1, Ordering::Relaxed);
                (t, t)
            }
            Verdict::Offsets { end_ms } => {
                self.shared.offset_reads.fetch_add(1, Ordering::Relaxed);
                let piece = Window {
                    start_ms: self.cursor,
                    end_ms,
                };
                let offsets = pages(
                    self.fetcher.clone(),
                    self.user.clone(),
                    piece,
                    self.page_size,
                    false,
                );
                self.step = Step::Offset {
                    pages: Box::new(offsets),
                    end_ms,
                };
                return Ok(None);
            }
        };
        let page = self.keep(page, self.cursor, keep_until, true);
        self.cursor = next_cursor;
        self.step = Step::Settle;
        Ok(Some(page))
    }

    /// The page with only the messages in `[from, until)` where those bounds are inside the
    /// cell (at the cell's own edges every message stays, for the normalizer to judge), and
    /// the next page number. `ordered`: the page's readable times ascend, so only its ends
    /// need reading (a page read by offsets is filtered whole).
    ///
    /// A message whose time cannot be read stays, for the normalizer to reject, unless the
    /// same raw message was already kept in this cell from an overlap (it can come back on the
    /// next request, where pages overlap): each is dead-lettered once.
    fn keep(&mut self, mut page: Page, from: i64, until: i64, ordered: bool) -> Page {
        let lo = (from > self.window.start_ms).then_some(from);
        let hi = (until < self.window.end_ms).then_some(until);
        let n = page.spans.len();
        if lo.is_none() && hi.is_none() && self.unreadable.is_empty() {
            // The whole cell in one page: nothing overlaps it.
            self.yielded += 1;
            page.number = self.yielded;
            return page;
        }
        // A short page's order is not known yet (an API paging newest first): check its ends.
        let whole = !ordered || !self.unreadable.is_empty() || !ascending(&page);
        let mut keep = vec![true; n];
        let seen = &mut self.unreadable;
        // `Some(inside)` for a readable message; for an unreadable one, `None`, and it stays
        // only the first time the cell meets it.
        let mut judge_at = |k: usize, keep: &mut [bool]| -> Option<i64> {
            let span = page.spans[k].clone();
            let t = message_time(&page.body, span.clone());
            if t.is_none() {
                let raw = page.body.get(span).unwrap_or_default();
                keep[k] = seen.insert(xxhash_rust::xxh3::xxh3_64(raw));
            }
            t
        };
        if whole {
            for k in 0..n {
                if let Some(t) = judge_at(k, &mut keep) {
                    keep[k] = lo.is_none_or(|lo| t >= lo) && hi.is_none_or(|hi| t < hi);
                }
            }
        } else {
            // Times ascend: drop leading messages before `lo` and trailing ones at or after
            // `hi`, reading only up to the first readable message inside on each side.
            let mut head = 0;
            while head < n {
                match judge_at(head, &mut keep) {
                    Some(t) if lo.is_some_and(|lo| t < lo) => keep[head] = false,
                    Some(_) => break,
                    None => {}
                }
                head += 1;
            }
            for k in (head + 1..n).rev() {
                match judge_at(k, &mut keep) {
                    Some(t) if hi.is_some_and(|hi| t >= hi) => keep[k] = false,
                    Some(_) => break,
                    None => {}
                }
            }
        }
        let mut k = 0;
        page.spans.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        self.yielded += 1;
        page.number = self.yielded;
        page
    }
}

/// What a full page of `[cursor, end_ms)` says (module docs). Only its first and last
/// readable times are parsed.
fn judge(page: &Page, cursor: i64, end_ms: i64) -> Verdict {
    let times = |mut it: Box<dyn Iterator<Item = &std::ops::Range<usize>> + '_>| {
        it.find_map(|s| message_time(&page.body, s.clone()))
    };
    let first = times(Box::new(page.spans.iter()));
    let last = times(Box::new(page.spans.iter().rev()));
    match (first, last) {
        // In time order, and the page reaches the piece's end: all of it is here.
        (Some(first), Some(last)) if first <= last && last >= end_ms => Verdict::Complete,
        (Some(first), Some(last)) if first < last && last > cursor => Verdict::SplitAt(last),
        // One millisecond (at the cursor or after it) holds a page or more: read it by offsets.
        (Some(first), Some(last)) if first <= last && last >= cursor => Verdict::Offsets {
            end_ms: (last + 1).min(end_ms),
        },
        // Out of time order, no readable time, or only messages before the cursor.
        _ => Verdict::Offsets { end_ms },
    }
}

/// True when the page's first readable time is not after its last (time order, page 1 oldest).
fn ascending(page: &Page) -> bool {
    let first = page
        .spans
        .iter()
        .find_map(|s| message_time(&page.body, s.clone()));
    let last = page
        .spans
        .iter()
        .rev()
        .find_map(|s| message_time(&page.body, s.clone()));
    match (first, last) {
        (Some(first), Some(last)) => first <= last,
        _ => true,
    }
}

/// True when the page's last readable message is before `cursor` (so, in time order, all are).
fn all_before(page: &Page, cursor: i64) -> bool {
    page.spans
        .iter()
        .rev()
        .find_map(|s| message_time(&page.body, s.clone()))
        .is_some_and(|t| t < cursor)
}

/// A message's time, ms since epoch UTC, when it can be read.
fn message_time(body: &[u8], span: std::ops::Range<usize>) -> Option<i64> {
    let raw = std::str::from_utf8(body.get(span)?).ok()?;
    let m = WireMessage::parse(raw).ok()?;
    parse_timestamp(m.timestamp).ok()
}

/// A 400 with code 1003 (`INVALID_INPUT_DATE_VALUE`): the API refused the range.
fn too_long(e: &RequestError) -> bool {
    matches!(
        e.source,
        ApiError::Rejected {
            code: Some(1003),
            ..
        }
    )
}

#[cfg(test)]
mod tests;
