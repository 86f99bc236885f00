//! The Conversations API's pages of one (user, window) cell, as a stream (the octocrab
//! `into_stream` idea) that owns the paging rules (docs/engati-api.md, "Conversations API" and
//! "Pages that shift"):
//!
//! - the window `[start, end)` is asked as `[start - 1 ms, end]`: whether the API reads
//!   `start_date`/`end_date` as inclusive or exclusive (undocumented), every message of the
//!   window comes back; the normalizer keeps `[start, end)`, so each message belongs to
//!   exactly one window;
//! - pages are `page_number` 1, 2, ... of `page_size` messages; a page shorter than
//!   `page_size` (an empty one included) is the last;
//! - a server that ignores `page_number` returns the same full page forever: the second
//!   identical full page in a row ends the stream with an error instead of a runaway export;
//! - an HTTP error ends the stream with that error; it never reads as "no more pages";
//! - **pages that shift.** The API pages by offset, with no cursor and no message ids: a
//!   message inserted before the reading position while a window is paged (a live arrival in
//!   newest-first order, a backdated insert in oldest-first order) moves every later message
//!   one place on, so the next page begins with a message already read. Each read of a
//!   window keeps the content hash (xxh3 of the raw JSON) of every message; a page that begins
//!   with a message already read in this read is a shift. A read is **accepted** when no page
//!   shifted, or when it equals the previous read of the window message for message (two
//!   identical messages can meet at a page boundary for real; they read the same twice). A
//!   read that is not accepted is discarded ([`PageEvent::Reread`]) and the window read again
//!   from page 1, at most [`MAX_REREADS`] times; then the stream ends with a [`ShiftError`]
//!   (the pipeline dead-letters the cell). With `double_read`, a window that took more than
//!   one request is also read a second time and accepted only when two reads in a row agree:
//!   that also catches a deletion before the reading position (a message moved back past the
//!   boundary and never read), which a single read cannot show. Nothing is yielded as verified before
//!   its read is accepted: the pages of a read are data only after [`PageEvent::Verified`].

use std::collections::HashSet;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use super::client::{Client, Page};
use super::error::{ApiError, RequestError};
use super::wire::DecodeError;
use crate::model::Window;
use crate::time::rfc3339_ms;

/// Reads of a window after the first, at most, before its cell is given up as unreadable.
pub const MAX_REREADS: u32 = 3;

/// One page request of a cell, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The channel-user id (a path segment).
    pub user: Arc<str>,
    /// `start_date`, ms since epoch UTC (the window's start minus 1 ms, at least 0).
    pub start_ms: i64,
    /// `end_date`, ms since epoch UTC (the window's end).
    pub end_ms: i64,
    /// `page_number`, 1-based.
    pub page_number: u32,
    /// `page_size`, 1..=500.
    pub page_size: u32,
    /// The cell's window `[start, end)` (for messages).
    pub window: Window,
}

impl PageRequest {
    /// `Conversations API, user U, window A..B, page N` (for errors and logs).
    pub fn describe(&self) -> String {
        format!("{}, page {}", self.describe_window(), self.page_number)
    }

    /// `Conversations API, user U, window A..B`.
    pub fn describe_window(&self) -> String {
        format!(
            "Conversations API, user {}, window {}..{}",
            self.user,
            rfc3339_ms(self.window.start_ms),
            rfc3339_ms(self.window.end_ms),
        )
    }
}

/// Something that answers page requests: the [`Client`], or canned pages in tests.
pub trait FetchPage: Clone + Send + Sync + 'static {
    /// Fetches one page (after the client's own retries).
    fn fetch(&self, req: &PageRequest) -> impl Future<Output = Result<Page, RequestError>> + Send;
}

impl FetchPage for Client {
    fn fetch(&self, req: &PageRequest) -> impl Future<Output = Result<Page, RequestError>> + Send {
        self.conversations_page(
            &req.user,
            req.start_ms,
            req.end_ms,
            req.page_number,
            req.page_size,
            || req.describe(),
        )
    }
}

/// Why a read of a window was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shift {
    /// Page `page` began with a message already read in this read, and the page before it,
    /// asked again, had changed: something was inserted before the reading position.
    Repeated {
        /// The page (2 or more).
        page: u32,
    },
    /// The read differed from the previous read of the window (`double_read`, or a read with
    /// a repeat that did not read the same twice).
    Changed,
}

