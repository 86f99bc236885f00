//! Parquet/JSONL files on object storage (`--out s3://bucket/prefix`, `gs://`, `az://`,
//! `file://`): the file sink writes, rotates and supersedes exactly as for a local directory,
//! in a local mirror (`<state_dir>/mirror`), and this module commits each unit to the store
//! with a manifest (the Delta log pattern; the format is in `state/manifests.rs`).
//!
//! **Commit protocol, per unit** ([`RemoteFiles::publish`]):
//! 1. upload every added file (messages, dead letters, remnants, the users file) to
//!    `<prefix>/<path>`: one put, or a multipart upload for a large file, so an object appears
//!    whole; names are unique per commit (`…-<writer>-<commit>.parquet`), so a committed object
//!    is never overwritten;
//! 2. create `<prefix>/_manifests/<namespace key>/<seq:012>.json` by conditional create
//!    (`PutMode::Create`). **This is the commit point**: readers, `state` and a fresh worker
//!    trust only files named by committed manifests. If the object exists, another worker took
//!    the namespace: [`SinkError::AnotherWorker`];
//! 3. commit the local state (ledger, unit progress, watermarks, the manifest as applied) and
//!    evict the mirror's copies;
//! 4. delete the replaced objects.
//!
//! A kill between any two steps leaves orphans at worst (uploads no manifest names, replaced
//! objects not yet deleted), which the next start deletes (`remote_orphans`). Failpoints (feature
//! `fault-injection`): `remote::after_upload`, `remote::after_manifest`,
//! `remote::after_local_commit`.
//!
//! **One worker per namespace.** At start a worker claims its namespace with a `start`
//! manifest at the next seq. A second worker on the same namespace either loses that claim or
//! claims after it, and then the first one's next commit finds its seq taken and stops. Once a
//! claim at seq `s` is committed, no earlier writer of the namespace can commit again (its next
//! seq is at most `s`, which exists), so the sweep may delete their unreferenced uploads.
//!
//! All object-store I/O runs on the sink's own single-threaded runtime, on the sink's thread.

use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};

use super::SinkError;
use crate::state::{
    CommitPlan, MANIFEST_VERSION, Manifest, ManifestKind, ManifestRef, RunMeta, StateStore,
    UnitProgress, manifest_path, namespace_key,
};
use crate::storage::Remote;

/// Uploads, downloads and deletes in flight at once.
const PARALLEL: usize = 4;
/// `meta` key: the users file whose users the local `users` table already holds.
const USERS_FILE_KEY: &str = "remote_users_file";

/// The object-store side of a file sink's run.
pub struct RemoteFiles {
    remote: Remote,
    rt: tokio::runtime::Runtime,
    /// The local mirror (the file sink's output directory).
    mirror: PathBuf,
    run: RunMeta,
    ns_key: String,
    /// This process: `<run8><12 hex>`, random, in every object name it uploads.
    writer: String,
    /// The last seq of the namespace's log this worker saw or wrote.
    seq: u64,
    /// Commits (name tags) so far.
    commits: u32,
    /// Files downloaded into the mirror for the commit being prepared.
    fetched: Vec<PathBuf>,
}

/// A current-thread runtime for object-store I/O off the pipeline's executor.
///
/// # Errors
/// [`SinkError::Crashed`] when the runtime cannot start.
pub fn runtime() -> Result<tokio::runtime::Runtime, SinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SinkError::Crashed(format!("cannot start the object-store runtime: {e}")))
}

/// A writer id for `run_id`: its first 8 alphanumerics and 48 random bits.
pub fn new_writer(run_id: &str) -> String {
    format!(
        "{}{:012x}",
        super::run8(run_id),
        rand::random::<u64>() & 0xffff_ffff_ffff
    )
}

