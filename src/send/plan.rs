//! Planning: each input row becomes a row key, a recipient and a request, or a reason not to
//! send it; then the ledger learns the new keys (`pending` or `skipped`) and the run's input
//! rows. Nothing here sends anything.
//!
//! Rules (issue 10): the key is `--key-column`, else the normalized phone number (templates,
//! triggers) or user id (broadcasts), so one person written two ways is one row; a later row
//! with a key already seen in the input is a `duplicate` (skipped, counted); rows without
//! consent, with an invalid phone number or an empty template value are `skipped` with the
//! reason. A key the ledger already settled is never planned again; if its content changed it
//! is reported (`changed`), not re-sent. A `pending` key takes the input's latest content, and
//! so does a `failed` one (it was certainly not processed; `send retry` sends the latest
//! content, and a failed row the input now skips becomes `skipped`). An `unknown` row keeps
//! the request that may have been delivered, but is held back from `send retry` while the
//! input skips it (consent withdrawn, for instance).

use std::collections::{BTreeMap, HashMap};

use phonenumber::country::Id;

use super::Status;
use super::config::Campaign;
use super::input::Values;
use super::message::{Message, TemplateBody};
use super::phone;
use super::render::{self, Columns, Request, RowView};

/// Why a row is skipped: its category (`consent`, `invalid_phone`, `empty_key`,
/// `missing_value`, `duplicate`) and the reason in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Category, for counts.
    pub category: &'static str,
    /// Reason, for the result log.
    pub reason: String,
}

/// What a row becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Row key.
    pub key: String,
    /// Normalized recipient (phone digits or user id), when valid.
    pub recipient: Option<String>,
    /// The request (templates, triggers); `None` for broadcasts (built per batch).
    pub request: Option<Request>,
    /// Set when the row is not to be sent.
    pub skip: Option<Skip>,
    /// xxh3-128 (hex) of what would be sent, or of the skip reason.
    pub hash: String,
}

impl Planned {
    /// `pending` or `skipped`.
    pub fn status(&self) -> Status {
        if self.skip.is_some() {
            Status::Skipped
        } else {
            Status::Pending
        }
    }
}

/// The columns a campaign reads, each once.
pub fn columns(c: &Campaign) -> Columns {
    let mut cols = Columns::default();
    cols.add(c.message.recipient_column());
    for extra in [&c.key_column, &c.consent_column].into_iter().flatten() {
        cols.add(extra);
    }
    match &c.message {
        Message::Template {
            body: TemplateBody::Params(p),
            ..
        } => p.iter().for_each(|x| cols.add(x)),
        Message::Template {
            body: TemplateBody::Components(doc),
            ..
        } => render::placeholders(doc).iter().for_each(|x| cols.add(x)),
        Message::Trigger { attributes, .. } => attributes.iter().for_each(|(_, col)| cols.add(col)),
        Message::Broadcast { .. } => {}
    }
    cols
}

fn hash_hex(parts: &[&str]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    format!("{:032x}", h.digest128())
}

/// True when a consent value means "no": false, no, 0 or empty (case-insensitive).
pub fn refuses_consent(v: Option<&str>) -> bool {
    match v.map(str::trim) {
        None | Some("") => true,
        Some(s) => ["false", "no", "0"]
            .iter()
            .any(|n| s.eq_ignore_ascii_case(n)),
    }
}

/// Plans rows of one campaign.
pub struct Planner<'a> {
    campaign: &'a Campaign,
    /// The columns read, in reader order.
    pub columns: Columns,
    country: Option<Id>,
}

impl<'a> Planner<'a> {
    /// A planner for `campaign`.
    pub fn new(campaign: &'a Campaign) -> Self {
        Planner {
            campaign,
            columns: columns(campaign),
            country: campaign
                .default_country
                .as_deref()
                .and_then(|c| phone::parse_country(c).ok()),
        }
    }

    /// The recipient: (normalized, or the reason it is not valid). WhatsApp ids and phone
    /// numbers go through libphonenumber; other channels' user ids are taken as given.
    fn recipient(&self, raw: Option<&str>) -> Result<String, Skip> {
        let phone_like = match &self.campaign.message {
            Message::Broadcast { channel, .. } => channel == "whatsapp",
            _ => true,
        };
        if !phone_like {
            return raw.map(|r| r.trim().to_owned()).ok_or_else(|| Skip {
                category: "empty_recipient",
                reason: format!(
                    "column `{}` is empty",
                    self.campaign.message.recipient_column()
                ),
            });
        }
        phone::normalize(raw.unwrap_or(""), self.country)
            .map(|p| p.digits().to_owned())
            .map_err(|e| Skip {
                category: "invalid_phone",
                reason: e.to_string(),
            })
    }

