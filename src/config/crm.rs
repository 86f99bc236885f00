//! The CRM keys of `[sink]` (`format = "crm"`): validated into the one CRM settings type,
//! [`sink::crm::CrmSpec`](crate::sink::crm::CrmSpec).

use std::path::{Path, PathBuf};

use super::{Problems, SinkSection, SourceSection};
use crate::secret::Secret;
use crate::sink::crm::{ContactPolicy, CrmKind, CrmSpec};
use crate::time::parse_duration_ms;

/// Default CRM requests per rolling 10 s (HubSpot's lowest tier).
pub const DEFAULT_CRM_REQUESTS_PER_10S: u32 = 100;
/// Default session gap.
pub const DEFAULT_SESSION_GAP: &str = "30m";
/// HubSpot's API host.
pub const HUBSPOT_BASE_URL: &str = "https://api.hubapi.com";

/// Validates the CRM keys of `sink` (`format = "crm"`). The token stays empty until read.
pub fn validate(
    sink: &SinkSection,
    source: &SourceSection,
    sandbox: bool,
    p: &mut Problems,
) -> Option<CrmSpec> {
    let kind = match sink.crm {
        Some(k) => Some(k),
        None => {
            p.push("crm (--crm) is required with format crm: hubspot or bottlecrm");
            None
        }
    };
    let base_url = base_url(sink, kind, sandbox, p);
    let session_gap_ms =
        parse_duration_ms(sink.session_gap.as_deref().unwrap_or(DEFAULT_SESSION_GAP))
            .unwrap_or_else(|e| {
                p.push(format!("session_gap (--session-gap): {e}"));
                1
            });
    let rate_per_10s = sink
        .crm_requests_per_10s
        .unwrap_or(DEFAULT_CRM_REQUESTS_PER_10S);
    if rate_per_10s < 2 {
        p.push("crm_requests_per_10s must be at least 2");
    }
    let other = sink
        .hubspot_other_channel_type
        .clone()
        .unwrap_or_else(|| "SMS".into());
    if !matches!(other.as_str(), "SMS" | "WHATS_APP" | "LINKEDIN_MESSAGE") {
        p.push(format!(
            "hubspot_other_channel_type `{other}` must be SMS, WHATS_APP or LINKEDIN_MESSAGE"
        ));
    }
    let kind = kind?;
    let state_dir = sink.state_dir.clone().unwrap_or_else(|| {
        default_state_dir(
            kind.as_str(),
            source.customer_id.as_deref().unwrap_or("customer"),
            source.bot_key.as_deref().unwrap_or("bot"),
            std::env::var("XDG_DATA_HOME").ok(),
            std::env::var("HOME").ok(),
        )
    });
    let out_dir = match sink.out.as_deref() {
        Some(o) if o != Path::new("-") => o.to_owned(),
        _ => state_dir.clone(),
    };
    Some(CrmSpec {
        kind,
        base_url,
        token: Secret::new(""),
        token_file: sink.crm_token_file.clone(),
        session_gap_ms,
        contact_policy: sink.contact_policy.unwrap_or(ContactPolicy::Create),
        rate_per_10s,
        other_channel_type: other,
        dry_run: sink.dry_run.unwrap_or(false),
        out_dir,
        state_dir,
    })
}

fn base_url(sink: &SinkSection, kind: Option<CrmKind>, sandbox: bool, p: &mut Problems) -> String {
    match (kind, sink.crm_base_url.as_deref()) {
        (_, Some(u)) => super::values::check_base_url("crm_base_url (--crm-base-url)", u)
            .unwrap_or_else(|e| {
                p.push(e);
                String::new()
            }),
        (Some(CrmKind::HubSpot), None) => HUBSPOT_BASE_URL.to_owned(),
        (Some(CrmKind::BottleCrm), None) if sandbox => String::new(),
        (Some(CrmKind::BottleCrm), None) => {
            p.push("crm_base_url (--crm-base-url) is required for BottleCRM: the URL of your server, e.g. http://127.0.0.1:8800");
            String::new()
        }
        (None, None) => String::new(),
    }
}

/// Default CRM state directory: `$XDG_DATA_HOME/engati-etl/crm/<crm>-<customer>-<bot>`
/// (else `~/.local/share/...`, else `./engati-etl-state/...`).
pub fn default_state_dir(
    crm: &str,
    customer_id: &str,
    bot_key: &str,
    xdg: Option<String>,
    home: Option<String>,
) -> PathBuf {
    let base = match (
        xdg.filter(|x| !x.is_empty()),
        home.filter(|h| !h.is_empty()),
    ) {
        (Some(x), _) => PathBuf::from(x).join("engati-etl"),
        (None, Some(h)) => PathBuf::from(h).join(".local/share/engati-etl"),
        (None, None) => PathBuf::from("engati-etl-state"),
    };
    base.join("crm")
        .join(format!("{crm}-{customer_id}-{bot_key}"))
}
