//! Privacy controls: under each policy no raw identifier (or contact, with redaction) survives
//! in any output file; pseudonyms are stable across runs (joins match); re-exports over a
//! pseudonymized output replace rows exactly once; an output keeps one policy.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

use arrow_array::RecordBatch;
use engati_etl::privacy::{IdColumn, Privacy, PrivacyPolicy};
use engati_etl::sandbox::{SandboxHandle, StoredMessage};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::util::*;

const KEY: &str = "test-pseudonym-key-0123456789";

fn key_env() -> Vec<(&'static str, &'static str)> {
    vec![("ENGATI_ETL_PSEUDONYM_KEY", KEY)]
}

/// The same pseudonyms the binary writes.
fn privacy() -> Privacy {
    Privacy::with_key(
        PrivacyPolicy {
            pseudonymize: vec![
                IdColumn::ChannelUserId,
                IdColumn::UserId,
                IdColumn::UserName,
            ],
            key_env: "ENGATI_ETL_PSEUDONYM_KEY".into(),
            redact: vec![],
            drop_columns: vec![],
        },
        KEY.as_bytes(),
    )
}

/// A sandbox whose every user wrote a message with their own id, name, e-mail and phone number
/// on 2026-08-02, and one more with an unreadable timestamp (a dead letter).
async fn sandbox() -> SandboxHandle {
    let mut cfg = small();
    cfg.data.malformed_rate = 0.03;
    let sb = start(cfg).await;
    for (i, u) in sb.data().users().iter().enumerate().take(24) {
        let m = StoredMessage {
            ts_ms: day("2026-08-02") + 3_600_000 + i as i64,
            ts_form: 0,
            sender: "user",
            message_type: "TEXT",
            response: Cow::Owned(format!(
                "I am {} ({}), write to reach.me{i}@mail.example.org or call +44 7700 900{i:03}",
                u.channel_user_id, u.user_name
            )),
            session_uuid: 0x1234_5678_9abc_def0_1234_5678_9abc_def0 + i as u128,
            file: None,
            extra_field: false,
        };
        let bad = StoredMessage {
            ts_ms: m.ts_ms + 1000,
            ts_form: engati_etl::sandbox::dataset::MALFORMED,
            response: Cow::Owned(format!(
                "again: {} reach.me{i}@mail.example.org",
                u.channel_user_id
            )),
            ..m.clone()
        };
        sb.data().insert(i, m);
        sb.data().insert(i, bad);
    }
    sb
}

/// Every output file as text (Parquet as JSON lines), the state store left out.
fn output_text(out: &Path) -> String {
    let mut all = String::new();
    for f in files_under(out) {
        let name = f.to_string_lossy().into_owned();
        if name.contains("/_state/") {
            continue;
        }
        if name.ends_with(".parquet") {
            let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                all.push_str(&batch_json(&b.unwrap()));
            }
        } else {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
        }
        all.push('\n');
        all.push_str(&name);
        all.push('\n');
    }
    all
}

fn batch_json(b: &RecordBatch) -> String {
    let mut buf = Vec::new();
    let mut w = arrow_json::LineDelimitedWriter::new(&mut buf);
    w.write(&engati_etl::sink::part::json_ready(b).unwrap())
        .unwrap();
    w.finish().unwrap();
    String::from_utf8(buf).unwrap()
}

/// Raw identifiers of the sandbox: channel-user ids, message user ids, names.
fn raw_ids(sb: &SandboxHandle) -> (Vec<String>, Vec<String>, Vec<String>) {
    let users = sb.data().users();
    let mut uids = BTreeSet::new();
    for i in 0..users.len() {
        for m in sb
            .data()
            .messages_between(i, day("2026-08-01"), day("2026-08-11"))
        {
            uids.insert(m.user_id_string());
        }
    }
    (
        users.iter().map(|u| u.channel_user_id.clone()).collect(),
        uids.into_iter().collect(),
        users.iter().map(|u| u.user_name.clone()).collect(),
    )
}

fn export(sb: &SandboxHandle, out: &Path, since: &str, until: &str, more: &[&str]) -> Vec<String> {
    with(
        export_args(sb, since, until),
        &[
            &["--attribute", "opt1=yes", "--out", out.to_str().unwrap()],
            more,
        ]
        .concat(),
    )
}

async fn run_ok(args: &[String], sb: &SandboxHandle, codes: &[i32]) -> serde_json::Value {
    let mut env = key_env();
    env.push(("ENGATI_API_KEY", &sb.ids.api_key));
    let o = run_env(args, &env).await;
    assert!(
        codes.contains(&o.status.code().unwrap_or(-1)),
        "{}",
        text(&o)
    );
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap()
}

