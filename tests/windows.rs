//! Adaptive windows (`--window auto`, README "Adaptive windows"): the same rows as fixed
//! windows under both bound readings, with about the minimum of requests; a range the API
//! refuses as too long is halved, not fatal; kills and incremental runs stay exactly once.

use crate::util::*;
use engati_etl::sandbox::{SandboxConfig, SandboxHandle};

/// 24 users over 60 days, a fifth of them dense (about 600 messages each), the rest sparse.
fn skewed() -> SandboxConfig {
    let mut c = small();
    c.data.days = 60;
    c.data.sessions_per_user = 2.0;
    c.data.dense_user_rate = 0.2;
    c.data.dense_sessions_per_user = 80.0;
    c
}

const SINCE: &str = "2026-08-01";
const UNTIL: &str = "2026-09-30";

/// The export of every user from SINCE to UNTIL with 20-message pages, plus `extra` flags.
fn export_command(sb: &SandboxHandle, out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut a = with(
        export_args(sb, SINCE, UNTIL),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--page-size",
            "20",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

async fn export(sb: &SandboxHandle, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    run(&export_command(sb, out, extra), Some(&sb.ids.api_key)).await
}

fn all_users(sb: &SandboxHandle) -> Vec<String> {
    matching(sb, &[("opt1", "yes"), ("opt1", "no")])
}

/// The fewest requests the data allows: per user, max(1, ceil(messages / page size)) with one
/// window covering the range.
fn minimum_requests(sb: &SandboxHandle, page_size: usize) -> u64 {
    all_users(sb)
        .iter()
        .map(|u| {
            let i = sb.data().user_index(u).unwrap();
            let n = sb.data().messages_between(i, day(SINCE), day(UNTIL)).len();
            n.div_ceil(page_size).max(1) as u64
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_windows_give_the_rows_of_daily_windows_with_about_the_minimum_of_requests() {
    for (start_exclusive, end_inclusive) in [(false, false), (true, true)] {
        let sb = start(SandboxConfig {
            start_exclusive,
            end_inclusive,
            ..skewed()
        })
        .await;
        let want = expected(&sb, &all_users(&sb), day(SINCE), day(UNTIL));
        let dir = tempfile::tempdir().unwrap();
        let (daily, auto) = (dir.path().join("daily"), dir.path().join("auto"));
        let o = export(&sb, &daily, &["--window", "1d"]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let o = export(&sb, &auto, &["--window", "auto", "--max-window", "60d"]).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let context = format!("start exclusive {start_exclusive}, end inclusive {end_inclusive}");
        assert_same(&read_parquet(&daily), &want, &format!("1d, {context}"));
        assert_same(&read_parquet(&auto), &want, &format!("auto, {context}"));

        let (rd, ra) = (report(&daily), report(&auto));
        let requests = |r: &serde_json::Value| r["requests"]["total"].as_u64().unwrap();
        let minimum = minimum_requests(&sb, 20);
        let dense = want.len() as u64 > 24 * 20;
        assert!(
            dense,
            "the data has users with more than a page: {}",
            want.len()
        );
        assert!(ra["windows"]["splits"].as_u64().unwrap() > 0, "{ra}");
        assert_eq!(
            ra["cells"]["planned"],
            all_users(&sb).len(),
            "one cell per user"
        );
        assert!(
            requests(&ra) >= minimum && requests(&ra) * 10 <= minimum * 13,
            "{context}: auto {} requests vs the minimum {minimum}",
            requests(&ra)
        );
        assert!(
            requests(&rd) > 5 * requests(&ra),
            "1d {} vs auto {}",
            requests(&rd),
            requests(&ra)
        );
        eprintln!(
            "adaptive windows ({context}): 1d {} requests, auto {}, minimum {minimum} ({:.3}x)",
            requests(&rd),
            requests(&ra),
            requests(&ra) as f64 / minimum as f64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_refused_as_too_long_is_halved_and_remembered_not_fatal() {
    let sb = start(SandboxConfig {
        max_range_ms: Some(10 * 86_400_000),
        ..skewed()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = export(&sb, &out, &["--window", "auto", "--max-window", "60d"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &all_users(&sb), day(SINCE), day(UNTIL)),
        "halved",
    );
    let r = report(&out);
    let w = &r["windows"];
    assert!(w["halved"].as_u64().unwrap() >= 3, "{w}");
    assert!(w["span_ms"].as_i64().unwrap() <= 10 * 86_400_000, "{w}");
    // Each refusal is a 400 that was not fatal; far fewer than the requests.
    let refused = r["requests"]["by_status"]["400"].as_u64().unwrap();
    assert!(
        refused < r["requests"]["total"].as_u64().unwrap() / 2,
        "{r}"
    );

    // A range refused even at the shortest span is the API's refusal: the run fails as for
    // any 400, naming the API's code.
    let sb = start(SandboxConfig {
        max_range_ms: Some(60_000),
        ..skewed()
    })
    .await;
    let out = dir.path().join("refused");
    let o = export(&sb, &out, &["--window", "auto"]).await;
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("INVALID_INPUT_DATE_VALUE"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_windows_killed_mid_cell_resume_exactly_once() {
    let sb = start(skewed()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let extra = [
        "--window",
        "auto",
        "--max-window",
        "20d",
        "--checkpoint-users",
        "4",
    ];
    for nth in [7, 19] {
        let a = export_command(&sb, &out, &extra);
        let armed = format!("pipeline::page={}*off->return", nth);
        let o = run_env(
            &a,
            &[("ENGATI_API_KEY", &sb.ids.api_key), ("FAILPOINTS", &armed)],
        )
        .await;
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("crash injected"),
            "killed at {armed}: {}",
            text(&o)
        );
        let rows = read_parquet(&out);
        let ids: std::collections::HashSet<&String> = rows.iter().map(|r| &r.message_id).collect();
        assert_eq!(ids.len(), rows.len(), "duplicates after a kill at {armed}");
    }
    let o = export(&sb, &out, &extra).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert_eq!(r["resumed"], true, "{r}");
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &all_users(&sb), day(SINCE), day(UNTIL)),
        "after two kills",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_runs_with_auto_windows_equal_one_export() {
    let sb = start(skewed()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let p = pipeline_file(
        dir.path(),
        &sb,
        "mode = \"incremental\"\nstart = \"2026-08-01\"\nlookback = \"1d\"\nwindow = \"auto\"\nmax_window = \"31d\"",
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes", "opt1=no"],
    );
    for until in ["2026-09-10", "2026-09-11", "2026-09-30"] {
        let o = run(
            &args(&[
                "run",
                p.to_str().unwrap(),
                "--until",
                until,
                "--page-size",
                "20",
                "--quiet",
            ]),
            Some(&sb.ids.api_key),
        )
        .await;
        assert_eq!(
            o.status.code(),
            Some(0),
            "night until {until}: {}",
            text(&o)
        );
    }
    let r = report(&out);
    assert!(
        r["sink"]["rows_replaced"].as_u64().unwrap() > 0,
        "the lookback re-read: {r}"
    );
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &all_users(&sb), day(SINCE), day(UNTIL)),
        "three nights",
    );
    // verify re-reads sampled cells on the adaptive grid and finds the output consistent.
    let o = run(
        &args(&[
            "verify",
            p.to_str().unwrap(),
            "--against-api",
            "--sample",
            "12",
            "--json",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
