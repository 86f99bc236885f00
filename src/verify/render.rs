//! The `verify` report for people: a table of the checks, then one line per finding.

use std::fmt::Write;

use super::{Report, Severity};

/// Findings of one kind listed in the text report, at most.
pub const TEXT_PER_KIND: u64 = 10;

/// The report as text (what `verify` prints without `--json`).
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.totals;
    let _ = writeln!(s, "verify   {} (state {})", r.out, r.state);
    let _ = writeln!(
        s,
        "ledger   {} files, {} rows, {} bytes; {} files on disk; {} checksums compared{}; {} message_ids read{}",
        t.ledger_files,
        t.ledger_rows,
        t.ledger_bytes,
        t.files_on_disk,
        t.checksums_checked,
        if t.files_without_checksum > 0 {
            format!(" ({} files without one)", t.files_without_checksum)
        } else {
            String::new()
        },
        t.message_ids,
        if t.api_cells > 0 {
            format!("; {} cells compared with the API", t.api_cells)
        } else {
            String::new()
        }
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<12} {:<8} {:>7} {:>9}  what it proves",
        "check", "status", "errors", "warnings"
    );
    for c in &r.checks {
        let _ = writeln!(
            s,
            "{:<12} {:<8} {:>7} {:>9}  {}",
            c.check, c.status, c.errors, c.warnings, c.what
        );
    }
    if !r.findings.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<8} {:<24} {:<40} detail",
            "severity", "finding", "where"
        );
    }
    let mut shown: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut hidden = 0u64;
    for f in &r.findings {
        let n = shown.entry(f.kind).or_default();
        *n += 1;
        if *n > TEXT_PER_KIND {
            hidden += 1;
            continue;
        }
        let place: Vec<String> = [
            f.path.clone(),
            f.path.is_none().then(|| f.partition.clone()).flatten(),
            f.user.as_ref().map(|u| format!("user {u}")),
            f.run_id.as_ref().map(|r| format!("run {r}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(
            s,
            "{sev:<8} {:<24} {:<40} {}",
            f.kind,
            place.join(", "),
            f.detail
        );
    }
    if hidden > 0 {
        let _ = writeln!(
            s,
            "... {hidden} more findings not shown ({TEXT_PER_KIND} per kind here; --json lists up to {} per check)",
            super::MAX_FINDINGS_PER_CHECK
        );
    }
    let _ = writeln!(s);
    let errors: u64 = r.checks.iter().map(|c| c.errors).sum();
    let _ = if r.consistent {
        writeln!(s, "consistent")
    } else {
        writeln!(s, "NOT consistent: {errors} errors")
    };
    s
}
