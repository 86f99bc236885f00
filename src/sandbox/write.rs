//! The sandbox's write side (docs/engati-api.md, "Write-side APIs"): the WhatsApp template
//! message, the Broadcast and the API trigger (v1 query parameters, v2 dotted JSON body,
//! `whatsapp` or `rcs`), validated the way the real API would (a missing or invalid phone
//! number: 400 with code 1004 and a message; an unknown bot: 1002; a wrong key: 401; an
//! unknown template: 400/1004; an unknown flow key: 400/1002).
//!
//! Every accepted send is recorded ([`AcceptedSend`]), and sent templates and broadcasts are
//! added to the recipient's conversation history (a dataset user's, or a new user's), so
//! `export` and reconciliation see them. The history shape is the one `send::reconcile`
//! assumes: `sender` `bot`, `message_type` `TEMPLATE` with `response` = `<name>` (and `: `
//! and the body parameters), or `TEXT` with the broadcast's text.
//!
//! Faults ([`WriteConfig`], seeded, or scripted with [`Outbox::script`]): refused before
//! processing (500, 429 + `Retry-After`: nothing recorded) and **processed then failed**
//! (recorded, then a 500 or a stall longer than the client's timeout).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::{Shared, StoredMessage, engati_error, json_response};

/// Write-side settings: what exists on the bot, and fault rates (0.0..=1.0 each).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteConfig {
    /// Approved WhatsApp template names (any namespace).
    pub templates: Vec<String>,
    /// Flow keys of the bot.
    pub flows: Vec<String>,
    /// Share answered 500 before processing (nothing is sent).
    pub refuse_500_rate: f64,
    /// Share answered 429 + `Retry-After` before processing.
    pub refuse_429_rate: f64,
    /// `Retry-After` on those 429s, seconds.
    pub retry_after_secs: u64,
    /// Share processed (sent, recorded) and then answered 500.
    pub fail_after_rate: f64,
    /// Share processed and then stalled for `stall_ms` (longer than a client timeout).
    pub stall_after_rate: f64,
    /// Stall length, ms.
    pub stall_ms: u64,
    /// Seed of the fault dice.
    pub seed: u64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            templates: [
                "order_update",
                "diwali_offer",
                "appointment_reminder",
                "feedback_request",
                "renuka_sugars_paytest",
            ]
            .map(String::from)
            .to_vec(),
            flows: [
                "welcome_88601",
                "default_fallback_msg_74963",
                "order_status_1001",
            ]
            .map(String::from)
            .to_vec(),
            refuse_500_rate: 0.0,
            refuse_429_rate: 0.0,
            retry_after_secs: 1,
            fail_after_rate: 0.0,
            stall_after_rate: 0.0,
            stall_ms: 30_000,
            seed: 11,
        }
    }
}

/// A write-side fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFault {
    /// Answer this status before processing (nothing sent).
    Refuse(u16),
    /// 429 with `Retry-After` (seconds) before processing.
    Throttle(u64),
    /// Process (send, record), then answer this status.
    FailAfter(u16),
    /// Process, then wait this long (ms) before answering.
    StallAfter(u64),
}

/// Which endpoint took a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// WhatsApp template.
    Template,
    /// API trigger v1.
    TriggerV1,
    /// API trigger v2.
    TriggerV2,
    /// Broadcast.
    Broadcast,
}

/// One send the sandbox accepted (processed), whatever it answered afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedSend {
    /// Order of acceptance, from 1.
    pub seq: u64,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Recipients: phone digits (template, trigger) or channel-user ids (broadcast).
    pub recipients: Vec<String>,
    /// The request body (v1: the query as JSON).
    pub body: Value,
    /// Template name, trigger flow key, or broadcast title.
    pub name: String,
    /// The `message_id` / broadcast id answered.
    pub message_id: String,
    /// When, ms since epoch UTC (sandbox clock).
    pub at_ms: i64,
    /// The fault applied after processing, if any.
    pub fault_after: Option<WriteFault>,
}

/// Accepted sends, history of new users, and the fault dice.
pub struct Outbox {
    config: WriteConfig,
    sends: Mutex<Vec<AcceptedSend>>,
    history: RwLock<HashMap<String, Vec<StoredMessage>>>,
    rng: Mutex<ChaCha8Rng>,
    script: Mutex<VecDeque<WriteFault>>,
    seq: AtomicU64,
}

