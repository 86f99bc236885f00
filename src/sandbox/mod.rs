//! An Engati-compatible API server for the demo, the tests and the benchmarks.
//!
//! Faithful to docs/engati-api.md: the same paths and parameters, `Authorization: Basic <key>`,
//! Engati's 400 bodies (codes 1002/1003/1004), RFC 7807 bodies for 401/403/404, timestamp
//! strings, the Users API's response variants (selectable), `page_number`/`page_size` paging,
//! and a switch for each reading of the undocumented date bounds (`start_exclusive`,
//! `end_inclusive`). Deterministic for a seed ([`dataset`]), with fault injection ([`faults`]:
//! latency, 5xx, 429 + `Retry-After`, truncated bodies, stalls) and a log of every request it
//! answered, for tests. An unknown route answers 404 with the route named.

mod capacity;
pub mod corpus;
pub mod dataset;
pub mod faults;
pub mod hubspot;
pub mod shift;
pub mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

pub use dataset::{DataConfig, Dataset, SandboxUser, StoredMessage};
pub use faults::{Fault, FaultConfig, Target};
pub use shift::{LiveConfig, PageOrder, ShiftConfig};

/// Where the Users API puts its list and the user id (docs/engati-api.md, "Users API" variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsersShape {
    /// `{"users": [...]}` (the decided default).
    #[default]
    Users,
    /// A bare top-level array.
    BareArray,
    /// `{"responseObject": [...]}`.
    ResponseObjectArray,
    /// `{"responseObject": {"content": [...]}}`.
    ResponseObjectContent,
    /// `{"responseObject": {"users": [...]}}`.
    ResponseObjectUsers,
    /// `{"data": {"rows": [...]}}`: a shape no client knows, to test the error.
    Unknown,
}

impl std::str::FromStr for UsersShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "users" => UsersShape::Users,
            "bare-array" => UsersShape::BareArray,
            "response-object-array" => UsersShape::ResponseObjectArray,
            "response-object-content" => UsersShape::ResponseObjectContent,
            "response-object-users" => UsersShape::ResponseObjectUsers,
            "unknown" => UsersShape::Unknown,
            _ => {
                return Err(format!(
                    "unknown users shape `{s}`: use users, bare-array, response-object-array, response-object-content, response-object-users or unknown"
                ));
            }
        })
    }
}

/// Everything the sandbox can be told.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// The data.
    pub data: DataConfig,
    /// Users API shape.
    pub users_shape: UsersShape,
    /// Key of the user id in Users API objects (`channel_user_id`, `channelUserId`, `user_id`).
    pub users_id_key: String,
    /// Key of the Conversations list (`conversations` or `messages`).
    pub conversations_key: String,
    /// Treat `start_date` as exclusive (`ts > start`).
    pub start_exclusive: bool,
    /// Treat `end_date` as inclusive (`ts <= end`).
    pub end_inclusive: bool,
    /// Largest page honoured; larger `page_size` values are silently clamped (as a real
    /// server might).
    pub max_page_size: usize,
    /// Answer 403 to every authenticated request (a key without API access).
    pub deny_access: bool,
    /// Random faults and latency.
    pub faults: FaultConfig,
    /// The sandbox clock at start, ms since epoch UTC (it then runs with real time); `None` =
    /// the system clock. Used for a blank `end_date` and for live arrivals.
    pub now_ms: Option<i64>,
    /// Messages arriving while the server runs, if any.
    pub live: Option<LiveConfig>,
    /// The write side: templates and flows that exist, write faults.
    pub write: write::WriteConfig,
    /// The order of a window's messages across pages.
    pub order: PageOrder,
    /// Messages inserted into (or deleted from) the window being paged, if any.
    pub shift: Option<ShiftConfig>,
    /// Capacity mode: work on this many requests at once, queue past it, answer 429 past
    /// twice it (`sandbox::capacity`).
    pub capacity: Option<usize>,
    /// The longest `end_date - start_date` answered, ms; longer ranges (or a blank
    /// `start_date`) get 400/1003, as an API with an undocumented range limit might answer
    /// (`--max-range`; README, "Adaptive windows").
    pub max_range_ms: Option<i64>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            port: 0,
            data: DataConfig::default(),
            users_shape: UsersShape::Users,
            users_id_key: "channel_user_id".into(),
            conversations_key: "conversations".into(),
            start_exclusive: false,
            end_inclusive: false,
            max_page_size: 500,
            deny_access: false,
            faults: FaultConfig::default(),
            now_ms: None,
            live: None,
            write: write::WriteConfig::default(),
            order: PageOrder::OldestFirst,
            shift: None,
            capacity: None,
            max_range_ms: None,
        }
    }
}

