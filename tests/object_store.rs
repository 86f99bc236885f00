//! Outputs on a real S3-compatible server (s3s-fs, started per test): a Delta table on
//! `s3://` read back by an independent reader (Python's `deltalake` 1.6.6), and a worker killed
//! mid-commit restarted with an empty state directory. These need the s3s-fs binary and the
//! Python reader, so a plain `cargo test` skips them; `.ci/run` installs both and runs them
//! (`cargo test -- --ignored`).

use std::path::{Path, PathBuf};

use crate::util::s3::{S3Server, py_deltalake};
use crate::util::*;

/// Reads the Delta table at `url` with Python's `deltalake` and returns its rows, through a
/// Parquet file the reader writes (so the same row reader checks every output).
fn read_delta_python(s3: &S3Server, url: &str, scratch: &Path) -> (Vec<Row>, i64) {
    let out = scratch.join(format!("python-read-{}.parquet", rand_name()));
    let script = r#"
import json, sys
from deltalake import DeltaTable
import pyarrow.parquet as pq
url, out, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t = DeltaTable(url, storage_options=opts)
pq.write_table(t.to_pyarrow_table(), out)
print(t.version())
"#;
    let opts: serde_json::Map<String, serde_json::Value> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    let o = std::process::Command::new(py_deltalake())
        .args(["-c", script, url, out.to_str().unwrap()])
        .arg(serde_json::Value::Object(opts).to_string())
        .output()
        .expect("python runs (install it with .ci/pydelta.sh or set PY_DELTALAKE)");
    assert!(o.status.success(), "python deltalake: {}", text(&o));
    let version = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    (read_parquet_files(&[out]), version)
}

fn rand_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn delta_s3_args(sb: &engati_etl::sandbox::SandboxHandle, url: &str, state: &Path) -> Vec<String> {
    with(
        export_args(sb, "2026-08-01", "2026-08-06"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "delta",
            "--out",
            url,
            "--state-dir",
            state.to_str().unwrap(),
            "--checkpoint-users",
            "7",
        ],
    )
}

async fn run_s3(
    s3: &S3Server,
    args: &[String],
    key: &str,
    more: &[(&str, &str)],
) -> std::process::Output {
    let env = s3.env();
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.push(("ENGATI_API_KEY", key));
    pairs.extend_from_slice(more);
    run_env(args, &pairs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs and Python deltalake (.ci/run installs them)"]
async fn a_delta_table_on_s3_reads_back_in_python_equal_to_the_sandbox() {
    let s3 = S3Server::start();
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = s3.url("tables/messages");
    let a = delta_s3_args(&sb, &url, &dir.path().join("state"));
    let o = run_s3(&s3, &a, &sb.ids.api_key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let (rows, version) = read_delta_python(&s3, &url, dir.path());
    assert_same(&rows, &want, "Python's reader on s3://");
    // Version 0 creates the table; then one commit per unit (5 days x ceil(users / 7)).
    assert_eq!(version as usize, 5 * users.len().div_ceil(7));
    // The objects are really in the bucket, partitioned by date.
    let objects: Vec<PathBuf> = s3.objects("tables/messages");
    assert!(
        objects
            .iter()
            .any(|p| p.to_string_lossy().contains("/date=2026-08-03/")),
        "{objects:?}"
    );

    // Again with an empty state directory: the table's log, not local state, prevents
    // duplicates.
    let a = delta_s3_args(&sb, &url, &dir.path().join("state-2"));
    let o = run_s3(&s3, &a, &sb.ids.api_key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (rows, _) = read_delta_python(&s3, &url, dir.path());
    assert_same(&rows, &want, "a re-run from an empty state dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs and Python deltalake (.ci/run installs them)"]
async fn a_worker_killed_mid_commit_on_s3_restarts_from_nothing_without_duplicates() {
    let s3 = S3Server::start();
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let url = s3.url("killed");
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    for (i, point) in ["delta::before_commit", "delta::after_commit"]
        .iter()
        .enumerate()
    {
        let a = delta_s3_args(&sb, &url, &dir.path().join(format!("state-{i}")));
        let armed = format!("{point}={}*off->return", 3 + i);
        let o = run_s3(&s3, &a, &sb.ids.api_key, &[("FAILPOINTS", &armed)]).await;
        assert!(
            o.status.code().is_none()
                && String::from_utf8_lossy(&o.stderr).contains("crash injected"),
            "killed at {armed}: {}",
            text(&o)
        );
        let (rows, _) = read_delta_python(&s3, &url, dir.path());
        let ids: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.message_id.as_str()).collect();
        assert_eq!(
            ids.len(),
            rows.len(),
            "no duplicate after a kill at {armed}"
        );
    }
    let a = delta_s3_args(&sb, &url, &dir.path().join("state-final"));
    let o = run_s3(&s3, &a, &sb.ids.api_key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (rows, _) = read_delta_python(&s3, &url, dir.path());
    assert_same(&rows, &want, "after kills and a restart from nothing");
}
