//! The state in the output: the manifests an output on object storage is committed with, and
//! their replay into the local state store.
//!
//! **Manifests.** A Parquet/JSONL output on object storage commits each unit with one small
//! JSON object, `<prefix>/_manifests/<namespace key>/<seq:012>.json`, written by conditional
//! create (the Delta log pattern; `sink::remote_files`). Each state namespace (`export`,
//! `incremental`, `backfill:<from>:<to>`, a shard's) has its own log, numbered from 1 without
//! gaps. Three kinds:
//! - `start`: a worker claims the namespace (its `writer` id is in the names of the objects it
//!   uploads);
//! - `commit`: a unit's added files with their full ledger records, the paths it removes, the
//!   unit's progress and the watermark moves;
//! - `finish`: the run's end status (and its report).
//!
//! Every manifest carries its run's metadata ([`RunMeta`]), so a worker with an empty
//! `--state-dir` (a fresh container) rebuilds from the manifests alone: the files ledger, the
//! runs and their committed units (resume), the watermarks (incremental runs).
//!
//! **Replay** ([`StateStore::apply_manifest`]) is idempotent (applied manifests are recorded in
//! `remote_manifests`), in `seq` order within a namespace, in any order across namespaces:
//! object names are unique and never reused, so a path removed by any manifest is dead
//! (`remote_removed`, the tombstones) and a later-replayed add of it is ignored.

use std::collections::HashSet;

use super::watermarks::advance_watermarks;
use super::*;

/// The local tables of the replay (created with the store; older stores gain them on open).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS remote_manifests(
  ns_key TEXT NOT NULL,
  seq INTEGER NOT NULL,
  kind TEXT NOT NULL,
  writer TEXT NOT NULL,
  run_id TEXT NOT NULL,
  PRIMARY KEY(ns_key, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS remote_removed(path TEXT PRIMARY KEY) WITHOUT ROWID;
";

/// The manifest format this version writes (and the newest it reads).
pub const MANIFEST_VERSION: u32 = 1;

/// The directory of the manifests under an output's prefix.
pub const MANIFESTS_DIR: &str = "_manifests";

/// What a manifest records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    /// A worker claims the namespace for a run (before it uploads anything).
    Start,
    /// A unit (or the users table) committed.
    Commit,
    /// A run ended.
    Finish,
}

impl ManifestKind {
    fn as_str(self) -> &'static str {
        match self {
            ManifestKind::Start => "start",
            ManifestKind::Commit => "commit",
            ManifestKind::Finish => "finish",
        }
    }
}

/// A run as the `runs` table holds it: what a fresh worker needs to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub run_id: String,
    /// State namespace.
    pub namespace: String,
    /// Hash of the resume parameters (a run resumes only with the same).
    pub params_hash: String,
    /// The resume parameters (JSON text).
    pub params: String,
    /// End of the run's range, ms since epoch UTC.
    pub until_ms: Option<i64>,
    /// Start, ms since epoch UTC.
    pub started_ms: i64,
}

/// A unit's progress: `cells_done` cells of `unit_key` committed by the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitProgress {
    /// The unit.
    pub unit_key: String,
    /// Cells committed from the unit's first.
    pub cells_done: u32,
}

/// One manifest object (JSON). Format version 1; unknown fields are ignored by readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// What it records.
    pub kind: ManifestKind,
    /// Position in its namespace's log, from 1.
    pub seq: u64,
    /// The process that wrote it (a `start` registers it for the orphan sweep).
    pub writer: String,
    /// When it was written, ms since epoch UTC.
    pub written_ms: i64,
    /// The run.
    pub run: RunMeta,
    /// Files added, with their ledger records (paths relative to the output's prefix).
    #[serde(default)]
    pub adds: Vec<FileRecord>,
    /// Paths removed (replaced files).
    #[serde(default)]
    pub removes: Vec<String>,
    /// The unit committed, if any (the users table commits none).
    #[serde(default)]
    pub unit: Option<UnitProgress>,
    /// Watermark moves (incremental runs).
    #[serde(default)]
    pub watermarks: Vec<WatermarkMove>,
    /// `finish`: the run's status (`succeeded`, `completed_with_rejects`, `interrupted`,
    /// `failed`).
    #[serde(default)]
    pub status: Option<String>,
    /// `finish`: the run report (JSON text).
    #[serde(default)]
    pub report: Option<String>,
}

/// The manifest directory of a namespace: its name made path-safe (characters other than
/// ASCII letters, digits, `.`, `_` and `-` become `_`) and an xxh3 of the exact name, so two
/// names that sanitize alike never share a log (`backfill:2026-01-01:2026-02-01` becomes
/// `backfill_2026-01-01_2026-02-01-<16 hex>`).
pub fn namespace_key(namespace: &str) -> String {
    let safe: String = namespace
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{safe}-{:016x}",
        xxhash_rust::xxh3::xxh3_64(namespace.as_bytes())
    )
}

