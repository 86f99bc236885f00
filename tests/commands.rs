//! The demo pipeline, `users`, `validate`.

use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pipeline_runs_against_the_embedded_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo.toml");
    let o = run(
        &[
            "run".into(),
            pipeline.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ],
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = read_parquet(&out);
    assert!(rows.len() > 1000, "{} rows", rows.len());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap();
    assert_eq!(
        report["messages"]["written"].as_u64().unwrap() as usize,
        rows.len()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("succeeded") && err.contains("messages"),
        "the summary is printed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_lists_matching_users_as_jsonl_and_csv() {
    let sb = start(small()).await;
    let base = vec![
        "users".to_string(),
        "--provider".into(),
        "custom".into(),
        "--base-url".into(),
        sb.base_url.clone(),
        "--customer-id".into(),
        sb.ids.customer_id.clone(),
        "--bot-key".into(),
        sb.ids.bot_key.clone(),
        "--attribute".into(),
        "segment=vip".into(),
        "--attribute".into(),
        "feedback=1".into(),
    ];
    let o = run(&base, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = matching(&sb, &[("segment", "vip"), ("feedback", "1")]);
    let got: Vec<String> = lines
        .iter()
        .map(|l| l["channel_user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, want);
    assert!(
        lines
            .iter()
            .all(|l| l["attributes"]["feedback"].is_string())
    );
    let o = run(&with(base, &["--format", "csv"]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let csv = String::from_utf8_lossy(&o.stdout);
    assert!(csv.starts_with("channel_user_id,channel,user_name,matched_filters,attributes"));
    assert_eq!(csv.lines().count(), want.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_the_file_then_makes_one_call() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[source]\nprovider = \"custom\"\nbase_url = \"{}\"\ncustomer_id = \"{}\"\nbot_key = \"{}\"\nattributes = [\"opt1=yes\"]\n[range]\nsince = \"2026-08-01\"\nuntil = \"2026-08-02\"\n[sink]\nout = \"{}\"\n",
            sb.base_url,
            sb.ids.customer_id,
            sb.ids.bot_key,
            dir.path().join("out").display()
        ),
    )
    .unwrap();
    let o = run(
        &["validate".into(), p.to_str().unwrap().into()],
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("connection OK"),
        "{}",
        text(&o)
    );
    assert_eq!(sb.requests().len(), 1);
    let o = run(
        &["validate".into(), p.to_str().unwrap().into()],
        Some("wrong-key"),
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(
        &[
            "validate".into(),
            "--offline".into(),
            p.to_str().unwrap().into(),
        ],
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
