//! The client's in-flight limit: fixed (`--concurrency N`) or adaptive (`--concurrency auto`),
//! after Vector's adaptive request concurrency (ARC), with the round trip judged against the
//! server's unqueued round trip (as TCP Vegas and Netflix's concurrency-limits do) rather than
//! against the past mean round trip (as Vector does).
//!
//! An AIMD controller ([`Aimd`]) is fed every response's round-trip time and outcome and works
//! in **periods** of about one round trip: a period ends once as many answers as the limit
//! came back under it. It ends after the smoothed round trip (an exponentially weighted mean
//! of the periods' mean RTTs, weight [`EWMA_ALPHA`]) instead if no request waited for the
//! limit in it (the work, not the limit, sets the pace: fewer answers come back) or no answer
//! came back under it yet (only push-back, failures, or answers to requests sent before a
//! change). Not on time alone: after a raise from K to 2K against a server of capacity K, the
//! K requests served at once come back after one round trip and the K that queued after two,
//! and a period ended by the clock between them would see only the first, flat. A period's
//! mean RTT is compared with the **base RTT**: the smallest period mean of the last
//! [`BASE_WINDOW`] periods (or of the last 2 x limit periods when that is more), the server's
//! round trip when nothing queues.
//!
//! - **back pressure** (a 429, a 503, a timeout) cuts the limit at once by
//!   [`DECREASE_RATIO`] and starts a new period (one cut per period: the responses already in
//!   flight were sent under the old limit). At once rather than at the period's end, as Vector
//!   does, because a 429 comes back in no time: waiting out the period would let the freed
//!   permits be retaken and refused again, hundreds of times at high concurrency;
//! - at the end of a period, a mean RTT above the base by more than [`QUEUE_TOLERANCE`] is a
//!   **rising RTT**: the server queues. The first such period holds the limit (one slow
//!   period may be noise: the client's own CPU, a hiccup of the network); a second one in a
//!   row cuts it. A server that works on K requests at once answers `limit` requests in
//!   flight in `limit / K` base round trips (Little's law), so `limit x base / rtt` is about
//!   K: the limit is cut to that, with the less slow of the two periods' RTTs and by at most
//!   30% ([`RTT_CUT_FLOOR`]; a deeper queue is cut again two periods later), which empties
//!   the server's queue;
//! - otherwise, when requests waited for the limit in the period, the limit grows by one
//!   (additive increase);
//! - **slow start**: the limit starts at [`INITIAL_LIMIT`] and doubles instead of growing by
//!   one until the first cut, and while in it, a mean RTT more than
//!   [`SLOW_START_TOLERANCE`] above the base is already a rising RTT. A doubling is safe only
//!   from at most K (to at most 2K), and the first round trip after a doubling from K to 2K is
//!   only 1.5 x the base on average (half the requests are served at once, half wait one round
//!   trip), so the queue tolerance would take it for flat and add one more, past 2K;
//! - only requests sent under the current limit are samples: a change shows in round trips one
//!   round trip later, and judging it by the requests sent before it (a raise from 16 to 32
//!   looks flat while the answers to the first 16 come back) would double the limit again
//!   before the queue it built is seen.
//!
//! Against a server of capacity K the limit so saws between about K and 1.3 K: the server
//! always has work, its queue stays around a third of its capacity at most, and the limit
//! stays below 2K, where the sandbox's capacity mode (and many a server) starts refusing. Each
//! cut empties the queue, so the next periods see the unqueued round trip again and the base
//! stays fresh. What it cannot tell apart: a round trip that rises because the client itself
//! is short of CPU looks like a queue too, and holds the limit back (measured with a debug
//! build against K = 64, where even a fixed 64 reached only 75% of K / latency). Each change
//! of the limit is logged at debug level (`RUST_LOG=engati_etl::engati::adaptive=debug`).
//!
//! Why not Vector's test (a period's mean RTT against an exponentially weighted mean of the
//! past periods' plus 2.5 deviations): a steady queue raises that mean with it, so a limit
//! settled above K looks flat and only 429s bring it down. Why a window rather than the
//! smallest RTT ever seen: a server that gets slower for good would otherwise look queued
//! forever; with the window the limit falls (to 1 at worst) until the old minimum has left
//! the window, then grows back by one per round trip. The window is at least 2 x limit periods
//! so that a whole saw tooth (0.3 K periods from K to 1.3 K) fits in it.
//!
//! The limit stays within `1..=max`; the rate limit (`max_rps`) applies on top, before a
//! request takes a permit. [`Aimd`] is pure (time is an argument): tests feed it synthetic RTTs
//! and outcomes and assert the limit's trajectory. [`Limiter`] puts the limit on a semaphore:
//! a raise adds permits, a cut forgets free ones and the rest as they come back.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A cut on back pressure multiplies the limit by this (Vector's default).
pub const DECREASE_RATIO: f64 = 0.9;
/// Weight of the newest period in the smoothed RTT, which sets a period's length (Vector's
/// default).
pub const EWMA_ALPHA: f64 = 0.4;
/// A period's mean RTT above the base RTT by more than this share is rising (the server
/// queues): with a server of capacity K, a limit above 1.3 K.
pub const QUEUE_TOLERANCE: f64 = 0.3;
/// In slow start, a period's mean RTT above the base RTT by more than this share is rising
/// already: a doubling is safe only from no queue (at most K, to at most 2K).
pub const SLOW_START_TOLERANCE: f64 = 0.1;
/// A cut on a rising RTT leaves at least this share of the limit (a round trip inflated by
/// noise would otherwise cut too deep; a real queue is cut again after the next period).
pub const RTT_CUT_FLOOR: f64 = 0.7;
/// The adaptive limit's start, requests in flight (then slow start).
pub const INITIAL_LIMIT: usize = 4;
/// The base RTT is the smallest mean of at least this many last periods.
pub const BASE_WINDOW: usize = 20;