impl Outbox {
    /// An empty outbox.
    pub fn new(config: WriteConfig) -> Self {
        Outbox {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(config.seed)),
            config,
            sends: Mutex::new(Vec::new()),
            history: RwLock::new(HashMap::new()),
            script: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(0),
        }
    }

    /// Every accepted send, in order.
    pub fn sends(&self) -> Vec<AcceptedSend> {
        self.sends.lock().expect("outbox lock").clone()
    }

    /// How many sends were accepted (cheaper than [`sends`](Self::sends)).
    pub fn accepted(&self) -> usize {
        self.sends.lock().expect("outbox lock").len()
    }

    /// Queues faults for the next write requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = WriteFault>) {
        self.script.lock().expect("outbox lock").extend(faults);
    }

    /// True when `uid` is a user created by a send (not in the dataset).
    pub fn knows(&self, uid: &str) -> bool {
        self.history.read().expect("outbox lock").contains_key(uid)
    }

    /// Like `Dataset::with_range`, for users created by sends.
    pub fn with_range<R>(
        &self,
        uid: &str,
        start: Option<i64>,
        end: i64,
        start_exclusive: bool,
        end_inclusive: bool,
        f: impl FnOnce(&[StoredMessage]) -> R,
    ) -> R {
        let h = self.history.read().expect("outbox lock");
        let msgs = h.get(uid).map(Vec::as_slice).unwrap_or(&[]);
        let lo = match start {
            None => 0,
            Some(s) if start_exclusive => msgs.partition_point(|m| m.ts_ms <= s),
            Some(s) => msgs.partition_point(|m| m.ts_ms < s),
        };
        let hi = if end_inclusive {
            msgs.partition_point(|m| m.ts_ms <= end)
        } else {
            msgs.partition_point(|m| m.ts_ms < end)
        };
        f(&msgs[lo..hi.max(lo)])
    }

    fn next_fault(&self) -> Option<WriteFault> {
        if let Some(f) = self.script.lock().expect("outbox lock").pop_front() {
            return Some(f);
        }
        let c = &self.config;
        if c.refuse_500_rate + c.refuse_429_rate + c.fail_after_rate + c.stall_after_rate <= 0.0 {
            return None;
        }
        let roll: f64 = self.rng.lock().expect("outbox lock").random();
        let mut edge = c.refuse_500_rate;
        for f in [
            WriteFault::Refuse(500),
            WriteFault::Throttle(c.retry_after_secs),
            WriteFault::FailAfter(500),
            WriteFault::StallAfter(c.stall_ms),
        ] {
            if roll < edge {
                return Some(f);
            }
            edge += match f {
                WriteFault::Refuse(_) => c.refuse_429_rate,
                WriteFault::Throttle(_) => c.fail_after_rate,
                WriteFault::FailAfter(_) => c.stall_after_rate,
                WriteFault::StallAfter(_) => 0.0,
            };
        }
        None
    }
}

/// The write-side routes.
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/whatsapp-api/v1.0/customer/{cid}/bot/{bot}/template",
            post(template),
        )
        .route(
            "/bot-api/v1.0/customer/{cid}/bot/{bot}/flow/{flow}",
            post(trigger_v1),
        )
        .route(
            "/bot-api/v2.0/customer/{cid}/bot/{bot}/flow/{flow}",
            post(trigger_v2),
        )
        .route(
            "/bot-api/v1.0/customer/{cid}/bot/{bot}/broadcast",
            post(broadcast),
        )
}

type St = State<Arc<Shared>>;

/// The success body: template `{"status": {"code": 1000}, "responseObject": {"message_id":
/// "wamid..."}}` (docs/engati-api.md); trigger `{"responseObject": true}` (seeds/001);
/// broadcast `{"status": {"code": 1000}, "responseObject": {"broadcastId": N}}` [DECIDED].
enum Answer {
    MessageId,
    True,
    BroadcastId,
}

/// A request as a handler sees it.
struct Call {
    path: String,
    query: HashMap<String, String>,
}

/// A 400 the way Engati answers it: code, name, details.
struct Refusal {
    code: u16,
    desc: &'static str,
    details: String,
}

impl Refusal {
    fn response(&self) -> Response {
        engati_error(self.code, self.desc, &self.details)
    }
}

fn invalid(details: &str) -> Refusal {
    Refusal {
        code: 1004,
        desc: "INVALID_INPUT",
        details: details.to_owned(),
    }
}

/// `+` and 8 to 15 digits, the first not 0 (E.164).
fn e164(v: &str) -> bool {
    v.strip_prefix('+').is_some_and(digits)
}

