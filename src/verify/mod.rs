//! `verify`: prove that a local Parquet/JSONL output is complete and consistent with its state
//! store, or report, finding by finding, where it is not.
//!
//! Checks (each finding names the check, the file, partition, user or run it concerns):
//! 1. `files`: every file the ledger says is committed exists with its recorded size in bytes
//!    and checksum (xxh3-128 of its bytes, `state::checksum`; hashed when the size is right),
//!    opens, and holds the ledger's `rows` (Parquet: the footer's row count, and the rows its
//!    `message_id` column streams; JSONL: the lines, gunzipped for `.gz`). Files recorded by a
//!    version that kept no checksum are counted (`no_checksum`, a warning) and checked by size
//!    and rows only.
//! 2. `strays`: no staged `.tmp` file and no file under `messages/`, `users/`, `_dead_letter/`
//!    that the ledger does not name (a reader globbing the output would mix it in).
//! 3. `duplicates`: no `message_id` twice across the `messages` files on disk (ledger and stray
//!    files), streamed column by column and kept as 128-bit keys, not strings.
//! 4. `counts`: rows per partition (`date=`) on disk equal the ledger's sum for it; rows per run
//!    on disk equal the ledger's sum for the run; and a finished run's report (`messages.written`)
//!    equals the ledger rows it still owns where that is provable: fewer rows than written is
//!    an error only when no later run committed files (a later run may have replaced rows),
//!    more rows than written only for a run that was not resumed (a resumed run's report
//!    counts its last process only). Rows a run rewrote as remnants of older files are not its
//!    own and are left out. And the output's balance: the rows all runs' reports wrote and
//!    dead-lettered, less the rows they replaced, equal the ledger's `messages` and
//!    `dead_letter` rows, when every run has a report counting all its commits (none crashed
//!    without one, none resumed): this finds a window dropped with its ledger rows even after
//!    later runs.
//! 5. `coverage` (incremental namespaces only): each user's watermark range `[start, end)` is
//!    compared with the union of the time spans of the ledger files whose user bounds include
//!    the user. A hole is reported as a warning, not an error: a window in which none of a
//!    unit's users had a message leaves no file, so the state store cannot prove a gap is
//!    missing data. A watermark whose end is before its start is an error.
//! 6. `api` (`--against-api`, [`api`]): N sampled committed (user, window) cells are fetched
//!    again and their `message_id` sets compared with the output's.
//!
//! Warnings never make the output inconsistent; errors do (exit 1).

pub mod api;
mod counts;
mod coverage;
mod files;
mod ids;
mod read;
pub mod render;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::state::{LedgerFile, StateError, StateStore};

/// Findings kept per check in the report; the rest are counted only.
pub const MAX_FINDINGS_PER_CHECK: usize = 200;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The output is not consistent (exit 1).
    Error,
    /// Worth a look; the output may still be consistent.
    Warning,
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// 1: ledger files exist with their size, checksum and rows.
    Files,
    /// 2: no staged or unknown files.
    Strays,
    /// 3: no `message_id` twice.
    Duplicates,
    /// 4: rows per partition and per run.
    Counts,
    /// 5: incremental watermark coverage.
    Coverage,
    /// 6: sampled cells against the API.
    Api,
}

impl Check {
    /// All checks, in order.
    pub const ALL: [Check; 6] = [
        Check::Files,
        Check::Strays,
        Check::Duplicates,
        Check::Counts,
        Check::Coverage,
        Check::Api,
    ];

    /// The check's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Check::Files => "files",
            Check::Strays => "strays",
            Check::Duplicates => "duplicates",
            Check::Counts => "counts",
            Check::Coverage => "coverage",
            Check::Api => "api",
        }
    }

    /// What the check proves, one line.
    pub fn what(self) -> &'static str {
        match self {
            Check::Files => "ledger files exist with their size, checksum and row count",
            Check::Strays => "no staged .tmp or unknown files",
            Check::Duplicates => "no message_id twice",
            Check::Counts => "rows per partition and per run match the ledger",
            Check::Coverage => "incremental watermarks covered by committed files",
            Check::Api => "sampled cells equal the API's messages",
        }
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check that found it.
    pub check: Check,
    /// What was found, e.g. `missing_file`, `duplicate_message_id`.
    pub kind: &'static str,
    /// Error or warning.
    pub severity: Severity,
    /// The file, relative to the output directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The partition (`date=YYYY-MM-DD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The channel-user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The run id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// What exactly, for people.
    pub detail: String,
}

impl Finding {
    /// An error of `check`.
    pub fn error(check: Check, kind: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            check,
            kind,
            severity: Severity::Error,
            path: None,
            partition: None,
            user: None,
            run_id: None,
            detail: detail.into(),
        }
    }

    /// A warning of `check`.
    pub fn warning(check: Check, kind: &'static str, detail: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            ..Finding::error(check, kind, detail)
        }
    }

    /// With the file (and its partition, if it has one).
    #[must_use]
    pub fn at(mut self, path: &str) -> Self {
        self.partition = partition_of(path).map(str::to_owned);
        self.path = Some(path.to_owned());
        self
    }

    /// With the partition.
    #[must_use]
    pub fn in_partition(mut self, partition: &str) -> Self {
        self.partition = Some(partition.to_owned());
        self
    }

    /// With the user.
    #[must_use]
    pub fn of_user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// With the run.
    #[must_use]
    pub fn of_run(mut self, run_id: &str) -> Self {
        self.run_id = Some(run_id.to_owned());
        self
    }
}

/// The partition segment (`date=YYYY-MM-DD`) of a `messages/` path, if any.
pub fn partition_of(path: &str) -> Option<&str> {
    path.split('/').find(|s| s.starts_with("date="))
}

