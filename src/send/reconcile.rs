//! Reconciliation: a sent template or broadcast shows up in the recipient's conversation
//! history, so an `unknown` row can be settled by reading the Conversations API (with the
//! export client and its read-side retries: reading is safe to repeat) from shortly before
//! the row's in-flight time on. A row found there becomes `sent` (`settled_by =
//! reconciliation`); a row not found stays `unknown` (the request may have been refused,
//! or delivery may lag). Triggers are not reconciled: a flow's messages cannot be told apart.
//!
//! **Assumption** (docs/engati-api.md, "Reconciliation (assumption)"): the history shape of a
//! sent message is not documented; [`shows_the_send`] is the one place that encodes it.

use std::borrow::Cow;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ledger::{self, UnknownRow};
use crate::engati::client::Client;
use crate::engati::error::ApiError;
use crate::state::StateStore;

/// How far before the in-flight time to look (server clocks differ from ours), ms.
pub const CLOCK_SKEW_MS: i64 = 5 * 60_000;
/// Pages read per row at most (500 messages each).
const MAX_PAGES: u32 = 20;

/// What a sent request should look like in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// A WhatsApp template (sent directly or by a template broadcast): its name.
    Template {
        /// Template name.
        name: String,
    },
    /// A direct broadcast: its text.
    Text {
        /// Message text.
        text: String,
    },
}

impl Expectation {
    /// From the request body that was sent (template or broadcast); `None` for other bodies.
    pub fn from_body(body: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        if let Some(name) = v.pointer("/payload/name").and_then(|n| n.as_str()) {
            return Some(Expectation::Template {
                name: name.to_owned(),
            });
        }
        let item = v.pointer("/payload/content/0")?;
        match v.pointer("/payload/type").and_then(|t| t.as_str())? {
            "direct" => Some(Expectation::Text {
                text: item.pointer("/data/message")?.as_str()?.to_owned(),
            }),
            _ => Some(Expectation::Template {
                name: item.pointer("/template/payload/name")?.as_str()?.to_owned(),
            }),
        }
    }
}

/// One message of the history, as much as reconciliation reads.
#[derive(Debug, Deserialize)]
pub struct HistoryMessage<'a> {
    /// `bot`, `user`, `agent`.
    #[serde(borrow)]
    pub sender: Option<Cow<'a, str>>,
    /// `TEXT`, `TEMPLATE`, ...
    #[serde(borrow)]
    pub message_type: Option<Cow<'a, str>>,
    /// The content.
    #[serde(borrow)]
    pub response: Option<Cow<'a, str>>,
    /// The timestamp (any documented form).
    #[serde(borrow)]
    pub timestamp: Option<&'a RawValue>,
}

/// ASSUMPTION (docs/engati-api.md, "Reconciliation (assumption)"): a message we sent appears
/// in the recipient's history as an outbound message (`sender` = `bot`) at or after
/// `not_before_ms`, and
/// - for a template: `message_type` contains `TEMPLATE` (any case) and `response` contains
///   the template's name;
/// - for a direct broadcast: `response` equals the text (surrounding whitespace ignored).
///
/// Returns the message's time when it matches.
pub fn shows_the_send(
    m: &HistoryMessage<'_>,
    exp: &Expectation,
    not_before_ms: i64,
) -> Option<i64> {
    if !m
        .sender
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("bot"))
    {
        return None;
    }
    let at = crate::engati::wire::parse_timestamp(m.timestamp).ok()?;
    if at < not_before_ms {
        return None;
    }
    let response = m.response.as_deref().unwrap_or("");
    let hit = match exp {
        Expectation::Template { name } => {
            m.message_type
                .as_deref()
                .is_some_and(|t| t.to_ascii_uppercase().contains("TEMPLATE"))
                && response.contains(name.as_str())
        }
        Expectation::Text { text } => response.trim() == text.trim(),
    };
    hit.then_some(at)
}

/// What a reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileStats {
    /// `unknown` rows looked up.
    pub checked: u64,
    /// Found in the history: now `sent`.
    pub settled_sent: u64,
    /// Not found: still `unknown`.
    pub still_unknown: u64,
    /// Look-ups that failed (API errors after retries): still `unknown`.
    pub errors: u64,
}

impl ReconcileStats {
    /// Two reconciliations of one run added up (`send retry` reconciles before and after).
    pub fn plus(self, o: ReconcileStats) -> ReconcileStats {
        ReconcileStats {
            checked: self.checked + o.checked,
            settled_sent: self.settled_sent + o.settled_sent,
            still_unknown: o.still_unknown,
            errors: self.errors + o.errors,
        }
    }
}

