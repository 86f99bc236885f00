//! Exit codes and error texts: usage (2), auth (3), circuit breaker (4), API unavailable (5);
//! the key never appears in any output.

use super::*;
use engati_etl::sandbox::SandboxConfig;
use engati_etl::sandbox::write::WriteConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &args(&[
            "send",
            "template",
            "--campaign",
            "../x",
            "--out",
            dir.path().to_str().unwrap(),
        ]),
        Some("k"),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    for needle in [
        "provider",
        "input (--input) is required",
        "campaign (--campaign) `../x`",
        "phone_column",
        "template_name",
    ] {
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let sb = start(small()).await;
    let input = people(dir.path(), 3, |_, _| {});
    let out = dir.path().join("o");
    let o = run(
        &with(
            template(&sb, &input, "c", &out),
            &["--consent-column", "consent"],
        ),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("no column `consent` (columns: phone, name, opt_in, order)"),
        "{}",
        text(&o)
    );
    // A campaign id is bound to its kind and bot.
    assert_eq!(
        run(&template(&sb, &input, "c", &out), Some(&sb.ids.api_key))
            .await
            .status
            .code(),
        Some(0)
    );
    let t = with(
        send_args(&sb, "trigger", &input, "c", &out),
        &["--phone-column", "phone", "--flow-key", "welcome_88601"],
    );
    let o = run(&t, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("choose another --campaign"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_campaign_at_once_with_exit_3_and_never_leaks() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 30, |_, _| {});
    let wrong = "00000000-0000-0000-0000-000000000000-WrOnGkY";
    let o = run(
        &with(template(&sb, &input, "auth", &out), &["--concurrency", "1"]),
        Some(wrong),
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 401"),
        "{}",
        text(&o)
    );
    assert_eq!(write_requests(&sb), 1, "stopped at the first 401");
    let rows = results(&out, "auth");
    assert_eq!(
        by_status(&rows).get("pending"),
        Some(&30),
        "nothing was processed"
    );
    for f in files_under(&out) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(wrong),
            "key in {}",
            f.display()
        );
    }
    assert!(!text(&o).contains(wrong));
    // With the right key, the same command sends every row.
    let o = run(&template(&sb, &input, "auth", &out), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(sb.sends().len(), 30);
    for f in files_under(&out) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&sb.ids.api_key),
            "key in {}",
            f.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_template_name_trips_the_circuit_breaker_with_exit_4() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 100, |_, _| {});
    let a: Vec<String> = template(&sb, &input, "cb", &out)
        .into_iter()
        .map(|x| {
            if x == "order_update" {
                "order_updat".into()
            } else {
                x
            }
        })
        .collect();
    let o = run(
        &with(a, &["--circuit-breaker", "10", "--concurrency", "2"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("circuit breaker") && e.contains("template `order_updat` does not exist"),
        "{e}"
    );
    let rows = results(&out, "cb");
    let counts = by_status(&rows);
    let failed = counts.get("failed").copied().unwrap_or(0);
    assert!((10..=12).contains(&failed), "{counts:?}");
    assert_eq!(
        counts.get("pending").copied().unwrap_or(0),
        100 - failed,
        "the rest is not burnt"
    );
    assert!(sb.sends().is_empty());
    assert_eq!(rows[0]["api_code"], 1004);
    // Fixed: the re-run sends the rest and updates the refused rows; the retry sends those.
    let fixed = with(template(&sb, &input, "cb", &out), &["--concurrency", "2"]);
    let o = run(&fixed, Some(&sb.ids.api_key)).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "the refused rows are still failed: {}",
        text(&o)
    );
    assert_eq!(sb.sends().len(), 100 - failed);
    let retry = args(&[
        "send",
        "retry",
        "--campaign",
        "cb",
        "--out",
        out.to_str().unwrap(),
        "--status",
        "failed",
        "--base-url",
        &sb.base_url,
        "--quiet",
    ]);
    let o = run(&retry, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rows = results(&out, "cb");
    assert_eq!(by_status(&rows).get("sent"), Some(&100));
    assert_matches_sandbox(&rows, &sb, true, "after the fix");
    assert!(sb.sends().iter().all(|s| s.name == "order_update"));
    // A flow key the bot does not have: the same for triggers.
    let t = with(
        send_args(&sb, "trigger", &input, "cb2", &out),
        &[
            "--phone-column",
            "phone",
            "--flow-key",
            "nope",
            "--circuit-breaker",
            "5",
        ],
    );
    let o = run(&t, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("flow key `nope` not found"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_api_stops_with_exit_5() {
    // Every request answered 500 before processing: the first rows are unknown, then stop.
    let sb = start(SandboxConfig {
        write: WriteConfig {
            refuse_500_rate: 1.0,
            ..WriteConfig::default()
        },
        ..small()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let input = people(dir.path(), 60, |_, _| {});
    let o = run(
        &with(
            template(&sb, &input, "down", &out),
            &["--circuit-breaker", "5", "--concurrency", "1"],
        ),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let counts = by_status(&results(&out, "down"));
    assert_eq!(counts.get("unknown"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("pending"), Some(&55));
    // Nothing listens here: connection refused is certainly not processed, retried, then exit 5.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a: Vec<String> = template(&sb, &input, "refused", &out)
        .into_iter()
        .map(|x| {
            if x == sb.base_url {
                format!("http://{closed}/")
            } else {
                x
            }
        })
        .collect();
    let o = run(&with(a, &["--max-retries", "1"]), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the request was not sent"),
        "{}",
        text(&o)
    );
    let counts = by_status(&results(&out, "refused"));
    assert_eq!(counts.get("pending"), Some(&60), "{counts:?}");
}