/// `dir/stem.ext` with `-<tag>` appended to the stem (the name up to its first `.`):
/// `messages/date=D/part-U-00000-000.parquet` becomes `…/part-U-00000-000-<tag>.parquet`.
pub fn tagged(path: &str, tag: &str) -> String {
    let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
    let (stem, ext) = name.split_once('.').map_or((name, ""), |(s, e)| (s, e));
    let sep = if dir.is_empty() { "" } else { "/" };
    let dot = if ext.is_empty() { "" } else { "." };
    format!("{dir}{sep}{stem}-{tag}{dot}{ext}")
}

/// The writer id in a name made by [`tagged`] (`…-<writer>-<4 digits>.ext`), if it has one.
pub fn writer_of(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let stem = name.split_once('.').map_or(name, |(s, _)| s);
    let (rest, commit) = stem.rsplit_once('-')?;
    let (_, writer) = rest.rsplit_once('-')?;
    (commit.len() >= 4 && commit.bytes().all(|b| b.is_ascii_digit()) && writer.len() == 20)
        .then_some(writer)
}

impl RemoteFiles {
    /// Opens the output at `url` for run `run_id` (already in `state`), claims the run's
    /// namespace with a `start` manifest and deletes the orphans earlier workers left.
    ///
    /// # Errors
    /// [`SinkError::AnotherWorker`] when the claim loses; store and state errors.
    pub fn start(
        url: &str,
        mirror: &Path,
        state: &mut StateStore,
        run_id: &str,
    ) -> Result<Self, SinkError> {
        let run = state
            .run_meta(run_id)?
            .ok_or_else(|| SinkError::Crashed(format!("run {run_id} is not in the state")))?;
        let ns_key = namespace_key(&run.namespace);
        let mut me = RemoteFiles {
            remote: Remote::open(url)?,
            rt: runtime()?,
            mirror: mirror.to_owned(),
            seq: state.last_manifest_seq(&ns_key)?,
            writer: new_writer(run_id),
            ns_key,
            run,
            commits: 0,
            fetched: Vec::new(),
        };
        let claim = me.manifest(ManifestKind::Start);
        me.create(&claim)?;
        state.record_manifest(&me.applied(ManifestKind::Start))?;
        let swept = me.rt.block_on(super::remote_orphans::sweep(
            &me.remote, state, &me.ns_key, me.seq,
        ))?;
        tracing::info!(
            output = %me.remote.url,
            namespace = %me.run.namespace,
            seq = me.seq,
            writer = %me.writer,
            removed_objects = swept.removed,
            orphans = swept.orphans,
            "Claimed the output's namespace; deleted what earlier workers left."
        );
        Ok(me)
    }

    /// The tag of the next commit's object names: `<writer>-<commit:04>`.
    pub fn next_tag(&mut self) -> String {
        self.commits += 1;
        format!("{}-{:04}", self.writer, self.commits)
    }

