//! The retry policy shared by every HTTP client of the product (the Engati API client and the
//! CRM sinks): exponential backoff with full jitter, and `Retry-After` honoured in both of its
//! forms (RFC 9110 §10.2.3: delay-seconds or an HTTP-date).
//!
//! What is retried is each client's decision (`engati::error::ApiError::is_retryable`, the CRM
//! sink's attempt classifier); how long to wait is decided here, once.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use rand::RngExt;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The backoff schedule: `min` doubling up to `max`, at most `max_retries` retries after the
/// first attempt. Jitter is applied by [`delay`], not by the builder.
pub fn backoff(min: Duration, max: Duration, max_retries: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_max_times(max_retries)
}

/// The wait before the next attempt: full jitter (uniform in `[0, backoff]`, AWS's "full
/// jitter") unless the server asked for `Retry-After`, which is honoured with up to 10% added
/// so that throttled tasks do not return in lockstep.
pub fn delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    let mut rng = rand::rng();
    match retry_after {
        Some(ra) => {
            let extra_ms = (ra.as_millis() as u64 / 10).max(1);
            ra + Duration::from_millis(rng.random_range(0..=extra_ms))
        }
        None => {
            let ms = backoff.as_millis() as u64;
            Duration::from_millis(rng.random_range(0..=ms))
        }
    }
}

/// The response's `Retry-After`, as a delay from `now`: `120` (seconds) or an HTTP-date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`; a date in the past means "now", zero). `None` when the
/// header is absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(v, now)
}

/// Parses a `Retry-After` value (see [`retry_after`]).
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(v)
        .ok()?;
    let at = SystemTime::from(at);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_a_floor_and_backoff_is_fully_jittered() {
        for _ in 0..200 {
            let d = delay(Duration::from_millis(800), None);
            assert!(d <= Duration::from_millis(800));
            let d = delay(Duration::from_millis(100), Some(Duration::from_secs(2)));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2200));
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        // 1_790_000_000 is 2026-09-21T14:13:20Z; 40 s later:
        assert_eq!(
            parse_retry_after("Mon, 21 Sep 2026 14:14:00 GMT", now),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            parse_retry_after("Mon, 21 Sep 2026 14:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }
}
