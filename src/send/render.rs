//! Request bodies, exactly as docs/engati-api.md ("Write-side APIs") and the vendor seeds
//! show them:
//! - template: `{"phoneNumber": "+E164", "payload": {"name", "namespace",
//!   "language": {"code", "policy": "deterministic"}, "components": [...]}}`;
//! - trigger v1: no body, `?user.phone_no=<digits>&<NAME>=<value>...`;
//! - trigger v2: `{"user.channel": "whatsapp"|"rcs", "user.phone_no": "<digits>", <NAME>:
//!   <value>...}` with exactly the mapped attributes (every key becomes a user attribute);
//! - broadcast: `{"broadcastId": null, "broadcastTitle", "publishedOn": "<ISO-8601 UTC>",
//!   "audience": {"rule": {"channels", "channelUserIds"}}, "payload": {"type": "direct" |
//!   "whatsapp template", ...}, "status": null}` (seeds/003: the template form).
//!
//! Paths start with `/` and are relative to the base URL; ids and the flow key are
//! percent-encoded as path segments. Object keys keep the documented order.

use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use super::config::SourceSpec;
use super::input::Values;
use super::message::{BroadcastContent, TriggerApi};
use crate::engati::client::segment;

/// One HTTP request: method, path (with its query) from the base URL, JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Always `POST` for the write-side APIs.
    pub method: String,
    /// `/whatsapp-api/v1.0/customer/61179/bot/bb67.../template` and the like.
    pub path: String,
    /// The JSON body (`None`: an empty body, trigger v1).
    pub body: Option<String>,
}

impl Request {
    fn post(path: String, body: Option<String>) -> Self {
        Request {
            method: "POST".into(),
            path,
            body,
        }
    }
}

/// A row's values by column name.
pub struct RowView<'a> {
    /// Values in [`Columns`] order.
    pub values: &'a Values,
    /// Positions.
    pub columns: &'a Columns,
}

impl RowView<'_> {
    /// The text value of `column` (`None`: null, missing or blank).
    pub fn get(&self, column: &str) -> Option<&str> {
        let i = *self.columns.index.get(column)?;
        self.values.get(i)?.as_deref()
    }
}

/// The input columns a campaign reads, each once, and their positions.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    /// Names, in read order.
    pub names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Columns {
    /// Adds `name` unless present.
    pub fn add(&mut self, name: &str) {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_owned(), self.names.len());
            self.names.push(name.to_owned());
        }
    }
}

fn prefix(source: &SourceSpec, api: &str) -> String {
    format!(
        "/{api}/customer/{}/bot/{}",
        segment(&source.customer_id),
        segment(&source.bot_key)
    )
}

#[derive(Serialize)]
struct Language<'a> {
    code: &'a str,
    policy: &'static str,
}

#[derive(Serialize)]
struct TemplatePayload<'a> {
    name: &'a str,
    namespace: &'a str,
    language: Language<'a>,
    components: &'a serde_json::Value,
}

#[derive(Serialize)]
struct TemplateWire<'a> {
    #[serde(rename = "phoneNumber")]
    phone_number: &'a str,
    payload: TemplatePayload<'a>,
}

/// The template request for one recipient (`e164`: `+919565428256`), components already
/// filled in ([`fill_components`] or [`body_parameters`]).
pub fn template(
    source: &SourceSpec,
    e164: &str,
    name: &str,
    namespace: &str,
    language: &str,
    components: &serde_json::Value,
) -> Request {
    let body = TemplateWire {
        phone_number: e164,
        payload: TemplatePayload {
            name,
            namespace,
            language: Language {
                code: language,
                policy: "deterministic",
            },
            components,
        },
    };
    Request::post(
        format!("{}/template", prefix(source, "whatsapp-api/v1.0")),
        Some(serde_json::to_string(&body).expect("serializable")),
    )
}

/// `components` for `--param` columns: `[{"type": "body", "parameters": [{"type": "text",
/// "text": ...}, ...]}]`, or `[]` without parameters.
pub fn body_parameters(values: &[&str]) -> serde_json::Value {
    if values.is_empty() {
        return serde_json::Value::Array(Vec::new());
    }
    let params: Vec<serde_json::Value> = values
        .iter()
        .map(|v| serde_json::json!({"type": "text", "text": v}))
        .collect();
    serde_json::json!([{"type": "body", "parameters": params}])
}

