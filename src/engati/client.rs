//! The HTTP client for the Engati API: base URL, Basic auth, timeouts, the global concurrency
//! and rate limits, retries, and request counters.
//!
//! Every request waits for the shared rate limiter (`governor`, `max_rps` requests/s across
//! all tasks), then holds one of `concurrency` permits while it is in flight (body included);
//! with `concurrency = "auto"` the number of permits is adapted to the server's round-trip
//! times and pushback ([`adaptive`](super::adaptive)), within `max_concurrency`.
//! Failed attempts are classified by [`ApiError::is_retryable`] and retried with exponential
//! backoff and full jitter (`backon`), honouring `Retry-After` on 429, up to `max_retries`
//! retries. The key is sent as `Authorization: Basic <key>` exactly as given (docs/engati-api.md,
//! "Auth"), in a header marked sensitive; it never appears in a URL, a log line or an error.

use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION};

use super::adaptive::{LimitReport, Limiter, Outcome};
use super::error::{ApiError, RequestError};
use super::users_wire::{self, ListPath};
use super::wire::{self, UsersKeys};
use crate::model::User;
use crate::secret::Secret;

/// Client settings (validated by `config`).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL ending in `/` (a provider preset or `base_url`).
    pub base_url: String,
    /// Numeric customer id.
    pub customer_id: String,
    /// Bot key.
    pub bot_key: String,
    /// The API key.
    pub api_key: Secret,
    /// Whole-request timeout (connect + headers + body).
    pub timeout: Duration,
    /// Requests in flight at most (with `adaptive`, the ceiling: `max_concurrency`).
    pub concurrency: usize,
    /// Adapt the limit below `concurrency` to round-trip times and 429/503s.
    pub adaptive: bool,
    /// Requests per second at most, across all tasks.
    pub max_rps: u32,
    /// Retries after the first attempt, at most.
    pub max_retries: usize,
    /// First backoff delay.
    pub backoff_min: Duration,
    /// Longest backoff delay.
    pub backoff_max: Duration,
    /// Keys that may hold a Conversations page's message list.
    pub conversations_keys: Vec<String>,
    /// Keys the Users reader tries.
    pub users_keys: UsersKeys,
}

/// Request counters, shared by all tasks (for the run report).
#[derive(Debug, Default)]
pub struct RequestStats {
    by_status: [AtomicU64; 6],
    status_counts: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Attempts that failed without an HTTP status (timeouts, connection errors).
    pub transport_errors: AtomicU64,
    /// Attempts that got a 200 with a body that could not be read (truncated).
    pub decode_errors: AtomicU64,
    /// Retries made (attempts after the first).
    pub retries: AtomicU64,
    /// Response body bytes received.
    pub bytes: AtomicU64,
    /// 429 responses.
    pub throttled: AtomicU64,
    /// Sum of the response times of answered attempts (send to last body byte), microseconds.
    pub latency_us: AtomicU64,
    /// Answered attempts whose response time is in `latency_us`.
    pub latency_count: AtomicU64,
}

impl RequestStats {
    fn record_status(&self, status: u16) {
        let class = usize::from(status / 100).min(5);
        self.by_status[class].fetch_add(1, Ordering::Relaxed);
        if status == 429 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        *self
            .status_counts
            .lock()
            .expect("stats lock")
            .entry(status)
            .or_default() += 1;
    }

    /// Responses by exact HTTP status.
    pub fn by_status(&self) -> std::collections::BTreeMap<u16, u64> {
        self.status_counts.lock().expect("stats lock").clone()
    }

    /// Responses by status class: index 1 is 1xx ... 5 is 5xx (0: below 100).
    pub fn by_class(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.by_status[i].load(Ordering::Relaxed))
    }

    /// True once any response (whatever its status) was received.
    pub fn answered(&self) -> bool {
        self.by_status.iter().any(|a| a.load(Ordering::Relaxed) > 0)
    }

    /// All attempts: responses plus transport errors.
    pub fn attempts(&self) -> u64 {
        self.by_status
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum::<u64>()
            + self.transport_errors.load(Ordering::Relaxed)
    }
}

/// One Conversations page: the body and the byte range of each message in it.
#[derive(Debug, Clone)]
pub struct Page {
    /// 1-based page number.
    pub number: u32,
    /// The response body (valid UTF-8 JSON).
    pub body: Bytes,
    /// Byte range of each message's raw JSON in `body`.
    pub spans: Vec<Range<usize>>,
}