/// 8 to 15 digits, the first not 0 (a number with its country code, no `+`).
fn digits(v: &str) -> bool {
    (8..=15).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0')
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

impl Shared {
    /// Auth and ids, then the body check, then the fault dice; `Ok` means: process it.
    async fn admit_write(
        &self,
        headers: &HeaderMap,
        call: &Call,
        cid: &str,
        bot: &str,
        check: impl FnOnce() -> Result<(), Refusal>,
    ) -> Result<Option<WriteFault>, Response> {
        if let Err(resp) = self.gate(headers, &call.path, cid, bot).await {
            let status = resp.status().as_u16();
            self.record(&call.path, &call.query, status, None, status != 401);
            return Err(resp);
        }
        if let Err(r) = check() {
            self.record(&call.path, &call.query, 400, None, true);
            return Err(r.response());
        }
        match self.outbox.next_fault() {
            Some(WriteFault::Refuse(code)) => {
                self.record(&call.path, &call.query, code, None, true);
                Err(html_error(code))
            }
            Some(WriteFault::Throttle(secs)) => {
                self.record(&call.path, &call.query, 429, None, true);
                Err(Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header(header::RETRY_AFTER, secs.to_string())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"title":"Too Many Requests","status":429}"#))
                    .expect("static response parts are valid"))
            }
            other => Ok(other),
        }
    }

    /// Records an accepted send, adds it to the recipients' histories, answers (applying a
    /// processed-then-failed fault).
    async fn accept(
        &self,
        call: &Call,
        mut send: AcceptedSend,
        history: Option<(&'static str, String)>,
        answer: Answer,
    ) -> Response {
        send.seq = self.outbox.seq.fetch_add(1, Ordering::SeqCst) + 1;
        send.message_id = format!(
            "wamid.{:032x}",
            xxhash_rust::xxh3::xxh3_128(format!("{}:{:?}", send.seq, send.recipients).as_bytes())
        );
        let body = match answer {
            Answer::MessageId => {
                serde_json::json!({"status": {"code": 1000, "desc": "SUCCESS"}, "responseObject": {"message_id": send.message_id}})
            }
            Answer::BroadcastId => {
                serde_json::json!({"status": {"code": 1000, "desc": "SUCCESS"}, "responseObject": {"broadcastId": send.seq}})
            }
            Answer::True => serde_json::json!({"responseObject": true}),
        };
        if let Some((kind, response)) = history {
            for r in &send.recipients {
                self.add_history(r, kind, &response, send.at_ms, send.seq);
            }
        }
        let fault = send.fault_after;
        self.outbox.sends.lock().expect("outbox lock").push(send);
        match fault {
            Some(WriteFault::FailAfter(code)) => {
                self.record(&call.path, &call.query, code, None, true);
                html_error(code)
            }
            Some(WriteFault::StallAfter(ms)) => {
                self.record(&call.path, &call.query, 200, None, true);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json_response(StatusCode::OK, body.to_string().into_bytes())
            }
            _ => {
                self.record(&call.path, &call.query, 200, None, true);
                json_response(StatusCode::OK, body.to_string().into_bytes())
            }
        }
    }

    fn add_history(&self, uid: &str, kind: &'static str, response: &str, at_ms: i64, seq: u64) {
        let msg = StoredMessage {
            ts_ms: at_ms,
            ts_form: 0,
            sender: "bot",
            message_type: kind,
            response: Cow::Owned(response.to_owned()),
            session_uuid: u128::from(seq) << 64 | 0x5e_4d,
            file: None,
            extra_field: false,
        };
        match self.data.user_index(uid) {
            Some(i) => self.data.insert(i, msg),
            None => {
                let mut h = self.outbox.history.write().expect("outbox lock");
                let msgs = h.entry(uid.to_owned()).or_default();
                let at = msgs.partition_point(|m| m.ts_ms <= at_ms);
                msgs.insert(at, msg);
            }
        }
    }

    /// Sets user attributes of a dataset user from a trigger (keys other than `user.*`).
    fn set_attributes(&self, uid: &str, attrs: &[(String, String)]) {
        if let Some(i) = self.data.user_index(uid) {
            for (k, v) in attrs.iter().filter(|(k, _)| !k.starts_with("user.")) {
                self.data.set_attribute(i, k, v);
            }
        }
    }
}

fn html_error(code: u16) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "text/html")
        .body(Body::from(format!(
            "<html><body><h1>{code} Server Error</h1></body></html>"
        )))
        .expect("static response parts are valid")
}

