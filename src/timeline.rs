//! The run's time series: what happened over the run, in buckets of wall time, for the charts
//! of `engati-etl report --html` (requests per second and latency, retries and 429s, cells and
//! rows committed over time). It is the `timeline` of the run report.
//!
//! **Cheap.** Nothing is allocated per request: the client and the sink count into atomics
//! ([`RequestStats`], [`SinkCounters`]) as they always do; a sampler reads them once a second
//! ([`SAMPLE_MS`]) and adds the difference to the current bucket. **Bounded.** At most
//! [`MAX_BUCKETS`] buckets: when a run outlasts them, neighbouring buckets are merged in pairs
//! and the bucket length doubles (1 s, 2 s, 4 s, ...), so a ten-hour backfill has 600 buckets of
//! 64 s. **Exact totals.** The last sample is taken when the run ends, so each column of the
//! buckets sums to the report's own total (requests, retries, cells and rows committed).

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engati::client::RequestStats;
use crate::sink::SinkCounters;

/// Buckets at most; past this, pairs are merged and the bucket length doubles.
pub const MAX_BUCKETS: usize = 600;
/// Sampling period and first bucket length, ms.
pub const SAMPLE_MS: u64 = 1000;

/// The counters the timeline follows, as totals so far (or as a bucket's increments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Responses 2xx.
    pub requests_2xx: u64,
    /// Responses 3xx.
    pub requests_3xx: u64,
    /// Responses 4xx (429 included).
    pub requests_4xx: u64,
    /// Responses 5xx.
    pub requests_5xx: u64,
    /// Attempts without a response (timeouts, connection errors).
    pub transport_errors: u64,
    /// 429 responses.
    pub throttled: u64,
    /// Retries.
    pub retries: u64,
    /// Response times of answered attempts, summed, microseconds.
    pub latency_us: u64,
    /// Answered attempts in `latency_us`.
    pub latency_count: u64,
    /// Response bytes received.
    pub bytes_received: u64,
    /// Cells committed.
    pub cells_committed: u64,
    /// Message rows committed.
    pub rows_committed: u64,
}

impl Counts {
    /// The totals now.
    pub fn read(requests: &RequestStats, sink: &SinkCounters) -> Self {
        let class = requests.by_class();
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            requests_2xx: class[2],
            requests_3xx: class[3],
            requests_4xx: class[4],
            requests_5xx: class[5],
            transport_errors: r(&requests.transport_errors),
            throttled: r(&requests.throttled),
            retries: r(&requests.retries),
            latency_us: r(&requests.latency_us),
            latency_count: r(&requests.latency_count),
            bytes_received: r(&requests.bytes),
            cells_committed: r(&sink.cells),
            rows_committed: r(&sink.rows),
        }
    }

    /// Field by field `self + k * o` (k = 1 adds, k = -1 subtracts, saturating at 0).
    fn combine(self, o: Counts, subtract: bool) -> Counts {
        let f = |a: u64, b: u64| {
            if subtract { a.saturating_sub(b) } else { a + b }
        };
        Counts {
            requests_2xx: f(self.requests_2xx, o.requests_2xx),
            requests_3xx: f(self.requests_3xx, o.requests_3xx),
            requests_4xx: f(self.requests_4xx, o.requests_4xx),
            requests_5xx: f(self.requests_5xx, o.requests_5xx),
            transport_errors: f(self.transport_errors, o.transport_errors),
            throttled: f(self.throttled, o.throttled),
            retries: f(self.retries, o.retries),
            latency_us: f(self.latency_us, o.latency_us),
            latency_count: f(self.latency_count, o.latency_count),
            bytes_received: f(self.bytes_received, o.bytes_received),
            cells_committed: f(self.cells_committed, o.cells_committed),
            rows_committed: f(self.rows_committed, o.rows_committed),
        }
    }

    /// All requests (responses and transport errors).
    pub fn requests(&self) -> u64 {
        self.requests_2xx
            + self.requests_3xx
            + self.requests_4xx
            + self.requests_5xx
            + self.transport_errors
    }
}

/// One bucket: what happened in `[t_ms, t_ms + bucket_ms)` after the run started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start, ms after the run started.
    pub t_ms: u64,
    /// Increments in the bucket.
    #[serde(flatten)]
    pub counts: Counts,
}