    fn manifest(&self, kind: ManifestKind) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            kind,
            seq: self.seq + 1,
            writer: self.writer.clone(),
            written_ms: crate::time::now_ms(),
            run: self.run.clone(),
            adds: Vec::new(),
            removes: Vec::new(),
            unit: None,
            watermarks: Vec::new(),
            status: None,
            report: None,
        }
    }

    fn applied(&self, kind: ManifestKind) -> ManifestRef {
        ManifestRef {
            ns_key: self.ns_key.clone(),
            seq: self.seq,
            kind,
            writer: self.writer.clone(),
            run_id: self.run.run_id.clone(),
        }
    }

    /// Creates manifest `m` (its seq must be `self.seq + 1`) by conditional create.
    fn create(&mut self, m: &Manifest) -> Result<(), SinkError> {
        let rel = manifest_path(&self.ns_key, m.seq);
        if !create_manifest(&self.rt, &self.remote, &rel, m)? {
            return Err(SinkError::AnotherWorker {
                output: self.remote.url.to_string(),
                namespace: self.run.namespace.clone(),
                manifest: rel,
            });
        }
        self.seq = m.seq;
        Ok(())
    }

    /// Downloads into the mirror the committed files supersede must read (those not there).
    ///
    /// # Errors
    /// Store or file errors.
    pub fn fetch<'a>(&mut self, paths: impl Iterator<Item = &'a str>) -> Result<(), SinkError> {
        let todo: Vec<(String, PathBuf)> = paths
            .map(|p| (p.to_owned(), self.mirror.join(p)))
            .filter(|(_, local)| !local.exists())
            .collect();
        let remote = &self.remote;
        self.rt.block_on(
            futures_util::stream::iter(todo.iter())
                .map(|(rel, local)| remote.download(rel, local))
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<()>>(),
        )?;
        self.fetched.extend(todo.into_iter().map(|(_, l)| l));
        Ok(())
    }

    /// Deletes the mirror's downloaded copies.
    pub fn evict(&mut self) {
        for f in self.fetched.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }

    /// Commits `plan` (staged files in the mirror, records, removes, progress) to the store
    /// and then to the local state; see the module documentation for the steps.
    ///
    /// # Errors
    /// [`SinkError::AnotherWorker`] when the manifest's seq is taken; store and state errors.
    /// Nothing is committed unless the manifest was created.
    pub fn publish(
        &mut self,
        state: &mut StateStore,
        mut plan: CommitPlan,
    ) -> Result<(), SinkError> {
        self.upload(&plan.adds)?;
        fail::fail_point!("remote::after_upload", |_| crate::hooks::crash(
            "after uploading a commit's files, before its manifest"
        ));
        test_gate();
        let mut m = self.manifest(ManifestKind::Commit);
        m.adds = plan.records.clone();
        m.removes = plan.removes.clone();
        m.watermarks = plan.watermarks.clone();
        m.unit = plan
            .unit_progress
            .clone()
            .map(|(unit_key, cells_done)| UnitProgress {
                unit_key,
                cells_done,
            });
        self.create(&m)?;
        fail::fail_point!("remote::after_manifest", |_| crate::hooks::crash(
            "after a commit's manifest, before the local state recorded it"
        ));
        let staged: Vec<String> = plan.adds.drain(..).map(|(s, _)| s).collect();
        plan.manifest = Some(self.applied(ManifestKind::Commit));
        state.commit(&self.run.run_id, &plan, &self.mirror, crate::time::now_ms())?;
        fail::fail_point!("remote::after_local_commit", |_| crate::hooks::crash(
            "after a commit was recorded locally, before the replaced objects were deleted"
        ));
        for s in &staged {
            let _ = std::fs::remove_file(self.mirror.join(s));
        }
        self.evict();
        self.delete(&plan.removes);
        Ok(())
    }

    /// Uploads the staged files of `adds` (`(staged, final)` relative paths).
    fn upload(&self, adds: &[(String, String)]) -> Result<(), SinkError> {
        let remote = &self.remote;
        let mirror = &self.mirror;
        self.rt.block_on(
            futures_util::stream::iter(adds.iter())
                .map(|(staged, fin)| async move { remote.upload(fin, &mirror.join(staged)).await })
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<u64>>(),
        )?;
        Ok(())
    }

    /// Deletes replaced objects; one that fails stays an orphan for the next start's sweep.
    fn delete(&self, paths: &[String]) {
        let remote = &self.remote;
        let failed = self.rt.block_on(
            futures_util::stream::iter(paths.iter())
                .map(|p| remote.delete(p))
                .buffer_unordered(PARALLEL)
                .filter(|r| std::future::ready(r.is_err()))
                .count(),
        );
        if failed > 0 {
            tracing::warn!(
                failed,
                "Could not delete some replaced objects; the next run's start deletes them."
            );
        }
    }

    /// Before the users file is rewritten: the users of every committed users file this
    /// state has not read (written by another worker, or before this state directory existed)
    /// are merged into the local `users` table, newer rows winning, so none is lost.
    ///
    /// # Errors
    /// Store, file and state errors.
    pub fn restore_users(&mut self, state: &mut StateStore) -> Result<(), SinkError> {
        let known = state.meta(USERS_FILE_KEY)?;
        let unread: Vec<String> = state
            .files("users")?
            .into_iter()
            .map(|f| f.path)
            .filter(|p| known.as_deref() != Some(p.as_str()))
            .collect();
        for path in unread {
            self.fetch(std::iter::once(path.as_str()))?;
            let local = self.mirror.join(&path);
            let n = super::users_table::merge_file(state, &local)?;
            tracing::info!(users = n, file = %path, "Merged the users of a committed users file.");
            self.evict();
        }
        Ok(())
    }

    /// Remembers that the local `users` table holds the users of `path` (just committed).
    ///
    /// # Errors
    /// State errors.
    pub fn users_written(&self, state: &StateStore, path: &str) -> Result<(), SinkError> {
        state.set_meta(USERS_FILE_KEY, path)?;
        Ok(())
    }
}

