//! Full exports compared row for row with the sandbox's data.

use crate::util::*;
use engati_etl::sandbox::{SandboxConfig, UsersShape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_export_equals_the_sandbox_row_for_row() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "segment=vip",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes"), ("segment", "vip")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-11"));
    assert!(
        want.len() > 100,
        "the sandbox should have data: {}",
        want.len()
    );
    let rows = read_parquet(&out);
    assert_same(&rows, &want, "parquet");
    // Each user is listed once even when both filters match (a union).
    let users_file = files_under(&out.join("users"));
    assert_eq!(users_file.len(), 1);
    // Partitions by UTC date of sent_at; no staged or empty files left.
    for f in files_under(&out) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.ends_with(".tmp"), "staged file left: {}", f.display());
        if name.ends_with(".parquet") && f.starts_with(out.join("messages")) {
            let date = f
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            assert!(date.starts_with("date=2026-08-"), "{date}");
            assert!(std::fs::metadata(&f).unwrap().len() > 0);
        }
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(
        report["messages"]["written"].as_u64().unwrap() as usize,
        want.len()
    );
    assert_eq!(report["users"].as_u64().unwrap() as usize, users.len());
    // Every row's raw_json is the API's object (unknown fields included).
    let with_extra = rows
        .iter()
        .filter(|r| r.raw_json.contains("\"wa_message_id\""))
        .count();
    assert!(with_extra > 0);
    // The users table lists the exported users once each.
    let f = std::fs::File::open(&users_file[0]).unwrap();
    let n: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(n, users.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_and_gzip_exports_equal_the_sandbox_row_for_row() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let users = matching(&sb, &[("segment", "regular")]);
    let want = expected(&sb, &users, day("2026-08-02"), day("2026-08-09"));
    for gzip in [false, true] {
        let out = dir.path().join(format!("out-{gzip}"));
        let mut args = with(
            export_args(&sb, "2026-08-02", "2026-08-09"),
            &[
                "--attribute",
                "segment=regular",
                "--format",
                "jsonl",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        if gzip {
            args.push("--gzip".into());
        }
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let suffix = if gzip { ".jsonl.gz" } else { ".jsonl" };
        assert!(!message_files(&out, suffix).is_empty());
        let rows = read_jsonl(&out);
        assert_same(&rows, &want, &format!("jsonl gzip={gzip}"));
        // sent_at is RFC 3339 UTC with milliseconds.
        let first = json_lines(&message_files(&out, suffix)[0]);
        let sent = first[0]["sent_at"].as_str().unwrap();
        assert!(
            sent.len() == 24 && sent.ends_with('Z') && sent.as_bytes()[19] == b'.',
            "{sent}"
        );
        assert!(
            first[0].get("options").is_some(),
            "null columns are written explicitly"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_reading_of_the_date_bounds_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (start_exclusive, end_inclusive) in
        [(false, false), (false, true), (true, false), (true, true)]
    {
        let mut cfg = small();
        cfg.start_exclusive = start_exclusive;
        cfg.end_inclusive = end_inclusive;
        let sb = start(cfg).await;
        let out = dir
            .path()
            .join(format!("o-{start_exclusive}-{end_inclusive}"));
        // 6h windows: more edges, several exactly on UTC midnight.
        let args = with(
            export_args(&sb, "2026-08-01", "2026-08-08"),
            &[
                "--attribute",
                "opt1=no",
                "--window",
                "6h",
                "--format",
                "parquet",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let users = matching(&sb, &[("opt1", "no")]);
        let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-08"));
        let on_edges = want.iter().filter(|k| k.1 % (6 * 3_600_000) == 0).count();
        assert!(
            on_edges > 0,
            "the data has messages exactly on window edges"
        );
        let rows = read_parquet(&out);
        assert_same(
            &rows,
            &want,
            &format!("start_exclusive={start_exclusive} end_inclusive={end_inclusive}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_messages_in_one_millisecond_are_distinct_rows() {
    let mut cfg = small();
    cfg.data.users = 40;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--page-size",
            "7",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = read_parquet(&out);
    let mut seen = std::collections::HashMap::new();
    for r in &rows {
        *seen.entry(r.key.clone()).or_insert(0) += 1;
    }
    assert!(
        seen.values().any(|&n| n >= 2),
        "the data has identical same-millisecond messages"
    );
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    assert_same(
        &rows,
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-11")),
        "page size 7",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_and_files_are_the_same_on_a_second_run() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-05"),
        &[
            "--attribute",
            "segment=regular",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first_files = message_files(&out, ".parquet");
    let mut first: Vec<(String, Key)> = read_parquet(&out)
        .into_iter()
        .map(|r| (r.message_id, r.key))
        .collect();
    first.sort();
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut second: Vec<(String, Key)> = read_parquet(&out)
        .into_iter()
        .map(|r| (r.message_id, r.key))
        .collect();
    second.sort();
    assert_eq!(first, second, "same rows and ids, no duplicates");
    assert_eq!(
        first_files,
        message_files(&out, ".parquet"),
        "same file names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_users_api_shape_is_read() {
    let shapes = [
        (UsersShape::Users, "channel_user_id"),
        (UsersShape::BareArray, "channelUserId"),
        (UsersShape::ResponseObjectArray, "user_id"),
        (UsersShape::ResponseObjectContent, "channel_user_id"),
        (UsersShape::ResponseObjectUsers, "channelUserId"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (shape, id_key)) in shapes.into_iter().enumerate() {
        let sb = start(SandboxConfig {
            users_shape: shape,
            users_id_key: id_key.into(),
            conversations_key: if i % 2 == 0 {
                "conversations"
            } else {
                "messages"
            }
            .into(),
            ..small()
        })
        .await;
        let out = dir.path().join(format!("o{i}"));
        let args = with(
            export_args(&sb, "2026-08-01", "2026-08-04"),
            &[
                "--attribute",
                "feedback=5",
                "--format",
                "jsonl",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(0), "{shape:?}: {}", text(&o));
        let users = matching(&sb, &[("feedback", "5")]);
        assert!(!users.is_empty());
        assert_same(
            &read_jsonl(&out),
            &expected(&sb, &users, day("2026-08-01"), day("2026-08-04")),
            &format!("{shape:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_users_shape_is_an_error_naming_the_keys_not_zero_users() {
    let sb = start(SandboxConfig {
        users_shape: UsersShape::Unknown,
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-04"),
        &[
            "--attribute",
            "feedback=5",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`users`") && err.contains("responseObject") && err.contains("data"),
        "{err}"
    );
    assert!(message_files(&out, ".parquet").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_file_skips_the_users_api() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let picked: Vec<String> = sb
        .data()
        .users()
        .iter()
        .step_by(3)
        .map(|u| u.channel_user_id.clone())
        .collect();
    let file = dir.path().join("users.csv");
    let mut csv = String::from("channel_user_id,user_name\n");
    for id in &picked {
        csv.push_str(&format!("{id},someone\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-06"),
        &[
            "--users-file",
            file.to_str().unwrap(),
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut ids = picked.clone();
    ids.sort();
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &ids, day("2026-08-01"), day("2026-08-06")),
        "users file",
    );
    assert!(
        sb.requests().iter().all(|r| r.is_conversations()),
        "no Users API call"
    );
    assert!(
        read_parquet(&out).iter().all(|r| r.channel.is_none()),
        "channel is unknown from a file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_dash_streams_jsonl_on_stdout() {
    let sb = start(small()).await;
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &["--attribute", "opt1=yes", "--format", "jsonl", "--out", "-"],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows: Vec<Row> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| row_from_json(&serde_json::from_str(l).unwrap()))
        .collect();
    let users = matching(&sb, &[("opt1", "yes")]);
    assert_same(
        &rows,
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-03")),
        "stdout",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_one_per_cell_plus_needed_pages() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--page-size",
            "5",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    // Minimum: per (user, day) ceil(n / 5) pages, at least one; plus one more when n is a
    // multiple of 5 (a full last page must be confirmed by an empty one); plus one for each
    // page that begins with a message identical to one before it (the sandbox repeats a bot
    // message in the same millisecond, as bots do): the page before it is asked again to tell
    // that from a shift (docs/engati-api.md, "Pages that shift").
    let mut minimum = 0usize;
    for u in &users {
        let i = sb.data().user_index(u).unwrap();
        for d in 0..10 {
            let s = day("2026-08-01") + d * 86_400_000;
            // Requests ask for [s - 1 ms, e]: count what the server returns for that.
            let (n, repeats) =
                sb.data()
                    .with_range(i, Some(s - 1), s + 86_400_000, false, false, |m| {
                        let raw: Vec<String> = m
                            .iter()
                            .map(|m| serde_json::to_string(&m.wire()).unwrap())
                            .collect();
                        let repeats = (5..raw.len())
                            .step_by(5)
                            .filter(|&k| raw[..k].contains(&raw[k]))
                            .count();
                        (m.len(), repeats)
                    });
            minimum += n / 5 + 1 + repeats;
        }
    }
    let conv = sb
        .requests()
        .iter()
        .filter(|r| r.is_conversations())
        .count();
    assert_eq!(conv, minimum, "no wasted pages");
}

/// Windows longer than a day: rows wait per date partition and are written a row group at a
/// time when their memory passes a limit (here forced tiny). Every message still lands once,
/// in its UTC date's partition, and the files hold several row groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_day_windows_spill_per_date_without_losing_rows() {
    // Enough rows (about 10,000) for several batches per 7-day unit.
    let mut cfg = small();
    cfg.data.users = 100;
    cfg.data.sessions_per_user = 60.0;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-15"),
        &[
            "--attribute",
            "opt1=yes",
            "--window",
            "7d",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let mut env: Vec<(&str, &str)> = vec![("FAILPOINTS", "files::pending_limit=return(20000)")];
    env.push(("ENGATI_API_KEY", &sb.ids.api_key));
    let o = run_env(&args, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-15"));
    let rows = read_parquet(&out);
    assert!(
        rows.len() > 8192,
        "{} rows: enough for several batches",
        rows.len()
    );
    assert_same(&rows, &want, "7d windows, 20 kB pending limit");
    let mut row_groups = 0;
    let files = message_files(&out, ".parquet");
    for entry in &files {
        let date = entry
            .parent()
            .and_then(|d| d.file_name())
            .map(|d| d.to_string_lossy().trim_start_matches("date=").to_owned())
            .unwrap();
        let f = std::fs::File::open(entry).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        row_groups += reader.metadata().num_row_groups();
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            let sent = b
                .column_by_name("sent_at")
                .unwrap()
                .as_any()
                .downcast_ref::<arrow_array::TimestampMillisecondArray>()
                .unwrap();
            for t in sent.values() {
                let d = jiff::Timestamp::from_millisecond(*t).unwrap().to_string();
                assert_eq!(
                    &d[..10],
                    date,
                    "{} is in the partition of its UTC date",
                    entry.display()
                );
            }
        }
    }
    let files = files.len();
    assert!(
        row_groups > files,
        "the limit forced several row groups per file ({row_groups} row groups in {files} files)"
    );
}

/// `raw_json` by default holds only what no other column holds (`timestamp` as sent, `file`,
/// `attachments`, unknown fields): with `sender`, `message_type`, `content` (as `response`) and
/// the message's `user_id` it is the API's object again, value for value. `--raw-json full`
/// keeps the object byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_residual_plus_the_columns_is_the_api_object() {
    use std::collections::HashMap;
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let users = matching(&sb, &[("opt1", "yes")]);
    // The API's object of every message, by its key, and its message's user_id.
    let mut sent: HashMap<Key, (String, String)> = HashMap::new();
    for u in &users {
        let i = sb.data().user_index(u).unwrap();
        for m in sb
            .data()
            .messages_between(i, day("2026-08-01"), day("2026-08-06"))
        {
            let json = serde_json::to_string(&m.wire()).unwrap();
            sent.insert(key_of(u, &m), (json, m.user_id_string()));
        }
    }
    let mut bytes = HashMap::new();
    for mode in [None, Some("residual"), Some("full")] {
        let out = dir.path().join(format!("out-{mode:?}"));
        let mut args = with(
            export_args(&sb, "2026-08-01", "2026-08-06"),
            &[
                "--attribute",
                "opt1=yes",
                "--format",
                "parquet",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        if let Some(m) = mode {
            args.extend(["--raw-json".to_string(), m.to_string()]);
        }
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let rows = read_parquet(&out);
        assert!(rows.len() > 50, "{}", rows.len());
        let mut with_extra = 0;
        for r in &rows {
            let (json, user_id) = &sent[&r.key];
            if mode == Some("full") {
                assert_eq!(&r.raw_json, json, "full: the API's object byte for byte");
                continue;
            }
            let residual: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&r.raw_json).expect("the residual is a JSON object");
            for k in ["sender", "message_type", "response", "user_id"] {
                assert!(
                    !residual.contains_key(k),
                    "{k} is in a column: {}",
                    r.raw_json
                );
            }
            assert!(residual.contains_key("timestamp"), "{}", r.raw_json);
            with_extra += usize::from(residual.contains_key("wa_message_id"));
            let mut back = residual;
            back.insert("sender".into(), r.key.2.clone().unwrap().into());
            back.insert("message_type".into(), r.key.3.clone().unwrap().into());
            back.insert("response".into(), r.key.4.clone().unwrap().into());
            back.insert("user_id".into(), user_id.clone().into());
            let original: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::Value::Object(back), original);
        }
        if mode != Some("full") {
            assert!(with_extra > 0, "unknown fields stay in the residual");
        }
        let total: usize = rows.iter().map(|r| r.raw_json.len()).sum();
        bytes.insert(mode, total);
    }
    // The default is the residual, and it is less than half of the API's text.
    assert_eq!(bytes[&None], bytes[&Some("residual")]);
    assert!(
        bytes[&None] * 2 < bytes[&Some("full")],
        "{bytes:?}: residual vs full raw_json bytes"
    );
}