    /// Plans input row `input_row` (1-based).
    pub fn plan(&self, values: &Values, input_row: u64) -> Planned {
        self.plan_with(values, input_row, self.recipient_of(values))
    }

    /// The row's normalized recipient, or why it is not valid (the expensive part of
    /// planning: libphonenumber).
    pub fn recipient_of(&self, values: &Values) -> Result<String, Skip> {
        let row = RowView {
            values,
            columns: &self.columns,
        };
        self.recipient(row.get(self.campaign.message.recipient_column()))
    }

    /// Plans a row whose recipient [`recipient_of`](Self::recipient_of) already normalized.
    pub fn plan_with(
        &self,
        values: &Values,
        input_row: u64,
        recipient: Result<String, Skip>,
    ) -> Planned {
        let row = RowView {
            values,
            columns: &self.columns,
        };
        let c = self.campaign;
        let raw = row.get(c.message.recipient_column());
        let key = match (&c.key_column, &recipient) {
            (Some(col), _) => row.get(col).map(|k| k.trim().to_owned()),
            (None, Ok(r)) => Some(r.clone()),
            (None, Err(_)) => raw.map(|r| format!("invalid:{}", r.trim())),
        };
        let Some(key) = key else {
            let skip = match &c.key_column {
                Some(col) => Skip {
                    category: "empty_key",
                    reason: format!("key column `{col}` is empty"),
                },
                None => recipient.clone().err().unwrap_or(Skip {
                    category: "empty_key",
                    reason: "no key".into(),
                }),
            };
            return skipped(format!("#row{input_row}"), None, skip);
        };
        if let Some(col) = &c.consent_column {
            let v = row.get(col);
            if refuses_consent(v) {
                let shown = v.unwrap_or("");
                let skip = Skip {
                    category: "consent",
                    reason: format!("no consent: column `{col}` is `{shown}`"),
                };
                return skipped(key, recipient.ok(), skip);
            }
        }
        let recipient = match recipient {
            Ok(r) => r,
            Err(skip) => return skipped(key, None, skip),
        };
        match self.request(&row, &recipient) {
            Ok((request, hash)) => Planned {
                key,
                recipient: Some(recipient),
                request,
                skip: None,
                hash,
            },
            Err(skip) => skipped(key, Some(recipient), skip),
        }
    }

    /// The request and the content hash for a valid recipient.
    fn request(
        &self,
        row: &RowView<'_>,
        recipient: &str,
    ) -> Result<(Option<Request>, String), Skip> {
        let c = self.campaign;
        let missing = |col: &str, what: &str| Skip {
            category: "missing_value",
            reason: format!("column `{col}` is empty ({what})"),
        };
        let req = match &c.message {
            Message::Template {
                name,
                namespace,
                language,
                body,
                ..
            } => {
                let components = match body {
                    TemplateBody::Params(cols) => {
                        let mut vals = Vec::with_capacity(cols.len());
                        for (i, col) in cols.iter().enumerate() {
                            vals.push(row.get(col).ok_or_else(|| {
                                missing(col, &format!("template parameter {}", i + 1))
                            })?);
                        }
                        render::body_parameters(&vals)
                    }
                    TemplateBody::Components(doc) => render::fill_components(doc, row)
                        .map_err(|col| missing(&col, "a {{placeholder}} of the components"))?,
                };
                let e164 = format!("+{recipient}");
                render::template(&c.source, &e164, name, namespace, language, &components)
            }
            Message::Trigger {
                flow_key,
                api,
                channel,
                attributes,
                ..
            } => {
                let pairs: Vec<(&str, &str)> = attributes
                    .iter()
                    .map(|(name, col)| (name.as_str(), row.get(col).unwrap_or("")))
                    .collect();
                render::trigger(&c.source, *api, flow_key, channel, recipient, &pairs)
            }
            Message::Broadcast {
                channel,
                title,
                content,
                publish_at_ms,
                ..
            } => {
                let spec = serde_json::to_string(content).expect("serializable");
                let at = publish_at_ms.map(|t| t.to_string()).unwrap_or_default();
                return Ok((
                    None,
                    hash_hex(&["broadcast", recipient, channel, title, &spec, &at]),
                ));
            }
        };
        let hash = hash_hex(&[&req.method, &req.path, req.body.as_deref().unwrap_or("")]);
        Ok((Some(req), hash))
    }
}

