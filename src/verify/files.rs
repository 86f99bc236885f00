//! Checks 1 and 2: the ledger's files against the files on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::{Check, Finding, Findings, read};
use crate::state::{LedgerFile, STAGED_SUFFIX, StateError, checksum};

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

/// Files whose checksum was compared, and files the ledger keeps none for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Checksums {
    /// Hashed and compared with the ledger (equal or not).
    pub checked: u64,
    /// Recorded before the ledger kept checksums: size and rows only.
    pub unrecorded: u64,
}

/// Check 1: every ledger file exists with its size, checksum and rows. `rows`: the rows
/// counted in the `messages` files (by [`super::ids::scan`]); other streams are counted here.
/// A file's checksum is computed only when its size is right (a size mismatch already says it
/// is not the file committed).
pub(super) fn check_ledger(
    out: &Path,
    ledger: &[LedgerFile],
    disk: &Disk,
    rows: &HashMap<String, Result<u64, String>>,
    findings: &mut Findings,
) -> Checksums {
    let mut sums = Checksums::default();
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
        // Set when the file could not be read for its checksum.
        let mut hash_error = None;
        if size != r.bytes {
            // Its size already says it is not the file committed: no checksum is computed.
            findings.push(
                Finding::error(
                    Check::Files,
                    "size_mismatch",
                    format!("{size} bytes on disk, {} in the ledger", r.bytes),
                )
                .at(&r.path)
                .of_run(&f.run_id),
            );
        } else if let Some(recorded) = &r.checksum {
            sums.checked += 1;
            match checksum::of_file(&out.join(&r.path)) {
                Ok(actual) if actual == *recorded => {}
                Ok(actual) => findings.push(
                    Finding::error(
                        Check::Files,
                        "checksum_mismatch",
                        format!(
                            "xxh3-128 of the file is {actual}, the ledger recorded {recorded}: its content is not what was committed"
                        ),
                    )
                    .at(&r.path)
                    .of_run(&f.run_id),
                ),
                Err(e) => hash_error = Some(format!("cannot read it for its checksum: {e}")),
            }
        }
        if r.checksum.is_none() {
            sums.unrecorded += 1;
        }
        let counted = match rows.get(&r.path) {
            Some(c) => c.clone(),
            None => read::row_count(&out.join(&r.path)),
        };
        // One `unreadable_file` per file: counting its rows failing says it already.
        let counted = match (counted, hash_error) {
            (Ok(_), Some(e)) => Err(e),
            (c, _) => c,
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
    if sums.unrecorded > 0 {
        findings.push(Finding::warning(
            Check::Files,
            "no_checksum",
            format!(
                "{} files were committed by a version whose ledger kept no checksum: their size and row count are checked, not their content (a run that rewrites them records one)",
                sums.unrecorded
            ),
        ));
    }
    sums
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
