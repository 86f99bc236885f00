//! Parquet and JSONL outputs on object storage (`--out s3://…`, `file://…`): the files named by
//! committed manifests equal the sandbox row for row; re-runs and overlapping exports from an
//! empty state directory replace instead of duplicating; kills at each step of a commit,
//! restarted from an empty state directory, end complete, without duplicates, without a
//! committed unit redone, and without orphans after the next run; two workers on one namespace:
//! one stops with a clear error; incremental watermarks survive an empty state directory.
//!
//! Each case runs on a `file://` URL in a plain `cargo test` (the same code path, no server)
//! and on S3 (s3s-fs, `cargo test --test tests remote_files -- --ignored`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::util::s3::S3Server;
use crate::util::*;

/// An output on object storage, and where its objects are visible as files.
struct Target {
    url: String,
    /// The objects of the output's prefix as files (a `file://` directory, or s3s-fs's).
    root: PathBuf,
    env: Vec<(&'static str, String)>,
    _s3: Option<S3Server>,
    _dir: tempfile::TempDir,
}

impl Target {
    fn file() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("lake/out");
        Target {
            url: format!("file://{}", root.display()),
            root,
            env: Vec::new(),
            _s3: None,
            _dir: dir,
        }
    }

    fn s3() -> Target {
        let s3 = S3Server::start();
        Target {
            url: s3.url("exports/engati"),
            root: s3.bucket_dir().join("exports/engati"),
            env: s3.env(),
            _s3: Some(s3),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A fresh (empty) state directory.
    fn state(&self, name: &str) -> PathBuf {
        self._dir.path().join("states").join(name)
    }

    async fn run(&self, args: &[String], key: &str, more: &[(&str, &str)]) -> std::process::Output {
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("ENGATI_API_KEY", key));
        env.extend_from_slice(more);
        run_env(args, &env).await
    }
}

/// Store files that are objects (not s3s-fs's metadata sidecars), relative to `root`.
fn objects_under(root: &Path, dir: &str) -> BTreeSet<String> {
    files_under(&root.join(dir))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.starts_with(".bucket-") && !name.ends_with(".metadata.json")
        })
        .map(|p| {
            p.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/")
        })
        .collect()
}

/// Every manifest of the output, parsed.
fn manifests(root: &Path) -> Vec<serde_json::Value> {
    objects_under(root, "_manifests")
        .into_iter()
        .map(|rel| serde_json::from_slice(&std::fs::read(root.join(rel)).unwrap()).unwrap())
        .collect()
}

