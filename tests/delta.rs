//! The Delta Lake sink: a table equal to the sandbox's data row for row, one commit per unit,
//! re-runs and overlapping exports replacing rather than duplicating, concurrent writers into
//! one table, and a worker killed mid-commit restarted from an empty state directory. Local
//! tables and `file://` URLs here (the object-store code path); S3 (s3s-fs) and Python's
//! `deltalake` reader in `tests/object_store.rs`.

use std::path::Path;

use crate::util::*;

fn delta_args(
    sb: &engati_etl::sandbox::SandboxHandle,
    since: &str,
    until: &str,
    out: &str,
    attrs: &[&str],
) -> Vec<String> {
    let mut a = export_args(sb, since, until);
    for at in attrs {
        a.push("--attribute".into());
        a.push((*at).into());
    }
    with(a, &["--format", "delta", "--out", out])
}

fn distinct_ids(rows: &[Row]) -> usize {
    rows.iter()
        .map(|r| &r.message_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

async fn log_versions(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_equals_the_sandbox_and_reruns_replace_instead_of_duplicating() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let t = table.to_str().unwrap();
    let a = with(
        delta_args(&sb, "2026-08-01", "2026-08-06", t, &["opt1=yes"]),
        &["--checkpoint-users", "7"],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let rows = read_delta(&table).await;
    assert_same(&rows, &want, "first export");
    // One commit per unit (5 days x ceil(users / 7) units), after the table's creation.
    let units = 5 * users.len().div_ceil(7);
    assert_eq!(log_versions(&table).await, 1 + units);

    // The same export again, and an overlapping one with more users: no duplicate.
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let b = delta_args(&sb, "2026-08-03", "2026-08-05", t, &["opt1=yes", "opt1=no"]);
    let o = run(&b, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let mut want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let extra: Vec<String> = all.iter().filter(|u| !users.contains(u)).cloned().collect();
    want.extend(expected(&sb, &extra, day("2026-08-03"), day("2026-08-05")));
    want.sort();
    let rows = read_delta(&table).await;
    assert_same(&rows, &want, "after a re-run and an overlapping export");
    assert_eq!(distinct_ids(&rows), rows.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_killed_mid_commit_and_restarted_from_an_empty_state_duplicate_nothing() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let url = format!(
        "file://{}",
        std::fs::canonicalize(dir.path())
            .unwrap()
            .join("table")
            .display()
    );
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    for (i, point) in [
        "delta::before_commit",
        "delta::after_commit",
        "delta::after_commit",
    ]
    .iter()
    .enumerate()
    {
        // A fresh state directory each time: the worker remembers nothing.
        let state = dir.path().join(format!("state-{i}"));
        let a = with(
            delta_args(&sb, "2026-08-01", "2026-08-06", &url, &["opt1=yes"]),
            &[
                "--state-dir",
                state.to_str().unwrap(),
                "--checkpoint-users",
                "7",
            ],
        );
        let armed = format!("{point}={}*off->return", 2 + i);
        let o = run_env(
            &a,
            &[("ENGATI_API_KEY", &sb.ids.api_key), ("FAILPOINTS", &armed)],
        )
        .await;
        assert!(
            o.status.code().is_none()
                && String::from_utf8_lossy(&o.stderr).contains("crash injected"),
            "killed at {armed}: {}",
            text(&o)
        );
        let rows = read_delta(&table).await;
        assert_eq!(
            distinct_ids(&rows),
            rows.len(),
            "no duplicate after a kill at {armed}"
        );
    }
    let state = dir.path().join("state-final");
    let a = with(
        delta_args(&sb, "2026-08-01", "2026-08-06", &url, &["opt1=yes"]),
        &["--state-dir", state.to_str().unwrap()],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(
        &read_delta(&table).await,
        &want,
        "after kills and a restart from nothing",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_commit_into_one_table() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let t = table.to_str().unwrap();
    let spawn = |attr: &str, state: &str| {
        let a = with(
            delta_args(&sb, "2026-08-01", "2026-08-06", t, &[attr]),
            &[
                "--state-dir",
                dir.path().join(state).to_str().unwrap(),
                "--checkpoint-users",
                "4",
            ],
        );
        let mut cmd = command(&a, &[("ENGATI_API_KEY", &sb.ids.api_key)]);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (a, b) = (spawn("opt1=yes", "state-a"), spawn("opt1=no", "state-b"));
    let (a, b) = (
        a.wait_with_output().await.unwrap(),
        b.wait_with_output().await.unwrap(),
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b));
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let rows = read_delta(&table).await;
    assert_same(&rows, &want, "two writers into one table");
}
