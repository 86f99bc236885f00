//! Adaptive concurrency (`--concurrency auto`) against the sandbox's capacity mode (a server
//! that works on K requests at once, queues past K and answers 429 past 2K): the output is
//! exactly the sandbox's data, and the run report shows the limit cut after 429s.

use std::time::Duration;

use crate::util::*;
use engati_etl::sandbox::{Fault, FaultConfig, SandboxConfig, Target};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_concurrency_is_cut_by_429s_and_the_output_is_complete() {
    let mut cfg = SandboxConfig {
        capacity: Some(4),
        faults: FaultConfig {
            latency_ms: 40,
            ..FaultConfig::default()
        },
        ..small()
    };
    cfg.data.users = 40;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
            "--concurrency",
            "auto",
            "--max-concurrency",
            "32",
            "--max-rps",
            "100000",
        ],
    );
    let key = sb.ids.api_key.clone();
    let export = tokio::spawn(async move { run(&a, Some(&key)).await });
    // Once the limit has grown to 4 requests in flight (the server's own count), the next
    // three Conversations requests are answered 429: the limit is above 1, so each period
    // with a 429 cuts it. Waiting is bounded by the run itself, not a clock.
    while sb.capacity_peak() < 4 {
        assert!(
            !export.is_finished(),
            "the export ended before 4 requests were in flight (peak {})",
            sb.capacity_peak()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sb.script_faults(
        Target::Conversations,
        [Fault::Throttle {
            retry_after_secs: 0,
        }; 3],
    );
    let o = export.await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-11")),
        "auto concurrency against capacity 4",
    );
    let r = report(&out);
    assert_eq!(r["options"]["concurrency"], "auto", "{r}");
    assert_eq!(r["options"]["max_concurrency"], 32, "{r}");
    let req = &r["requests"];
    let throttled = req["by_status"]["429"].as_u64().unwrap_or(0);
    assert!(throttled >= 3, "the scripted 429s were answered: {req}");
    let c = &req["concurrency"];
    let (max, last) = (
        c["max_limit"].as_u64().unwrap(),
        c["final_limit"].as_u64().unwrap(),
    );
    assert!(
        max >= 4,
        "the limit grew to the 4 requests seen in flight: {c}"
    );
    assert!(max <= 32 && last >= 1, "within 1..=max-concurrency: {c}");
    assert!(
        c["pushback_cuts"].as_u64().unwrap() >= 1,
        "the limit was cut after the 429s: {c}"
    );
    assert!(c["cuts"].as_u64().unwrap() >= c["pushback_cuts"].as_u64().unwrap());
    eprintln!("auto concurrency vs capacity 4: {throttled} 429s, limit {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_concurrency_past_2k_is_refused_and_retried_to_a_complete_output() {
    let mut cfg = SandboxConfig {
        capacity: Some(2),
        faults: FaultConfig {
            latency_ms: 20,
            ..FaultConfig::default()
        },
        ..small()
    };
    cfg.data.users = 8;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-06"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
            "--concurrency",
            "12",
            "--max-rps",
            "100000",
            "--max-retries",
            "30",
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    assert_same(
        &read_jsonl(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-06")),
        "fixed 12 against capacity 2",
    );
    let r = report(&out);
    assert_eq!(r["options"]["concurrency"], 12);
    assert!(
        r["requests"].get("concurrency").is_none(),
        "no adaptive record for a fixed limit: {r}"
    );
    // Past 2K = 4 in flight the server refused; the server never held more than 4.
    assert!(sb.capacity_peak() <= 4, "peak {}", sb.capacity_peak());
    let refused = sb.requests().iter().filter(|q| q.status == 429).count();
    assert!(refused > 0, "12 in flight against capacity 2 were refused");
}