/// Looks for `row`'s send in the history: `Ok(Some(time))` when found.
async fn find(
    client: &Client,
    row: &UnknownRow,
    exp: &Expectation,
    now_ms: i64,
) -> Result<Option<i64>, ()> {
    let not_before = row.in_flight_ms - CLOCK_SKEW_MS;
    let end = now_ms + 60_000;
    for page in 1..=MAX_PAGES {
        let what = || format!("reconciliation, user {}", row.recipient);
        let p = match client
            .conversations_page(&row.recipient, not_before, end, page, 500, what)
            .await
        {
            Ok(p) => p,
            // An unknown user: nothing reached them (a template creates the user).
            Err(e)
                if matches!(
                    e.source,
                    ApiError::Rejected {
                        code: Some(1002),
                        ..
                    }
                ) =>
            {
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!("reconciliation of row {}: {e}", row.key);
                return Err(());
            }
        };
        for span in &p.spans {
            let Ok(m) = serde_json::from_slice::<HistoryMessage<'_>>(&p.body[span.clone()]) else {
                continue;
            };
            if let Some(at) = shows_the_send(&m, exp, not_before) {
                return Ok(Some(at));
            }
        }
        if p.spans.len() < 500 {
            break;
        }
    }
    Ok(None)
}

/// Settles the campaign's `unknown` rows that the history shows as delivered.
///
/// # Errors
/// SQLite errors recording the settlements (exit 6).
pub async fn reconcile(
    store: &mut StateStore,
    campaign: &str,
    client: &Client,
    concurrency: usize,
    now_ms: i64,
) -> Result<ReconcileStats, rusqlite::Error> {
    let rows = ledger::unknown_rows(store.connection(), campaign)?;
    let mut stats = ReconcileStats::default();
    let checks = futures_util::stream::iter(rows.into_iter().filter_map(|r| {
        let exp = Expectation::from_body(r.body.as_deref()?)?;
        Some((r, exp))
    }))
    .map(|(r, exp)| async move {
        let found = find(client, &r, &exp, now_ms).await;
        (r, found)
    })
    .buffer_unordered(concurrency.max(1));
    let results: Vec<(UnknownRow, Result<Option<i64>, ()>)> = checks.collect().await;
    let tx = store.connection().transaction()?;
    for (row, found) in results {
        stats.checked += 1;
        match found {
            Ok(Some(at)) => {
                ledger::settle_sent(&tx, campaign, &row.key, at, now_ms)?;
                stats.settled_sent += 1;
            }
            Ok(None) => stats.still_unknown += 1,
            Err(()) => {
                stats.errors += 1;
                stats.still_unknown += 1;
            }
        }
    }
    tx.commit()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(
        sender: &'a str,
        kind: &'a str,
        response: &'a str,
        ts: &'a RawValue,
    ) -> HistoryMessage<'a> {
        HistoryMessage {
            sender: Some(sender.into()),
            message_type: Some(kind.into()),
            response: Some(response.into()),
            timestamp: Some(ts),
        }
    }

    #[test]
    fn a_sent_template_is_recognised_by_name_type_sender_and_time() {
        let ts = RawValue::from_string("\"2026-08-12 14:03:27.512+0530\"".into()).unwrap();
        let at = crate::engati::wire::parse_timestamp(Some(&ts)).unwrap();
        let exp =
            Expectation::from_body(r#"{"phoneNumber":"+91","payload":{"name":"order_update"}}"#)
                .unwrap();
        assert_eq!(
            exp,
            Expectation::Template {
                name: "order_update".into()
            }
        );
        assert_eq!(
            shows_the_send(&msg("bot", "TEMPLATE", "order_update: Asha", &ts), &exp, at),
            Some(at)
        );
        assert_eq!(
            shows_the_send(&msg("user", "TEMPLATE", "order_update", &ts), &exp, at),
            None
        );
        assert_eq!(
            shows_the_send(&msg("bot", "TEXT", "order_update", &ts), &exp, at),
            None
        );
        assert_eq!(
            shows_the_send(&msg("bot", "TEMPLATE", "order_update", &ts), &exp, at + 1),
            None
        );
        let direct = Expectation::from_body(
            r#"{"payload":{"type":"direct","content":[{"type":"text","data":{"message":"Hi there"}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            shows_the_send(&msg("bot", "TEXT", " Hi there ", &ts), &direct, at),
            Some(at)
        );
        let tpl = Expectation::from_body(
            r#"{"payload":{"type":"whatsapp template","content":[{"type":"template","template":{"payload":{"name":"diwali_offer"}}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            tpl,
            Expectation::Template {
                name: "diwali_offer".into()
            }
        );
        assert_eq!(
            Expectation::from_body(r#"{"user.channel":"whatsapp"}"#),
            None
        );
    }
}
