//! HubSpot: contacts by search and batch create, transcripts as Communications (anchors.md
//! section 3a): `hs_communication_channel_type` (WHATS_APP for WhatsApp users),
//! `hs_communication_logged_from = CRM`, `hs_communication_body`, `hs_timestamp`, associated
//! to the contact (type 81). Batches of at most 100 inputs; per-item errors of a 207 (or of a
//! 400 for a whole batch) come back per input, the rest proceed.

use std::collections::HashMap;

use reqwest::Method;
use serde_json::{Value, json};

use super::contact::{ContactWant, normalize_phone};
use super::http::{CrmError, CrmHttp};
use super::{Activity, ItemResult};
use crate::time::rfc3339_ms;

/// HubSpot's batch size limit.
pub const BATCH: usize = 100;
/// Longest `hs_communication_body`, characters.
pub const MAX_BODY_CHARS: usize = 65_536;
/// Communication -> contact association type (HubSpot-defined).
pub const COMMUNICATION_TO_CONTACT: i64 = 81;

/// The HubSpot side of the CRM sink.
pub struct HubSpot {
    /// HTTP.
    pub http: CrmHttp,
}

fn reason_of(e: &Value) -> String {
    let msg = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("rejected");
    let cat = e.get("category").and_then(Value::as_str).unwrap_or("ERROR");
    format!("HubSpot {cat}: {msg}")
}

/// Maps a batch response to one result per input trace id: `results[].objectWriteTraceId`
/// (else the input order) for successes, `errors[].context.objectWriteTraceId` (else all
/// inputs without a result) for failures.
fn per_input(keys: &[String], status: u16, body: &Value) -> Vec<(String, ItemResult)> {
    let mut out: HashMap<String, ItemResult> = HashMap::new();
    if (200..300).contains(&status) {
        let results = body
            .get("results")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, r) in results.iter().enumerate() {
            let id = r.get("id").map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            });
            let trace = r
                .get("objectWriteTraceId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| keys.get(i).cloned());
            if let (Some(id), Some(t)) = (id, trace) {
                out.insert(t, ItemResult::Ok(id));
            }
        }
    }
    let errors = body
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let whole = if errors.is_empty() && !(200..300).contains(&status) {
        Some(reason_of(body))
    } else {
        None
    };
    for e in &errors {
        let traces: Vec<String> = e
            .pointer("/context/objectWriteTraceId")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if traces.is_empty() {
            for k in keys {
                out.entry(k.clone())
                    .or_insert_with(|| ItemResult::Rejected(reason_of(e)));
            }
        }
        for t in traces {
            out.insert(t, ItemResult::Rejected(reason_of(e)));
        }
    }
    keys.iter()
        .map(|k| {
            let r = out.remove(k).unwrap_or_else(|| {
                ItemResult::Rejected(whole.clone().unwrap_or_else(|| {
                    format!("HubSpot: HTTP {status} without a result for this input")
                }))
            });
            (k.clone(), r)
        })
        .collect()
}