fn skipped(key: String, recipient: Option<String>, skip: Skip) -> Planned {
    let hash = hash_hex(&["skip", skip.category, &skip.reason]);
    Planned {
        key,
        recipient,
        request: None,
        skip: Some(skip),
        hash,
    }
}

/// Rows per chunk handed from the normalizing thread to the planning one.
const CHUNK: usize = 1024;

/// A chunk of rows with their normalized recipients, or the input error that ended it.
type Chunk = Result<Vec<(Values, Result<String, Skip>)>, super::input::InputError>;

/// Plans every row of `reader` and calls `f(input_row, values, planned)` in input order.
///
/// Reading and phone normalization run on a second thread, the rest here: libphonenumber is
/// most of the planning time and cannot run in parallel with itself (its regex cache is one
/// lock), so two stages are what two cores buy.
///
/// # Errors
/// The input's error, or the first error of `f`.
pub fn for_each_planned<E: From<super::input::InputError> + Send>(
    planner: &Planner<'_>,
    reader: super::input::InputReader,
    mut f: impl FnMut(u64, &Values, Planned) -> Result<(), E>,
) -> Result<(), E> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(8);
    std::thread::scope(|scope| {
        let normalize = std::thread::Builder::new().name("send-normalize".into());
        let spawned = normalize.spawn_scoped(scope, move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            for values in reader {
                match values {
                    Ok(v) => {
                        let r = planner.recipient_of(&v);
                        chunk.push((v, r));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
                if chunk.len() == CHUNK
                    && tx
                        .send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))))
                        .is_err()
                {
                    return;
                }
            }
            let _ = tx.send(Ok(chunk));
        });
        if let Err(e) = spawned {
            return Err(E::from(super::input::InputError::Read {
                path: std::path::PathBuf::new(),
                at: "start".into(),
                message: format!("cannot start a thread: {e}"),
            }));
        }
        let mut n = 0u64;
        for chunk in rx {
            for (values, recipient) in chunk? {
                n += 1;
                let p = planner.plan_with(&values, n, recipient);
                f(n, &values, p)?;
            }
        }
        Ok(())
    })
}

/// What planning found, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanStats {
    /// Input rows read.
    pub input_rows: u64,
    /// Rows that will be sent by this run (new keys and still-pending ones).
    pub to_send: u64,
    /// New keys recorded `skipped`, by category.
    pub skipped: BTreeMap<String, u64>,
    /// Rows whose key appeared earlier in the input.
    pub duplicates: u64,
    /// Rows whose key the ledger already settled (sent, failed, skipped, unknown): not sent.
    pub already_settled: u64,
    /// Of those, rows whose content differs from what was settled (reported, not re-sent).
    pub changed: u64,
}

/// Tracks keys seen in the input: key hash (xxh3-128) -> first input row. About 32 bytes per
/// distinct key: the one structure that grows with the input.
#[derive(Default)]
pub struct SeenKeys(
    HashMap<u128, u64, std::hash::BuildHasherDefault<crate::normalize::PassThrough>>,
);

impl SeenKeys {
    /// The earlier input row with this key, or records `input_row` as its first.
    pub fn first_or_insert(&mut self, key: &str, input_row: u64) -> Option<u64> {
        let h = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
        match self.0.entry(h) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(input_row);
                None
            }
        }
    }
}

