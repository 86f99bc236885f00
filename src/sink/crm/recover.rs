//! At start: resolve the creates an interrupted run sent without recording the CRM's answer
//! (sessions left `pending` in the ledger). Each missing part is looked up in the CRM by its
//! key (HubSpot: communications search on the key token; BottleCRM: the contact's interactions
//! by subject). Found in full: `done`. Otherwise `lost`, its body hash cleared, so that the
//! missing parts are created when the session is next seen.

use super::ledger::Ledger;
use super::{Client, CrmSink, contact, part_key};
use crate::sink::SinkError;

impl CrmSink {
    /// Resolves every pending session of the ledger (nothing for a dry run).
    pub(super) async fn recover(&mut self) -> Result<(), SinkError> {
        if self.client.is_none() {
            return Ok(());
        }
        let pending = Ledger::new(&mut self.state, &self.namespace).pending()?;
        for mut rec in pending {
            let contact_key = self
                .user(&rec.user)
                .and_then(contact::want)
                .and_then(|w| w.key());
            let contact_id = match contact_key {
                Some(k) => Ledger::new(&mut self.state, &self.namespace).contact(&k)?,
                None => None,
            };
            let mut all = true;
            for (i, id) in rec.crm_ids.iter_mut().enumerate() {
                if !id.is_empty() {
                    continue;
                }
                let key = part_key(&rec.key, i);
                let found = match (self.client.as_ref(), &contact_id) {
                    (Some(Client::HubSpot(h)), _) => h.find_activity(&key).await?,
                    (Some(Client::Bottle(b)), Some(c)) => b.find_activity(c, &key).await?,
                    _ => None,
                };
                match found {
                    Some(f) => {
                        *id = f;
                        self.report.activities_recovered += 1;
                    }
                    None => all = false,
                }
            }
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
}
