//! What one send attempt means: the send-specific policy, decided once, here.
//!
//! Sending is irreversible, so the export side's retry policy (retry 5xx and timeouts) is
//! wrong for it. An attempt is one of:
//! - **sent**: 2xx (the API took it; `status.code` 1000 and `responseObject.message_id` when
//!   the body says so, docs/engati-api.md "Write-side APIs");
//! - **refused** (`failed`): a definite refusal: 400 (1002, 1004, ...), 404 and the other
//!   4xx but 401/403/408/429: the API did not process it;
//! - **not processed**: certainly not processed, safe to send again: the connection could not
//!   be made (refused, DNS, TLS), 429 (honouring `Retry-After`), 408;
//! - **maybe** (`unknown`): the request may have been processed: a timeout once the
//!   connection was up, a reset or closed connection, any 5xx, a 2xx whose body says
//!   otherwise than success;
//! - **auth**: 401 or 403: the campaign stops (exit 3); the row was not processed.

use std::time::Duration;

use crate::engati::wire::ErrorBody;

/// The classified result of one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The API accepted the request.
    Sent {
        /// HTTP status (2xx).
        http_status: u16,
        /// `status.code` of the body (1000), if any.
        api_code: Option<i64>,
        /// `responseObject.message_id` (templates), or a broadcast id, if any.
        message_id: Option<String>,
        /// The body (at most 2 KiB), for the ledger.
        response: String,
    },
    /// A definite refusal: not processed, not to be retried without a change.
    Refused {
        /// HTTP status.
        http_status: u16,
        /// Engati's code (1002, 1004, ...).
        api_code: Option<i64>,
        /// The API's reason.
        error: String,
    },
    /// Certainly not processed: may be sent again.
    NotProcessed {
        /// HTTP status (429, 408), or `None` for a connection that was never made.
        http_status: Option<u16>,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
        /// What happened.
        error: String,
    },
    /// May have been processed: never sent again automatically.
    Maybe {
        /// HTTP status, when one was received.
        http_status: Option<u16>,
        /// What happened.
        error: String,
    },
    /// 401 or 403: stop the campaign.
    Auth {
        /// 401 or 403.
        http_status: u16,
        /// What the server said.
        error: String,
    },
}

impl Outcome {
    /// The ledger label of the attempt: `sent`, `refused`, `not_processed`, `maybe`, `auth`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Refused { .. } => "refused",
            Outcome::NotProcessed { .. } => "not_processed",
            Outcome::Maybe { .. } => "maybe",
            Outcome::Auth { .. } => "auth",
        }
    }

    /// The HTTP status, if a response was received.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Outcome::Sent { http_status, .. }
            | Outcome::Refused { http_status, .. }
            | Outcome::Auth { http_status, .. } => Some(*http_status),
            Outcome::NotProcessed { http_status, .. } | Outcome::Maybe { http_status, .. } => {
                *http_status
            }
        }
    }
}

fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.len() <= max {
        return t.to_owned();
    }
    let mut end = max;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &t[..end])
}

