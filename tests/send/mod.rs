//! `send`: the write side against the sandbox. What a user would check: every input row in
//! the result log with a status that matches what the sandbox received (never twice), exit
//! codes, error texts, re-runs and crashes.

mod basics;
mod crash;
mod errors;
mod faults;
mod kinds;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use engati_etl::sandbox::SandboxHandle;
use engati_etl::sandbox::write::AcceptedSend;

use crate::util::*;

/// A valid Indian mobile number (digits with the country code) for row `i`.
pub fn phone(i: usize) -> String {
    format!("9198{:08}", 10_000_000 + i)
}

/// Writes `people.csv` (phone, name, opt_in, order) with `n` rows; `edit` changes rows.
pub fn people(dir: &Path, n: usize, edit: impl Fn(usize, &mut [String; 4])) -> PathBuf {
    let mut text = String::from("phone,name,opt_in,order\n");
    for i in 0..n {
        let mut row = [
            phone(i),
            format!("Name {i}"),
            "yes".into(),
            format!("{}", 5000 + i),
        ];
        edit(i, &mut row);
        text.push_str(&row.join(","));
        text.push('\n');
    }
    let p = dir.join(format!("people-{n}.csv"));
    std::fs::write(&p, text).unwrap();
    p
}

/// `send <kind>` flags for a sandbox, with the input, campaign and output.
pub fn send_args(
    sb: &SandboxHandle,
    kind: &str,
    input: &Path,
    campaign: &str,
    out: &Path,
) -> Vec<String> {
    args(&[
        "send",
        kind,
        "--provider",
        "custom",
        "--base-url",
        &sb.base_url,
        "--customer-id",
        &sb.ids.customer_id,
        "--bot-key",
        &sb.ids.bot_key,
        "--input",
        input.to_str().unwrap(),
        "--campaign",
        campaign,
        "--out",
        out.to_str().unwrap(),
        "--max-rps",
        "2000",
        "--format",
        "jsonl",
        "--quiet",
    ])
}

/// Template flags (order_update with two body parameters).
pub fn template(sb: &SandboxHandle, input: &Path, campaign: &str, out: &Path) -> Vec<String> {
    with(
        send_args(sb, "template", input, campaign, out),
        &[
            "--phone-column",
            "phone",
            "--template-name",
            "order_update",
            "--template-namespace",
            "980c3243-2d2a-4d2d-a572-b2a50552cb04",
            "--param",
            "name",
            "--param",
            "order",
        ],
    )
}

/// The result log (JSONL) of a campaign.
pub fn results(out: &Path, campaign: &str) -> Vec<serde_json::Value> {
    json_lines(
        &out.join("sends")
            .join(format!("campaign={campaign}"))
            .join("results.jsonl"),
    )
}

/// The send report.
pub fn send_report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("_send_report.json")).unwrap()).unwrap()
}

/// How many accepted sends reached each recipient.
pub fn received(sends: &[AcceptedSend]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in sends {
        for r in &s.recipients {
            *m.entry(r.clone()).or_default() += 1;
        }
    }
    m
}

/// Rows per status in a result log.
pub fn by_status(rows: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rows {
        *m.entry(r["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    m
}

/// The invariant of issue 10: no recipient received twice; a `sent` row was received exactly
/// once; a `failed` or `skipped` row never; an `unknown` row (after reconciliation of a
/// template or broadcast: `settled_unknown`) never.
pub fn assert_matches_sandbox(
    rows: &[serde_json::Value],
    sb: &SandboxHandle,
    settled_unknown: bool,
    context: &str,
) {
    let got = received(&sb.sends());
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{context}: sent twice: {twice:?}");
    for r in rows {
        let who = r["recipient"].as_str().unwrap_or("");
        let n = got.get(who).copied().unwrap_or(0);
        let status = r["status"].as_str().unwrap();
        let dup = r["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("duplicate key"));
        match status {
            "sent" => assert_eq!(n, 1, "{context}: sent row {r} was received {n} times"),
            "failed" => assert_eq!(n, 0, "{context}: failed row {r} was received"),
            "skipped" if !dup => assert_eq!(n, 0, "{context}: skipped row {r} was received"),
            "unknown" if settled_unknown => assert_eq!(
                n, 0,
                "{context}: unknown row {r} was received, reconciliation missed it"
            ),
            _ => {}
        }
    }
}

/// Write requests the sandbox answered (any status).
pub fn write_requests(sb: &SandboxHandle) -> usize {
    sb.requests()
        .iter()
        .filter(|r| !r.path.ends_with("/conversations") && !r.path.ends_with("/users"))
        .count()
}