/// `--concurrency`: a fixed number of requests in flight, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// At most this many requests in flight.
    Fixed(usize),
    /// Adaptive, within `max_concurrency`.
    Auto,
}

impl Default for Concurrency {
    /// The documented default (`config::DEFAULT_CONCURRENCY`).
    fn default() -> Self {
        Concurrency::Fixed(crate::config::DEFAULT_CONCURRENCY)
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Fixed(n) => write!(f, "{n}"),
            Concurrency::Auto => f.write_str("auto"),
        }
    }
}

impl std::str::FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Concurrency::Auto);
        }
        s.parse::<usize>()
            .map(Concurrency::Fixed)
            .map_err(|_| format!("`{s}` must be auto or a whole number"))
    }
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Fixed(n) => s.serialize_u64(*n as u64),
            Concurrency::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(u64),
            S(String),
        }
        match V::deserialize(d)? {
            V::N(n) => Ok(Concurrency::Fixed(n as usize)),
            V::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// How a response counts for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: its RTT is a sample.
    Ok,
    /// 429, 503 or a timeout: the server pushes back.
    BackPressure,
    /// Anything else (a 404, a 500, a refused connection): no sample.
    Other,
}

/// Rounds seconds to microseconds: equal RTTs average to equal values, not one epsilon apart
/// (Vector does the same).
fn us(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The AIMD controller (see the module docs). Times are seconds since any fixed start.
#[derive(Debug, Clone)]
pub struct Aimd {
    max: usize,
    limit: usize,
    slow_start: bool,
    /// The smoothed RTT (an exponentially weighted mean of the periods' means): a period's
    /// length. None before the first period ends.
    smoothed: Option<f64>,
    /// The last periods' mean RTTs, newest last (at most `BASE_WINDOW.max(2 * max)`).
    means: VecDeque<f64>,
    /// The current period's RTT samples: sum and count.
    sum: f64,
    samples: usize,
    /// When the current period ends (none before the first period ends).
    period_end: Option<f64>,
    /// Requests waited for the limit in this period.
    reached: bool,
    /// A cut was made in this period (back pressure).
    cut: bool,
    /// The last judged period's mean RTT, if it was rising (and the limit held).
    rising: Option<f64>,
    /// Changes of the limit so far: a request sent under an older limit is no sample.
    epoch: u64,
    /// Raises so far.
    pub raises: u64,
    /// Cuts so far (push-back and rising RTT).
    pub cuts: u64,
    /// Cuts on push-back (a 429, a 503, a timeout) so far.
    pub pushback_cuts: u64,
}

impl Aimd {
    /// A controller starting at `initial` requests in flight, never above `max` (nor below 1;
    /// a `max` of 0 is read as 1).
    pub fn new(initial: usize, max: usize) -> Self {
        let max = max.max(1);
        Aimd {
            max,
            limit: initial.clamp(1, max),
            slow_start: true,
            smoothed: None,
            means: VecDeque::new(),
            sum: 0.0,
            samples: 0,
            period_end: None,
            reached: false,
            cut: false,
            rising: None,
            epoch: 0,
            raises: 0,
            cuts: 0,
            pushback_cuts: 0,
        }
    }

    /// The limit now, requests in flight.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Still in slow start (doubling on a flat round trip)?
    pub fn slow_start(&self) -> bool {
        self.slow_start
    }

    /// The base RTT now: the smallest mean RTT of the last `BASE_WINDOW.max(2 * limit)`
    /// periods (none before the first period ends).
    pub fn base_rtt(&self) -> Option<f64> {
        let window = BASE_WINDOW.max(2 * self.limit);
        self.means
            .iter()
            .rev()
            .take(window)
            .copied()
            .reduce(f64::min)
    }

    /// Changes of the limit so far: give it with each response's request, as it was when the
    /// request was sent.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A request had to wait: the limit, not the work, held it back.
    pub fn reached_limit(&mut self) {
        self.reached = true;
    }

    /// A response at `now` (seconds since any fixed start) after `rtt` seconds with
    /// `outcome`, to a request sent at `epoch` ([`Aimd::epoch`] then); returns the limit
    /// after it. Infallible.
    pub fn on_response(&mut self, now: f64, rtt: f64, outcome: Outcome, epoch: u64) -> usize {
        match outcome {
            Outcome::Ok if epoch != self.epoch => {}
            Outcome::Ok => {
                self.sum += rtt;
                self.samples += 1;
            }
            Outcome::BackPressure if !self.cut => {
                let to = (self.limit as f64 * DECREASE_RATIO) as usize;
                if self.cut_to(to) {
                    self.pushback_cuts += 1;
                }
                self.cut = true;
                // A new period: the responses in flight were sent under the old limit.
                self.end_period(now, false);
                return self.limit;
            }
            Outcome::BackPressure | Outcome::Other => {}
        }
        // See the module docs: the first period ends at its first answer.
        let due = match self.period_end {
            None => self.samples > 0,
            Some(end) => {
                self.samples >= self.limit || (now >= end && (!self.reached || self.samples == 0))
            }
        };
        if due {
            self.end_period(now, true);
        }
        self.limit
    }

    /// Ends the period: with `judge`, cuts or raises by its mean RTT against the base RTT;
    /// then its mean joins the window and the smoothed RTT, and the next period starts.
    fn end_period(&mut self, now: f64, judge: bool) {
        let current = (self.samples > 0).then(|| us(self.sum / self.samples as f64));
        if judge
            && !self.cut
            && let (Some(c), Some(base)) = (current, self.base_rtt())
        {
            let tolerance = if self.slow_start {
                SLOW_START_TOLERANCE
            } else {
                QUEUE_TOLERANCE
            };
            if c > base * (1.0 + tolerance) {
                if let Some(held) = self.rising {
                    // The server queues: down to what it works on at once (limit x base /
                    // rtt), by the less slow of the two periods (one may be noise).
                    let ratio = (base / c.min(held)).max(RTT_CUT_FLOOR);
                    self.cut_to((self.limit as f64 * ratio).round() as usize);
                } else {
                    // Held: one slow period may be noise (the client's own CPU, a hiccup).
                    self.rising = Some(c);
                }
            } else {
                self.rising = None;
                if self.reached && self.limit < self.max {
                    self.limit = if self.slow_start {
                        (self.limit * 2).min(self.max)
                    } else {
                        self.limit + 1
                    };
                    self.raises += 1;
                    self.epoch += 1;
                }
            }
        }
        if let Some(c) = current {
            if self.means.len() >= BASE_WINDOW.max(2 * self.max) {
                self.means.pop_front();
            }
            self.means.push_back(c);
            let s = self.smoothed.map_or(c, |s| s + EWMA_ALPHA * (c - s));
            self.smoothed = Some(s);
        }
        self.period_end = self.smoothed.map(|s| now + s.max(1e-3));
        self.sum = 0.0;
        self.samples = 0;
        self.reached = false;
        if judge {
            self.cut = false;
        }
    }

    /// Cuts the limit to `to` (at least one less, never below 1), ends slow start and starts
    /// judging rising RTTs afresh; false when the limit was already 1.
    fn cut_to(&mut self, to: usize) -> bool {
        self.slow_start = false;
        self.rising = None;
        if self.limit <= 1 {
            return false;
        }
        self.limit = to.clamp(1, self.limit - 1);
        self.cuts += 1;
        self.epoch += 1;
        true
    }
}

/// What the limit did over a run (adaptive only), for the run report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LimitReport {
    /// The limit at the end, requests in flight.
    pub final_limit: usize,
    /// The highest limit reached, requests in flight.
    pub max_limit: usize,
    /// The limit's mean over the run's wall time, requests in flight.
    pub mean_limit: f64,
    /// Raises (additive, or doubling in slow start).
    pub raises: u64,
    /// Cuts, whatever their cause.
    pub cuts: u64,
    /// Cuts on push-back: a 429, a 503 or a timeout (the rest were on a rising RTT).
    pub pushback_cuts: u64,
}

