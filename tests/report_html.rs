//! `engati-etl report --html`: a self-contained page whose figures are the run report's and the
//! output's; rendered in headless Chromium without a console error, with a screenshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::*;

/// Two runs into one output (the second with 429s and retries); returns (out, html).
async fn output_with_runs(dir: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let mut cfg = small();
    cfg.faults.throttle_rate = 0.08;
    cfg.faults.retry_after_secs = 0;
    cfg.data.malformed_rate = 0.02;
    let sb = start(cfg).await;
    let out = dir.join("out");
    let mut run_ids = Vec::new();
    for (since, until) in [("2026-08-01", "2026-08-04"), ("2026-08-03", "2026-08-09")] {
        let args = with(
            export_args(&sb, since, until),
            &[
                "--attribute",
                "opt1=yes",
                "--attribute",
                "segment=vip",
                "--format",
                "parquet",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let o = run(&args, Some(&sb.ids.api_key)).await;
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", text(&o));
        let summary: serde_json::Value =
            serde_json::from_slice(o.stdout.trim_ascii()).expect("the summary line");
        run_ids.push(summary["run_id"].as_str().unwrap().to_owned());
    }
    let html = dir.join("report.html");
    let o = run(
        &args(&[
            "report",
            "--out",
            out.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    (out, html, run_ids)
}

/// `data-k="path">value` pairs of a page (or of the DOM Chromium rendered).
fn figures(html: &str) -> BTreeMap<String, String> {
    let re = regex::Regex::new(r#"data-k="([^"]+)"[^>]*>([^<]*)<"#).unwrap();
    re.captures_iter(html)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect()
}

/// Asserts the page's figures equal the run report's and the output's.
fn assert_figures(html: &str, out: &Path) {
    let f = figures(html);
    let r = report(out);
    for (_, path) in engati_etl::report_html::FIGURES {
        let want = match engati_etl::report_html::at(&r, path) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "0".into(),
        };
        assert_eq!(f.get(path), Some(&want), "{path}");
    }
    let rows = read_parquet(out);
    assert_eq!(f["output.messages"], rows.len().to_string());
    let users: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.key.0.as_str()).collect();
    assert_eq!(f["output.users"], users.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_page_is_self_contained_and_shows_the_run_reports_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (out, html, run_ids) = output_with_runs(dir.path()).await;
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script"), "no script");
    for attr in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
        "@import",
    ] {
        assert!(!page.contains(attr), "nothing fetched: {attr}");
    }
    assert!(page.matches("<svg").count() >= 7, "seven charts");
    for title in [
        "Messages in the output per UTC day, by channel",
        "Requests per second, by status class",
        "Mean response time",
        "Retries and 429s",
        "Cells committed over the run",
        "Users with the most messages",
    ] {
        assert!(page.contains(title), "{title}");
    }
    assert_figures(&page, &out);
    assert!(
        report(&out)["requests"]["retries"].as_u64().unwrap() > 0,
        "the run had retries to show"
    );
    for id in &run_ids {
        assert!(
            page.contains(&format!("<td>{id}</td>")),
            "run {id} is listed"
        );
    }
}

fn chromium() -> String {
    if let Ok(c) = std::env::var("CHROMIUM_BIN") {
        return c;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_owned();
        }
    }
    panic!(
        "no chromium: install Debian's chromium package (bash .ci/run does) or set CHROMIUM_BIN"
    );
}

async fn headless(profile: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()))
    .kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("chromium finishes within 2 minutes")
        .expect("chromium runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a headless browser: Debian's chromium package (bash .ci/run installs it)"]
async fn the_report_page_renders_in_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (out, html, _) = output_with_runs(dir.path()).await;
    let o = headless(&dir.path().join("profile-dom"), &["--dump-dom"], &html).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(dom.contains("<svg"), "the charts are in the rendered DOM");
    assert_figures(&dom, &out);
    let log = String::from_utf8_lossy(&o.stderr);
    for bad in ["CONSOLE", "Uncaught", "Failed to load resource", "net::ERR"] {
        assert!(
            !log.contains(bad),
            "console or network error ({bad}):\n{log}"
        );
    }
    let shot_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-html");
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let o = headless(
        &dir.path().join("profile-shot"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,4300",
            "--hide-scrollbars",
        ],
        &html,
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    std::fs::copy(&html, shot_dir.join("report.html")).unwrap();
}
