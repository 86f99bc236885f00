//! The HTTP side of sending: base URL, `Authorization: Basic <key>` (docs/engati-api.md,
//! "Auth"; a header marked sensitive, never logged), the global rate limit (`governor`, the
//! same token bucket as the export client) and concurrency limit, one attempt at a time.
//!
//! Retrying is the engine's business, not this module's: an attempt returns its
//! `Outcome` (`classify`) and the engine decides (only `NotProcessed` is ever
//! sent again, and only after `in_flight` was recorded again).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::classify::{self, Outcome};
use super::config::{Limits, SourceSpec};
use super::render::Request;
use crate::engati::client::ClientBuildError;
use crate::secret::Secret;

/// Request counters (for the report).
#[derive(Debug, Default)]
pub struct SendStats {
    /// HTTP attempts made (responses and transport errors).
    pub requests: AtomicU64,
    /// Attempts without a response (connection errors, timeouts, resets).
    pub transport_errors: AtomicU64,
    /// Attempts repeated after a certainly-unprocessed one (429, connection refused).
    pub retries: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

impl SendStats {
    /// Responses by HTTP status.
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        self.by_status.lock().expect("stats lock").clone()
    }

    fn record(&self, status: Option<u16>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            Some(s) => {
                *self
                    .by_status
                    .lock()
                    .expect("stats lock")
                    .entry(s)
                    .or_default() += 1
            }
            None => {
                self.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Sends write-side requests to one tenant.
pub struct Sender {
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    limiter: DefaultDirectRateLimiter,
    slots: Semaphore,
    /// Counters.
    pub stats: SendStats,
}

impl Sender {
    /// A sender for `source` with `key` and `limits`.
    ///
    /// # Errors
    /// [`ClientBuildError`] for a bad base URL or a key that cannot be sent in a header.
    pub fn new(
        source: &SourceSpec,
        key: &Secret,
        limits: &Limits,
    ) -> Result<Self, ClientBuildError> {
        let url = reqwest::Url::parse(&source.base_url).map_err(|e| ClientBuildError::BaseUrl {
            url: source.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientBuildError::BaseUrl {
                url: source.base_url.clone(),
                reason: "the scheme must be http or https".into(),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Basic {}", key.expose()))
            .map_err(|_| ClientBuildError::KeyNotHeaderSafe)?;
        auth.set_sensitive(true);
        let timeout = Duration::from_secs(limits.timeout_secs);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(limits.concurrency)
            .user_agent(concat!("engati-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError::Http(e.to_string()))?;
        let rps = NonZeroU32::new(limits.max_rps.max(1)).expect("max(1) is non-zero");
        let burst = NonZeroU32::new(limits.concurrency.clamp(1, 1 << 20) as u32)
            .expect("clamped to >= 1")
            .min(rps);
        Ok(Sender {
            http,
            base: source.base_url.trim_end_matches('/').to_owned(),
            auth,
            limiter: RateLimiter::direct(Quota::per_second(rps).allow_burst(burst)),
            slots: Semaphore::new(limits.concurrency.max(1)),
            stats: SendStats::default(),
        })
    }

    /// Waits for a concurrency slot, then for the rate limiter. Hold the permit until the
    /// attempt's answer is in.
    pub async fn admit(&self) -> SemaphorePermit<'_> {
        let permit = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        self.limiter.until_ready().await;
        permit
    }

    /// One attempt, classified. Call [`admit`](Self::admit) first, and record `in_flight`
    /// before calling this.
    pub async fn post(&self, req: &Request) -> Outcome {
        let url = format!("{}{}", self.base, req.path);
        let builder = self
            .http
            .post(url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(req.body.clone().unwrap_or_default());
        let resp = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.record(None);
                return classify::transport(&e);
            }
        };
        let status = resp.status().as_u16();
        self.stats.record(Some(status));
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        match resp.bytes().await {
            Ok(body) => classify::response(status, retry_after, &body),
            // The status line arrived: a 2xx was processed even if its body was cut.
            Err(_) if (200..300).contains(&status) => classify::response(status, None, b""),
            Err(e) => match classify::response(status, retry_after, b"") {
                Outcome::Sent { .. } => unreachable!("2xx handled above"),
                o @ (Outcome::Refused { .. }
                | Outcome::Auth { .. }
                | Outcome::NotProcessed { .. }) => o,
                Outcome::Maybe { http_status, error } => Outcome::Maybe {
                    http_status,
                    error: format!("{error} (and the body was cut: {e})"),
                },
            },
        }
    }

    /// Counts a repeated attempt.
    pub fn note_retry(&self) {
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
    }
}