struct State {
    aimd: Option<Aimd>,
    limit: usize,
    /// Permits to forget as they come back (after a cut while they were in use).
    owed: usize,
    max_limit: usize,
    /// Integral of the limit over time, and when it last changed (seconds since start).
    area: f64,
    changed_at: f64,
}

/// The in-flight limit of a client: a semaphore whose size the controller moves.
pub struct Limiter {
    sem: Semaphore,
    state: Mutex<State>,
    start: Instant,
    /// The controller's epoch, for requests to carry.
    epoch: std::sync::atomic::AtomicU64,
}

/// A request's permit; give it back with [`Permit::done`] (dropping it counts as
/// [`Outcome::Other`]).
pub struct Permit<'a> {
    limiter: &'a Limiter,
    permit: Option<SemaphorePermit<'a>>,
    sent: Instant,
    epoch: u64,
}

impl Limiter {
    /// At most `n` requests in flight.
    pub fn fixed(n: usize) -> Self {
        Self::with(None, n.max(1))
    }

    /// An adaptive limit starting at [`INITIAL_LIMIT`] (or `max` when that is less), within
    /// `1..=max`.
    pub fn adaptive(max: usize) -> Self {
        Self::adaptive_from(INITIAL_LIMIT, max)
    }

    /// An adaptive limit starting at `initial`, within `1..=max`.
    pub fn adaptive_from(initial: usize, max: usize) -> Self {
        let aimd = Aimd::new(initial, max);
        let limit = aimd.limit();
        Self::with(Some(aimd), limit)
    }

