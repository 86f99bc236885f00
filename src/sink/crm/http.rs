//! HTTP for CRM sinks: bearer auth, a proactive request budget, retries (429 honouring
//! `Retry-After` or HubSpot's rate-limit headers, 5xx, timeouts) and request counters.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use backon::Retryable;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};

use crate::secret::Secret;

/// Why a CRM call failed for good.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// 401 / 403: the token was refused (exit 3).
    #[error(
        "{crm}: HTTP {status}: the token was refused or lacks a scope; check {token_env} (or crm_token_file)"
    )]
    Auth {
        /// CRM name.
        crm: &'static str,
        /// Status.
        status: u16,
        /// The env var of the token.
        token_env: &'static str,
    },
    /// Retries exhausted or an unreachable server (exit 5).
    #[error("{crm}: {what}: {detail} (gave up after {attempts} attempts)")]
    Unavailable {
        /// CRM name.
        crm: &'static str,
        /// The request.
        what: String,
        /// Last error.
        detail: String,
        /// Attempts.
        attempts: u32,
    },
    /// A response we cannot read (exit 5).
    #[error("{crm}: {what}: unexpected response: {detail}")]
    Protocol {
        /// CRM name.
        crm: &'static str,
        /// The request.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// A response: status, headers, body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: bytes::Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

enum Attempt {
    Retry {
        detail: String,
        after: Option<Duration>,
    },
    Fatal(CrmError),
}

/// The HTTP side of a CRM sink.
pub struct CrmHttp {
    crm: &'static str,
    token_env: &'static str,
    http: reqwest::Client,
    base: String,
    auth: HeaderValue,
    limiter: DefaultDirectRateLimiter,
    max_retries: usize,
    /// Responses by status (and `transport` errors).
    pub by_status: Mutex<BTreeMap<String, u64>>,
}

impl CrmHttp {
    /// A client for `base` (no trailing slash needed) with a budget of `per_10s` requests per
    /// rolling 10 s (never exceeded: the bucket refills at `per_10s - burst` per 10 s with a
    /// burst of a tenth).
    ///
    /// # Errors
    /// A message when the token cannot be sent in a header or the TLS setup fails.
    pub fn new(
        crm: &'static str,
        token_env: &'static str,
        base: &str,
        token: &Secret,
        per_10s: u32,
        timeout: Duration,
        max_retries: usize,
    ) -> Result<Self, String> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                "the CRM token contains characters that cannot be sent in a header".to_string()
            })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("engati-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let per_10s = per_10s.max(2);
        let burst = (per_10s / 10).max(1);
        let refill = (per_10s - burst).max(1);
        let period = Duration::from_millis(10_000 / u64::from(refill));
        let quota = Quota::with_period(period)
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
        Ok(CrmHttp {
            crm,
            token_env,
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
            limiter: RateLimiter::direct(quota),
            max_retries,
            by_status: Mutex::new(BTreeMap::new()),
        })
    }

    fn count(&self, k: String) {
        *self
            .by_status
            .lock()
            .expect("stats lock")
            .entry(k)
            .or_default() += 1;
    }

    /// Sends `method path` with an optional JSON body; retries 429/5xx/timeouts. Any other
    /// status is returned to the caller (400, 404, 409, 207 are decisions of the sink).
    ///
    /// # Errors
    /// [`CrmError::Auth`] on 401/403, [`CrmError::Unavailable`] when retries are exhausted.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, CrmError> {
        let url = format!("{}{path}", self.base);
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let op = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt(&method, &url, body).await
        };
        let backoff = crate::retry::backoff(
            Duration::from_millis(250),
            Duration::from_secs(60),
            self.max_retries,
        );
        op.retry(backoff)
            .when(|e| matches!(e, Attempt::Retry { .. }))
            .notify(|e, d| {
                if let Attempt::Retry { detail, .. } = e {
                    tracing::info!(crm = self.crm, request = %format!("{method} {path}"), error = %detail,
                        delay_ms = d.as_millis() as u64, "Retrying CRM request after a backoff.");
                }
            })
            .adjust(|e, d| {
                let d = d?;
                Some(match e {
                    Attempt::Retry { after, .. } => crate::retry::delay(d, *after),
                    Attempt::Fatal(_) => d,
                })
            })
            .await
            .map_err(|e| match e {
                Attempt::Fatal(f) => f,
                Attempt::Retry { detail, .. } => CrmError::Unavailable {
                    crm: self.crm,
                    what: format!("{method} {path}"),
                    detail,
                    attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
                },
            })
    }

    /// One attempt: the request budget, the request, and what its answer means.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Attempt> {
        self.limiter.until_ready().await;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let resp = req.send().await.map_err(|e| {
            self.count("transport".into());
            Attempt::Retry {
                detail: e.to_string(),
                after: None,
            }
        })?;
        let status = resp.status();
        self.count(status.as_u16().to_string());
        let after = crate::retry::retry_after(resp.headers(), std::time::SystemTime::now());
        let low = budget_low(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| Attempt::Retry {
            detail: e.to_string(),
            after: None,
        })?;
        if let Some(pause) = low {
            // HubSpot says the window is nearly used up: wait before the next call.
            tokio::time::sleep(pause).await;
        }
        self.classify(status, after, bytes)
    }

    /// 401/403 end the run; 429, 5xx and 408 are retried (429 honouring `Retry-After`, at
    /// least 1 s); any other status goes back to the caller.
    fn classify(
        &self,
        status: StatusCode,
        after: Option<Duration>,
        bytes: bytes::Bytes,
    ) -> Result<Reply, Attempt> {
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(Attempt::Fatal(CrmError::Auth {
                    crm: self.crm,
                    status: status.as_u16(),
                    token_env: self.token_env,
                }))
            }
            StatusCode::TOO_MANY_REQUESTS => Err(Attempt::Retry {
                detail: format!(
                    "HTTP 429: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
                after: after.or(Some(Duration::from_secs(1))),
            }),
            s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Err(Attempt::Retry {
                detail: format!("HTTP {}", s.as_u16()),
                after,
            }),
            s => Ok(Reply {
                status: s.as_u16(),
                body: bytes,
            }),
        }
    }

    /// A protocol error for `what`.
    pub fn protocol(&self, what: &str, detail: impl Into<String>) -> CrmError {
        CrmError::Protocol {
            crm: self.crm,
            what: what.to_owned(),
            detail: detail.into(),
        }
    }
}

/// HubSpot's `X-HubSpot-RateLimit-Remaining` / `-Interval-Milliseconds`: when one or no
/// request is left in the window, pause for a tenth of the interval.
fn budget_low(h: &HeaderMap) -> Option<Duration> {
    let remaining: i64 = h
        .get("x-hubspot-ratelimit-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let interval: u64 = h
        .get("x-hubspot-ratelimit-interval-milliseconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10_000);
    (remaining <= 1).then(|| Duration::from_millis(interval / 10))
}
