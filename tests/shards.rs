//! Sharded workers: N shards into one output equal one export row for row, run one after the
//! other or all at once; each shard is the single export's subset of its users.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::*;
use engati_etl::sandbox::SandboxHandle;
use engati_etl::shard::{Shard, shard_of};

const SINCE: &str = "2026-08-01";
const UNTIL: &str = "2026-08-11";

fn shard_args(sb: &SandboxHandle, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = with(
        export_args(sb, SINCE, UNTIL),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "segment=vip",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
            "--checkpoint-users",
            "3",
        ],
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// (message_id, key) of every row, sorted: what must be equal between outputs.
fn rows_of(out: &Path) -> Vec<(String, Key)> {
    let mut v: Vec<(String, Key)> = read_parquet(out)
        .into_iter()
        .map(|r| (r.message_id, r.key))
        .collect();
    v.sort();
    v
}

/// The channel-user ids in an output's `users/*.parquet` files (each user once).
fn users_table(out: &Path) -> Vec<String> {
    use arrow_array::cast::AsArray;
    let mut ids = Vec::new();
    for f in files_under(&out.join("users")) {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in r {
            let b = b.unwrap();
            let col = b
                .column_by_name("channel_user_id")
                .unwrap()
                .as_string::<i32>();
            ids.extend((0..b.num_rows()).map(|i| col.value(i).to_owned()));
        }
    }
    ids.sort();
    ids
}

async fn single_export(sb: &SandboxHandle, out: &Path) {
    let o = run(&shard_args(sb, out, &[]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn assert_equal_outputs(single: &Path, sharded: &Path) {
    let (want, got) = (rows_of(single), rows_of(sharded));
    assert!(want.len() > 100, "the sandbox should have data");
    assert_eq!(got.len(), want.len(), "rows");
    assert!(
        got == want,
        "the sharded output differs from the single export"
    );
    let users = users_table(single);
    assert_eq!(
        users_table(sharded),
        users,
        "the shards' users tables are the table"
    );
    assert!(staged_files(sharded).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_into_one_output_equal_one_export_row_for_row() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    single_export(&sb, &single).await;
    let all = rows_of(&single);
    for i in 0..3 {
        let shard = format!("{i}/3");
        let o = run(
            &shard_args(&sb, &sharded, &["--shard", &shard]),
            Some(&sb.ids.api_key),
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "shard {shard}: {}", text(&o));
        // What is there so far is exactly the single export's rows of shards 0..=i.
        let want: Vec<_> = all
            .iter()
            .filter(|(_, k)| shard_of(&k.0, 3) <= i)
            .cloned()
            .collect();
        assert!(rows_of(&sharded) == want, "after shard {shard}");
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(sharded.join(format!("_run_report-s{i}of3.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["status"], "succeeded");
        assert_eq!(
            report["options"]["state_namespace"],
            format!("export@s{i}of3")
        );
        assert!(
            sharded
                .join(format!("_state/s{i}of3/state.sqlite3"))
                .exists()
        );
    }
    assert_equal_outputs(&single, &sharded);
    // Every data file is one shard's, by its name.
    for f in message_files(&sharded, ".parquet") {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(Shard::tag_in(&name).is_some(), "{name}");
    }
    // Running a shard again changes nothing and duplicates nothing.
    let o = run(
        &shard_args(&sb, &sharded, &["--shard", "1/3"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_equal_outputs(&single, &sharded);
    // `verify` takes no --shard: it says it does not check a sharded output yet.
    let o = run(
        &[
            "verify".to_owned(),
            "--out".to_owned(),
            sharded.display().to_string(),
        ],
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("this output is sharded: verify does not check sharded outputs yet"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_running_at_once_write_one_output_equal_to_one_export() {
    let mut cfg = small();
    cfg.faults.latency_ms = 5;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    single_export(&sb, &single).await;
    // Kubernetes Indexed Job style: --shards N and JOB_COMPLETION_INDEX, all at once; slow
    // enough (2 requests in flight, 5 ms each) that their commits and staged files interleave.
    let mut children = Vec::new();
    for i in 0..3 {
        let index = i.to_string();
        let env = [
            ("ENGATI_API_KEY", sb.ids.api_key.as_str()),
            ("JOB_COMPLETION_INDEX", index.as_str()),
        ];
        let args = shard_args(&sb, &sharded, &["--shards", "3", "--concurrency", "2"]);
        children.push(command(&args, &env).output());
    }
    for (i, o) in futures_util::future::join_all(children)
        .await
        .into_iter()
        .enumerate()
    {
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {i}: {}", text(&o));
    }
    assert_equal_outputs(&single, &sharded);
    let reports: BTreeSet<String> = (0..3)
        .map(|i| format!("_run_report-s{i}of3.json"))
        .filter(|f| sharded.join(f).exists())
        .collect();
    assert_eq!(reports.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_settings_are_checked_before_any_request() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    for (flags, env, says) in [
        (vec!["--shard", "3/3"], vec![], "out of range"),
        (
            vec!["--shard", "1/3", "--shards", "4"],
            vec![],
            "give one of them",
        ),
        (vec!["--shards", "3"], vec![], "JOB_COMPLETION_INDEX"),
        (
            vec!["--shards", "3"],
            vec![("JOB_COMPLETION_INDEX", "x")],
            "not a shard index",
        ),
        (vec![], vec![("ENGATI_ETL_SHARD", "1of3")], "I/N"),
    ] {
        let mut env = env;
        env.push(("ENGATI_API_KEY", sb.ids.api_key.as_str()));
        let o = run_env(&shard_args(&sb, &out, &flags), &env).await;
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{flags:?}: {}", text(&o));
    }
    assert!(sb.requests().is_empty(), "no request before the checks");
    // One shard's state is not another's.
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let o = run(
        &shard_args(&sb, &out, &["--shard", "0/2", "--state-dir", s]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::rename(state.join("s0of2"), state.join("s1of2")).unwrap();
    let o = run(
        &shard_args(&sb, &out, &["--shard", "1/2", "--state-dir", s]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("belongs to shard 0/2"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_state_commands_take_a_shard() {
    let sb = start(small()).await;
    let base = args(&[
        "users",
        "--provider",
        "custom",
        "--base-url",
        &sb.base_url,
        "--customer-id",
        &sb.ids.customer_id,
        "--bot-key",
        &sb.ids.bot_key,
        "--attribute",
        "opt1=yes",
        "--format",
        "csv",
    ]);
    let ids = |o: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_owned())
            .collect()
    };
    let all = run(&base, Some(&sb.ids.api_key)).await;
    assert_eq!(all.status.code(), Some(0), "{}", text(&all));
    let mut union = Vec::new();
    for i in 0..2 {
        let o = run(
            &with(base.clone(), &["--shard", &format!("{i}/2")]),
            Some(&sb.ids.api_key),
        )
        .await;
        let part = ids(&o);
        assert!(part.iter().all(|id| shard_of(id, 2) == i));
        union.extend(part);
    }
    union.sort();
    assert_eq!(union, ids(&all));
    // state show finds a shard's state, and says so when asked without the shard.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(
        &shard_args(&sb, &out, &["--shard", "1/2"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let show = |extra: &[&str]| {
        let mut a = args(&["state", "show", "--out", out.to_str().unwrap(), "--json"]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let o = run(&show(&[]), None).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--shard I/N"), "{}", text(&o));
    let o = run(&show(&["--shard", "1/2"]), None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("export@s1of2"));
}

/// Shards on object storage (a `file://` URL), all at once, then one shard again from an empty
/// state directory (a fresh pod, which rebuilds its state from the output's manifests): the
/// output is the single export's rows, and its users table has each user once (a shard never
/// takes in, nor replaces, another shard's users file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_object_storage_equal_one_export_even_from_an_empty_state() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    std::fs::create_dir_all(&sharded).unwrap();
    single_export(&sb, &single).await;
    let url = format!("file://{}", sharded.display());
    let state = dir.path().join("state");
    let mut children = Vec::new();
    for i in 0..3 {
        let index = i.to_string();
        let env = [
            ("ENGATI_API_KEY", sb.ids.api_key.as_str()),
            ("JOB_COMPLETION_INDEX", index.as_str()),
        ];
        let extra = ["--shards", "3", "--state-dir", state.to_str().unwrap()];
        let args = shard_args(&sb, Path::new(&url), &extra);
        children.push(command(&args, &env).output());
    }
    for (i, o) in futures_util::future::join_all(children)
        .await
        .into_iter()
        .enumerate()
    {
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(0), "shard {i}: {}", text(&o));
    }
    assert_equal_outputs(&single, &sharded);
    let fresh = dir.path().join("fresh");
    let extra = ["--shard", "1/3", "--state-dir", fresh.to_str().unwrap()];
    let o = run(
        &shard_args(&sb, Path::new(&url), &extra),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_equal_outputs(&single, &sharded);
    // Each shard still has its own users file: shard 1 replaced only its own.
    let mut tags: Vec<String> = files_under(&sharded.join("users"))
        .iter()
        .map(|f| Shard::tag_in(&f.file_name().unwrap().to_string_lossy()).map(|s| s.tag()))
        .map(|t| t.unwrap_or_default())
        .collect();
    tags.sort();
    assert_eq!(tags, ["s0of3", "s1of3", "s2of3"], "users files");
}
