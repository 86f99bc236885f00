//! Pages that shift under live data (docs/engati-api.md, "Pages that shift"): messages inserted
//! into (or deleted from) a window while it is being paged, in both page orders. A repaired
//! cell gives exactly the sandbox's final data; a window that never settles is dead-lettered
//! with the reason and the run exits 1.

use std::collections::HashSet;

use crate::util::*;
use engati_etl::sandbox::{PageOrder, SandboxConfig, SandboxHandle, ShiftConfig};

/// A small sandbox serving pages in `order` and changing the window being paged.
async fn shifting(order: PageOrder, rate: f64, max_per_window: u32, delete: bool) -> SandboxHandle {
    start(SandboxConfig {
        order,
        shift: Some(ShiftConfig {
            rate,
            max_per_window,
            delete,
            seed: 3,
        }),
        ..small()
    })
    .await
}

/// Exports Aug 1..11 of every user with 5-message pages (most cells have several pages).
async fn export(sb: &SandboxHandle, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut a = with(
        export_args(sb, "2026-08-01", "2026-08-11"),
        &[
            "--attribute",
            "opt1=yes",
            "--attribute",
            "opt1=no",
            "--page-size",
            "5",
            "--format",
            "parquet",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    run(&a, Some(&sb.ids.api_key)).await
}

fn all_users(sb: &SandboxHandle) -> Vec<String> {
    matching(sb, &[("opt1", "yes"), ("opt1", "no")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_pages_are_read_again_and_give_the_final_data_in_both_orders() {
    for order in [PageOrder::OldestFirst, PageOrder::NewestFirst] {
        let sb = shifting(order, 0.3, 1, false).await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = export(&sb, &out, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{order:?}: {}", text(&o));
        let changes = sb.shift_changes();
        assert!(
            changes >= 10,
            "{order:?}: the sandbox shifted pages ({changes})"
        );
        let report = report(&out);
        let reread = report["cells"]["reread"].as_u64().unwrap();
        assert!(reread >= 10, "{order:?}: cells read again: {report}");
        assert_eq!(report["cells"]["unreadable"], 0);
        // Rows are the sandbox's final data (inserts included), no message twice.
        assert_same(
            &read_parquet(&out),
            &expected(&sb, &all_users(&sb), day("2026-08-01"), day("2026-08-11")),
            &format!("{order:?}, {changes} inserts, {reread} cells read again"),
        );
        eprintln!(
            "shift test {order:?}: {changes} inserts while paging, {reread} cells read again, rows equal the final data"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_never_settles_is_dead_lettered_and_the_run_exits_1() {
    // Every request for page 2 or later inserts a message: a window of several pages never
    // reads the same twice.
    let sb = shifting(PageOrder::NewestFirst, 1.0, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = export(&sb, &out, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = report(&out);
    let unreadable = report["cells"]["unreadable"].as_u64().unwrap();
    assert!(unreadable >= 5, "{report}");
    // Each unreadable cell has one dead-letter line with the reason.
    let mut dead = Vec::new();
    for f in files_under(&out.join("_dead_letter")) {
        dead.extend(json_lines(&f));
    }
    assert_eq!(dead.len() as u64, unreadable, "one line per cell");
    let mut gone = HashSet::new();
    for d in &dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("messages moved between pages while the window was read")
                && reason.contains("4 reads in a row were inconsistent")
                && reason.contains("the next run reads it again"),
            "{reason}"
        );
        gone.insert((
            d["channel_user_id"].as_str().unwrap().to_owned(),
            d["window_start_ms"].as_i64().unwrap(),
        ));
    }
    // Nothing of those cells was written; every other cell is exact.
    let rows = read_parquet(&out);
    let cell = |k: &Key| (k.0.clone(), k.1.div_euclid(86_400_000) * 86_400_000);
    assert!(rows.iter().all(|r| !gone.contains(&cell(&r.key))));
    let want: Vec<Key> = expected(&sb, &all_users(&sb), day("2026-08-01"), day("2026-08-11"))
        .into_iter()
        .filter(|k| !gone.contains(&cell(k)))
        .collect();
    assert_same(&rows, &want, "the cells that could be read");
    eprintln!(
        "give-up test: {unreadable} cells dead-lettered after 4 reads each; the rest equal the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_cell_does_not_move_its_watermark() {
    let sb = shifting(PageOrder::OldestFirst, 1.0, 0, false).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("nightly");
    let p = pipeline_file(
        dir.path(),
        &sb,
        "mode = \"incremental\"\nstart = \"2026-08-01\"",
        &format!("format = \"parquet\"\nout = \"{}\"", out.display()),
        &["opt1=yes", "opt1=no"],
    );
    let o = run(
        &args(&[
            "run",
            p.to_str().unwrap(),
            "--until",
            "2026-08-11",
            "--page-size",
            "5",
            "--quiet",
        ]),
        Some(&sb.ids.api_key),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let first = files_under(&out.join("_dead_letter"))
        .iter()
        .flat_map(|f| json_lines(f))
        .next()
        .expect("an unreadable cell");
    let user = first["channel_user_id"].as_str().unwrap();
    let o = run(
        &args(&[
            "state",
            "show",
            p.to_str().unwrap(),
            "--user",
            user,
            "--json",
        ]),
        None,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let show: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let end = show["user"]["watermarks"][0]["end_ms"]
        .as_i64()
        .unwrap_or(i64::MIN);
    assert!(
        end <= first["window_start_ms"].as_i64().unwrap(),
        "the watermark stops before the unreadable window: {show}"
    );
}

/// Compares rows with the sandbox's final data after deletions: (messages missing, rows
/// that are neither final data nor a message the sandbox deleted).
fn after_deletions(sb: &SandboxHandle, rows: &[Row]) -> (Vec<Key>, Vec<Key>) {
    let want = expected(sb, &all_users(sb), day("2026-08-01"), day("2026-08-11"));
    let users = sb.data().users();
    let deleted: HashSet<Key> = sb
        .shift_deleted()
        .iter()
        .map(|(i, m)| key_of(&users[*i].channel_user_id, m))
        .collect();
    let got: HashSet<Key> = rows.iter().map(|r| r.key.clone()).collect();
    let want_set: HashSet<&Key> = want.iter().collect();
    let missing = want.iter().filter(|k| !got.contains(*k)).cloned().collect();
    let foreign = got
        .iter()
        .filter(|k| !want_set.contains(k) && !deleted.contains(*k))
        .cloned()
        .collect();
    (missing, foreign)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_while_paging_needs_double_read() {
    // One read cannot see a message deleted before the reading position: the message that
    // moves back past the page boundary is never read (the documented limit).
    let sb = shifting(PageOrder::OldestFirst, 0.3, 1, true).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("single");
    let o = export(&sb, &out, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(sb.shift_changes() > 0);
    let (lost, _) = after_deletions(&sb, &read_parquet(&out));
    assert!(!lost.is_empty(), "one read loses messages to deletions");
    // With double_read, a window that took more than one request is read until two reads in a
    // row agree: nothing is lost. A message deleted after the read that was kept was taken
    // is still there (a snapshot; the next run's lookback replaces it).
    let sb = shifting(PageOrder::OldestFirst, 0.3, 1, true).await;
    let out = dir.path().join("double");
    let o = export(&sb, &out, &["--double-read"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let deletions = sb.shift_changes();
    assert!(deletions > 0);
    let rows = read_parquet(&out);
    let (missing, foreign) = after_deletions(&sb, &rows);
    assert!(
        missing.is_empty(),
        "{deletions} deletions: lost {missing:?}"
    );
    assert!(foreign.is_empty(), "rows that are no message: {foreign:?}");
    let ids: HashSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "no message twice");
    eprintln!(
        "deletion test: {deletions} deletions while paging; double_read lost none (one read lost {})",
        lost.len()
    );
}