    fn with(aimd: Option<Aimd>, limit: usize) -> Self {
        Limiter {
            sem: Semaphore::new(limit),
            state: Mutex::new(State {
                aimd,
                limit,
                owed: 0,
                max_limit: limit,
                area: 0.0,
                changed_at: 0.0,
            }),
            start: Instant::now(),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits for a permit (no timeout: a request waits as long as the limit holds it back;
    /// never fails, the semaphore is never closed).
    pub async fn acquire(&self) -> Permit<'_> {
        let permit = match self.sem.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if let Some(a) = self.lock().aimd.as_mut() {
                    a.reached_limit();
                }
                self.sem
                    .acquire()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        Permit {
            limiter: self,
            permit: Some(permit),
            sent: Instant::now(),
            epoch: self.epoch.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// The adaptive limit's record (none for a fixed limit).
    pub fn report(&self) -> Option<LimitReport> {
        let st = self.lock();
        let a = st.aimd.as_ref()?;
        let now = self.start.elapsed().as_secs_f64();
        let area = st.area + st.limit as f64 * (now - st.changed_at);
        Some(LimitReport {
            final_limit: st.limit,
            max_limit: st.max_limit,
            mean_limit: if now > 0.0 {
                area / now
            } else {
                st.limit as f64
            },
            raises: a.raises,
            cuts: a.cuts,
            pushback_cuts: a.pushback_cuts,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("limiter lock")
    }

    /// Gives a permit back after a response (`outcome`, `rtt` seconds), moving the limit.
    fn give_back(&self, permit: SemaphorePermit<'_>, rtt: f64, outcome: Outcome, epoch: u64) {
        let mut st = self.lock();
        let now = self.start.elapsed().as_secs_f64();
        let before = st.limit;
        let after = match st.aimd.as_mut() {
            Some(a) => {
                let limit = a.on_response(now, rtt, outcome, epoch);
                self.epoch
                    .store(a.epoch(), std::sync::atomic::Ordering::Release);
                limit
            }
            None => before,
        };
        if after != before {
            if let Some(a) = st.aimd.as_ref() {
                tracing::debug!(
                    from = before,
                    to = after,
                    rtt_ms = rtt * 1e3,
                    base_rtt_ms = a.base_rtt().map(|b| b * 1e3),
                    ?outcome,
                    slow_start = a.slow_start(),
                    "Concurrency limit changed."
                );
            }
            st.area += before as f64 * (now - st.changed_at);
            st.changed_at = now;
            st.limit = after;
            st.max_limit = st.max_limit.max(after);
        }
        if after > before {
            // Raised: pay what is owed first, then add permits.
            let raise = after - before;
            let paid = raise.min(st.owed);
            st.owed -= paid;
            self.sem.add_permits(raise - paid);
        } else if after < before {
            let cut = before - after;
            let forgotten = self.sem.forget_permits(cut);
            st.owed += cut - forgotten;
        }
        if st.owed > 0 {
            st.owed -= 1;
            permit.forget();
        }
    }
}

impl Permit<'_> {
    /// The response came back with `outcome`: the permit goes back and the controller learns
    /// its round-trip time.
    pub fn done(mut self, outcome: Outcome) {
        if let Some(p) = self.permit.take() {
            let rtt = self.sent.elapsed().as_secs_f64();
            self.limiter.give_back(p, rtt, outcome, self.epoch);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.limiter.give_back(p, 0.0, Outcome::Other, self.epoch);
        }
    }
}

#[cfg(test)]
mod tests;
