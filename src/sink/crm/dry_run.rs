//! A dry run of a CRM commit: the planned operations as JSON lines on stdout
//! (`contact.find_or_create`, `activity.create`, `activity.update`); nothing is sent or
//! recorded.

use std::io::Write;

use super::CrmSink;
use super::plan::{Fresh, Grown, Work};

impl CrmSink {
    /// Prints the contact lookups `planned` by phase 1, then the activity writes of `work`.
    pub(super) fn print_plan(&mut self, mut planned: Vec<String>, work: &Work) {
        for Fresh { acts, .. } in &work.creates {
            for a in acts {
                planned.push(serde_json::json!({"op": "activity.create", "key": a.key, "contact": a.contact_id,
                    "occurred_at": crate::time::rfc3339_ms(a.occurred_at_ms), "subject": a.subject,
                    "body_chars": a.body.chars().count()}).to_string());
                self.report.activities_created += 1;
            }
        }
        for Grown {
            rec,
            updates,
            new_parts,
            ..
        } in &work.grown
        {
            for (i, a) in updates {
                planned.push(serde_json::json!({"op": "activity.update", "key": a.key, "id": rec.crm_ids[*i],
                    "body_chars": a.body.chars().count()}).to_string());
                self.report.activities_updated += 1;
            }
            for a in new_parts {
                planned.push(serde_json::json!({"op": "activity.create", "key": a.key, "contact": a.contact_id,
                    "body_chars": a.body.chars().count()}).to_string());
                self.report.activities_created += 1;
            }
        }
        let mut stdout = std::io::stdout().lock();
        for l in &planned {
            let _ = writeln!(stdout, "{l}");
        }
    }
}
