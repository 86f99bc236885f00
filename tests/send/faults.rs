//! Faults: refused before processing (500, 429) and processed then failed (500, stall). Every
//! row's final status matches what the sandbox received; reconciliation settles what the
//! history shows; retries are the user's decision.

use super::*;
use engati_etl::sandbox::SandboxConfig;
use engati_etl::sandbox::write::{WriteConfig, WriteFault};

fn faulty(seed: u64) -> SandboxConfig {
    SandboxConfig {
        write: WriteConfig {
            refuse_500_rate: 0.05,
            refuse_429_rate: 0.1,
            retry_after_secs: 0,
            fail_after_rate: 0.1,
            stall_after_rate: 0.03,
            stall_ms: 2_500,
            seed,
            ..WriteConfig::default()
        },
        ..small()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_final_status_matches_what_the_sandbox_received() {
    let sb = start(faulty(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 150, |_, _| {});
    let a = with(
        template(&sb, &input, "f", &out),
        &["--concurrency", "8", "--timeout-secs", "1"],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    let rows = results(&out, "f");
    assert_eq!(rows.len(), 150);
    let counts = by_status(&rows);
    let r = send_report(&out);
    // Processed-then-failed requests were unknown, then found in the history.
    let rc = &r["reconciliation"];
    assert!(rc["settled_sent"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(
        r["unknown_before_reconcile"].as_u64().unwrap(),
        rc["checked"].as_u64().unwrap()
    );
    // Refused-before-processing 500s stay unknown (nothing to find); 429s were retried.
    assert!(r["requests"]["by_status"]["429"].as_u64().unwrap() > 0);
    assert!(r["requests"]["retries"].as_u64().unwrap() > 0);
    let unknown = counts.get("unknown").copied().unwrap_or(0);
    assert_eq!(
        o.status.code(),
        Some(if unknown > 0 { 1 } else { 0 }),
        "{}",
        text(&o)
    );
    assert_eq!(counts.get("failed"), None);
    assert_matches_sandbox(&rows, &sb, true, "faults");
    let processed_then_failed = sb
        .sends()
        .iter()
        .filter(|s| s.fault_after.is_some())
        .count();
    assert!(processed_then_failed > 5, "{processed_then_failed}");

    // A re-run sends nothing: unknown rows are never re-sent automatically.
    let before = write_requests(&sb);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(
        o.status.code(),
        Some(if unknown > 0 { 1 } else { 0 }),
        "{}",
        text(&o)
    );
    assert_eq!(write_requests(&sb), before);

    // The user decides to retry the unknown rows: a second, audited attempt.
    if unknown > 0 {
        let retry = args(&[
            "send",
            "retry",
            "--campaign",
            "f",
            "--out",
            out.to_str().unwrap(),
            "--status",
            "unknown",
            "--base-url",
            &sb.base_url,
            "--max-rps",
            "2000",
            "--timeout-secs",
            "1",
            "--quiet",
        ]);
        let o = run(&retry, Some(&sb.ids.api_key)).await;
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        let rows = results(&out, "f");
        assert!(
            rows.iter().any(|r| r["manual_retries"] == 1),
            "retried rows are marked"
        );
        assert_matches_sandbox(&rows, &sb, true, "after retry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_unknown_until_reconciliation_finds_the_message() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 6, |_, _| {});
    // Row 1: processed, then 500. Row 2: refused before processing (500). Row 3: 429 once.
    sb.script_write_faults([
        WriteFault::FailAfter(500),
        WriteFault::Refuse(500),
        WriteFault::Throttle(0),
    ]);
    let a = with(template(&sb, &input, "r", &out), &["--concurrency", "1"]);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let rows = results(&out, "r");
    assert_eq!(rows[0]["status"], "sent");
    assert_eq!(rows[0]["settled_by"], "reconciliation");
    assert_eq!(rows[0]["http_status"], 500);
    assert_eq!(rows[1]["status"], "unknown");
    assert!(
        rows[1]["error"]
            .as_str()
            .unwrap()
            .contains("may have been processed"),
        "{}",
        rows[1]
    );
    assert_eq!(rows[2]["status"], "sent");
    assert_eq!(rows[2]["attempts"], 2, "429 then 200");
    assert_matches_sandbox(&rows, &sb, true, "scripted");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.is_empty() || !stderr.contains(&sb.ids.api_key));

    // `send status --reconcile` leaves it unknown (the sandbox never received it).
    let o = run(
        &args(&[
            "send",
            "status",
            "--campaign",
            "r",
            "--out",
            out.to_str().unwrap(),
            "--reconcile",
            "--base-url",
            &sb.base_url,
            "--json",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"]["unknown"], 1);
    assert_eq!(v["unknown"][0]["row_key"], phone(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_whose_answer_was_lost_is_settled_per_recipient() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 5, |_, _| {});
    sb.script_write_faults([WriteFault::FailAfter(502)]);
    let a = with(
        send_args(&sb, "broadcast", &input, "b", &out),
        &[
            "--user-id-column",
            "phone",
            "--title",
            "T",
            "--message",
            "Hello from the bot",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = results(&out, "b");
    assert!(
        rows.iter()
            .all(|r| r["status"] == "sent" && r["settled_by"] == "reconciliation"),
        "{rows:?}"
    );
    assert_eq!(send_report(&out)["unknown_before_reconcile"], 5);
    assert_matches_sandbox(&rows, &sb, true, "broadcast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_finishes_requests_in_flight_exits_130_and_a_rerun_sends_the_rest() {
    let sb = start(SandboxConfig {
        faults: engati_etl::sandbox::FaultConfig {
            latency_ms: 30,
            ..Default::default()
        },
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 120, |_, _| {});
    let a = with(template(&sb, &input, "int", &out), &["--concurrency", "2"]);
    let mut child = command(&a, &[("ENGATI_API_KEY", &sb.ids.api_key)])
        .spawn()
        .unwrap();
    while sb.sends_count() < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = child.id().unwrap() as i32;
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(130));
    let rows = results(&out, "int");
    let counts = by_status(&rows);
    assert_eq!(
        counts.get("in_flight"),
        None,
        "requests in flight were answered and recorded"
    );
    assert_eq!(counts.get("sent").copied().unwrap_or(0), sb.sends_count());
    assert!(
        counts.get("pending").copied().unwrap_or(0) > 0,
        "{counts:?}"
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_matches_sandbox(&results(&out, "int"), &sb, true, "after Ctrl-C");
    assert_eq!(sb.sends_count(), 120);
}
