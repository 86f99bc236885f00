//! The CRM sink: conversation transcripts on the contact's timeline, in HubSpot or BottleCRM.
//!
//! It receives the same ordered stream of unit batches as the file sinks. At the end of each
//! unit it (1) finds or creates the contact of each user who wrote (E.164 phone from the
//! WhatsApp id, or the email attribute; the ledger remembers the CRM id), (2) groups the
//! user's messages into sessions ([`session`]) joined to the sessions the ledger already
//! knows, (3) creates an activity per new session (per part, for long transcripts) and
//! updates the activities of sessions that grew, (4) records all of it in the ledger and the
//! unit's progress in the state store. Per-item CRM rejections go to the dead-letter file with
//! the reason; the rest proceeds. `dry_run` prints the planned operations as JSONL instead.

pub mod bottlecrm;
pub mod contact;
pub mod http;
pub mod hubspot;
pub mod ledger;
pub mod session;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMillisecondType;
use arrow_array::{Array, RecordBatch, StringArray};
use serde::Serialize;
use tokio::sync::mpsc;

use self::contact::ContactWant;
use self::http::{CrmError, CrmHttp};
use self::ledger::{Ledger, SessionRecord};
use self::session::{Line, MessageView, Session, Style};
use super::files::SinkOutcome;
use super::{
    SinkCounters, SinkError, SinkMsg, SinkReport, UnitInfo, dead_letter, sync_parents,
    watermark_moves, write_file,
};
use crate::model::User;
use crate::schema;
use crate::secret::Secret;
use crate::state::{CommitPlan, FileRecord, STAGED_SUFFIX, StateStore};

/// Which CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmKind {
    /// HubSpot (Communications).
    HubSpot,
    /// BottleCRM (Interactions).
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

