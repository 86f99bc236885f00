//! Incremental nightly runs, backfills, state commands, live arrivals.

use crate::util::*;
use engati_etl::sandbox::{LiveConfig, StoredMessage};
use std::borrow::Cow;

const INCREMENTAL: &str =
    "mode = \"incremental\"\nstart = \"2026-08-01\"\nlookback = \"1d\"\nwindow = \"1d\"";

fn late_message(ts_ms: i64, text: &'static str) -> StoredMessage {
    StoredMessage {
        ts_ms,
        ts_form: 0,
        sender: "user",
        message_type: "TEXT",
        response: Cow::Borrowed(text),
        session_uuid: 7,
        file: None,
        extra_field: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nightly_runs_equal_one_run_over_the_three_days() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let p = pipeline_file(
        dir.path(),
        &sb,
        INCREMENTAL,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    let night =
        |until: &'static str| args(&["run", p.to_str().unwrap(), "--until", until, "--quiet"]);

    // Night 1 exports everything from `start` up to Aug 5.
    let o = run(&night("2026-08-05"), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A late message for Aug 4 (inside night 2's lookback) and a user joining the segment.
    let members = matching(&sb, &[("opt1", "yes")]);
    let late_user = sb.data().user_index(&members[0]).unwrap();
    sb.data().insert(
        late_user,
        late_message(day("2026-08-04") + 43_200_000, "sorry, I sent this late"),
    );
    let joiner_id = matching(&sb, &[("opt1", "no")])
        .into_iter()
        .find(|u| {
            let i = sb.data().user_index(u).unwrap();
            !sb.data()
                .messages_between(i, day("2026-08-01"), day("2026-08-04"))
                .is_empty()
        })
        .expect("a non-member with history before Aug 4");
    let joiner = sb.data().user_index(&joiner_id).unwrap();
    sb.data().set_attribute(joiner, "opt1", "yes");

    let o = run(&night("2026-08-06"), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r2 = report(&out);
    assert!(
        r2["sink"]["rows_replaced"].as_u64().unwrap() > 0,
        "the lookback re-read replaced rows: {r2}"
    );
    let o = run(&night("2026-08-07"), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // One run over the same days, with today's users.
    let one = dir.path().join("one");
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-07"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            one.to_str().unwrap(),
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let nightly = read_parquet(&out);
    let once = read_parquet(&one);
    let mut a: Vec<(String, Key)> = nightly
        .iter()
        .map(|r| (r.message_id.clone(), r.key.clone()))
        .collect();
    let mut b: Vec<(String, Key)> = once
        .iter()
        .map(|r| (r.message_id.clone(), r.key.clone()))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), b.len(), "same number of rows");
    assert_eq!(
        a, b,
        "three nights equal one run: same rows, same message ids"
    );
    let users = matching(&sb, &[("opt1", "yes")]);
    assert_same(
        &nightly,
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-07")),
        "nightly",
    );
    assert_eq!(
        nightly
            .iter()
            .filter(|r| r.key.4.as_deref() == Some("sorry, I sent this late"))
            .count(),
        1,
        "the late message appears once"
    );
    assert!(
        nightly
            .iter()
            .any(|r| r.key.0 == joiner_id && r.key.1 < day("2026-08-04")),
        "the joiner's history before the lookback window"
    );

    // The state knows the three runs and the watermarks.
    let o = run(
        &args(&[
            "state",
            "show",
            p.to_str().unwrap(),
            "--json",
            "--user",
            &joiner_id,
        ]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .filter(|r| r["namespace"] == "incremental" && r["status"] == "succeeded")
            .count(),
        3,
        "{v}"
    );
    assert_eq!(
        v["watermarks"][0]["max_end_ms"].as_i64().unwrap(),
        day("2026-08-07")
    );
    assert_eq!(
        v["user"]["watermarks"][0]["end_ms"].as_i64().unwrap(),
        day("2026-08-07")
    );
    assert_eq!(
        v["user"]["watermarks"][0]["start_ms"].as_i64().unwrap(),
        day("2026-08-01")
    );
    let text_out = run(&args(&["state", "show", p.to_str().unwrap()]), None).await;
    assert!(
        String::from_utf8_lossy(&text_out.stdout).contains("incremental"),
        "{}",
        text(&text_out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_the_same_night_twice_changes_nothing() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let p = pipeline_file(
        dir.path(),
        &sb,
        INCREMENTAL,
        &format!("format = \"jsonl\"\nout = \"{}\"", out.display()),
        &["opt1=no"],
    );
    let a = args(&[
        "run",
        p.to_str().unwrap(),
        "--until",
        "2026-08-06",
        "--quiet",
    ]);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let files = message_files(&out, ".jsonl");
    let rows = keys(&read_jsonl(&out));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report(&out)["cells"]["planned"], 0, "nothing left to do");
    assert_eq!(message_files(&out, ".jsonl"), files);
    assert_eq!(keys(&read_jsonl(&out)), rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_resumes_after_a_crash_and_leaves_nightly_watermarks_alone() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wh");
    let p = pipeline_file(
        dir.path(),
        &sb,
        INCREMENTAL,
        &format!(
            "format = \"parquet\"\nout = \"{}\"\ncheckpoint_users = 4",
            out.display()
        ),
        &["segment=regular"],
    );
    let o = run(
        &args(&[
            "run",
            p.to_str().unwrap(),
            "--until",
            "2026-08-06",
            "--quiet",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = run(
        &args(&["state", "show", p.to_str().unwrap(), "--json"]),
        None,
    )
    .await;
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();

    // A backfill over a range overlapping the nightly one, killed after its 5th commit.
    let bf = args(&[
        "backfill",
        p.to_str().unwrap(),
        "--from",
        "2026-07-30",
        "--to",
        "2026-08-10",
        "--quiet",
    ]);
    let o = run(
        &with(bf.clone(), &["--crash-after-journal", "5"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_ne!(
        o.status.code(),
        Some(0),
        "the injected crash stops the process: {}",
        text(&o)
    );
    let o = run(&bf, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert_eq!(r["resumed"], true, "{r}");
    assert!(
        r["cells"]["skipped"].as_u64().unwrap() > 0,
        "committed cells are skipped: {r}"
    );
    assert_eq!(r["options"]["mode"], "backfill");

    let users = matching(&sb, &[("segment", "regular")]);
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-07-30"), day("2026-08-10")),
        "backfill over nightly",
    );
    assert!(staged_files(&out).is_empty());
    let after = run(
        &args(&["state", "show", p.to_str().unwrap(), "--json"]),
        None,
    )
    .await;
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(
        before["watermarks"], after["watermarks"],
        "nightly watermarks unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reset_re_exports_a_user_without_duplicates() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let p = pipeline_file(
        dir.path(),
        &sb,
        INCREMENTAL,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    let night = args(&[
        "run",
        p.to_str().unwrap(),
        "--until",
        "2026-08-08",
        "--quiet",
    ]);
    let o = run(&night, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let o = run(
        &args(&["state", "reset", p.to_str().unwrap(), "--user", &users[1]]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(
        &args(&["state", "reset", p.to_str().unwrap(), "--to", "2026-08-05"]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&night, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    // users[1]: 7 days again; everyone else: Aug 4 (lookback) .. Aug 8.
    assert_eq!(
        r["cells"]["planned"].as_u64().unwrap() as usize,
        7 + (users.len() - 1) * 4,
        "{r}"
    );
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-08")),
        "after reset",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_arrivals_during_a_run_are_picked_up_once_by_the_next_lookback() {
    let mut cfg = small();
    cfg.now_ms = Some(day("2026-08-08"));
    cfg.live = Some(LiveConfig {
        interval_ms: 5,
        per_tick: 2,
        backdate_ms: 20 * 3_600_000,
    });
    cfg.faults.latency_ms = 3;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let p = pipeline_file(
        dir.path(),
        &sb,
        INCREMENTAL,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes", "opt1=no"],
    );
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let total_before = sb.data().message_count();
    let o = run(
        &args(&[
            "run",
            p.to_str().unwrap(),
            "--until",
            "2026-08-08",
            "--quiet",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        sb.data().message_count() > total_before,
        "messages arrived during the run"
    );
    // Consistent: every row is a real message, none twice.
    let rows = read_parquet(&out);
    let now_all = expected(&sb, &users, day("2026-08-01"), day("2026-08-08"));
    let set: std::collections::HashSet<&Key> = now_all.iter().collect();
    assert!(rows.iter().all(|r| set.contains(&r.key)));
    let ids: std::collections::HashSet<&String> = rows.iter().map(|r| &r.message_id).collect();
    assert_eq!(ids.len(), rows.len());
    // Arrivals stop; the next night's lookback (1 day) covers the late ones.
    sb.pause_live(true);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let o = run(
        &args(&[
            "run",
            p.to_str().unwrap(),
            "--until",
            "2026-08-09",
            "--quiet",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-08-09")),
        "after the next night",
    );
}