impl std::fmt::Display for Shift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shift::Repeated { page } => write!(
                f,
                "page {page} began with a message already read, and page {} asked again had changed",
                page - 1
            ),
            Shift::Changed => f.write_str("two reads of the window differed"),
        }
    }
}

/// A window whose pages kept shifting: every read of it, up to [`MAX_REREADS`] re-reads, was
/// discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what}: messages moved between pages while the window was read ({last}); {reads} reads in a row were inconsistent"
)]
pub struct ShiftError {
    /// `Conversations API, user U, window A..B`.
    pub what: String,
    /// Reads made.
    pub reads: u32,
    /// What discarded the last read.
    pub last: Shift,
}

/// Why the pages of a cell ended early.
#[derive(Debug, thiserror::Error)]
pub enum PagingError {
    /// A request failed (after the client's retries), or the server ignores `page_number`.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The window could not be read consistently.
    #[error(transparent)]
    Shifted(#[from] ShiftError),
}

/// What the stream yields.
#[derive(Debug)]
pub enum PageEvent {
    /// A page of the current read, in order; data only once [`PageEvent::Verified`] follows.
    Page(Page),
    /// The pages yielded since the start (or the last [`PageEvent::Reread`]) are the window's
    /// messages; the stream ends.
    Verified,
    /// The pages yielded since the start (or the last re-read) are void; the window is read
    /// again from page 1. `Some(shift)` when the read shifted, `None` for the confirming
    /// second read of `double_read`.
    Reread(Option<Shift>),
    /// A page asked again to check a repeat at a page boundary, unchanged: the repeat is two
    /// identical messages, not a shift; the read goes on. No data.
    Checked,
}

/// What [`Pages::next`] does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Request this page of the current read.
    Page(u32),
    /// Ask page `page` again: the next page began with a message already read. `more`: that
    /// next page was full.
    Confirm {
        /// The page before the one that began with a repeat.
        page: u32,
        /// The page with the repeat was full (the read goes on after it).
        more: bool,
    },
    /// The read is complete: accept it, or read again (`None`: a confirming read).
    Verdict(Result<(), Option<Shift>>),
    /// Nothing more.
    Done,
}

/// The evidence of one read of a window.
#[derive(Debug, Default)]
struct Read {
    /// Content hash of every message, in order.
    hashes: Vec<u64>,
    /// The same hashes, for the repeat check.
    seen: HashSet<u64>,
    /// Each page's range in `hashes` (page `n` at `n - 1`).
    pages: Vec<Range<usize>>,
    /// xxh3 of the previous page's body when it was full (the runaway guard).
    previous_full: Option<u64>,
}

impl Read {
    /// Adds page `number`'s messages; true when it begins with a message already read.
    fn add(&mut self, number: u32, page: &Page) -> bool {
        let first = self.hashes.len();
        self.hashes.extend(message_hashes(page));
        self.pages.push(first..self.hashes.len());
        let repeat = number > 1
            && self
                .hashes
                .get(first)
                .is_some_and(|h| self.seen.contains(h));
        self.seen.extend(&self.hashes[first..]);
        repeat
    }
}

/// The content hash of each message of a page (xxh3 of its raw JSON).
fn message_hashes(page: &Page) -> impl Iterator<Item = u64> + '_ {
    page.spans
        .iter()
        .map(|s| xxhash_rust::xxh3::xxh3_64(page.body.get(s.clone()).unwrap_or_default()))
}

/// The pages of one cell, fetched one at a time on demand, with the shift checks.
pub struct Pages<F> {
    fetcher: F,
    /// Page 1's request (the others differ by `page_number`).
    first: PageRequest,
    next: Next,
    read: Read,
    /// The hashes of the previous complete read, if there was one and it ran to its end.
    previous: Option<Vec<u64>>,
    rereads: u32,
    double_read: bool,
}

/// The pages of `user`'s messages in `window` (see the module docs for the rules).
/// `double_read`: read windows of more than one page twice.
pub fn pages<F: FetchPage>(
    fetcher: F,
    user: Arc<str>,
    window: Window,
    page_size: u32,
    double_read: bool,
) -> Pages<F> {
    Pages {
        fetcher,
        first: PageRequest {
            user,
            start_ms: window.start_ms.saturating_sub(1).max(0),
            end_ms: window.end_ms,
            page_number: 1,
            page_size: page_size.max(1),
            window,
        },
        next: Next::Page(1),
        read: Read::default(),
        previous: None,
        rereads: 0,
        double_read,
    }
}