/// A response whose headers were read (the caller holds the concurrency permit).
struct Sent {
    resp: reqwest::Response,
    status: u16,
    retry_after: Option<Duration>,
    location: Option<String>,
    content_type: Option<String>,
    /// When the request was sent (after the rate limit and the permit): the round trip's start.
    started: std::time::Instant,
}

impl Sent {
    /// Records the round trip (request sent to body read) in the latency statistics.
    fn record_latency(&self, stats: &RequestStats) {
        let took = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.latency_us.fetch_add(took, Ordering::Relaxed);
        stats.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Sent {
    /// The error of a non-2xx answer with `body`.
    fn refused(self, url: &Url, body: &[u8]) -> ApiError {
        ApiError::from_status(
            self.status,
            self.retry_after,
            self.location,
            url.as_str(),
            body,
        )
    }
}

/// The Engati API client. Cheap to clone (shared state behind `Arc`).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    /// `<base>bot-api/v1.0/customer/<cid>/bot/<bot>/channel-user/`, parsed once: a page URL is
    /// this with the encoded user id appended to the path and the query set, so neither the
    /// scheme nor the host is parsed again (a whole `Url::parse` per page was about 5% of the
    /// CPU of an export with 1-day windows, ~15 messages a request).
    conversations_prefix: Url,
    auth: HeaderValue,
    limiter: DefaultDirectRateLimiter,
    inflight: Limiter,
    config: ClientConfig,
    stats: Arc<RequestStats>,
}

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// `base_url` does not parse.
    #[error("base_url `{url}` is not a valid URL: {reason}")]
    BaseUrl {
        /// The value.
        url: String,
        /// Why.
        reason: String,
    },
    /// The key has characters a header cannot carry.
    #[error(
        "the API key contains characters that cannot be sent in a header (check the key file for stray bytes)"
    )]
    KeyNotHeaderSafe,
    /// reqwest could not build its client (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl Client {
    /// Builds the client.
    ///
    /// # Errors
    /// [`ClientBuildError`] for a bad base URL or a key that cannot be sent.
    pub fn new(config: ClientConfig) -> Result<Self, ClientBuildError> {
        Self::with_stats(config, Arc::default())
    }

    /// Builds the client counting into `stats` (shared with whoever samples them during the
    /// run: the metrics file, the run report's timeline).
    ///
    /// # Errors
    /// [`ClientBuildError`] for a bad base URL or a key that cannot be sent.
    pub fn with_stats(
        config: ClientConfig,
        stats: Arc<RequestStats>,
    ) -> Result<Self, ClientBuildError> {
        let mut base_text = config.base_url.clone();
        if !base_text.ends_with('/') {
            base_text.push('/');
        }
        let base = Url::parse(&base_text).map_err(|e| ClientBuildError::BaseUrl {
            url: config.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientBuildError::BaseUrl {
                url: config.base_url.clone(),
                reason: "the scheme must be http or https".into(),
            });
        }
        let mut auth = HeaderValue::from_str(&format!("Basic {}", config.api_key.expose()))
            .map_err(|_| ClientBuildError::KeyNotHeaderSafe)?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .user_agent(concat!("engati-etl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientBuildError::Http(e.to_string()))?;
        let rps = NonZeroU32::new(config.max_rps.max(1)).expect("max(1) is non-zero");
        let limiter = RateLimiter::direct(
            Quota::per_second(rps).allow_burst(
                rps.min(
                    NonZeroU32::new(config.concurrency.clamp(1, u32::MAX as usize) as u32)
                        .expect("clamped to >= 1"),
                ),
            ),
        );
        let prefix_text = format!(
            "{}bot-api/v1.0/customer/{}/bot/{}/channel-user/",
            base,
            segment(&config.customer_id),
            segment(&config.bot_key)
        );
        let conversations_prefix =
            Url::parse(&prefix_text).map_err(|e| ClientBuildError::BaseUrl {
                url: config.base_url.clone(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                conversations_prefix,
                base,
                auth,
                limiter,
                inflight: if config.adaptive {
                    Limiter::adaptive(config.concurrency)
                } else {
                    Limiter::fixed(config.concurrency)
                },
                config,
                stats,
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Request counters so far.
    pub fn stats(&self) -> &RequestStats {
        &self.inner.stats
    }

    /// What the adaptive limit did (none for a fixed one).
    pub fn concurrency_report(&self) -> Option<LimitReport> {
        self.inner.inflight.report()
    }

    fn url(&self, tail: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .expect("http(s) URLs can have path segments");
            segs.pop_if_empty();
            segs.extend(
                [
                    "bot-api",
                    "v1.0",
                    "customer",
                    &self.inner.config.customer_id,
                    "bot",
                    &self.inner.config.bot_key,
                ]
                .iter()
                .chain(tail.iter()),
            );
        }
        url
    }

    /// Users API: the users whose attribute `name` equals `value` (docs/engati-api.md, "Users API").
    ///
    /// # Errors
    /// [`RequestError`] after retries, or at once for non-retryable errors (401/403, 400,
    /// unknown body shape).
    pub async fn users(&self, name: &str, value: &str) -> Result<Vec<User>, RequestError> {
        let mut url = self.url(&["users"]);
        url.query_pairs_mut()
            .append_pair("attribute_name", name)
            .append_pair("attribute_value", value);
        let what = format!("Users API, attribute {name}={value}");
        let keys = &self.inner.config.users_keys;
        self.with_retry(what, || async {
            let body = self.attempt(&url).await?;
            wire::parse_users(&body, keys).map_err(|e| self.decode_failed(e))
        })
        .await
    }

    /// Users API into `spool`: the body is written to the file as it arrives (a million users
    /// are ~170 MB: never held in memory), then read through once to check it is whole JSON
    /// and find the list ([`users_wire::locate_file`], on a blocking thread). A body cut short
    /// is retried like any failed request. Returns where the list is, for
    /// [`users_wire::stream_file`].
    ///
    /// # Errors
    /// [`RequestError`] after retries, or at once for non-retryable errors (401/403, 400,
    /// unknown body shape, a spool file that cannot be written).
    pub async fn users_spooled(
        &self,
        name: &str,
        value: &str,
        spool: &std::fs::File,
    ) -> Result<ListPath, RequestError> {
        let mut url = self.url(&["users"]);
        url.query_pairs_mut()
            .append_pair("attribute_name", name)
            .append_pair("attribute_value", value);
        let what = format!("Users API, attribute {name}={value}");
        self.with_retry(what, || async {
            self.attempt_into(&url, spool).await?;
            let spool_failed = |message: String| ApiError::Spool { message };
            let file = spool.try_clone().map_err(|e| spool_failed(e.to_string()))?;
            let keys = self.inner.config.users_keys.clone();
            tokio::task::spawn_blocking(move || users_wire::locate_file(&file, &keys))
                .await
                .map_err(|e| spool_failed(e.to_string()))?
                .map_err(|e| self.decode_failed(e))
        })
        .await
    }

    /// Conversations API: one page of one user's messages for `[start_ms, end_ms]` as sent on
    /// the wire (the caller widens and filters the window; see `pipeline`).
    ///
    /// # Errors
    /// [`RequestError`] after retries, or at once for non-retryable errors.
    pub async fn conversations_page(
        &self,
        channel_user_id: &str,
        start_ms: i64,
        end_ms: i64,
        page_number: u32,
        page_size: u32,
        what: impl FnOnce() -> String,
    ) -> Result<Page, RequestError> {
        let url = self.page_url(
            channel_user_id,
            format_args!(
                "start_date={start_ms}&end_date={end_ms}&page_number={page_number}&page_size={page_size}"
            ),
        );
        let keys = &self.inner.config.conversations_keys;
        self.with_retry_lazy(what, || async {
            let body = self.attempt(&url).await?;
            let spans = match std::str::from_utf8(&body) {
                Ok(text) => {
                    wire::parse_conversations_str(text, keys).map_err(|e| self.decode_failed(e))?
                }
                Err(e) => {
                    return Err(self.decode_failed(wire::DecodeError::Syntax {
                        detail: format!("invalid UTF-8: {e}"),
                        len: body.len(),
                        truncated: e.error_len().is_none(),
                    }));
                }
            };
            Ok(Page {
                number: page_number,
                body,
                spans,
            })
        })
        .await
    }

    /// The URL of one Conversations page: the prefix, the user's id as one path segment,
    /// `/conversations` and `query`.
    fn page_url(&self, channel_user_id: &str, query: std::fmt::Arguments<'_>) -> Url {
        use std::fmt::Write as _;
        let mut url = self.inner.conversations_prefix.clone();
        let mut text = String::with_capacity(url.path().len() + channel_user_id.len() + 16);
        text.push_str(url.path());
        let _ = write!(text, "{}/conversations", segment(channel_user_id));
        url.set_path(&text);
        text.clear();
        let _ = text.write_fmt(query);
        url.set_query(Some(&text));
        url
    }

    fn decode_failed(&self, e: wire::DecodeError) -> ApiError {
        self.inner
            .stats
            .decode_errors
            .fetch_add(1, Ordering::Relaxed);
        ApiError::Decode(e)
    }

    /// One attempt: rate limit, permit, send, status check, body; the permit goes back with
    /// what the response says about the server's load.
    async fn attempt(&self, url: &Url) -> Result<Bytes, ApiError> {
        self.inner.limiter.until_ready().await;
        let permit = self.inner.inflight.acquire().await;
        let result = self.read_body(url).await;
        permit.done(outcome_of(&result));
        result
    }

    /// One attempt whose 2xx body goes to `spool` as it arrives (from the file's start; the
    /// file is cut to the body's length), never into memory: rate limit, permit, send, body;
    /// the permit goes back with what the response says about the server's load. Returns the
    /// body's length.
    async fn attempt_into(&self, url: &Url, spool: &std::fs::File) -> Result<u64, ApiError> {
        self.inner.limiter.until_ready().await;
        let permit = self.inner.inflight.acquire().await;
        let result = self.spool_body(url, spool).await;
        permit.done(outcome_of(&result));
        result
    }

    /// Sends the request and reads the body into memory, checked (under a permit).
    async fn read_body(&self, url: &Url) -> Result<Bytes, ApiError> {
        let mut sent = self.send(url).await?;
        // Into an exactly sized buffer of our own: a chunk handed up by the HTTP client can
        // share (and so keep alive) a read buffer several times its size, and pages wait in
        // the lookahead, so what they pin would escape the byte budget.
        let mut buf =
            Vec::with_capacity(sent.resp.content_length().unwrap_or(0).min(64 << 20) as usize);
        loop {
            match sent.resp.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(self.transport_failed(url, &e)),
            }
        }
        let body = Bytes::from(buf);
        self.inner
            .stats
            .bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        sent.record_latency(&self.inner.stats);
        if !(200..300).contains(&sent.status) {
            return Err(sent.refused(url, &body));
        }
        if let Some(e) = not_json(sent.status, sent.content_type, &body, url) {
            return Err(e);
        }
        Ok(body)
    }

    /// Sends the request and writes a 2xx body to `spool` (under a permit).
    async fn spool_body(&self, url: &Url, spool: &std::fs::File) -> Result<u64, ApiError> {
        use std::io::{Seek, Write};
        let mut sent = self.send(url).await?;
        if !(200..300).contains(&sent.status) {
            let mut body = Vec::new();
            while let Ok(Some(chunk)) = sent.resp.chunk().await {
                body.extend_from_slice(&chunk);
            }
            return Err(sent.refused(url, &body));
        }
        let spool_failed = |e: std::io::Error| ApiError::Spool {
            message: e.to_string(),
        };
        let mut file = spool;
        file.set_len(0).map_err(spool_failed)?;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(spool_failed)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let (mut len, mut head) = (0u64, Vec::new());
        loop {
            match sent.resp.chunk().await {
                Ok(Some(chunk)) => {
                    if head.len() < 256 {
                        head.extend_from_slice(&chunk[..chunk.len().min(256 - head.len())]);
                    }
                    len += chunk.len() as u64;
                    out.write_all(&chunk).map_err(spool_failed)?;
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport_failed(url, &e)),
            }
        }
        out.flush().map_err(spool_failed)?;
        self.inner.stats.bytes.fetch_add(len, Ordering::Relaxed);
        sent.record_latency(&self.inner.stats);
        if let Some(e) = not_json(sent.status, sent.content_type, &head, url) {
            return Err(e);
        }
        Ok(len)
    }

    /// Sends the request and reads the headers (under a permit, after the rate limit).
    async fn send(&self, url: &Url) -> Result<Sent, ApiError> {
        let inner = &self.inner;
        tracing::debug!(url = %url, "Request.");
        let started = std::time::Instant::now();
        let resp = inner
            .http
            .get(url.clone())
            .header(AUTHORIZATION, inner.auth.clone())
            .send()
            .await
            .map_err(|e| self.transport_failed(url, &e))?;
        let status = resp.status().as_u16();
        inner.stats.record_status(status);
        let headers = resp.headers();
        let retry_after = crate::retry::retry_after(headers, std::time::SystemTime::now());
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (location, content_type) = (header(LOCATION), header(CONTENT_TYPE));
        Ok(Sent {
            resp,
            status,
            retry_after,
            location,
            content_type,
            started,
        })
    }

    /// A transport failure: `Unreachable` (not retried) when nothing has answered yet in this
    /// run, since a refused connection or an unknown host on the first request is almost
    /// always a wrong URL.
    fn transport_failed(&self, url: &Url, e: &reqwest::Error) -> ApiError {
        let stats = &self.inner.stats;
        stats.transport_errors.fetch_add(1, Ordering::Relaxed);
        let err = ApiError::from_transport(e);
        if err.is_connect() && !stats.answered() {
            let message = match err {
                ApiError::Transport { message, .. } => message,
                _ => String::new(),
            };
            let mut shown = url.clone();
            shown.set_query(None);
            return ApiError::Unreachable {
                url: shown.to_string(),
                message,
            };
        }
        err
    }

    async fn with_retry<T, Fut>(
        &self,
        what: String,
        op: impl FnMut() -> Fut,
    ) -> Result<T, RequestError>
    where
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.with_retry_lazy(move || what, op).await
    }

    async fn with_retry_lazy<T, Fut>(
        &self,
        what: impl FnOnce() -> String,
        op: impl FnMut() -> Fut,
    ) -> Result<T, RequestError>
    where
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let cfg = &self.inner.config;
        let stats = &self.inner.stats;
        let attempts = std::sync::atomic::AtomicU32::new(1);
        let backoff = crate::retry::backoff(cfg.backoff_min, cfg.backoff_max, cfg.max_retries);
        let result = op
            .retry(backoff)
            .when(ApiError::is_retryable)
            .adjust(|err: &ApiError, delay| {
                let delay = delay?;
                Some(crate::retry::delay(delay, err.retry_after()))
            })
            .notify(|err: &ApiError, delay| {
                attempts.fetch_add(1, Ordering::Relaxed);
                stats.retries.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %err, delay_ms = delay.as_millis() as u64, "Retrying request after a backoff.");
            })
            .await;
        result.map_err(|source| RequestError {
            what: what(),
            attempts: attempts.load(Ordering::Relaxed),
            source,
        })
    }
}