/// Calls `f` with each `{{name}}` placeholder (name trimmed) and its byte range in `s`.
fn each_placeholder(s: &str, mut f: impl FnMut(&str, std::ops::Range<usize>)) {
    let mut at = 0;
    while let Some(open) = s[at..].find("{{").map(|i| at + i) {
        let Some(close) = s[open + 2..].find("}}").map(|i| open + 2 + i) else {
            return;
        };
        f(s[open + 2..close].trim(), open..close + 2);
        at = close + 2;
    }
}

/// The `{{column}}` placeholders used in a components document, each once.
pub fn placeholders(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    walk_strings(v, &mut |s| {
        each_placeholder(s, |name, _| {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_owned());
            }
        })
    });
    out
}

fn walk_strings(v: &serde_json::Value, f: &mut impl FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        serde_json::Value::Object(o) => o.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

/// The components document with every `{{column}}` replaced by the row's value.
///
/// # Errors
/// The name of a placeholder column whose value is empty in this row.
pub fn fill_components(
    v: &serde_json::Value,
    row: &RowView<'_>,
) -> Result<serde_json::Value, String> {
    Ok(match v {
        serde_json::Value::String(s) if s.contains("{{") => {
            let mut out = String::with_capacity(s.len());
            let mut last = 0;
            let mut missing = None;
            each_placeholder(s, |name, range| {
                out.push_str(&s[last..range.start]);
                match row.get(name) {
                    Some(value) => out.push_str(value),
                    None => missing = missing.take().or(Some(name.to_owned())),
                }
                last = range.end;
            });
            if let Some(m) = missing {
                return Err(m);
            }
            out.push_str(&s[last..]);
            serde_json::Value::String(out)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(|x| fill_components(x, row))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(o) => serde_json::Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), fill_components(x, row)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Serializes pairs as a JSON object in their order.
struct Ordered<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The trigger request for one recipient (`digits`: `919565428256`). `attributes`: (name,
/// value) in flag order; an empty value is sent as `""`.
pub fn trigger(
    source: &SourceSpec,
    api: TriggerApi,
    flow_key: &str,
    channel: &str,
    digits: &str,
    attributes: &[(&str, &str)],
) -> Request {
    match api {
        TriggerApi::V1 => {
            let mut url = reqwest::Url::parse("http://x/").expect("static URL");
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("user.phone_no", digits);
                for (k, v) in attributes {
                    q.append_pair(k, v);
                }
            }
            let path = format!(
                "{}/flow/{}?{}",
                prefix(source, "bot-api/v1.0"),
                segment(flow_key),
                url.query().unwrap_or_default()
            );
            Request::post(path, None)
        }
        TriggerApi::V2 => {
            let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(attributes.len() + 2);
            pairs.push(("user.channel", channel));
            pairs.push(("user.phone_no", digits));
            pairs.extend_from_slice(attributes);
            Request::post(
                format!(
                    "{}/flow/{}",
                    prefix(source, "bot-api/v2.0"),
                    segment(flow_key)
                ),
                Some(serde_json::to_string(&Ordered(&pairs)).expect("serializable")),
            )
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule<'a> {
    channels: [&'a str; 1],
    channel_user_ids: &'a [String],
}

#[derive(Serialize)]
struct Audience<'a> {
    rule: Rule<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BroadcastWire<'a> {
    broadcast_id: Option<()>,
    broadcast_title: &'a str,
    published_on: String,
    audience: Audience<'a>,
    payload: serde_json::Value,
    status: Option<()>,
}

/// `payload` of a broadcast (seeds/003 for the template form).
fn broadcast_payload(content: &BroadcastContent) -> serde_json::Value {
    match content {
        BroadcastContent::Direct { message } => serde_json::json!({
            "type": "direct",
            "content": [{"type": "text", "data": {"message": message}}],
        }),
        BroadcastContent::Template {
            name,
            namespace,
            language,
        } => serde_json::json!({
            "type": "whatsapp template",
            "campaignKey": null,
            "content": [{
                "type": "template",
                "data": null,
                "template": {
                    "payload": {
                        "namespace": namespace,
                        "name": name,
                        "components": [],
                        "language": {"code": language, "policy": "deterministic"},
                    },
                    "targetWhatsappNumber": "{{phone_no}}",
                },
                "flowKey": null,
                "attributes": null,
            }],
        }),
    }
}

/// One broadcast to `recipients` (channel-user ids) on `channel`, published at
/// `published_ms` (ms since epoch UTC; a time in the past is sent immediately).
pub fn broadcast(
    source: &SourceSpec,
    channel: &str,
    title: &str,
    content: &BroadcastContent,
    published_ms: i64,
    recipients: &[String],
) -> Request {
    let body = BroadcastWire {
        broadcast_id: None,
        broadcast_title: title,
        published_on: crate::time::rfc3339_ms(published_ms),
        audience: Audience {
            rule: Rule {
                channels: [channel],
                channel_user_ids: recipients,
            },
        },
        payload: broadcast_payload(content),
        status: None,
    };
    Request::post(
        format!("{}/broadcast", prefix(source, "bot-api/v1.0")),
        Some(serde_json::to_string(&body).expect("serializable")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engati::provider::Provider;

    fn source() -> SourceSpec {
        SourceSpec {
            provider: Provider::Engati,
            base_url: "https://api.engati.ai/".into(),
            customer_id: "61179".into(),
            bot_key: "bb67e0773bed4c7e".into(),
            api_key_file: None,
        }
    }

    #[test]
    fn template_body_is_the_documented_shape() {
        let r = template(
            &source(),
            "+919019486731",
            "order_update",
            "980c3243",
            "en",
            &body_parameters(&["Asha", "12345"]),
        );
        assert_eq!(
            r.path,
            "/whatsapp-api/v1.0/customer/61179/bot/bb67e0773bed4c7e/template"
        );
        assert_eq!(
            r.body.unwrap(),
            r#"{"phoneNumber":"+919019486731","payload":{"name":"order_update","namespace":"980c3243","language":{"code":"en","policy":"deterministic"},"components":[{"parameters":[{"text":"Asha","type":"text"},{"text":"12345","type":"text"}],"type":"body"}]}}"#
        );
    }

    #[test]
    fn trigger_v1_uses_the_query_and_v2_a_dotted_body_with_nothing_else() {
        let s = source();
        let v1 = trigger(
            &s,
            TriggerApi::V1,
            "flow 1",
            "whatsapp",
            "919019486731",
            &[("resultCode", "1 & 2")],
        );
        assert_eq!(
            v1.path,
            "/bot-api/v1.0/customer/61179/bot/bb67e0773bed4c7e/flow/flow%201?user.phone_no=919019486731&resultCode=1+%26+2"
        );
        assert_eq!(v1.body, None);
        let v2 = trigger(
            &s,
            TriggerApi::V2,
            "welcome_1",
            "rcs",
            "919019486731",
            &[("zeta", "z"), ("alpha", "")],
        );
        assert_eq!(
            v2.path,
            "/bot-api/v2.0/customer/61179/bot/bb67e0773bed4c7e/flow/welcome_1"
        );
        assert_eq!(
            v2.body.unwrap(),
            r#"{"user.channel":"rcs","user.phone_no":"919019486731","zeta":"z","alpha":""}"#
        );
    }

    #[test]
    fn broadcast_body_is_the_documented_shape() {
        let r = broadcast(
            &source(),
            "whatsapp",
            "Sale",
            &BroadcastContent::Direct {
                message: "Hi".into(),
            },
            0,
            &["919019486731".to_string()],
        );
        assert_eq!(
            r.body.unwrap(),
            r#"{"broadcastId":null,"broadcastTitle":"Sale","publishedOn":"1970-01-01T00:00:00.000Z","audience":{"rule":{"channels":["whatsapp"],"channelUserIds":["919019486731"]}},"payload":{"content":[{"data":{"message":"Hi"},"type":"text"}],"type":"direct"},"status":null}"#
        );
    }

    #[test]
    fn placeholders_are_filled_from_the_row_and_empty_values_are_named() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"[{"type":"body","parameters":[{"type":"text","text":"{{ name }}"},{"type":"text","text":"Order {{order}}!"}]}]"#,
        )
        .unwrap();
        assert_eq!(placeholders(&doc), vec!["name".to_string(), "order".into()]);
        let mut cols = Columns::default();
        cols.add("name");
        cols.add("order");
        let values = vec![Some("Asha \"A\"".to_string()), Some("42".into())];
        let row = RowView {
            values: &values,
            columns: &cols,
        };
        let filled = fill_components(&doc, &row).unwrap();
        assert_eq!(filled[0]["parameters"][0]["text"], "Asha \"A\"");
        assert_eq!(filled[0]["parameters"][1]["text"], "Order 42!");
        let values = vec![Some("Asha".to_string()), None];
        let row = RowView {
            values: &values,
            columns: &cols,
        };
        assert_eq!(fill_components(&doc, &row), Err("order".to_string()));
    }
}
