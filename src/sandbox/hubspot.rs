//! A HubSpot-compatible emulator for the CRM sink's demo and tests.
//!
//! Covers what the sink calls (anchors.md section 3a): contacts search (filter groups ORed,
//! filters ANDed; EQ, IN, CONTAINS_TOKEN, HAS_PROPERTY; `limit`/`after` paging), contacts
//! batch create (409 on an existing email, with "Existing ID"), upsert (by email), update and
//! read; communications batch create (with associations) and update, and search; the v4
//! default association. Bearer auth, at most 100 inputs per batch, per-item validation
//! errors answered as 207 with `errors[]` carrying each input's `objectWriteTraceId`, a
//! rolling 10-second request limit answered with 429 and the `X-HubSpot-RateLimit-*` headers,
//! and scripted faults. Every request is recorded (method, path, JSON body) so tests can
//! check the sink's payloads with HubSpot's own client models.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{post, put};
use serde_json::{Value, json};

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Port on 127.0.0.1 (0 = any).
    pub port: u16,
    /// The private-app token it accepts.
    pub token: String,
    /// Requests per rolling 10 s before 429s.
    pub rate_per_10s: usize,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        HubSpotConfig {
            port: 0,
            token: "pat-na1-sandbox-0000-engati-etl".into(),
            rate_per_10s: 100,
        }
    }
}

/// A scripted fault for the next matching request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubSpotFault {
    /// 429 with the rate-limit headers (and no `Retry-After`, as HubSpot does).
    Throttle,
    /// 502 from the edge.
    BadGateway,
    /// In the next communications batch create, reject the input at this index with a
    /// VALIDATION_ERROR (a 207).
    RejectInput(usize),
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// JSON body (`Null` when none).
    pub body: Value,
    /// Status answered.
    pub status: u16,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Numeric id as a string.
    pub id: String,
    /// Properties.
    pub properties: BTreeMap<String, String>,
    /// Associated contact ids (communications).
    pub contacts: Vec<String>,
    /// Creation order.
    pub created_seq: u64,
    /// Times updated.
    pub updates: u32,
}

#[derive(Default)]
struct Store {
    contacts: BTreeMap<u64, Object>,
    communications: BTreeMap<u64, Object>,
    next: u64,
    calls: Vec<Call>,
    window: VecDeque<Instant>,
    faults: VecDeque<HubSpotFault>,
}

struct Shared {
    config: HubSpotConfig,
    store: Mutex<Store>,
}

/// A running emulator; dropping it stops the server.
pub struct HubSpotHandle {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// The token it accepts.
    pub token: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for HubSpotHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl HubSpotHandle {
    /// Every request so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.store.lock().expect("lock").calls.clone()
    }
    /// The requests as JSONL lines `{"method","path","body"}` (the validator's input).
    pub fn calls_jsonl(&self) -> String {
        let mut out = String::new();
        for c in self.calls() {
            if c.path.starts_with("/crm/") {
                let line = json!({"method": c.method, "path": c.path, "body": c.body});
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        out
    }
    /// All contacts.
    pub fn contacts(&self) -> Vec<Object> {
        self.shared
            .store
            .lock()
            .expect("lock")
            .contacts
            .values()
            .cloned()
            .collect()
    }
    /// All communications.
    pub fn communications(&self) -> Vec<Object> {
        self.shared
            .store
            .lock()
            .expect("lock")
            .communications
            .values()
            .cloned()
            .collect()
    }
    /// A contact's timeline: its communications by `hs_timestamp`.
    pub fn timeline(&self, contact_id: &str) -> Vec<Object> {
        let mut v: Vec<Object> = self
            .communications()
            .into_iter()
            .filter(|c| c.contacts.iter().any(|x| x == contact_id))
            .collect();
        v.sort_by(|a, b| {
            a.properties
                .get("hs_timestamp")
                .cmp(&b.properties.get("hs_timestamp"))
        });
        v
    }
    /// Queues faults.
    pub fn script(&self, faults: impl IntoIterator<Item = HubSpotFault>) {
        self.shared
            .store
            .lock()
            .expect("lock")
            .faults
            .extend(faults);
    }
}

/// Starts the emulator on the current tokio runtime.
///
/// # Errors
/// The bind error.
pub async fn start(config: HubSpotConfig) -> std::io::Result<HubSpotHandle> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        store: Mutex::new(Store {
            next: 1,
            ..Store::default()
        }),
    });
    let app = Router::new()
        .route("/crm/v3/objects/{object}/search", post(search))
        .route("/crm/v3/objects/{object}/batch/{op}", post(batch))
        .route(
            "/crm/v4/objects/communications/{id}/associations/default/contacts/{cid}",
            put(associate),
        )
        .fallback(fallback)
        .with_state(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(HubSpotHandle {
        base_url: format!("http://{addr}"),
        addr,
        token: shared.config.token.clone(),
        shared,
        shutdown: Some(tx),
    })
}