/// A check's outcome in the report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckSummary {
    /// The check's name.
    pub check: &'static str,
    /// What it proves.
    pub what: &'static str,
    /// `ok`, `failed` (errors), `warning` (warnings only) or `skipped`.
    pub status: &'static str,
    /// Errors found (all, including those not listed).
    pub errors: u64,
    /// Warnings found (all).
    pub warnings: u64,
}

/// Findings as they are collected, capped per check ([`MAX_FINDINGS_PER_CHECK`]).
#[derive(Debug, Default)]
pub struct Findings {
    kept: Vec<Finding>,
    /// (errors, warnings, kept) per check.
    counts: BTreeMap<Check, (u64, u64, usize)>,
}

impl Findings {
    /// Records a finding (kept in the list while its check has room).
    pub fn push(&mut self, f: Finding) {
        let c = self.counts.entry(f.check).or_default();
        match f.severity {
            Severity::Error => c.0 += 1,
            Severity::Warning => c.1 += 1,
        }
        if c.2 < MAX_FINDINGS_PER_CHECK {
            c.2 += 1;
            self.kept.push(f);
        }
    }

    /// Errors found so far, all checks.
    pub fn errors(&self) -> u64 {
        self.counts.values().map(|c| c.0).sum()
    }

    fn summary(&self, check: Check, ran: bool) -> CheckSummary {
        let (errors, warnings, _) = self.counts.get(&check).copied().unwrap_or_default();
        CheckSummary {
            check: check.name(),
            what: check.what(),
            status: match (ran, errors, warnings) {
                (false, _, _) => "skipped",
                (true, 0, 0) => "ok",
                (true, 0, _) => "warning",
                _ => "failed",
            },
            errors,
            warnings,
        }
    }
}

/// Totals of what was read.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    /// Files in the ledger (all streams).
    pub ledger_files: u64,
    /// Rows the ledger records (all streams).
    pub ledger_rows: u64,
    /// Bytes the ledger records.
    pub ledger_bytes: u64,
    /// Ledger files whose checksum was computed and compared (those of the right size).
    pub checksums_checked: u64,
    /// Ledger files without a checksum (recorded by an older version): not compared.
    pub files_without_checksum: u64,
    /// Files found under `messages/`, `users/`, `_dead_letter/` (staged ones included).
    pub files_on_disk: u64,
    /// `message_id`s read from the `messages` files on disk.
    pub message_ids: u64,
    /// Cells compared with the API (`--against-api`).
    pub api_cells: u64,
}

/// The report `verify` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The output directory.
    pub out: String,
    /// The state database.
    pub state: String,
    /// True when no check found an error.
    pub consistent: bool,
    /// What was read.
    pub totals: Totals,
    /// One line per check.
    pub checks: Vec<CheckSummary>,
    /// The findings (at most [`MAX_FINDINGS_PER_CHECK`] per check).
    pub findings: Vec<Finding>,
}

/// What the local checks learnt, for the report and for the API check.
pub struct Local {
    /// Findings so far.
    pub findings: Findings,
    /// Totals so far.
    pub totals: Totals,
    /// The ledger.
    pub ledger: Vec<LedgerFile>,
}

/// Runs checks 1 to 5 on the output in `out` against `st`. `running`: a run holds the store
/// now (its staged files are expected, and are reported as warnings).
///
/// # Errors
/// [`StateError`] when the store cannot be read or a directory of the output cannot be listed
/// (unreadable data files are findings, not errors).
pub fn check_local(out: &Path, st: &StateStore, running: bool) -> Result<Local, StateError> {
    let ledger = st.ledger_files()?;
    let mut findings = Findings::default();
    let mut totals = Totals {
        ledger_files: ledger.len() as u64,
        ledger_rows: ledger.iter().map(|f| f.record.rows).sum(),
        ledger_bytes: ledger.iter().map(|f| f.record.bytes).sum(),
        ..Totals::default()
    };
    if running {
        findings.push(Finding::warning(
            Check::Files,
            "run_in_progress",
            "a run holds the state store now: the output is changing while it is verified",
        ));
    }
    let pending = st.pending_commits()?;
    if pending > 0 && !running {
        findings.push(Finding::error(
            Check::Files,
            "pending_commit",
            format!(
                "{pending} commits were journaled but not applied (a run crashed mid-commit): run `engati-etl state show` or the next run to finish them, then verify again"
            ),
        ));
    }
    let disk = files::walk(out)?;
    totals.files_on_disk = disk.len() as u64;
    let scan = ids::scan(out, &ledger, &disk, &mut findings);
    totals.message_ids = scan.ids;
    let sums = files::check_ledger(out, &ledger, &disk, &scan.rows, &mut findings);
    totals.checksums_checked = sums.checked;
    totals.files_without_checksum = sums.unrecorded;
    files::check_strays(&ledger, &disk, running, &mut findings);
    counts::check(st, &ledger, &scan.rows, &mut findings)?;
    coverage::check(st, &ledger, &mut findings)?;
    Ok(Local {
        findings,
        totals,
        ledger,
    })
}

impl Local {
    /// The report; `api_ran`: whether check 6 ran.
    pub fn report(self, out: &Path, st: &StateStore, api_ran: bool) -> Report {
        let checks = Check::ALL
            .iter()
            .map(|&c| self.findings.summary(c, c != Check::Api || api_ran))
            .collect();
        Report {
            out: out.display().to_string(),
            state: st.path().display().to_string(),
            consistent: self.findings.errors() == 0,
            totals: self.totals,
            checks,
            findings: self.findings.kept,
        }
    }
}
