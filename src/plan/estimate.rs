//! What a run will cost, before it starts: the arithmetic of the `plan` command.
//!
//! The inputs are exact where they can be (users and cells come from the real listing and the
//! plan's own count) and sampled where they cannot (how many pages a cell needs, its bytes,
//! the API's latency): [`sample_positions`] picks which users and windows to sample, evenly
//! spread and deterministic; [`estimate`] extrapolates:
//!
//! ```text
//! requests  = users_api_calls + cells x mean(pages per sampled cell)
//! messages  = cells x mean(messages per sampled cell)
//! bytes     = users_api_bytes + cells x mean(bytes per sampled cell)
//! rate      = min(max_rps, concurrency / latency)        latency: median of the samples
//! wall      = listing time + (requests - users_api_calls) / rate
//! N shards  = listing time + (requests - users_api_calls) / (N x rate)     same limits each
//!             listing time + (requests - users_api_calls) / min(max_rps, N x concurrency / latency)
//!                                                                          quota split N ways
//! ```
//!
//! The rate is bound by `max_rps` when `max_rps < concurrency / latency` (the run waits on the
//! rate limit), else by latency (every permit is busy waiting for answers).

use serde::Serialize;

/// What one sampled cell cost: its pages as the run would fetch them (until a short page, at
/// most `page_cap`).
#[derive(Debug, Clone, PartialEq)]
pub struct CellSample {
    /// Pages fetched.
    pub pages: u32,
    /// Messages in them (the 1 ms overlap of the window's edges included).
    pub messages: u64,
    /// Response bytes.
    pub bytes: u64,
    /// Each request's time, seconds.
    pub latencies_s: Vec<f64>,
    /// The cell had more pages than the cap: its counts are a lower bound.
    pub cut: bool,
}

/// The run's limits, per worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests per second at most.
    pub max_rps: u32,
}

/// What binds the request rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// `max_rps`.
    RateLimit,
    /// `concurrency / latency`.
    Latency,
}

/// The exact quantities of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Counted {
    /// Users in the plan (this shard's, when sharded).
    pub users: u64,
    /// Cells (user x window).
    pub cells: u64,
    /// Users API calls a run makes (one per filter; none for a users file).
    pub users_api_calls: u64,
    /// Users API response bytes, as the plan's own listing received them.
    pub users_api_bytes: u64,
    /// The listing's time, seconds (the run lists the same way before its first cell).
    pub listing_secs: f64,
}

/// N shards' wall time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShardEstimate {
    /// Number of shards (workers).
    pub shards: u32,
    /// Each worker with the configured limits: wall time, seconds.
    pub wall_secs_same_limits: f64,
    /// The API would then see this many requests per second, all workers together.
    pub total_rps_same_limits: f64,
    /// The quota split N ways (`max_rps / N` per worker): wall time, seconds.
    pub wall_secs_quota_split: f64,
}

/// The estimate of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Requests (Users API and Conversations API).
    pub requests: u64,
    /// Messages the API will return.
    pub messages: u64,
    /// Response bytes.
    pub bytes: u64,
    /// Median latency of the sampled requests, ms.
    pub latency_ms: f64,
    /// Requests per second the run can sustain.
    pub rate_rps: f64,
    /// What binds the rate.
    pub bound: Bound,
    /// Wall time, seconds.
    pub wall_secs: f64,
    /// True when a sampled cell had more pages than the sample fetched: requests, messages and
    /// bytes are then lower bounds.
    pub lower_bound: bool,
    /// Sampled cells.
    pub sampled_cells: u64,
    /// Requests the sample made.
    pub sampled_requests: u64,
    /// Mean pages per cell.
    pub pages_per_cell: f64,
    /// Mean messages per cell.
    pub messages_per_cell: f64,
    /// N shards.
    pub shards: Vec<ShardEstimate>,
}

/// Positions to sample among `n` things: `k` of them, the middles of `k` equal parts (all of
/// them when `n <= k`). Deterministic.
pub fn sample_positions(n: u64, k: u64) -> Vec<u64> {
    if n <= k {
        return (0..n).collect();
    }
    (0..k).map(|j| (2 * j + 1) * n / (2 * k)).collect()
}

/// The median of `xs` (0 for none).
fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

