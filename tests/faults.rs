//! Faults: nothing lost, nothing duplicated.

use crate::util::*;
use engati_etl::sandbox::{Fault, FaultConfig, SandboxConfig, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_faults_are_retried_and_nothing_is_lost_or_duplicated() {
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            stall_ms: 2_500,
            ..FaultConfig::default()
        },
        ..small()
    })
    .await;
    sb.script_faults(Target::Users, [Fault::Status(503), Fault::Truncate]);
    sb.script_faults(
        Target::Conversations,
        [
            Fault::Status(500),
            Fault::Status(500),
            Fault::Throttle {
                retry_after_secs: 1,
            },
            Fault::Truncate,
            Fault::Stall(2_500),
            Fault::Status(502),
            Fault::Truncate,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-08"),
        &[
            "--attribute",
            "opt1=yes",
            "--timeout-secs",
            "1",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-08")),
        "scripted faults",
    );
    let log = sb.requests();
    for kind in ["status", "throttle", "truncate", "stall"] {
        assert!(
            log.iter().any(|r| r.fault == Some(kind)),
            "fault {kind} was injected"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap();
    assert!(
        report["requests"]["retries"].as_u64().unwrap() >= 9,
        "{report}"
    );
    assert!(
        report["requests"]["decode_errors"].as_u64().unwrap() >= 3,
        "{report}"
    );
    assert!(
        report["requests"]["transport_errors"].as_u64().unwrap() >= 1,
        "the stall timed out: {report}"
    );
    assert_eq!(report["requests"]["by_status"]["429"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_at_high_rates_still_give_the_exact_data() {
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            fail_rate: 0.15,
            throttle_rate: 0.03,
            retry_after_secs: 0,
            truncate_rate: 0.1,
            latency_ms: 1,
            seed: 11,
            ..FaultConfig::default()
        },
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--max-retries",
            "12",
            "--format",
            "jsonl",
            "--gzip",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    assert_same(
        &read_jsonl(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-11")),
        "random faults",
    );
    let log = sb.requests();
    assert!(log.iter().filter(|r| r.fault.is_some()).count() > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_give_up_with_exit_5_and_name_the_request() {
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            fail_rate: 1.0,
            ..FaultConfig::default()
        },
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--users-file",
            "/dev/null",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    // An empty users file is a config error (nothing to export): exit 2 before any request.
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(sb.requests().is_empty());
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--max-retries",
            "2",
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
        err.contains("Users API") && err.contains("HTTP 500") && err.contains("3 attempts"),
        "{err}"
    );
    assert_eq!(sb.requests().len(), 3, "first attempt plus 2 retries");
}
