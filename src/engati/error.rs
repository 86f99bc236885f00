//! `ApiError`: what went wrong talking to the Engati API, classified once, here.
//!
//! Rules (docs/engati-api.md, "Errors"; design.md, "Retry is a policy"): key on the HTTP status
//! first and read bodies loosely. 429 (honouring `Retry-After`), 408, 5xx, timeouts, connection
//! errors and truncated/garbled 200 bodies are retryable; 400 (codes 1002/1003/1004), 401,
//! 403, 404 and a well-formed body of an unknown shape are not.

use std::time::Duration;

use super::wire::{DecodeError, ErrorBody};

/// One failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the API refused the request (Engati codes 1002, 1003, 1004).
    #[error("{}", rejected_message(.code, .name, .details))]
    Rejected {
        /// Engati's code, when the body had one.
        code: Option<i64>,
        /// The symbolic name (`INVALID_PAGE_NUMBER`).
        name: Option<String>,
        /// The API's sentence.
        details: Option<String>,
    },
    /// 401 or 403: the key was refused or has no access.
    #[error("HTTP {status}: {}", auth_message(*.status))]
    Auth {
        /// 401 or 403.
        status: u16,
    },
    /// 404: no such route.
    #[error(
        "HTTP 404 Not Found for {url}: no such route on this server; check `base_url` / `provider`"
    )]
    NotFound {
        /// The URL asked (no secret: the key travels in a header).
        url: String,
    },
    /// 301, 302, 307, 308: the server points elsewhere (never followed: the key must not be
    /// sent to another host).
    #[error(
        "HTTP {status} redirect to {}: the API is not at base_url; set base_url to the API's address",
        .location.as_deref().unwrap_or("(no Location header)")
    )]
    Redirect {
        /// The status.
        status: u16,
        /// The `Location` header.
        location: Option<String>,
    },
    /// A 2xx answer that is not JSON (an HTML page: a wrong base URL, a login portal).
    #[error(
        "HTTP {status} from {url} is not JSON (content-type {}; starts with `{head}`): base_url probably points at a web page, not the API",
        .content_type.as_deref().unwrap_or("none")
    )]
    NotJson {
        /// The status.
        status: u16,
        /// The `Content-Type` header.
        content_type: Option<String>,
        /// The first bytes of the body, as text (at most 80 characters).
        head: String,
        /// The URL asked.
        url: String,
    },
    /// The server could not be reached on the run's first contact (refused, unknown host):
    /// almost always a wrong URL, so not retried.
    #[error(
        "cannot reach {url}: {message}; check base_url / provider (nothing answered on this run's first request)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport's message.
        message: String,
    },
    /// 429: throttled.
    #[error("HTTP 429 Too Many Requests{}", retry_after_text(.retry_after))]
    Throttled {
        /// The `Retry-After` delay, when given.
        retry_after: Option<Duration>,
    },
    /// 5xx or 408.
    #[error("HTTP {status}: the server failed")]
    Server {
        /// The status.
        status: u16,
    },
    /// Another status (e.g. 405, 409, 422).
    #[error("HTTP {status}: unexpected status")]
    Unexpected {
        /// The status.
        status: u16,
    },
    /// Timeout, connection refused or reset, a body cut by the connection.
    #[error("{kind}: {message}")]
    Transport {
        /// `timeout`, `connection error` or `transport error`.
        kind: &'static str,
        /// reqwest's message and its causes (URLs carry no secret: the key is a header).
        message: String,
    },
    /// The body could not be read.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

fn rejected_message(code: &Option<i64>, name: &Option<String>, details: &Option<String>) -> String {
    let mut s = String::from("HTTP 400");
    if let Some(c) = code {
        s.push_str(&format!(", code {c}"));
    }
    if let Some(n) = name {
        s.push_str(&format!(" {n}"));
    }
    if let Some(d) = details {
        s.push_str(&format!(": {d}"));
    }
    let fix = match code {
        Some(1002) => "check customer_id, bot_key and the channel user id",
        Some(1003) => "check since/until: dates are UTC epoch ms and end must be after start",
        Some(1004) => {
            "page_number and page_size must be positive integers; check page_size (1..=500)"
        }
        _ => "the API refused the request parameters",
    };
    s.push_str(&format!(" ({fix})"));
    s
}

