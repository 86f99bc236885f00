//! Check 3: no `message_id` twice across the `messages` files, read one column at a time;
//! the same pass counts each file's rows for checks 1 and 4.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use super::files::{Disk, is_staged};
use super::{Check, Finding, Findings, MAX_FINDINGS_PER_CHECK, read};
use crate::state::LedgerFile;

/// What the scan read.
pub(super) struct IdScan {
    /// Rows per `messages` file read (or why it could not be read), by relative path.
    pub rows: HashMap<String, Result<u64, String>>,
    /// `message_id`s read.
    pub ids: u64,
}

/// The `messages` data files on disk, ledger files first (so a copy is the one reported).
fn message_files<'a>(ledger: &'a [LedgerFile], disk: &'a Disk) -> Vec<&'a str> {
    let mut files: Vec<&str> = ledger
        .iter()
        .filter(|f| f.record.stream == "messages" && disk.contains_key(&f.record.path))
        .map(|f| f.record.path.as_str())
        .collect();
    let known: std::collections::HashSet<&str> = files.iter().copied().collect();
    files.extend(
        disk.keys()
            .map(String::as_str)
            .filter(|p| p.starts_with("messages/") && !is_staged(p) && !known.contains(p)),
    );
    files
}

/// Reads the `message_id` of every row of the `messages` files on disk (ledger and stray
/// files; staged files are not data). Memory: one 128-bit key and a file index per id.
pub(super) fn scan(
    out: &Path,
    ledger: &[LedgerFile],
    disk: &Disk,
    findings: &mut Findings,
) -> IdScan {
    let files = message_files(ledger, disk);
    let mut seen: HashMap<u128, u32> = HashMap::new();
    let mut rows = HashMap::with_capacity(files.len());
    let mut ids = 0u64;
    for (index, path) in files.iter().enumerate() {
        let (mut dups, mut more): (Vec<(String, u32)>, u64) = (Vec::new(), 0);
        let counted = read::for_each_row(&out.join(path), false, |(id, _, _)| {
            ids += 1;
            match seen.entry(read::id_key(id)) {
                Entry::Vacant(v) => {
                    v.insert(index as u32);
                }
                Entry::Occupied(o) if dups.len() < MAX_FINDINGS_PER_CHECK => {
                    dups.push((id.to_owned(), *o.get()));
                }
                Entry::Occupied(_) => more += 1,
            }
        });
        report_duplicates(path, &files, &dups, findings);
        if more > 0 {
            findings.push(
                Finding::error(
                    Check::Duplicates,
                    "duplicate_message_id",
                    format!("{more} more duplicated message_ids in this file"),
                )
                .at(path),
            );
        }
        rows.insert((*path).to_owned(), counted);
    }
    IdScan { rows, ids }
}

/// One finding per duplicated id of `path` (the first file it was seen in is named).
fn report_duplicates(path: &str, files: &[&str], dups: &[(String, u32)], findings: &mut Findings) {
    for (id, first) in dups {
        let other = files.get(*first as usize).copied().unwrap_or("?");
        let where_ = if other == path {
            "twice in this file".to_owned()
        } else {
            format!("also in {other}")
        };
        findings.push(
            Finding::error(
                Check::Duplicates,
                "duplicate_message_id",
                format!("message_id {id} {where_}"),
            )
            .at(path),
        );
    }
}