/// One answered request, as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Path, e.g. `/bot-api/v1.0/customer/61179/bot/.../conversations`.
    pub path: String,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// HTTP status sent (200 also for truncated bodies).
    pub status: u16,
    /// The injected fault, if any (`status`, `throttle`, `truncate`, `stall`).
    pub fault: Option<&'static str>,
    /// Whether the Authorization header carried the right key.
    pub authorized: bool,
}

impl LoggedRequest {
    /// True for Conversations API requests.
    pub fn is_conversations(&self) -> bool {
        self.path.ends_with("/conversations")
    }
}

struct Shared {
    started: std::time::Instant,
    live_paused: std::sync::atomic::AtomicBool,
    config: SandboxConfig,
    data: Arc<Dataset>,
    faults: faults::Faults,
    shifter: Option<shift::Shifter>,
    capacity: Option<capacity::Capacity>,
    log: Mutex<Vec<LoggedRequest>>,
    customer_id: String,
    bot_key: String,
    api_key: String,
    outbox: write::Outbox,
}

/// Credentials the sandbox accepts, derived from the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxIds {
    /// Numeric customer id.
    pub customer_id: String,
    /// 16 lowercase hex chars.
    pub bot_key: String,
    /// `<uuid>-<7 alphanumerics>`, like a real key.
    pub api_key: String,
}

