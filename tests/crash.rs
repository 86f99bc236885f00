//! Crash safety: the process killed at seeded events (failpoints: a page received, a unit
//! staged, a commit journaled, a commit half renamed), re-run until success, compare.

use crate::util::*;
use engati_etl::sandbox::FaultConfig;
use rand::{RngExt, SeedableRng};

async fn kill_and_rerun(format: &str, seed: u64, kills: usize) {
    let mut cfg = small();
    cfg.data.users = 40;
    cfg.faults = FaultConfig {
        latency_ms: 8,
        fail_rate: 0.02,
        retry_after_secs: 0,
        ..FaultConfig::default()
    };
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
            "--concurrency",
            "4",
            "--max-rps",
            "400",
            "--checkpoint-users",
            "3",
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // (failpoint, the highest evaluation to crash at): low enough that every run gets there.
    let events = [
        ("pipeline::page", 30u64),
        ("files::before_journal", 8),
        ("state::after_journal", 8),
        ("state::mid_apply", 20),
    ];
    let mut killed = 0;
    for _ in 0..kills {
        let (event, most) = events[rng.random_range(0..events.len())];
        let nth = rng.random_range(1..=most);
        let armed = format!("{event}={}*off->return", nth - 1);
        let o = run_env(
            &a,
            &[("ENGATI_API_KEY", &sb.ids.api_key), ("FAILPOINTS", &armed)],
        )
        .await;
        assert!(
            o.status.code().is_none()
                && String::from_utf8_lossy(&o.stderr).contains("crash injected"),
            "the run was killed at {armed}: {}",
            text(&o)
        );
        killed += 1;
        // Whatever the moment of the kill, a reader sees no staged files after recovery, and
        // never a duplicate.
        let rows = if format == "parquet" {
            read_parquet(&out)
        } else {
            read_jsonl(&out)
        };
        let ids: std::collections::HashSet<&String> = rows.iter().map(|r| &r.message_id).collect();
        assert_eq!(ids.len(), rows.len(), "duplicates after a kill at {armed}");
    }
    let mut reruns = 0;
    loop {
        reruns += 1;
        let o = run(&a, Some(&sb.ids.api_key)).await;
        if o.status.code() == Some(0) {
            break;
        }
        assert!(reruns < 5, "{}", text(&o));
    }
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let rows = if format == "parquet" {
        read_parquet(&out)
    } else {
        read_jsonl(&out)
    };
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-11"));
    assert_same(&rows, &want, &format!("{format} after {killed} kills"));
    assert!(staged_files(&out).is_empty(), "{:?}", staged_files(&out));
    let r = report(&out);
    eprintln!(
        "crash test ({format}, seed {seed}): {killed} kills, {reruns} final run(s), {} rows, 0 duplicates; last run resumed={} with {} cells skipped",
        rows.len(),
        r["resumed"],
        r["cells"]["skipped"]
    );
    assert_eq!(killed, kills);
    assert_eq!(r["resumed"], true, "the last run resumed the killed one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_export_killed_at_random_points_ends_exactly_once() {
    kill_and_rerun("parquet", 20261122, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_export_killed_at_random_points_ends_exactly_once() {
    kill_and_rerun("jsonl", 7, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_journal_and_rename_is_rolled_forward() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-06"),
        &[
            "--attribute",
            "opt1=yes",
            "--checkpoint-users",
            "4",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(
        &with(a.clone(), &["--crash-after-journal", "3"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("crash injected"),
        "{}",
        text(&o)
    );
    // The third commit is journaled but its files are still staged.
    assert!(
        !staged_files(&out).is_empty(),
        "staged files are left by the crash"
    );
    let committed_before = message_files(&out, ".parquet").len();
    // `state show` recovers: the staged files of the journaled commit appear.
    let o = run(
        &args(&["state", "show", "--out", out.to_str().unwrap()]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(staged_files(&out).is_empty());
    assert!(
        message_files(&out, ".parquet").len() > committed_before,
        "rolled forward"
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-06")),
        "after roll-forward",
    );
    assert_eq!(report(&out)["resumed"], true);
}
