//! The state in the output, read back: before a run plans anything, every manifest under
//! `<prefix>/_manifests/` (all namespaces) not yet applied to the local state store is read
//! and applied (`StateStore::apply_manifest`), each namespace's in seq order. A worker with an
//! empty `--state-dir` thus gets the files ledger (supersede: no duplicates on a re-run), the
//! runs and their committed units (resume) and the watermarks (incremental runs).
//!
//! Blocking, on a runtime of its own: call it off the async executor.

use futures_util::{StreamExt, TryStreamExt};

use super::SinkError;
use super::remote_files::runtime;
use crate::state::{MANIFEST_VERSION, MANIFESTS_DIR, Manifest, StateStore, parse_manifest_path};
use crate::storage::Remote;

/// Manifests downloaded at once.
const PARALLEL: usize = 8;

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Manifests in the output.
    pub manifests: usize,
    /// Of those, applied now (the rest were applied before).
    pub applied: usize,
}

/// Applies the output's unapplied manifests to `state`.
///
/// # Errors
/// Store errors, state errors, or [`SinkError::Crashed`] for a manifest that is not one.
pub fn replay(url: &str, state: &mut StateStore) -> Result<Replayed, SinkError> {
    let rt = runtime()?;
    let remote = Remote::open(url)?;
    rt.block_on(replay_from(&remote, state))
}

async fn replay_from(remote: &Remote, state: &mut StateStore) -> Result<Replayed, SinkError> {
    let applied = state.applied_manifests()?;
    let mut todo: Vec<(String, u64, String)> = Vec::new();
    let mut manifests = 0;
    for (rel, _) in remote.list(MANIFESTS_DIR).await? {
        let Some((key, seq)) = parse_manifest_path(&rel) else {
            continue;
        };
        manifests += 1;
        if !applied.contains(&(key.clone(), seq)) {
            todo.push((key, seq, rel));
        }
    }
    todo.sort();
    let mut bodies = futures_util::stream::iter(todo.iter())
        .map(|(_, _, rel)| read(remote, rel))
        .buffered(PARALLEL);
    let mut done = 0;
    for (key, seq, rel) in &todo {
        let m = bodies
            .try_next()
            .await?
            .ok_or_else(|| SinkError::Crashed(format!("manifest {rel} vanished")))?;
        if m.version > MANIFEST_VERSION {
            return Err(SinkError::Crashed(format!(
                "manifest {rel} has format version {}; this engati-etl reads up to {MANIFEST_VERSION}: upgrade it",
                m.version
            )));
        }
        if m.seq != *seq {
            return Err(SinkError::Crashed(format!(
                "manifest {rel} says seq {}; the output was modified by hand",
                m.seq
            )));
        }
        if state.apply_manifest(key, &m)? {
            done += 1;
        }
    }
    Ok(Replayed {
        manifests,
        applied: done,
    })
}

async fn read(remote: &Remote, rel: &str) -> Result<Manifest, SinkError> {
    let (bytes, _) = remote
        .read_versioned(rel)
        .await?
        .ok_or_else(|| SinkError::Crashed(format!("manifest {rel} vanished")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        SinkError::Crashed(format!(
            "{rel} is not an engati-etl manifest ({e}); the output was modified by hand"
        ))
    })
}
