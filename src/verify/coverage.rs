//! Check 5: each incremental user's watermark range against the time spans of the committed
//! files whose user bounds include the user (module docs of [`super`] for what this proves).

use std::collections::HashMap;

use super::{Check, Finding, Findings};
use crate::state::{LedgerFile, StateError, StateStore};
use crate::time::rfc3339_ms;

/// The namespaces checked: `incremental` and sharded `incremental@s<I>of<N>`.
const NAMESPACE: &str = "incremental";

/// Check 5.
///
/// # Errors
/// SQLite errors.
pub(super) fn check(
    st: &StateStore,
    ledger: &[LedgerFile],
    findings: &mut Findings,
) -> Result<(), StateError> {
    let marks = st.watermarks_with_prefix(NAMESPACE)?;
    if marks.is_empty() {
        return Ok(());
    }
    let spans = spans_by_user(ledger, marks.iter().map(|m| m.1.as_str()));
    for (ns, user, start, end) in &marks {
        if end < start {
            findings.push(
                Finding::error(
                    Check::Coverage,
                    "watermark_invalid",
                    format!(
                        "[{ns}] watermark ends at {} before its start {}",
                        rfc3339_ms(*end),
                        rfc3339_ms(*start)
                    ),
                )
                .of_user(user),
            );
            continue;
        }
        let have = spans.get(user.as_str()).map_or(&[][..], Vec::as_slice);
        for (a, b) in gaps(have, *start, *end) {
            findings.push(
                Finding::warning(
                    Check::Coverage,
                    "coverage_gap",
                    format!(
                        "[{ns}] no committed file covers {} .. {} of the exported range (a window without messages leaves no file: not proof of missing data)",
                        rfc3339_ms(a),
                        rfc3339_ms(b)
                    ),
                )
                .of_user(user),
            );
        }
    }
    Ok(())
}

/// For each of `users`, the `[min_ms, max_ms)` spans of the `messages` and `dead_letter`
/// files whose user bounds include the user, sorted and merged.
fn spans_by_user<'a>(
    ledger: &[LedgerFile],
    users: impl Iterator<Item = &'a str>,
) -> HashMap<&'a str, Vec<(i64, i64)>> {
    let mut sorted: Vec<&str> = users.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for f in ledger.iter().filter(|f| f.record.stream != "users") {
        let r = &f.record;
        let from = sorted.partition_point(|u| *u < r.min_user.as_str());
        let to = sorted.partition_point(|u| *u <= r.max_user.as_str());
        for u in &sorted[from..to.max(from)] {
            out.entry(u).or_default().push((r.min_ms, r.max_ms));
        }
    }
    for v in out.values_mut() {
        *v = merge(std::mem::take(v));
    }
    out
}

/// Sorted, merged spans (touching spans join).
fn merge(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The parts of `[start, end)` that no span of `merged` covers.
fn gaps(merged: &[(i64, i64)], start: i64, end: i64) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(a, b) in merged {
        if b <= at {
            continue;
        }
        if a >= end {
            break;
        }
        if a > at {
            out.push((at, a));
        }
        at = at.max(b);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_uncovered_parts() {
        let m = merge(vec![(5, 10), (0, 3), (9, 12)]);
        assert_eq!(m, vec![(0, 3), (5, 12)]);
        assert_eq!(gaps(&m, 0, 15), vec![(3, 5), (12, 15)]);
        assert_eq!(gaps(&m, 5, 12), vec![]);
        assert_eq!(gaps(&[], 1, 2), vec![(1, 2)]);
    }
}