/// What a reader trusts: paths added by some manifest and removed by none.
fn live(root: &Path) -> BTreeSet<String> {
    let ms = manifests(root);
    let removed: BTreeSet<&str> = ms
        .iter()
        .flat_map(|m| m["removes"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    ms.iter()
        .flat_map(|m| m["adds"].as_array().unwrap())
        .map(|f| f["path"].as_str().unwrap())
        .filter(|p| !removed.contains(p))
        .map(str::to_owned)
        .collect()
}

/// Every live object's manifest record carries the xxh3-128 of the object's bytes, and the
/// ledger of `state` (rebuilt from the manifests where it did not write them) the same.
fn assert_checksums(root: &Path, state: &Path) {
    let sum = |rel: &str| {
        let bytes = std::fs::read(root.join(rel)).unwrap();
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
    };
    let live = live(root);
    let ms = manifests(root);
    for f in ms.iter().flat_map(|m| m["adds"].as_array().unwrap()) {
        let path = f["path"].as_str().unwrap();
        if live.contains(path) {
            assert_eq!(f["checksum"].as_str(), Some(sum(path).as_str()), "{path}");
        }
    }
    let db = rusqlite::Connection::open(state.join("state.sqlite3")).unwrap();
    let mut st = db.prepare("SELECT path, checksum FROM files").unwrap();
    let rows: Vec<(String, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!rows.is_empty());
    for (path, checksum) in rows {
        assert_eq!(
            checksum,
            Some(sum(&path)),
            "ledger of {}: {path}",
            state.display()
        );
    }
}

/// Data objects in the store (messages, dead letters, users).
fn data_objects(root: &Path) -> BTreeSet<String> {
    let mut all = objects_under(root, "messages");
    all.extend(objects_under(root, "_dead_letter"));
    all.extend(objects_under(root, "users"));
    all
}

/// The message rows of the files the manifests name.
fn live_rows(root: &Path) -> Vec<Row> {
    let files: Vec<PathBuf> = live(root)
        .into_iter()
        .filter(|p| p.starts_with("messages/"))
        .map(|p| root.join(p))
        .collect();
    let (parquet, jsonl): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| p.to_string_lossy().ends_with(".parquet"));
    let mut rows = read_parquet_files(&parquet);
    for f in jsonl {
        rows.extend(json_lines(&f).iter().map(row_from_json));
    }
    rows
}

/// Asserts no object outlives the manifests: every data object in the store is live.
fn assert_no_orphans(root: &Path, context: &str) {
    let objects = data_objects(root);
    let live = live(root);
    let orphans: Vec<&String> = objects.difference(&live).collect();
    assert!(orphans.is_empty(), "{context}: orphans {orphans:?}");
    let missing: Vec<&String> = live.difference(&objects).collect();
    assert!(
        missing.is_empty(),
        "{context}: manifests name missing objects {missing:?}"
    );
}

fn export_to(
    sb: &engati_etl::sandbox::SandboxHandle,
    t: &Target,
    state: &Path,
    (since, until): (&str, &str),
    format: &str,
    attrs: &[&str],
) -> Vec<String> {
    let mut a = export_args(sb, since, until);
    for at in attrs {
        a.extend(["--attribute".to_owned(), (*at).to_owned()]);
    }
    with(
        a,
        &[
            "--format",
            format,
            "--out",
            &t.url,
            "--state-dir",
            state.to_str().unwrap(),
            "--checkpoint-users",
            "7",
        ],
    )
}

fn count_kind(root: &Path, kind: &str) -> usize {
    manifests(root).iter().filter(|m| m["kind"] == kind).count()
}

async fn exports_equal_the_sandbox_and_reruns_replace(t: &Target, format: &str) {
    let sb = start(small()).await;
    let key = sb.ids.api_key.clone();
    let range = ("2026-08-01", "2026-08-06");
    let a = export_to(&sb, t, &t.state("a"), range, format, &["opt1=yes"]);
    let o = t.run(&a, &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    assert_same(&live_rows(&t.root), &want, "first export");
    // One manifest per unit (5 days x ceil(users / 7)), the users table, start and finish.
    let units = 5 * users.len().div_ceil(7);
    assert_eq!(count_kind(&t.root, "commit"), units + 1);
    assert_eq!(
        (count_kind(&t.root, "start"), count_kind(&t.root, "finish")),
        (1, 1)
    );
    assert_no_orphans(&t.root, "first export");
    let r = report(&t.state("a"));
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["options"]["out"], t.url.as_str());
    // The local mirror keeps nothing once committed.
    assert!(files_under(&t.state("a").join("mirror")).is_empty());

    // The same export from an empty state directory: replaced, not duplicated.
    let b = export_to(&sb, t, &t.state("b"), range, format, &["opt1=yes"]);
    let o = t.run(&b, &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(report(&t.state("b"))["resumed"], false);
    assert_same(
        &live_rows(&t.root),
        &want,
        "a re-run from an empty state dir",
    );
    assert_no_orphans(&t.root, "a re-run from an empty state dir");

    // An overlapping export with more users, from another empty state directory: the rows of
    // the overlap are taken out of files of other units (downloaded, rewritten as remnants).
    let c = export_to(
        &sb,
        t,
        &t.state("c"),
        ("2026-08-03", "2026-08-05"),
        format,
        &["opt1=yes", "opt1=no"],
    );
    let o = t.run(&c, &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let extra: Vec<String> = all.iter().filter(|u| !users.contains(u)).cloned().collect();
    let mut want = want;
    want.extend(expected(&sb, &extra, day("2026-08-03"), day("2026-08-05")));
    want.sort();
    assert_same(&live_rows(&t.root), &want, "after an overlapping export");
    assert!(
        report(&t.state("c"))["sink"]["rows_replaced"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_no_orphans(&t.root, "after an overlapping export");
    assert_checksums(&t.root, &t.state("c"));
    // The users table: every user exported so far, once, in the one live users file.
    let users_files: Vec<String> = live(&t.root)
        .into_iter()
        .filter(|p| p.starts_with("users/"))
        .collect();
    assert_eq!(users_files.len(), 1, "{users_files:?}");
    let ids = read_user_ids(&t.root.join(&users_files[0]));
    assert_eq!(
        ids, all,
        "the users file after three runs from empty state dirs"
    );
}

/// The `channel_user_id`s of a users file, sorted.
fn read_user_ids(f: &Path) -> Vec<String> {
    let mut ids: Vec<String> = if f.to_string_lossy().ends_with(".parquet") {
        use arrow_array::cast::AsArray;
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        r.flat_map(|b| {
            let b = b.unwrap();
            let c = b
                .column_by_name("channel_user_id")
                .unwrap()
                .as_string::<i32>();
            (0..b.num_rows())
                .map(|i| c.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
    } else {
        json_lines(f)
            .iter()
            .map(|v| v["channel_user_id"].as_str().unwrap().to_owned())
            .collect()
    };
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_on_a_file_url_equals_the_sandbox_and_reruns_from_empty_state_replace() {
    exports_equal_the_sandbox_and_reruns_replace(&Target::file(), "parquet").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (.ci/run installs it)"]
async fn parquet_on_s3_equals_the_sandbox_and_reruns_from_empty_state_replace() {
    exports_equal_the_sandbox_and_reruns_replace(&Target::s3(), "parquet").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (.ci/run installs it)"]
async fn jsonl_on_s3_equals_the_sandbox_and_reruns_from_empty_state_replace() {
    exports_equal_the_sandbox_and_reruns_replace(&Target::s3(), "jsonl").await;
}

/// Runs `args` armed to crash at `armed`, and checks it did.
async fn crash_at(t: &Target, args: &[String], key: &str, armed: &str) {
    let o = t.run(args, key, &[("FAILPOINTS", armed)]).await;
    assert!(
        o.status.code().is_none() && String::from_utf8_lossy(&o.stderr).contains("crash injected"),
        "killed at {armed}: {}",
        text(&o)
    );
}

/// Unit commits per (run, unit): a unit committed twice would be a redone unit.
fn unit_commits(root: &Path) -> HashMap<(String, String), usize> {
    let mut n = HashMap::new();
    for m in manifests(root) {
        if let Some(unit) = m["unit"]["unit_key"].as_str() {
            let run = m["run"]["run_id"].as_str().unwrap().to_owned();
            *n.entry((run, unit.to_owned())).or_insert(0) += 1;
        }
    }
    n
}

async fn kills_restart_from_nothing(t: &Target, format: &str) {
    let sb = start(small()).await;
    let key = sb.ids.api_key.clone();
    let range = ("2026-08-01", "2026-08-06");
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    let units = 5 * users.len().div_ceil(7);
    let args = |state: &str| export_to(&sb, t, &t.state(state), range, format, &["opt1=yes"]);

    // Killed after the 3rd commit's uploads: two units committed, orphans left.
    crash_at(t, &args("k1"), &key, "remote::after_upload=2*off->return").await;
    assert_eq!(unit_commits(&t.root).len(), 2);
    assert!(
        data_objects(&t.root).len() > live(&t.root).len(),
        "orphans after a kill"
    );
    // Killed after a manifest, before the local state: the unit is committed all the same.
    crash_at(t, &args("k2"), &key, "remote::after_manifest=1*off->return").await;
    assert_eq!(unit_commits(&t.root).len(), 4);
    assert_no_orphans(&t.root, "the next start deleted the first kill's uploads");
    // Killed after the local commit, before deleting replaced objects.
    crash_at(
        t,
        &args("k3"),
        &key,
        "remote::after_local_commit=1*off->return",
    )
    .await;
    assert_eq!(unit_commits(&t.root).len(), 6);

    // A worker with an empty state directory resumes the run: committed units are skipped.
    let o = t.run(&args("k4"), &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&t.state("k4"));
    assert_eq!(r["resumed"], true, "{r}");
    let cells = r["cells"]["planned"].as_u64().unwrap();
    let skipped = r["cells"]["skipped"].as_u64().unwrap();
    assert!(skipped > 0 && skipped < cells, "{r}");
    assert_eq!(r["cells"]["committed"].as_u64().unwrap(), cells - skipped);
    let commits = unit_commits(&t.root);
    assert_eq!(commits.len(), units, "every unit committed");
    assert!(
        commits.values().all(|&n| n == 1),
        "no unit redone: {commits:?}"
    );
    assert_same(
        &live_rows(&t.root),
        &want,
        "after kills and a resume from nothing",
    );
    assert_no_orphans(&t.root, "after kills and a resume from nothing");

    // A re-run killed after its first local commit leaves the replaced objects behind (dead
    // objects); the next run, from nothing, completes and deletes them.
    crash_at(
        t,
        &args("k5"),
        &key,
        "remote::after_local_commit=0*off->return",
    )
    .await;
    assert!(
        data_objects(&t.root).len() > live(&t.root).len(),
        "dead objects after a kill"
    );
    assert_same(
        &live_rows(&t.root),
        &want,
        "readers of the manifests, mid re-run",
    );
    let o = t.run(&args("k6"), &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_same(
        &live_rows(&t.root),
        &want,
        "after a killed re-run and a restart",
    );
    assert_no_orphans(&t.root, "after a killed re-run and a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_each_commit_step_on_a_file_url_restart_from_nothing() {
    kills_restart_from_nothing(&Target::file(), "jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (.ci/run installs it)"]
async fn kills_at_each_commit_step_on_s3_restart_from_nothing() {
    kills_restart_from_nothing(&Target::s3(), "parquet").await;
}

async fn two_workers_on_one_namespace(t: &Target) {
    let sb = start(small()).await;
    let key = sb.ids.api_key.clone();
    let range = ("2026-08-01", "2026-08-06");
    let gate = t.state("gate");
    std::fs::create_dir_all(gate.parent().unwrap()).unwrap();
    let waiting = PathBuf::from(format!("{}.waiting", gate.display()));
    // Worker A claims the namespace, uploads its first unit and waits before its manifest.
    let a = export_to(&sb, t, &t.state("a"), range, "parquet", &["opt1=yes"]);
    let armed = format!("remote::gate=return({})", gate.display());
    let mut env: Vec<(&str, &str)> = t.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("ENGATI_API_KEY", key.as_str()),
        ("FAILPOINTS", armed.as_str()),
    ]);
    let mut cmd = command(&a, &env);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let worker_a = cmd.spawn().unwrap();
    // Readiness, not timing: A says when it waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !waiting.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "worker A never reached its commit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Worker B, same output and namespace, another (empty) state directory, runs to the end.
    let b = export_to(&sb, t, &t.state("b"), range, "parquet", &["opt1=yes"]);
    let o = t.run(&b, &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "worker B: {}", text(&o));
    // A goes on: its manifest's seq is taken.
    std::fs::write(&gate, b"").unwrap();
    let o = worker_a.wait_with_output().await.unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(7), "worker A: {}", text(&o));
    assert!(
        err.contains(&format!("another worker is committing to {}", t.url))
            && err.contains("state namespace `export`")
            && err.contains("run one worker per shard/namespace"),
        "{err}"
    );
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-06"));
    assert_same(&live_rows(&t.root), &want, "two workers, one namespace");
    assert_no_orphans(
        &t.root,
        "B's start deleted A's uploads; A uploaded nothing after",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_namespace_of_a_file_url_one_stops_with_a_clear_error() {
    two_workers_on_one_namespace(&Target::file()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (.ci/run installs it)"]
async fn two_workers_on_one_namespace_on_s3_one_stops_with_a_clear_error() {
    two_workers_on_one_namespace(&Target::s3()).await;
}

async fn watermarks_survive_an_empty_state(t: &Target) {
    let sb = start(small()).await;
    let key = sb.ids.api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline_file(
        dir.path(),
        &sb,
        "mode = \"incremental\"\nstart = \"2026-08-01\"\nlookback = \"1d\"\nwindow = \"1d\"",
        &format!("format = \"parquet\"\nout = \"{}\"", t.url),
        &["opt1=yes"],
    );
    let night = |until: &str, state: &str| {
        let s = t.state(state);
        args(&[
            "run",
            p.to_str().unwrap(),
            "--until",
            until,
            "--state-dir",
            s.to_str().unwrap(),
            "--quiet",
        ])
    };
    let o = t.run(&night("2026-08-05", "n1"), &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The next night in a fresh container: it starts from the watermarks (Aug 5) minus the
    // lookback, not from `start`, and replaces the re-read day instead of duplicating it.
    let o = t.run(&night("2026-08-07", "n2"), &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&t.state("n2"));
    assert_eq!(r["fetched"]["from"], "2026-08-04T00:00:00.000Z", "{r}");
    assert!(r["sink"]["rows_replaced"].as_u64().unwrap() > 0, "{r}");
    let users = matching(&sb, &[("opt1", "yes")]);
    let want = expected(&sb, &users, day("2026-08-01"), day("2026-08-07"));
    assert_same(
        &live_rows(&t.root),
        &want,
        "two nights, the second from nothing",
    );
    assert_no_orphans(&t.root, "two nights");
    // `state show` on the URL: the fresh worker's state holds both nights (the first rebuilt
    // from the manifests) and the live files' rows.
    let n2 = t.state("n2");
    let show = args(&[
        "state",
        "show",
        "--out",
        &t.url,
        "--state-dir",
        n2.to_str().unwrap(),
        "--json",
    ]);
    let o = t.run(&show, &key, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["out"], t.url.as_str());
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{v}");
    let messages = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["stream"] == "messages")
        .unwrap();
    assert_eq!(messages["rows"].as_u64(), Some(want.len() as u64), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_watermarks_on_a_file_url_survive_an_empty_state_dir() {
    watermarks_survive_an_empty_state(&Target::file()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs (.ci/run installs it)"]
async fn incremental_watermarks_on_s3_survive_an_empty_state_dir() {
    watermarks_survive_an_empty_state(&Target::s3()).await;
}