/// The test knob `remote::gate=return(PATH)` (feature `fault-injection`): holds the worker
/// before its manifest until `PATH` exists (`hooks::hold_until`).
fn test_gate() {
    fail::fail_point!("remote::gate", |gate: Option<String>| {
        if let Some(g) = gate {
            crate::hooks::hold_until(&g);
        }
    });
}

/// Creates the manifest object `rel`; `false` when it already exists.
fn create_manifest(
    rt: &tokio::runtime::Runtime,
    remote: &Remote,
    rel: &str,
    m: &Manifest,
) -> Result<bool, SinkError> {
    let bytes = serde_json::to_vec_pretty(m)
        .map_err(|e| SinkError::Crashed(format!("encoding manifest {rel}: {e}")))?;
    Ok(rt.block_on(remote.create(rel, bytes))?)
}

/// Records a run's end in the output: a `finish` manifest with its status and report, at the
/// next seq of its namespace's log, so a fresh worker sees the run as finished (a succeeded run
/// is not resumed). Skipped (returns `false`) when another worker wrote that seq first.
///
/// Blocking: call it off the async executor.
///
/// # Errors
/// Store and state errors.
pub fn record_finish(
    url: &str,
    state: &mut StateStore,
    run_id: &str,
    status: &str,
    report_json: &str,
) -> Result<bool, SinkError> {
    let Some(run) = state.run_meta(run_id)? else {
        return Ok(false);
    };
    let ns_key = namespace_key(&run.namespace);
    let seq = state.last_manifest_seq(&ns_key)? + 1;
    let writer = new_writer(run_id);
    let m = Manifest {
        version: MANIFEST_VERSION,
        kind: ManifestKind::Finish,
        seq,
        writer: writer.clone(),
        written_ms: crate::time::now_ms(),
        run,
        adds: Vec::new(),
        removes: Vec::new(),
        unit: None,
        watermarks: Vec::new(),
        status: Some(status.to_owned()),
        report: Some(report_json.to_owned()),
    };
    let rt = runtime()?;
    let remote = Remote::open(url)?;
    if !create_manifest(&rt, &remote, &manifest_path(&ns_key, seq), &m)? {
        return Ok(false);
    }
    state.record_manifest(&ManifestRef {
        ns_key,
        seq,
        kind: ManifestKind::Finish,
        writer,
        run_id: run_id.to_owned(),
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_go_before_the_extension_and_read_back() {
        let w = "20260812a1b2c3d4e5f6";
        let t = format!("{w}-0003");
        let p = tagged("messages/date=2026-08-01/part-U-00000-000.jsonl.gz", &t);
        assert_eq!(
            p,
            format!("messages/date=2026-08-01/part-U-00000-000-{t}.jsonl.gz")
        );
        assert_eq!(writer_of(&p), Some(w));
        assert_eq!(
            tagged("users/part-ab.parquet", "x"),
            "users/part-ab-x.parquet"
        );
        assert_eq!(
            writer_of("messages/date=2026-08-01/part-U-00000-000.parquet"),
            None
        );
        assert_eq!(new_writer("20260812T000000Z-000000").len(), 20);
    }
}