type St = State<Arc<Shared>>;

fn reply(status: StatusCode, body: Value, remaining: Option<usize>, max: usize) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-hubspot-ratelimit-max", max.to_string())
        .header("x-hubspot-ratelimit-interval-milliseconds", "10000");
    if let Some(r) = remaining {
        b = b.header("x-hubspot-ratelimit-remaining", r.to_string());
    }
    b.body(axum::body::Body::from(body.to_string()))
        .expect("valid response")
}

fn error(category: &str, message: &str) -> Value {
    json!({"status": "error", "message": message, "category": category, "correlationId": "00000000-0000-0000-0000-000000000000"})
}

/// Auth, rate limit, faults, logging around a handler.
fn handle(
    s: &Shared,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &Bytes,
    f: impl FnOnce(&mut Store, &Value) -> (StatusCode, Value),
) -> Response {
    let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut store = s.store.lock().expect("lock");
    let max = s.config.rate_per_10s;
    let log = |store: &mut Store, status: StatusCode| {
        store.calls.push(Call {
            method: method.to_owned(),
            path: path.to_owned(),
            body: json.clone(),
            status: status.as_u16(),
        })
    };
    let auth_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", s.config.token));
    if !auth_ok {
        log(&mut store, StatusCode::UNAUTHORIZED);
        return reply(
            StatusCode::UNAUTHORIZED,
            error(
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found.",
            ),
            None,
            max,
        );
    }
    let now = Instant::now();
    while store
        .window
        .front()
        .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(10))
    {
        store.window.pop_front();
    }
    let scripted = match store.faults.front() {
        Some(HubSpotFault::Throttle) | Some(HubSpotFault::BadGateway) => store.faults.pop_front(),
        _ => None,
    };
    if scripted == Some(HubSpotFault::Throttle) || store.window.len() >= max {
        log(&mut store, StatusCode::TOO_MANY_REQUESTS);
        let mut body = error(
            "RATE_LIMITS",
            "You have reached your ten_secondly_rolling limit.",
        );
        body["errorType"] = json!("RATE_LIMIT");
        body["policyName"] = json!("TEN_SECONDLY_ROLLING");
        return reply(StatusCode::TOO_MANY_REQUESTS, body, Some(0), max);
    }
    if scripted == Some(HubSpotFault::BadGateway) {
        log(&mut store, StatusCode::BAD_GATEWAY);
        return reply(
            StatusCode::BAD_GATEWAY,
            json!({"message": "bad gateway"}),
            None,
            max,
        );
    }
    store.window.push_back(now);
    let remaining = max.saturating_sub(store.window.len());
    let (status, out) = f(&mut store, &json);
    log(&mut store, status);
    reply(status, out, Some(remaining), max)
}

fn object_json(o: &Object, props: Option<&[String]>) -> Value {
    let properties: serde_json::Map<String, Value> = o
        .properties
        .iter()
        .filter(|(k, _)| props.is_none_or(|p| p.iter().any(|x| x == *k)))
        .map(|(k, v)| (k.clone(), json!(v)))
        .chain(std::iter::once(("hs_object_id".to_string(), json!(o.id))))
        .collect();
    json!({
        "id": o.id,
        "properties": properties,
        "createdAt": "2026-11-22T00:00:00.000Z",
        "updatedAt": "2026-11-22T00:00:00.000Z",
        "archived": false,
    })
}

fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|t| !t.is_empty())
}

