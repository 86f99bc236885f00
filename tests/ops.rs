//! Operations: the JSON summary line, JSON logs, the metrics file, the rejects exit code, the
//! run's timeline, shell completions and the man page.

use std::collections::BTreeMap;

use crate::util::*;

fn export_parquet(sb: &engati_etl::sandbox::SandboxHandle, out: &std::path::Path) -> Vec<String> {
    with(
        export_args(sb, "2026-08-01", "2026-08-04"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    )
}

fn stdout_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn last_json(text: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(text);
    let line = text.lines().last().expect("a last line");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Asserts the summary's figures are the run report's.
fn assert_summary_is_the_report(s: &serde_json::Value, r: &serde_json::Value) {
    assert_eq!(s["run_id"], r["run_id"]);
    assert_eq!(s["outcome"], r["status"]);
    assert_eq!(s["messages"], r["messages"]);
    assert_eq!(s["cells"], r["cells"]);
    assert_eq!(s["users"], r["users"]);
    assert_eq!(s["requests"]["total"], r["requests"]["total"]);
    assert_eq!(s["requests"]["retries"], r["requests"]["retries"]);
    assert_eq!(s["bytes"]["received"], r["requests"]["bytes_received"]);
    assert_eq!(s["bytes"]["written"], r["sink"]["bytes_written"]);
    assert_eq!(s["files_written"], r["sink"]["files_written"]);
    assert_eq!(s["wall_time_ms"], r["duration_ms"]);
    let by_class: u64 = s["requests"]["by_class"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(by_class, r["requests"]["total"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_stdout_line_is_a_json_summary_equal_to_the_run_report() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&export_parquet(&sb, &out), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines = stdout_lines(&o);
    assert_eq!(lines.len(), 1, "nothing else on stdout: {}", text(&o));
    let s = last_json(&o.stdout);
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["command"], "export");
    assert_eq!(s["pipeline"], "export");
    assert_eq!(s["output"], out.to_str().unwrap());
    assert_eq!(
        s["report_file"],
        out.join("_run_report.json").to_str().unwrap()
    );
    assert_summary_is_the_report(&s, &report(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_out_dash_rows_stay_alone_on_stdout_and_the_summary_goes_to_stderr() {
    let sb = start(small()).await;
    let args = with(
        export_args(&sb, "2026-08-01", "2026-08-03"),
        &["--attribute", "opt1=yes", "--format", "jsonl", "--out", "-"],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = stdout_lines(&o);
    assert!(!rows.is_empty());
    for l in &rows {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v.get("message_id").is_some(), "only rows on stdout: {l}");
    }
    let s = last_json(&o.stderr);
    assert_eq!(s["outcome"], "succeeded");
    assert_eq!(s["output"], "-");
    assert_eq!(
        s["messages"]["written"].as_u64().unwrap(),
        rows.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_before_starting_still_ends_with_a_summary() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = with(
        export_args(&sb, "2026-08-05", "2026-08-01"),
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
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let s = last_json(&o.stdout);
    assert_eq!(s["outcome"], "failed");
    assert_eq!(s["exit_code"], 2);
    assert!(s["run_id"].is_null());
    assert!(s["error"].as_str().unwrap().contains("since"), "{s}");
}

fn rejecting() -> engati_etl::sandbox::SandboxConfig {
    let mut cfg = small();
    cfg.data.malformed_rate = 0.05;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rejects_exit_code_decides_how_a_run_with_dead_letters_ends() {
    let sb = start(rejecting()).await;
    let dir = tempfile::tempdir().unwrap();
    for (flags, code) in [
        (vec![], 1),
        (vec!["--rejects-exit-code", "0"], 0),
        (vec!["--rejects-exit-code", "10"], 10),
    ] {
        let out = dir.path().join(format!("out{code}"));
        let args = with(export_parquet(&sb, &out), &flags);
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert_eq!(o.status.code(), Some(code), "{flags:?}: {}", text(&o));
        let s = last_json(&o.stdout);
        assert_eq!(s["outcome"], "completed_with_rejects");
        assert_eq!(s["exit_code"], code);
        assert!(s["messages"]["rejected"].as_u64().unwrap() > 0);
    }
    let out = dir.path().join("taken");
    let o = run(
        &with(export_parquet(&sb, &out), &["--rejects-exit-code", "5"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(2),
        "5 means 'source unavailable': {}",
        text(&o)
    );
    let o = run_env(
        &export_parquet(&sb, &dir.path().join("env")),
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("ENGATI_ETL_REJECTS_EXIT_CODE", "0"),
        ],
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "the variable works too: {}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_run_id() {
    let mut cfg = rejecting();
    cfg.faults.throttle_rate = 0.25;
    cfg.faults.retry_after_secs = 0;
    cfg.faults.latency_ms = 20;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Heartbeats every second too: if the run lasts that long, they are JSON lines as well.
    let args = with(
        export_parquet(&sb, &out),
        &["--log-format", "json", "-v", "--heartbeat-secs", "1"],
    );
    let args: Vec<String> = args.into_iter().filter(|a| a != "--quiet").collect();
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let mut levels = BTreeMap::new();
    let run_id = report(&out)["run_id"].clone();
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for k in ["timestamp", "level", "target", "message", "run_id"] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        assert!(v["run_id"].is_null() || v["run_id"] == run_id, "{line}");
        *levels
            .entry(v["level"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert!(
        levels.get("INFO").copied().unwrap_or(0) > 0,
        "{levels:?}\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("Retrying") && l.contains(run_id.as_str().unwrap())),
        "a retry is logged with its run id and fields:\n{stderr}"
    );
    let env = run_env(
        &with(
            export_parquet(&sb, &dir.path().join("env")),
            &["--since", "2026-08-09", "--until", "2026-08-01"],
        ),
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("ENGATI_ETL_LOG_FORMAT", "json"),
        ],
    )
    .await;
    assert_eq!(env.status.code(), Some(2));
    let err: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&env.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(
        err["level"], "ERROR",
        "the error that ends a command is a JSON line too"
    );
    assert_eq!(err["fields"]["exit_code"], 2);
}

/// `name{labels} value` lines of a metrics file, by name and sorted labels.
pub fn metric_values(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
        let mut ls: Vec<&str> = labels
            .trim_end_matches('}')
            .split(',')
            .filter(|l| !l.is_empty() && !l.starts_with("pipeline="))
            .collect();
        ls.sort();
        out.insert(
            format!("{name}{{{}}}", ls.join(",")),
            value.parse().unwrap(),
        );
    }
    out
}

/// The metrics a run report implies: (series without the pipeline label, value).
fn expected_series(r: &serde_json::Value) -> Vec<(&'static str, f64)> {
    let n = |v: &serde_json::Value| v.as_u64().unwrap() as f64;
    let status = |s: &str| {
        r["requests"]["by_status"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(s))
            .map(|(_, v)| n(v))
            .sum::<f64>()
    };
    vec![
        (
            "engati_etl_messages_total{status=\"written\"}",
            n(&r["messages"]["written"]),
        ),
        (
            "engati_etl_messages_total{status=\"rejected\"}",
            n(&r["messages"]["rejected"]),
        ),
        (
            "engati_etl_cells_total{status=\"committed\"}",
            n(&r["cells"]["committed"]),
        ),
        (
            "engati_etl_cells_total{status=\"planned\"}",
            n(&r["cells"]["planned"]),
        ),
        ("engati_etl_requests_total{class=\"2xx\"}", status("2")),
        ("engati_etl_requests_total{class=\"4xx\"}", status("4")),
        ("engati_etl_retries_total{}", n(&r["requests"]["retries"])),
        (
            "engati_etl_received_bytes_total{}",
            n(&r["requests"]["bytes_received"]),
        ),
        (
            "engati_etl_written_bytes_total{}",
            n(&r["sink"]["bytes_written"]),
        ),
        (
            "engati_etl_files_written_total{}",
            n(&r["sink"]["files_written"]),
        ),
        (
            "engati_etl_run_duration_seconds{}",
            n(&r["duration_ms"]) / 1000.0,
        ),
        ("engati_etl_exit_code{}", 1.0),
        ("engati_etl_up{}", 0.0),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_file_has_the_run_reports_figures_with_the_pipeline_label() {
    let sb = start(rejecting()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let metrics = dir.path().join("engati.prom");
    let pipeline = pipeline_file(
        dir.path(),
        &sb,
        "since = \"2026-08-01\"\nuntil = \"2026-08-04\"",
        &format!("out = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    let args = args(&[
        "run",
        pipeline.to_str().unwrap(),
        "--quiet",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let text = std::fs::read_to_string(&metrics).unwrap();
    let name = pipeline.file_stem().unwrap().to_str().unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.contains(&format!("pipeline=\"{name}\"")), "{line}");
    }
    let m = metric_values(&text);
    let r = report(&out);
    for (series, want) in expected_series(&r) {
        assert_eq!(m.get(series), Some(&want), "{series} in\n{text}");
    }
    let finished = engati_etl::time::parse_rfc3339_ms(r["finished_at"].as_str().unwrap()).unwrap();
    let last = m["engati_etl_last_success_timestamp_seconds{}"];
    assert!(
        (last * 1000.0 - finished as f64).abs() < 2.0,
        "last success {last} vs {finished}"
    );
    let s = last_json(&o.stdout);
    assert_eq!(s["metrics_file"], metrics.to_str().unwrap());
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_reports_timeline_adds_up_to_its_totals() {
    let mut cfg = small();
    cfg.faults.throttle_rate = 0.05;
    cfg.faults.retry_after_secs = 0;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&export_parquet(&sb, &out), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    let t = &r["timeline"];
    assert_eq!(t["bucket_ms"], 1000);
    let buckets = t["buckets"].as_array().unwrap();
    assert!(!buckets.is_empty() && buckets.len() <= engati_etl::timeline::MAX_BUCKETS);
    let sum = |k: &str| buckets.iter().map(|b| b[k].as_u64().unwrap()).sum::<u64>();
    let requests = sum("requests_2xx")
        + sum("requests_3xx")
        + sum("requests_4xx")
        + sum("requests_5xx")
        + sum("transport_errors");
    assert_eq!(requests, r["requests"]["total"].as_u64().unwrap());
    assert_eq!(sum("retries"), r["requests"]["retries"].as_u64().unwrap());
    assert_eq!(
        sum("throttled"),
        r["requests"]["by_status"]["429"].as_u64().unwrap_or(0)
    );
    assert_eq!(
        sum("cells_committed"),
        r["cells"]["committed"].as_u64().unwrap()
    );
    assert_eq!(
        sum("rows_committed"),
        r["messages"]["written"].as_u64().unwrap()
    );
    assert_eq!(
        sum("bytes_received"),
        r["requests"]["bytes_received"].as_u64().unwrap()
    );
    assert_eq!(sum("latency_count"), requests - sum("transport_errors"));
}

#[tokio::test]
async fn completions_and_the_man_page_come_from_the_cli() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&args(&["completions", shell]), None).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(script.contains("engati-etl"), "{shell}");
        for flag in [
            "--metrics-file",
            "--rejects-exit-code",
            "--pseudonymize",
            "--log-format",
        ] {
            assert!(
                script.contains(flag.trim_start_matches('-')),
                "{shell} completes {flag}"
            );
        }
    }
    let o = run(&args(&["manpage"]), None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH engati-etl"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &args(&["manpage", "--out-dir", dir.path().to_str().unwrap()]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for page in ["engati-etl.1", "engati-etl-run.1", "engati-etl-report.1"] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python's prometheus_client: PROMETHEUS_PY (bash .ci/run sets it up with .ci/ops/setup.sh)"]
async fn the_metrics_file_parses_with_prometheus_clients_own_parsers() {
    let py =
        std::env::var("PROMETHEUS_PY").expect("PROMETHEUS_PY is not set: run .ci/ops/setup.sh DIR");
    let sb = start(rejecting()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let metrics = dir.path().join("engati.prom");
    let args = with(
        export_parquet(&sb, &out),
        &["--metrics-file", metrics.to_str().unwrap()],
    );
    let o = run(&args, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/ops/parse_metrics.py");
    let p = tokio::process::Command::new(py)
        .args([script, metrics.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let v: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(v["pipelines"], serde_json::json!(["export"]));
    let parsed = &v["samples"];
    let ours = metric_values(&std::fs::read_to_string(&metrics).unwrap());
    assert_eq!(parsed.as_object().unwrap().len(), ours.len(), "{v}");
    for (series, value) in &ours {
        assert_eq!(parsed[series].as_f64(), Some(*value), "{series}");
    }
    let r = report(&out);
    assert_eq!(
        parsed["engati_etl_messages_total{status=\"written\"}"].as_u64(),
        r["messages"]["written"].as_u64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_the_live_metrics_while_a_run_goes() {
    let mut cfg = small();
    cfg.faults.latency_ms = 300;
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let args = with(
        export_parquet(&sb, &dir.path().join("out")),
        &[
            "--concurrency",
            "2",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let mut child = command(&args, &[("ENGATI_API_KEY", &sb.ids.api_key)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut served = None;
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(&url).await {
            served = Some((r.headers().clone(), r.text().await.unwrap()));
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (headers, body) = served.expect("the metrics were served while the run went");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        body.lines()
            .any(|l| l == "engati_etl_up{pipeline=\"export\"} 1.0"),
        "{body}"
    );
    assert!(body.contains("outcome=\"running\""), "{body}");
    let _ = child.kill().await;
}
