//! The CRM sink: conversation transcripts on the contact's timeline, in HubSpot or BottleCRM.
//!
//! It receives the same ordered unit batches as the file sinks ([`Sink`]). Rows are gathered
//! per user as transcript lines ([`lines`]); the commit of a unit runs four phases, each a
//! function of its own:
//! 1. [`contacts`]: find or create the contact of each user who wrote (E.164 phone from the
//!    WhatsApp id, or the email attribute; the ledger remembers the CRM id);
//! 2. [`plan`]: group the user's messages into sessions ([`session`]) joined to the sessions
//!    the ledger knows, and decide the activities to create (new sessions, new parts) and to
//!    update (sessions that grew);
//! 3. [`write`]: record the creates `pending` in the ledger, send them, then the updates, and
//!    record the answers (a crash in between is resolved by [`recover`] at the next start);
//! 4. [`commit`]: the unit's dead letters (CRM refusals included) and its progress in the
//!    state store, committed together.
//!
//! `dry_run` prints the planned operations as JSONL instead ([`dry_run`]).

pub mod bottlecrm;
mod commit;
pub mod contact;
mod contacts;
mod dry_run;
pub mod http;
pub mod hubspot;
pub mod ledger;
mod lines;
pub mod parts;
mod plan;
mod recover;
pub mod session;
mod write;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

use self::http::CrmHttp;
use self::session::Line;
use super::{Committed, DeadLetters, Sink, SinkEnd, SinkError, UnitInfo};
use crate::model::User;
use crate::secret::Secret;
use crate::state::StateStore;

/// Which CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    /// HubSpot (Communications).
    #[value(name = "hubspot")]
    HubSpot,
    /// BottleCRM (Interactions).
    #[value(name = "bottlecrm")]
    #[serde(rename = "bottlecrm")]
    BottleCrm,
}

impl CrmKind {
    /// `hubspot` / `bottlecrm`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmKind::HubSpot => "hubspot",
            CrmKind::BottleCrm => "bottlecrm",
        }
    }
    /// The environment variable of the token.
    pub fn token_env(self) -> &'static str {
        match self {
            CrmKind::HubSpot => "HUBSPOT_ACCESS_TOKEN",
            CrmKind::BottleCrm => "BOTTLECRM_TOKEN",
        }
    }
}

/// What to do with a user whose contact is not in the CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ContactPolicy {
    /// Create the contact (the default).
    Create,
    /// Leave the user out (counted as skipped).
    Skip,
}

/// The CRM output, validated (`config::crm`): the one set of CRM settings.
#[derive(Debug, Clone)]
pub struct CrmSpec {
    /// Which CRM.
    pub kind: CrmKind,
    /// Its base URL.
    pub base_url: String,
    /// The token (empty until read; empty for a dry run without one). Never printed.
    pub token: Secret,
    /// The token's file, if not in the CRM's environment variable.
    pub token_file: Option<PathBuf>,
    /// A new session starts after this much inactivity, ms.
    pub session_gap_ms: i64,
    /// Create missing contacts, or skip their users.
    pub contact_policy: ContactPolicy,
    /// CRM requests per rolling 10 s at most.
    pub rate_per_10s: u32,
    /// HubSpot channel type for users not on WhatsApp (`SMS`).
    pub other_channel_type: String,
    /// Print planned operations as JSONL on stdout; send nothing, record nothing.
    pub dry_run: bool,
    /// Dead letters and the run report go here.
    pub out_dir: PathBuf,
    /// The state store (ledger, runs).
    pub state_dir: PathBuf,
}

/// The run context the CRM sink needs beyond its spec.
#[derive(Debug, Clone)]
pub struct CrmRun {
    /// The run.
    pub run_id: String,
    /// Bot key (part of session keys).
    pub bot_key: String,
    /// Watermark namespace for incremental runs.
    pub watermarks: Option<String>,
    /// The run's users (names, channels, attributes).
    pub users: Arc<Vec<User>>,
    /// Request timeout.
    pub timeout: Duration,
    /// Retries per request.
    pub max_retries: usize,
}

