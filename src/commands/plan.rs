//! `plan`: estimate a run before it starts (`plan::estimate` has the formulas): the users are
//! listed as the run lists them (into a scratch store; an incremental pipeline's ranges come
//! from the output's watermarks, read without its lock), the cells are counted exactly, and a
//! sample of cells is fetched (`plan::sample`). Prints a table, or JSON with `--json`. Writes
//! nothing to the output.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{connect, load, sandbox_placeholders};
use crate::cli::PlanArgs;
use crate::config::{self, Command};
use crate::engati::UsersSource;
use crate::engati::client::Client;
use crate::error::Error;
use crate::pipeline::{RunError, RunSpec, listing};
use crate::plan::estimate::{self, Bound, Counted, Estimate, Limits, human_duration, thousands};
use crate::plan::{Mode, Plan, sample};
use crate::report::human_bytes;
use crate::state::{ListedReader, ListedStats, StateStore};
use crate::time::rfc3339_ms;

/// What `plan --json` prints.
#[derive(Debug, Serialize)]
struct PlanReport<'a> {
    pipeline: String,
    shard: Option<String>,
    since: String,
    until: String,
    window: String,
    page_size: u32,
    limits: Limits,
    users: u64,
    users_with_cells: u64,
    users_rejected: usize,
    users_other_shards: u64,
    counted: Counted,
    estimate: &'a Estimate,
    plan_requests: PlanRequests,
}

/// The requests the plan itself made.
#[derive(Debug, Serialize)]
struct PlanRequests {
    users_api: u64,
    conversations: u64,
    total: u64,
}

/// `engati-etl plan PIPELINE.toml ...`.
///
/// # Errors
/// Configuration, API and state errors (the exit codes of a run).
pub async fn plan(a: PlanArgs) -> Result<ExitCode, Error> {
    let mut file = load(&a.pipeline)?.merge_flags(Some(&a.source), Some(&a.range), Some(&a.sink));
    let sandbox = sandbox_placeholders(&mut file)?;
    let mut spec = config::validate(&file, Command::Run, crate::time::now_ms())?;
    let _server = connect(sandbox, &mut spec.source).await?;
    let client = Client::new(spec.source.client.clone()).map_err(RunError::from)?;
    let scratch = listing::scratch_store()?;
    let started = Instant::now();
    let from_ms = spec.range.mode.start_ms();
    let (mut store, listed) = listing::list_users(
        &client,
        &spec.source.users,
        spec.shard,
        from_ms,
        scratch.store,
    )
    .await;
    let listed = listed?;
    let counted_base = Counted {
        users: 0,
        cells: 0,
        users_api_calls: match &spec.source.users {
            UsersSource::Filters(f) => f.len() as u64,
            UsersSource::File(_) => 0,
        },
        users_api_bytes: client
            .stats()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        listing_secs: started.elapsed().as_secs_f64(),
    };
    let users_api = client.stats().attempts();
    plan_ranges(&spec, &mut store)?;
    let stats = store.listed_stats(spec.range.mode.until_ms(), spec.range.grid())?;
    let plan = plan_of(&spec, &store, stats)?;
    let cells = sample::pick_cells(
        &plan,
        stats.users_with_cells,
        a.sample_users,
        a.sample_windows,
    )?;
    let samples = sample::fetch(&client, cells, &spec.read_spec(), a.sample_pages)
        .await
        .map_err(RunError::from)?;
    let counted = Counted {
        users: stats.users,
        cells: stats.cells,
        ..counted_base
    };
    let limits = Limits {
        concurrency: spec.source.client.concurrency,
        max_rps: spec.source.client.max_rps,
    };
    let est = estimate::estimate(counted, &samples, limits, &a.compare_shards);
    let total = client.stats().attempts();
    let report = PlanReport {
        pipeline: a.pipeline.display().to_string(),
        shard: spec.shard.map(|s| s.to_string()),
        since: rfc3339_ms(plan.earliest_ms.unwrap_or(plan.until_ms)),
        until: rfc3339_ms(plan.until_ms),
        window: spec.range.window_text(),
        page_size: spec.source.page_size,
        limits,
        users: stats.users,
        users_with_cells: stats.users_with_cells,
        users_rejected: listed.rejected.len(),
        users_other_shards: listed.other_shards,
        counted,
        estimate: &est,
        plan_requests: PlanRequests {
            users_api,
            conversations: total - users_api,
            total,
        },
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", table(&report));
    }
    drop(store);
    drop(scratch.dir);
    Ok(ExitCode::SUCCESS)
}