fn auth_message(status: u16) -> &'static str {
    if status == 401 {
        "the API key was refused; check ENGATI_API_KEY or --api-key-file (keys can be revoked or regenerated under Integrations > Engati API)"
    } else {
        "the API key has no access to this customer/bot"
    }
}

fn retry_after_text(d: &Option<Duration>) -> String {
    d.map(|d| format!(" (Retry-After {}s)", d.as_secs()))
        .unwrap_or_default()
}

impl ApiError {
    /// True for a connection that could not be made (refused, unknown host, unreachable).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ApiError::Transport {
                kind: "connection error",
                ..
            }
        )
    }

    /// True when another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Throttled { .. } | ApiError::Server { .. } | ApiError::Transport { .. } => {
                true
            }
            ApiError::Decode(d) => d.is_retryable(),
            _ => false,
        }
    }

    /// The server's `Retry-After`, when it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Throttled { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Classifies a non-2xx response to `url` (`location`: its `Location` header).
    pub fn from_status(
        status: u16,
        retry_after: Option<Duration>,
        location: Option<String>,
        url: &str,
        body: &[u8],
    ) -> Self {
        match status {
            400 => {
                let b = ErrorBody::parse(body);
                ApiError::Rejected {
                    code: b.code,
                    name: b.name,
                    details: b.details,
                }
            }
            401 | 403 => ApiError::Auth { status },
            404 => ApiError::NotFound {
                url: url.to_owned(),
            },
            301 | 302 | 303 | 307 | 308 => ApiError::Redirect { status, location },
            429 => ApiError::Throttled { retry_after },
            408 | 500..=599 => ApiError::Server { status },
            _ => ApiError::Unexpected { status },
        }
    }

    /// Classifies a reqwest error (never includes headers, so never the key).
    pub fn from_transport(e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection error"
        } else {
            "transport error"
        };
        let mut message = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        ApiError::Transport { kind, message }
    }
}

/// A request that failed for good: what was asked, how many attempts, and the last error.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}{}", attempts_text(*.attempts))]
pub struct RequestError {
    /// E.g. `Conversations API, user 919565428256, 2026-08-01T00:00:00.000Z..2026-08-02T00:00:00.000Z, page 3`.
    pub what: String,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// The last attempt's error.
    #[source]
    pub source: ApiError,
}

fn attempts_text(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ApiError {
        fn from_status_test(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Self {
            ApiError::from_status(status, retry_after, None, "http://h/x", body)
        }
    }

    #[test]
    fn classification_matches_the_contract() {
        assert!(!ApiError::from_status_test(400, None, b"").is_retryable());
        assert!(!ApiError::from_status_test(401, None, b"").is_retryable());
        assert!(!ApiError::from_status_test(403, None, b"").is_retryable());
        assert!(!ApiError::from_status_test(404, None, b"").is_retryable());
        assert!(ApiError::from_status_test(429, None, b"").is_retryable());
        assert!(ApiError::from_status_test(500, None, b"<html>").is_retryable());
        assert!(ApiError::from_status_test(503, None, b"").is_retryable());
        assert!(ApiError::from_status_test(408, None, b"").is_retryable());
        let t = ApiError::from_status_test(429, Some(Duration::from_secs(3)), b"");
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn rejections_name_the_code_and_the_fix() {
        let e = ApiError::from_status_test(
            400,
            None,
            br#"{"status":{"code":1004,"desc":"INVALID_PAGE_NUMBER"},"error_details":"bad page"}"#,
        );
        let text = e.to_string();
        assert!(
            text.contains("1004")
                && text.contains("INVALID_PAGE_NUMBER")
                && text.contains("page_size"),
            "{text}"
        );
        let e = ApiError::from_status_test(400, None, br#"{"status":{"code":1002}}"#);
        assert!(e.to_string().contains("bot_key"));
    }
}