/// The users table's (channel_user_id, user_name) pairs.
fn users_table(out: &Path) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for f in files_under(&out.join("users")) {
        let text = if f.to_string_lossy().ends_with(".parquet") {
            let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
                .unwrap()
                .build()
                .unwrap();
            r.map(|b| batch_json(&b.unwrap())).collect::<String>()
        } else {
            std::fs::read_to_string(&f).unwrap()
        };
        rows.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pseudonymized_outputs_hold_no_raw_identifier_in_any_file() {
    let sb = sandbox().await;
    let (ids, uids, names) = raw_ids(&sb);
    let p = privacy();
    for format in ["parquet", "jsonl"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let args = export(
            &sb,
            &out,
            "2026-08-01",
            "2026-08-04",
            &[
                "--format",
                format,
                "--pseudonymize",
                "channel_user_id,user_id,user_name",
            ],
        );
        run_ok(&args, &sb, &[1]).await;
        let text = output_text(&out);
        assert!(
            !files_under(&out.join("_dead_letter")).is_empty(),
            "dead letters are covered"
        );
        for raw in ids.iter().chain(&uids) {
            assert!(
                !text.contains(raw.as_str()),
                "{format}: raw id {raw} survived"
            );
        }
        let users = users_table(&out);
        assert!(!users.is_empty());
        for u in &users {
            let name = u["user_name"].as_str().unwrap();
            assert!(
                !names.iter().any(|n| n == name),
                "{format}: raw name {name}"
            );
            assert_eq!(name.len(), 32);
        }
        let r = report(&out);
        assert_eq!(
            r["privacy"]["pseudonymized"],
            serde_json::json!(["channel_user_id", "user_id", "user_name"])
        );
        assert_eq!(r["privacy"]["key_env"], "ENGATI_ETL_PSEUDONYM_KEY");
        assert!(!r.to_string().contains(KEY));
        // Joins: the messages' users are the users table's, and the pseudonyms are the key's.
        let table: BTreeSet<String> = users
            .iter()
            .map(|u| u["channel_user_id"].as_str().unwrap().to_owned())
            .collect();
        let want: BTreeSet<String> = matching(&sb, &[("opt1", "yes")])
            .iter()
            .map(|u| p.pseudonym(u))
            .collect();
        assert_eq!(
            table, want,
            "{format}: users table ids are the keyed pseudonyms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_leaves_no_contact_in_any_file() {
    let sb = sandbox().await;
    let emails: Vec<String> = sb
        .data()
        .users()
        .iter()
        .flat_map(|u| {
            u.attributes
                .iter()
                .filter(|(k, _)| k == "email")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert!(!emails.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = export(
        &sb,
        &out,
        "2026-08-01",
        "2026-08-04",
        &["--format", "jsonl", "--redact", "email,phone"],
    );
    run_ok(&args, &sb, &[1]).await;
    let text = output_text(&out);
    assert!(
        text.contains("[email]") && text.contains("[phone]"),
        "the planted contacts were redacted"
    );
    for e in &emails {
        assert!(
            !text.contains(e.as_str()),
            "e-mail {e} survived (user attributes)"
        );
    }
    assert!(!text.contains("@mail.example.org"));
    assert!(!text.contains("7700 900"));
    for row in read_jsonl(&out) {
        serde_json::from_str::<serde_json::Value>(&row.raw_json).expect("raw_json stays JSON");
    }
    let r = report(&out);
    assert_eq!(
        r["privacy"]["redacted"],
        serde_json::json!(["email", "phone"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_columns_are_left_out_of_every_file() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let out2 = dir.path().join("dropped");
    let args = export(
        &sb,
        &out2,
        "2026-08-01",
        "2026-08-04",
        &[
            "--format",
            "parquet",
            "--drop-column",
            "raw_json",
            "--drop-column",
            "attributes,text",
        ],
    );
    run_ok(&args, &sb, &[1]).await;
    for f in message_files(&out2, ".parquet")
        .iter()
        .chain(&files_under(&out2.join("users")))
    {
        let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        let schema = b.schema().clone();
        for c in ["raw_json", "attributes", "text"] {
            assert!(schema.field_with_name(c).is_err(), "{c} in {}", f.display());
        }
    }
    for f in files_under(&out2.join("_dead_letter")) {
        for l in json_lines(&f) {
            assert!(l["raw_json"].is_null(), "dead letters drop raw_json too");
        }
    }
    assert_eq!(
        report(&out2)["privacy"]["dropped_columns"],
        serde_json::json!(["attributes", "raw_json", "text"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_exports_over_a_pseudonymized_output_replace_rows_exactly_once() {
    let sb = sandbox().await;
    let p = privacy();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let flags = ["--format", "parquet", "--pseudonymize", "channel_user_id"];
    run_ok(
        &export(&sb, &out, "2026-08-01", "2026-08-05", &flags),
        &sb,
        &[1],
    )
    .await;
    let first = read_parquet(&out);
    // An overlapping range with another unit shape: files are partly re-exported.
    let mut more = flags.to_vec();
    more.extend(["--checkpoint-users", "3"]);
    let s = run_ok(
        &export(&sb, &out, "2026-08-03", "2026-08-08", &more),
        &sb,
        &[1],
    )
    .await;
    assert!(
        report(&out)["sink"]["rows_replaced"].as_u64().unwrap() > 0,
        "{s}"
    );
    let rows = read_parquet(&out);
    let users = matching(&sb, &[("opt1", "yes")]);
    let want: Vec<Key> = {
        let mut w: Vec<Key> = expected(&sb, &users, day("2026-08-01"), day("2026-08-08"))
            .into_iter()
            .map(|(u, t, s, k, c)| {
                // Where a user's own id occurs in a message, the output has its pseudonym.
                let c = c.map(|c| c.replace(&u, &p.pseudonym(&u)));
                (p.pseudonym(&u), t, s, k, c)
            })
            .collect();
        w.sort();
        w
    };
    assert_same(&rows, &want, "pseudonymized re-export");
    // Joins across runs: the rows both runs wrote carry the same ids.
    let ids = |rows: &[Row]| -> BTreeSet<(String, String)> {
        rows.iter()
            .filter(|r| r.key.1 < day("2026-08-03"))
            .map(|r| (r.message_id.clone(), r.key.0.clone()))
            .collect()
    };
    assert_eq!(
        ids(&first),
        ids(&rows),
        "the first run's rows kept their ids"
    );
    // The dead letters were replaced too: one per malformed message of the whole range.
    let dead: usize = files_under(&out.join("_dead_letter"))
        .iter()
        .map(|f| json_lines(f).len())
        .sum();
    let r1 = report(&out);
    assert!(dead > 0);
    let mut seen = BTreeSet::new();
    for f in files_under(&out.join("_dead_letter")) {
        for l in json_lines(&f) {
            let user = l["channel_user_id"].as_str().unwrap().to_owned();
            assert!(users.iter().any(|u| p.pseudonym(u) == user), "{user}");
            assert!(
                seen.insert((user, l["raw_json"].to_string())),
                "a dead letter twice: {l}"
            );
        }
    }
    assert_eq!(
        r1["privacy"]["pseudonymized"],
        serde_json::json!(["channel_user_id"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_keeps_one_policy_and_a_pseudonymizing_run_needs_its_key() {
    let sb = sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let flags = ["--format", "parquet", "--pseudonymize", "channel_user_id"];
    let o = run(
        &export(&sb, &out, "2026-08-01", "2026-08-03", &flags),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "no key: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ENGATI_ETL_PSEUDONYM_KEY"),
        "{}",
        text(&o)
    );
    run_ok(
        &export(&sb, &out, "2026-08-01", "2026-08-03", &flags),
        &sb,
        &[0, 1],
    )
    .await;
    let plain = export(
        &sb,
        &out,
        "2026-08-03",
        "2026-08-05",
        &["--format", "parquet"],
    );
    let o = run_env(&plain, &[("ENGATI_API_KEY", &sb.ids.api_key)]).await;
    assert_eq!(
        o.status.code(),
        Some(2),
        "another policy on the same output: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("one policy"),
        "{}",
        text(&o)
    );
    let other_key = [
        ("ENGATI_API_KEY", sb.ids.api_key.as_str()),
        ("ENGATI_ETL_PSEUDONYM_KEY", "another-key-of-16-bytes"),
    ];
    let o = run_env(
        &export(&sb, &out, "2026-08-03", "2026-08-05", &flags),
        &other_key,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "another key: {}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_exports_are_pseudonymized_too() {
    let sb = sandbox().await;
    let (ids, uids, _) = raw_ids(&sb);
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "jsonl",
            "--out",
            "-",
            "--pseudonymize",
            "channel_user_id,user_id",
            "--redact",
            "email",
        ],
    );
    let mut env = key_env();
    env.push(("ENGATI_API_KEY", &sb.ids.api_key));
    let o = run_env(&args, &env).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for raw in ids.iter().chain(&uids) {
        assert!(!all.contains(raw.as_str()), "raw id {raw} on stdout/stderr");
    }
    assert!(!all.contains("@mail.example.org"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_pseudonymized_run_resumes_without_duplicates() {
    let sb = sandbox().await;
    let p = privacy();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = export(
        &sb,
        &out,
        "2026-08-01",
        "2026-08-06",
        &[
            "--format",
            "parquet",
            "--pseudonymize",
            "channel_user_id,user_id",
            "--checkpoint-users",
            "4",
        ],
    );
    let mut env = key_env();
    env.push(("ENGATI_API_KEY", &sb.ids.api_key));
    let o = run_env(&with(a.clone(), &["--crash-after-journal", "3"]), &env).await;
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("crash injected"),
        "{}",
        text(&o)
    );
    let s = run_ok(&a, &sb, &[1]).await;
    assert_eq!(s["resumed"], true, "{s}");
    assert!(s["cells"]["skipped"].as_u64().unwrap() > 0, "{s}");
    let users = matching(&sb, &[("opt1", "yes")]);
    let mut want: Vec<Key> = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"))
        .into_iter()
        .map(|(u, t, s, k, c)| {
            let c = c.map(|c| c.replace(&u, &p.pseudonym(&u)));
            (p.pseudonym(&u), t, s, k, c)
        })
        .collect();
    want.sort();
    assert_same(&read_parquet(&out), &want, "resumed pseudonymized export");
}
