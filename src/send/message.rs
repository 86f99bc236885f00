//! What each row becomes: the kind-specific settings of a campaign ([`Message`]) and their
//! validation (docs/engati-api.md, "Write-side APIs": template name/namespace/language and
//! components; trigger flow key, API version, channel and attributes; broadcast title,
//! content, publication time and batch size).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Kind;
use super::config::{DEFAULT_BATCH_SIZE, SendSection};

/// Template components: body parameters, or a JSON document with `{{column}}` placeholders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateBody {
    /// Columns whose values are the body parameters, in order.
    Params(Vec<String>),
    /// The `components` array as given, placeholders unresolved.
    Components(serde_json::Value),
}

/// Trigger API version (docs/engati-api.md, "Write-side APIs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerApi {
    /// `/bot-api/v1.0/.../flow/{key}?user.phone_no=...&NAME=...`, no body.
    V1,
    /// `/bot-api/v2.0/.../flow/{key}` with a JSON body of dotted keys.
    V2,
}

/// A broadcast's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastContent {
    /// `payload.type = "direct"`: one text message.
    Direct {
        /// The text.
        message: String,
    },
    /// `payload.type = "whatsapp template"`.
    Template {
        /// Template name.
        name: String,
        /// Namespace.
        namespace: String,
        /// Language code.
        language: String,
    },
}

/// What each row becomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Message {
    /// A WhatsApp template message per row.
    Template {
        /// Phone column.
        phone_column: String,
        /// Template name.
        name: String,
        /// Namespace.
        namespace: String,
        /// Language code.
        language: String,
        /// Components.
        body: TemplateBody,
    },
    /// A flow run per row.
    Trigger {
        /// Phone column.
        phone_column: String,
        /// Flow key.
        flow_key: String,
        /// v1 or v2.
        api: TriggerApi,
        /// `whatsapp` or `rcs`.
        channel: String,
        /// (attribute name, column), in flag order.
        attributes: Vec<(String, String)>,
    },
    /// Broadcasts of `batch_size` recipients.
    Broadcast {
        /// User-id column.
        user_id_column: String,
        /// Channel (`whatsapp`, ...).
        channel: String,
        /// Title.
        title: String,
        /// Content.
        content: BroadcastContent,
        /// Publication time, ms since epoch UTC (`None`: the time of sending).
        publish_at_ms: Option<i64>,
        /// Recipients per broadcast.
        batch_size: usize,
    },
}

impl Message {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Template { .. } => Kind::Template,
            Message::Trigger { .. } => Kind::Trigger,
            Message::Broadcast { .. } => Kind::Broadcast,
        }
    }

    /// The column holding the recipient (phone number or user id).
    pub fn recipient_column(&self) -> &str {
        match self {
            Message::Template { phone_column, .. } | Message::Trigger { phone_column, .. } => {
                phone_column
            }
            Message::Broadcast { user_id_column, .. } => user_id_column,
        }
    }
}

fn required(p: &mut Vec<String>, key: &str, v: &Option<String>) -> String {
    match v.as_deref().map(str::trim) {
        Some(x) if !x.is_empty() => x.to_owned(),
        _ => {
            let flag = key.replace('_', "-");
            p.push(format!("{key} (--{flag}) is required"));
            String::new()
        }
    }
}

/// Settings of the other kinds must not be given (they would be silently ignored).
fn refuse_others(p: &mut Vec<String>, kind: Kind, present: &[(&str, bool)]) {
    for (key, given) in present {
        if *given {
            let flag = key.replace('_', "-");
            p.push(format!(
                "{key} (--{flag}) does not apply to {kind} campaigns"
            ));
        }
    }
}

/// Validates the kind-specific settings into a [`Message`].
pub(crate) fn validate_message(
    kind: Kind,
    s: &SendSection,
    now_ms: i64,
    p: &mut Vec<String>,
) -> Option<Message> {
    let n = p.len();
    let message = match kind {
        Kind::Template => {
            refuse_others(
                p,
                kind,
                &[
                    ("flow_key", s.flow_key.is_some()),
                    ("api", s.api.is_some()),
                    ("channel", s.channel.is_some()),
                    ("attributes", s.attributes.is_some()),
                    ("user_id_column", s.user_id_column.is_some()),
                    ("title", s.title.is_some()),
                    ("message", s.message.is_some()),
                    ("publish_at", s.publish_at.is_some()),
                    ("batch_size", s.batch_size.is_some()),
                ],
            );
            let body = match (&s.params, &s.components) {
                (Some(_), Some(_)) => {
                    p.push(
                        "use either params (--param) or components (--components), not both".into(),
                    );
                    TemplateBody::Params(Vec::new())
                }
                (_, Some(f)) => TemplateBody::Components(read_components(f, p)),
                (params, None) => TemplateBody::Params(params.clone().unwrap_or_default()),
            };
            Message::Template {
                phone_column: required(p, "phone_column", &s.phone_column),
                name: required(p, "template_name", &s.template_name),
                namespace: required(p, "template_namespace", &s.template_namespace),
                language: s.language.clone().unwrap_or_else(|| "en".into()),
                body,
            }
        }
        Kind::Trigger => validate_trigger(s, p),
        Kind::Broadcast => validate_broadcast(s, now_ms, p),
    };
    (p.len() == n).then_some(message)
}

