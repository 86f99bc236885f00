//! What a new user runs into, by class: a stop (signal, closed pipe) stops the requests at once;
//! deterministic failures fail fast with what came back; secrets never show and every id
//! reaches its own endpoint or is refused; the tool says what will happen; conversations keep
//! the API's order for ties; help and summaries say the right thing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::util::*;
use engati_etl::sandbox::{FaultConfig, SandboxConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A server on 127.0.0.1 that answers every request with `response` (raw HTTP), counting them.
async fn canned(response: &'static str) -> (String, Arc<AtomicUsize>) {
    let (url, count, _) = recording(response).await;
    (url, count)
}

/// [`canned`], also recording each request's target (path and query, as sent).
async fn recording(
    response: &'static str,
) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, t) = (count.clone(), targets.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (c, t) = (c.clone(), t.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&got).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                t.lock().unwrap().push(target);
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, count, targets)
}

/// The args without `--quiet` (to see the summary and heartbeats).
fn loud(a: Vec<String>) -> Vec<String> {
    a.into_iter().filter(|x| x != "--quiet").collect()
}

fn export_to(base_url: &str, out: &std::path::Path) -> Vec<String> {
    args(&[
        "export",
        "--provider",
        "custom",
        "--base-url",
        base_url,
        "--customer-id",
        "61179",
        "--bot-key",
        "bb67e0773bed4c7e",
        "--attribute",
        "opt1=yes",
        "--since",
        "2026-08-01",
        "--until",
        "2026-08-02",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_failures_are_not_retried_and_say_what_came_back() {
    let dir = tempfile::tempdir().unwrap();
    let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 46\r\nConnection: close\r\n\r\n<!DOCTYPE html><html><body>Login</body></html>";
    let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: https://api.engati.example/v2/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let missing = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let cases = [
        (
            html,
            4,
            vec!["not JSON", "text/html", "<!DOCTYPE html>", "base_url"],
        ),
        (moved, 4, vec!["301", "https://api.engati.example/v2/"]),
        (
            missing,
            4,
            vec![
                "404",
                "/bot-api/v1.0/customer/61179/bot/bb67e0773bed4c7e/users",
            ],
        ),
    ];
    for (response, code, needles) in cases {
        let (url, count) = canned(response).await;
        let o = run(&export_to(&url, &dir.path().join("out")), Some("k")).await;
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{}", text(&o));
        for n in needles {
            assert!(err.contains(n), "want `{n}` in: {err}");
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "not retried: {err}");
    }
    // Nothing listening: refused on the first request, said at once (no retries).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = run(
        &export_to(
            &format!("http://127.0.0.1:{port}/"),
            &dir.path().join("out"),
        ),
        Some("k"),
    )
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        err.contains("cannot reach") && err.contains("base_url"),
        "{err}"
    );
    assert!(!err.contains("gave up after"), "not retried: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_caught_locally_and_named() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o_str = out.to_str().unwrap();
    let base = |since: &str, until: &str, more: &[&str]| {
        with(
            export_args(&sb, since, until),
            &[
                &["--attribute", "a=b", "--format", "parquet", "--out", o_str][..],
                more,
            ]
            .concat(),
        )
    };
    let long_id = "9".repeat(100_000);
    let ids = dir.path().join("ids.txt");
    std::fs::write(&ids, format!("919000000001\n{long_id}\n")).unwrap();
    let dots = dir.path().join("dots.txt");
    std::fs::write(&dots, "919000000001\n..\n").unwrap();
    let two_line_key = dir.path().join("key");
    std::fs::write(&two_line_key, "first-line\nsecond-line\n").unwrap();
    let users_file = |f: &std::path::Path| {
        with(
            export_args(&sb, "2026-08-01", "2026-08-02"),
            &[
                "--users-file",
                f.to_str().unwrap(),
                "--format",
                "parquet",
                "--out",
                o_str,
            ],
        )
    };
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            base("1969-12-31", "2026-08-02", &[]),
            vec![],
            "before 1970-01-01",
        ),
        (
            base("2026-08-01", "2026-08-02", &["--window", "1s"]),
            vec![],
            "too short",
        ),
        (
            base("2026-08-01", "2026-08-02", &["--page-size=-1"]),
            vec![],
            "between 1 and 500",
        ),
        (
            base("2026-08-01", "2026-08-02", &["--zstd-level", "0"]),
            vec![],
            "between 1 and 22",
        ),
        (
            base("2026-08-01", "2026-08-02", &[]),
            vec![("ENGATI_ETL_CONCURRENCY", "lots")],
            "ENGATI_ETL_CONCURRENCY",
        ),
        (users_file(&ids), vec![], "100000 bytes long"),
        (users_file(&dots), vec![], "`..`"),
        (
            base(
                "2026-08-01",
                "2026-08-02",
                &["--api-key-file", two_line_key.to_str().unwrap()],
            ),
            vec![],
            "2 lines",
        ),
    ];
    for (a, env, needle) in cases {
        let mut env = env;
        env.push(("ENGATI_API_KEY", &sb.ids.api_key));
        let o = run_env(&a, &env).await;
        assert_eq!(o.status.code(), Some(2), "{needle}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "want `{needle}` in: {err}");
        assert!(
            err.len() < 4_000,
            "a short message, not {} bytes",
            err.len()
        );
        assert!(!err.contains("second-line"), "the key never shows");
    }
    assert!(sb.requests().is_empty(), "no request was made");
    // A TOML date is a date.
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        format!(
            "[source]\nprovider = \"custom\"\nbase_url = \"{}\"\ncustomer_id = 1\nbot_key = \"ab\"\nattributes = [\"a=b\"]\n[range]\nsince = 2026-08-01\nuntil = 2026-08-02\n[sink]\nout = \"{o_str}\"\n",
            sb.base_url
        ),
    )
    .unwrap();
    let o = run(&args(&["validate", "--offline", p.to_str().unwrap()]), None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_and_every_id_reaches_its_own_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    // An inline key in a pipeline file: refused, the value never printed.
    let p = dir.path().join("p.toml");
    let secret = "3f6c0a1e-1234-4bcd-9ef0-0123456789ab-Zq81xYw";
    std::fs::write(
        &p,
        format!("[source]\nprovider = \"engati\"\napi_key = \"{secret}\"\n"),
    )
    .unwrap();
    let o = run(&args(&["run", p.to_str().unwrap()]), None).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("api_key") && all.contains("ENGATI_API_KEY"),
        "{all}"
    );
    assert!(
        !all.contains("3f6c0a1e") && !all.contains("Zq81xYw"),
        "{all}"
    );
    // Credentials in a base URL: refused, the password never printed.
    let o = run(
        &export_to(
            "https://etl:hunter2pass@api.engati.ai/",
            &dir.path().join("out"),
        ),
        Some("k"),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains("hunter2pass"), "{}", text(&o));
    assert!(text(&o).contains("credentials"), "{}", text(&o));
    // Ids with characters that mean something in a URL reach exactly their own endpoint.
    let odd = ["a/b", "c?d=1", "e#f", "g h", "ü%2e", ".x", "x..", "%2e%2e"];
    let f = dir.path().join("odd.txt");
    std::fs::write(&f, odd.join("\n") + "\n").unwrap();
    let empty = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"conversations\":[]}";
    let (url, _, targets) = recording(empty).await;
    let out = dir.path().join("odd");
    let mut a = export_to(&url, &out);
    let at = a.iter().position(|x| x == "--attribute").unwrap();
    a.splice(
        at..at + 2,
        ["--users-file".to_string(), f.to_str().unwrap().to_string()],
    );
    let o = run(&a, Some("k")).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let prefix = "/bot-api/v1.0/customer/61179/bot/bb67e0773bed4c7e/channel-user/";
    let mut reached: Vec<String> = targets
        .lock()
        .unwrap()
        .iter()
        .map(|t| {
            let rest = t
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{t} is not a user's endpoint"));
            let (seg, tail) = rest.split_once('/').unwrap_or_else(|| panic!("{t}"));
            assert!(tail.starts_with("conversations?"), "{t}");
            percent_decode(seg)
        })
        .collect();
    reached.sort();
    let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(reached, want);
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() + 1 {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sends_no_more_queued_requests() {
    let mut cfg = small();
    cfg.data.users = 40;
    cfg.data.days = 31;
    cfg.faults = FaultConfig {
        latency_ms: 20,
        ..FaultConfig::default()
    };
    let sb = start(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let concurrency = 4;
    let a = with(
        export_args(&sb, "2026-08-01", "2026-09-01"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--concurrency",
            &concurrency.to_string(),
            "--max-rps",
            "1000",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let child = tokio::process::Command::new(bin())
        .args(&a)
        .env("ENGATI_API_KEY", &sb.ids.api_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let conversations = || {
        sb.requests()
            .iter()
            .filter(|r| r.is_conversations())
            .count()
    };
    while conversations() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let at_signal = conversations();
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    let after = conversations() - at_signal;
    // In flight at the signal (at most `concurrency`), and the rest of the cell being written.
    assert!(
        after <= 2 * concurrency + 4,
        "{after} requests after the signal ({at_signal} before, 1,240 planned)"
    );
    let r = report(&out);
    assert_eq!(r["status"], "interrupted");
    // What was committed is exact, and the next run finishes the job.
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let users = matching(&sb, &[("opt1", "yes"), ("opt1", "no")]);
    assert_same(
        &read_parquet(&out),
        &expected(&sb, &users, day("2026-08-01"), day("2026-09-01")),
        "after a stop and a rerun",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_stops_the_requests_and_counts_what_was_written() {
    let mut cfg = small();
    cfg.data.users = 40;
    cfg.data.days = 31;
    cfg.faults = FaultConfig {
        latency_ms: 5,
        ..FaultConfig::default()
    };
    let sb = start(cfg).await;
    let a = loud(with(
        export_args(&sb, "2026-08-01", "2026-09-01"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--concurrency",
            "4",
            "--format",
            "jsonl",
            "--out",
            "-",
        ],
    ));
    let mut child = tokio::process::Command::new(bin())
        .args(&a)
        .env("ENGATI_API_KEY", &sb.ids.api_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = vec![0u8; 1];
    stdout.read_exact(&mut first).await.unwrap();
    drop(stdout); // like `| head -c 1`
    let at_close = sb.requests().len();
    let o = child.wait_with_output().await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let after = sb.requests().len() - at_close;
    // The rest of the unit being written and what was queued for it: far below the plan.
    assert!(
        after < 200,
        "{after} requests after the pipe closed (1,240 planned)"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("messages   0 written"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_says_what_will_happen_and_what_did() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    // No user matches: said, not silent.
    let out = dir.path().join("none");
    let a = loud(with(
        export_args(&sb, "2026-08-01", "2026-08-02"),
        &[
            "--attribute",
            "segment=nobody",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No user matched"), "{err}");
    assert!(
        err.contains("engati-etl export "),
        "the summary names the command: {err}"
    );
    assert!(!err.contains("()"), "no empty parentheses: {err}");
    // An output directory holding someone else's files: refused unless allowed.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.csv"), "a,b\n").unwrap();
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-02"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "parquet",
            "--out",
            foreign.to_str().unwrap(),
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("notes.csv"),
        "{}",
        text(&o)
    );
    let o = run(&with(a, &["--allow-foreign-files"]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A reset of a user without a watermark says so.
    let o = run(
        &args(&[
            "state",
            "reset",
            "--out",
            foreign.to_str().unwrap(),
            "--user",
            "nobody",
        ]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no watermark of user nobody"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_no_temporary_file_and_names_no_missing_report() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = with(
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
    let o = run_env(
        &a,
        &[
            ("ENGATI_API_KEY", &sb.ids.api_key),
            ("FAILPOINTS", "files::disk_full=return"),
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("No space left on device"), "{}", text(&o));
    let tmp = staged_files(&out);
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_show_works_while_a_run_holds_the_store_and_a_killed_run_shows_as_crashed() {
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
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--concurrency",
            "1",
            "--checkpoint-users",
            "2",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let mut child = tokio::process::Command::new(bin())
        .args(&a)
        .env("ENGATI_API_KEY", &sb.ids.api_key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for a committed unit: the store exists and holds a run.
    while !out.join("messages").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let show = args(&["state", "show", "--out", out.to_str().unwrap(), "--json"]);
    let o = run(&show, None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"][0]["status"], "running", "{v}");
    child.start_kill().unwrap(); // SIGKILL
    let _ = child.wait().await;
    let o = run(&show, None).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"][0]["status"], "crashed", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_in_time_keep_the_apis_order() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut rows: Vec<serde_json::Value> = message_files(&out, ".jsonl")
        .iter()
        .flat_map(|f| json_lines(f))
        .collect();
    rows.sort_by_key(|r| {
        (
            r["channel_user_id"].as_str().unwrap().to_owned(),
            r["sent_at"].as_str().unwrap().to_owned(),
            r["position"].as_u64().unwrap(),
        )
    });
    // The sandbox's own order (what the API answers), per user.
    let users = matching(&sb, &[("opt1", "yes")]);
    let mut ties = 0;
    for u in &users {
        let i = sb.data().user_index(u).unwrap();
        let want: Vec<String> = sb
            .data()
            .messages_between(i, day("2026-08-01"), day("2026-08-11"))
            .iter()
            .map(|m| m.response.to_string())
            .collect();
        let got: Vec<String> = rows
            .iter()
            .filter(|r| r["channel_user_id"] == u.as_str())
            .map(|r| r["content"].as_str().unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            got, want,
            "user {u}: ordered by (sent_at, position) as the API answered"
        );
        let same_ms = rows
            .windows(2)
            .filter(|w| w[0]["channel_user_id"] == u.as_str() && w[0]["sent_at"] == w[1]["sent_at"])
            .count();
        ties += same_ms;
    }
    assert!(ties > 0, "the data has messages sharing a millisecond");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_logs_and_heartbeats_are_for_people_and_pipes() {
    let o = run(&args(&["export", "--help"]), None).await;
    let help = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "Examples:",
        "Source:",
        "Range:",
        "Output:",
        "CRM:",
        "Tuning:",
        "Global:",
        "tomorrow",
        "parquet, jsonl, delta or crm",
    ] {
        assert!(help.contains(needle), "export --help lacks `{needle}`");
    }
    let sb = start(SandboxConfig {
        faults: FaultConfig {
            latency_ms: 30,
            fail_rate: 0.2,
            retry_after_secs: 0,
            ..FaultConfig::default()
        },
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let a = loud(with(
        export_args(&sb, "2026-08-01", "2026-08-11"),
        &[
            "-v",
            "--heartbeat-secs",
            "1",
            "--attribute",
            "opt1=yes",
            "--concurrency",
            "2",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Retrying request"), "-v shows retries: {err}");
    assert!(
        !err.contains('\x1b'),
        "no ANSI codes when stderr is not a terminal"
    );
    // At least (cells / concurrency) x latency = (~120 / 2) x 30 ms of requests: a heartbeat.
    assert!(
        err.contains("cells (") && err.contains("committed)"),
        "a heartbeat: {err}"
    );
}