/// `_manifests/<key>/<seq:012>.json`.
pub fn manifest_path(ns_key: &str, seq: u64) -> String {
    format!("{MANIFESTS_DIR}/{ns_key}/{seq:012}.json")
}

/// Reads `_manifests/<key>/<seq>.json` back into `(key, seq)`; `None` for any other name.
pub fn parse_manifest_path(rel: &str) -> Option<(String, u64)> {
    let rest = rel.strip_prefix(MANIFESTS_DIR)?.strip_prefix('/')?;
    let (key, file) = rest.split_once('/')?;
    let seq = file.strip_suffix(".json")?;
    (seq.len() == 12 && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| seq.parse().ok().map(|s| (key.to_owned(), s)))
        .flatten()
}

/// A manifest as recorded in the local state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    /// Its namespace key ([`namespace_key`]).
    pub ns_key: String,
    /// Its seq.
    pub seq: u64,
    /// Its kind.
    pub kind: ManifestKind,
    /// The writer that created it.
    pub writer: String,
    /// Its run.
    pub run_id: String,
}

/// Records a manifest as applied, inside the transaction that applies it.
pub(super) fn record(tx: &rusqlite::Transaction<'_>, m: &ManifestRef) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR IGNORE INTO remote_manifests(ns_key, seq, kind, writer, run_id) VALUES(?1, ?2, ?3, ?4, ?5)",
        params![m.ns_key, m.seq as i64, m.kind.as_str(), m.writer, m.run_id],
    )
    .map(|_| ())
}

/// Tombstones removed paths and drops them from the ledger.
pub(super) fn remove_paths(
    tx: &rusqlite::Transaction<'_>,
    paths: &[String],
) -> rusqlite::Result<()> {
    let mut dead = tx.prepare_cached("INSERT OR IGNORE INTO remote_removed(path) VALUES(?1)")?;
    let mut del = tx.prepare_cached("DELETE FROM files WHERE path=?1")?;
    for p in paths {
        dead.execute([p])?;
        del.execute([p])?;
    }
    Ok(())
}

