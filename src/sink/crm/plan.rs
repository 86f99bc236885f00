//! Phase 2 of a CRM commit: the unit's lines of each user grouped into sessions, joined to the
//! sessions the ledger knows (a message within `session_gap` of a known session joins it; two
//! known sessions are never merged), and turned into the activities to create (new sessions,
//! parts a grown session gained) and to update (parts whose body changed).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::ledger::{Ledger, SessionRecord};
use super::session::{self, Line, Session, Style};
use super::{Activity, CrmKind, CrmSink, body_hash, bottlecrm, hubspot, part_key};
use crate::sink::SinkError;

/// A session seen for the first time: its ledger record (`pending`), lines and activities.
pub(super) struct Fresh {
    pub rec: SessionRecord,
    pub lines: Vec<Line>,
    pub acts: Vec<Activity>,
}

/// A known session that grew: its new record, the lines it gained, the parts to update
/// (`index`, activity) and the parts to create.
pub(super) struct Grown {
    pub rec: SessionRecord,
    pub added: Vec<Line>,
    pub updates: Vec<(usize, Activity)>,
    pub new_parts: Vec<Activity>,
}

/// What a unit's commit writes to the CRM.
#[derive(Default)]
pub(super) struct Work {
    pub creates: Vec<Fresh>,
    pub grown: Vec<Grown>,
}

/// How a user's channel shows: (name in titles, HubSpot channel type, BottleCRM kind).
struct Channel {
    shown: String,
    hubspot_type: String,
    kind: String,
}

impl CrmSink {
    /// Phase 2 for the users' lines; users without a contact id are left out (already counted).
    pub(super) fn plan(
        &mut self,
        by_user: BTreeMap<String, Vec<Line>>,
        contact_ids: &HashMap<String, String>,
    ) -> Result<Work, SinkError> {
        let gap = self.spec.session_gap_ms;
        let mut work = Work::default();
        for (user, mut lines) in by_user {
            session::sort_lines(&mut lines);
            let Some(contact_id) = contact_ids.get(&user) else {
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
            let channel = self.channel_of(&user);
            for (key, new_lines) in joined {
                let rec = near
                    .iter()
                    .find(|r| r.key == key)
                    .cloned()
                    .expect("assigned to a known session");
                if let Some(g) = self.grow(rec, new_lines, contact_id, &channel)? {
                    work.grown.push(g);
                }
            }
            for lines in fresh {
                work.creates
                    .push(self.fresh(&user, lines, contact_id, &channel));
            }
        }
        Ok(work)
    }

    /// A known session with (possibly) new lines: `None` when nothing changed.
    fn grow(
        &mut self,
        rec: SessionRecord,
        new_lines: Vec<Line>,
        contact_id: &str,
        channel: &Channel,
    ) -> Result<Option<Grown>, SinkError> {
        let key = rec.key.clone();
        let old = Ledger::new(&mut self.state, &self.namespace).lines(&key)?;
        let seen: HashSet<&str> = old.iter().map(|l| l.message_id.as_str()).collect();
        let added: Vec<Line> = new_lines
            .into_iter()
            .filter(|l| !seen.contains(l.message_id.as_str()))
            .collect();
        if added.is_empty() && rec.status == "done" && !rec.body_hash.is_empty() {
            self.count_unchanged(&key);
            return Ok(None);
        }
        let mut all = old.clone();
        all.extend(added.iter().cloned());
        session::sort_lines(&mut all);
        let s = Session {
            key: key.clone(),
            lines: all,
        };
        let acts = self.activities(&s, contact_id, channel);
        let hash = body_hash(&acts);
        if hash == rec.body_hash && rec.status == "done" {
            self.count_unchanged(&key);
            return Ok(None);
        }
        let mut updates = Vec::new();
        let mut new_parts = Vec::new();
        for (i, a) in acts.into_iter().enumerate() {
            match rec.crm_ids.get(i).filter(|id| !id.is_empty()) {
                Some(_) => updates.push((i, a)),
                None => new_parts.push(a),
            }
        }
        Ok(Some(Grown {
            rec: SessionRecord {
                start_ms: s.start_ms(),
                end_ms: s.end_ms(),
                messages: s.lines.len() as u64,
                body_hash: hash,
                ..rec
            },
            added,
            updates,
            new_parts,
        }))
    }

    /// A new session of `user` starting with `lines[0]`.
    fn fresh(&self, user: &str, lines: Vec<Line>, contact_id: &str, channel: &Channel) -> Fresh {
        let key = session::session_key(&self.run.bot_key, user, &lines[0].message_id);
        let s = Session {
            key: key.clone(),
            lines,
        };
        let acts = self.activities(&s, contact_id, channel);
        let rec = SessionRecord {
            key,
            user: user.to_owned(),
            start_ms: s.start_ms(),
            end_ms: s.end_ms(),
            messages: s.lines.len() as u64,
            body_hash: body_hash(&acts),
            crm_ids: vec![String::new(); acts.len()],
            status: "pending".into(),
        };
        Fresh {
            rec,
            lines: s.lines,
            acts,
        }
    }

    fn count_unchanged(&mut self, key: &str) {
        if self.unchanged.insert(key.to_owned()) {
            self.report.activities_unchanged += 1;
        }
    }

    fn channel_of(&self, user: &str) -> Channel {
        let channel = self
            .user(user)
            .and_then(|u| u.channel.clone())
            .unwrap_or_default();
        if channel.eq_ignore_ascii_case("whatsapp") {
            return Channel {
                shown: "WhatsApp".into(),
                hubspot_type: "WHATS_APP".into(),
                kind: "whatsapp".into(),
            };
        }
        let shown = if channel.is_empty() {
            "Chat".to_string()
        } else {
            capitalize(&channel)
        };
        Channel {
            shown,
            hubspot_type: self.spec.other_channel_type.clone(),
            kind: "sms".into(),
        }
    }

    /// The activities (one per transcript part) of a session.
    fn activities(&self, s: &Session, contact_id: &str, channel: &Channel) -> Vec<Activity> {
        let (style, max) = match self.spec.kind {
            CrmKind::HubSpot => (Style::Html, hubspot::MAX_BODY_CHARS),
            CrmKind::BottleCrm => (Style::Plain, bottlecrm::MAX_BODY_CHARS),
        };
        let shown = &channel.shown;
        let bodies = session::render(shown, s, style, max);
        let inbound = s
            .lines
            .first()
            .is_some_and(|l| l.text.starts_with("Customer:"));
        let n = bodies.len();
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Activity {
                key: part_key(&s.key, i),
                contact_id: contact_id.to_owned(),
                channel_type: channel.hubspot_type.clone(),
                kind: channel.kind.clone(),
                direction: if inbound { "inbound" } else { "outbound" }.into(),
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
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
