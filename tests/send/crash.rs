//! Crashes at seeded points (the `fail` crate's crash points abort the process as `kill -9`
//! would): after planning, with a request recorded in flight but not sent, and with a request
//! answered but the answer not recorded. Re-runs never send a row twice; rows whose answer was
//! lost are settled by reconciliation; a row that never left stays unknown.

use std::os::unix::process::ExitStatusExt;

use super::*;

async fn crash_at(a: &[String], key: &str, failpoint: &str) {
    let o = run_env(a, &[("ENGATI_API_KEY", key), ("FAILPOINTS", failpoint)]).await;
    assert_eq!(
        o.status.signal(),
        Some(6),
        "the binary under test has the crash point {failpoint} (built with fault-injection): {}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_seeded_points_a_campaign_never_sends_a_row_twice() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 40, |_, _| {});
    let a = with(template(&sb, &input, "k", &out), &["--concurrency", "1"]);
    let key = sb.ids.api_key.clone();
    crash_at(&a, &key, "send::after_plan=return").await;
    assert!(sb.sends().is_empty(), "planned, nothing sent");
    // The 5th answer is lost: the sandbox has 5 sends, the ledger 4 sent and 1 in flight.
    crash_at(&a, &key, "send::after_response=4*off->return").await;
    assert_eq!(sb.sends().len(), 5);
    // The 7th row of the next run is recorded in flight, then the process dies before sending.
    crash_at(&a, &key, "send::after_in_flight=6*off->return").await;
    assert_eq!(sb.sends().len(), 11);
    crash_at(&a, &key, "send::after_response=9*off->return").await;
    assert_eq!(sb.sends().len(), 21);
    let o = run(&a, Some(&key)).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "one row stays unknown: {}",
        text(&o)
    );
    let rows = results(&out, "k");
    assert_eq!(rows.len(), 40);
    assert_matches_sandbox(&rows, &sb, true, "after 4 crashes");
    let counts = by_status(&rows);
    assert_eq!(counts.get("sent"), Some(&39), "{counts:?}");
    assert_eq!(counts.get("unknown"), Some(&1), "{counts:?}");
    assert_eq!(sb.sends().len(), 39, "every row received once, none twice");
    let unknown = rows.iter().find(|r| r["status"] == "unknown").unwrap();
    assert_eq!(unknown["row_key"], phone(11), "the row that never left");
    assert_eq!(unknown["settled_by"], "crash");
    let settled: Vec<_> = rows
        .iter()
        .filter(|r| r["settled_by"] == "reconciliation")
        .map(|r| r["row_key"].clone())
        .collect();
    assert_eq!(
        settled,
        vec![serde_json::json!(phone(4)), serde_json::json!(phone(21))],
        "lost answers found in the history"
    );
    // The user retries the unknown row: it is sent once.
    let o = run(
        &args(&[
            "send",
            "retry",
            "--campaign",
            "k",
            "--out",
            out.to_str().unwrap(),
            "--status",
            "unknown",
            "--base-url",
            &sb.base_url,
            "--quiet",
        ]),
        Some(&key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = results(&out, "k");
    assert_eq!(by_status(&rows).get("sent"), Some(&40));
    assert_matches_sandbox(&rows, &sb, true, "after retry");
    assert_eq!(rows[11]["manual_retries"], 1);
    assert_eq!(rows[11]["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_unknown_rows_first_settles_those_the_history_shows() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 8, |_, _| {});
    let a = with(template(&sb, &input, "rt", &out), &["--concurrency", "1"]);
    let key = sb.ids.api_key.clone();
    crash_at(&a, &key, "send::after_response=2*off->return").await;
    assert_eq!(sb.sends_count(), 3, "the third answer was lost");
    let retry = args(&[
        "send",
        "retry",
        "--campaign",
        "rt",
        "--out",
        out.to_str().unwrap(),
        "--status",
        "unknown",
        "--base-url",
        &sb.base_url,
        "--quiet",
    ]);
    let o = run(&retry, Some(&key)).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "rows 4-8 are still pending: {}",
        text(&o)
    );
    assert_eq!(
        sb.sends_count(),
        3,
        "the row found in the history is not sent again"
    );
    let rows = results(&out, "rt");
    assert_eq!(rows[2]["status"], "sent");
    assert_eq!(rows[2]["settled_by"], "reconciliation");
    assert_eq!(send_report(&out)["reconciliation"]["settled_sent"], 1);
    let o = run(&a, Some(&key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_matches_sandbox(&results(&out, "rt"), &sb, true, "after retry and re-run");
    assert_eq!(sb.sends_count(), 8);
}
