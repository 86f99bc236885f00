//! The one-line JSON summary of a run: the last line `export`, `run` and `backfill` print on
//! stdout (on stderr with `--out -` or `--dry-run`, where stdout carries data), also when the
//! run fails. Airflow's `BashOperator` pushes exactly that line to XCom; any scheduler can
//! parse it instead of the logs.
//!
//! ```json
//! {"outcome":"succeeded","exit_code":0,"command":"run","pipeline":"nightly","run_id":"...",
//!  "resumed":false,"error":null,"users":73,"messages":{"written":4485,"rejected":0,
//!  "outside_window":0},"cells":{"planned":2263,"skipped":0,"committed":2263},
//!  "requests":{"total":2336,"retries":0,"throttled":0,"by_class":{"2xx":2336}},
//!  "bytes":{"received":5312211,"written":1187123},"files_written":33,"wall_time_ms":1840,
//!  "output":"out/nightly","report_file":"out/nightly/_run_report.json","metrics_file":null}
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{CellCounts, MessageCounts, RunReport};

/// Codes a rejects exit code may not take: they mean something else (README, "Exit codes").
pub const TAKEN_EXIT_CODES: [u8; 7] = [2, 3, 4, 5, 6, 7, 130];

/// `--rejects-exit-code`: 0..=255, not one of [`TAKEN_EXIT_CODES`].
///
/// # Errors
/// A sentence naming the flag and the rule.
pub fn parse_rejects_exit_code(s: &str) -> Result<u8, String> {
    let n: u8 = s
        .parse()
        .map_err(|_| format!("--rejects-exit-code `{s}` must be a number from 0 to 255"))?;
    if TAKEN_EXIT_CODES.contains(&n) {
        return Err(format!(
            "--rejects-exit-code {n} is taken (2-7: errors, 130: interrupted); use 0 (green), 1 (the default) or another code"
        ));
    }
    Ok(n)
}

/// Request figures of the summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Requests {
    /// Attempts.
    pub total: u64,
    /// Retries.
    pub retries: u64,
    /// 429 responses.
    pub throttled: u64,
    /// Responses by class (`2xx`, ...) and `transport_error`.
    pub by_class: BTreeMap<String, u64>,
}

/// Bytes of the summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Bytes {
    /// Response bytes received.
    pub received: u64,
    /// Bytes of files written.
    pub written: u64,
}

/// The summary line.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// `succeeded`, `completed_with_rejects`, `interrupted` or `failed`.
    pub outcome: String,
    /// The process's exit code.
    pub exit_code: u8,
    /// `export`, `run` or `backfill`.
    pub command: String,
    /// The pipeline's name (its `name`, else its file name; `export` for an export).
    pub pipeline: String,
    /// The run id (null when the run did not start).
    pub run_id: Option<String>,
    /// True when an interrupted run was continued.
    pub resumed: bool,
    /// What stopped the run.
    pub error: Option<String>,
    /// Users in the plan.
    pub users: u64,
    /// Messages.
    pub messages: MessageCounts,
    /// Cells.
    pub cells: CellCounts,
    /// Requests.
    pub requests: Requests,
    /// Bytes.
    pub bytes: Bytes,
    /// Files put in place.
    pub files_written: u64,
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// Output directory, or `-`.
    pub output: Option<String>,
    /// The run report file.
    pub report_file: Option<String>,
    /// The metrics file.
    pub metrics_file: Option<String>,
}

impl Summary {
    /// The summary of a run that produced `report` (and maybe failed with `error`).
    pub fn of(report: &RunReport, command: &str, pipeline: &str, exit_code: u8) -> Self {
        let mut by_class: BTreeMap<String, u64> = BTreeMap::new();
        for (status, n) in &report.requests.by_status {
            let class = format!("{}xx", status.chars().next().unwrap_or('?'));
            *by_class.entry(class).or_default() += n;
        }
        if report.requests.transport_errors > 0 {
            by_class.insert("transport_error".into(), report.requests.transport_errors);
        }
        Summary {
            outcome: report.status.as_str().into(),
            exit_code,
            command: command.into(),
            pipeline: pipeline.into(),
            run_id: Some(report.run_id.clone()),
            resumed: report.resumed,
            error: report.error.clone(),
            users: report.users,
            messages: report.messages.clone(),
            cells: report.cells.clone(),
            requests: Requests {
                total: report.requests.total,
                retries: report.requests.retries,
                throttled: report.requests.by_status.get("429").copied().unwrap_or(0),
                by_class,
            },
            bytes: Bytes {
                received: report.requests.bytes_received,
                written: report.sink.bytes_written,
            },
            files_written: report.sink.files_written,
            wall_time_ms: report.duration_ms,
            output: Some(report.options.out.clone()),
            ..Summary::default()
        }
    }

    /// The summary of a run that failed before it had a report (configuration, lock).
    pub fn failed(command: &str, pipeline: &str, error: String, exit_code: u8) -> Self {
        Summary {
            outcome: "failed".into(),
            exit_code,
            command: command.into(),
            pipeline: pipeline.into(),
            error: Some(error),
            ..Summary::default()
        }
    }

    /// The line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a summary serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_exit_code_refuses_the_codes_that_mean_something_else() {
        assert_eq!(parse_rejects_exit_code("0"), Ok(0));
        assert_eq!(parse_rejects_exit_code("10"), Ok(10));
        for bad in ["2", "5", "7", "130", "256", "x"] {
            assert!(parse_rejects_exit_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_summary_is_one_json_line() {
        let s = Summary::failed("run", "nightly", "configuration error: x".into(), 2);
        let line = s.line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["exit_code"], 2);
        assert!(v["run_id"].is_null());
    }
}