impl HubSpot {
    /// Finds contacts by phone (`IN`, exact) and email (`IN`), 100 values per filter.
    /// Returns contact key -> HubSpot id.
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn find_contacts(
        &self,
        wants: &[ContactWant],
    ) -> Result<HashMap<String, String>, CrmError> {
        let mut found = HashMap::new();
        for chunk in wants.chunks(BATCH) {
            let phones: Vec<&str> = chunk.iter().filter_map(|w| w.phone.as_deref()).collect();
            let emails: Vec<&str> = chunk.iter().filter_map(|w| w.email.as_deref()).collect();
            let mut groups = Vec::new();
            if !phones.is_empty() {
                groups.push(json!({"filters": [{"propertyName": "phone", "operator": "IN", "values": phones}]}));
            }
            if !emails.is_empty() {
                groups.push(json!({"filters": [{"propertyName": "email", "operator": "IN", "values": emails}]}));
            }
            if groups.is_empty() {
                continue;
            }
            let mut after: Option<String> = None;
            loop {
                let mut body = json!({
                    "filterGroups": groups,
                    "properties": ["email", "phone", "firstname", "lastname"],
                    "limit": 100,
                });
                if let Some(a) = &after {
                    body["after"] = json!(a);
                }
                let path = "/crm/v3/objects/contacts/search";
                let r = self.http.send(Method::POST, path, Some(&body)).await?;
                if r.status != 200 {
                    return Err(self.http.protocol(
                        path,
                        format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                    ));
                }
                let v = r.json();
                for c in v
                    .get("results")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(id) = c.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    let p = c.get("properties");
                    if let Some(ph) = p
                        .and_then(|p| p.get("phone"))
                        .and_then(Value::as_str)
                        .and_then(normalize_phone)
                    {
                        found.entry(ph).or_insert_with(|| id.to_owned());
                    }
                    if let Some(em) = p.and_then(|p| p.get("email")).and_then(Value::as_str) {
                        found
                            .entry(format!("email:{}", em.trim().to_ascii_lowercase()))
                            .or_insert_with(|| id.to_owned());
                    }
                }
                after = v
                    .pointer("/paging/next/after")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if after.is_none() {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Creates contacts (batches of 100). On a 409 (an email that exists), the existing id
    /// given by HubSpot is used.
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn create_contacts(
        &self,
        wants: &[ContactWant],
    ) -> Result<Vec<(String, ItemResult)>, CrmError> {
        let mut out = Vec::new();
        for chunk in wants.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().filter_map(ContactWant::key).collect();
            let inputs: Vec<Value> = chunk
                .iter()
                .filter_map(|w| {
                    let mut p = serde_json::Map::new();
                    p.insert("firstname".into(), json!(w.first_name));
                    p.insert("lastname".into(), json!(w.last_name));
                    if let Some(ph) = &w.phone {
                        p.insert("phone".into(), json!(ph));
                    }
                    if let Some(em) = &w.email {
                        p.insert("email".into(), json!(em));
                    }
                    Some(json!({"properties": p, "objectWriteTraceId": w.key()?}))
                })
                .collect();
            let path = "/crm/v3/objects/contacts/batch/create";
            let r = self
                .http
                .send(Method::POST, path, Some(&json!({"inputs": inputs})))
                .await?;
            let v = r.json();
            if r.status == 409 {
                // "Contact already exists. Existing ID: 123": one at a time to learn each id.
                for w in chunk {
                    let single = Box::pin(self.create_one(w)).await?;
                    out.push(single);
                }
                continue;
            }
            out.extend(per_input(&keys, r.status, &v));
        }
        Ok(out)
    }

    async fn create_one(&self, w: &ContactWant) -> Result<(String, ItemResult), CrmError> {
        let key = w.key().unwrap_or_default();
        let mut p = serde_json::Map::new();
        p.insert("firstname".into(), json!(w.first_name));
        p.insert("lastname".into(), json!(w.last_name));
        if let Some(ph) = &w.phone {
            p.insert("phone".into(), json!(ph));
        }
        if let Some(em) = &w.email {
            p.insert("email".into(), json!(em));
        }
        let body = json!({"inputs": [{"properties": p, "objectWriteTraceId": key}]});
        let r = self
            .http
            .send(
                Method::POST,
                "/crm/v3/objects/contacts/batch/create",
                Some(&body),
            )
            .await?;
        let v = r.json();
        if r.status == 409 {
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            if let Some(id) = msg
                .rsplit("Existing ID:")
                .next()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            {
                return Ok((key, ItemResult::Ok(id.to_owned())));
            }
        }
        Ok(per_input(std::slice::from_ref(&key), r.status, &v).remove(0))
    }

    fn properties(a: &Activity) -> Value {
        json!({
            "hs_communication_channel_type": a.channel_type,
            "hs_communication_logged_from": "CRM",
            "hs_communication_body": a.body,
            "hs_timestamp": rfc3339_ms(a.occurred_at_ms),
        })
    }

    /// Creates communications associated to their contacts (batches of 100).
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn create_activities(
        &self,
        acts: &[Activity],
    ) -> Result<Vec<(String, ItemResult)>, CrmError> {
        let mut out = Vec::new();
        for chunk in acts.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|a| a.key.clone()).collect();
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|a| {
                    json!({
                        "properties": Self::properties(a),
                        "associations": [{
                            "to": {"id": a.contact_id},
                            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": COMMUNICATION_TO_CONTACT}],
                        }],
                        "objectWriteTraceId": a.key,
                    })
                })
                .collect();
            let r = self
                .http
                .send(
                    Method::POST,
                    "/crm/v3/objects/communications/batch/create",
                    Some(&json!({"inputs": inputs})),
                )
                .await?;
            out.extend(per_input(&keys, r.status, &r.json()));
        }
        Ok(out)
    }

    /// Updates communications' bodies and timestamps (batches of 100).
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn update_activities(
        &self,
        acts: &[(String, Activity)],
    ) -> Result<Vec<(String, ItemResult)>, CrmError> {
        let mut out = Vec::new();
        for chunk in acts.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|(_, a)| a.key.clone()).collect();
            let inputs: Vec<Value> = chunk
                .iter()
                .map(|(id, a)| {
                    let mut p = Self::properties(a);
                    if let Some(m) = p.as_object_mut() {
                        m.remove("hs_communication_logged_from");
                    }
                    json!({"id": id, "properties": p, "objectWriteTraceId": a.key})
                })
                .collect();
            let r = self
                .http
                .send(
                    Method::POST,
                    "/crm/v3/objects/communications/batch/update",
                    Some(&json!({"inputs": inputs})),
                )
                .await?;
            out.extend(per_input(&keys, r.status, &r.json()));
        }
        Ok(out)
    }

    /// Looks a communication up by the session key in its body (recovery of a create whose
    /// answer was lost).
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn find_activity(&self, key: &str) -> Result<Option<String>, CrmError> {
        let body = json!({
            "filterGroups": [{"filters": [{"propertyName": "hs_communication_body", "operator": "CONTAINS_TOKEN", "value": key}]}],
            "properties": ["hs_communication_body"],
            "limit": 10,
        });
        let path = "/crm/v3/objects/communications/search";
        let r = self.http.send(Method::POST, path, Some(&body)).await?;
        if r.status != 200 {
            return Err(self.http.protocol(path, format!("HTTP {}", r.status)));
        }
        let v = r.json();
        Ok(v.get("results")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| {
                c.pointer("/properties/hs_communication_body")
                    .and_then(Value::as_str)
                    .is_some_and(|b| b.contains(key))
            })
            .and_then(|c| c.get("id").and_then(Value::as_str).map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_map_to_inputs_by_trace_id() {
        let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let body = json!({
            "status": "COMPLETE",
            "results": [{"id": "11", "objectWriteTraceId": "c"}, {"id": "10", "objectWriteTraceId": "a"}],
            "numErrors": 1,
            "errors": [{"status": "error", "category": "VALIDATION_ERROR", "message": "Property values were not valid",
                        "context": {"objectWriteTraceId": ["b"]}}],
        });
        let r = per_input(&keys, 207, &body);
        assert_eq!(r[0], ("a".into(), ItemResult::Ok("10".into())));
        assert!(matches!(&r[1].1, ItemResult::Rejected(m) if m.contains("VALIDATION_ERROR")));
        assert_eq!(r[2], ("c".into(), ItemResult::Ok("11".into())));
        let whole = per_input(
            &keys,
            400,
            &json!({"status": "error", "category": "VALIDATION_ERROR", "message": "bad"}),
        );
        assert!(
            whole
                .iter()
                .all(|(_, r)| matches!(r, ItemResult::Rejected(m) if m.contains("bad")))
        );
    }
}
