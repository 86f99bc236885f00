//! `--dry-run`: plan every row and render every request, send nothing, record nothing.
//!
//! `OUT/sends/campaign=ID/dry-run.jsonl` gets one line per input row (`would_send` with
//! method, path and body; `skipped` with the reason; `duplicate`; `already_<status>` for keys
//! the ledger settled, with `changed`), and for broadcasts one line per batch with its
//! request. No key is written. The counts are those a real run would produce now: the ledger,
//! when there is one, is read (without taking the state lock), never written.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::Status;
use super::config::Campaign;
use super::input::InputReader;
use super::message::Message;
use super::plan::{PlanStats, Planned, Planner, SeenKeys};
use super::render::{self, Request};
use super::{ledger, plan};

/// What a dry run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunStats {
    /// Row counts, as a real run would find them.
    pub plan: PlanStats,
    /// Requests a real run would make (rows, or broadcasts of `batch_size` rows).
    pub requests: u64,
    /// The file written.
    pub file: PathBuf,
}

impl From<super::input::InputError> for DryRunError {
    fn from(e: super::input::InputError) -> Self {
        DryRunError::Plan(plan::PlanError::Input(e))
    }
}

/// A dry run failed.
#[derive(Debug, thiserror::Error)]
pub enum DryRunError {
    /// Planning (input: exit 2; ledger: exit 6).
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// Writing the file (exit 6).
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_row: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    row_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate_of: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
}

const EMPTY: Line<'static> = Line {
    input_row: None,
    row_key: None,
    status: None,
    reason: None,
    error: None,
    duplicate_of: None,
    changed: None,
    batch: None,
    rows: None,
    method: None,
    path: None,
};

/// Opens the ledger read-only when the state store and its send tables exist.
fn open_ledger(state_dir: &Path) -> Option<Connection> {
    let path = state_dir.join("state.sqlite3");
    if !path.exists() {
        return None;
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let has: bool = conn
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type='table' AND name='send_rows'",
            [],
            |r| r.get(0),
        )
        .ok()?;
    has.then_some(conn)
}

struct Out {
    w: BufWriter<std::fs::File>,
    path: PathBuf,
}

impl Out {
    fn line(&mut self, l: &Line<'_>) -> Result<(), DryRunError> {
        let io = |source| DryRunError::Io {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.w, l).map_err(|e| io(e.into()))?;
        self.w.write_all(b"\n").map_err(io)
    }

    /// A line with the request: `body` is spliced in as the JSON text it already is.
    fn request<'a>(&mut self, l: Line<'a>, r: &'a Request) -> Result<(), DryRunError> {
        let io = |source| DryRunError::Io {
            path: self.path.clone(),
            source,
        };
        let l = Line {
            method: Some(r.method.as_str()),
            path: Some(r.path.as_str()),
            ..l
        };
        let mut text = serde_json::to_vec(&l).map_err(|e| io(e.into()))?;
        if let Some(body) = &r.body {
            text.pop(); // the closing brace
            text.extend_from_slice(b",\"body\":");
            text.extend_from_slice(body.as_bytes());
            text.push(b'}');
        }
        text.push(b'\n');
        self.w.write_all(&text).map_err(io)
    }
}

/// The state of a dry run.
struct DryRun<'a> {
    campaign: &'a Campaign,
    out: Out,
    conn: Option<Connection>,
    stats: DryRunStats,
    seen: SeenKeys,
    batch: Vec<String>,
    now_ms: i64,
}

impl DryRun<'_> {
    /// One planned row: a line, and for broadcasts the batch when it is full.
    fn row(&mut self, n: u64, p: Planned) -> Result<(), DryRunError> {
        let stats = &mut self.stats;
        stats.plan.input_rows = n;
        let base = Line {
            input_row: Some(n),
            row_key: Some(&p.key),
            ..EMPTY
        };
        if let Some(first) = self.seen.first_or_insert(&p.key, n) {
            stats.plan.duplicates += 1;
            let status = Some("duplicate".into());
            return self.out.line(&Line {
                status,
                duplicate_of: Some(first),
                ..base
            });
        }
        let known = match &self.conn {
            Some(c) => {
                ledger::lookup(c, &self.campaign.id, &p.key).map_err(plan::PlanError::from)?
            }
            None => None,
        };
        if let Some((status, hash)) = known.filter(|(s, _)| *s != Status::Pending) {
            let changed = hash != p.hash;
            stats.plan.already_settled += 1;
            stats.plan.changed += u64::from(changed);
            let status = Some(format!("already_{status}"));
            return self.out.line(&Line {
                status,
                changed: Some(changed),
                ..base
            });
        }
        if let Some(s) = &p.skip {
            *stats.plan.skipped.entry(s.category.to_owned()).or_default() += 1;
            let status = Some("skipped".into());
            return self.out.line(&Line {
                status,
                reason: Some(s.category),
                error: Some(&s.reason),
                ..base
            });
        }
        stats.plan.to_send += 1;
        let status = Some("would_send".into());
        match &p.request {
            Some(r) => {
                stats.requests += 1;
                self.out.request(Line { status, ..base }, r)
            }
            None => {
                let batch = Some(stats.requests + 1);
                self.out.line(&Line {
                    status,
                    batch,
                    ..base
                })?;
                self.batch.push(p.recipient.clone().unwrap_or_default());
                self.flush_batch(false)
            }
        }
    }

    /// Writes the broadcast for the collected recipients once full (or at the end).
    fn flush_batch(&mut self, last: bool) -> Result<(), DryRunError> {
        let Message::Broadcast {
            channel,
            title,
            content,
            publish_at_ms,
            batch_size,
            ..
        } = &self.campaign.message
        else {
            return Ok(());
        };
        if self.batch.is_empty() || (!last && self.batch.len() < *batch_size) {
            return Ok(());
        }
        self.stats.requests += 1;
        let at = publish_at_ms.unwrap_or(self.now_ms);
        let r = render::broadcast(
            &self.campaign.source,
            channel,
            title,
            content,
            at,
            &self.batch,
        );
        let line = Line {
            batch: Some(self.stats.requests),
            rows: Some(self.batch.len()),
            ..EMPTY
        };
        self.out.request(line, &r)?;
        self.batch.clear();
        Ok(())
    }
}

/// Plans every row of `reader`, writes `dry-run.jsonl`, returns the counts.
///
/// # Errors
/// [`DryRunError`].
pub fn run(
    campaign: &Campaign,
    planner: &Planner<'_>,
    reader: InputReader,
    now_ms: i64,
) -> Result<DryRunStats, DryRunError> {
    let dir = campaign.log_dir();
    let path = dir.join("dry-run.jsonl");
    let io = |source| DryRunError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = dir.join(".dry-run.jsonl.tmp");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut dr = DryRun {
        campaign,
        out: Out {
            w: BufWriter::with_capacity(1 << 20, file),
            path: path.clone(),
        },
        conn: open_ledger(&campaign.state_dir),
        stats: DryRunStats {
            file: path.clone(),
            ..DryRunStats::default()
        },
        seen: SeenKeys::default(),
        batch: Vec::new(),
        now_ms,
    };
    plan::for_each_planned(planner, reader, |n, _, p| dr.row(n, p))?;
    dr.flush_batch(true)?;
    let file = dr.out.w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(dr.stats)
}