impl<F: FetchPage> Pages<F> {
    /// True once the stream ended (verified, or an error): [`next`](Self::next) would return
    /// `None` without a request.
    pub fn is_done(&self) -> bool {
        self.next == Next::Done
    }

    /// True when the next call to [`next`](Self::next) sends a request.
    pub fn will_request(&self) -> bool {
        matches!(self.next, Next::Page(_) | Next::Confirm { .. })
    }

    /// `Conversations API, user U, window A..B` (for errors).
    pub fn describe(&self) -> String {
        self.first.describe_window()
    }

    /// Re-reads made so far.
    pub fn rereads(&self) -> u32 {
        self.rereads
    }

    /// The next event: `None` after [`PageEvent::Verified`] or an error.
    pub async fn next(&mut self) -> Option<Result<PageEvent, PagingError>> {
        match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => None,
            Next::Page(n) => Some(self.page(n).await),
            Next::Confirm { page, more } => Some(self.confirm(page, more).await),
            Next::Verdict(v) => Some(self.verdict(v, true).map_err(PagingError::from)),
        }
    }

    async fn page(&mut self, number: u32) -> Result<PageEvent, PagingError> {
        let req = PageRequest {
            page_number: number,
            ..self.first.clone()
        };
        let page = self.fetcher.fetch(&req).await?;
        let full = page.spans.len() >= req.page_size as usize;
        if full {
            let h = xxhash_rust::xxh3::xxh3_64(&page.body);
            if self.read.previous_full == Some(h) {
                return Err(runaway(&req).into());
            }
            self.read.previous_full = Some(h);
        }
        let repeat = self.read.add(number, &page);
        self.next = if repeat {
            Next::Confirm {
                page: number - 1,
                more: full,
            }
        } else {
            self.after(number, full)
        };
        Ok(PageEvent::Page(page))
    }

    /// What follows page `number` of the read (`full`: it was a full page).
    fn after(&self, number: u32, full: bool) -> Next {
        if full {
            Next::Page(number + 1)
        } else {
            Next::Verdict(self.judge())
        }
    }

    /// Asks page `number` again after the next page began with a message already read: the
    /// same answer means two identical messages meet at the boundary (the read goes on); a
    /// different one means the window shifted.
    async fn confirm(&mut self, number: u32, more: bool) -> Result<PageEvent, PagingError> {
        let req = PageRequest {
            page_number: number,
            ..self.first.clone()
        };
        let page = self.fetcher.fetch(&req).await?;
        let before = self.read.pages.get(number as usize - 1).cloned();
        let same =
            before.is_some_and(|r| message_hashes(&page).eq(self.read.hashes[r].iter().copied()));
        if same {
            self.next = self.after(number + 1, more);
            return Ok(PageEvent::Checked);
        }
        let shift = Shift::Repeated { page: number + 1 };
        Ok(self.verdict(Err(Some(shift)), false)?)
    }

    /// The verdict on a complete read.
    fn judge(&self) -> Result<(), Option<Shift>> {
        let read = &self.read;
        match &self.previous {
            Some(p) if *p == read.hashes => Ok(()),
            None if self.double_read && read.pages.len() > 1 => Err(None),
            Some(_) if self.double_read => Err(Some(Shift::Changed)),
            _ => Ok(()),
        }
    }

    /// Applies a verdict on the read (`complete`: it ran to its last page).
    fn verdict(
        &mut self,
        v: Result<(), Option<Shift>>,
        complete: bool,
    ) -> Result<PageEvent, ShiftError> {
        let shift = match v {
            Ok(()) => return Ok(PageEvent::Verified),
            Err(shift) => shift,
        };
        if self.rereads >= MAX_REREADS {
            return Err(ShiftError {
                what: self.first.describe_window(),
                reads: self.rereads + 1,
                last: shift.unwrap_or(Shift::Changed),
            });
        }
        self.rereads += 1;
        let read = std::mem::take(&mut self.read);
        self.previous = complete.then_some(read.hashes);
        self.next = Next::Page(1);
        Ok(PageEvent::Reread(shift))
    }
}

