//! Check 4: rows per partition and per run, on disk against the ledger, and the ledger against
//! each run's report where that is provable (module docs of [`super`]).

use std::collections::{BTreeMap, HashMap};

use super::{Check, Finding, Findings, partition_of};
use crate::state::{LedgerFile, RunRecord, StateError, StateStore};

/// Runs read from the history, at most.
const RUNS_READ: usize = 1_000_000;

/// Rows per file counted by the scan (`messages` files on disk).
type Counted = HashMap<String, Result<u64, String>>;

/// Check 4 (module docs of [`super`]).
///
/// # Errors
/// SQLite errors reading the run history.
pub(super) fn check(
    st: &StateStore,
    ledger: &[LedgerFile],
    counted: &Counted,
    findings: &mut Findings,
) -> Result<(), StateError> {
    partitions(ledger, counted, findings);
    runs_on_disk(ledger, counted, findings);
    let runs = st.runs(None, RUNS_READ)?;
    balance(&runs, ledger, findings);
    run_reports(&runs, ledger, findings);
    Ok(())
}

/// The output's balance: the rows the runs' reports say they wrote (and dead-lettered) less
/// the rows they say they replaced equal the `messages` and `dead_letter` rows of the ledger.
/// Provable only when every run has a report that counts all its commits: none crashed
/// without one, none resumed (a resumed run's report counts its last process only).
fn balance(runs: &[RunRecord], ledger: &[LedgerFile], findings: &mut Findings) {
    let mut expected: i128 = 0;
    for run in runs {
        let Some(v) = run
            .report
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        else {
            return;
        };
        let sink = &v["sink"];
        let (Some(w), Some(r), Some(x)) = (
            sink["rows_written"].as_u64(),
            sink["rejects_written"].as_u64(),
            sink["rows_replaced"].as_u64(),
        ) else {
            return;
        };
        if v["resumed"].as_bool().unwrap_or(true) {
            return;
        }
        expected += i128::from(w) + i128::from(r) - i128::from(x);
    }
    let have: u64 = ledger
        .iter()
        .filter(|f| f.record.stream != "users")
        .map(|f| f.record.rows)
        .sum();
    if i128::from(have) != expected {
        findings.push(Finding::error(
            Check::Counts,
            "output_rows",
            format!(
                "the ledger holds {have} message and dead-letter rows; the {} runs' reports add up to {expected} (written + dead-lettered - replaced)",
                runs.len()
            ),
        ));
    }
}

fn is_messages(f: &LedgerFile) -> bool {
    f.record.stream == "messages"
}

/// Rows per partition: every `messages` file on disk against the ledger's files.
fn partitions(ledger: &[LedgerFile], counted: &Counted, findings: &mut Findings) {
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for f in ledger.iter().filter(|f| is_messages(f)) {
        let p = partition_of(&f.record.path).unwrap_or("(no partition)");
        sums.entry(p).or_default().0 += f.record.rows;
    }
    for (path, rows) in counted {
        let p = partition_of(path).unwrap_or("(no partition)");
        sums.entry(p).or_default().1 += rows.as_ref().copied().unwrap_or(0);
    }
    for (p, (want, have)) in sums {
        if want != have {
            findings.push(
                Finding::error(
                    Check::Counts,
                    "partition_rows",
                    format!("{have} readable rows on disk, {want} in the ledger"),
                )
                .in_partition(p),
            );
        }
    }
}

/// Rows per run: the ledger's files of each run on disk against the ledger.
fn runs_on_disk(ledger: &[LedgerFile], counted: &Counted, findings: &mut Findings) {
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for f in ledger.iter().filter(|f| is_messages(f)) {
        let s = sums.entry(&f.run_id).or_default();
        s.0 += f.record.rows;
        s.1 += counted
            .get(&f.record.path)
            .and_then(|r| r.as_ref().ok())
            .copied()
            .unwrap_or(0);
    }
    for (run, (want, have)) in sums {
        if want != have {
            findings.push(
                Finding::error(
                    Check::Counts,
                    "run_rows_on_disk",
                    format!("the run's files hold {have} readable rows, the ledger {want}"),
                )
                .of_run(run),
            );
        }
    }
}

/// A run's report figures: (rows written, resumed).
fn report_figures(report: &str) -> Option<(u64, bool)> {
    let v: serde_json::Value = serde_json::from_str(report).ok()?;
    let written = v["messages"]["written"].as_u64()?;
    Some((written, v["resumed"].as_bool().unwrap_or(false)))
}

/// Each run's report against the rows the ledger says the run still owns.
fn run_reports(runs: &[RunRecord], ledger: &[LedgerFile], findings: &mut Findings) {
    let started: HashMap<&str, i64> = runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.started_ms))
        .collect();
    let data: Vec<&LedgerFile> = ledger
        .iter()
        .filter(|f| f.record.stream != "users")
        .collect();
    for run in runs {
        let Some((written, resumed)) = run.report.as_deref().and_then(report_figures) else {
            continue;
        };
        let mine = data.iter().filter(|f| f.run_id == run.run_id);
        let own: u64 = mine
            .clone()
            .filter(|f| is_messages(f) && !f.record.unit_key.starts_with("remnant:"))
            .map(|f| f.record.rows)
            .sum();
        let last_commit = mine.map(|f| f.commit_id).max();
        let later = data.iter().any(|f| {
            f.run_id != run.run_id
                && (last_commit.is_some_and(|c| f.commit_id > c)
                    || started.get(f.run_id.as_str()).copied().unwrap_or(i64::MAX) > run.started_ms)
        });
        let problem = if own < written && !later {
            Some("fewer rows than its report says it wrote, and no later run replaced any")
        } else if own > written && !resumed {
            Some("more rows than its report says it wrote")
        } else {
            None
        };
        if let Some(why) = problem {
            findings.push(
                Finding::error(
                    Check::Counts,
                    "run_rows",
                    format!("the ledger holds {own} rows of this run, {why} ({written})"),
                )
                .of_run(&run.run_id),
            );
        }
    }
}
