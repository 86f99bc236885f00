//! Phase 3 of a CRM commit: the writes. New sessions are recorded `pending` in the ledger
//! before their activities are created (so a crash between the CRM's answer and the ledger is
//! resolved by looking the key up, never by creating it twice); then the creates, the
//! updates, and the ledger records of what the CRM answered. A refused part leaves its session
//! to be retried next run (its body hash cleared) and goes to the dead letter.

use std::collections::HashMap;

use super::ledger::{Ledger, SessionRecord};
use super::plan::{Fresh, Grown, Work};
use super::session::Line;
use super::{Activity, Client, CrmSink, ItemResult, Refusal, part_index};
use crate::sink::SinkError;

/// The CRM's answers by activity key.
type Answers = HashMap<String, ItemResult>;

impl CrmSink {
    /// Sends `work`; refusals are added to `refused`.
    pub(super) async fn write(
        &mut self,
        work: Work,
        refused: &mut Vec<Refusal>,
    ) -> Result<(), SinkError> {
        let pending: Vec<(SessionRecord, Vec<Line>)> = work
            .creates
            .iter()
            .map(|f| (f.rec.clone(), f.lines.clone()))
            .collect();
        Ledger::new(&mut self.state, &self.namespace).save(&pending)?;
        let to_create: Vec<Activity> = work
            .creates
            .iter()
            .flat_map(|f| f.acts.iter().cloned())
            .chain(work.grown.iter().flat_map(|g| g.new_parts.iter().cloned()))
            .collect();
        let created = self.create(&to_create).await?;
        if !to_create.is_empty() {
            fail::fail_point!("crm::after_create", |_| crate::hooks::crash(
                "after a CRM write"
            ));
        }
        let to_update: Vec<(String, Activity)> = work
            .grown
            .iter()
            .flat_map(|g| {
                g.updates
                    .iter()
                    .map(|(i, a)| (g.rec.crm_ids[*i].clone(), a.clone()))
            })
            .collect();
        let updated = self.update(&to_update).await?;
        let mut saved = Vec::new();
        for f in work.creates {
            saved.push(self.settle_fresh(f, &created, refused));
        }
        for g in work.grown {
            saved.push(self.settle_grown(g, &created, &updated, refused));
        }
        Ledger::new(&mut self.state, &self.namespace).save(&saved)?;
        Ok(())
    }

    /// A new session's record once the CRM answered its creates.
    fn settle_fresh(
        &mut self,
        Fresh {
            mut rec,
            lines,
            acts,
        }: Fresh,
        created: &Answers,
        refused: &mut Vec<Refusal>,
    ) -> (SessionRecord, Vec<Line>) {
        let mut ok = true;
        for (i, a) in acts.iter().enumerate() {
            match created.get(&a.key) {
                Some(ItemResult::Ok(id)) => {
                    rec.crm_ids[i].clone_from(id);
                    self.report.activities_created += 1;
                }
                Some(ItemResult::Rejected(why)) => {
                    ok = false;
                    refused.push((rec.user.clone(), a.key.clone(), why.clone()));
                }
                None => ok = false,
            }
        }
        rec.status = if ok { "done".into() } else { "lost".into() };
        if !ok {
            rec.body_hash.clear();
        }
        (rec, lines)
    }

    /// A grown session's record once the CRM answered its updates and new parts.
    fn settle_grown(
        &mut self,
        g: Grown,
        created: &Answers,
        updated: &Answers,
        refused: &mut Vec<Refusal>,
    ) -> (SessionRecord, Vec<Line>) {
        let Grown {
            mut rec,
            added,
            updates,
            new_parts,
        } = g;
        let mut ok = true;
        for (_, a) in updates {
            match updated.get(&a.key) {
                Some(ItemResult::Ok(_)) => self.report.activities_updated += 1,
                Some(ItemResult::Rejected(why)) => {
                    ok = false;
                    refused.push((rec.user.clone(), a.key.clone(), why.clone()));
                }
                None => ok = false,
            }
        }
        for a in new_parts {
            let i = part_index(&rec.key, &a.key);
            match created.get(&a.key) {
                Some(ItemResult::Ok(id)) => {
                    if rec.crm_ids.len() <= i {
                        rec.crm_ids.resize(i + 1, String::new());
                    }
                    rec.crm_ids[i].clone_from(id);
                    self.report.activities_created += 1;
                }
                Some(ItemResult::Rejected(why)) => {
                    ok = false;
                    refused.push((rec.user.clone(), a.key.clone(), why.clone()));
                }
                None => ok = false,
            }
        }
        rec.status = "done".into();
        if !ok {
            rec.body_hash.clear();
        }
        (rec, added)
    }

    async fn create(&self, acts: &[Activity]) -> Result<Answers, SinkError> {
        let mut out = HashMap::new();
        if acts.is_empty() {
            return Ok(out);
        }
        match self.client.as_ref() {
            Some(Client::HubSpot(h)) => out.extend(h.create_activities(acts).await?),
            Some(Client::Bottle(b)) => {
                for a in acts {
                    out.insert(a.key.clone(), b.create_activity(a).await?);
                }
            }
            None => {}
        }
        Ok(out)
    }

    async fn update(&self, acts: &[(String, Activity)]) -> Result<Answers, SinkError> {
        let mut out = HashMap::new();
        if acts.is_empty() {
            return Ok(out);
        }
        match self.client.as_ref() {
            Some(Client::HubSpot(h)) => out.extend(h.update_activities(acts).await?),
            Some(Client::Bottle(b)) => {
                for (id, a) in acts {
                    out.insert(a.key.clone(), b.update_activity(id, a).await?);
                }
            }
            None => {}
        }
        Ok(out)
    }
}