/// CRM sink settings.
#[derive(Debug, Clone)]
pub struct CrmSinkConfig {
    /// Which CRM.
    pub kind: CrmKind,
    /// Its base URL.
    pub base_url: String,
    /// The token (never printed).
    pub token: Secret,
    /// A new session starts after this much inactivity, ms.
    pub session_gap_ms: i64,
    /// Create missing contacts (`contact_policy = create`), or skip their sessions.
    pub create_contacts: bool,
    /// Print planned operations as JSONL on stdout; send nothing, record nothing.
    pub dry_run: bool,
    /// Requests per rolling 10 s at most.
    pub rate_per_10s: u32,
    /// HubSpot channel type for users not on WhatsApp (`SMS`).
    pub other_channel_type: String,
    /// Dead letters and the run report go here.
    pub out_dir: PathBuf,
    /// The run.
    pub run_id: String,
    /// Bot key (part of session keys).
    pub bot_key: String,
    /// Watermark namespace for incremental runs.
    pub watermark_namespace: Option<String>,
    /// The run's users (names, channels, attributes).
    pub users: Arc<Vec<User>>,
    /// Request timeout.
    pub timeout: Duration,
    /// Retries per request.
    pub max_retries: usize,
    /// Crash tests: abort after this many CRM create batches, before the ledger records them.
    pub crash_after_writes: Option<u64>,
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

/// A known session that grew: its new record, the lines it gained, the parts to update
/// (`index`, activity) and the parts to create.
struct Grown {
    rec: SessionRecord,
    added: Vec<Line>,
    updates: Vec<(usize, Activity)>,
    new_parts: Vec<Activity>,
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

/// Starts the CRM sink thread (it runs its own single-threaded async runtime for HTTP).
pub fn spawn(
    config: CrmSinkConfig,
    state: StateStore,
    counters: Arc<SinkCounters>,
    capacity: usize,
) -> (mpsc::Sender<SinkMsg>, std::thread::JoinHandle<SinkOutcome>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let handle = std::thread::Builder::new()
        .name("engati-etl-crm".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            let mut sink = CrmSink::new(config, state, counters);
            let error = rt.block_on(sink.run(rx)).err();
            let mut report = sink.report;
            if let Some(c) = sink.client.as_ref() {
                sink.crm_report.requests = c.http().by_status.lock().expect("stats lock").clone();
            }
            report.crm = Some(sink.crm_report);
            SinkOutcome {
                report,
                state: sink.state,
                error,
            }
        })
        .expect("spawning a thread");
    (tx, handle)
}

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

struct Open {
    info: Arc<UnitInfo>,
    lines: BTreeMap<String, Vec<Line>>,
    dead: Vec<u8>,
    dead_rows: u64,
}

struct CrmSink {
    config: CrmSinkConfig,
    namespace: String,
    client: Option<Client>,
    state: StateStore,
    counters: Arc<SinkCounters>,
    report: SinkReport,
    crm_report: CrmReport,
    unit: Option<Open>,
    users: HashMap<String, usize>,
    run8: String,
    /// Users whose contact was already counted in this run.
    counted: HashSet<String>,
    /// Sessions already counted as unchanged in this run (a session spans several windows).
    unchanged: HashSet<String>,
    /// Crash tests: abort after this many CRM write batches, before the ledger records them.
    crash_after_writes: Option<u64>,
}

fn crm_failed(e: CrmError) -> SinkError {
    SinkError::Crm(e)
}

impl CrmSink {
    fn new(config: CrmSinkConfig, state: StateStore, counters: Arc<SinkCounters>) -> Self {
        let users = config
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.channel_user_id.clone(), i))
            .collect();
        let crash_after_writes = config.crash_after_writes;
        CrmSink {
            namespace: format!(
                "{}:{}",
                config.kind.as_str(),
                config.base_url.trim_end_matches('/')
            ),
            crm_report: CrmReport {
                crm: config.kind.as_str().into(),
                dry_run: config.dry_run,
                ..CrmReport::default()
            },
            run8: config
                .run_id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(8)
                .collect(),
            config,
            client: None,
            state,
            counters,
            report: SinkReport::default(),
            unit: None,
            users,
            counted: HashSet::new(),
            unchanged: HashSet::new(),
            crash_after_writes,
        }
    }

    /// Counts a user's contact once per run.
    fn count_contact(&mut self, user: &str, created: bool) {
        if self.counted.insert(user.to_owned()) {
            if created {
                self.crm_report.contacts_created += 1;
            } else {
                self.crm_report.contacts_matched += 1;
            }
        }
    }

    fn build_client(&mut self) -> Result<(), SinkError> {
        if self.config.dry_run || self.client.is_some() {
            return Ok(());
        }
        let c = &self.config;
        let http = CrmHttp::new(
            c.kind.as_str(),
            c.kind.token_env(),
            &c.base_url,
            &c.token,
            c.rate_per_10s,
            c.timeout,
            c.max_retries,
        )
        .map_err(SinkError::Crashed)?;
        self.client = Some(match c.kind {
            CrmKind::HubSpot => Client::HubSpot(hubspot::HubSpot { http }),
            CrmKind::BottleCrm => Client::Bottle(bottlecrm::BottleCrm { http }),
        });
        Ok(())
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<SinkMsg>) -> Result<(), SinkError> {
        self.build_client()?;
        self.recover().await?;
        while let Some(msg) = rx.recv().await {
            match msg {
                SinkMsg::BeginUnit(info) => {
                    self.unit = Some(Open {
                        info,
                        lines: BTreeMap::new(),
                        dead: Vec::new(),
                        dead_rows: 0,
                    })
                }
                SinkMsg::Page {
                    cell,
                    rows,
                    rejects,
                } => {
                    let run_id = self.config.run_id.clone();
                    let Some(u) = self.unit.as_mut() else {
                        return Err(SinkError::Crashed("a page arrived outside a unit".into()));
                    };
                    if let Some(c) = u.info.cells.get(cell as usize) {
                        for r in &rejects {
                            dead_letter::encode(&mut u.dead, &run_id, &c.user, c.window, r);
                            u.dead_rows += 1;
                        }
                    }
                    if let Some(b) = rows {
                        collect_lines(&b, &mut u.lines);
                    }
                }
                SinkMsg::EndUnit { cells_done } => self.end_unit(cells_done).await?,
                SinkMsg::AbortUnit => self.unit = None,
                SinkMsg::WriteUsers { .. } => {}
            }
        }
        Ok(())
    }

    /// Resolves creates that an interrupted run sent without learning the answer.
    async fn recover(&mut self) -> Result<(), SinkError> {
        let Some(client) = self.client.as_ref() else {
            return Ok(());
        };
        let pending = Ledger::new(&mut self.state, &self.namespace).pending()?;
        for mut rec in pending {
            let contact_id = self
                .config
                .users
                .iter()
                .find(|u| u.channel_user_id == rec.user)
                .and_then(contact::want)
                .and_then(|w| w.key());
            let contact_id = match contact_id {
                Some(k) => Ledger::new(&mut self.state, &self.namespace).contact(&k)?,
                None => None,
            };
            let mut all = true;
            for (i, id) in rec.crm_ids.iter_mut().enumerate() {
                if !id.is_empty() {
                    continue;
                }
                let key = part_key(&rec.key, i);
                let found = match (client, &contact_id) {
                    (Client::HubSpot(h), _) => h.find_activity(&key).await.map_err(crm_failed)?,
                    (Client::Bottle(b), Some(c)) => {
                        b.find_activity(c, &key).await.map_err(crm_failed)?
                    }
                    (Client::Bottle(_), None) => None,
                };
                match found {
                    Some(f) => {
                        *id = f;
                        self.crm_report.activities_recovered += 1;
                    }
                    None => all = false,
                }
            }
            // Found in full: done. Otherwise the missing parts are created when the session is
            // next seen (its body hash is cleared so it counts as changed).
            if all {
                rec.status = "done".into();
            } else {
                rec.status = "lost".into();
                rec.body_hash.clear();
            }
            Ledger::new(&mut self.state, &self.namespace).save(&[(rec, Vec::new())])?;
        }
        Ok(())
    }

    fn channel_of(&self, user: &str) -> (String, String, String) {
        let channel = self
            .users
            .get(user)
            .and_then(|&i| self.config.users[i].channel.clone())
            .unwrap_or_default();
        if channel.eq_ignore_ascii_case("whatsapp") {
            ("WhatsApp".into(), "WHATS_APP".into(), "whatsapp".into())
        } else {
            let shown = if channel.is_empty() {
                "Chat".to_string()
            } else {
                capitalize(&channel)
            };
            (shown, self.config.other_channel_type.clone(), "sms".into())
        }
    }

    /// Ledger contact ids of `wants`, finding and creating the missing ones.
    async fn contacts(
        &mut self,
        wants: Vec<ContactWant>,
        out: &mut Vec<String>,
        dead: &mut Vec<(String, String, String)>,
    ) -> Result<HashMap<String, String>, SinkError> {
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut missing: Vec<ContactWant> = Vec::new();
        {
            let mut l = Ledger::new(&mut self.state, &self.namespace);
            for w in wants {
                let Some(k) = w.key() else { continue };
                match l.contact(&k)? {
                    Some(id) => {
                        ids.insert(w.user.clone(), id);
                    }
                    None => missing.push(w),
                }
            }
        }
        let known: Vec<String> = ids.keys().cloned().collect();
        for u in known {
            self.count_contact(&u, false);
        }
        if missing.is_empty() {
            return Ok(ids);
        }
        let Some(client) = self.client.as_ref() else {
            // Dry run: say what would happen.
            for w in missing {
                let op = serde_json::json!({"op": if self.config.create_contacts { "contact.find_or_create" } else { "contact.find" },
                    "key": w.key(), "phone": w.phone, "email": w.email, "first_name": w.first_name, "last_name": w.last_name});
                out.push(op.to_string());
                ids.insert(
                    w.user.clone(),
                    format!("planned:{}", w.key().unwrap_or_default()),
                );
            }
            return Ok(ids);
        };
        let mut found: HashMap<String, String> = HashMap::new();
        let mut created: HashSet<String> = HashSet::new();
        let mut rejected: Vec<(String, String)> = Vec::new();
        match client {
            Client::HubSpot(h) => {
                found = h.find_contacts(&missing).await.map_err(crm_failed)?;
                let to_create: Vec<ContactWant> = missing
                    .iter()
                    .filter(|w| !resolved(w, &found))
                    .cloned()
                    .collect();
                if self.config.create_contacts && !to_create.is_empty() {
                    for (k, r) in h.create_contacts(&to_create).await.map_err(crm_failed)? {
                        match r {
                            ItemResult::Ok(id) => {
                                created.insert(k.clone());
                                found.insert(k, id);
                            }
                            ItemResult::Rejected(why) => rejected.push((k, why)),
                        }
                    }
                }
            }
            Client::Bottle(b) => {
                for w in &missing {
                    let Some(k) = w.key() else { continue };
                    match b.find_contact(w).await.map_err(crm_failed)? {
                        Some(id) => {
                            found.insert(k, id);
                        }
                        None if self.config.create_contacts => {
                            match b.create_contact(w).await.map_err(crm_failed)? {
                                ItemResult::Ok(id) => {
                                    created.insert(k.clone());
                                    found.insert(k, id);
                                }
                                ItemResult::Rejected(why) => rejected.push((k, why)),
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        let mut rows = Vec::new();
        for w in &missing {
            let id = w.key().and_then(|k| found.get(&k).cloned()).or_else(|| {
                w.email
                    .as_ref()
                    .and_then(|e| found.get(&format!("email:{e}")).cloned())
            });
            match id {
                Some(id) => {
                    let was_created = w.key().is_some_and(|k| created.contains(&k));
                    self.count_contact(&w.user, was_created);
                    rows.push((w.key().unwrap_or_default(), id.clone(), w.user.clone()));
                    ids.insert(w.user.clone(), id);
                }
                None => {
                    if self.counted.insert(w.user.clone()) {
                        self.crm_report.contacts_skipped += 1;
                    }
                }
            }
        }
        for (k, why) in rejected {
            let user = missing
                .iter()
                .find(|w| w.key().as_deref() == Some(k.as_str()))
                .map(|w| w.user.clone())
                .unwrap_or_default();
            dead.push((user, format!("contact {k}"), why));
        }
        Ledger::new(&mut self.state, &self.namespace).set_contacts(&rows)?;
        Ok(ids)
    }

    async fn end_unit(&mut self, cells_done: u32) -> Result<(), SinkError> {
        let Some(mut unit) = self.unit.take() else {
            return Err(SinkError::Crashed("EndUnit outside a unit".into()));
        };
        let done = (cells_done as usize).min(unit.info.cells.len());
        let committed: HashSet<&str> = unit.info.cells[..done]
            .iter()
            .map(|c| c.user.as_ref())
            .collect();
        unit.lines.retain(|u, _| committed.contains(u.as_str()));
        let mut plan_out: Vec<String> = Vec::new();
        let mut crm_dead: Vec<(String, String, String)> = Vec::new(); // (user, key, reason)

        // 1. Contacts.
        let delivered: u64 = unit.lines.values().map(|l| l.len() as u64).sum();
        let mut wants = Vec::new();
        for user in unit.lines.keys() {
            match self
                .users
                .get(user)
                .and_then(|&i| contact::want(&self.config.users[i]))
            {
                Some(w) => wants.push(w),
                None => {
                    // No phone (WhatsApp id) nor email attribute: no contact to put it on.
                    if self.counted.insert(user.clone()) {
                        self.crm_report.contacts_skipped += 1;
                        tracing::info!(user = %user, "No phone or email to match a CRM contact; skipped.");
                    }
                }
            }
        }
        let contact_ids = self.contacts(wants, &mut plan_out, &mut crm_dead).await?;

        // 2. Sessions -> activities to create or update.
        let gap = self.config.session_gap_ms;
        let mut creates: Vec<(SessionRecord, Vec<Line>, Vec<Activity>)> = Vec::new();
        let mut updates: Vec<Grown> = Vec::new();
        let bot_key = self.config.bot_key.clone();
        for (user, mut lines) in std::mem::take(&mut unit.lines) {
            lines.sort_by(|a, b| (a.sent_at_ms, &a.message_id).cmp(&(b.sent_at_ms, &b.message_id)));
            let Some(contact_id) = contact_ids.get(&user).cloned() else {
                // Skipped (counted in contacts_skipped; a refused contact is a reject).
                continue;
            };
            let (first, last) = (
                lines.first().map_or(0, |l| l.sent_at_ms),
                lines.last().map_or(0, |l| l.sent_at_ms),
            );
            let near = Ledger::new(&mut self.state, &self.namespace)
                .sessions_near(&user, first, last, gap)?;
            let known: Vec<_> = near.iter().map(SessionRecord::known).collect();
            let session::Assignment { joined, fresh } = session::assign(lines, &known, gap);
            let (shown, channel_type, kind) = self.channel_of(&user);
            for (key, new_lines) in joined {
                let rec = near
                    .iter()
                    .find(|r| r.key == key)
                    .cloned()
                    .expect("assigned to a known session");
                let old = Ledger::new(&mut self.state, &self.namespace).lines(&key)?;
                let seen: HashSet<&str> = old.iter().map(|l| l.message_id.as_str()).collect();
                let added: Vec<Line> = new_lines
                    .into_iter()
                    .filter(|l| !seen.contains(l.message_id.as_str()))
                    .collect();
                if added.is_empty() && rec.status == "done" && !rec.body_hash.is_empty() {
                    if self.unchanged.insert(key.clone()) {
                        self.crm_report.activities_unchanged += 1;
                    }
                    continue;
                }
                let mut all = old.clone();
                all.extend(added.iter().cloned());
                all.sort_by(|a, b| {
                    (a.sent_at_ms, &a.message_id).cmp(&(b.sent_at_ms, &b.message_id))
                });
                let s = Session {
                    key: key.clone(),
                    lines: all,
                };
                let acts = self.activities(&s, &contact_id, &shown, &channel_type, &kind);
                let hash = body_hash(&acts);
                if hash == rec.body_hash && rec.status == "done" {
                    if self.unchanged.insert(key.clone()) {
                        self.crm_report.activities_unchanged += 1;
                    }
                    continue;
                }
                let mut upd = Vec::new();
                let mut new_parts = Vec::new();
                for (i, a) in acts.into_iter().enumerate() {
                    match rec.crm_ids.get(i).filter(|id| !id.is_empty()) {
                        Some(_) => upd.push((i, a)),
                        None => new_parts.push(a),
                    }
                }
                let next = SessionRecord {
                    start_ms: s.start_ms(),
                    end_ms: s.end_ms(),
                    messages: s.lines.len() as u64,
                    body_hash: hash,
                    ..rec
                };
                updates.push(Grown {
                    rec: next,
                    added,
                    updates: upd,
                    new_parts,
                });
            }
            for fresh_lines in fresh {
                let key = session::session_key(&bot_key, &user, &fresh_lines[0].message_id);
                let s = Session {
                    key: key.clone(),
                    lines: fresh_lines,
                };
                let acts = self.activities(&s, &contact_id, &shown, &channel_type, &kind);
                let rec = SessionRecord {
                    key,
                    user: user.clone(),
                    start_ms: s.start_ms(),
                    end_ms: s.end_ms(),
                    messages: s.lines.len() as u64,
                    body_hash: body_hash(&acts),
                    crm_ids: vec![String::new(); acts.len()],
                    status: "pending".into(),
                };
                creates.push((rec, s.lines, acts));
            }
        }

        // 3. Write: creates (recorded pending first), then updates.
        if self.client.is_none() {
            for (_, _, acts) in &creates {
                for a in acts {
                    plan_out.push(serde_json::json!({"op": "activity.create", "key": a.key, "contact": a.contact_id, "occurred_at": crate::time::rfc3339_ms(a.occurred_at_ms), "subject": a.subject, "body_chars": a.body.chars().count()}).to_string());
                    self.crm_report.activities_created += 1;
                }
            }
            for Grown {
                rec,
                updates: upd,
                new_parts,
                ..
            } in &updates
            {
                for (i, a) in upd {
                    plan_out.push(serde_json::json!({"op": "activity.update", "key": a.key, "id": rec.crm_ids[*i], "body_chars": a.body.chars().count()}).to_string());
                    self.crm_report.activities_updated += 1;
                }
                for a in new_parts {
                    plan_out.push(serde_json::json!({"op": "activity.create", "key": a.key, "contact": a.contact_id, "body_chars": a.body.chars().count()}).to_string());
                    self.crm_report.activities_created += 1;
                }
            }
            let mut stdout = std::io::stdout().lock();
            for l in &plan_out {
                use std::io::Write;
                let _ = writeln!(stdout, "{l}");
            }
            self.report.cells_committed += done as u64;
            self.counters
                .cells
                .fetch_add(done as u64, Ordering::Relaxed);
            return Ok(());
        }
        let pending: Vec<(SessionRecord, Vec<Line>)> = creates
            .iter()
            .map(|(r, l, _)| (r.clone(), l.clone()))
            .collect();
        Ledger::new(&mut self.state, &self.namespace).save(&pending)?;
        let mut saved: Vec<(SessionRecord, Vec<Line>)> = Vec::new();
        let mut to_create: Vec<Activity> = Vec::new();
        for (_, _, acts) in &creates {
            to_create.extend(acts.iter().cloned());
        }
        for Grown { new_parts, .. } in &updates {
            to_create.extend(new_parts.iter().cloned());
        }
        let created = self.create(&to_create).await?;
        if !to_create.is_empty()
            && let Some(n) = self.crash_after_writes.as_mut()
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // Fault injection for crash tests: the CRM has the activities, the ledger
                // still says pending.
                eprintln!("engati-etl: crash injected after a CRM write");
                std::process::abort();
            }
        }
        let mut to_update: Vec<(String, Activity)> = Vec::new();
        for Grown {
            rec, updates: upd, ..
        } in &updates
        {
            for (i, a) in upd {
                to_update.push((rec.crm_ids[*i].clone(), a.clone()));
            }
        }
        let updated = self.update(&to_update).await?;
        for (mut rec, lines, acts) in creates {
            let mut ok = true;
            for (i, a) in acts.iter().enumerate() {
                match created.get(&a.key) {
                    Some(ItemResult::Ok(id)) => {
                        rec.crm_ids[i].clone_from(id);
                        self.crm_report.activities_created += 1;
                    }
                    Some(ItemResult::Rejected(why)) => {
                        ok = false;
                        crm_dead.push((rec.user.clone(), a.key.clone(), why.clone()));
                    }
                    None => ok = false,
                }
            }
            // A rejected part leaves the session to be retried next run (hash cleared).
            rec.status = if ok { "done".into() } else { "lost".into() };
            if !ok {
                rec.body_hash.clear();
            }
            saved.push((rec, lines));
        }
        for Grown {
            mut rec,
            added,
            updates: upd,
            new_parts,
        } in updates
        {
            let mut ok = true;
            for (i, a) in upd {
                match updated.get(&a.key) {
                    Some(ItemResult::Ok(_)) => self.crm_report.activities_updated += 1,
                    Some(ItemResult::Rejected(why)) => {
                        ok = false;
                        crm_dead.push((rec.user.clone(), a.key.clone(), why.clone()));
                    }
                    None => ok = false,
                }
                let _ = i;
            }
            for a in new_parts {
                let i = part_index(&rec.key, &a.key);
                match created.get(&a.key) {
                    Some(ItemResult::Ok(id)) => {
                        if rec.crm_ids.len() <= i {
                            rec.crm_ids.resize(i + 1, String::new());
                        }
                        rec.crm_ids[i].clone_from(id);
                        self.crm_report.activities_created += 1;
                    }
                    Some(ItemResult::Rejected(why)) => {
                        ok = false;
                        crm_dead.push((rec.user.clone(), a.key.clone(), why.clone()));
                    }
                    None => ok = false,
                }
            }
            rec.status = "done".into();
            if !ok {
                rec.body_hash.clear();
            }
            saved.push((rec, added));
        }
        Ledger::new(&mut self.state, &self.namespace).save(&saved)?;

        // 4. Dead letters and the unit's progress, committed together.
        for (user, key, why) in &crm_dead {
            let line = serde_json::json!({"run_id": self.config.run_id, "channel_user_id": user, "window_start_ms": unit.info.window.start_ms,
                "window_end_ms": unit.info.window.end_ms, "session_key": key, "reason": why, "crm": self.config.kind.as_str()});
            unit.dead.extend_from_slice(line.to_string().as_bytes());
            unit.dead.push(b'\n');
            unit.dead_rows += 1;
        }
        self.crm_report.rejects += crm_dead.iter().filter(|(_, k, _)| !k.is_empty()).count() as u64;
        let mut plan = CommitPlan {
            unit_progress: Some((unit.info.key.0.clone(), unit.info.first_cell + done as u32)),
            ..Default::default()
        };
        if let Some(ns) = &self.config.watermark_namespace {
            plan.watermarks = watermark_moves(ns, &unit.info.cells[..done]);
        }
        if !unit.dead.is_empty() {
            let stem = format!(
                "part-{}-{:05}-{}",
                unit.info.key.0, unit.info.first_cell, self.run8
            );
            let staged = format!("_dead_letter/.{stem}.jsonl.{}{STAGED_SUFFIX}", self.run8);
            let fin = format!("_dead_letter/{stem}.jsonl");
            // Durable (file and directory entry) before the journal refers to it.
            write_file(&self.config.out_dir.join(&staged), &unit.dead)?;
            sync_parents(&self.config.out_dir, std::iter::once(staged.as_str()))?;
            plan.adds.push((staged, fin.clone()));
            plan.records.push(FileRecord {
                path: fin,
                stream: "dead_letter".into(),
                unit_key: unit.info.key.0.clone(),
                cells_from: unit.info.first_cell,
                cells_to: unit.info.first_cell + done as u32,
                min_user: String::new(),
                max_user: String::new(),
                min_ms: unit.info.window.start_ms,
                max_ms: unit.info.window.end_ms,
                rows: unit.dead_rows,
                bytes: unit.dead.len() as u64,
            });
        }
        self.state.commit(
            &self.config.run_id,
            &plan,
            &self.config.out_dir,
            crate::time::now_ms(),
        )?;
        self.report.rejects_written += unit.dead_rows;
        self.report.rows_written += delivered;
        self.report.units_committed += 1;
        self.report.cells_committed += done as u64;
        self.counters
            .committed(delivered, done as u64, unit.dead_rows);
        Ok(())
    }

    fn activities(
        &self,
        s: &Session,
        contact_id: &str,
        shown: &str,
        channel_type: &str,
        kind: &str,
    ) -> Vec<Activity> {
        let (style, max) = match self.config.kind {
            CrmKind::HubSpot => (Style::Html, hubspot::MAX_BODY_CHARS),
            CrmKind::BottleCrm => (Style::Plain, bottlecrm::MAX_BODY_CHARS),
        };
        let bodies = session::render(shown, s, style, max);
        let direction = if s
            .lines
            .first()
            .is_some_and(|l| l.text.starts_with("Customer:"))
        {
            "inbound"
        } else {
            "outbound"
        };
        let n = bodies.len();
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Activity {
                key: part_key(&s.key, i),
                contact_id: contact_id.to_owned(),
                channel_type: channel_type.to_owned(),
                kind: kind.to_owned(),
                direction: direction.into(),
                occurred_at_ms: s.start_ms(),
                subject: format!(
                    "Engati {shown} chat {} UTC, {} messages{}",
                    &crate::time::rfc3339_ms(s.start_ms())[..16].replace('T', " "),
                    s.lines.len(),
                    if n > 1 {
                        format!(", part {} of {n}", i + 1)
                    } else {
                        String::new()
                    }
                ),
                body,
            })
            .collect()
    }

    async fn create(
        &mut self,
        acts: &[Activity],
    ) -> Result<HashMap<String, ItemResult>, SinkError> {
        let mut out = HashMap::new();
        if acts.is_empty() {
            return Ok(out);
        }
        match self.client.as_ref() {
            Some(Client::HubSpot(h)) => {
                out.extend(h.create_activities(acts).await.map_err(crm_failed)?)
            }
            Some(Client::Bottle(b)) => {
                for a in acts {
                    out.insert(
                        a.key.clone(),
                        b.create_activity(a).await.map_err(crm_failed)?,
                    );
                }
            }
            None => {}
        }
        Ok(out)
    }

    async fn update(
        &mut self,
        acts: &[(String, Activity)],
    ) -> Result<HashMap<String, ItemResult>, SinkError> {
        let mut out = HashMap::new();
        if acts.is_empty() {
            return Ok(out);
        }
        match self.client.as_ref() {
            Some(Client::HubSpot(h)) => {
                out.extend(h.update_activities(acts).await.map_err(crm_failed)?)
            }
            Some(Client::Bottle(b)) => {
                for (id, a) in acts {
                    out.insert(
                        a.key.clone(),
                        b.update_activity(id, a).await.map_err(crm_failed)?,
                    );
                }
            }
            None => {}
        }
        Ok(out)
    }
}

fn resolved(w: &ContactWant, found: &HashMap<String, String>) -> bool {
    w.key().is_some_and(|k| found.contains_key(&k))
        || w.email
            .as_ref()
            .is_some_and(|e| found.contains_key(&format!("email:{e}")))
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

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Appends a batch's rows as transcript lines, per user, in order.
fn collect_lines(b: &RecordBatch, out: &mut BTreeMap<String, Vec<Line>>) {
    let s = |name: &str| b.column_by_name(name).map(|c| c.as_string::<i32>().clone());
    let (
        Some(id),
        Some(user),
        Some(sender),
        Some(dir),
        Some(kind),
        Some(text),
        Some(url),
        Some(mime),
    ) = (
        s(schema::MESSAGE_ID),
        s(schema::CHANNEL_USER_ID),
        s(schema::SENDER),
        s(schema::DIRECTION),
        s(schema::MESSAGE_TYPE),
        s(schema::TEXT),
        s(schema::FILE_URL),
        s(schema::FILE_MIME_TYPE),
    )
    else {
        return;
    };
    let Some(sent) = b
        .column_by_name(schema::SENT_AT)
        .map(|c| c.as_primitive::<TimestampMillisecondType>().clone())
    else {
        return;
    };
    fn opt(a: &StringArray, i: usize) -> Option<&str> {
        (!a.is_null(i)).then(|| a.value(i))
    }
    for i in 0..b.num_rows() {
        let view = MessageView {
            message_id: id.value(i),
            sent_at_ms: sent.value(i),
            sender: opt(&sender, i),
            direction: dir.value(i),
            message_type: opt(&kind, i),
            text: opt(&text, i),
            file_url: opt(&url, i),
            file_mime_type: opt(&mime, i),
        };
        out.entry(user.value(i).to_owned())
            .or_default()
            .push(session::line_of(&view));
    }
}
