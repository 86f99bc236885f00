//! BottleCRM (self-hosted, PyPI `django-crm` 1.35.0): contacts found with
//! `POST /api/contacts/duplicates/` (hits re-checked exactly: its phone match is fuzzy),
//! created with `POST /api/contacts/`, completed with `PATCH /api/contacts/<id>/`; sessions
//! logged as `POST /api/interactions/` (`kind = whatsapp`), updated with `PATCH`. It has no
//! upsert and no writable external id: the session key goes into the subject, and
//! idempotency is the ledger's. Contract: `.ci/bottlecrm/README.md`.

use reqwest::Method;
use serde_json::{Value, json};

use super::contact::{ContactWant, normalize_phone};
use super::http::{CrmError, CrmHttp};
use super::{Activity, ItemResult};
use crate::time::rfc3339_ms;

/// Longest interaction body, characters (after trimming).
pub const MAX_BODY_CHARS: usize = 10_000;
/// Longest subject, characters.
pub const MAX_SUBJECT_CHARS: usize = 200;

/// The BottleCRM side of the CRM sink.
pub struct BottleCrm {
    /// HTTP.
    pub http: CrmHttp,
}

fn errors_text(v: &Value) -> String {
    match v.get("errors").or_else(|| v.get("detail")) {
        Some(e) => e.to_string(),
        None => v.to_string(),
    }
}

impl BottleCrm {
    /// Finds one contact by phone, then by email; only exact matches count.
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn find_contact(&self, w: &ContactWant) -> Result<Option<String>, CrmError> {
        let path = "/api/contacts/duplicates/";
        for (field, value) in [("phone", w.phone.as_deref()), ("email", w.email.as_deref())] {
            let Some(value) = value else { continue };
            let r = self
                .http
                .send(Method::POST, path, Some(&json!({ field: value })))
                .await?;
            if r.status != 200 {
                return Err(self.http.protocol(
                    path,
                    format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                ));
            }
            let v = r.json();
            let hit = v
                .get("duplicates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|d| match field {
                    "phone" => {
                        d.get("phone")
                            .and_then(Value::as_str)
                            .and_then(normalize_phone)
                            .as_deref()
                            == Some(value)
                    }
                    _ => d
                        .get("email")
                        .and_then(Value::as_str)
                        .is_some_and(|e| e.trim().eq_ignore_ascii_case(value)),
                });
            if let Some(id) = hit.and_then(|d| d.get("id")).and_then(Value::as_str) {
                return Ok(Some(id.to_owned()));
            }
        }
        Ok(None)
    }

    /// Creates a contact; when the email is taken (an inactive contact), creates it without.
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn create_contact(&self, w: &ContactWant) -> Result<ItemResult, CrmError> {
        let mut body = json!({"first_name": w.first_name, "last_name": w.last_name});
        if let Some(p) = &w.phone {
            body["phone"] = json!(p);
        }
        if let Some(e) = &w.email {
            body["email"] = json!(e);
        }
        let path = "/api/contacts/";
        let mut r = self.http.send(Method::POST, path, Some(&body)).await?;
        let mut v = r.json();
        if r.status == 400 && w.phone.is_some() && v.pointer("/errors/email").is_some() {
            if let Some(m) = body.as_object_mut() {
                m.remove("email");
            }
            r = self.http.send(Method::POST, path, Some(&body)).await?;
            v = r.json();
        }
        Ok(match (r.status, v.get("id").and_then(Value::as_str)) {
            (200 | 201, Some(id)) => ItemResult::Ok(id.to_owned()),
            _ => ItemResult::Rejected(format!("BottleCRM: HTTP {}: {}", r.status, errors_text(&v))),
        })
    }

    fn subject(a: &Activity) -> String {
        let s = format!("{} [{}]", a.subject, a.key);
        if s.chars().count() <= MAX_SUBJECT_CHARS {
            return s;
        }
        let tail = format!(" [{}]", a.key);
        let head: String = a
            .subject
            .chars()
            .take(MAX_SUBJECT_CHARS - tail.chars().count())
            .collect();
        format!("{head}{tail}")
    }

    /// Logs a session part as an interaction.
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn create_activity(&self, a: &Activity) -> Result<ItemResult, CrmError> {
        let body = json!({
            "kind": a.kind,
            "direction": a.direction,
            "contact": a.contact_id,
            "subject": Self::subject(a),
            "body": a.body.replace('\0', ""),
            "occurred_at": rfc3339_ms(a.occurred_at_ms),
        });
        let r = self
            .http
            .send(Method::POST, "/api/interactions/", Some(&body))
            .await?;
        let v = r.json();
        Ok(match (r.status, v.get("id").and_then(Value::as_str)) {
            (200 | 201, Some(id)) => ItemResult::Ok(id.to_owned()),
            _ => ItemResult::Rejected(format!("BottleCRM: HTTP {}: {}", r.status, errors_text(&v))),
        })
    }

    /// Replaces an interaction's body (a session that grew).
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn update_activity(&self, id: &str, a: &Activity) -> Result<ItemResult, CrmError> {
        let body = json!({"subject": Self::subject(a), "body": a.body.replace('\0', ""), "direction": a.direction});
        let r = self
            .http
            .send(
                Method::PATCH,
                &format!("/api/interactions/{id}/"),
                Some(&body),
            )
            .await?;
        Ok(if r.status == 200 {
            ItemResult::Ok(id.to_owned())
        } else {
            ItemResult::Rejected(format!(
                "BottleCRM: HTTP {}: {}",
                r.status,
                errors_text(&r.json())
            ))
        })
    }

    /// Looks an interaction up by session key in the contact's interactions (pages of 200).
    ///
    /// # Errors
    /// [`CrmError`].
    pub async fn find_activity(
        &self,
        contact_id: &str,
        key: &str,
    ) -> Result<Option<String>, CrmError> {
        let needle = format!("[{key}]");
        let mut offset = 0u64;
        loop {
            let path = format!("/api/interactions/?contact={contact_id}&limit=200&offset={offset}");
            let r = self.http.send(Method::GET, &path, None).await?;
            if r.status != 200 {
                return Err(self.http.protocol(&path, format!("HTTP {}", r.status)));
            }
            let v = r.json();
            let list = v
                .get("interactions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(id) = list
                .iter()
                .find(|i| {
                    i.get("subject")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.contains(&needle))
                })
                .and_then(|i| i.get("id").and_then(Value::as_str))
            {
                return Ok(Some(id.to_owned()));
            }
            let count = v.get("count").and_then(Value::as_u64).unwrap_or(0);
            offset += list.len() as u64;
            if list.is_empty() || offset >= count {
                return Ok(None);
            }
        }
    }
}
