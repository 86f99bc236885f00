//! Dead-letter records: messages that could not be normalized (and, for a CRM, items the CRM
//! refused), with the reason.
//!
//! Written as JSON Lines to `OUT/_dead_letter/part-<unit>-<cell>.jsonl` (committed with the
//! unit, so a re-run does not repeat them) or to stderr for `--out -`.

use std::borrow::Cow;

use serde::Serialize;

use super::CellRef;
use crate::model::Window;
use crate::normalize::Reject;
use crate::privacy::Privacy;

/// One dead-letter line.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// The run that met the message.
    pub run_id: &'a str,
    /// The user.
    pub channel_user_id: &'a str,
    /// The cell window start, ms since epoch UTC.
    pub window_start_ms: i64,
    /// The cell window end (exclusive).
    pub window_end_ms: i64,
    /// The page the message was on.
    pub page_number: u32,
    /// Why it was rejected.
    pub reason: &'a str,
    /// The message's raw JSON text (null when a privacy policy drops `raw_json`).
    pub raw_json: Option<&'a str>,
}

/// Appends one JSON line for `reject` to `out`, under `privacy` if any.
pub fn encode(
    out: &mut Vec<u8>,
    run_id: &str,
    user: &str,
    window: Window,
    reject: &Reject,
    privacy: Option<&Privacy>,
) {
    let (user, raw_json) = match privacy {
        Some(p) => p.dead_letter(user, &reject.raw_json),
        None => (
            Cow::Borrowed(user),
            Some(Cow::Borrowed(reject.raw_json.as_str())),
        ),
    };
    let line = DeadLetter {
        run_id,
        channel_user_id: &user,
        window_start_ms: window.start_ms,
        window_end_ms: window.end_ms,
        page_number: reject.page_number,
        reason: &reject.reason,
        raw_json: raw_json.as_deref(),
    };
    serde_json::to_writer(&mut *out, &line).expect("writing to a Vec cannot fail");
    out.push(b'\n');
}

/// A unit's dead letters: JSON lines and their count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeadLetters {
    /// The lines (each ends with `\n`).
    pub lines: Vec<u8>,
    /// How many.
    pub rows: u64,
    /// Cells (indexes into the unit's cells) dead-lettered whole because they could not be
    /// read consistently: their watermarks do not move.
    pub unreadable: Vec<u32>,
}

impl DeadLetters {
    /// Adds the rejects of one cell (under `privacy`, if any).
    pub fn push_rejects(
        &mut self,
        run_id: &str,
        cell: &CellRef,
        rejects: &[Reject],
        privacy: Option<&Privacy>,
    ) {
        for r in rejects {
            encode(&mut self.lines, run_id, &cell.user, cell.window, r, privacy);
            self.rows += 1;
        }
    }

    /// Adds cell `index` as unreadable: one line with the reason (`page_number` 0, no raw
    /// JSON), under `privacy` if any.
    pub fn push_unreadable(
        &mut self,
        run_id: &str,
        index: u32,
        cell: &CellRef,
        reason: &str,
        privacy: Option<&Privacy>,
    ) {
        let reject = Reject {
            reason: reason.to_owned(),
            raw_json: String::new(),
            page_number: 0,
        };
        encode(
            &mut self.lines,
            run_id,
            &cell.user,
            cell.window,
            &reject,
            privacy,
        );
        self.rows += 1;
        self.unreadable.push(index);
    }

    /// Adds one line of any shape (a CRM refusal).
    pub fn push_json(&mut self, line: &serde_json::Value) {
        serde_json::to_writer(&mut self.lines, line).expect("writing to a Vec cannot fail");
        self.lines.push(b'\n');
        self.rows += 1;
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}
