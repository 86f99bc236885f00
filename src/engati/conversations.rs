//! The Conversations API's pages of one (user, window) cell, as a stream (the octocrab
//! `into_stream` idea) that owns the paging rules (docs/engati-api.md, "Conversations API"):
//!
//! - the window `[start, end)` is asked as `[start - 1 ms, end]`: whether the API reads
//!   `start_date`/`end_date` as inclusive or exclusive (undocumented), every message of the
//!   window comes back; the normalizer keeps `[start, end)`, so each message belongs to
//!   exactly one window;
//! - pages are `page_number` 1, 2, ... of `page_size` messages; a page shorter than
//!   `page_size` (an empty one included) is the last;
//! - a server that ignores `page_number` returns the same full page forever: the second
//!   identical full page in a row ends the stream with an error instead of a runaway export;
//! - an HTTP error ends the stream with that error; it never reads as "no more pages".

use std::future::Future;
use std::sync::Arc;

use futures_util::Stream;

use super::client::{Client, Page};
use super::error::{ApiError, RequestError};
use super::wire::DecodeError;
use crate::model::Window;
use crate::time::rfc3339_ms;

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
        format!(
            "Conversations API, user {}, window {}..{}, page {}",
            self.user,
            rfc3339_ms(self.window.start_ms),
            rfc3339_ms(self.window.end_ms),
            self.page_number
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

/// The pages of one cell, fetched one at a time on demand.
pub struct Pages<F> {
    fetcher: F,
    next: Option<PageRequest>,
    /// xxh3 of the previous page's body when it was full (the runaway guard).
    previous_full: Option<u64>,
}

/// The pages of `user`'s messages in `window` (see the module docs for the rules).
pub fn pages<F: FetchPage>(fetcher: F, user: Arc<str>, window: Window, page_size: u32) -> Pages<F> {
    Pages {
        fetcher,
        next: Some(PageRequest {
            user,
            start_ms: window.start_ms.saturating_sub(1).max(0),
            end_ms: window.end_ms,
            page_number: 1,
            page_size: page_size.max(1),
            window,
        }),
        previous_full: None,
    }
}

impl<F: FetchPage> Pages<F> {
    /// True once the last page was returned (or an error): [`next`](Self::next) would return
    /// `None` without a request.
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }

    /// The next page: `None` after the last one; an error ends the stream.
    pub async fn next(&mut self) -> Option<Result<Page, RequestError>> {
        let req = self.next.take()?;
        let page = match self.fetcher.fetch(&req).await {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let full = page.spans.len() >= req.page_size as usize;
        if full {
            let h = xxhash_rust::xxh3::xxh3_64(&page.body);
            if self.previous_full == Some(h) {
                return Some(Err(runaway(&req)));
            }
            self.previous_full = Some(h);
            self.next = Some(PageRequest {
                page_number: req.page_number + 1,
                ..req
            });
        }
        Some(Ok(page))
    }

    /// The pages as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Result<Page, RequestError>> {
        futures_util::stream::unfold(self, |mut p| async move {
            let item = p.next().await?;
            Some((item, p))
        })
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
    use futures_util::StreamExt;
    use std::sync::Mutex;

    /// Canned pages by page number; records the requests.
    #[derive(Clone, Default)]
    struct Canned {
        bodies: Arc<Vec<Vec<&'static str>>>,
        ignore_page_number: bool,
        fail_at: Option<u32>,
        seen: Arc<Mutex<Vec<PageRequest>>>,
    }

    impl FetchPage for Canned {
        fn fetch(
            &self,
            req: &PageRequest,
        ) -> impl Future<Output = Result<Page, RequestError>> + Send {
            self.seen.lock().unwrap().push(req.clone());
            let n = if self.ignore_page_number {
                1
            } else {
                req.page_number
            };
            let result = if self.fail_at == Some(req.page_number) {
                Err(RequestError {
                    what: req.describe(),
                    attempts: 9,
                    source: ApiError::Server { status: 503 },
                })
            } else {
                let msgs = self.bodies.get(n as usize - 1).cloned().unwrap_or_default();
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
                Ok(Page {
                    number: req.page_number,
                    body: Bytes::from(body),
                    spans,
                })
            };
            async move { result }
        }
    }

    const W: Window = Window {
        start_ms: 86_400_000,
        end_ms: 2 * 86_400_000,
    };

    fn canned(pages: Vec<Vec<&'static str>>) -> Canned {
        Canned {
            bodies: Arc::new(pages),
            ..Canned::default()
        }
    }

    async fn collect(c: &Canned, page_size: u32) -> Vec<Result<Page, RequestError>> {
        pages(c.clone(), "919".into(), W, page_size)
            .into_stream()
            .collect()
            .await
    }

    #[tokio::test]
    async fn pages_until_a_short_page_asking_one_ms_wider() {
        let c = canned(vec![vec!["{\"a\":1}", "{\"a\":2}"], vec!["{\"a\":3}"]]);
        let got = collect(&c, 2).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].as_ref().unwrap().spans.len(), 1);
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
        let c = canned(vec![vec!["{\"a\":1}", "{\"a\":2}"]]);
        let got = collect(&c, 2).await;
        assert_eq!(got.len(), 2);
        assert!(got[1].as_ref().unwrap().spans.is_empty());
        assert_eq!(c.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_empty_first_page_ends_at_once() {
        let c = canned(vec![]);
        let mut p = pages(c.clone(), "919".into(), W, 500);
        assert!(!p.is_done());
        assert!(p.next().await.unwrap().unwrap().spans.is_empty());
        assert!(p.is_done());
        assert!(p.next().await.is_none());
        assert_eq!(c.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_server_ignoring_page_number_is_stopped_not_followed() {
        let mut c = canned(vec![vec!["{\"a\":1}", "{\"a\":2}"]]);
        c.ignore_page_number = true;
        let got = collect(&c, 2).await;
        assert_eq!(got.len(), 2, "page 1, then the error");
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("the same full page twice"), "{err}");
        assert_eq!(c.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_and_never_reads_as_the_end() {
        let mut c = canned(vec![vec!["{\"a\":1}", "{\"a\":2}"], vec!["{\"a\":3}"]]);
        c.fail_at = Some(2);
        let got = collect(&c, 2).await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        assert!(matches!(
            got[1].as_ref().unwrap_err().source,
            ApiError::Server { status: 503 }
        ));
    }

    #[tokio::test]
    async fn a_window_at_the_epoch_is_not_asked_below_zero() {
        let c = canned(vec![]);
        let w = Window {
            start_ms: 0,
            end_ms: 10,
        };
        let _ = pages(c.clone(), "919".into(), w, 5).next().await;
        assert_eq!(c.seen.lock().unwrap()[0].start_ms, 0);
    }
}