/// The time series of a run (`timeline` in the run report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Bucket length, ms (1000, doubled at each merge).
    pub bucket_ms: u64,
    /// Buckets in time order; a bucket in which nothing happened is left out.
    pub buckets: Vec<Bucket>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            bucket_ms: SAMPLE_MS,
            buckets: Vec::new(),
        }
    }
}

impl Timeline {
    /// Adds `delta` at `t_ms` after the start, merging buckets past [`MAX_BUCKETS`].
    pub fn add(&mut self, t_ms: u64, delta: Counts) {
        if delta == Counts::default() {
            return;
        }
        while t_ms / self.bucket_ms >= MAX_BUCKETS as u64 {
            self.merge();
        }
        let start = t_ms / self.bucket_ms * self.bucket_ms;
        match self.buckets.last_mut() {
            Some(b) if b.t_ms == start => b.counts = b.counts.combine(delta, false),
            _ => self.buckets.push(Bucket {
                t_ms: start,
                counts: delta,
            }),
        }
    }

    /// Doubles the bucket length, merging neighbours.
    fn merge(&mut self) {
        self.bucket_ms *= 2;
        let mut merged: Vec<Bucket> = Vec::with_capacity(self.buckets.len() / 2 + 1);
        for b in self.buckets.drain(..) {
            let start = b.t_ms / self.bucket_ms * self.bucket_ms;
            match merged.last_mut() {
                Some(m) if m.t_ms == start => m.counts = m.counts.combine(b.counts, false),
                _ => merged.push(Bucket {
                    t_ms: start,
                    counts: b.counts,
                }),
            }
        }
        self.buckets = merged;
    }

    /// The sum of every bucket.
    pub fn total(&self) -> Counts {
        self.buckets
            .iter()
            .fold(Counts::default(), |a, b| a.combine(b.counts, false))
    }
}

/// Samples the counters into a [`Timeline`] (held by `RunControl`).
#[derive(Debug)]
pub struct Recorder {
    started: Instant,
    state: Mutex<(Counts, Timeline)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            state: Mutex::new((Counts::default(), Timeline::default())),
        }
    }
}

impl Recorder {
    /// Takes one sample now.
    pub fn sample(&self, requests: &RequestStats, sink: &SinkCounters) {
        let t = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.sample_at(t, Counts::read(requests, sink));
    }

    /// Takes one sample of the totals `now` at `t_ms` after the start.
    pub fn sample_at(&self, t_ms: u64, now: Counts) {
        let mut guard = self.state.lock().expect("timeline lock");
        let (last, timeline) = &mut *guard;
        let delta = now.combine(*last, true);
        *last = now;
        timeline.add(t_ms, delta);
    }

    /// Samples every [`SAMPLE_MS`] until dropped (run it beside the walk).
    pub async fn run(&self, requests: &RequestStats, sink: &SinkCounters) {
        let every = Duration::from_millis(SAMPLE_MS);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(requests, sink);
        }
    }

    /// The timeline so far.
    pub fn snapshot(&self) -> Timeline {
        self.state.lock().expect("timeline lock").1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reqs(n: u64) -> Counts {
        Counts {
            requests_2xx: n,
            ..Counts::default()
        }
    }

    #[test]
    fn buckets_stay_bounded_and_sum_to_the_totals() {
        let r = Recorder::default();
        let mut total = 0;
        for s in 0..5_000u64 {
            total += s % 7;
            r.sample_at(s * 1000 + 3, reqs(total));
        }
        let t = r.snapshot();
        assert!(t.buckets.len() <= MAX_BUCKETS, "{}", t.buckets.len());
        assert_eq!(t.bucket_ms, 16_000, "1 s doubled 4 times covers 5,000 s");
        assert_eq!(t.total().requests_2xx, total);
        assert!(t.buckets.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
    }

    #[test]
    fn a_sample_adds_only_the_increase() {
        let r = Recorder::default();
        r.sample_at(100, reqs(5));
        r.sample_at(900, reqs(7));
        r.sample_at(1500, reqs(7));
        r.sample_at(2100, reqs(10));
        let t = r.snapshot();
        let got: Vec<(u64, u64)> = t
            .buckets
            .iter()
            .map(|b| (b.t_ms, b.counts.requests_2xx))
            .collect();
        assert_eq!(got, vec![(0, 7), (2000, 3)], "an idle second is left out");
    }
}