/// One activity to write: a session part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// Part key: the session key, `-2`, `-3`... for later parts.
    pub key: String,
    /// CRM contact id.
    pub contact_id: String,
    /// HubSpot channel type (`WHATS_APP`, `SMS`).
    pub channel_type: String,
    /// BottleCRM kind (`whatsapp`, `sms`).
    pub kind: String,
    /// `inbound` when the customer opened the session, else `outbound`.
    pub direction: String,
    /// Session start, ms since epoch UTC.
    pub occurred_at_ms: i64,
    /// A one-line title.
    pub subject: String,
    /// The transcript (part).
    pub body: String,
}

/// One input's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// Done; the CRM id.
    Ok(String),
    /// Refused, with the reason.
    Rejected(String),
}

/// CRM counts for the run report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CrmReport {
    /// `hubspot` or `bottlecrm`.
    pub crm: String,
    /// Planned only, nothing sent.
    pub dry_run: bool,
    /// Contacts found in the ledger or the CRM.
    pub contacts_matched: u64,
    /// Contacts created.
    pub contacts_created: u64,
    /// Users skipped: no phone/email, or not found with `contact_policy = skip`.
    pub contacts_skipped: u64,
    /// Activities created (session parts).
    pub activities_created: u64,
    /// Activities updated (sessions that grew).
    pub activities_updated: u64,
    /// Sessions seen that were already in the CRM as they are (each counted once).
    pub activities_unchanged: u64,
    /// Pending creates of an interrupted run found in the CRM.
    pub activities_recovered: u64,
    /// Items the CRM refused (dead-lettered).
    pub rejects: u64,
    /// CRM responses by status.
    pub requests: BTreeMap<String, u64>,
}

/// The CRM's API client.
enum Client {
    HubSpot(hubspot::HubSpot),
    Bottle(bottlecrm::BottleCrm),
}

impl Client {
    fn http(&self) -> &CrmHttp {
        match self {
            Client::HubSpot(h) => &h.http,
            Client::Bottle(b) => &b.http,
        }
    }
}

/// A CRM refusal of one item: (user, item key, reason). Goes to the dead letter.
type Refusal = (String, String, String);

/// A unit being written: its cells and the transcript lines of each user.
type OpenUnit = (Arc<UnitInfo>, BTreeMap<String, Vec<Line>>);

/// The CRM sink of one run.
pub struct CrmSink {
    spec: CrmSpec,
    run: CrmRun,
    /// The ledger's namespace: `<crm>:<base url>`.
    namespace: String,
    run8: String,
    /// Index of each user in `run.users`.
    users: HashMap<String, usize>,
    client: Option<Client>,
    /// The sink thread's own runtime for the CRM's HTTP calls.
    rt: Option<Arc<tokio::runtime::Runtime>>,
    state: StateStore,
    report: CrmReport,
    /// The open unit and its transcript lines per user.
    unit: Option<OpenUnit>,
    /// Users whose contact was already counted in this run.
    counted: HashSet<String>,
    /// Sessions already counted as unchanged in this run (a session spans several windows).
    unchanged: HashSet<String>,
}

impl CrmSink {
    /// The sink over `state` (its ledger tables are created if missing).
    ///
    /// # Errors
    /// [`SinkError::State`] when the ledger's tables cannot be created.
    pub fn new(spec: CrmSpec, run: CrmRun, mut state: StateStore) -> Result<Self, SinkError> {
        ledger::ensure_schema(&mut state)?;
        let users = run
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.channel_user_id.clone(), i))
            .collect();
        Ok(CrmSink {
            namespace: format!(
                "{}:{}",
                spec.kind.as_str(),
                spec.base_url.trim_end_matches('/')
            ),
            report: CrmReport {
                crm: spec.kind.as_str().into(),
                dry_run: spec.dry_run,
                ..CrmReport::default()
            },
            run8: super::run8(&run.run_id),
            spec,
            run,
            users,
            client: None,
            rt: None,
            state,
            unit: None,
            counted: HashSet::new(),
            unchanged: HashSet::new(),
        })
    }

    fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id).map(|&i| &self.run.users[i])
    }

    /// Counts a user's contact once per run.
    fn count_contact(&mut self, user: &str, created: bool) {
        if self.counted.insert(user.to_owned()) {
            if created {
                self.report.contacts_created += 1;
            } else {
                self.report.contacts_matched += 1;
            }
        }
    }

    /// Counts a user as skipped once per run.
    fn count_skipped(&mut self, user: &str) {
        if self.counted.insert(user.to_owned()) {
            self.report.contacts_skipped += 1;
        }
    }

    fn build_client(&mut self) -> Result<(), SinkError> {
        if self.spec.dry_run || self.client.is_some() {
            return Ok(());
        }
        let c = &self.spec;
        let http = CrmHttp::new(
            c.kind.as_str(),
            c.kind.token_env(),
            &c.base_url,
            &c.token,
            c.rate_per_10s,
            self.run.timeout,
            self.run.max_retries,
        )
        .map_err(SinkError::Crashed)?;
        self.client = Some(match c.kind {
            CrmKind::HubSpot => Client::HubSpot(hubspot::HubSpot { http }),
            CrmKind::BottleCrm => Client::Bottle(bottlecrm::BottleCrm { http }),
        });
        Ok(())
    }

    fn runtime(&self) -> Arc<tokio::runtime::Runtime> {
        self.rt.clone().expect("started by Sink::start")
    }
}