fn matches(o: &Object, f: &Value) -> bool {
    let prop = f.get("propertyName").and_then(Value::as_str).unwrap_or("");
    let value = o.properties.get(prop);
    let want = f.get("value").and_then(Value::as_str);
    match f.get("operator").and_then(Value::as_str).unwrap_or("") {
        "EQ" => value.map(String::as_str) == want,
        "IN" => f
            .get("values")
            .and_then(Value::as_array)
            .is_some_and(|vs| vs.iter().any(|v| v.as_str() == value.map(String::as_str))),
        "CONTAINS_TOKEN" => match (value, want) {
            (Some(v), Some(w)) => tokens(v).any(|t| t.eq_ignore_ascii_case(w)),
            _ => false,
        },
        "HAS_PROPERTY" => value.is_some_and(|v| !v.is_empty()),
        _ => false,
    }
}

async fn search(
    State(s): St,
    Path(object): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&s, "POST", uri.path(), &headers, &body, |store, req| {
        let objects = match object.as_str() {
            "contacts" => &store.contacts,
            "communications" => &store.communications,
            _ => {
                return (
                    StatusCode::NOT_FOUND,
                    error("OBJECT_NOT_FOUND", "Unknown object type"),
                );
            }
        };
        let groups = req
            .get("filterGroups")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let props: Option<Vec<String>> = req.get("properties").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        });
        let limit = req
            .get("limit")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 200) as usize;
        let after: usize = req
            .get("after")
            .and_then(Value::as_str)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let hits: Vec<&Object> = objects
            .values()
            .filter(|o| {
                groups.is_empty()
                    || groups.iter().any(|g| {
                        g.get("filters")
                            .and_then(Value::as_array)
                            .is_some_and(|fs| fs.iter().all(|f| matches(o, f)))
                    })
            })
            .collect();
        let page: Vec<Value> = hits
            .iter()
            .skip(after)
            .take(limit)
            .map(|o| object_json(o, props.as_deref()))
            .collect();
        let mut out = json!({"total": hits.len(), "results": page});
        if after + limit < hits.len() {
            out["paging"] = json!({"next": {"after": (after + limit).to_string()}});
        }
        (StatusCode::OK, out)
    })
}

fn str_props(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(m) = v.as_object() else {
        return Err("properties must be an object".into());
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(format!("Property values must be strings: {k} is {other}")),
        })
        .collect()
}

fn item_error(message: String, trace: Option<&str>) -> Value {
    let mut e = json!({"status": "error", "category": "VALIDATION_ERROR", "message": message, "context": {}});
    if let Some(t) = trace {
        e["context"]["objectWriteTraceId"] = json!([t]);
    }
    e
}

fn batch_answer(results: Vec<Value>, errors: Vec<Value>, created: bool) -> (StatusCode, Value) {
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": "2026-11-22T00:00:00.000Z",
        "completedAt": "2026-11-22T00:00:00.000Z",
    });
    if errors.is_empty() {
        return (
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            out,
        );
    }
    out["numErrors"] = json!(errors.len());
    out["errors"] = json!(errors);
    (StatusCode::MULTI_STATUS, out)
}

async fn batch(
    State(s): St,
    Path((object, op)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&s, "POST", uri.path(), &headers, &body, |store, req| {
        let inputs = req
            .get("inputs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if inputs.is_empty() || inputs.len() > 100 {
            return (
                StatusCode::BAD_REQUEST,
                error(
                    "VALIDATION_ERROR",
                    &format!("inputs must hold 1 to 100 items, got {}", inputs.len()),
                ),
            );
        }
        match (object.as_str(), op.as_str()) {
            ("contacts", "create") => contacts_create(store, &inputs),
            ("contacts", "upsert") => contacts_upsert(store, &inputs),
            ("contacts", "update") | ("communications", "update") => {
                update(store, &object, &inputs)
            }
            ("contacts", "read") => {
                let by = req.get("idProperty").and_then(Value::as_str);
                let results = inputs
                    .iter()
                    .filter_map(|i| i.get("id").and_then(Value::as_str))
                    .filter_map(|id| {
                        store.contacts.values().find(|c| match by {
                            Some(p) => c.properties.get(p).map(String::as_str) == Some(id),
                            None => c.id == id,
                        })
                    })
                    .map(|c| object_json(c, None))
                    .collect();
                batch_answer(results, vec![], false)
            }
            ("communications", "create") => communications_create(store, &inputs),
            _ => (
                StatusCode::NOT_FOUND,
                error("NOT_FOUND", "Unknown batch operation"),
            ),
        }
    })
}

