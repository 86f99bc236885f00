//! A campaign, its re-run, the dry run, skipped rows, status, the users table as input, and
//! sent templates in the conversation export.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_campaign_sends_each_row_once_and_a_rerun_sends_nothing() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 40, |_, _| {});
    let a = template(&sb, &input, "spring", &out);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = results(&out, "spring");
    assert_eq!(rows.len(), 40, "one result row per input row");
    assert_eq!(by_status(&rows).get("sent"), Some(&40));
    assert_matches_sandbox(&rows, &sb, true, "first run");
    let sends = sb.sends();
    let first = sends.iter().find(|s| s.recipients[0] == phone(0)).unwrap();
    assert_eq!(
        first.body["payload"]["components"][0]["parameters"][1]["text"], "5000",
        "body parameters in order, as text"
    );
    assert!(
        rows.iter()
            .all(|r| r["message_id"].as_str().unwrap().starts_with("wamid."))
    );
    let r = send_report(&out);
    assert_eq!(r["rows"]["sent"], 40);
    assert_eq!(r["requests"]["total"], 40);

    // The same command again: every key is settled; nothing is sent.
    let before = write_requests(&sb);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(write_requests(&sb), before, "a re-run sends nothing");
    assert_eq!(send_report(&out)["plan"]["already_settled"], 40);

    // New rows are sent; a settled row whose content changed is reported, not re-sent.
    let grown = people(dir.path(), 45, |i, row| {
        if i == 3 {
            row[1] = "Renamed".into();
        }
    });
    let o = run(
        &template(&sb, &grown, "spring", &out),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sb.sends().len(), 45);
    let r = send_report(&out);
    assert_eq!(r["plan"]["changed"], 1);
    assert_eq!(r["changed_rows"][0], phone(3));
    let rows = results(&out, "spring");
    assert_eq!(rows.len(), 45);
    assert_eq!(rows[3]["content_changed"], true);
    assert_matches_sandbox(&rows, &sb, true, "grown input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_invalid_phones_and_duplicates_are_skipped_with_reasons() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 12, |i, row| match i {
        1 => row[2] = "no".into(),
        2 => row[2] = String::new(),
        3 => row[2] = "0".into(),
        4 => row[0] = "12345".into(),
        5 => row[0] = "+91 98 1000 0000".into(), // the same person as row 0, written another way
        6 => row[1] = String::new(),
        _ => {}
    });
    let a = with(
        template(&sb, &input, "c", &out),
        &["--consent-column", "opt_in"],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "sent or skipped only: {}",
        text(&o)
    );
    let rows = results(&out, "c");
    assert_eq!(rows.len(), 12);
    let err = |i: usize| rows[i]["error"].as_str().unwrap_or("").to_owned();
    for i in [1, 2, 3] {
        assert_eq!(rows[i]["status"], "skipped");
        assert!(err(i).contains("no consent: column `opt_in`"), "{}", err(i));
    }
    assert!(
        err(4).contains("invalid phone number `12345`"),
        "{}",
        err(4)
    );
    assert!(
        err(5).contains("duplicate key: same row key as input row 1"),
        "{}",
        err(5)
    );
    assert!(err(6).contains("column `name` is empty"), "{}", err(6));
    assert_eq!(by_status(&rows).get("sent"), Some(&6));
    assert_eq!(sb.sends().len(), 6);
    assert_matches_sandbox(&rows, &sb, true, "skips");
    let r = send_report(&out);
    assert_eq!(r["plan"]["skipped"]["consent"], 3);
    assert_eq!(r["plan"]["skipped"]["invalid_phone"], 1);
    assert_eq!(r["plan"]["duplicates"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_sends_nothing_and_renders_every_request() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 20, |i, row| {
        if i == 7 {
            row[0] = "not a phone".into();
        }
    });
    let a = with(template(&sb, &input, "dry", &out), &["--dry-run"]);
    // No key is needed to render.
    let o = run(&a, None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        sb.requests().is_empty(),
        "a dry run makes no request at all"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("would send        19 rows in 19 requests"),
        "{stdout}"
    );
    let lines = json_lines(&out.join("sends/campaign=dry/dry-run.jsonl"));
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(
        lines[0]["path"],
        format!(
            "/whatsapp-api/v1.0/customer/{}/bot/{}/template",
            sb.ids.customer_id, sb.ids.bot_key
        )
    );
    assert_eq!(lines[0]["body"]["phoneNumber"], format!("+{}", phone(0)));
    assert_eq!(
        lines[0]["body"]["payload"]["language"]["policy"],
        "deterministic"
    );
    assert_eq!(lines[7]["status"], "skipped");
    assert!(!out.join("_state").exists(), "a dry run records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_table_of_an_export_is_an_input_and_sent_templates_appear_in_the_export() {
    let mut cfg = small();
    cfg.data.users = 80;
    cfg.data.days = 3;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let crm = dir.path().join("crm");
    let o = run(
        &with(
            export_args(&sb, "2026-08-01", "2026-08-04"),
            &[
                "--attribute",
                "segment=vip",
                "--format",
                "parquet",
                "--out",
                crm.to_str().unwrap(),
            ],
        ),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = dir.path().join("send");
    let a = with(
        send_args(&sb, "template", &crm.join("users"), "vip-optin", &out),
        &[
            "--phone-column",
            "channel_user_id",
            "--consent-column",
            "attributes.opt1",
            "--template-name",
            "order_update",
            "--template-namespace",
            "ns",
            "--param",
            "user_name",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let vip: Vec<_> = sb
        .data()
        .users()
        .into_iter()
        .filter(|u| {
            u.attributes
                .iter()
                .any(|(k, v)| k == "segment" && v == "vip")
        })
        .collect();
    let want: Vec<String> = vip
        .iter()
        .filter(|u| {
            u.channel == "whatsapp" && u.attributes.iter().any(|(k, v)| k == "opt1" && v == "yes")
        })
        .map(|u| u.channel_user_id.clone())
        .collect();
    assert!(!want.is_empty());
    let rows = results(&out, "vip-optin");
    assert_eq!(rows.len(), vip.len(), "one row per user of the table");
    let mut sent: Vec<String> = rows
        .iter()
        .filter(|r| r["status"] == "sent")
        .map(|r| r["recipient"].as_str().unwrap().to_owned())
        .collect();
    sent.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(sent, want_sorted, "WhatsApp users with opt1=yes");
    assert_matches_sandbox(&rows, &sb, true, "users table");

    // The export now sees the template in those users' conversations.
    let again = dir.path().join("again");
    let o = run(
        &with(
            export_args(&sb, "yesterday", "tomorrow"),
            &[
                "--users-file",
                write_ids(dir.path(), &want).to_str().unwrap(),
                "--format",
                "jsonl",
                "--out",
                again.to_str().unwrap(),
            ],
        ),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let templates = read_jsonl(&again)
        .into_iter()
        .filter(|r| r.key.3.as_deref() == Some("TEMPLATE"))
        .count();
    assert_eq!(
        templates,
        want.len(),
        "each sent template is in the history once"
    );
}

fn write_ids(dir: &Path, ids: &[String]) -> PathBuf {
    let p = dir.join("ids.txt");
    std::fs::write(&p, ids.join("\n")).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_counts_and_the_parquet_log_reads_back() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 10, |i, row| {
        if i == 2 {
            row[0] = "+1 202".into();
        }
    });
    let a: Vec<String> = template(&sb, &input, "pq", &out)
        .into_iter()
        .filter(|x| x != "jsonl" && x != "--format")
        .collect();
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let file = std::fs::File::open(out.join("sends/campaign=pq/results.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, 10);
    let o = run(
        &args(&[
            "send",
            "status",
            "--campaign",
            "pq",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"]["sent"], 9);
    assert_eq!(v["keys"]["skipped"], 1);
    let o = run(
        &args(&[
            "send",
            "status",
            "--campaign",
            "pq",
            "--out",
            out.to_str().unwrap(),
        ]),
        None,
    )
    .await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("sent 9"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_demo_pipeline_runs_against_the_embedded_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/send-demo.toml");
    let a = args(&[
        "send",
        "run",
        pipeline,
        "--out",
        out.to_str().unwrap(),
        "--max-rps",
        "1000",
    ]);
    let o = run_env(&a, &[]).await;
    // Relative paths in the pipeline are relative to the current directory: the repository.
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = send_report(&out);
    assert_eq!(r["plan"]["input_rows"], 20);
    assert_eq!(r["rows"]["sent"], 14);
    assert_eq!(r["rows"]["skipped"], 6);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("14 sent, 0 failed, 0 unknown"),
        "{}",
        text(&o)
    );
    let o = run_env(&a, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        send_report(&out)["requests"]["total"],
        0,
        "the second run sends nothing"
    );
}