/// The ids and key for a seed.
pub fn ids_for_seed(seed: u64) -> SandboxIds {
    let h = xxhash_rust::xxh3::xxh3_128(&seed.to_le_bytes());
    let hex = format!("{h:032x}");
    let alnum: String = (0..7)
        .map(|i| {
            let c = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
                [((h >> (i * 6)) % 57) as usize];
            c as char
        })
        .collect();
    SandboxIds {
        customer_id: (10_000 + (h as u64 % 89_999)).to_string(),
        bot_key: hex[16..32].to_string(),
        api_key: format!(
            "{}-{}-{}-{}-{}-{alnum}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        ),
    }
}

/// A running sandbox. Dropping it stops the server.
pub struct SandboxHandle {
    /// `http://127.0.0.1:PORT/`.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// Accepted ids and key.
    pub ids: SandboxIds,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SandboxHandle {
    /// The data served.
    pub fn data(&self) -> &Arc<Dataset> {
        &self.shared.data
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// Every send the write side accepted (processed), in order.
    pub fn sends(&self) -> Vec<write::AcceptedSend> {
        self.shared.outbox.sends()
    }

    /// How many sends the write side accepted.
    pub fn sends_count(&self) -> usize {
        self.shared.outbox.accepted()
    }

    /// Queues write-side faults for the next write requests.
    pub fn script_write_faults(&self, faults: impl IntoIterator<Item = write::WriteFault>) {
        self.shared.outbox.script(faults);
    }

    /// Queues faults for the next requests matching `target`.
    pub fn script_faults(&self, target: Target, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.script(target, faults);
    }

    /// The configuration.
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// The sandbox clock now, ms since epoch UTC.
    pub fn clock_ms(&self) -> i64 {
        self.shared.clock_ms()
    }

    /// Messages inserted into or deleted from windows being paged, so far.
    pub fn shift_changes(&self) -> u64 {
        self.shared.shifter.as_ref().map_or(0, |s| s.changes())
    }

    /// Messages deleted from windows being paged, so far: (user index, message).
    pub fn shift_deleted(&self) -> Vec<(usize, StoredMessage)> {
        self.shared
            .shifter
            .as_ref()
            .map_or_else(Vec::new, |s| s.deleted())
    }

    /// Capacity mode: the most requests in flight at once so far, working or queued (0 when
    /// the mode is off).
    pub fn capacity_peak(&self) -> usize {
        self.shared.capacity.as_ref().map_or(0, |c| c.peak())
    }

    /// Stops (or resumes) live arrivals.
    pub fn pause_live(&self, paused: bool) {
        self.shared
            .live_paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Errors starting the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The port could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Generates the data and starts serving on 127.0.0.1 (on the current tokio runtime).
///
/// # Errors
/// [`SandboxError::Bind`] when the port is taken.
pub async fn start(config: SandboxConfig) -> Result<SandboxHandle, SandboxError> {
    let data = Arc::new(Dataset::generate(config.data.clone()));
    start_with_data(config, data).await
}

/// Starts serving an existing dataset.
///
/// # Errors
/// [`SandboxError::Bind`] when the port is taken.
pub async fn start_with_data(
    config: SandboxConfig,
    data: Arc<Dataset>,
) -> Result<SandboxHandle, SandboxError> {
    let ids = ids_for_seed(config.data.seed);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
        .await
        .map_err(|source| SandboxError::Bind {
            port: config.port,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SandboxError::Bind {
        port: config.port,
        source,
    })?;
    let shared = Arc::new(Shared {
        started: std::time::Instant::now(),
        live_paused: std::sync::atomic::AtomicBool::new(false),
        faults: faults::Faults::new(config.faults.clone()),
        outbox: write::Outbox::new(config.write.clone()),
        shifter: config.shift.map(shift::Shifter::new),
        capacity: config.capacity.map(capacity::Capacity::new),
        config,
        data,
        log: Mutex::new(Vec::new()),
        customer_id: ids.customer_id.clone(),
        bot_key: ids.bot_key.clone(),
        api_key: ids.api_key.clone(),
    });
    let app = Router::new()
        .route(
            "/bot-api/v1.0/customer/{cid}/bot/{bot}/users",
            get(users_handler),
        )
        .route(
            "/bot-api/v1.0/customer/{cid}/bot/{bot}/channel-user/{uid}/conversations",
            get(conversations_handler),
        )
        .merge(write::routes())
        .fallback(fallback)
        .with_state(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(live) = shared.config.live {
        tokio::spawn(shift::live_arrivals(
            Arc::downgrade(&shared),
            live,
            |s: &Shared| {
                let paused = s.live_paused.load(std::sync::atomic::Ordering::SeqCst);
                (&*s.data, s.clock_ms(), paused)
            },
        ));
    }
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SandboxHandle {
        base_url: format!("http://{addr}/"),
        addr,
        ids,
        shared,
        shutdown: Some(tx),
        task: Some(task),
    })
}

type St = State<Arc<Shared>>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static response parts are valid")
}

fn engati_error(code: u16, desc: &str, details: &str) -> Response {
    #[derive(Serialize)]
    struct Status<'a> {
        code: u16,
        desc: &'a str,
    }
    #[derive(Serialize)]
    struct ErrBody<'a> {
        status: Status<'a>,
        #[serde(rename = "responseObject")]
        response_object: Option<()>,
        error_details: &'a str,
    }
    let body = serde_json::to_vec(&ErrBody {
        status: Status { code, desc },
        response_object: None,
        error_details: details,
    })
    .unwrap_or_default();
    json_response(StatusCode::BAD_REQUEST, body)
}

fn problem(status: StatusCode, detail: &str, instance: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "instance": instance,
    });
    json_response(status, body.to_string().into_bytes())
}

impl Shared {
    /// The sandbox clock, ms since epoch UTC.
    fn clock_ms(&self) -> i64 {
        match self.config.now_ms {
            Some(base) => base + self.started.elapsed().as_millis() as i64,
            None => crate::time::now_ms(),
        }
    }

    fn record(
        &self,
        path: &str,
        query: &HashMap<String, String>,
        status: u16,
        fault: Option<Fault>,
        authorized: bool,
    ) {
        self.log.lock().expect("log lock").push(LoggedRequest {
            path: path.to_owned(),
            query: query.clone(),
            status,
            fault: fault.map(|f| f.label()),
            authorized,
        });
    }

    /// Capacity (a worker, or 429), latency, auth, access, path ids. `Err` is the response to
    /// send; the slot, if any, is held until the response is made.
    async fn gate(
        &self,
        headers: &HeaderMap,
        path: &str,
        cid: &str,
        bot: &str,
    ) -> Result<Option<capacity::Slot<'_>>, Response> {
        let slot = match &self.capacity {
            Some(c) => match c.admit().await {
                Some(slot) => Some(slot),
                None => {
                    return Err(Response::builder()
                        .status(StatusCode::TOO_MANY_REQUESTS)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(r#"{"title":"Too Many Requests","status":429}"#))
                        .expect("static response parts are valid"));
                }
            },
            None => None,
        };
        if self.config.faults.latency_ms > 0 {
            // tokio's timer rounds a sleep up to its next millisecond tick and wakes a little
            // after it: ask for one millisecond less so that a client sees the configured
            // latency (measured with curl: 52.3 ms for 50 ms without this).
            let ms = self.config.faults.latency_ms;
            tokio::time::sleep(Duration::from_micros(
                ms * 1000 - if ms >= 2 { 1000 } else { 0 },
            ))
            .await;
        }
        let expected = format!("Basic {}", self.api_key);
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected);
        if !ok {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "missing or invalid API key",
                path,
            ));
        }
        if self.config.deny_access {
            return Err(problem(
                StatusCode::FORBIDDEN,
                "this key has no access to the bot",
                path,
            ));
        }
        if cid != self.customer_id || bot != self.bot_key {
            return Err(engati_error(
                1002,
                "INVALID_BOT_OR_CUSTOMER_ID",
                "The bot id/customer id is invalid",
            ));
        }
        Ok(slot)
    }

    /// Applies a fault to a successful body. Returns the response and the status to log (0 when
    /// already logged).
    async fn deliver(
        &self,
        fault: Option<Fault>,
        body: Vec<u8>,
        path: &str,
        query: &HashMap<String, String>,
    ) -> (Response, u16) {
        match fault {
            Some(Fault::Status(code)) => {
                let status =
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let resp = Response::builder()
                    .status(status)
                    .header(header::CONTENT_TYPE, "text/html")
                    .body(Body::from(format!(
                        "<html><body><h1>{code} Server Error</h1></body></html>"
                    )))
                    .expect("static response parts are valid");
                (resp, code)
            }
            Some(Fault::Throttle { retry_after_secs }) => {
                let resp = Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .header(header::RETRY_AFTER, retry_after_secs.to_string())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(r#"{"title":"Too Many Requests","status":429}"#))
                    .expect("static response parts are valid");
                (resp, 429)
            }
            Some(Fault::Truncate) => {
                let cut = body.len() / 2;
                (json_response(StatusCode::OK, body[..cut].to_vec()), 200)
            }
            Some(Fault::Stall(ms)) => {
                // Logged before the wait: a client that times out drops the connection, and
                // axum then drops this future.
                self.record(path, query, 200, fault, true);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                (json_response(StatusCode::OK, body), 0)
            }
            None => (json_response(StatusCode::OK, body), 200),
        }
    }
}