/// Incremental pipelines: each user's range from the output's watermarks (the store attached
/// read-only, without its lock), as a new run would start now.
fn plan_ranges(spec: &RunSpec, store: &mut StateStore) -> Result<(), Error> {
    let Mode::Incremental {
        start_ms,
        lookback_ms,
        until_ms,
    } = spec.range.mode
    else {
        return Ok(());
    };
    let Some(db) = spec
        .output
        .state_dir()
        .map(|d| d.join("state.sqlite3"))
        .filter(|db| db.exists())
    else {
        return Ok(());
    };
    store.attach_read_only("prior", &db)?;
    store.start_from_watermarks(
        "prior",
        &spec.namespace,
        "",
        start_ms,
        lookback_ms,
        until_ms,
    )?;
    Ok(())
}

fn plan_of(spec: &RunSpec, store: &StateStore, stats: ListedStats) -> Result<Plan, Error> {
    Ok(Plan {
        users: Arc::new(ListedReader::open(store.path())?),
        user_count: stats.users,
        cells: stats.cells,
        earliest_ms: stats.earliest_ms,
        until_ms: spec.range.mode.until_ms(),
        grid: spec.range.grid(),
        checkpoint_users: spec.tuning.checkpoint_users,
        shard: spec.shard,
    })
}

/// The plan as a table for people.
fn table(r: &PlanReport<'_>) -> String {
    let e = r.estimate;
    let c = &r.counted;
    let about = if e.lower_bound { "at least " } else { "~" };
    let shard = r
        .shard
        .as_ref()
        .map(|s| format!(" (shard {s})"))
        .unwrap_or_default();
    let mut s = format!("plan: {}{shard}\n", r.pipeline);
    let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<12} {v}\n"));
    line(
        "range",
        format!("{} .. {}, {} windows", r.since, r.until, r.window),
    );
    line(
        "users",
        format!(
            "{} ({} with cells)",
            thousands(r.users),
            thousands(r.users_with_cells)
        ),
    );
    line("cells", format!("{} (user x window)", thousands(c.cells)));
    line(
        "sample",
        format!(
            "{} cells: {:.2} pages, {:.1} messages per cell; median latency {:.0} ms",
            e.sampled_cells, e.pages_per_cell, e.messages_per_cell, e.latency_ms
        ),
    );
    line(
        "requests",
        format!(
            "{about}{} ({} Users API + {} Conversations API)",
            thousands(e.requests),
            thousands(c.users_api_calls),
            thousands(e.requests - c.users_api_calls)
        ),
    );
    line("messages", format!("{about}{}", thousands(e.messages)));
    line("bytes", format!("{about}{} received", human_bytes(e.bytes)));
    let why = match e.bound {
        Bound::RateLimit => format!(
            "bound by max_rps {} (concurrency {} / latency would allow {:.0})",
            r.limits.max_rps,
            r.limits.concurrency,
            r.limits.concurrency as f64 / (e.latency_ms / 1000.0)
        ),
        Bound::Latency => format!(
            "bound by latency: concurrency {} / {:.0} ms (max_rps {})",
            r.limits.concurrency, e.latency_ms, r.limits.max_rps
        ),
    };
    line("rate", format!("{:.0} requests/s, {why}", e.rate_rps));
    line(
        "wall time",
        format!("{about}{}", human_duration(e.wall_secs)),
    );
    s.push_str(&shards_table(e));
    s.push_str(&format!(
        "  this plan made {} requests ({} Users API, {} Conversations API)\n",
        r.plan_requests.total, r.plan_requests.users_api, r.plan_requests.conversations
    ));
    s
}

fn shards_table(e: &Estimate) -> String {
    if e.shards.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "  {:<12} {:>6}  {:<28} {}\n",
        "shards", "N", "same limits per worker", "quota split N ways"
    );
    for k in &e.shards {
        let same = format!(
            "{} ({:.0} req/s in all)",
            human_duration(k.wall_secs_same_limits),
            k.total_rps_same_limits
        );
        s.push_str(&format!(
            "  {:<12} {:>6}  {same:<28} {}\n",
            "",
            k.shards,
            human_duration(k.wall_secs_quota_split)
        ));
    }
    s
}