fn new_send(
    endpoint: Endpoint,
    recipients: Vec<String>,
    body: Value,
    name: &str,
    at_ms: i64,
    fault: Option<WriteFault>,
) -> AcceptedSend {
    AcceptedSend {
        seq: 0,
        endpoint,
        recipients,
        body,
        name: name.to_owned(),
        message_id: String::new(),
        at_ms,
        fault_after: fault,
    }
}

fn parse_json(body: &Bytes) -> Result<Value, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(invalid("the request body must be a JSON object")),
    }
}

/// Template check: returns (E.164 phone, name, the history text).
fn check_template(s: &Shared, v: &Value) -> Result<(String, String, String), Refusal> {
    let phone = v.get("phoneNumber").and_then(Value::as_str).unwrap_or("");
    if !e164(phone) {
        return Err(invalid(&format!(
            "phoneNumber `{phone}` is missing or not a valid number with country code (E.164, e.g. +919876543210)"
        )));
    }
    let name = text(v, "/payload/name").ok_or_else(|| invalid("payload.name is required"))?;
    let ns =
        text(v, "/payload/namespace").ok_or_else(|| invalid("payload.namespace is required"))?;
    text(v, "/payload/language/code")
        .ok_or_else(|| invalid("payload.language.code is required"))?;
    if text(v, "/payload/language/policy") != Some("deterministic") {
        return Err(invalid("payload.language.policy must be \"deterministic\""));
    }
    let components = v
        .pointer("/payload/components")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("payload.components must be an array"))?;
    if !s.config.write.templates.iter().any(|t| t == name) {
        return Err(invalid(&format!(
            "template `{name}` does not exist in namespace `{ns}` (not approved for this WhatsApp number)"
        )));
    }
    let params: Vec<&str> = components
        .iter()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("body"))
        .flat_map(|c| {
            c.get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    let shown = if params.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {}", params.join(", "))
    };
    Ok((phone.to_owned(), name.to_owned(), shown))
}

