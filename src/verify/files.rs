//! Checks 1 and 2: the ledger's files against the files on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::{Check, Finding, Findings, read};
use crate::state::{LedgerFile, STAGED_SUFFIX, StateError};

/// The directories of the output that hold data files.
pub(super) const DATA_DIRS: [&str; 3] = ["messages", "users", "_dead_letter"];

/// Files under the data directories: relative `/`-separated path -> size in bytes.
pub(super) type Disk = BTreeMap<String, u64>;

/// True for a staged file's name (`.part-....tmp`).
pub(super) fn is_staged(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(STAGED_SUFFIX)
}

/// Lists every file under `out`'s data directories.
///
/// # Errors
/// [`StateError::Io`] when a directory cannot be listed.
pub(super) fn walk(out: &Path) -> Result<Disk, StateError> {
    let mut disk = Disk::new();
    let mut todo: Vec<String> = DATA_DIRS
        .iter()
        .filter(|d| out.join(d).is_dir())
        .map(|d| (*d).to_owned())
        .collect();
    while let Some(rel) = todo.pop() {
        let dir = out.join(&rel);
        let io = |source| StateError::Io {
            action: "listing",
            path: dir.clone(),
            source,
        };
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            let meta = entry.metadata().map_err(io)?;
            if meta.is_dir() {
                todo.push(path);
            } else {
                disk.insert(path, meta.len());
            }
        }
    }
    Ok(disk)
}

/// Check 1: every ledger file exists with its size and rows. `rows`: the rows counted in the
/// `messages` files (by [`super::ids::scan`]); other streams are counted here.
pub(super) fn check_ledger(
    out: &Path,
    ledger: &[LedgerFile],
    disk: &Disk,
    rows: &HashMap<String, Result<u64, String>>,
    findings: &mut Findings,
) {
    for f in ledger {
        let r = &f.record;
        let Some(&size) = disk.get(&r.path) else {
            findings.push(
                Finding::error(
                    Check::Files,
                    "missing_file",
                    format!(
                        "the ledger says it is committed ({} rows, {} bytes) but it is not on disk",
                        r.rows, r.bytes
                    ),
                )
                .at(&r.path)
                .of_run(&f.run_id),
            );
            continue;
        };
        if size != r.bytes {
            findings.push(
                Finding::error(
                    Check::Files,
                    "size_mismatch",
                    format!("{size} bytes on disk, {} in the ledger", r.bytes),
                )
                .at(&r.path)
                .of_run(&f.run_id),
            );
        }
        let counted = match rows.get(&r.path) {
            Some(c) => c.clone(),
            None => read::row_count(&out.join(&r.path)),
        };
        match counted {
            Err(e) => findings.push(
                Finding::error(Check::Files, "unreadable_file", e)
                    .at(&r.path)
                    .of_run(&f.run_id),
            ),
            Ok(n) if n != r.rows => findings.push(
                Finding::error(
                    Check::Files,
                    "row_count_mismatch",
                    format!("{n} rows in the file, {} in the ledger", r.rows),
                )
                .at(&r.path)
                .of_run(&f.run_id),
            ),
            Ok(_) => {}
        }
    }
}

/// Check 2: staged files and files the ledger does not name. `running`: a run holds the store
/// (its staged files are expected: warnings).
pub(super) fn check_strays(
    ledger: &[LedgerFile],
    disk: &Disk,
    running: bool,
    findings: &mut Findings,
) {
    let known: HashSet<&str> = ledger.iter().map(|f| f.record.path.as_str()).collect();
    for (path, size) in disk {
        if known.contains(path.as_str()) {
            continue;
        }
        let f = if is_staged(path) {
            let detail = format!(
                "staged file ({size} bytes) no commit put in place: a run crashed or is running; the next run's recovery removes it"
            );
            if running {
                Finding::warning(Check::Strays, "staged_file", detail)
            } else {
                Finding::error(Check::Strays, "staged_file", detail)
            }
        } else {
            Finding::error(
                Check::Strays,
                "stray_file",
                format!(
                    "{size} bytes the ledger does not name: readers globbing the output would read it"
                ),
            )
        };
        findings.push(f.at(path));
    }
}