fn runaway(req: &PageRequest) -> RequestError {
    RequestError {
        what: format!(
            "Conversations API, user {}, page {}",
            req.user, req.page_number
        ),
        attempts: 1,
        source: ApiError::Decode(DecodeError::Shape {
            path: "$".into(),
            looked_for: format!(
                "page {} to differ from page {}",
                req.page_number,
                req.page_number - 1
            ),
            found: "the same full page twice; the server may ignore page_number".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Mutex;

    /// An edit the canned server makes to the window before answering its `at`-th request
    /// (0-based).
    #[derive(Clone, Copy)]
    enum Edit {
        Insert(usize, &'static str),
        Delete(usize),
    }

    /// A canned server: the window's messages in API order, paged by offset, changed by
    /// `edits` as requests arrive; records the requests.
    #[derive(Clone, Default)]
    struct Canned {
        msgs: Arc<Mutex<Vec<&'static str>>>,
        edits: Arc<Mutex<Vec<(usize, Edit)>>>,
        /// Insert a new message at position 0 before every request for a page >= 2.
        always_insert: bool,
        ignore_page_number: bool,
        fail_at: Option<u32>,
        seen: Arc<Mutex<Vec<PageRequest>>>,
    }

    fn page_of(number: u32, msgs: &[&str]) -> Page {
        let mut body = String::from("{\"conversations\":[");
        let mut spans = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let s = body.len();
            body.push_str(m);
            spans.push(s..body.len());
        }
        body.push_str("]}");
        Page {
            number,
            body: Bytes::from(body),
            spans,
        }
    }

    impl FetchPage for Canned {
        fn fetch(
            &self,
            req: &PageRequest,
        ) -> impl Future<Output = Result<Page, RequestError>> + Send {
            let at = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(req.clone());
                seen.len() - 1
            };
            let mut msgs = self.msgs.lock().unwrap();
            for (when, e) in self.edits.lock().unwrap().iter() {
                match *e {
                    Edit::Insert(i, m) if *when == at => msgs.insert(i, m),
                    Edit::Delete(i) if *when == at => {
                        msgs.remove(i);
                    }
                    _ => {}
                }
            }
            if self.always_insert && req.page_number > 1 {
                let m: &'static str = Box::leak(format!("{{\"new\":{at}}}").into_boxed_str());
                msgs.insert(0, m);
            }
            let n = if self.ignore_page_number {
                1
            } else {
                req.page_number
            } as usize;
            let size = req.page_size as usize;
            let from = ((n - 1) * size).min(msgs.len());
            let to = (from + size).min(msgs.len());
            let result = if self.fail_at == Some(req.page_number) {
                Err(RequestError {
                    what: req.describe(),
                    attempts: 9,
                    source: ApiError::Server { status: 503 },
                })
            } else {
                Ok(page_of(req.page_number, &msgs[from..to]))
            };
            async move { result }
        }
    }

    const W: Window = Window {
        start_ms: 86_400_000,
        end_ms: 2 * 86_400_000,
    };

    fn canned(msgs: &[&'static str]) -> Canned {
        Canned {
            msgs: Arc::new(Mutex::new(msgs.to_vec())),
            ..Canned::default()
        }
    }

    fn with_edits(c: Canned, edits: &[(usize, Edit)]) -> Canned {
        *c.edits.lock().unwrap() = edits.to_vec();
        c
    }

    /// What the stream yielded, compactly: pages as their messages, `V` verified, `R` a
    /// re-read; and the error, if any.
    #[derive(Debug, Default)]
    struct Run {
        events: Vec<String>,
        /// The messages of the verified read.
        verified: Vec<String>,
        error: Option<PagingError>,
    }

    async fn drive(c: &Canned, page_size: u32, double_read: bool) -> Run {
        let mut p = pages(c.clone(), "919".into(), W, page_size, double_read);
        let mut run = Run::default();
        let mut current = Vec::new();
        while let Some(e) = p.next().await {
            match e {
                Ok(PageEvent::Page(page)) => {
                    let body = std::str::from_utf8(&page.body).unwrap();
                    let msgs: Vec<String> = page
                        .spans
                        .iter()
                        .map(|s| body[s.clone()].to_owned())
                        .collect();
                    run.events.push(format!("p{}:{}", page.number, msgs.len()));
                    current.extend(msgs);
                }
                Ok(PageEvent::Verified) => {
                    run.events.push("V".into());
                    run.verified = std::mem::take(&mut current);
                }
                Ok(PageEvent::Reread(_)) => {
                    run.events.push("R".into());
                    current.clear();
                }
                Ok(PageEvent::Checked) => run.events.push("C".into()),
                Err(e) => run.error = Some(e),
            }
        }
        assert!(p.is_done());
        run
    }

    const SIX: [&str; 6] = [
        "{\"m\":0}",
        "{\"m\":1}",
        "{\"m\":2}",
        "{\"m\":3}",
        "{\"m\":4}",
        "{\"m\":5}",
    ];

    #[tokio::test]
    async fn pages_until_a_short_page_asking_one_ms_wider() {
        let c = canned(&SIX[..3]);
        let run = drive(&c, 2, false).await;
        assert_eq!(run.events, ["p1:2", "p2:1", "V"]);
        let seen = c.seen.lock().unwrap();
        assert_eq!(seen.len(), 2, "no request after the short page");
        assert_eq!(
            (seen[0].start_ms, seen[0].end_ms),
            (W.start_ms - 1, W.end_ms)
        );
        assert_eq!(
            seen.iter().map(|r| r.page_number).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[tokio::test]
    async fn a_full_last_page_costs_one_empty_page_to_see_the_end() {
        let c = canned(&SIX[..2]);
        let run = drive(&c, 2, false).await;
        assert_eq!(run.events, ["p1:2", "p2:0", "V"]);
        assert_eq!(c.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_empty_first_page_ends_at_once() {
        let c = canned(&[]);
        let mut p = pages(c.clone(), "919".into(), W, 500, true);
        assert!(!p.is_done() && p.will_request());
        assert!(matches!(p.next().await, Some(Ok(PageEvent::Page(_)))));
        assert!(!p.will_request(), "the verdict needs no request");
        assert!(matches!(p.next().await, Some(Ok(PageEvent::Verified))));
        assert!(p.is_done());
        assert!(p.next().await.is_none());
        assert_eq!(c.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_server_ignoring_page_number_is_stopped_not_followed() {
        let mut c = canned(&SIX[..2]);
        c.ignore_page_number = true;
        let run = drive(&c, 2, false).await;
        assert_eq!(run.events, ["p1:2"]);
        let err = run.error.unwrap().to_string();
        assert!(err.contains("the same full page twice"), "{err}");
        assert_eq!(c.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_and_never_reads_as_the_end() {
        let mut c = canned(&SIX[..3]);
        c.fail_at = Some(2);
        let run = drive(&c, 2, false).await;
        assert_eq!(run.events, ["p1:2"]);
        assert!(matches!(
            run.error,
            Some(PagingError::Request(RequestError {
                source: ApiError::Server { status: 503 },
                ..
            }))
        ));
    }

    #[tokio::test]
    async fn a_window_at_the_epoch_is_not_asked_below_zero() {
        let c = canned(&[]);
        let w = Window {
            start_ms: 0,
            end_ms: 10,
        };
        let _ = pages(c.clone(), "919".into(), w, 5, false).next().await;
        assert_eq!(c.seen.lock().unwrap()[0].start_ms, 0);
    }

    #[tokio::test]
    async fn an_insert_before_the_reading_position_is_seen_and_the_window_read_again() {
        // Oldest first: a backdated message lands at position 0 before page 2 is asked, so
        // page 2 begins with the last message of page 1.
        let x = "{\"m\":\"backdated\"}";
        let c = with_edits(canned(&SIX[..5]), &[(1, Edit::Insert(0, x))]);
        let run = drive(&c, 2, false).await;
        // Page 1 asked again has changed: the read stops there.
        assert_eq!(
            run.events,
            ["p1:2", "p2:2", "R", "p1:2", "p2:2", "p3:2", "p4:0", "V"]
        );
        let seen: Vec<u32> = c
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.page_number)
            .collect();
        assert_eq!(
            seen,
            [1, 2, 1, 1, 2, 3, 4],
            "page 1 asked again, then the re-read"
        );
        let mut want: Vec<&str> = vec![x];
        want.extend(&SIX[..5]);
        assert_eq!(run.verified, want, "the verified read is the final data");
    }

    #[tokio::test]
    async fn a_live_arrival_in_newest_first_order_is_seen_the_same_way() {
        // Newest first: the new message goes to the front of page 1.
        let newest_first: Vec<&'static str> = SIX[..5].iter().rev().copied().collect();
        let x = "{\"m\":\"live\"}";
        let c = with_edits(canned(&newest_first), &[(2, Edit::Insert(0, x))]);
        let run = drive(&c, 2, false).await;
        assert_eq!(run.events[..4], ["p1:2", "p2:2", "p3:2", "R"]);
        assert_eq!(run.verified.len(), 6);
        assert_eq!(run.verified[0], x);
        assert!(run.error.is_none());
    }

    #[tokio::test]
    async fn a_window_that_keeps_shifting_is_given_up_after_the_last_reread() {
        let mut c = canned(&SIX[..5]);
        c.always_insert = true;
        let run = drive(&c, 2, false).await;
        let rereads = run.events.iter().filter(|e| *e == "R").count();
        assert_eq!(rereads as u32, MAX_REREADS);
        assert!(run.verified.is_empty(), "nothing was verified");
        match run.error {
            Some(PagingError::Shifted(e)) => {
                assert_eq!(e.reads, MAX_REREADS + 1);
                assert_eq!(e.last, Shift::Repeated { page: 2 });
                let text = e.to_string();
                assert!(
                    text.contains("user 919")
                        && text.contains("page 2 began with a message already read, and page 1 asked again had changed"),
                    "{text}"
                );
            }
            other => panic!("want a shift error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn identical_messages_meeting_at_a_page_boundary_are_read_twice_and_kept() {
        // Two identical messages (same millisecond, same content) at positions 1 and 2.
        let msgs = [
            "{\"m\":0}",
            "{\"m\":\"same\"}",
            "{\"m\":\"same\"}",
            "{\"m\":3}",
        ];
        let c = canned(&msgs);
        let run = drive(&c, 2, false).await;
        // Page 1 asked again is unchanged: a genuine repeat, one request, no re-read.
        assert_eq!(run.events, ["p1:2", "p2:2", "C", "p3:0", "V"]);
        assert_eq!(run.verified, msgs, "both copies kept");
        assert_eq!(c.seen.lock().unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_deletion_goes_unseen_by_one_read_and_is_caught_by_double_read() {
        // Message 0 is deleted after page 1 was read: message 2 moves back onto page 1 and is
        // never read. Nothing repeats, so one read cannot tell.
        let edits = [(1, Edit::Delete(0))];
        let run = drive(&with_edits(canned(&SIX), &edits), 2, false).await;
        assert_eq!(run.events, ["p1:2", "p2:2", "p3:1", "V"]);
        assert!(
            !run.verified.contains(&SIX[2].to_owned()),
            "the limit, as documented"
        );
        // Read twice, the two reads differ; the third agrees with the second.
        let run = drive(&with_edits(canned(&SIX), &edits), 2, true).await;
        assert_eq!(
            run.events,
            [
                "p1:2", "p2:2", "p3:1", "R", "p1:2", "p2:2", "p3:1", "R", "p1:2", "p2:2", "p3:1",
                "V"
            ]
        );
        assert_eq!(run.verified, SIX[1..]);
    }

    #[tokio::test]
    async fn a_deletion_that_empties_the_next_page_is_caught_by_double_read() {
        // Five messages a page, six in all: deleting one before page 2 is asked moves the
        // sixth back onto page 1, and page 2 comes back empty.
        let edits = [(1, Edit::Delete(0))];
        let run = drive(&with_edits(canned(&SIX), &edits), 5, true).await;
        assert_eq!(
            run.events,
            [
                "p1:5", "p2:0", "R", "p1:5", "p2:0", "R", "p1:5", "p2:0", "V"
            ]
        );
        assert_eq!(run.verified, SIX[1..]);
        let c = canned(&SIX[..3]);
        assert_eq!(
            drive(&c, 5, true).await.events,
            ["p1:3", "V"],
            "one request: one snapshot"
        );
    }

    #[tokio::test]
    async fn double_read_accepts_two_equal_reads() {
        let c = canned(&SIX[..3]);
        let run = drive(&c, 2, true).await;
        assert_eq!(run.events, ["p1:2", "p2:1", "R", "p1:2", "p2:1", "V"]);
        assert_eq!(c.seen.lock().unwrap().len(), 4);
    }
}