impl Sink for CrmSink {
    fn start(&mut self) -> Result<(), SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Crashed(format!("cannot start the CRM runtime: {e}")))?;
        let rt = Arc::new(rt);
        self.rt = Some(rt.clone());
        self.build_client()?;
        rt.block_on(self.recover())
    }

    fn begin_unit(&mut self, unit: Arc<UnitInfo>) -> Result<(), SinkError> {
        self.unit = Some((unit, BTreeMap::new()));
        Ok(())
    }

    fn write(&mut self, rows: RecordBatch) -> Result<(), SinkError> {
        let (_, lines) = self
            .unit
            .as_mut()
            .ok_or_else(|| SinkError::Crashed("a page arrived outside a unit".into()))?;
        lines::collect(&rows, lines);
        Ok(())
    }

    fn commit(&mut self, cells_done: u32, dead: DeadLetters) -> Result<Committed, SinkError> {
        let (info, mut by_user) = self
            .unit
            .take()
            .ok_or_else(|| SinkError::Crashed("EndUnit outside a unit".into()))?;
        let done = (cells_done as usize).min(info.cells.len());
        let committed: HashSet<&str> = info.cells[..done].iter().map(|c| c.user.as_ref()).collect();
        by_user.retain(|u, _| committed.contains(u.as_str()));
        let delivered: u64 = by_user.values().map(|l| l.len() as u64).sum();
        let rt = self.runtime();
        let refused = rt.block_on(self.deliver(by_user))?;
        let Some(refused) = refused else {
            // A dry run: the plan was printed; nothing is recorded.
            return Ok(Committed::default());
        };
        self.commit_unit(&info, done, dead, &refused, delivered)
    }

    fn abort(&mut self) {
        self.unit = None;
    }

    fn finish(mut self: Box<Self>) -> SinkEnd {
        if let Some(c) = self.client.as_ref() {
            self.report.requests = c.http().by_status.lock().expect("stats lock").clone();
        }
        SinkEnd {
            crm: Some(self.report),
            state: Some(self.state),
            rows_uncommitted: 0,
        }
    }
}

impl CrmSink {
    /// Phases 1-3 for the users' lines of a unit; `None` for a dry run (the plan printed),
    /// else the CRM's refusals.
    async fn deliver(
        &mut self,
        by_user: BTreeMap<String, Vec<Line>>,
    ) -> Result<Option<Vec<Refusal>>, SinkError> {
        let mut planned: Vec<String> = Vec::new();
        let mut refused: Vec<Refusal> = Vec::new();
        let wants = self.contact_wants(by_user.keys());
        let contact_ids = self.contacts(wants, &mut planned, &mut refused).await?;
        let work = self.plan(by_user, &contact_ids)?;
        if self.client.is_none() {
            self.print_plan(planned, &work);
            return Ok(None);
        }
        self.write(work, &mut refused).await?;
        Ok(Some(refused))
    }
}

/// The key of part `i` (0-based) of a session.
pub fn part_key(session: &str, i: usize) -> String {
    if i == 0 {
        session.to_owned()
    } else {
        format!("{session}-{}", i + 1)
    }
}

fn part_index(session: &str, part: &str) -> usize {
    part.strip_prefix(session)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .map_or(0, |n| n - 1)
}

fn body_hash(acts: &[Activity]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    for a in acts {
        h.update(a.body.as_bytes());
        h.update(&[0]);
    }
    format!("{:016x}", h.digest())
}
