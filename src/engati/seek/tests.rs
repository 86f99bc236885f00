//! The time cursor against a canned server whose bounds, order and range limit are chosen.

use super::*;
use bytes::Bytes;
use std::future::Future;
use std::sync::Mutex;

use crate::engati::conversations::FetchPage;

/// A canned Conversations API over `msgs` (times, ms; ids are the indexes): answers a
/// request's range with the bounds chosen, in time order (or newest first), paged by offset;
/// refuses ranges longer than `max_range_ms` with 400/1003. Records the requests.
#[derive(Clone)]
struct Canned {
    msgs: Arc<Vec<i64>>,
    start_inclusive: bool,
    end_inclusive: bool,
    newest_first: bool,
    max_range_ms: Option<i64>,
    /// Messages whose timestamp is sent as garbage (the server still orders them by time).
    unreadable: Arc<Vec<usize>>,
    seen: Arc<Mutex<Vec<PageRequest>>>,
}

fn canned(mut times: Vec<i64>) -> Canned {
    times.sort_unstable();
    Canned {
        msgs: Arc::new(times),
        start_inclusive: true,
        end_inclusive: false,
        newest_first: false,
        max_range_ms: None,
        unreadable: Arc::default(),
        seen: Arc::default(),
    }
}

impl FetchPage for Canned {
    fn fetch(&self, req: &PageRequest) -> impl Future<Output = Result<Page, RequestError>> + Send {
        self.seen.lock().unwrap().push(req.clone());
        let result = if self
            .max_range_ms
            .is_some_and(|m| req.end_ms - req.start_ms > m)
        {
            Err(RequestError {
                what: req.describe(),
                attempts: 1,
                source: ApiError::Rejected {
                    code: Some(1003),
                    name: Some("INVALID_INPUT_DATE_VALUE".into()),
                    details: None,
                },
            })
        } else {
            let mut ids: Vec<usize> = (0..self.msgs.len())
                .filter(|&i| {
                    let t = self.msgs[i];
                    let after = if self.start_inclusive {
                        t >= req.start_ms
                    } else {
                        t > req.start_ms
                    };
                    let before = if self.end_inclusive {
                        t <= req.end_ms
                    } else {
                        t < req.end_ms
                    };
                    after && before
                })
                .collect();
            if self.newest_first {
                ids.reverse();
            }
            let size = req.page_size as usize;
            let from = ((req.page_number as usize - 1) * size).min(ids.len());
            let to = (from + size).min(ids.len());
            Ok(page_of(
                req.page_number,
                &ids[from..to],
                &self.msgs,
                &self.unreadable,
            ))
        };
        async move { result }
    }
}

fn page_of(number: u32, ids: &[usize], times: &[i64], unreadable: &[usize]) -> Page {
    let mut body = String::from("{\"conversations\":[");
    let mut spans = Vec::new();
    for (k, &i) in ids.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        let s = body.len();
        let ts = if unreadable.contains(&i) {
            "\"garbage\"".to_owned()
        } else {
            times[i].to_string()
        };
        body.push_str(&format!(
            "{{\"sender\":\"user\",\"response\":\"m{i}\",\"timestamp\":{ts}}}"
        ));
        spans.push(s..body.len());
    }
    body.push_str("]}");
    Page {
        number,
        body: Bytes::from(body),
        spans,
    }
}

const DAY: i64 = 86_400_000;
const T0: i64 = 20_000 * DAY;

/// The ids read, in order, as the pipeline would keep them (pages since the last `Verified`
/// dropped on a re-read; the normalizer's window filter applied), and the requests made.
fn read(c: &Canned, window: Window, page_size: u32, shared: &Arc<AdaptiveWindows>) -> Vec<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = seek_pages(c.clone(), "u1".into(), window, page_size, shared.clone());
        let (mut kept, mut pending) = (Vec::new(), Vec::new());
        while let Some(e) = s.next().await {
            match e.unwrap() {
                PageEvent::Page(p) => {
                    for span in &p.spans {
                        // An unreadable time is the normalizer's to reject: counted here.
                        let t = message_time(&p.body, span.clone()).unwrap_or(window.start_ms);
                        if window.contains(t) {
                            let raw = std::str::from_utf8(&p.body[span.clone()]).unwrap();
                            let id = raw.split("\"m").nth(1).unwrap().split('"').next().unwrap();
                            pending.push(id.parse::<usize>().unwrap());
                        }
                    }
                }
                PageEvent::Verified => kept.append(&mut pending),
                PageEvent::Reread(_) => pending.clear(),
                PageEvent::Checked => {}
            }
        }
        assert!(pending.is_empty(), "pages after the last Verified");
        kept
    })
}