fn new_id(store: &mut Store) -> u64 {
    store.next += 1;
    store.next + 1000
}

fn contacts_create(store: &mut Store, inputs: &[Value]) -> (StatusCode, Value) {
    // HubSpot refuses the whole batch when an email exists.
    for i in inputs {
        if let Some(email) = i.pointer("/properties/email").and_then(Value::as_str)
            && let Some(c) = store.contacts.values().find(|c| {
                c.properties
                    .get("email")
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            })
        {
            let msg = format!("Contact already exists. Existing ID: {}", c.id);
            return (StatusCode::CONFLICT, error("CONFLICT", &msg));
        }
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for i in inputs {
        let trace = i.get("objectWriteTraceId").and_then(Value::as_str);
        match str_props(i.get("properties").unwrap_or(&Value::Null)) {
            Ok(props) => {
                let id = new_id(store);
                let seq = store.next;
                let o = Object {
                    id: id.to_string(),
                    properties: props,
                    contacts: vec![],
                    created_seq: seq,
                    updates: 0,
                };
                let mut r = object_json(&o, None);
                if let Some(t) = trace {
                    r["objectWriteTraceId"] = json!(t);
                }
                results.push(r);
                store.contacts.insert(id, o);
            }
            Err(m) => errors.push(item_error(m, trace)),
        }
    }
    batch_answer(results, errors, true)
}

fn contacts_upsert(store: &mut Store, inputs: &[Value]) -> (StatusCode, Value) {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for i in inputs {
        let prop = i
            .get("idProperty")
            .and_then(Value::as_str)
            .unwrap_or("email")
            .to_owned();
        let Some(idv) = i.get("id").and_then(Value::as_str) else {
            errors.push(item_error("id is required".into(), None));
            continue;
        };
        let props = match str_props(i.get("properties").unwrap_or(&Value::Null)) {
            Ok(p) => p,
            Err(m) => {
                errors.push(item_error(m, None));
                continue;
            }
        };
        let existing = store
            .contacts
            .iter()
            .find(|(_, c)| c.properties.get(&prop).map(String::as_str) == Some(idv))
            .map(|(k, _)| *k);
        let key = match existing {
            Some(k) => k,
            None => {
                let id = new_id(store);
                let seq = store.next;
                let mut p = BTreeMap::new();
                p.insert(prop.clone(), idv.to_owned());
                store.contacts.insert(
                    id,
                    Object {
                        id: id.to_string(),
                        properties: p,
                        contacts: vec![],
                        created_seq: seq,
                        updates: 0,
                    },
                );
                id
            }
        };
        let c = store.contacts.get_mut(&key).expect("present");
        c.properties.extend(props);
        results.push(object_json(c, None));
    }
    batch_answer(results, errors, false)
}

fn update(store: &mut Store, object: &str, inputs: &[Value]) -> (StatusCode, Value) {
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for i in inputs {
        let trace = i.get("objectWriteTraceId").and_then(Value::as_str);
        let id = i
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok());
        let props = str_props(i.get("properties").unwrap_or(&Value::Null));
        let map = if object == "contacts" {
            &mut store.contacts
        } else {
            &mut store.communications
        };
        match (id.and_then(|id| map.get_mut(&id)), props) {
            (Some(o), Ok(p)) => {
                if let Some(b) = p.get("hs_communication_body")
                    && b.chars().count() > 65_536
                {
                    errors.push(item_error(
                        "hs_communication_body is longer than 65536 characters".into(),
                        trace,
                    ));
                    continue;
                }
                o.properties.extend(p);
                o.updates += 1;
                let mut r = object_json(o, None);
                if let Some(t) = trace {
                    r["objectWriteTraceId"] = json!(t);
                }
                results.push(r);
            }
            (None, _) => errors.push(item_error("Object not found".into(), trace)),
            (_, Err(m)) => errors.push(item_error(m, trace)),
        }
    }
    batch_answer(results, errors, false)
}