/// Characters kept as-is in a path segment (RFC 3986 unreserved); everything else is
/// percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded as one URL path segment (shared with `send::render`).
pub(crate) fn segment(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, SEGMENT)
}

/// A 2xx body that is certainly not JSON: a content type that is not JSON, or a first byte
/// that cannot start JSON (an HTML page). A JSON body cut short is left to the parser (and
/// retried).
fn not_json(status: u16, content_type: Option<String>, body: &[u8], url: &Url) -> Option<ApiError> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let json_type = content_type
        .as_deref()
        .is_none_or(|t| t.to_ascii_lowercase().contains("json"));
    let json_start = first.is_none_or(|b| {
        matches!(
            b,
            b'{' | b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9'
        )
    });
    if json_type && json_start {
        return None;
    }
    let head: String = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect();
    Some(ApiError::NotJson {
        status,
        content_type,
        head,
        url: url.to_string(),
    })
}

/// What an attempt's result says about the server's load, for the adaptive limit: 429, 503
/// and timeouts are back-pressure (engati-api.md, "Rate limits"); other errors are not.
fn outcome_of<T>(result: &Result<T, ApiError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(ApiError::Throttled { .. } | ApiError::Server { status: 503 }) => Outcome::BackPressure,
        Err(ApiError::Transport { kind, .. }) if *kind == "timeout" => Outcome::BackPressure,
        Err(_) => Outcome::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page URL built from the parsed prefix is the one `Url::parse` gives for the whole
    /// text, for ids that need encoding (spaces, slashes, `:`, `%`, non-ASCII) too.
    #[test]
    fn page_urls_equal_a_parse_of_the_whole_text() {
        let client = Client::new(ClientConfig {
            base_url: "http://127.0.0.1:9/engati".into(),
            customer_id: "61179".into(),
            bot_key: "bb67e0773bed4c7e".into(),
            api_key: Secret::new("k"),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            adaptive: false,
            max_rps: 1,
            max_retries: 0,
            backoff_min: Duration::from_millis(1),
            backoff_max: Duration::from_millis(1),
            conversations_keys: vec!["conversations".into()],
            users_keys: Default::default(),
        })
        .expect("client");
        for id in ["919565428256", "a b/c:d?e#f", "50%", "ü€ user", ""] {
            let got = client.page_url(
                id,
                format_args!("start_date=1&end_date=2&page_number=3&page_size=500"),
            );
            let want = Url::parse(&format!(
                "http://127.0.0.1:9/engati/bot-api/v1.0/customer/61179/bot/bb67e0773bed4c7e/channel-user/{}/conversations?start_date=1&end_date=2&page_number=3&page_size=500",
                segment(id)
            ))
            .unwrap();
            assert_eq!(got, want, "{id:?}");
            assert_eq!(
                got.path_segments().unwrap().nth(8).unwrap(),
                segment(id).to_string()
            );
        }
    }
}