/// The ids of the canned messages in `window`, in time order.
fn expected(c: &Canned, window: Window) -> Vec<usize> {
    (0..c.msgs.len())
        .filter(|&i| window.contains(c.msgs[i]))
        .collect()
}

/// Spread `n` messages over `span` ms from `from` with some sharing a millisecond.
fn spread(n: usize, from: i64, span: i64) -> Vec<i64> {
    (0..n)
        .map(|i| from + (i as i64 * 7_919 % span) / 3 * 3)
        .collect()
}

const YEAR: Window = Window {
    start_ms: T0,
    end_ms: T0 + 365 * DAY,
};

#[test]
fn a_sparse_cell_costs_one_request() {
    let c = canned(vec![T0 + 5, T0 + 100 * DAY, T0 + 300 * DAY]);
    let shared = AdaptiveWindows::new(365 * DAY);
    assert_eq!(read(&c, YEAR, 50, &shared), expected(&c, YEAR));
    assert_eq!(c.seen.lock().unwrap().len(), 1);
    assert_eq!(shared.report().splits, 0);
}

#[test]
fn a_dense_cell_is_split_by_time_and_read_exactly_once_under_every_bound_reading() {
    for (start_inclusive, end_inclusive) in
        [(true, false), (false, false), (true, true), (false, true)]
    {
        let mut times = spread(2_000, T0, 365 * DAY);
        // Messages exactly on the edges and a burst of identical times.
        times.extend([T0, T0 + 365 * DAY, T0 + 365 * DAY - 1]);
        times.extend(std::iter::repeat_n(T0 + 10 * DAY, 30));
        let mut c = canned(times);
        c.start_inclusive = start_inclusive;
        c.end_inclusive = end_inclusive;
        let shared = AdaptiveWindows::new(365 * DAY);
        let got = read(&c, YEAR, 100, &shared);
        assert_eq!(
            got,
            expected(&c, YEAR),
            "bounds {start_inclusive} {end_inclusive}"
        );
        let requests = c.seen.lock().unwrap().len();
        let minimum = expected(&c, YEAR).len().div_ceil(100);
        // One message per request is read twice (the split time): about n / 99 requests.
        assert!(
            requests <= minimum + minimum / 10 + 1,
            "{requests} vs {minimum}"
        );
        assert!(c.seen.lock().unwrap().iter().all(|r| r.page_number == 1));
        assert!(shared.report().splits > 0);
    }
}

#[test]
fn a_millisecond_with_more_than_a_page_is_read_by_offsets() {
    for start_inclusive in [true, false] {
        let mut times = vec![T0 + 1, T0 + 2];
        times.extend(std::iter::repeat_n(T0 + 3 * DAY, 250));
        times.extend([T0 + 4 * DAY, T0 + 5 * DAY]);
        let mut c = canned(times);
        c.start_inclusive = start_inclusive;
        let shared = AdaptiveWindows::new(365 * DAY);
        assert_eq!(read(&c, YEAR, 100, &shared), expected(&c, YEAR));
        assert_eq!(
            shared.report().offset_reads,
            1,
            "start inclusive: {start_inclusive}"
        );
        assert!(c.seen.lock().unwrap().iter().any(|r| r.page_number == 3));
    }
}

#[test]
fn pages_newest_first_fall_back_to_offsets_and_lose_nothing() {
    for (max_range_ms, end_inclusive) in [(None, false), (Some(100 * DAY), true)] {
        let mut c = canned(spread(450, T0, 365 * DAY));
        c.newest_first = true;
        c.max_range_ms = max_range_ms;
        c.end_inclusive = end_inclusive;
        let shared = AdaptiveWindows::new(365 * DAY);
        let mut got = read(&c, YEAR, 100, &shared);
        got.sort_unstable();
        assert_eq!(got, expected(&c, YEAR), "range limit {max_range_ms:?}");
        assert!(shared.report().offset_reads >= 1);
    }
}

