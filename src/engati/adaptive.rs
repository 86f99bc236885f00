//! The client's in-flight limit: fixed (`--concurrency N`) or adaptive (`--concurrency auto`),
//! after Vector's adaptive request concurrency (ARC).
//!
//! An AIMD controller ([`Aimd`]) is fed every response's round-trip time and outcome and works
//! in periods of about one round trip (the smoothed past RTT):
//!
//! - **back pressure** (a 429, a 503, a timeout) cuts the limit at once by
//!   [`DECREASE_RATIO`] and starts a new period (one cut per period: the responses already in
//!   flight were sent under the old limit). At once rather than at the period's end, as Vector
//!   does, because a 429 comes back in no time: waiting out the period would let the freed
//!   permits be retaken and refused again, hundreds of times at high concurrency;
//! - at the end of a period, a mean RTT above the past RTT by more than
//!   [`RTT_DEVIATION_SCALE`] of its deviations (a **rising RTT**: the server queues) cuts the
//!   limit the same way;
//! - otherwise, when requests waited for the limit in the period and the mean RTT was not
//!   above the past RTT (**flat**), the limit grows by one (additive increase). Until the first
//!   cut it doubles instead (slow start, as TCP's: Vector starts at 1 and adds 1 per round
//!   trip, which takes a minute to reach 64 at 1 s round trips);
//! - the past RTT is an exponentially weighted mean and deviation ([`EWMA_ALPHA`]) of the
//!   periods' means;
//! - only requests sent under the current limit are samples: a raise shows in round trips one
//!   round trip later, and judging it by the requests sent before it (a raise from 16 to 32
//!   looks flat while the answers to the first 16 come back) would double the limit again
//!   before the queue it built is seen.
//!
//! The limit stays within `1..=max`; the rate limit (`max_rps`) applies on top, before a
//! request takes a permit. [`Aimd`] is pure (time is an argument): tests feed it synthetic RTTs
//! and outcomes and assert the limit's trajectory. [`Limiter`] puts the limit on a semaphore:
//! a raise adds permits, a cut forgets free ones and the rest as they come back.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A cut multiplies the limit by this (Vector's default).
pub const DECREASE_RATIO: f64 = 0.9;
/// Weight of the newest period in the past RTT (Vector's default).
pub const EWMA_ALPHA: f64 = 0.4;
/// A period's mean RTT above the past mean by more than this many deviations is rising
/// (Vector's default).
pub const RTT_DEVIATION_SCALE: f64 = 2.5;

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

/// An exponentially weighted mean and variance.
#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    mean: f64,
    var: f64,
    seeded: bool,
}

impl Ewma {
    fn update(&mut self, x: f64) {
        if !self.seeded {
            *self = Ewma {
                mean: x,
                var: 0.0,
                seeded: true,
            };
            return;
        }
        let d = x - self.mean;
        self.mean += EWMA_ALPHA * d;
        self.var = (1.0 - EWMA_ALPHA) * (self.var + EWMA_ALPHA * d * d);
    }
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
    past: Ewma,
    /// The current period's RTT samples: sum and count.
    sum: f64,
    samples: u32,
    /// When the current period ends (none before the first sample).
    period_end: Option<f64>,
    /// Requests waited for the limit in this period.
    reached: bool,
    /// A cut was made in this period (back pressure).
    cut: bool,
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
            past: Ewma::default(),
            sum: 0.0,
            samples: 0,
            period_end: None,
            reached: false,
            cut: false,
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
                if self.decrease() {
                    self.pushback_cuts += 1;
                }
                self.cut = true;
                // A new period: the responses in flight were sent under the old limit.
                self.end_period(now, false);
                return self.limit;
            }
            Outcome::BackPressure | Outcome::Other => {}
        }
        match self.period_end {
            None if self.samples > 0 => self.end_period(now, true),
            Some(end) if now >= end => self.end_period(now, true),
            _ => {}
        }
        self.limit
    }

    /// Ends the period: with `judge`, raises or cuts by its RTT; then the past RTT takes in
    /// its mean and the next period starts.
    fn end_period(&mut self, now: f64, judge: bool) {
        let current = (self.samples > 0).then(|| us(self.sum / f64::from(self.samples)));
        if judge && let (Some(c), true) = (current, self.past.seeded) {
            let mean = us(self.past.mean);
            let threshold = self.past.var.sqrt() * RTT_DEVIATION_SCALE;
            if c > mean + threshold && !self.cut {
                self.decrease();
            } else if self.reached && !self.cut && c <= mean && self.limit < self.max {
                self.limit = if self.slow_start {
                    (self.limit * 2).min(self.max)
                } else {
                    self.limit + 1
                };
                self.raises += 1;
                self.epoch += 1;
            }
        }
        if let Some(c) = current {
            self.past.update(c);
        }
        if self.past.seeded {
            self.period_end = Some(now + self.past.mean.max(1e-3));
        }
        self.sum = 0.0;
        self.samples = 0;
        self.reached = false;
        if judge {
            self.cut = false;
        }
    }

    /// Multiplies the limit by [`DECREASE_RATIO`] (at least one less, never below 1) and ends
    /// slow start; false when the limit was already 1.
    fn decrease(&mut self) -> bool {
        self.slow_start = false;
        if self.limit <= 1 {
            return false;
        }
        self.limit = ((self.limit as f64 * DECREASE_RATIO) as usize).clamp(1, self.limit - 1);
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

    /// An adaptive limit starting at 1, within `1..=max`.
    pub fn adaptive(max: usize) -> Self {
        Self::adaptive_from(1, max)
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
