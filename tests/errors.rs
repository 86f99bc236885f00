//! Exit codes and error texts, and the key never leaking.

use crate::util::*;
use engati_etl::sandbox::{FaultConfig, SandboxConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_before_any_request_and_name_the_field() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o_str = out.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            with(
                export_args(&sb, "2026-08-05", "2026-08-01"),
                &["--attribute", "a=b", "--format", "parquet", "--out", o_str],
            ),
            "since 2026-08-05 must be before until 2026-08-01",
        ),
        (
            with(
                export_args(&sb, "2026-08-01", "2026-08-05"),
                &[
                    "--attribute",
                    "feedback",
                    "--format",
                    "parquet",
                    "--out",
                    o_str,
                ],
            ),
            "`feedback` must look like NAME=VALUE",
        ),
        (
            with(
                export_args(&sb, "2026-08-01", "2026-08-05"),
                &["--attribute", "a=b", "--format", "csv", "--out", o_str],
            ),
            "format (--format) `csv`",
        ),
        (
            with(
                export_args(&sb, "yesterday-ish", "2026-08-05"),
                &["--attribute", "a=b", "--format", "parquet", "--out", o_str],
            ),
            "`yesterday-ish` is not a date",
        ),
        (
            with(
                export_args(&sb, "2026-08-01", "2026-08-05"),
                &[
                    "--attribute",
                    "a=b",
                    "--format",
                    "parquet",
                    "--out",
                    "/proc/engati-etl-cannot-write",
                ],
            ),
            "not writable",
        ),
        (
            with(
                export_args(&sb, "2026-08-01", "2026-08-05"),
                &[
                    "--attribute",
                    "a=b",
                    "--page-size",
                    "1000",
                    "--format",
                    "parquet",
                    "--out",
                    o_str,
                ],
            ),
            "page_size (--page-size) 1000",
        ),
        (
            with(
                export_args(&sb, "2026-08-01", "2026-08-05"),
                &["--format", "parquet", "--out", o_str],
            ),
            "--attribute NAME=VALUE",
        ),
    ];
    for (args, needle) in cases {
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "want `{needle}` in: {}",
            text(&o)
        );
    }
    // Without a key.
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-05"),
        &["--attribute", "a=b", "--format", "parquet", "--out", o_str],
    );
    let o = run(&args, None).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ENGATI_API_KEY"),
        "{}",
        text(&o)
    );
    // An unknown key in a pipeline file.
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "[source]\nprovider = \"engati\"\nconcurency = 4\n").unwrap();
    let o = run(&["run".into(), p.to_str().unwrap().into()], Some("k")).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("concurency"),
        "{}",
        text(&o)
    );
    // An unknown flag (clap).
    let o = run(&["export".into(), "--colour".into()], None).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(sb.requests().is_empty(), "no request was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_exit_3_and_rejections_exit_4() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some("00000000-0000-0000-0000-000000000000-Revoked")).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("401"),
        "{}",
        text(&o)
    );
    assert_eq!(sb.requests().len(), 1, "401 is not retried");

    let denied = start(SandboxConfig {
        deny_access: true,
        ..small()
    })
    .await;
    let args = with(
        export_args(&denied, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&denied.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("403"),
        "{}",
        text(&o)
    );

    // A wrong customer id: 400 with code 1002, not retried, exit 4, named with its fix.
    let mut args = export_args(&sb, "2026-08-01", "2026-08-03");
    let i = args.iter().position(|a| a == "--customer-id").unwrap();
    args[i + 1] = "99999".into();
    let args = with(
        args,
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let before = sb.requests().len();
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1002")
            && err.contains("INVALID_BOT_OR_CUSTOMER_ID")
            && err.contains("customer_id"),
        "{err}"
    );
    assert_eq!(sb.requests().len(), before + 1);

    // A wrong base path: 404, exit 4.
    let mut args = export_args(&sb, "2026-08-01", "2026-08-03");
    let i = args.iter().position(|a| a == "--base-url").unwrap();
    args[i + 1] = format!("{}v2/", sb.base_url);
    let args = with(
        args,
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("404"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_failure_exits_6_and_leaves_no_partial_file() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // `messages` is a file: the sink cannot create its partitions.
    std::fs::write(out.join("messages"), b"in the way").unwrap();
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("messages"),
        "{}",
        text(&o)
    );
    let stray: Vec<_> = files_under(&out)
        .into_iter()
        .filter(|f| {
            f.to_string_lossy().ends_with(".tmp") || f.to_string_lossy().ends_with(".parquet")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_after_in_flight_work_and_exits_130() {
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            latency_ms: 40,
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
            "--concurrency",
            "2",
            "--checkpoint-users",
            "5",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let child = tokio::process::Command::new(bin())
        .args(&args)
        .env("ENGATI_API_KEY", &sb.ids.api_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    while sb
        .requests()
        .iter()
        .filter(|r| r.is_conversations())
        .count()
        < 30
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "interrupted");
    let committed = report["cells"]["committed"].as_u64().unwrap();
    assert!(
        committed > 0 && committed < report["cells"]["planned"].as_u64().unwrap(),
        "{report}"
    );
    // What was committed is exact: every row belongs to the sandbox, no duplicates.
    let rows = read_parquet(&out);
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    let all = expected(&sb, &users, day("2026-08-01"), day("2026-08-11"));
    let set: std::collections::HashSet<_> = all.iter().collect();
    assert!(rows.iter().all(|r| set.contains(&r.key)));
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| &r.message_id).collect();
    assert_eq!(ids.len(), rows.len());
    let tmp = staged_files(&out);
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_appears_in_output_logs_or_errors() {
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            fail_rate: 0.2,
            truncate_rate: 0.1,
            retry_after_secs: 0,
            ..FaultConfig::default()
        },
        ..small()
    })
    .await;
    let key = sb.ids.api_key.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-04"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
            "-vv",
        ],
    );
    let mut outputs = vec![run(&args, Some(&key)).await];
    // A failing run too: the wrong key in an error path must not show either.
    let wrong = format!("{key}X");
    outputs.push(run(&args, Some(&wrong)).await);
    let stdout_run = with(
        export_args(&sb, "2026-08-01", "2026-08-02"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "jsonl",
            "--out",
            "-",
            "-vv",
        ],
    );
    outputs.push(run(&stdout_run, Some(&key)).await);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let from_file = with(
        export_args(&sb, "2026-08-01", "2026-08-02"),
        &[
            "--attribute",
            "opt1=yes",
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--format",
            "parquet",
            "--out",
            dir.path().join("o2").to_str().unwrap(),
            "-vv",
        ],
    );
    outputs.push(run(&from_file, None).await);
    assert_eq!(outputs[0].status.code(), Some(0), "{}", text(&outputs[0]));
    assert_eq!(outputs[1].status.code(), Some(3), "{}", text(&outputs[1]));
    assert_eq!(outputs[3].status.code(), Some(0), "{}", text(&outputs[3]));
    for o in &outputs {
        let all = text(o);
        assert!(!all.contains(&key), "key leaked in process output");
        assert!(!all.contains(&key[..20]), "key prefix leaked");
    }
    for f in files_under(dir.path()) {
        if f == key_file {
            continue;
        }
        let bytes = std::fs::read(&f).unwrap();
        let hay = String::from_utf8_lossy(&bytes);
        assert!(!hay.contains(&key), "key leaked into {}", f.display());
    }
}
