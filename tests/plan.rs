//! `plan`: the estimate against the actual run, on the sandbox's deterministic data. Only
//! deterministic quantities are compared (users, cells, requests and messages given the sampled
//! density), never times.

use crate::util::*;

const RANGE: &str = "since = \"2026-08-01\"\nuntil = \"2026-08-11\"\nwindow = \"1d\"";
const INCREMENTAL: &str =
    "mode = \"incremental\"\nstart = \"2026-08-01\"\nlookback = \"1d\"\nwindow = \"1d\"";

async fn plan_json(p: &std::path::Path, key: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = args(&["plan", p.to_str().unwrap(), "--json"]);
    a.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&a, Some(key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

/// The most messages any (user, day) cell of these users holds in the range.
fn densest_cell(sb: &engati_etl::sandbox::SandboxHandle, users: &[String]) -> usize {
    let mut most = 0;
    for u in users {
        let i = sb.data().user_index(u).unwrap();
        for d in 0..10 {
            let from = day("2026-08-01") + d * 86_400_000;
            most = most.max(
                sb.data()
                    .messages_between(i, from - 1, from + 86_400_000 + 1)
                    .len(),
            );
        }
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_sampling_every_cell_predicts_the_runs_cells_requests_and_messages_exactly() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = pipeline_file(
        dir.path(),
        &sb,
        RANGE,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes", "segment=vip"],
    );
    // Pages small enough that many cells take two pages, never more than three (the sample's
    // cap): the sample then sees every page the run will fetch.
    let users = matching(&sb, &[("opt1", "yes"), ("segment", "vip")]);
    let page_size = (densest_cell(&sb, &users) / 2 + 1).to_string();
    let flags = ["--page-size", page_size.as_str()];
    let mut every = vec!["--sample-users", "100000", "--sample-windows", "1000"];
    every.extend(flags);
    let plan = plan_json(&p, &sb.ids.api_key, &every).await;
    let est = &plan["estimate"];
    assert_eq!(est["lower_bound"], false);
    assert!(est["pages_per_cell"].as_f64().unwrap() > 1.0, "{plan}");
    assert!(!out.exists(), "plan writes nothing");
    let requests_before_run = sb.requests().len();
    let mut a = args(&["run", p.to_str().unwrap(), "--quiet"]);
    a.extend(flags.iter().map(|s| s.to_string()));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    assert_eq!(plan["users"], r["users"]);
    assert_eq!(plan["users"].as_u64().unwrap() as usize, users.len());
    assert_eq!(plan["counted"]["cells"], r["cells"]["planned"]);
    assert_eq!(est["requests"], r["requests"]["total"], "{plan}\n{r}");
    let m = &r["messages"];
    assert_eq!(
        est["messages"].as_u64().unwrap(),
        m["written"].as_u64().unwrap() + m["outside_window"].as_u64().unwrap()
    );
    // The plan asked what the run asked: the Users API per filter, then every page once.
    assert_eq!(
        plan["plan_requests"]["total"].as_u64().unwrap() as usize,
        requests_before_run
    );
    assert_eq!(plan["plan_requests"]["total"], r["requests"]["total"]);
    assert_eq!(plan["estimate"]["sampled_cells"], r["cells"]["planned"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_plan_counts_cells_exactly_and_reports_its_own_requests() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = pipeline_file(
        dir.path(),
        &sb,
        RANGE,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    let users = matching(&sb, &[("opt1", "yes")]).len() as u64;
    let sample = ["--sample-users", "4", "--sample-windows", "2"];
    let plan = plan_json(&p, &sb.ids.api_key, &sample).await;
    assert_eq!(plan["counted"]["cells"].as_u64().unwrap(), users * 10);
    assert_eq!(plan["estimate"]["sampled_cells"], 8);
    let sampled = plan["estimate"]["sampled_requests"].as_u64().unwrap();
    assert_eq!(plan["plan_requests"]["users_api"], 1);
    assert_eq!(
        plan["plan_requests"]["total"].as_u64().unwrap(),
        1 + sampled
    );
    assert_eq!(sb.requests().len() as u64, 1 + sampled);
    assert!(!out.exists(), "plan writes nothing");
    // The same plan samples the same cells.
    assert_eq!(
        plan_json(&p, &sb.ids.api_key, &sample).await["estimate"]["sampled_requests"],
        sampled
    );
    // The table, for people: the wall time, the shards, the plan's own requests.
    let mut a = args(&["plan", p.to_str().unwrap(), "--compare-shards", "2,16"]);
    a.extend(sample.iter().map(|s| s.to_string()));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    for want in [
        "cells        ",
        "wall time",
        "quota split",
        "bound by max_rps 50",
        "this plan made",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
    assert!(t.lines().any(|l| l.trim_start().starts_with("16 ")), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_plan_starts_each_user_from_the_outputs_watermarks() {
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
    let night = |until: &str| args(&["run", p.to_str().unwrap(), "--until", until, "--quiet"]);
    let o = run(&night("2026-08-05"), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let plan = plan_json(&p, &sb.ids.api_key, &["--until", "2026-08-08"]).await;
    let o = run(&night("2026-08-08"), Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = report(&out);
    let users = matching(&sb, &[("opt1", "yes")]).len() as u64;
    // From each watermark (Aug 5) minus the 1-day lookback: 4 windows a user, not 7.
    assert_eq!(plan["counted"]["cells"].as_u64().unwrap(), users * 4);
    assert_eq!(plan["counted"]["cells"], r["cells"]["planned"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shards_plan_counts_its_own_users_and_cells_and_the_shards_add_up() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = pipeline_file(
        dir.path(),
        &sb,
        RANGE,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    let sample = ["--sample-users", "2", "--sample-windows", "1"];
    let whole = plan_json(&p, &sb.ids.api_key, &sample).await;
    let users = whole["users"].as_u64().unwrap();
    assert_eq!(users as usize, matching(&sb, &[("opt1", "yes")]).len());
    let (mut sum_users, mut sum_cells) = (0, 0);
    let mut plans = Vec::new();
    for i in 0..3 {
        let shard = format!("{i}/3");
        let mut flags = vec!["--shard", shard.as_str()];
        flags.extend(sample);
        let plan = plan_json(&p, &sb.ids.api_key, &flags).await;
        assert_eq!(plan["shard"], shard.as_str());
        let mine = plan["users"].as_u64().unwrap();
        assert!(mine > 0 && mine < users, "shard {shard}: {plan}");
        assert_eq!(plan["users_other_shards"].as_u64().unwrap(), users - mine);
        // Each worker lists every user (one Users API call per filter) and keeps its own.
        assert_eq!(plan["plan_requests"]["users_api"], 1);
        sum_users += mine;
        sum_cells += plan["counted"]["cells"].as_u64().unwrap();
        plans.push(plan);
    }
    assert_eq!(sum_users, users);
    assert_eq!(sum_cells, whole["counted"]["cells"].as_u64().unwrap());
    assert!(!out.exists(), "plan writes nothing");
    // Shard 1's run plans the cells its plan counted.
    let a = args(&["run", p.to_str().unwrap(), "--shard", "1/3", "--quiet"]);
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_run_report-s1of3.json")).unwrap())
            .unwrap();
    assert_eq!(plans[1]["users"], r["users"]);
    assert_eq!(plans[1]["counted"]["cells"], r["cells"]["planned"]);
    // The table names the shard.
    let mut a = args(&["plan", p.to_str().unwrap(), "--shard", "2/3"]);
    a.extend(sample.iter().map(|s| s.to_string()));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.lines().next().unwrap().ends_with("(shard 2/3)"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_with_a_bad_shard_exits_2_before_any_request() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline_file(
        dir.path(),
        &sb,
        RANGE,
        &format!(
            "format = \"parquet\"\nout = \"{}\"",
            dir.path().join("o").display()
        ),
        &["opt1=yes"],
    );
    let o = run(
        &args(&["plan", p.to_str().unwrap(), "--shard", "3/3"]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("out of range for 3 shards"),
        "{}",
        text(&o)
    );
    assert!(sb.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cells_longer_than_the_sample_page_cap_make_a_lower_bound_that_sample_pages_lifts() {
    let sb = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let p = pipeline_file(
        dir.path(),
        &sb,
        RANGE,
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes"],
    );
    // Two messages a page: a cell with 6 messages or more needs more than 3 pages.
    let every = [
        "--page-size",
        "2",
        "--sample-users",
        "100000",
        "--sample-windows",
        "1000",
        "--max-rps",
        "2000",
    ];
    let capped = plan_json(&p, &sb.ids.api_key, &every).await;
    assert_eq!(capped["estimate"]["lower_bound"], true, "{capped}");
    let mut all = every.to_vec();
    all.extend(["--sample-pages", "10000"]);
    let full = plan_json(&p, &sb.ids.api_key, &all).await;
    assert_eq!(full["estimate"]["lower_bound"], false, "{full}");
    let mut a = args(&["run", p.to_str().unwrap(), "--quiet"]);
    a.extend(every[..2].iter().chain(&every[6..]).map(|s| s.to_string()));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let total = report(&out)["requests"]["total"].as_u64().unwrap();
    assert_eq!(full["estimate"]["requests"].as_u64().unwrap(), total);
    assert!(capped["estimate"]["requests"].as_u64().unwrap() < total);
    // The table says "at least" when the figures are lower bounds.
    let mut a = args(&["plan", p.to_str().unwrap()]);
    a.extend(every.iter().map(|s| s.to_string()));
    let o = run(&a, Some(&sb.ids.api_key)).await;
    assert!(String::from_utf8_lossy(&o.stdout).contains("requests     at least "));
}