impl StateStore {
    /// Applies a manifest read from the output (replay), in one transaction; `false` when it
    /// was applied before. See the module documentation for the rules. A shard's store (see
    /// [`StateStore::shard`]) leaves out the files other shards added.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn apply_manifest(&mut self, ns_key: &str, m: &Manifest) -> Result<bool, StateError> {
        let (path, shard) = (self.path.clone(), self.shard);
        let e = sql(&path);
        let tx = self.conn.transaction().map_err(&e)?;
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM remote_manifests WHERE ns_key=?1 AND seq=?2)",
                params![ns_key, m.seq as i64],
                |r| r.get(0),
            )
            .map_err(&e)?;
        if applied {
            return Ok(false);
        }
        replay_run(&tx, m).map_err(&e)?;
        remove_paths(&tx, &m.removes).map_err(&e)?;
        // A shard's ledger leaves out the files of the other shards: they hold none of its
        // users, and a shard must never replace another's file or merge its users.
        let adds: Vec<FileRecord> = m
            .adds
            .iter()
            .filter(|f| match (shard, crate::shard::Shard::tag_in(&f.path)) {
                (Some(me), Some(theirs)) => me == theirs,
                _ => true,
            })
            .cloned()
            .collect();
        insert_live_records(&tx, &m.run.run_id, &adds).map_err(&e)?;
        if let Some(u) = &m.unit {
            tx.execute(
                "INSERT INTO run_units(run_id, unit_key, cells_done) VALUES(?1, ?2, ?3)
                 ON CONFLICT(run_id, unit_key) DO UPDATE SET cells_done=excluded.cells_done",
                params![m.run.run_id, u.unit_key, u.cells_done],
            )
            .map_err(&e)?;
        }
        advance_watermarks(&tx, &m.run.run_id, &m.watermarks).map_err(&e)?;
        let r = ManifestRef {
            ns_key: ns_key.to_owned(),
            seq: m.seq,
            kind: m.kind,
            writer: m.writer.clone(),
            run_id: m.run.run_id.clone(),
        };
        record(&tx, &r).map_err(&e)?;
        tx.commit().map_err(&e)?;
        Ok(true)
    }

    /// Records a manifest this process wrote that changes no file (`start`, `finish`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn record_manifest(&mut self, m: &ManifestRef) -> Result<(), StateError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        record(&tx, m).map_err(sql(&path))?;
        tx.commit().map_err(sql(&path))
    }

    /// The manifests applied locally: `(namespace key, seq)`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn applied_manifests(&self) -> Result<HashSet<(String, u64)>, StateError> {
        let mut st = self
            .conn
            .prepare("SELECT ns_key, seq FROM remote_manifests")
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// The highest seq applied in a namespace's log (0 when none).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_manifest_seq(&self, ns_key: &str) -> Result<u64, StateError> {
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM remote_manifests WHERE ns_key=?1",
                [ns_key],
                |r| r.get::<_, i64>(0),
            )
            .map(|s| s as u64)
            .map_err(sql(&self.path))
    }

    /// The writers that claimed a namespace (its `start` manifests) before `seq`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn writers_before(&self, ns_key: &str, seq: u64) -> Result<HashSet<String>, StateError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT writer FROM remote_manifests WHERE ns_key=?1 AND kind='start' AND seq < ?2",
            )
            .map_err(sql(&self.path))?;
        let rows = st
            .query_map(params![ns_key, seq as i64], |r| r.get(0))
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// Every path in the files ledger (the output's live files).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn ledger_paths(&self) -> Result<HashSet<String>, StateError> {
        self.strings("SELECT path FROM files")
    }

    /// Every path a manifest removed (dead objects, deleted by the orphan sweep if still there).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn removed_paths(&self) -> Result<HashSet<String>, StateError> {
        self.strings("SELECT path FROM remote_removed")
    }

    fn strings(&self, query: &str) -> Result<HashSet<String>, StateError> {
        let mut st = self.conn.prepare(query).map_err(sql(&self.path))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    /// The metadata of a run of the history, if it is there.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn run_meta(&self, run_id: &str) -> Result<Option<RunMeta>, StateError> {
        self.conn
            .query_row(
                "SELECT namespace, params_hash, params, until_ms, started_ms FROM runs WHERE run_id=?1",
                [run_id],
                |r| {
                    Ok(RunMeta {
                        run_id: run_id.to_owned(),
                        namespace: r.get(0)?,
                        params_hash: r.get(1)?,
                        params: r.get(2)?,
                        until_ms: r.get(3)?,
                        started_ms: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path))
    }
}

/// Adds ledger records, except paths some manifest already removed.
fn insert_live_records(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    records: &[FileRecord],
) -> rusqlite::Result<()> {
    let mut ins = tx.prepare_cached(
        "INSERT OR REPLACE INTO files(path, stream, unit_key, cells_from, cells_to, min_user, max_user, min_ms, max_ms, rows, bytes, run_id, commit_id, checksum)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, ?13
         WHERE NOT EXISTS(SELECT 1 FROM remote_removed WHERE path=?1)",
    )?;
    for f in records {
        ins.execute(params![
            f.path,
            f.stream,
            f.unit_key,
            f.cells_from,
            f.cells_to,
            f.min_user,
            f.max_user,
            f.min_ms,
            f.max_ms,
            f.rows as i64,
            f.bytes as i64,
            run_id,
            f.checksum
        ])?;
    }
    Ok(())
}

/// The run's row as its manifest says: a `start` (re)opens it as `interrupted` (a later
/// `finish` says otherwise; a worker killed never writes one), abandoning the namespace's
/// previous unfinished run as `begin_run` did; a `finish` closes it like `finish_run`.
fn replay_run(tx: &rusqlite::Transaction<'_>, m: &Manifest) -> rusqlite::Result<()> {
    let r = &m.run;
    if m.kind == ManifestKind::Start {
        let last: Option<(String, String)> = tx
            .query_row(
                "SELECT run_id, status FROM runs WHERE namespace=?1 ORDER BY started_ms DESC, rowid DESC LIMIT 1",
                [&r.namespace],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        if let Some((id, status)) = last
            && id != r.run_id
            && matches!(status.as_str(), "running" | "interrupted" | "failed")
        {
            tx.execute("UPDATE runs SET status='abandoned' WHERE run_id=?1", [&id])?;
            tx.execute(
                "UPDATE watermarks SET run_id=NULL, end_before_run=NULL WHERE run_id=?1",
                [&id],
            )?;
        }
    }
    tx.execute(
        "INSERT INTO runs(run_id, namespace, params_hash, params, until_ms, started_ms, status) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 'interrupted')
         ON CONFLICT(run_id) DO NOTHING",
        params![r.run_id, r.namespace, r.params_hash, r.params, r.until_ms, r.started_ms],
    )?;
    match (m.kind, m.status.as_deref()) {
        (ManifestKind::Start, _) => {
            tx.execute(
                "UPDATE runs SET status='interrupted', finished_ms=NULL WHERE run_id=?1",
                [&r.run_id],
            )?;
        }
        (ManifestKind::Finish, Some(status)) => {
            tx.execute(
                "UPDATE runs SET status=?2, report=?3, finished_ms=?4 WHERE run_id=?1",
                params![r.run_id, status, m.report, m.written_ms],
            )?;
            if matches!(status, "succeeded" | "completed_with_rejects") {
                tx.execute("DELETE FROM run_units WHERE run_id=?1", [&r.run_id])?;
                tx.execute(
                    "UPDATE watermarks SET run_id=NULL, end_before_run=NULL WHERE run_id=?1",
                    [&r.run_id],
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}