/// The estimate (module docs) from the exact counts, the samples and the limits, with the
/// wall time of each number of shards in `shard_counts`.
pub fn estimate(
    counted: Counted,
    samples: &[CellSample],
    limits: Limits,
    shard_counts: &[u32],
) -> Estimate {
    let n = samples.len().max(1) as f64;
    let pages_per_cell = samples.iter().map(|s| f64::from(s.pages)).sum::<f64>() / n;
    let messages_per_cell = samples.iter().map(|s| s.messages as f64).sum::<f64>() / n;
    let bytes_per_cell = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let cells = counted.cells as f64;
    let conversations = (cells * pages_per_cell).round();
    let mut latencies: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.latencies_s.iter().copied())
        .collect();
    let latency = median(&mut latencies).max(1e-4);
    let max_rps = f64::from(limits.max_rps.max(1));
    let by_latency = limits.concurrency.max(1) as f64 / latency;
    let (rate, bound) = if max_rps <= by_latency {
        (max_rps, Bound::RateLimit)
    } else {
        (by_latency, Bound::Latency)
    };
    let listing = counted.listing_secs;
    let wall = |rate: f64| listing + conversations / rate;
    Estimate {
        requests: counted.users_api_calls + conversations as u64,
        messages: (cells * messages_per_cell).round() as u64,
        bytes: counted.users_api_bytes + (cells * bytes_per_cell).round() as u64,
        latency_ms: latency * 1000.0,
        rate_rps: rate,
        bound,
        wall_secs: wall(rate),
        lower_bound: samples.iter().any(|s| s.cut),
        sampled_cells: samples.len() as u64,
        sampled_requests: samples.iter().map(|s| u64::from(s.pages)).sum(),
        pages_per_cell,
        messages_per_cell,
        shards: shard_counts
            .iter()
            .map(|&k| {
                let k = k.max(1);
                let split = max_rps.min(f64::from(k) * by_latency);
                ShardEstimate {
                    shards: k,
                    wall_secs_same_limits: wall(f64::from(k) * rate),
                    total_rps_same_limits: f64::from(k) * rate,
                    wall_secs_quota_split: wall(split),
                }
            })
            .collect(),
    }
}

/// A duration for people: seconds, minutes, hours or days.
pub fn human_duration(secs: f64) -> String {
    match secs {
        s if s < 10.0 => format!("{s:.1} s"),
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 90.0 * 60.0 => format!("{:.1} min", s / 60.0),
        s if s < 48.0 * 3600.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days ({:.0} h)", s / 86_400.0, s / 3600.0),
    }
}

/// A count with thousands separators (`1,234,567`).
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(pages: u32, messages: u64, latency_s: f64) -> CellSample {
        CellSample {
            pages,
            messages,
            bytes: messages * 500,
            latencies_s: vec![latency_s; pages as usize],
            cut: false,
        }
    }

    fn counted(cells: u64) -> Counted {
        Counted {
            users: 1000,
            cells,
            users_api_calls: 2,
            users_api_bytes: 100,
            listing_secs: 0.0,
        }
    }

    #[test]
    fn samples_are_spread_and_deterministic() {
        assert_eq!(sample_positions(3, 5), [0, 1, 2]);
        assert_eq!(sample_positions(10, 2), [2, 7]);
        assert_eq!(
            sample_positions(1_000_000, 4),
            [125_000, 375_000, 625_000, 875_000]
        );
    }

    #[test]
    fn the_rate_is_the_lower_of_the_rate_limit_and_concurrency_over_latency() {
        let samples = [cell(1, 10, 0.1), cell(2, 600, 0.1), cell(1, 0, 0.3)];
        // 16 / 0.1 s = 160 req/s > 50: the rate limit binds.
        let e = estimate(
            counted(365_000),
            &samples,
            Limits {
                concurrency: 16,
                max_rps: 50,
            },
            &[4],
        );
        assert_eq!(e.bound, Bound::RateLimit);
        assert_eq!(e.requests, 2 + 486_667);
        assert_eq!(e.messages, (365_000.0_f64 * 610.0 / 3.0).round() as u64);
        assert!((e.wall_secs - 486_667.0 / 50.0).abs() < 1e-6);
        assert!((e.latency_ms - 100.0).abs() < 1e-9);
        let s = e.shards[0];
        assert!((s.wall_secs_same_limits - e.wall_secs / 4.0).abs() < 1e-6);
        assert!(
            (s.wall_secs_quota_split - e.wall_secs).abs() < 1e-6,
            "{s:?}"
        );
        // With max_rps 1000 latency binds: 160 req/s; 4 shards split the quota: 640 req/s.
        let e = estimate(
            counted(365_000),
            &samples,
            Limits {
                concurrency: 16,
                max_rps: 1000,
            },
            &[4],
        );
        assert_eq!(e.bound, Bound::Latency);
        assert!((e.rate_rps - 160.0).abs() < 1e-9);
        assert!((e.shards[0].wall_secs_quota_split - 486_667.0 / 640.0).abs() < 1e-6);
    }

    #[test]
    fn durations_and_counts_read_well() {
        assert_eq!(human_duration(42.0), "42 s");
        assert_eq!(human_duration(600.0), "10.0 min");
        assert_eq!(human_duration(3.5 * 3600.0), "3.5 h");
        assert_eq!(human_duration(10.0 * 86_400.0), "10.0 days (240 h)");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(100), "100");
    }
}