fn communications_create(store: &mut Store, inputs: &[Value]) -> (StatusCode, Value) {
    let reject = match store.faults.front() {
        Some(HubSpotFault::RejectInput(i)) => {
            let i = *i;
            store.faults.pop_front();
            Some(i)
        }
        _ => None,
    };
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for (n, i) in inputs.iter().enumerate() {
        let trace = i.get("objectWriteTraceId").and_then(Value::as_str);
        let props = match str_props(i.get("properties").unwrap_or(&Value::Null)) {
            Ok(p) => p,
            Err(m) => {
                errors.push(item_error(m, trace));
                continue;
            }
        };
        let problem = if reject == Some(n) {
            Some("Property values were not valid: scripted rejection".to_string())
        } else if !matches!(
            props
                .get("hs_communication_channel_type")
                .map(String::as_str),
            Some("WHATS_APP" | "SMS" | "LINKEDIN_MESSAGE")
        ) {
            Some("hs_communication_channel_type must be WHATS_APP, SMS or LINKEDIN_MESSAGE".into())
        } else if props
            .get("hs_communication_logged_from")
            .map(String::as_str)
            != Some("CRM")
        {
            Some("hs_communication_logged_from must be CRM".into())
        } else if props
            .get("hs_communication_body")
            .is_none_or(|b| b.is_empty() || b.chars().count() > 65_536)
        {
            Some("hs_communication_body is required and at most 65536 characters".into())
        } else if !props.contains_key("hs_timestamp") {
            Some("hs_timestamp is required".into())
        } else {
            None
        };
        if let Some(m) = problem {
            errors.push(item_error(m, trace));
            continue;
        }
        let mut contacts = Vec::new();
        let mut bad = None;
        for a in i
            .get("associations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let to = a.pointer("/to/id").and_then(Value::as_str).unwrap_or("");
            let type_ok = a.get("types").and_then(Value::as_array).is_some_and(|t| {
                t.iter()
                    .any(|t| t.get("associationTypeId").and_then(Value::as_i64) == Some(81))
            });
            match (
                to.parse::<u64>()
                    .ok()
                    .filter(|id| store.contacts.contains_key(id)),
                type_ok,
            ) {
                (Some(_), true) => contacts.push(to.to_owned()),
                _ => {
                    bad = Some(format!(
                        "association to contact {to} is not valid (type 81 to an existing contact)"
                    ))
                }
            }
        }
        if let Some(m) = bad {
            errors.push(item_error(m, trace));
            continue;
        }
        let id = new_id(store);
        let seq = store.next;
        let o = Object {
            id: id.to_string(),
            properties: props,
            contacts,
            created_seq: seq,
            updates: 0,
        };
        let mut r = object_json(&o, None);
        if let Some(t) = trace {
            r["objectWriteTraceId"] = json!(t);
        }
        results.push(r);
        store.communications.insert(id, o);
    }
    batch_answer(results, errors, true)
}

async fn associate(
    State(s): St,
    Path((id, cid)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&s, "PUT", uri.path(), &headers, &body, |store, _| {
        let (Ok(id), Ok(c)) = (id.parse::<u64>(), cid.parse::<u64>()) else {
            return (
                StatusCode::BAD_REQUEST,
                error("VALIDATION_ERROR", "ids must be numeric"),
            );
        };
        if !store.contacts.contains_key(&c) {
            return (
                StatusCode::NOT_FOUND,
                error("OBJECT_NOT_FOUND", "contact not found"),
            );
        }
        match store.communications.get_mut(&id) {
            Some(o) => {
                if !o.contacts.contains(&cid) {
                    o.contacts.push(cid.clone());
                }
                (
                    StatusCode::OK,
                    json!({"fromObjectTypeId": "0-18", "fromObjectId": id, "toObjectTypeId": "0-1", "toObjectId": c}),
                )
            }
            None => (
                StatusCode::NOT_FOUND,
                error("OBJECT_NOT_FOUND", "communication not found"),
            ),
        }
    })
}

async fn fallback(
    State(s): St,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    handle(&s, method.as_str(), &path, &headers, &body, |_, _| {
        (
            StatusCode::NOT_FOUND,
            error(
                "NOT_FOUND",
                &format!("hubspot emulator: no route for {method} {path}"),
            ),
        )
    })
}