async fn users_handler(
    State(s): St,
    Path((cid, bot)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let _slot = match s.gate(&headers, &path, &cid, &bot).await {
        Ok(slot) => slot,
        Err(resp) => {
            let status = resp.status().as_u16();
            s.record(&path, &q, status, None, status != 401);
            return resp;
        }
    };
    let (Some(name), Some(value)) = (q.get("attribute_name"), q.get("attribute_value")) else {
        s.record(&path, &q, 400, None, true);
        return engati_error(
            1002,
            "INVALID_INPUT",
            "attribute_name and attribute_value are required",
        );
    };
    let users = s.data.users_matching(name, value);
    let list: Vec<serde_json::Value> = users
        .iter()
        .map(|u| {
            let mut obj = serde_json::Map::new();
            obj.insert(
                s.config.users_id_key.clone(),
                u.channel_user_id.clone().into(),
            );
            obj.insert("channel".into(), u.channel.into());
            obj.insert("user_name".into(), u.user_name.clone().into());
            let attrs: serde_json::Map<String, serde_json::Value> = u
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            obj.insert("attributes".into(), attrs.into());
            serde_json::Value::Object(obj)
        })
        .collect();
    let list = serde_json::Value::Array(list);
    let body = match s.config.users_shape {
        UsersShape::Users => serde_json::json!({ "users": list }),
        UsersShape::BareArray => list,
        UsersShape::ResponseObjectArray => serde_json::json!({ "responseObject": list }),
        UsersShape::ResponseObjectContent => {
            serde_json::json!({ "status": {"code": 1000, "desc": "SUCCESS"}, "responseObject": { "content": list, "totalElements": users.len() } })
        }
        UsersShape::ResponseObjectUsers => {
            serde_json::json!({ "responseObject": { "users": list } })
        }
        UsersShape::Unknown => serde_json::json!({ "data": { "rows": list } }),
    };
    let fault = s.faults.next(true);
    let (resp, status) = s
        .deliver(fault, body.to_string().into_bytes(), &path, &q)
        .await;
    if status != 0 {
        s.record(&path, &q, status, fault, true);
    }
    resp
}

fn parse_ms(v: Option<&String>) -> Result<Option<i64>, ()> {
    match v.map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<i64>().map(Some).map_err(|_| ()),
    }
}