async fn template(
    State(s): St,
    Path((cid, bot)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        path: uri.path().to_owned(),
        query: HashMap::new(),
    };
    let mut checked = None;
    let fault = match s
        .admit_write(&headers, &call, &cid, &bot, || {
            let v = parse_json(&body)?;
            checked = Some((check_template(&s, &v)?, v));
            Ok(())
        })
        .await
    {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let ((phone, name, shown), v) = checked.expect("checked");
    let send = new_send(
        Endpoint::Template,
        vec![phone[1..].to_owned()],
        v,
        &name,
        s.clock_ms(),
        fault,
    );
    s.accept(&call, send, Some(("TEMPLATE", shown)), Answer::MessageId)
        .await
}

fn check_flow(s: &Shared, flow: &str) -> Result<(), Refusal> {
    if s.config.write.flows.iter().any(|f| f == flow) {
        Ok(())
    } else {
        Err(Refusal {
            code: 1002,
            desc: "INVALID_BOT_OR_CUSTOMER_ID",
            details: format!("flow key `{flow}` not found on this bot"),
        })
    }
}

async fn trigger_v1(
    State(s): St,
    Path((cid, bot, flow)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call {
        path: uri.path().to_owned(),
        query: q.clone(),
    };
    let phone = q.get("user.phone_no").cloned().unwrap_or_default();
    let fault = match s.admit_write(&headers, &call, &cid, &bot, || {
        if !digits(&phone) {
            return Err(invalid(&format!("user.phone_no `{phone}` is missing or not a number with country code (digits, e.g. 919876543210)")));
        }
        check_flow(&s, &flow)
    })
    .await
    {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let attrs: Vec<(String, String)> = q.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    s.set_attributes(&phone, &attrs);
    let body = serde_json::to_value(&q).unwrap_or(Value::Null);
    let send = new_send(
        Endpoint::TriggerV1,
        vec![phone],
        body,
        &flow,
        s.clock_ms(),
        fault,
    );
    s.accept(&call, send, None, Answer::True).await
}

fn check_trigger_v2(v: &Value) -> Result<(String, Vec<(String, String)>), Refusal> {
    let obj = v.as_object().expect("parse_json gives objects");
    let channel = obj
        .get("user.channel")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !matches!(channel, "whatsapp" | "rcs") {
        return Err(invalid(&format!(
            "user.channel `{channel}` must be whatsapp or rcs"
        )));
    }
    let phone = match obj.get("user.phone_no") {
        Some(Value::String(p)) => p.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if !digits(&phone) {
        return Err(invalid(&format!(
            "user.phone_no `{phone}` is missing or not a number with country code (digits, e.g. 919876543210)"
        )));
    }
    let mut attrs = Vec::new();
    for (k, x) in obj {
        let value = match x {
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => x.to_string(),
            _ => {
                return Err(invalid(&format!(
                    "attribute `{k}` must be a string, number or boolean"
                )));
            }
        };
        attrs.push((k.clone(), value));
    }
    Ok((phone, attrs))
}

async fn trigger_v2(
    State(s): St,
    Path((cid, bot, flow)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        path: uri.path().to_owned(),
        query: HashMap::new(),
    };
    let mut checked = None;
    let fault = match s
        .admit_write(&headers, &call, &cid, &bot, || {
            let v = parse_json(&body)?;
            let c = check_trigger_v2(&v)?;
            check_flow(&s, &flow)?;
            checked = Some((v, c));
            Ok(())
        })
        .await
    {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let (v, (phone, attrs)) = checked.expect("checked");
    s.set_attributes(&phone, &attrs);
    let send = new_send(
        Endpoint::TriggerV2,
        vec![phone],
        v,
        &flow,
        s.clock_ms(),
        fault,
    );
    s.accept(&call, send, None, Answer::True).await
}

/// Broadcast check: (recipients, title, history kind and text, publication ms).
fn check_broadcast(
    s: &Shared,
    v: &Value,
) -> Result<(Vec<String>, String, &'static str, String, i64), Refusal> {
    let title = text(v, "/broadcastTitle").ok_or_else(|| invalid("broadcastTitle is required"))?;
    let published = text(v, "/publishedOn").unwrap_or("");
    let at = crate::engati::wire::parse_datetime(published).map_err(|_| Refusal {
        code: 1003,
        desc: "INVALID_INPUT_DATE_VALUE",
        details: format!("publishedOn `{published}` is not an ISO-8601 date-time"),
    })?;
    let channels = v
        .pointer("/audience/rule/channels")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("audience.rule.channels must be a non-empty array"))?;
    let whatsapp = channels.iter().any(|c| c.as_str() == Some("whatsapp"));
    let ids = v
        .pointer("/audience/rule/channelUserIds")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("audience.rule.channelUserIds must be a non-empty array"))?;
    let mut recipients = Vec::with_capacity(ids.len());
    for id in ids {
        match id.as_str() {
            Some(x) if !whatsapp || digits(x) => recipients.push(x.to_owned()),
            _ => {
                return Err(invalid(&format!(
                    "channelUserIds: `{id}` is not a WhatsApp number with country code"
                )));
            }
        }
    }
    let (kind, shown) = match text(v, "/payload/type") {
        Some("direct") => (
            "TEXT",
            text(v, "/payload/content/0/data/message")
                .ok_or_else(|| invalid("payload.content[0].data.message is required"))?
                .to_owned(),
        ),
        Some("whatsapp template") => {
            let name = text(v, "/payload/content/0/template/payload/name")
                .ok_or_else(|| invalid("payload.content[0].template.payload.name is required"))?;
            text(v, "/payload/content/0/template/payload/namespace").ok_or_else(|| {
                invalid("payload.content[0].template.payload.namespace is required")
            })?;
            if !s.config.write.templates.iter().any(|t| t == name) {
                return Err(invalid(&format!(
                    "template `{name}` does not exist (not approved for this WhatsApp number)"
                )));
            }
            ("TEMPLATE", name.to_owned())
        }
        _ => {
            return Err(invalid(
                "payload.type must be \"direct\" or \"whatsapp template\"",
            ));
        }
    };
    Ok((recipients, title.to_owned(), kind, shown, at))
}

async fn broadcast(
    State(s): St,
    Path((cid, bot)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        path: uri.path().to_owned(),
        query: HashMap::new(),
    };
    let mut checked = None;
    let fault = match s
        .admit_write(&headers, &call, &cid, &bot, || {
            let v = parse_json(&body)?;
            checked = Some((check_broadcast(&s, &v)?, v));
            Ok(())
        })
        .await
    {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let ((recipients, title, kind, shown, at), v) = checked.expect("checked");
    // A publication time in the past is sent at once (seeds: "Immediate broadcasts will be
    // sent for expired time").
    let at = at.max(s.clock_ms());
    let send = new_send(Endpoint::Broadcast, recipients, v, &title, at, fault);
    s.accept(&call, send, Some((kind, shown)), Answer::BroadcastId)
        .await
}