#[test]
fn a_range_refused_as_too_long_is_halved_and_remembered() {
    let mut c = canned(spread(300, T0, 365 * DAY));
    c.max_range_ms = Some(100 * DAY);
    let shared = AdaptiveWindows::new(365 * DAY);
    assert_eq!(read(&c, YEAR, 100, &shared), expected(&c, YEAR));
    let r = shared.report();
    // 365 -> 182.5 -> 91.25 days: two halvings, then remembered.
    assert_eq!(r.halved, 2);
    assert_eq!(r.span_ms, 365 * DAY / 4);
    let refused_after_halving = c
        .seen
        .lock()
        .unwrap()
        .iter()
        .skip(3)
        .filter(|q| q.end_ms - q.start_ms > 100 * DAY)
        .count();
    assert_eq!(refused_after_halving, 0);
    // A second cell asks the remembered span at once.
    let before = c.seen.lock().unwrap().len();
    read(&c, YEAR, 100, &shared);
    let first = c.seen.lock().unwrap()[before].clone();
    assert!(first.end_ms - first.start_ms <= 100 * DAY);
}

#[test]
fn a_400_for_a_short_range_is_an_error() {
    let mut c = canned(vec![T0 + 1]);
    c.max_range_ms = Some(1_000);
    let shared = AdaptiveWindows::new(DAY);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let window = Window {
        start_ms: T0,
        end_ms: T0 + DAY,
    };
    let err = rt.block_on(async {
        let mut s = seek_pages(c.clone(), "u1".into(), window, 10, shared.clone());
        loop {
            match s.next().await {
                Some(Err(e)) => return e,
                Some(Ok(_)) => {}
                None => panic!("no error"),
            }
        }
    });
    assert!(
        err.to_string().contains("1003") || err.to_string().contains("INVALID_INPUT_DATE_VALUE"),
        "{err}"
    );
    assert_eq!(shared.report().span_ms, MIN_SPAN_MS);
}

#[test]
fn messages_with_unreadable_times_come_out_once_even_where_pages_overlap() {
    let mut times = spread(1_000, T0 + DAY, 300 * DAY);
    // Bursts of one millisecond so that unreadable messages sit at page boundaries too.
    times.extend(std::iter::repeat_n(T0 + 50 * DAY, 12));
    times.extend(std::iter::repeat_n(T0 + 51 * DAY, 12));
    let mut c = canned(times);
    c.unreadable = Arc::new(
        (0..c.msgs.len())
            .filter(|i| i % 37 == 0 || (40..52).contains(i))
            .collect(),
    );
    for page_size in [7, 20, 100] {
        let shared = AdaptiveWindows::new(365 * DAY);
        let mut got = read(&c, YEAR, page_size, &shared);
        let n = got.len();
        got.sort_unstable();
        got.dedup();
        assert_eq!(
            got.len(),
            n,
            "page size {page_size}: a message came out twice"
        );
        assert_eq!(got, expected(&c, YEAR), "page size {page_size}");
    }
}

#[test]
fn short_pages_newest_first_after_a_halving_keep_only_their_own_piece() {
    // The span becomes a quarter year; messages sit on both sides of each piece's start, and
    // every piece fits one page (short pages, newest first).
    let span = 365 * DAY / 4;
    let mut times = spread(200, T0, 365 * DAY);
    for k in 1..4 {
        times.extend([T0 + k * span - 1, T0 + k * span, T0 + k * span + 1]);
    }
    let mut c = canned(times);
    c.newest_first = true;
    c.max_range_ms = Some(100 * DAY);
    let shared = AdaptiveWindows::new(365 * DAY);
    let mut got = read(&c, YEAR, 100, &shared);
    got.sort_unstable();
    assert_eq!(got, expected(&c, YEAR));
    assert_eq!(shared.report().span_ms, span);
}