/// A success body: `status.code` and `responseObject.message_id` (or a broadcast id).
fn success(status: u16, body: &[u8]) -> Outcome {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = v
        .as_ref()
        .and_then(|v| v.pointer("/status/code"))
        .and_then(|c| c.as_i64().or_else(|| c.as_str()?.parse().ok()));
    let ro = v.as_ref().and_then(|v| v.get("responseObject"));
    let id = ro.and_then(|o| {
        ["message_id", "messageId", "broadcastId", "id"]
            .iter()
            .find_map(|k| o.get(*k))
            .and_then(|x| match x {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    });
    let response = excerpt(body, 2048);
    // A body that positively says "not done" is not a success; it is not a definite
    // refusal either (it came with a 2xx): the row stays unknown.
    let not_done =
        matches!(code, Some(c) if c != 1000) || matches!(ro, Some(serde_json::Value::Bool(false)));
    if not_done {
        return Outcome::Maybe {
            http_status: Some(status),
            error: format!("HTTP {status} whose body does not report success: {response}"),
        };
    }
    Outcome::Sent {
        http_status: status,
        api_code: code,
        message_id: id,
        response,
    }
}

/// Classifies a response: HTTP status, `Retry-After` and body.
pub fn response(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => success(status, body),
        401 | 403 => Outcome::Auth {
            http_status: status,
            error: if status == 401 {
                "HTTP 401: the API key was refused; check ENGATI_API_KEY or --api-key-file".into()
            } else {
                "HTTP 403: the API key has no access to this bot (or this API is not enabled for it)".into()
            },
        },
        429 => Outcome::NotProcessed {
            http_status: Some(429),
            retry_after,
            error: "HTTP 429 Too Many Requests".into(),
        },
        408 => Outcome::NotProcessed {
            http_status: Some(408),
            retry_after,
            error: "HTTP 408 Request Timeout (the server did not read the request)".into(),
        },
        400..=499 => {
            let b = ErrorBody::parse(body);
            let mut error = format!("HTTP {status}");
            if let Some(c) = b.code {
                error.push_str(&format!(", code {c}"));
            }
            if let Some(n) = &b.name {
                error.push_str(&format!(" {n}"));
            }
            match &b.details {
                Some(d) => error.push_str(&format!(": {d}")),
                None if b.code.is_none() && b.name.is_none() => {
                    error.push_str(&format!(": {}", excerpt(body, 300)))
                }
                None => {}
            }
            Outcome::Refused {
                http_status: status,
                api_code: b.code,
                error,
            }
        }
        _ => Outcome::Maybe {
            http_status: Some(status),
            error: format!(
                "HTTP {status}: the server failed after receiving the request; it may have been processed, so it is not retried"
            ),
        },
    }
}

/// Classifies a transport error (no HTTP status). Only a connection that was never made is
/// certainly unprocessed; anything after the request could have left is `Maybe`.
pub fn transport(e: &reqwest::Error) -> Outcome {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_connect() {
        Outcome::NotProcessed {
            http_status: None,
            retry_after: None,
            error: format!("connection error (the request was not sent): {message}"),
        }
    } else if e.is_timeout() {
        Outcome::Maybe {
            http_status: None,
            error: format!(
                "timeout after the request was sent; it may have been processed: {message}"
            ),
        }
    } else {
        Outcome::Maybe {
            http_status: None,
            error: format!(
                "connection failed after the request was sent; it may have been processed: {message}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_certainly_was_not_processed_is_retryable() {
        let ok = response(
            200,
            None,
            br#"{"status":{"code":1000,"desc":"SUCCESS"},"responseObject":{"message_id":"wamid.X"}}"#,
        );
        assert_eq!(
            ok,
            Outcome::Sent {
                http_status: 200,
                api_code: Some(1000),
                message_id: Some("wamid.X".into()),
                response: r#"{"status":{"code":1000,"desc":"SUCCESS"},"responseObject":{"message_id":"wamid.X"}}"#.into(),
            }
        );
        assert_eq!(
            response(200, None, br#"{"responseObject":true}"#).label(),
            "sent"
        );
        assert_eq!(response(200, None, b"<truncated").label(), "sent");
        assert_eq!(
            response(200, None, br#"{"responseObject":false}"#).label(),
            "maybe"
        );
        assert_eq!(
            response(200, None, br#"{"status":{"code":1004}}"#).label(),
            "maybe"
        );
        let r = response(
            400,
            None,
            br#"{"status":{"code":1004,"desc":"INVALID_INPUT"},"error_details":"phoneNumber is invalid"}"#,
        );
        assert_eq!(
            r,
            Outcome::Refused {
                http_status: 400,
                api_code: Some(1004),
                error: "HTTP 400, code 1004 INVALID_INPUT: phoneNumber is invalid".into()
            }
        );
        assert_eq!(response(404, None, b"").label(), "refused");
        assert_eq!(response(401, None, b"").label(), "auth");
        assert_eq!(response(403, None, b"").label(), "auth");
        let t = response(429, Some(Duration::from_secs(2)), b"");
        assert_eq!(t.label(), "not_processed");
        assert!(
            matches!(t, Outcome::NotProcessed { retry_after: Some(d), .. } if d.as_secs() == 2)
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(response(s, None, b"<html>").label(), "maybe", "{s}");
        }
    }
}