fn read_components(f: &Path, p: &mut Vec<String>) -> serde_json::Value {
    let parsed = std::fs::read(f)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v @ serde_json::Value::Array(_)) => v,
        Ok(_) => {
            p.push(format!(
                "components (--components) {}: must be a JSON array (the template's `components`)",
                f.display()
            ));
            serde_json::Value::Null
        }
        Err(e) => {
            p.push(format!("components (--components) {}: {e}", f.display()));
            serde_json::Value::Null
        }
    }
}

fn validate_trigger(s: &SendSection, p: &mut Vec<String>) -> Message {
    refuse_others(
        p,
        Kind::Trigger,
        &[
            ("template_name", s.template_name.is_some()),
            ("template_namespace", s.template_namespace.is_some()),
            ("language", s.language.is_some()),
            ("params", s.params.is_some()),
            ("components", s.components.is_some()),
            ("user_id_column", s.user_id_column.is_some()),
            ("title", s.title.is_some()),
            ("message", s.message.is_some()),
            ("publish_at", s.publish_at.is_some()),
            ("batch_size", s.batch_size.is_some()),
        ],
    );
    let api = match s.api.as_deref() {
        None | Some("v2") => TriggerApi::V2,
        Some("v1") => TriggerApi::V1,
        Some(a) => {
            p.push(format!("api (--api) `{a}` must be v1 or v2"));
            TriggerApi::V2
        }
    };
    let channel = s.channel.clone().unwrap_or_else(|| "whatsapp".into());
    match (channel.as_str(), api) {
        ("whatsapp", _) | ("rcs", TriggerApi::V2) => {}
        ("rcs", TriggerApi::V1) => p.push("channel rcs needs the v2 API (--api v2): v1 has no channel parameter and is WhatsApp only".into()),
        (c, _) => p.push(format!("channel (--channel) `{c}` must be whatsapp or rcs for triggers")),
    }
    let mut attributes: Vec<(String, String)> = Vec::new();
    for a in s.attributes.iter().flatten() {
        match a.split_once('=') {
            Some((name, col)) if !name.trim().is_empty() && !col.trim().is_empty() => {
                let name = name.trim().to_owned();
                if name == "user.channel" || name == "user.phone_no" {
                    p.push(format!("attribute (--attribute) `{name}` is set by engati-etl from --channel / --phone-column"));
                } else if attributes.iter().any(|(n, _)| *n == name) {
                    p.push(format!("attribute (--attribute) `{name}` is given twice"));
                } else {
                    attributes.push((name, col.trim().to_owned()));
                }
            }
            _ => p.push(format!(
                "attribute (--attribute) `{a}` must be NAME=COLUMN, e.g. order_id=order_number"
            )),
        }
    }
    Message::Trigger {
        phone_column: required(p, "phone_column", &s.phone_column),
        flow_key: required(p, "flow_key", &s.flow_key),
        api,
        channel,
        attributes,
    }
}

fn validate_broadcast(s: &SendSection, now_ms: i64, p: &mut Vec<String>) -> Message {
    refuse_others(
        p,
        Kind::Broadcast,
        &[
            ("phone_column", s.phone_column.is_some()),
            ("flow_key", s.flow_key.is_some()),
            ("api", s.api.is_some()),
            ("attributes", s.attributes.is_some()),
            ("params", s.params.is_some()),
            ("components", s.components.is_some()),
        ],
    );
    let content = match (&s.message, &s.template_name) {
        (Some(m), None) => {
            refuse_others(
                p,
                Kind::Broadcast,
                &[
                    (
                        "template_namespace (without template_name)",
                        s.template_namespace.is_some(),
                    ),
                    ("language (without template_name)", s.language.is_some()),
                ],
            );
            BroadcastContent::Direct {
                message: required(p, "message", &Some(m.clone())),
            }
        }
        (None, Some(_)) => BroadcastContent::Template {
            name: required(p, "template_name", &s.template_name),
            namespace: required(p, "template_namespace", &s.template_namespace),
            language: s.language.clone().unwrap_or_else(|| "en".into()),
        },
        _ => {
            p.push("a broadcast needs either message (--message TEXT) or template_name (--template-name NAME with --template-namespace NS)".into());
            BroadcastContent::Direct {
                message: String::new(),
            }
        }
    };
    let channel = s.channel.clone().unwrap_or_else(|| "whatsapp".into());
    if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        p.push(format!(
            "channel (--channel) `{channel}` must be a channel name such as whatsapp"
        ));
    }
    let publish_at_ms = s.publish_at.as_deref().and_then(|v| {
        crate::time::parse_user_instant(v, now_ms)
            .map_err(|e| p.push(format!("publish_at (--publish-at): {e}")))
            .ok()
    });
    let batch_size = s.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
    if !(1..=10_000).contains(&batch_size) {
        p.push(format!(
            "batch_size (--batch-size) {batch_size} must be between 1 and 10000"
        ));
    }
    Message::Broadcast {
        user_id_column: required(p, "user_id_column", &s.user_id_column),
        channel,
        title: required(p, "title", &s.title),
        content,
        publish_at_ms,
        batch_size,
    }
}