/// Planning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The input could not be read (exit 2).
    #[error(transparent)]
    Input(#[from] super::input::InputError),
    /// The ledger could not be written (exit 6).
    #[error("state store: {0}")]
    State(#[from] rusqlite::Error),
}

/// Rows per ledger transaction while planning.
const PLAN_CHUNK: u64 = 10_000;

/// Reads the whole input and records it: new keys (`pending` / `skipped`), the latest content
/// of still-pending keys, and each input row's key for the result log. Settled keys are left
/// alone (their content change is noted).
///
/// # Errors
/// [`PlanError`]; a partial plan is harmless (the next run plans again).
pub fn record(
    planner: &Planner<'_>,
    reader: super::input::InputReader,
    conn: &mut rusqlite::Connection,
    campaign: &str,
) -> Result<PlanStats, PlanError> {
    use super::ledger;
    let mut stats = PlanStats::default();
    let mut seen = SeenKeys::default();
    let mut seq = ledger::next_seq(conn, campaign)?;
    // Plain BEGIN/COMMIT rather than a `Transaction`: the chunks are committed from inside
    // the closure.
    let tx: &rusqlite::Connection = conn;
    tx.execute_batch("BEGIN")?;
    ledger::clear_inputs(tx, campaign)?;
    let result = for_each_planned(planner, reader, |n, _, p| -> Result<(), PlanError> {
        stats.input_rows = n;
        if let Some(first) = seen.first_or_insert(&p.key, n) {
            stats.duplicates += 1;
            ledger::insert_input(tx, campaign, n, &p.key, Some(first), false)?;
            return Ok(());
        }
        let known = ledger::lookup(tx, campaign, &p.key)?;
        let changed = match &known {
            Some((Status::Pending, _)) | None => {
                let row = ledger::PlannedRow {
                    key: &p.key,
                    recipient: p.recipient.as_deref(),
                    status: p.status(),
                    reason: p.skip.as_ref().map(|s| s.category),
                    error: p.skip.as_ref().map(|s| s.reason.as_str()),
                    hash: &p.hash,
                    request: p.request.as_ref(),
                };
                ledger::upsert_planned(tx, campaign, seq, &row)?;
                seq += 1;
                match &p.skip {
                    Some(s) => *stats.skipped.entry(s.category.to_owned()).or_default() += 1,
                    None => stats.to_send += 1,
                }
                false
            }
            Some((status, hash)) => {
                stats.already_settled += 1;
                let changed = *hash != p.hash;
                stats.changed += u64::from(changed);
                let skip = p.skip.as_ref().map(|s| (s.category, s.reason.as_str()));
                ledger::refresh_settled(
                    tx,
                    campaign,
                    *status,
                    &p.key,
                    &p.hash,
                    p.request.as_ref(),
                    skip,
                )?;
                changed
            }
        };
        ledger::insert_input(tx, campaign, n, &p.key, None, changed)?;
        if n.is_multiple_of(PLAN_CHUNK) {
            tx.execute_batch("COMMIT; BEGIN")?;
        }
        Ok(())
    });
    if let Err(e) = result {
        let _ = tx.execute_batch("ROLLBACK");
        return Err(e);
    }
    tx.execute_batch("COMMIT")?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::config::{SendSection, validate};

    fn campaign(extra: SendSection) -> Campaign {
        let s = SendSection {
            kind: Some("template".into()),
            input: Some("x.csv".into()),
            campaign: Some("c".into()),
            out: Some("o".into()),
            phone_column: Some("phone".into()),
            template_name: Some("t".into()),
            template_namespace: Some("n".into()),
            ..extra
        };
        let src = crate::config::SourceSection {
            provider: Some(crate::engati::provider::Provider::Engati),
            customer_id: Some("1".into()),
            bot_key: Some("b".into()),
            ..Default::default()
        };
        validate(&s, &src, false, 0).unwrap()
    }

    #[test]
    fn one_person_written_two_ways_is_one_key() {
        let c = campaign(SendSection::default());
        let p = Planner::new(&c);
        let a = p.plan(&vec![Some("+91 95654 28256".into())], 1);
        let b = p.plan(&vec![Some("919565428256".into())], 2);
        assert_eq!(a.key, "919565428256");
        assert_eq!(a, b);
        assert_eq!(a.status(), Status::Pending);
        let mut seen = SeenKeys::default();
        assert_eq!(seen.first_or_insert(&a.key, 1), None);
        assert_eq!(seen.first_or_insert(&b.key, 2), Some(1));
    }

    #[test]
    fn consent_invalid_phones_and_empty_values_are_skipped_with_reasons() {
        let c = campaign(SendSection {
            consent_column: Some("ok".into()),
            params: Some(vec!["name".into()]),
            ..SendSection::default()
        });
        let p = Planner::new(&c);
        let row = |phone: &str, ok: Option<&str>, name: Option<&str>| {
            let mut v: Values = vec![Some(phone.to_owned()), None, None];
            v[p.columns.names.iter().position(|n| n == "ok").unwrap()] = ok.map(Into::into);
            v[p.columns.names.iter().position(|n| n == "name").unwrap()] = name.map(Into::into);
            v
        };
        let no = p.plan(&row("919565428256", Some("No"), Some("A")), 1);
        assert_eq!(no.skip.unwrap().category, "consent");
        let bad = p.plan(&row("12345", Some("yes"), Some("A")), 2);
        assert_eq!(bad.key, "invalid:12345");
        assert!(bad.skip.as_ref().unwrap().reason.contains("12345"));
        let empty = p.plan(&row("919565428256", Some("1"), None), 3);
        assert_eq!(empty.skip.unwrap().category, "missing_value");
        let ok = p.plan(&row("919565428256", Some("yes"), Some("Asha")), 4);
        assert!(
            ok.request
                .unwrap()
                .body
                .unwrap()
                .contains("\"+919565428256\"")
        );
        assert!(refuses_consent(Some(" FALSE ")) && !refuses_consent(Some("true")));
    }
}
