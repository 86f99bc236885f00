//! Phase 1 of a CRM commit: the contact of each user who wrote. The ledger remembers contact
//! key -> CRM id; the others are looked up in the CRM (HubSpot: search by phone and email;
//! BottleCRM: the duplicates lookup) and, with `contact_policy = create`, created.

use std::collections::{HashMap, HashSet};

use super::contact::{self, ContactWant};
use super::ledger::Ledger;
use super::{Client, ContactPolicy, CrmSink, ItemResult, Refusal};
use crate::sink::SinkError;

/// What the CRM said about the contacts the ledger did not know: contact key -> CRM id, the
/// keys created, and the refusals (key, reason).
#[derive(Default)]
struct Found {
    ids: HashMap<String, String>,
    created: HashSet<String>,
    rejected: Vec<(String, String)>,
}

impl CrmSink {
    /// The contacts to find, one per user who wrote; users with neither a WhatsApp id nor an
    /// email attribute cannot be matched and are counted as skipped.
    pub(super) fn contact_wants<'a>(
        &mut self,
        users: impl Iterator<Item = &'a String>,
    ) -> Vec<ContactWant> {
        let mut wants = Vec::new();
        for user in users {
            match self.user(user).and_then(contact::want) {
                Some(w) => wants.push(w),
                None => {
                    self.count_skipped(user);
                    tracing::info!(user = %user, "No phone or email to match a CRM contact; skipped.");
                }
            }
        }
        wants
    }

    /// User -> CRM contact id for `wants`, finding and creating the ones the ledger does not
    /// know. A dry run adds the planned lookups to `planned` (ids are placeholders); refused
    /// creates go to `refused`.
    pub(super) async fn contacts(
        &mut self,
        wants: Vec<ContactWant>,
        planned: &mut Vec<String>,
        refused: &mut Vec<Refusal>,
    ) -> Result<HashMap<String, String>, SinkError> {
        let (mut ids, missing) = self.known_contacts(wants)?;
        if missing.is_empty() {
            return Ok(ids);
        }
        if self.client.is_none() {
            self.plan_contacts(&missing, &mut ids, planned);
            return Ok(ids);
        }
        let found = self.find_or_create(&missing).await?;
        let mut rows = Vec::new();
        for w in &missing {
            let key = w.key();
            let id = key.as_ref().and_then(|k| found.ids.get(k)).or_else(|| {
                w.email
                    .as_ref()
                    .and_then(|e| found.ids.get(&format!("email:{e}")))
            });
            match id {
                Some(id) => {
                    let created = key.as_ref().is_some_and(|k| found.created.contains(k));
                    self.count_contact(&w.user, created);
                    rows.push((key.unwrap_or_default(), id.clone(), w.user.clone()));
                    ids.insert(w.user.clone(), id.clone());
                }
                None => self.count_skipped(&w.user),
            }
        }
        for (k, why) in found.rejected {
            let user = missing
                .iter()
                .find(|w| w.key().as_deref() == Some(k.as_str()))
                .map(|w| w.user.clone())
                .unwrap_or_default();
            refused.push((user, format!("contact {k}"), why));
        }
        Ledger::new(&mut self.state, &self.namespace).set_contacts(&rows)?;
        Ok(ids)
    }

    /// Splits `wants` into users whose contact the ledger knows (user -> id, counted as
    /// matched) and the rest.
    fn known_contacts(
        &mut self,
        wants: Vec<ContactWant>,
    ) -> Result<(HashMap<String, String>, Vec<ContactWant>), SinkError> {
        let mut ids = HashMap::new();
        let mut missing = Vec::new();
        let mut ledger = Ledger::new(&mut self.state, &self.namespace);
        for w in wants {
            let Some(k) = w.key() else { continue };
            match ledger.contact(&k)? {
                Some(id) => {
                    ids.insert(w.user.clone(), id);
                }
                None => missing.push(w),
            }
        }
        let known: Vec<String> = ids.keys().cloned().collect();
        for u in known {
            self.count_contact(&u, false);
        }
        Ok((ids, missing))
    }

    /// A dry run: the lookups (and creates) that would be made.
    fn plan_contacts(
        &self,
        missing: &[ContactWant],
        ids: &mut HashMap<String, String>,
        planned: &mut Vec<String>,
    ) {
        let op = match self.spec.contact_policy {
            ContactPolicy::Create => "contact.find_or_create",
            ContactPolicy::Skip => "contact.find",
        };
        for w in missing {
            planned.push(
                serde_json::json!({"op": op, "key": w.key(), "phone": w.phone, "email": w.email,
                    "first_name": w.first_name, "last_name": w.last_name})
                .to_string(),
            );
            ids.insert(
                w.user.clone(),
                format!("planned:{}", w.key().unwrap_or_default()),
            );
        }
    }

    /// Looks `missing` up in the CRM and creates what is not found (policy `create`).
    async fn find_or_create(&self, missing: &[ContactWant]) -> Result<Found, SinkError> {
        let create = self.spec.contact_policy == ContactPolicy::Create;
        let mut found = Found::default();
        let record = |found: &mut Found, k: String, r: ItemResult| match r {
            ItemResult::Ok(id) => {
                found.created.insert(k.clone());
                found.ids.insert(k, id);
            }
            ItemResult::Rejected(why) => found.rejected.push((k, why)),
        };
        match self.client.as_ref().expect("checked by contacts()") {
            Client::HubSpot(h) => {
                found.ids = h.find_contacts(missing).await?;
                let to_create: Vec<ContactWant> = missing
                    .iter()
                    .filter(|w| !resolved(w, &found.ids))
                    .cloned()
                    .collect();
                if create && !to_create.is_empty() {
                    for (k, r) in h.create_contacts(&to_create).await? {
                        record(&mut found, k, r);
                    }
                }
            }
            Client::Bottle(b) => {
                for w in missing {
                    let Some(k) = w.key() else { continue };
                    match b.find_contact(w).await? {
                        Some(id) => {
                            found.ids.insert(k, id);
                        }
                        None if create => {
                            let r = b.create_contact(w).await?;
                            record(&mut found, k, r);
                        }
                        None => {}
                    }
                }
            }
        }
        Ok(found)
    }
}

fn resolved(w: &ContactWant, found: &HashMap<String, String>) -> bool {
    w.key().is_some_and(|k| found.contains_key(&k))
        || w.email
            .as_ref()
            .is_some_and(|e| found.contains_key(&format!("email:{e}")))
}