async fn conversations_handler(
    State(s): St,
    Path((cid, bot, uid)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_owned();
    let _slot = match s.gate(&headers, &path, &cid, &bot).await {
        Ok(slot) => slot,
        Err(resp) => {
            let status = resp.status().as_u16();
            s.record(&path, &q, status, None, status != 401);
            return resp;
        }
    };
    let reject = |code, desc, details: &str| {
        s.record(&path, &q, 400, None, true);
        engati_error(code, desc, details)
    };
    // Dataset users, or users created by a send (the write side's outbox).
    let index = s.data.user_index(&uid);
    if index.is_none() && !s.outbox.knows(&uid) {
        return reject(
            1002,
            "INVALID_BOT_OR_CUSTOMER_ID",
            "The bot id/customer id/user id is invalid",
        );
    }
    let (Ok(start), Ok(end)) = (parse_ms(q.get("start_date")), parse_ms(q.get("end_date"))) else {
        return reject(
            1003,
            "INVALID_INPUT_DATE_VALUE",
            "start_date and end_date must be epoch milliseconds",
        );
    };
    let now = s.clock_ms();
    let end = end.unwrap_or(now);
    if start.is_some_and(|st| end <= st) {
        return reject(
            1003,
            "INVALID_INPUT_DATE_VALUE",
            "end_date must be greater than start_date",
        );
    }
    if let Some(max) = s.config.max_range_ms
        && start.is_none_or(|st| end - st > max)
    {
        return reject(
            1003,
            "INVALID_INPUT_DATE_VALUE",
            "the date range is too long",
        );
    }
    let page = match q.get("page_number").map(|p| p.trim().parse::<i64>()) {
        None => 1,
        Some(Ok(p)) if p >= 1 => p as usize,
        Some(_) => {
            return reject(
                1004,
                "INVALID_PAGE_NUMBER",
                "page_number must be a positive integer",
            );
        }
    };
    let size = match q.get("page_size").map(|p| p.trim().parse::<i64>()) {
        None => 500,
        Some(Ok(p)) if p >= 1 => (p as usize).min(s.config.max_page_size),
        Some(_) => {
            return reject(
                1004,
                "INVALID_PAGE_NUMBER",
                "page_size must be a positive integer",
            );
        }
    };
    let body = page_body(&s, index, &uid, (start, end), page, size);
    let fault = s.faults.next(false);
    let (resp, status) = s.deliver(fault, body, &path, &q).await;
    if status != 0 {
        s.record(&path, &q, status, fault, true);
    }
    resp
}

/// The body of page `page` (1-based, `size` messages) of `uid`'s messages in `(start, end)`:
/// a dataset user (at `index`; the shift mode may change the window first) or a user a send
/// created (the outbox: no shifts).
fn page_body(
    s: &Shared,
    index: Option<usize>,
    uid: &str,
    (start, end): (Option<i64>, i64),
    page: usize,
    size: usize,
) -> Vec<u8> {
    let (se, ei, order) = (
        s.config.start_exclusive,
        s.config.end_inclusive,
        s.config.order,
    );
    let key = &s.config.conversations_key;
    let page_of = |msgs: &[StoredMessage]| {
        let n = msgs.len();
        let from = (page - 1).saturating_mul(size).min(n);
        let to = from.saturating_add(size).min(n);
        match order {
            PageOrder::OldestFirst => render(key, msgs[from..to].iter()),
            PageOrder::NewestFirst => render(key, msgs[n - to..n - from].iter().rev()),
        }
    };
    match index {
        Some(index) => {
            if let Some(shifter) = &s.shifter {
                let sel = shift::Selection {
                    index,
                    start,
                    end,
                    start_exclusive: se,
                    end_inclusive: ei,
                };
                shifter.before_page(&s.data, sel, page, size, order);
            }
            s.data.with_range(index, start, end, se, ei, page_of)
        }
        None => s.outbox.with_range(uid, start, end, se, ei, page_of),
    }
}

/// The JSON body of one Conversations page.
pub fn render_page(key: &str, msgs: &[StoredMessage]) -> Vec<u8> {
    render(key, msgs.iter())
}

/// The JSON body of a page of `msgs`, in the iterator's order.
fn render<'a>(key: &str, msgs: impl ExactSizeIterator<Item = &'a StoredMessage>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + msgs.len() * 300);
    out.extend_from_slice(b"{");
    serde_json::to_writer(&mut out, key).expect("writing to a Vec cannot fail");
    out.extend_from_slice(b":[");
    for (i, m) in msgs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &m.wire()).expect("writing to a Vec cannot fail");
    }
    out.extend_from_slice(b"]}");
    out
}

async fn fallback(State(s): St, method: Method, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    s.record(&path, &HashMap::new(), 404, None, false);
    problem(
        StatusCode::NOT_FOUND,
        &format!("sandbox: no route for {method} {path}"),
        &path,
    )
}
